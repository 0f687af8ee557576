"""Gaussian heatmap codec: keypoints <-> heatmaps, flip test, heatmap -> original-image coordinates.

Shared by top-down HRNet, HigherHRNet and the face-landmark heads (one codec, one flip utility).

Official recipe (HRNet pose paper, Sun et al. CVPR 2019, Sec. 3 "Heatmap estimation" and Sec. 4.1 "Testing";
leoxiaobin/deep-high-resolution-net.pytorch; facts in ``FACTS.md`` section 1):

- encode: unnormalised Gaussian (peak 1) of std ``sigma`` heatmap cells, truncated to radius ``3 sigma``, centred on the
  integer cell ``int(x / stride + 0.5)``; the joint weight is 0 when the joint is invisible or the whole ``3 sigma``
  window lies off the map;
- decode: argmax per map (coordinates 0 when the maximum is <= 0), then a quarter-cell shift toward the higher
  neighbour (only for ``1 < px < w - 1`` and ``1 < py < h - 1``);
- flip test: heatmaps of the mirrored input are mirrored back, left/right channels swapped, shifted 1 cell right,
  and averaged with the plain ones;
- heatmap -> image: inverse of the crop affine at heatmap scale (rotation 0).

Optional distribution-aware coding (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose
Estimation", CVPR 2020, "DARK"), off by default: sub-pixel Gaussian centres ``x / stride`` (no rounding, no truncation)
and decoding by Gaussian blur (max preserved), log, and a second-order Taylor step at the argmax.

Coordinates: "crop px" are pixels of the network input, "heatmap px" cells of the heatmap (``crop = heatmap * stride``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .flip import flip_permutation

__all__ = [
    "HeatmapCodec",
    "get_max_preds",
    "refine_quarter_offset",
    "refine_dark",
    "gaussian_blur_heatmaps",
    "flip_back",
    "decode_on_device",
    "flip_test",
    "flip_test_one_forward",
    "heatmaps_to_image_coords",
]

PIXEL_STD = 200.0


def _to_numpy(heatmaps) -> np.ndarray:
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps.detach().float().cpu().numpy()
    return np.asarray(heatmaps, dtype=np.float32)


def get_max_preds(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Per-map argmax.

    Args:
        heatmaps: ``[N, K, h, w]`` numpy array or tensor.

    Returns:
        ``coords`` float32 ``[N, K, 2]`` (x, y heatmap px; 0 where the maximum is <= 0), ``maxvals`` float32 ``[N, K, 1]``.

    Raises:
        ValueError: ``heatmaps`` is not 4-D.
    """
    hm = _to_numpy(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {hm.shape}")
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2).astype(np.float32)
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    coords *= maxvals > 0
    return coords, maxvals


