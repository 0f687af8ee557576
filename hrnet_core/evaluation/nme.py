"""Facial landmark metrics: normalised mean error, failure rate, AUC of the cumulative error distribution (CED).

Definitions (``FACTS.md`` section 4; official HRNet-Facial-Landmark-Detection ``lib/core/evaluation.py``):

- per image ``i``: ``NME_i = sum_k ||p_ik - g_ik|| / (d_i * K)`` with ``d_i`` the dataset's normaliser
  (:func:`hrnet_core.data.faces.normalising_distance`); a fraction of ``d_i``;
- ``NME`` = mean of ``NME_i`` over the images;
- failure rate at ``t``: share of images with ``NME_i > t`` (``t`` = 0.08, 0.10);
- ``AUC_t`` = area under the CED ``F(e) = share of images with NME_i <= e`` over ``[0, t]``, divided by ``t``.
  ``F`` is a step function, so the integral is exact: ``AUC_t = mean_i max(0, t - NME_i) / t`` (the limit of the
  fine trapezoid sums of other implementations).

Functions return fractions; :func:`face_metrics` reports them in percent, as the paper's tables.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..data.faces import face_layout, normalising_distance

__all__ = ["per_image_nme", "item_errors", "failure_rate", "auc", "ced_curve", "face_metrics", "THRESHOLDS"]

#: failure / AUC thresholds of the papers (fractions of the normaliser)
THRESHOLDS: tuple[float, ...] = (0.08, 0.1)


def per_image_nme(pred, gt, norm) -> np.ndarray:
    """``NME_i`` (fractions of the normaliser).

    Args:
        pred: ``[N, K, 2]`` predicted px (extra columns such as a score are ignored).
        gt: ``[N, K, 2]`` ground truth px.
        norm: ``[N]`` normalising distances px (> 0).

    Returns:
        float64 ``[N]``.

    Raises:
        ValueError: shapes disagree or a normaliser is not positive.
    """
    p = np.asarray(pred, dtype=np.float64)[..., :2]
    g = np.asarray(gt, dtype=np.float64)[..., :2]
    d = np.asarray(norm, dtype=np.float64).reshape(-1)
    if p.shape != g.shape or p.ndim != 3 or len(d) != len(p):
        raise ValueError(f"pred {p.shape}, gt {g.shape}, norm {d.shape}: expected [N, K, 2], [N, K, 2], [N]")
    if np.any(~(d > 0)):
        raise ValueError("every normalising distance must be > 0")
    return np.linalg.norm(p - g, axis=2).sum(axis=1) / (d * p.shape[1])


def item_errors(items: Sequence[Mapping[str, Any]], preds: np.ndarray, dataset: str) -> np.ndarray:
    """Per-face NME fractions of ``preds`` ``[N, K, >=2]`` against the items' ground truth (dataset normaliser)."""
    k = face_layout(dataset).num_landmarks
    gt = np.stack([np.asarray(r["landmarks"], dtype=np.float64).reshape(k, 2) for r in items]) if items else \
        np.zeros((0, k, 2))
    norm = np.array([normalising_distance(dataset, g, float(r.get("box_size") or 0.0)) for g, r in zip(gt, items)])
    return per_image_nme(np.asarray(preds)[..., :2], gt, norm)


def failure_rate(errors: Sequence[float], threshold: float) -> float:
    """Share of images with ``NME_i > threshold`` (fraction; 0 for no images)."""
    e = np.asarray(errors, dtype=np.float64)
    return float((e > threshold).mean()) if e.size else 0.0


def auc(errors: Sequence[float], threshold: float) -> float:
    """Area under the CED up to ``threshold``, divided by it (fraction in [0, 1]; exact, module docstring)."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    e = np.asarray(errors, dtype=np.float64)
    return float(np.maximum(0.0, threshold - e).mean() / threshold) if e.size else 0.0


def ced_curve(errors: Sequence[float], threshold: float, num: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The CED ``F(e)`` at ``num`` evenly spaced ``e`` in ``[0, threshold]``: ``(e, F)``, both float64 ``[num]``."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    xs = np.linspace(0.0, threshold, num)
    f = np.searchsorted(e, xs, side="right") / max(len(e), 1)
    return xs, f


def face_metrics(errors: Sequence[float], subsets: Mapping[str, Sequence[bool]] | None = None) -> dict[str, float]:
    """The paper's metrics of per-image errors, in percent.

    Args:
        errors: ``NME_i`` fractions ``[N]``.
        subsets: ``{name: mask [N]}``: also ``NME/<name>`` over the masked images (skipped when empty).

    Returns:
        ``NME``, ``FR_0.08``, ``FR_0.1``, ``AUC_0.08``, ``AUC_0.1`` (percent) and ``NME/<subset>``.
    """
    e = np.asarray(errors, dtype=np.float64)
    out = {"NME": 100.0 * float(e.mean()) if e.size else float("nan")}
    for t in THRESHOLDS:
        out[f"FR_{t:g}"] = 100.0 * failure_rate(e, t)
    for t in THRESHOLDS:
        out[f"AUC_{t:g}"] = 100.0 * auc(e, t)
    for name, mask in (subsets or {}).items():
        m = np.asarray(mask, dtype=bool)
        if m.any():
            out[f"NME/{name}"] = 100.0 * float(e[m].mean())
    return out
