"""Classification metrics: top-k predictions, top-k accuracy in percent, and the most confused class pairs.

A sample is correct at ``k`` when its label is among the ``k`` highest-scoring classes (ties broken towards the lower
class index, as a stable descending sort does). ImageNet papers report top-1 / top-5 accuracy (or error = 100 -
accuracy) in percent on the single centre crop.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["topk_predictions", "rank_by_logits", "topk_accuracy", "most_confused"]


def topk_predictions(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes of every row.

    Args:
        scores: float ``[N, C]`` (logits or probabilities; higher is better).
        k: classes kept per row; clipped to ``C``.

    Returns:
        ``(indices int64 [N, min(k, C)], scores [N, min(k, C)])``, best first (ties: lower class index first).

    Raises:
        ValueError: ``scores`` not 2-D or ``k < 1``.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {s.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, s.shape[1])
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(s, idx, axis=1)


def rank_by_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes ranked on the logits, reported with their softmax probabilities.

    The official top-k (HRNet/HRNet-Image-Classification ``lib/core/evaluate.py`` ``accuracy``: ``output.topk`` on
    the network output) ranks the logits. Ranking the float32 softmax instead differs where probabilities underflow
    to the same value (logits more than ~104 below the best all become 0.0 and would be ordered by class index).

    Args:
        logits: float ``[N, C]`` network outputs.
        k: classes kept per row; clipped to ``C``.

    Returns:
        ``(indices int64 [N, min(k, C)], softmax probabilities float32 [N, min(k, C)])``, best logit first (ties:
        lower class index first).

    Raises:
        ValueError: ``logits`` not 2-D or ``k < 1``.
    """
    z = np.asarray(logits, dtype=np.float32)
    idx, _ = topk_predictions(z, k)
    shifted = z - z.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return idx, np.take_along_axis(probs, idx, axis=1).astype(np.float32)


def topk_accuracy(topk_indices: np.ndarray, labels: Sequence[int] | np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent from the ranked predictions of :func:`topk_predictions`.

    Args:
        topk_indices: int ``[N, K]`` class indices, best first (``K >= max(ks)``, or ``K = C`` when there are fewer
            classes: then every ``k >= C`` is 100 %).
        labels: int ``[N]`` true class indices.
        ks: the ``k`` values.

    Returns:
        ``{k: percent of rows whose label is among the first k}``; 0.0 for every ``k`` when ``N = 0``.

    Raises:
        ValueError: mismatched lengths, or a ``k`` larger than the columns given (and the columns are not all classes).
    """
    idx = np.asarray(topk_indices)
    y = np.asarray(labels, dtype=np.int64)
    if idx.ndim != 2 or len(idx) != len(y):
        raise ValueError(f"topk_indices [N, K] and labels [N] disagree: {idx.shape} vs {y.shape}")
    if len(y) == 0:
        return {k: 0.0 for k in ks}
    hit = idx == y[:, None]
    return {k: 100.0 * float(hit[:, :k].any(axis=1).mean()) for k in ks}


def most_confused(labels: Sequence[int] | np.ndarray, top1: Sequence[int] | np.ndarray,
                  n: int = 10) -> list[tuple[int, int, int]]:
    """The ``n`` most frequent (true class, predicted class) pairs among the wrong top-1 predictions.

    Returns:
        ``[(true, predicted, count)]``, most frequent first (ties: lower true, then lower predicted class first).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(top1, dtype=np.int64)
    wrong = y != p
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([y[wrong], p[wrong]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:n]
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]
