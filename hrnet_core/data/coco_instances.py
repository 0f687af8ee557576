"""COCO instances (``instances_*.json``) for detection and instance segmentation: records per image, masks.

Official format (cocodataset.org/#format-data): ``images`` (``id``, ``file_name``, ``width``, ``height``),
``categories`` (``id``, ``name``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] px,
``segmentation``: polygons ``[[x0, y0, x1, y1, ...], ...]`` or RLE ``{"size": [h, w], "counts": ...}``, ``iscrowd``).

Training follows DET / mmdetection's ``CocoDataset``: crowd regions (``iscrowd=1``) and boxes narrower or lower than
1 px are not training targets (DET's ``ignore_iof_thr=-1`` gives crowd regions no role in training); pycocotools
evaluation reads the crowd regions from the annotation file itself. Category ids map to contiguous labels ``1..K`` in
ascending id order (0 is the background of torchvision's detectors).

:func:`coco_det_layout` and :func:`instance_rows` are the ``coco_det`` reader of the detection task (official layout,
prepared-split tables), moved from ``hrnet_core/tasks/detection.py`` unchanged (issue 25).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .io import AnnotationError, load_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["InstanceImage", "read_instances", "segmentation_to_mask", "category_labels", "coco_det_layout",
           "instance_rows"]


@dataclass
class InstanceImage:
    """One image of a COCO instances file with its training targets.

    Attributes:
        image_id, file_name, width, height: from ``images``.
        boxes: float64 ``[N, 4]`` x, y, w, h px of the non-crowd objects (w, h >= 1).
        category_ids: int64 ``[N]``.
        segmentations: ``N`` json strings of the objects' ``segmentation`` (polygons or RLE; ``""`` when absent).
        crowd_boxes: float64 ``[M, 4]`` x, y, w, h of the crowd regions (not trained on; kept for drawings).
        ann_ids: int64 ``[N]``.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    segmentations: list[str] = field(default_factory=list)
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    ann_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def category_labels(categories: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """``{category id: contiguous label 1..K}`` in ascending id order (0 = background)."""
    return {cid: i + 1 for i, cid in enumerate(sorted(int(c["id"]) for c in categories))}


def read_instances(path: str | Path) -> tuple[list[InstanceImage], list[dict[str, Any]]]:
    """Read a COCO instances file -> (one :class:`InstanceImage` per listed image, in file order; categories sorted
    by id as ``{"id", "name"}``). An image-info file without ``annotations`` (``image_info_test-dev2017.json``)
    gives images without objects.

    Raises:
        AnnotationError: missing / invalid json, missing sections, an annotation of an unknown image or category, or
            a malformed ``bbox`` (not 4 numbers, negative size); the message names the file and the annotation id.
    """
    p = Path(path)
    data = load_json(p, "COCO instances file")
    for key in ("images", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise AnnotationError(f"{p}: not a COCO instances file (no {key!r} section)")
    cats = sorted(({"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in data["categories"]),
                  key=lambda c: c["id"])
    if not cats:
        raise AnnotationError(f"{p}: no categories")
    known = {c["id"] for c in cats}
    images: dict[int, InstanceImage] = {}
    for im in data["images"]:
        try:
            iid = int(im["id"])
            images[iid] = InstanceImage(iid, str(im["file_name"]), int(im.get("width", 0)), int(im.get("height", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{p}: malformed image entry {im!r} ({exc})") from None
    per: dict[int, dict[str, list]] = {i: {"b": [], "c": [], "s": [], "crowd": [], "a": []} for i in images}
    for ann in data.get("annotations", []):  # image-info files (test-dev) list no annotations
        aid = ann.get("id")
        iid = int(ann.get("image_id", -1))
        if iid not in images:
            raise AnnotationError(f"{p}: annotation {aid} refers to image {iid}, which is not listed in 'images'")
        cid = int(ann.get("category_id", -1))
        if cid not in known:
            raise AnnotationError(f"{p}: annotation {aid} has category_id {cid}, not one of the categories")
        box = ann.get("bbox")
        if not (isinstance(box, (list, tuple)) and len(box) == 4) or any(not np.isfinite(float(v)) for v in box) \
                or box[2] < 0 or box[3] < 0:
            raise AnnotationError(f"{p}: annotation {aid} has a malformed bbox {box!r} (expected [x, y, w, h], w, h >= 0)")
        e = per[iid]
        if ann.get("iscrowd", 0):
            e["crowd"].append([float(v) for v in box])
            continue
        if box[2] < 1 or box[3] < 1:
            continue
        e["b"].append([float(v) for v in box])
        e["c"].append(cid)
        seg = ann.get("segmentation")
        e["s"].append(json.dumps(seg, separators=(",", ":")) if seg else "")
        e["a"].append(int(aid) if aid is not None else -1)
    for iid, im in images.items():
        e = per[iid]
        im.boxes = np.asarray(e["b"], np.float64).reshape(-1, 4)
        im.category_ids = np.asarray(e["c"], np.int64)
        im.segmentations = e["s"]
        im.crowd_boxes = np.asarray(e["crowd"], np.float64).reshape(-1, 4)
        im.ann_ids = np.asarray(e["a"], np.int64)
    return list(images.values()), cats


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE, or its json string) -> uint8 ``[H, W]``
    0/1 mask (pycocotools ``frPyObjects`` + ``decode``, as ``COCO.annToMask``).

    Raises:
        AnnotationError: an RLE whose ``size`` is not ``[height, width]``.
    """
    from pycocotools import mask as mask_utils

    seg = json.loads(segmentation) if isinstance(segmentation, str) else segmentation
    if not seg:
        return np.zeros((height, width), np.uint8)
    if isinstance(seg, list):
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    else:
        if list(seg.get("size", [])) != [height, width]:
            raise AnnotationError(f"RLE of size {seg.get('size')} on an image of {height}x{width}")
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    return mask_utils.decode(rle).astype(np.uint8)


def coco_det_layout(split: str) -> dict[str, str]:
    """The official COCO layout of ``split``: ``annotations/instances_<split>.json`` + ``<split>/`` images;
    test-dev (``test*``) images are listed in ``annotations/image_info_<split>.json`` (no annotations), under
    ``test2017/``."""
    if split.startswith("test"):  # test-dev2017 images are listed in an image-info file (no annotations)
        return {"annotations": f"annotations/image_info_{split}.json", "images": "test2017"}
    return {"annotations": f"annotations/instances_{split}.json", "images": split}


def instance_rows(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A COCO instances file -> ``(images, samples, meta)`` of a prepared detection split: ``images`` DataFrame
    (``image_id``, ``file_name``, ``width``, ``height``; every listed image), ``samples`` DataFrame (one row per
    image with at least one non-crowd object: those columns plus ``boxes`` [N*4] x, y, w, h px, ``category_ids``
    [N], ``segmentations`` [N] json strings), ``meta`` (``categories``, ``num_objects``, ``num_crowd``).

    Raises:
        AnnotationError: as :func:`read_instances`.
    """
    import pandas as pd

    records, cats = read_instances(path)
    images = pd.DataFrame([{"image_id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height}
                           for r in records], columns=["image_id", "file_name", "width", "height"])
    samples = pd.DataFrame([{
        "image_id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height,
        "boxes": r.boxes.reshape(-1).tolist(), "category_ids": r.category_ids.tolist(),
        "segmentations": list(r.segmentations)} for r in records if len(r.boxes)],
        columns=["image_id", "file_name", "width", "height", "boxes", "category_ids", "segmentations"])
    return images, samples, {"categories": cats, "num_objects": int(sum(len(r.boxes) for r in records)),
                             "num_crowd": int(sum(len(r.crowd_boxes) for r in records))}