def _gather(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``hm[n, k, y[n,k], x[n,k]]`` with indices clipped into the map; hm ``[N,K,h,w]``, x/y int ``[N,K]``."""
    n, k, h, w = hm.shape
    xi = np.clip(x, 0, w - 1)
    yi = np.clip(y, 0, h - 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    return hm[ni, ki, yi, xi]


def refine_quarter_offset(heatmaps, coords: np.ndarray) -> np.ndarray:
    """Official sub-pixel step: move 0.25 cell toward the higher neighbour, per axis.

    Args:
        heatmaps: ``[N, K, h, w]``.
        coords: ``[N, K, 2]`` integer argmax positions (heatmap px), as from :func:`get_max_preds`.

    Returns:
        float32 ``[N, K, 2]``; maps whose peak lies on or next to the border (``px <= 1``, ``px >= w - 1``, same in y)
        are left unchanged, as in the official code.
    """
    hm = _to_numpy(heatmaps)
    h, w = hm.shape[2:]
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    dx = _gather(hm, px + 1, py) - _gather(hm, px - 1, py)
    dy = _gather(hm, px, py + 1) - _gather(hm, px, py - 1)
    out = coords.astype(np.float32).copy()
    out[..., 0] += np.sign(dx) * 0.25 * ok
    out[..., 1] += np.sign(dy) * 0.25 * ok
    return out


def gaussian_blur_heatmaps(heatmaps, kernel: int) -> np.ndarray:
    """DARK modulation: Gaussian blur each map (zero padding, OpenCV's sigma for ``kernel``), rescaled to its old max.

    Args:
        heatmaps: ``[N, K, h, w]``.
        kernel: odd kernel size in cells; sigma = ``0.3 * ((kernel - 1) * 0.5 - 1) + 0.8`` (``cv2.getGaussianKernel``).

    Returns:
        float32 ``[N, K, h, w]``.
    """
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"blur kernel must be a positive odd integer, got {kernel}")
    hm = torch.from_numpy(np.ascontiguousarray(_to_numpy(heatmaps)))
    n, k, h, w = hm.shape
    sig = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    t = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    g = torch.exp(-(t**2) / (2 * sig**2))
    g = (g / g.sum()).float()
    x = hm.reshape(n * k, 1, h, w)
    pad = (kernel - 1) // 2
    x = F.conv2d(x, g.view(1, 1, 1, kernel), padding=(0, pad))
    x = F.conv2d(x, g.view(1, 1, kernel, 1), padding=(pad, 0))
    x = x.reshape(n, k, h, w)
    old_max = hm.amax(dim=(2, 3), keepdim=True)
    new_max = x.amax(dim=(2, 3), keepdim=True)
    x = torch.where(new_max > 0, x * old_max / new_max.clamp_min(1e-30), x)
    return x.numpy()


def refine_dark(heatmaps, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK decoding: blur, log, and one Newton step ``-H^-1 g`` of the log-heatmap at the argmax.

    Derivatives are central differences (first order at 1 cell, second order at 2 cells, as in the DARK release);
    peaks with ``px <= 1``, ``px >= w - 2`` (same in y) or a singular Hessian keep the integer position.

    Args:
        heatmaps: ``[N, K, h, w]`` raw network heatmaps.
        coords: ``[N, K, 2]`` argmax positions (heatmap px).
        kernel: blur kernel size (odd).

    Returns:
        float32 ``[N, K, 2]`` heatmap px.
    """
    hm = gaussian_blur_heatmaps(heatmaps, kernel)
    hm = np.log(np.maximum(hm, 1e-10)).astype(np.float64)
    h, w = hm.shape[2:]
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)

    def at(dx: int, dy: int) -> np.ndarray:
        return _gather(hm, px + dx, py + dy)

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2) & (det != 0)
    safe = np.where(ok, det, 1.0)
    # offset = -H^-1 g with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(-dxy * dx + dxx * dy) / safe
    out = coords.astype(np.float64).copy()
    out[..., 0] += np.where(ok, off_x, 0.0)
    out[..., 1] += np.where(ok, off_y, 0.0)
    return out.astype(np.float32)


