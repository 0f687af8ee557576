"""COCO box and mask AP through pycocotools, and the COCO results format (detection / instance segmentation).

Results format (cocodataset.org/#format-results): one entry per detection, ``{"image_id", "category_id", "bbox":
[x, y, w, h] px, "score"}`` plus ``"segmentation"`` (compressed RLE, ``counts`` as str) for instance masks.
Metrics are ``COCOeval.stats`` in percent: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APS``, ``APM``, ``APL``,
``AR1``, ``AR10``, ``AR100``, ``ARS``, ``ARM``, ``ARL`` for boxes, the same names prefixed ``mask_`` for masks.

The official HRNet-Object-Detection (mmdetection v1) test post-processing that produces these results:
:func:`to_original` (boxes clipped and divided by the scale factor, masks pasted by :func:`paste_masks_mmdet`, as
``get_seg_masks``) and :func:`results_json` (``w = x2 - x1 + 1``, ``xyxy2xywh``); moved from
``hrnet_core/tasks/detection.py`` unchanged (issue 25).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STAT_NAMES", "detection_results", "encode_masks", "coco_detection_metrics", "paste_masks_mmdet",
           "to_original", "results_json"]

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


def paste_masks_mmdet(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int,
                      threshold: float = 0.5) -> np.ndarray:
    """Per-box mask probabilities pasted into the image (mmdetection v1 ``FCNMaskHead.get_seg_masks``).

    Args:
        mask_probs: float32 ``[D, m, m]`` (28x28) sigmoid probabilities of each detection's class.
        boxes: ``[D, 4]`` x1, y1, x2, y2 in original-image px (inclusive convention).
        height, width: original image size px.
        threshold: binarisation (``mask_thr_binary`` 0.5), applied after resizing.

    Returns:
        uint8 ``[D, height, width]``: box corners truncated to int32, the probabilities resized bilinearly (OpenCV) to
        ``(x2 - x1 + 1, y2 - y1 + 1)`` (at least 1), thresholded ``> threshold`` and placed at ``(x1, y1)``; the part
        outside the image is dropped.
    """
    import cv2

    out = np.zeros((len(boxes), height, width), np.uint8)
    for k, (m, b) in enumerate(zip(mask_probs, boxes)):
        x1, y1, x2, y2 = (int(v) for v in np.asarray(b, dtype=np.float64).astype(np.int32))
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bm = (cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > threshold)
        xa, ya = max(x1, 0), max(y1, 0)
        xb, yb = min(x1 + w, width), min(y1 + h, height)
        if xb > xa and yb > ya:
            out[k, ya:yb, xa:xb] = bm[ya - y1:yb - y1, xa - x1:xb - x1]
    return out


def to_original(det: Mapping[str, Any], scale: float, size: tuple[int, int], resized: tuple[int, int],
                convention: str, mask_thresh: float) -> dict[str, Any]:
    """One image's raw detections (:func:`~hrnet_core.models.detectors.raw_detections`, px of the resized image
    ``resized`` = ``(w, h)``) -> ``{"boxes" float32 [D, 4] xyxy original px, "scores" [D], "labels" [D], "masks"
    uint8 [D, H, W]}`` for the original image ``size`` = ``(W, H)``. ``mmdet_v1`` (official
    ``BBoxHead.get_det_bboxes`` with ``rescale``): boxes clipped to ``[0, w - 1] x [0, h - 1]`` then divided by the
    scale factor, masks pasted by :func:`paste_masks_mmdet`; ``continuous``: boxes clipped to ``[0, w] x [0, h]``
    and divided the same way, masks pasted the same way."""
    boxes = det["boxes"].float().cpu().numpy().astype(np.float64)
    cap = 1.0 if convention == "mmdet_v1" else 0.0
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, resized[0] - cap)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, resized[1] - cap)
    boxes /= scale
    out = {"boxes": boxes.astype(np.float32), "scores": det["scores"].float().cpu().numpy(),
           "labels": det["labels"].cpu().numpy()}
    if "masks" in det:
        probs = det["masks"][:, 0].float().cpu().numpy()
        out["masks"] = paste_masks_mmdet(probs, boxes, size[1], size[0], mask_thresh)
    return out


def results_json(predictions: Any, box_convention: str = "mmdet_v1") -> list[dict[str, Any]]:
    """The predictions in the COCO results format (:func:`detection_results`; ``mmdet_v1``: ``w = x2 - x1 + 1`` as
    the official ``xyxy2xywh``). ``predictions``: the detection task's
    :class:`~hrnet_core.tasks.base.Predictions` (its ``values``: per image ``image_id``, ``boxes`` xyxy original px,
    ``scores``, ``category_ids`` and optional ``masks`` RLEs), or those per-image dicts themselves."""
    res: list[dict[str, Any]] = []
    for p in predictions if isinstance(predictions, (list, tuple)) else predictions.values:
        res += detection_results(p["image_id"], p["boxes"], p["scores"], p["category_ids"], p.get("masks"),
                                 plus_one=box_convention == "mmdet_v1")
    return res
