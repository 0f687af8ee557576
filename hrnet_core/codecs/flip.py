"""Left/right flip of keypoint-indexed arrays (joints, landmarks, their heatmap channels).

Kept in ``codecs`` so that imports point one way: ``hrnet_core.data`` (keypoint layouts, transforms) uses the codecs,
the codecs use nothing of ``hrnet_core.data``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flip_permutation"]


def flip_permutation(num_joints: int, flip_pairs) -> np.ndarray:
    """Channel permutation of a horizontal flip.

    Args:
        num_joints: K.
        flip_pairs: iterable of ``(a, b)`` pairs, each joint in at most one pair.

    Returns:
        int64 array ``[K]``: ``perm[a] = b``, ``perm[b] = a``, identity elsewhere (an involution).

    Raises:
        ValueError: an index is out of range or appears in two pairs.
    """
    perm = np.arange(num_joints, dtype=np.int64)
    seen: set[int] = set()
    for a, b in flip_pairs:
        a, b = int(a), int(b)
        for j in (a, b):
            if not 0 <= j < num_joints:
                raise ValueError(f"flip pair ({a}, {b}) is out of range for {num_joints} joints")
            if j in seen:
                raise ValueError(f"joint {j} appears in more than one flip pair: {list(flip_pairs)}")
            seen.add(j)
        perm[a], perm[b] = b, a
    return perm
