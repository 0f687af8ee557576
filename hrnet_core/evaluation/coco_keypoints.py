"""COCO keypoint evaluation: rescoring, OKS-NMS, the official results file, and AP/AR through pycocotools.

Post-processing of the official top-down evaluation (HRNet pose paper Sec. 4.1; leoxiaobin/deep-high-resolution-net.pytorch
``lib/dataset/coco.py``; FACTS.md section 1):

1. person score = box score x mean of the joint scores (heatmap maxima) above ``in_vis_thr = 0.2`` (0 if none);
2. per image, greedy OKS-NMS at 0.9 with the padded box areas;
3. results json: ``[{"image_id", "category_id": 1, "keypoints": [x1, y1, s1, ...], "score"}, ...]``;
4. ``COCOeval(gt, dt, "keypoints")``: AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.io import AnnotationError, load_json
from .oks_nms import oks_nms

__all__ = [
    "COCO_METRIC_NAMES",
    "rescore",
    "oks_nms",
    "coco_keypoint_results",
    "write_coco_results",
    "evaluate_coco_keypoints",
]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, in_vis_thr: float = 0.2) -> np.ndarray:
    """Official person score: ``box_score * mean(joint scores > in_vis_thr)`` (0 when no joint passes).

    Args:
        keypoints: ``[N, K, 3]`` (x, y, joint score) or joint scores ``[N, K]``.
        box_scores: ``[N]`` detector (or 1 for ground-truth boxes) scores.
        in_vis_thr: joint confidence threshold (0.2).

    Returns:
        float64 ``[N]``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    js = kp[..., 2] if kp.ndim == 3 else kp
    confident = js > in_vis_thr
    n = confident.sum(axis=1)
    mean = np.where(n > 0, (js * confident).sum(axis=1) / np.maximum(n, 1), 0.0)
    return mean * np.asarray(box_scores, dtype=np.float64).reshape(-1)


def coco_keypoint_results(
    keypoints: np.ndarray,
    image_ids: Sequence[int],
    box_scores: Sequence[float],
    areas: Sequence[float],
    *,
    centers: np.ndarray | None = None,
    scales: np.ndarray | None = None,
    in_vis_thr: float = 0.2,
    oks_thr: float | None = 0.9,
    sigmas=None,
    category_id: int = 1,
) -> list[dict[str, Any]]:
    """Rescore + per-image OKS-NMS, as result dicts ready for :func:`write_coco_results`.

    Args:
        keypoints: ``[N, K, 3]`` original-image px and joint scores (e.g. ``decode_to_image`` coords + maxvals).
        image_ids: ``[N]``. box_scores: ``[N]``. areas: ``[N]`` px^2 (records' ``area``).
        centers, scales: optional ``[N, 2]`` copied into the results (as the official file does).
        in_vis_thr: rescoring threshold (0.2). oks_thr: NMS threshold (0.9); ``None`` disables NMS.
        sigmas: OKS constants (default COCO).

    Returns:
        list of ``{"image_id", "category_id", "keypoints" [K, 3] float64, "score", ("center", "scale")}``, grouped
        by image (ascending id), by decreasing score inside an image.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints must be [N, K, 3], got {kp.shape}")
    ids = np.asarray(image_ids).reshape(-1)
    ar = np.asarray(areas, dtype=np.float64).reshape(-1)
    if not len(ids) == len(ar) == len(kp) == len(np.asarray(box_scores).reshape(-1)):
        raise ValueError("keypoints, image_ids, box_scores and areas must have the same length")
    scores = rescore(kp, box_scores, in_vis_thr)
    results = []
    for image_id in np.unique(ids):
        idx = np.flatnonzero(ids == image_id)
        if oks_thr is None:
            keep = idx[np.argsort(-scores[idx], kind="stable")]
        else:
            keep = idx[oks_nms(kp[idx], scores[idx], ar[idx], oks_thr, sigmas)]
        for i in keep:
            r = {"image_id": int(image_id), "category_id": category_id, "keypoints": kp[i], "score": float(scores[i])}
            if centers is not None:
                r["center"] = np.asarray(centers[i], dtype=np.float64)
            if scales is not None:
                r["scale"] = np.asarray(scales[i], dtype=np.float64)
            results.append(r)
    return results


def write_coco_results(results: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write keypoint results in the official COCO results format.

    Args:
        results: dicts with ``image_id``, ``keypoints`` (``[K, 3]`` or flat ``3K``), ``score`` and optional
            ``category_id`` (default 1), ``center``, ``scale``.
        path: output json (parent folders are created).

    Returns:
        The path written.

    Raises:
        ValueError: a result lacks a field or has non-finite keypoints.
    """
    out = []
    for i, r in enumerate(results):
        try:
            kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1)
            entry = {
                "image_id": int(r["image_id"]),
                "category_id": int(r.get("category_id", 1)),
                "keypoints": [float(v) for v in kp],
                "score": float(r["score"]),
            }
        except KeyError as exc:
            raise ValueError(f"result {i} lacks {exc.args[0]!r}") from None
        if kp.size % 3 or not np.isfinite(kp).all():
            raise ValueError(f"result {i}: keypoints must be finite (x, y, score) triples, got {kp.size} values")
        for key in ("center", "scale"):
            if key in r and r[key] is not None:
                entry[key] = [float(v) for v in np.asarray(r[key]).reshape(-1)]
        out.append(entry)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        json.dump(out, f)
    return p


def _load_gt(ann_file_or_coco: str | os.PathLike | COCO) -> COCO:
    if isinstance(ann_file_or_coco, COCO):
        return ann_file_or_coco
    dataset = load_json(ann_file_or_coco, "keypoint annotation file")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco_keypoints(
    ann_file_or_coco: str | os.PathLike | COCO,
    results_file: str | os.PathLike,
    sigmas=None,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO keypoint AP/AR with pycocotools (``COCOeval(gt, dt, "keypoints")``).

    Args:
        ann_file_or_coco: ground-truth ``person_keypoints_*.json`` or a ``pycocotools.coco.COCO``.
        results_file: results json (official format, see :func:`write_coco_results`).
        sigmas: OKS constants for non-COCO layouts (pycocotools' COCO values otherwise).
        image_ids: restrict the evaluation to these images (default: all images of the ground truth).
        verbose: print pycocotools' summary table.

    Returns:
        ``{"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"}`` in [0, 1]
        (-1 where pycocotools has no ground truth in the area range).

    Raises:
        AnnotationError: the results file is missing, empty or refers to images not in the ground truth.
    """
    gt = _load_gt(ann_file_or_coco)
    dets = load_json(results_file, "keypoint results file")
    if not isinstance(dets, list) or not dets:
        raise AnnotationError(f"keypoint results file {str(results_file)!r} holds no results")
    unknown = {int(d.get("image_id", -1)) for d in dets} - set(gt.getImgIds())
    if unknown:
        raise AnnotationError(
            f"keypoint results file {str(results_file)!r} refers to image ids not in the ground truth: {sorted(unknown)[:5]}"
        )
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_METRIC_NAMES, ev.stats)}
