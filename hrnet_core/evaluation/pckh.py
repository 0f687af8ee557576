"""MPII PCKh with the official conventions.

HRNet pose paper Sec. 4.2 "Evaluation metric": a joint is correct when it lies within ``alpha * l`` of the ground truth,
``l`` = 60% of the head box diagonal. Official evaluation (leoxiaobin/deep-high-resolution-net.pytorch
``lib/dataset/mpii.py``, FACTS.md section 1):

- error ``<= threshold * head size`` counts as correct; only labelled joints count;
- the table reports Head (head top), Shoulder, Elbow, Wrist, Hip, Knee, Ankle (means of the left and right joint);
- "Mean" is the average over joints weighted by their labelled counts, **without pelvis and thorax** (ids 6, 7);
- the official "Mean@0.1" actually reads the curve at threshold 0.11 (``np.arange(0, 0.51, 0.01)[11]``).
  :func:`evaluate_mpii` reports both, under distinct names: ``PCKh@0.1`` (true 0.1) and ``PCKh@0.1_official`` (0.11).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.keypoints import MPII_KEYPOINTS

__all__ = ["MPII_PCKH_GROUPS", "HEAD_SIZE_FACTOR", "pckh", "evaluate_mpii", "pckh_metrics", "write_mpii_predictions"]

HEAD_SIZE_FACTOR = 0.6
MPII_PCKH_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (9,),
    "Shoulder": (13, 12),
    "Elbow": (14, 11),
    "Wrist": (15, 10),
    "Hip": (3, 2),
    "Knee": (4, 1),
    "Ankle": (5, 0),
}
_EXCLUDED_FROM_MEAN = (6, 7)  # pelvis, thorax


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    headboxes: np.ndarray,
    threshold: float = 0.5,
    head_size_factor: float = HEAD_SIZE_FACTOR,
    joint_names: Sequence[str] = MPII_KEYPOINTS.joint_names,
) -> dict:
    """PCKh at one threshold.

    Args:
        pred: ``[N, 16, 2]`` predicted joints (px, same origin as ``gt``).
        gt: ``[N, 16, 2]`` ground-truth joints (px).
        visible: ``[N, 16]`` labelled mask (nonzero = counted).
        headboxes: ``[N, 2, 2]`` head boxes ``[[x1, y1], [x2, y2]]`` (px).
        threshold: alpha (0.5 for PCKh@0.5).
        head_size_factor: head size = diagonal x 0.6.

    Returns:
        ``{"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"}`` in percent, plus
        ``"per_joint"`` ``{joint name: percent}`` (NaN for a joint never labelled), ``"count"`` ``{joint name: labelled}``
        and ``"threshold"``.

    Raises:
        ValueError: shapes disagree.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    vis = np.asarray(visible).astype(bool)
    hb = np.asarray(headboxes, dtype=np.float64)
    n, k = gt.shape[:2]
    if pred.shape != gt.shape or gt.shape[2:] != (2,) or vis.shape != (n, k) or hb.shape != (n, 2, 2):
        raise ValueError(
            f"pckh: pred {pred.shape}, gt {gt.shape} must be [N, K, 2], visible {vis.shape} [N, K], headboxes {hb.shape} [N, 2, 2]"
        )
    head_size = np.linalg.norm(hb[:, 1] - hb[:, 0], axis=1) * head_size_factor  # [N]
    err = np.linalg.norm(pred - gt, axis=2) / head_size[:, None]
    correct = (err <= threshold) & vis
    count = vis.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = 100.0 * correct.sum(axis=0) / count
    table: dict = {}
    for name, ids in MPII_PCKH_GROUPS.items():
        table[name] = float(np.mean([per_joint[i] for i in ids]))
    in_mean = np.ones(k, dtype=bool)
    in_mean[list(_EXCLUDED_FROM_MEAN)] = False
    total = count[in_mean].sum()
    table["Mean"] = float(100.0 * correct.sum(axis=0)[in_mean].sum() / total) if total else float("nan")
    table["per_joint"] = {joint_names[i]: float(per_joint[i]) for i in range(k)}
    table["count"] = {joint_names[i]: int(count[i]) for i in range(k)}
    table["threshold"] = float(threshold)
    return table


def evaluate_mpii(pred: np.ndarray, records: Sequence[dict]) -> dict:
    """PCKh@0.5 table and the @0.1 means for predictions on :class:`~hrnet_core.data.mpii.MpiiKeypoints` records.

    Args:
        pred: ``[N, 16, 2]`` (or ``[N, 16, 3]``) original-image px, 0-based, in record order.
        records: the dataset's records (``headbox``; ground truth = ``pckh_joints`` when read from an official
            ``gt_valid.mat``, else ``joints``).

    Returns:
        ``{"PCKh": Mean@0.5, "PCKh@0.1": Mean at 0.1, "PCKh@0.1_official": Mean at 0.11 (the official script's
        "Mean@0.1"), "table": pckh(...) at 0.5, "table@0.1": pckh(...) at 0.1}``.

    Raises:
        ValueError: a record has no head box, or the lengths differ.
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    if len(pred) != len(records):
        raise ValueError(f"{len(pred)} predictions for {len(records)} records")
    missing = [i for i, r in enumerate(records) if r.get("headbox") is None]
    if missing:
        raise ValueError(
            f"{len(missing)} MPII records have no head box (first: entry {missing[0]}); "
            "give MpiiKeypoints a headbox_file (official annot/gt_valid.mat) or 'headbox' fields"
        )
    gt_joints = [np.asarray(r.get("pckh_joints", r["joints"])) for r in records]  # gt_valid.mat joints when given
    gt = np.stack([j[:, :2] for j in gt_joints])
    vis = np.stack([j[:, 2] > 0 for j in gt_joints])
    hb = np.stack([r["headbox"] for r in records])
    t05 = pckh(pred, gt, vis, hb, 0.5)
    t01 = pckh(pred, gt, vis, hb, 0.1)
    t011 = pckh(pred, gt, vis, hb, 0.11)
    return {"PCKh": t05["Mean"], "PCKh@0.1": t01["Mean"], "PCKh@0.1_official": t011["Mean"], "table": t05, "table@0.1": t01}


def pckh_metrics(pred: np.ndarray, records: Sequence[dict]) -> dict[str, float]:
    """The metric names of :func:`evaluate_mpii`'s results: ``PCKh`` (Mean@0.5), ``PCKh_0.1`` (Mean@0.1; MLflow
    names allow no "@") and per-joint-group ``PCKh/<group>`` (percent).

    Raises:
        ValueError: as :func:`evaluate_mpii`.
    """
    res = evaluate_mpii(pred, records)
    metrics = {"PCKh": float(res["PCKh"]), "PCKh_0.1": float(res["PCKh@0.1"])}
    for group, value in res["table"].items():
        if isinstance(value, (int, float)) and group not in ("Mean", "threshold"):
            metrics[f"PCKh/{group}"] = float(value)
    return metrics


def write_mpii_predictions(records: Sequence[dict[str, Any]], pred: np.ndarray, path: str | Path) -> None:
    """Write the predictions as a json list in record order: ``image`` (the MPII image name, else the file),
    ``image_id`` and ``keypoints`` (the flattened ``[K, 3]`` row, rounded to 3 decimals)."""
    Path(path).write_text(json.dumps(
        [{"image": r.get("image_name", r["image_file"]), "image_id": int(r["image_id"]),
          "keypoints": p.reshape(-1).round(3).tolist()} for r, p in zip(records, pred)]))
