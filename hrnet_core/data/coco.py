"""COCO keypoints reader (official layout) producing top-down person records.

Layout: ``annotations/person_keypoints_{train,val}2017.json`` + an image folder; for evaluation with detected people,
a detection results json (COCO results format, e.g. ``COCO_val2017_detections_AP_H_56_person.json``, the
SimpleBaselines person boxes the HRNet paper uses; FACTS.md section 1).

Records follow the official top-down code (leoxiaobin/deep-high-resolution-net.pytorch ``lib/dataset/coco.py``):

- ground-truth mode: non-crowd person annotations with at least one labelled keypoint (``max(keypoints) > 0``) and a
  valid box after clipping to the image (``x2 = min(W - 1, x1 + max(0, w - 1))``, same for y, area > 0);
- detection mode: every person detection with ``score >= det_score_thr``, joints all zero;
- center / scale from :func:`~hrnet_core.data.transforms.box_to_center_scale` (aspect ratio padding, pixel_std 200, x1.25).

Also reads CrowdPose-style files (same json format, 14 keypoints): the keypoint layout is chosen from the category.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from .io import AnnotationError, load_json
from .keypoints import COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS, KeypointSpec
from .records import KeypointRecords
from .transforms import PIXEL_STD, box_to_center_scale

__all__ = ["CocoKeypoints", "clean_bbox"]

PERSON_CATEGORY_ID = 1


def clean_bbox(bbox, width: int, height: int, area: float | None = None) -> list[float] | None:
    """Clip an ``[x, y, w, h]`` box to the image as the official code does; ``None`` if nothing is left.

    ``area`` is the annotation's ``area`` field (the official check is ``area > 0``); ``w * h`` when not given.
    """
    x, y, w, h = (float(v) for v in bbox[:4])
    if area is None:
        area = w * h
    x1 = max(0.0, x)
    y1 = max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 >= x1 and y2 >= y1 and area > 0:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


class CocoKeypoints(KeypointRecords):
    """Person records of a COCO-format keypoint annotation file (``ds[i]`` is ``ds.records[i]``).

    Args:
        ann_file: ``person_keypoints_*.json``.
        image_dir: folder with the images named by ``file_name``.
        detections: optional person detection results json (``[{image_id, category_id, bbox, score}, ...]``).
        det_score_thr: detections with a lower score are dropped (official ``TEST.IMAGE_THRE``, 0.0 in the recipes).
        use_gt_boxes: take people from the ground truth. Default (``None``): ground truth when ``detections`` is not
            given, the detections otherwise. Passing ``detections`` with ``use_gt_boxes=True`` is an error (the two
            are easy to mix up); ``use_gt_boxes=False`` without detections too.
        aspect_ratio: input ``w / h`` used to pad boxes (0.75 for 256x192 and 384x288).
        pixel_std, scale_padding: box -> scale convention (200, 1.25).
        spec: keypoint layout; default from the person category (17 -> COCO, 14 -> CrowdPose).
        check_files: verify at construction that every referenced image exists.

    Attributes:
        records: list of dicts with ``image_file`` (absolute str), ``image_id`` (int), ``center`` float64 [2] px,
            ``scale`` float64 [2] (pixel_std units), ``joints`` float64 [K, 3] (x, y original-image px, 0/1 weight from
            visibility 0/1/2), ``score`` (1 for ground truth, detector score otherwise), ``area`` (px^2 of the padded box,
            ``scale_x * scale_y * pixel_std^2``, the area the official OKS-NMS uses), ``bbox`` [4] xywh px, and
            ``ann_id`` (ground truth) or ``-1``.
        coco: the ``pycocotools.coco.COCO`` index of ``ann_file``.
        num_joints, flip_pairs, sigmas: from the keypoint layout.
        box_source: ``"gt"`` or ``"detections"``.

    Raises:
        AnnotationError: missing / invalid json, malformed annotation or detection entries, a detection for an image not
            in ``ann_file``, or a referenced image file that does not exist (the message names the file).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        detections: str | os.PathLike | None = None,
        det_score_thr: float = 0.0,
        use_gt_boxes: bool | None = None,
        aspect_ratio: float = 0.75,
        pixel_std: float = PIXEL_STD,
        scale_padding: float = 1.25,
        spec: KeypointSpec | None = None,
        check_files: bool = True,
    ) -> None:
        self.ann_file = str(ann_file)
        self.image_dir = str(image_dir)
        self.aspect_ratio = float(aspect_ratio)
        self.pixel_std = float(pixel_std)
        self.scale_padding = float(scale_padding)
        if use_gt_boxes is None:
            use_gt_boxes = detections is None
        if use_gt_boxes and detections is not None:
            raise ValueError(
                f"CocoKeypoints: both use_gt_boxes=True and detections={str(detections)!r} given; choose one box source"
            )
        if not use_gt_boxes and detections is None:
            raise ValueError("CocoKeypoints: use_gt_boxes=False needs a detections file")
        self.box_source = "gt" if use_gt_boxes else "detections"
        self.detections = None if detections is None else str(detections)

        dataset = load_json(ann_file, "keypoint annotation file")
        for key in ("images", "annotations", "categories"):
            if not isinstance(dataset, dict) or key not in dataset:
                raise AnnotationError(f"keypoint annotation file {self.ann_file!r} has no {key!r} list")
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(_io.StringIO()):
            self.coco.createIndex()

        self.spec = spec if spec is not None else self._infer_spec()
        self.num_joints = self.spec.num_joints
        self.flip_pairs = self.spec.flip_pairs
        self.sigmas = None if self.spec.sigmas is None else np.asarray(self.spec.sigmas, dtype=np.float64)

        if use_gt_boxes:
            self.records = self._gt_records()
        else:
            self.records = self._detection_records(detections, float(det_score_thr))
        if check_files:
            self._check_image_files()

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return (
            f"CocoKeypoints({self.ann_file!r}, records={len(self.records)}, boxes={self.box_source}, "
            f"layout={self.spec.name})"
        )

    def _infer_spec(self) -> KeypointSpec:
        cats = self.coco.loadCats(self.coco.getCatIds())
        person = [c for c in cats if c.get("id") == PERSON_CATEGORY_ID]
        if not person or "keypoints" not in person[0]:
            raise AnnotationError(f"{self.ann_file!r}: no person category (id 1) with a 'keypoints' list")
        k = len(person[0]["keypoints"])
        for spec in (COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS):
            if spec.num_joints == k:
                return spec
        raise AnnotationError(f"{self.ann_file!r}: {k} keypoints per person; pass spec= for this layout")

    def _image_file(self, image_id: int) -> str:
        info = self.coco.imgs[image_id]
        if "file_name" not in info:
            raise AnnotationError(f"{self.ann_file!r}: image {image_id} has no 'file_name'")
        return os.path.abspath(os.path.join(self.image_dir, info["file_name"]))

    def _center_scale(self, box) -> tuple[np.ndarray, np.ndarray]:
        return box_to_center_scale(box, self.aspect_ratio, self.pixel_std, self.scale_padding)

    def _gt_records(self) -> list[dict[str, Any]]:
        k = self.num_joints
        records = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            try:
                width, height = int(info["width"]), int(info["height"])
            except (KeyError, TypeError, ValueError):
                raise AnnotationError(f"{self.ann_file!r}: image {image_id} lacks a valid width/height") from None
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("iscrowd", 0) or ann.get("category_id") != PERSON_CATEGORY_ID:
                    continue
                try:
                    kpts = np.asarray(ann["keypoints"], dtype=np.float64)
                    bbox = [float(v) for v in ann["bbox"]]
                except (KeyError, TypeError, ValueError):
                    raise AnnotationError(
                        f"{self.ann_file!r}: annotation {ann.get('id')} lacks valid 'keypoints' / 'bbox'"
                    ) from None
                if kpts.shape != (3 * k,) or len(bbox) != 4:
                    raise AnnotationError(
                        f"{self.ann_file!r}: annotation {ann.get('id')} has {kpts.size} keypoint values "
                        f"(expected {3 * k}) / bbox of length {len(bbox)}"
                    )
                box = clean_bbox(bbox, width, height, float(ann.get("area", bbox[2] * bbox[3])))
                if box is None or kpts.max() == 0:
                    continue
                kpts = kpts.reshape(k, 3)
                joints = np.zeros((k, 3), dtype=np.float64)
                joints[:, :2] = kpts[:, :2]
                joints[:, 2] = np.minimum(kpts[:, 2], 1.0)
                center, scale = self._center_scale(box)
                records.append(
                    {
                        "image_file": self._image_file(image_id),
                        "image_id": int(image_id),
                        "center": center,
                        "scale": scale,
                        "joints": joints,
                        "score": 1.0,
                        "area": float(scale[0] * scale[1] * self.pixel_std**2),
                        "bbox": np.asarray(box, dtype=np.float64),
                        "ann_id": int(ann.get("id", -1)),
                    }
                )
        return records

    def _detection_records(self, path, thr: float) -> list[dict[str, Any]]:
        dets = load_json(path, "detection file")
        if not isinstance(dets, list):
            raise AnnotationError(f"detection file {str(path)!r} must hold a list of detections")
        k = self.num_joints
        records = []
        for i, det in enumerate(dets):
            try:
                if int(det.get("category_id", PERSON_CATEGORY_ID)) != PERSON_CATEGORY_ID:
                    continue
                image_id = int(det["image_id"])
                bbox = [float(v) for v in det["bbox"]]
                score = float(det["score"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise AnnotationError(
                    f"detection file {str(path)!r}: entry {i} needs image_id, bbox [x, y, w, h] and score"
                ) from None
            if len(bbox) != 4:
                raise AnnotationError(f"detection file {str(path)!r}: entry {i} has a bbox of length {len(bbox)}")
            if image_id not in self.coco.imgs:
                raise AnnotationError(
                    f"detection file {str(path)!r}: entry {i} refers to image_id {image_id}, not in {self.ann_file!r}"
                )
            if score < thr:
                continue
            center, scale = self._center_scale(bbox)
            records.append(
                {
                    "image_file": self._image_file(image_id),
                    "image_id": image_id,
                    "center": center,
                    "scale": scale,
                    "joints": np.zeros((k, 3), dtype=np.float64),
                    "score": score,
                    "area": float(scale[0] * scale[1] * self.pixel_std**2),
                    "bbox": np.asarray(bbox, dtype=np.float64),
                    "ann_id": -1,
                }
            )
        return records
