"""Detection training samples and the test resize of the official HRNet-Object-Detection code (an mmdetection v1
fork): mmcv's keep-ratio ``imrescale`` size rule, the ground-truth boxes of ``CocoDataset._parse_ann_info`` +
``BboxTransform`` and ``bbox_flip`` in either box convention, and :class:`DetSample`, the picklable per-sample function
of :func:`hrnet_core.tasks.detection.sample_transform` (Ray pickles it by this path).

Moved from ``hrnet_core/tasks/detection.py`` unchanged (issue 25).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["resize_scale", "rescale_size", "gt_boxes", "flip_boxes", "DetSample", "resize_for_test"]


def resize_scale(height: int, width: int, short: int, long_cap: int) -> float:
    """``min(short / min(h, w), long_cap / max(h, w))``: the keep-ratio resize factor of mmdetection's
    ``img_scale=(long_cap, short)`` and torchvision's ``GeneralizedRCNNTransform``."""
    return min(short / min(height, width), long_cap / max(height, width))


def rescale_size(height: int, width: int, short: int, long_cap: int) -> tuple[int, int, float]:
    """``(new_w, new_h, scale)`` of mmcv ``imrescale(img, (long_cap, short))`` (mmdetection v1's keep-ratio resize,
    official ``ImageTransform``): ``scale`` of :func:`resize_scale`, sides ``int(side * scale + 0.5)`` px.
    torchvision's own test resize floors instead (``interpolate(scale_factor=...)``), one pixel short where
    ``side * scale`` falls just below an integer."""
    s = resize_scale(height, width, short, long_cap)
    return int(width * s + 0.5), int(height * s + 0.5), s


def gt_boxes(xywh: np.ndarray, scale: float, new_w: int, new_h: int, width: int, height: int,
             convention: str) -> np.ndarray:
    """COCO ``[N, 4]`` (x, y, w, h px) -> float64 xyxy boxes of the resized image.

    ``mmdet_v1`` (official ``CocoDataset._parse_ann_info`` + ``BboxTransform``): ``(x, y, x + w - 1, y + h - 1) *
    scale`` (the one keep-ratio factor); ``continuous``: ``(x, y, x + w, y + h)`` times the per-axis size ratios.
    """
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    if convention == "mmdet_v1":
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1.0], axis=1) * scale
    ratio = np.array([new_w / width, new_h / height, new_w / width, new_h / height])
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * ratio


def flip_boxes(boxes: np.ndarray, width: int, convention: str) -> np.ndarray:
    """Horizontal flip of xyxy boxes in an image ``width`` px wide: ``W - 1 - x`` (``mmdet_v1``, official
    ``bbox_flip``) or ``W - x`` (``continuous``)."""
    off = width - 1.0 if convention == "mmdet_v1" else float(width)
    return np.stack([off - boxes[:, 2], boxes[:, 1], off - boxes[:, 0], boxes[:, 3]], axis=1)


@dataclass(frozen=True)
class DetSample:
    """The per-sample function of a recipe and split (picklable).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image`` uint8 ``[3, H, W]`` (resized RGB), ``boxes``
    float32 ``[N, 4]`` xyxy px of the resized image, ``labels`` int64 ``[N]`` (1..K), and with ``with_masks``
    ``masks`` uint8 ``[N, H, W]``. ``rng`` None: no flip, short side ``short``.

    Raises (on call):
        hrnet_core.data.io.ImageReadError: missing or corrupt image (names the file).
    """

    image_root: str
    labels: tuple[tuple[int, int], ...]  # (category id, label) pairs
    short: int
    long_cap: int
    scales: tuple[int, ...]
    flip: bool
    flip_prob: float
    with_masks: bool
    box_convention: str = "mmdet_v1"

    @functools.cached_property
    def label_of(self) -> dict[int, int]:
        return dict(self.labels)

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        import cv2

        from hrnet_core.data.coco_instances import segmentation_to_mask
        from hrnet_core.data.io import read_image

        img = read_image(Path(self.image_root) / str(row["file_name"]))
        h, w = img.shape[:2]
        u_scale, u_flip = rng.random(2) if rng is not None else (0.0, 1.0)  # fixed number of draws per sample
        short = self.scales[min(int(u_scale * len(self.scales)), len(self.scales) - 1)] if (
            self.scales and rng is not None) else self.short
        nw, nh, s = rescale_size(h, w, short, self.long_cap)
        nw, nh = max(1, nw), max(1, nh)
        out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        boxes = gt_boxes(row["boxes"], s, nw, nh, w, h, self.box_convention)
        flip = self.flip and rng is not None and u_flip < self.flip_prob
        if flip:
            out = out[:, ::-1]
            boxes = flip_boxes(boxes, nw, self.box_convention)
        if self.box_convention == "mmdet_v1":
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, nw - 1)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, nh - 1)
        sample = {"image": np.ascontiguousarray(out.transpose(2, 0, 1)),
                  "boxes": boxes.astype(np.float32),
                  "labels": np.asarray([self.label_of[int(c)] for c in row["category_ids"]], dtype=np.int64)}
        if self.with_masks:
            masks = np.zeros((len(boxes), nh, nw), np.uint8)
            for k, seg in enumerate(row["segmentations"]):
                m = segmentation_to_mask(seg, h, w)
                m = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_NEAREST)
                masks[k] = m[:, ::-1] if flip else m
            sample["masks"] = masks
        return sample


def resize_for_test(image: np.ndarray, short: int, long_cap: int) -> tuple[np.ndarray, float]:
    """The official test resize of an RGB uint8 ``[H, W, 3]`` image (mmcv ``imrescale``: :func:`rescale_size`,
    OpenCV bilinear on the uint8 image) -> ``(resized [h, w, 3] uint8, scale_factor)``. Normalisation (mean / std
    of the DET config, RGB) and padding to a multiple of 32 happen inside the detector."""
    import cv2

    nw, nh, s = rescale_size(image.shape[0], image.shape[1], short, long_cap)
    return cv2.resize(image, (max(nw, 1), max(nh, 1)), interpolation=cv2.INTER_LINEAR), s