class HeatmapCodec:
    """Keypoints in crop pixels <-> Gaussian heatmaps.

    Args:
        input_size: crop size ``(W, H)`` in pixels.
        heatmap_size: ``(w, h)`` in cells; ``stride = input_size / heatmap_size`` (4 for HRNet).
        sigma: Gaussian std in heatmap cells (2 at 64x48, 3 at 96x72; face 1.0-1.5).
        dark: distribution-aware encoding (sub-pixel centres, untruncated) and DARK decoding.
        blur_kernel: DARK blur kernel (odd); default ``2 * round(3 * sigma) - 1`` (11 for sigma 2, 17 for sigma 3).
        joint_weights: optional ``[K]`` loss weights multiplied into the returned weights.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        sigma: float,
        dark: bool = False,
        blur_kernel: int | None = None,
        joint_weights: Sequence[float] | None = None,
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.dark = bool(dark)
        self.stride = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])
        self.blur_kernel = int(blur_kernel) if blur_kernel is not None else 2 * int(round(3 * self.sigma)) - 1
        self.joint_weights = None if joint_weights is None else np.asarray(joint_weights, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
            f"dark={self.dark})"
        )

    def encode(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmap targets for one instance (vectorised over joints).

        Args:
            joints: ``[K, 3]`` (x, y in crop px, visibility; > 0 means labelled) or ``[K, 2]`` (all visible).

        Returns:
            ``target`` float32 ``[K, h, w]``, ``weight`` float32 ``[K, 1]`` (0 for invisible joints and joints whose
            ``3 sigma`` window misses the map; times ``joint_weights`` if given).
        """
        j = np.asarray(joints, dtype=np.float64)
        if j.ndim != 2 or j.shape[1] not in (2, 3):
            raise ValueError(f"joints must be [K, 2] or [K, 3], got shape {j.shape}")
        vis = j[:, 2] > 0 if j.shape[1] == 3 else np.ones(len(j), dtype=bool)
        w, h = self.heatmap_size
        radius = self.sigma * 3
        if self.dark:
            mu_x = j[:, 0] / self.stride[0]
            mu_y = j[:, 1] / self.stride[1]
        else:
            mu_x = np.trunc(j[:, 0] / self.stride[0] + 0.5)
            mu_y = np.trunc(j[:, 1] / self.stride[1] + 0.5)
        ul_x, ul_y = np.trunc(mu_x - radius), np.trunc(mu_y - radius)
        br_x, br_y = np.trunc(mu_x + radius + 1), np.trunc(mu_y + radius + 1)
        on_map = (ul_x < w) & (ul_y < h) & (br_x >= 0) & (br_y >= 0)
        keep = vis & on_map
        # separable Gaussian: target[k] = outer(gy[k], gx[k]); the 3-sigma window is a box, so it separates too
        dx = np.arange(w, dtype=np.float64)[None, :] - mu_x[:, None]
        dy = np.arange(h, dtype=np.float64)[None, :] - mu_y[:, None]
        inv = -0.5 / self.sigma**2
        gx = np.exp(dx * dx * inv)
        gy = np.exp(dy * dy * inv)
        if not self.dark:
            gx[np.abs(dx) > radius] = 0.0
            gy[np.abs(dy) > radius] = 0.0
        gx[~keep] = 0.0
        target = np.einsum("ky,kx->kyx", gy.astype(np.float32), gx.astype(np.float32))
        weight = keep.astype(np.float32)[:, None]
        if self.joint_weights is not None:
            weight = weight * self.joint_weights[:, None]
        return target, weight

    def decode(self, heatmaps) -> tuple[np.ndarray, np.ndarray]:
        """Batched decoding.

        Args:
            heatmaps: ``[N, K, h, w]`` numpy array or tensor (any device).

        Returns:
            ``coords`` float32 ``[N, K, 2]`` in heatmap px (multiply by ``stride`` for crop px),
            ``maxvals`` float32 ``[N, K, 1]`` (raw heatmap maximum, used as joint score).
        """
        hm = _to_numpy(heatmaps)
        coords, maxvals = get_max_preds(hm)
        if self.dark:
            coords = refine_dark(hm, coords, self.blur_kernel)
        else:
            coords = refine_quarter_offset(hm, coords)
        return coords, maxvals

    def decode_to_image(self, heatmaps, center, scale, pixel_std: float = PIXEL_STD) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decode` then :func:`heatmaps_to_image_coords`.

        Args:
            heatmaps: ``[N, K, h, w]``; center ``[N, 2]`` px; scale ``[N, 2]`` (pixel_std units) of the crops.

        Returns:
            ``coords`` float32 ``[N, K, 2]`` original-image px, ``maxvals`` ``[N, K, 1]``.
        """
        coords, maxvals = self.decode(heatmaps)
        return heatmaps_to_image_coords(coords, center, scale, self.heatmap_size, pixel_std), maxvals


def heatmaps_to_image_coords(
    coords: np.ndarray, center, scale, heatmap_size: Sequence[int], pixel_std: float = PIXEL_STD
) -> np.ndarray:
    """Map heatmap px back to original-image px (inverse crop affine at heatmap scale, no rotation).

    ``x_img = c_x + (x_hm - w / 2) * scale_x * pixel_std / w`` and likewise for y with the same factor, as the
    official ``transform_preds`` (only ``scale[0]`` sets the zoom).

    Args:
        coords: ``[N, K, 2]`` heatmap px.
        center: ``[N, 2]`` px. scale: ``[N, 2]`` pixel_std units. heatmap_size: ``(w, h)``.

    Returns:
        float32 ``[N, K, 2]``.
    """
    c = np.asarray(coords, dtype=np.float64)
    ctr = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    s = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 2)
    w, h = float(heatmap_size[0]), float(heatmap_size[1])
    k = s[..., :1] * pixel_std / w
    half = np.array([w * 0.5, h * 0.5])
    return (ctr + (c - half) * k).astype(np.float32)


def flip_back(heatmaps, flip_pairs, shift: bool = True):
    """Heatmaps predicted on a horizontally mirrored input -> heatmaps of the original input.

    Mirrors the width axis, swaps left/right channels and, with ``shift`` (official ``SHIFT_HEATMAP``), moves the maps
    1 cell right (column 0 keeps its value) to compensate the ``x' = W - x - 1`` pixel convention at stride 4.

    Args:
        heatmaps: ``[N, K, h, w]`` numpy array or tensor (the type is kept).
        flip_pairs: ``(left, right)`` joint pairs.
        shift: apply the 1-cell shift.

    Returns:
        Same type and shape as ``heatmaps``.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {tuple(heatmaps.shape)}")
    perm = flip_permutation(heatmaps.shape[1], flip_pairs)
    if isinstance(heatmaps, torch.Tensor):
        out = heatmaps.flip(-1)[:, torch.as_tensor(perm, device=heatmaps.device)]
        if shift:
            out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
        return out
    out = np.asarray(heatmaps)[..., ::-1][:, perm]
    if shift:
        out = np.concatenate([out[..., :1], out[..., :-1]], axis=-1)
    return np.ascontiguousarray(out)


def flip_test(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, flip_pairs, shift: bool = True
) -> torch.Tensor:
    """Average of ``model(images)`` and the flipped-back prediction on ``images.flip(3)`` (paper Sec. 4.1 "Testing").

    Args:
        model: callable ``[N, 3, H, W] -> [N, K, h, w]`` (a list/tuple output uses its last element, as officially).
        images: ``[N, 3, H, W]``.
        flip_pairs: joint pairs; shift: see :func:`flip_back`.

    Returns:
        ``[N, K, h, w]`` averaged heatmaps.
    """

    def run(x):
        out = model(x)
        return out[-1] if isinstance(out, (list, tuple)) else out

    plain = run(images)
    flipped = run(images.flip(3))
    return (plain + flip_back(flipped, flip_pairs, shift=shift)) * 0.5


def flip_test_one_forward(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, flip_pairs, shift: bool = True
) -> torch.Tensor:
    """:func:`flip_test` with the original and the mirrored crops in one forward of ``2N`` images.

    Same result as :func:`flip_test` (each image's prediction does not depend on the rest of the batch in eval mode),
    one model call instead of two (larger GEMMs, half the per-call overhead).

    Args:
        model: callable ``[2N, 3, H, W] -> [2N, K, h, w]`` (list/tuple output: its last element).
        images: ``[N, 3, H, W]``. flip_pairs, shift: see :func:`flip_back`.

    Returns:
        ``[N, K, h, w]`` averaged heatmaps.
    """
    n = images.shape[0]
    out = model(torch.cat([images, images.flip(3)]))
    out = out[-1] if isinstance(out, (list, tuple)) else out
    return (out[:n] + flip_back(out[n:], flip_pairs, shift=shift)) * 0.5


def decode_on_device(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax + quarter-offset decoding (:func:`get_max_preds` then :func:`refine_quarter_offset`) in torch, on the
    heatmaps' device, so that only ``[N, K, 3]`` numbers leave it. Bit-identical to the numpy pair (test).

    Args:
        heatmaps: float tensor ``[N, K, h, w]``.

    Returns:
        ``coords`` float32 ``[N, K, 2]`` heatmap px (0 where the maximum is <= 0), ``maxvals`` float32 ``[N, K, 1]``,
        both on the heatmaps' device.

    Raises:
        ValueError: ``heatmaps`` is not 4-D.
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    flat = heatmaps.float().reshape(n, k, h * w)
    maxvals, idx = flat.max(dim=2, keepdim=True)  # first maximum, as numpy's argmax
    positive = maxvals > 0
    x = (idx % w) * positive
    y = torch.div(idx, w, rounding_mode="floor") * positive
    inside = ((x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)).float()

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))

    dx = at(y, x + 1) - at(y, x - 1)
    dy = at(y + 1, x) - at(y - 1, x)
    coords = torch.cat([x, y], dim=2).float() + torch.cat([dx.sign(), dy.sign()], dim=2) * (0.25 * inside)
    return coords, maxvals
