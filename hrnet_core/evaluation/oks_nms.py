"""Object keypoint similarity between poses and greedy OKS non-maximum suppression.

Follows the official top-down evaluation (leoxiaobin/deep-high-resolution-net.pytorch ``lib/nms/nms.py``; FACTS.md
section 1: OKS-NMS at 0.9): ``OKS = mean_i exp(-d_i^2 / (2 * ((a_1 + a_2) / 2 + eps) * (2 sigma_i)^2))`` over joints,
with the mean area of the two poses (the COCO evaluation uses the ground-truth area instead).
"""

from __future__ import annotations

import numpy as np

from ..data.keypoints import COCO_KEYPOINTS

__all__ = ["oks_iou", "oks_matrix", "oks_nms"]

_EPS = np.spacing(1)


def _sigmas(sigmas, num_joints: int) -> np.ndarray:
    s = np.asarray(COCO_KEYPOINTS.sigmas if sigmas is None else sigmas, dtype=np.float64)
    if s.shape != (num_joints,):
        raise ValueError(f"sigmas have shape {s.shape}, poses have {num_joints} joints")
    return s


def oks_matrix(
    keypoints_a: np.ndarray,
    keypoints_b: np.ndarray,
    areas_a: np.ndarray,
    areas_b: np.ndarray,
    sigmas=None,
    in_vis_thr: float | None = None,
) -> np.ndarray:
    """Pairwise OKS.

    Args:
        keypoints_a: ``[N, K, 3]`` (x, y px, score). keypoints_b: ``[M, K, 3]``.
        areas_a: ``[N]`` px^2. areas_b: ``[M]``.
        sigmas: ``[K]`` OKS constants (default COCO).
        in_vis_thr: if given, only joints with score ``> in_vis_thr`` in both poses count (0 when none do).

    Returns:
        float64 ``[N, M]``.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    k = a.shape[1]
    var = (2 * _sigmas(sigmas, k)) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # [N, M, K]
    area = (np.asarray(areas_a, dtype=np.float64)[:, None] + np.asarray(areas_b, dtype=np.float64)[None, :]) / 2
    e = d2 / var / (area[..., None] + _EPS) / 2
    sim = np.exp(-e)
    if in_vis_thr is None:
        return sim.mean(-1)
    valid = (a[:, None, :, 2] > in_vis_thr) & (b[None, :, :, 2] > in_vis_thr)
    cnt = valid.sum(-1)
    return np.where(cnt > 0, (sim * valid).sum(-1) / np.maximum(cnt, 1), 0.0)


def oks_iou(
    keypoints: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray, sigmas=None, in_vis_thr=None
) -> np.ndarray:
    """OKS of one pose ``[K, 3]`` against ``[M, K, 3]`` poses; returns ``[M]`` (see :func:`oks_matrix`)."""
    return oks_matrix(np.asarray(keypoints)[None], others, np.asarray([area]), other_areas, sigmas, in_vis_thr)[0]


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    thr: float = 0.9,
    sigmas=None,
    in_vis_thr: float | None = None,
) -> np.ndarray:
    """Greedy OKS-NMS: keep the highest-scoring pose, drop the others with ``OKS > thr`` to it, repeat.

    Args:
        keypoints: ``[N, K, 3]`` (x, y px, joint score) poses of one image.
        scores: ``[N]`` pose scores. areas: ``[N]`` px^2 (official: padded box area).
        thr: suppression threshold (0.9 in the HRNet recipe).
        sigmas, in_vis_thr: see :func:`oks_matrix` (the official evaluation uses all joints).

    Returns:
        int64 indices of kept poses, by decreasing score (ties: stable in input order).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    n = len(kp)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sc = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-sc, kind="stable")
    oks = oks_matrix(kp, kp, areas, areas, sigmas, in_vis_thr)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > thr
    return np.asarray(keep, dtype=np.int64)
