"""Dense optical flow between consecutive frames and warping of points by it.

The pose paper propagates boxes and poses with FlowNet 2.0 (Sec. 4.3); here OpenCV's DIS (Kroeger et al., ECCV 2016)
or Farneback flow stands in, computed on grey images, optionally at a reduced resolution (``scale``) and rescaled.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOW_METHODS", "optical_flow", "warp_points", "to_gray"]

FLOW_METHODS = ("dis", "farneback")


def to_gray(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (or ``[H, W]``) -> ``[H, W]`` uint8 grey."""
    import cv2

    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "dis", scale: float = 1.0) -> np.ndarray:
    """Flow from ``prev`` to ``nxt``: float32 ``[H, W, 2]`` (dx, dy px of ``prev``'s grid) so that the pixel ``(x,
    y)`` of ``prev`` is at ``(x + dx, y + dy)`` in ``nxt``.

    Args:
        prev, nxt: images of the same size, RGB ``[H, W, 3]`` or grey ``[H, W]`` uint8.
        method: ``dis`` (DIS, preset MEDIUM) or ``farneback``.
        scale: compute at ``scale`` times the resolution (0 < scale <= 1), then upsample and rescale the vectors.
    Raises:
        ValueError: unknown method, scale out of range or images of different sizes.
    """
    import cv2

    if method not in FLOW_METHODS:
        raise ValueError(f"unknown optical flow method {method!r}; valid: {', '.join(FLOW_METHODS)}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"flow scale must be in (0, 1], got {scale}")
    a, b = to_gray(prev), to_gray(nxt)
    if a.shape != b.shape:
        raise ValueError(f"frames of different sizes {a.shape} and {b.shape}")
    h, w = a.shape
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    if method == "dis":
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=0)
    if scale < 1.0:
        sx, sy = w / a.shape[1], h / a.shape[0]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([sx, sy], np.float32)
    return flow.astype(np.float32, copy=False)


def warp_points(points: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move points by the flow, bilinearly sampled at each point (clamped to the image).

    Args:
        points: float ``[N, 2]`` (x, y px of the flow's source frame).
        flow: ``[H, W, 2]`` from :func:`optical_flow`.
    Returns:
        float64 ``[N, 2]``.
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(p):
        return p.copy()
    h, w = flow.shape[:2]
    x = np.clip(p[:, 0], 0, w - 1)
    y = np.clip(p[:, 1], 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = flow.astype(np.float64)
    v = (f[y0, x0] * (1 - fx) * (1 - fy) + f[y0, x1] * fx * (1 - fy) + f[y1, x0] * (1 - fx) * fy
         + f[y1, x1] * fx * fy)
    return p + v
