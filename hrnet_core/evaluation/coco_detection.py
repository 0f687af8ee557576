"""COCO box and mask AP through pycocotools, and the COCO results format (detection / instance segmentation).

Results format (cocodataset.org/#format-results): one entry per detection, ``{"image_id", "category_id", "bbox":
[x, y, w, h] px, "score"}`` plus ``"segmentation"`` (compressed RLE, ``counts`` as str) for instance masks.
Metrics are ``COCOeval.stats`` in percent: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APS``, ``APM``, ``APL``,
``AR1``, ``AR10``, ``AR100``, ``ARS``, ``ARM``, ``ARL`` for boxes, the same names prefixed ``mask_`` for masks.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STAT_NAMES", "detection_results", "encode_masks", "coco_detection_metrics"]

#: ``COCOeval.stats`` names in order
STAT_NAMES = ("AP", "AP50", "AP75", "APS", "APM", "APL", "AR1", "AR10", "AR100", "ARS", "ARM", "ARL")


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks ``[D, H, W]`` (bool / uint8) -> compressed RLEs ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return list(rles)


def detection_results(image_id: int, boxes_xyxy: np.ndarray, scores: np.ndarray, category_ids: np.ndarray,
                      masks: Sequence[Mapping[str, Any]] | None = None, plus_one: bool = False
                      ) -> list[dict[str, Any]]:
    """One image's detections in the COCO results format.

    Args:
        image_id: COCO image id.
        boxes_xyxy: ``[D, 4]`` x0, y0, x1, y1 px (original image) -> ``bbox`` ``[x0, y0, x1 - x0, y1 - y0]``, or
            with ``plus_one`` ``[x0, y0, x1 - x0 + 1, y1 - y0 + 1]`` (inclusive pixel boxes: mmdetection v1
            ``xyxy2xywh``, the official HRNet-Object-Detection results).
        scores: ``[D]``.
        category_ids: ``[D]`` COCO category ids (not contiguous labels).
        masks: ``D`` compressed RLEs (:func:`encode_masks`) or None.

    Raises:
        ValueError: lengths differ.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.asarray(category_ids).reshape(-1)
    if not (len(b) == len(s) == len(c)) or (masks is not None and len(masks) != len(b)):
        raise ValueError(f"detections of image {image_id}: {len(b)} boxes, {len(s)} scores, {len(c)} categories"
                         + (f", {len(masks)} masks" if masks is not None else ""))
    out = []
    for k in range(len(b)):
        x0, y0, x1, y1 = (float(v) for v in b[k])
        extra = 1.0 if plus_one else 0.0
        r = {"image_id": int(image_id), "category_id": int(c[k]), "bbox": [round(x0, 3), round(y0, 3),
             round(x1 - x0 + extra, 3), round(y1 - y0 + extra, 3)], "score": round(float(s[k]), 5)}
        if masks is not None:
            r["segmentation"] = dict(masks[k])
        out.append(r)
    return out


def coco_detection_metrics(ann_file: str | Path, results: Sequence[Mapping[str, Any]],
                           image_ids: Iterable[int] | None = None,
                           iou_types: Sequence[str] = ("bbox",)) -> dict[str, float]:
    """pycocotools ``COCOeval`` of ``results`` against the instances file ``ann_file`` (crowd regions and area
    ranges as pycocotools defines them), restricted to ``image_ids`` when given.

    Returns:
        ``{name: percent}`` for every :data:`STAT_NAMES` entry per IoU type (``bbox`` plain, ``segm`` prefixed
        ``mask_``); -1 where pycocotools has no ground truth (e.g. no small objects). No results at all scores 0 (pycocotools cannot load an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    ids = sorted(int(i) for i in image_ids) if image_ids is not None else sorted(gt.getImgIds())
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        prefix = "" if iou_type == "bbox" else "mask_"
        res = [r for r in results if iou_type == "bbox" or "segmentation" in r]
        if not res:
            metrics.update({prefix + n: 0.0 for n in STAT_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes([dict(r) for r in res])
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # pycocotools' -1 ("no ground truth in this area range") stays -1
        metrics.update({prefix + n: float(v) * 100.0 if v >= 0 else -1.0 for n, v in zip(STAT_NAMES, ev.stats)})
    return metrics
