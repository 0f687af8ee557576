"""Detection test procedure and training boxes against the official HRNetV2p detection code (HRNet-Object-Detection,
an mmdetection v1 fork: mmcv ``imrescale``, ``ImageTransform``, ``CocoDataset._parse_ann_info``, ``BboxTransform`` /
``bbox_flip``, ``BBoxHead.get_det_bboxes`` with ``rescale``, ``FCNMaskHead.get_seg_masks``, ``xyxy2xywh`` of the
results json, ``test_cfg.rcnn``). Each test computes the official rule independently (written here) and compares ours
on an input where the old behaviour differs; the old and new figures are in the docstrings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from official import DATA_DIR, requires_shared

INSTANCES = DATA_DIR / "coco_mini" / "annotations" / "instances_train2017.json"


def _mmcv_size(h: int, w: int, short: int = 800, long_cap: int = 1333) -> tuple[int, int, float]:
    """Official keep-ratio rescale, in our words: one factor min(long cap / long side, short / short side), each
    side times the factor rounded half up (``int(x + 0.5)``). Returns (new_w, new_h, factor)."""
    f = min(long_cap / max(h, w), short / min(h, w))
    return int(w * f + 0.5), int(h * f + 0.5), f


def _torchvision_transform():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()


@requires_shared
def test_test_resize_is_mmcv_imrescale_on_coco_mini_sizes():
    """The test image size. Old: the detector's own torchvision resize (``floor(side * factor)``); new:
    :func:`resize_for_test` (mmcv ``int(side * factor + 0.5)``), after which the detector's transform is the identity.
    On the 80 coco_mini image sizes: old differs from the official size on 46 images (one pixel short), new on 0."""
    from hrnet_core.data.det_transforms import resize_for_test

    sizes = [(im["height"], im["width"]) for im in json.loads(INSTANCES.read_text())["images"]]
    assert len(sizes) == 80
    tv = _torchvision_transform()
    old_diff = new_diff = 0
    for h, w in sizes:
        nw, nh, _ = _mmcv_size(h, w)
        old = tuple(tv([torch.zeros(3, h, w)])[0].image_sizes[0])
        small, s = resize_for_test(np.zeros((h, w, 3), np.uint8), 800, 1333)
        old_diff += old != (nh, nw)
        new_diff += small.shape[:2] != (nh, nw)
        assert s == pytest.approx(_mmcv_size(h, w)[2], rel=0, abs=0)
    assert old_diff == 46 and new_diff == 0
    # the detector keeps the official size (its resize factor is exactly 1 there)
    small, _ = resize_for_test(np.zeros((300, 640, 3), np.uint8), 800, 1333)
    x = torch.rand(3, *small.shape[:2])
    il, _ = tv([x])
    assert tuple(il.image_sizes[0]) == small.shape[:2] == (625, 1333)
    mean, std = torch.tensor(tv.image_mean)[:, None, None], torch.tensor(tv.image_std)[:, None, None]
    assert torch.allclose(il.tensors[0, :, :625, :1333], (x - mean) / std, atol=1e-6)
    assert il.tensors.shape[-2] % 32 == 0 and il.tensors.shape[-1] % 32 == 0, "padded to a multiple of 32"


def test_normalisation_and_test_cfg_are_the_det_config():
    """DET ``img_norm_cfg`` mean 123.675 / 116.28 / 103.53, std 58.395 / 57.12 / 57.375 (RGB, 0-255) and
    ``test_cfg.rcnn`` score_thr 0.05, nms iou 0.5, max_per_img 100, mask_thr_binary 0.5 (unchanged: already equal)."""
    from hrnet_core.models.detectors import IMAGE_MEAN, IMAGE_STD
    from hrnet_core.recipes import load_recipe

    assert np.allclose(np.array(IMAGE_MEAN) * 255, [123.675, 116.28, 103.53], atol=1e-9)
    assert np.allclose(np.array(IMAGE_STD) * 255, [58.395, 57.12, 57.375], atol=1e-9)
    for name in ("det_faster_rcnn_hrnetv2p_w18_1333x800_1x_coco", "det_mask_rcnn_hrnetv2p_w32_1333x800_2x_coco"):
        t = load_recipe(name).test
        assert (t.score_thresh, t.nms_thresh, t.detections_per_img, t.mask_thresh) == (0.05, 0.5, 100, 0.5)
        assert load_recipe(name).data.box_convention == "mmdet_v1"


def test_boxes_back_to_the_original_image_by_the_scale_factor():
    """Boxes of the resized image go back by the one scale factor after clipping to ``[0, w - 1]`` (official
    ``delta2bbox`` clip + ``bboxes /= scale_factor``). Old: torchvision's per-axis size ratios and clip to ``w``.
    Image 300x640 (resized 625x1333, factor 2.0828125): box (10, 5, 1340, 630) -> official x2 = 639.52, y2 =
    299.52; old 640.0, 300.0; new = official."""
    from torchvision.models.detection.transform import resize_boxes

    from hrnet_core.evaluation.coco_detection import to_original

    h, w = 300, 640
    nw, nh, f = _mmcv_size(h, w)
    raw = torch.tensor([[10.0, 5.0, 1340.0, 630.0], [100.5, 200.25, 700.0, 400.0]])
    official = raw.numpy().astype(np.float64).copy()
    official[:, 0::2] = official[:, 0::2].clip(0, nw - 1)
    official[:, 1::2] = official[:, 1::2].clip(0, nh - 1)
    official /= f
    clipped = raw.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, nw)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, nh)
    old = resize_boxes(clipped, (624, nw), (h, w)).numpy()  # the old path: torchvision's floor size and ratios
    det = {"boxes": raw, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    new = to_original(det, f, (w, h), (nw, nh), "mmdet_v1", 0.5)["boxes"]
    assert np.allclose(new, official, atol=1e-4)
    assert official[0, 2] == pytest.approx(639.5199, abs=1e-3) and old[0, 2] == pytest.approx(640.0)
    assert np.abs(old - official).max() > 0.4


def test_results_json_width_is_x2_minus_x1_plus_1():
    """Official ``xyxy2xywh``: ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``. Box (10, 20, 30, 60): official w, h = 21, 41;
    old 20, 40; new (``mmdet_v1``, the recipes' default) 21, 41; ``continuous`` keeps 20, 40."""
    from hrnet_core.evaluation.coco_detection import detection_results
    from hrnet_core.tasks.base import Predictions
    from hrnet_core.evaluation.coco_detection import results_json

    b = np.array([[10.0, 20.0, 30.0, 60.0]])
    x1, y1, x2, y2 = b[0]
    official = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
    old = detection_results(1, b, np.array([0.5]), np.array([3]))[0]["bbox"]
    p = Predictions([{"image_id": 1, "boxes": b, "scores": np.array([0.5]), "category_ids": np.array([3])}])
    assert results_json(p)[0]["bbox"] == official == [10.0, 20.0, 21.0, 41.0]
    assert old == [10.0, 20.0, 20.0, 40.0]
    assert results_json(p, "continuous")[0]["bbox"] == old


def _official_paste(probs: np.ndarray, boxes: np.ndarray, h: int, w: int, thr: float = 0.5) -> np.ndarray:
    """``get_seg_masks`` in our words: corners truncated to int32; the mask resized (OpenCV bilinear) to the
    inclusive box size (at least 1 px); binarised ``> thr``; written at the box's top-left corner."""
    import cv2

    out = np.zeros((len(boxes), h, w), np.uint8)
    for i in range(len(boxes)):
        bx = boxes[i].astype(np.int32)
        bw, bh = max(bx[2] - bx[0] + 1, 1), max(bx[3] - bx[1] + 1, 1)
        m = (cv2.resize(probs[i], (int(bw), int(bh))) > thr).astype(np.uint8)
        out[i, bx[1]:bx[1] + bh, bx[0]:bx[0] + bw] = m
    return out


def test_mask_pasting_is_get_seg_masks():
    """28x28 mask probabilities pasted into a 120x160 image for 6 boxes inside it. Official ``get_seg_masks`` vs
    the old torchvision ``paste_masks_in_image`` (1-cell padded mask, expanded box): 135 of 115,200 pixels
    differ; new :func:`paste_masks_mmdet`: 0."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from hrnet_core.evaluation.coco_detection import paste_masks_mmdet

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    probs = np.stack([1 / (1 + np.exp(-(6 - np.hypot(xx - 13.5 + d, yy - 13.5) * 0.6))) for d in range(-3, 3)]
                     ).astype(np.float32)
    x1 = rng.uniform(0, 80, 6)
    y1 = rng.uniform(0, 60, 6)
    boxes = np.stack([x1, y1, x1 + rng.uniform(8, 70, 6), y1 + rng.uniform(8, 50, 6)], axis=1)
    official = _official_paste(probs, boxes, 120, 160)
    new = paste_masks_mmdet(probs, boxes, 120, 160)
    old = (paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes).float(), (120, 160))[:, 0]
           > 0.5).numpy().astype(np.uint8)
    assert int((new != official).sum()) == 0
    assert int((old != official).sum()) == 135


@requires_shared
def test_training_boxes_are_inclusive_scaled_flipped_and_clipped():
    """Ground truth of one coco_mini image through :class:`DetSample` (default ``mmdet_v1``) vs the official rule:
    ``(x, y, x + w - 1, y + h - 1) * factor``, flipped ``W' - 1 - x``, clipped to ``[0, W' - 1]``. Old (continuous:
    ``x + w`` times per-axis ratios, flip ``W' - x``): max |difference| 1.87 px unflipped; new 0."""
    from hrnet_core.data.coco_instances import category_labels, read_instances
    from hrnet_core.data.det_transforms import DetSample

    records, cats = read_instances(INSTANCES)
    r = max(records, key=lambda x: len(x.boxes))
    row = {"file_name": r.file_name, "boxes": r.boxes.reshape(-1).tolist(), "category_ids": r.category_ids.tolist(),
           "segmentations": list(r.segmentations)}
    args = dict(image_root=str(INSTANCES.parents[1] / "train2017"), labels=tuple(category_labels(cats).items()),
                short=800, long_cap=1333, scales=(), flip=True, flip_prob=0.5, with_masks=False)
    nw, nh, f = _mmcv_size(r.height, r.width)
    xywh = r.boxes.astype(np.float64)
    official = np.stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2] - 1, xywh[:, 1] + xywh[:, 3] - 1], 1) * f
    flipped = official.copy()
    flipped[:, 0], flipped[:, 2] = nw - 1 - official[:, 2], nw - 1 - official[:, 0]
    for o in (official, flipped):
        o[:, 0::2] = o[:, 0::2].clip(0, nw - 1)
        o[:, 1::2] = o[:, 1::2].clip(0, nh - 1)
    plain = DetSample(**args)(row, None)
    assert plain["image"].shape == (3, nh, nw)
    assert np.allclose(plain["boxes"], official, atol=1e-3)
    old = DetSample(**args, box_convention="continuous")(row, None)["boxes"]
    assert np.abs(old - official).max() == pytest.approx(1.87, abs=0.01)
    for seed in range(16):
        got = DetSample(**args)(row, np.random.default_rng(seed))
        if not np.array_equal(got["image"], plain["image"]):
            assert np.allclose(got["boxes"], flipped, atol=1e-3)
            break
    else:
        pytest.fail("no flip in 16 draws")
