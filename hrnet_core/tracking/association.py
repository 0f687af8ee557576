"""Pose association between frames: pose similarity (OKS) and greedy matching (the simple-baseline FlowTrack scheme,
HRNet pose paper Sec. 4.3: "the object keypoint similarity between the keypoints in one frame and the keypoints
propagated from the nearby frame according to the optical flows", then greedy matching)."""

from __future__ import annotations

import numpy as np

__all__ = ["pose_similarity", "greedy_match", "pose_area"]


def pose_area(poses: np.ndarray, thr: float) -> np.ndarray:
    """``[N]`` px^2: area of the box of each pose's joints with score > ``thr`` (the OKS scale; 0 for < 2 joints)."""
    out = np.zeros(len(poses))
    for i, k in enumerate(np.asarray(poses, np.float64)):
        pts = k[k[:, 2] > thr, :2]
        if len(pts) >= 2:
            wh = pts.max(0) - pts.min(0)
            out[i] = float(wh[0] * wh[1])
    return out


def pose_similarity(current: np.ndarray, previous: np.ndarray, sigmas, joint_thr: float) -> np.ndarray:
    """OKS between the poses of this frame and (propagated) poses of the previous frame.

    Args:
        current: ``[N, K, 3]`` (x, y px, score); previous: ``[M, K, 3]``.
        sigmas: ``[K]`` OKS constants. joint_thr: only joints scored above it in both poses count.
    Returns:
        float64 ``[N, M]`` in [0, 1] (the mean-area OKS of :func:`hrnet_core.evaluation.oks_nms.oks_matrix`).
    """
    from hrnet_core.evaluation.oks_nms import oks_matrix

    if len(current) == 0 or len(previous) == 0:
        return np.zeros((len(current), len(previous)))
    return oks_matrix(current, previous, pose_area(current, joint_thr), pose_area(previous, joint_thr),
                      sigmas=sigmas, in_vis_thr=joint_thr)


def greedy_match(similarity: np.ndarray, thr: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching: repeatedly take the most similar free pair while its similarity is >= ``thr``.

    Args:
        similarity: ``[N, M]``.
    Returns:
        ``[(row, column)]`` in the order taken (ties: lower row, then lower column first).
    """
    s = np.asarray(similarity, np.float64)
    if s.size == 0:
        return []
    order = np.argsort(-s, axis=None, kind="stable")
    rows, cols, out = set(), set(), []
    for flat in order:
        r, c = divmod(int(flat), s.shape[1])
        if s[r, c] < thr:
            break
        if r in rows or c in cols:
            continue
        rows.add(r)
        cols.add(c)
        out.append((r, c))
    return out
