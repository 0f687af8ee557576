"""The segmentation test procedure and metrics against the official HRNet-Semantic-Segmentation rule (issue: seg
evaluation fidelity; docs/fidelity/seg_eval.md).

Every test drives our code (:mod:`hrnet_core.evaluation.seg_inference`, :mod:`hrnet_core.evaluation.miou`,
``hrnet_core.evaluation.seg_inference.image_scores``) on a fixed input and compares it with ``rule_*`` below: an
independent, plain computation of the official rule written for these tests. Inputs: the first CamVid val frame
(``../shared/data/camvid``) shrunk to 120x90 (cv2 INTER_AREA), HRNetV2-W18 (11 classes) with the reference
deterministic weights (``tests/official.py``) and its logits scaled by 0.05 (the raw ones reach 172, where float32
``exp`` overflows and every class ties at inf). Each comparison first checks that the rule's scores are tie-free
(top-2 relative margin > 1e-5 on every pixel), then that every pixel's class agrees. The docstrings give the pixels
(of 10,800) where the code before this change (commit 499a1c0: softmax averaging, mmsegmentation window grid, mean
colour padding) disagreed with the rule.

The official rule (HRNet/HRNet-Semantic-Segmentation, ``lib/datasets/base_dataset.py``, ``cityscapes.py``,
``lip.py``, ``lib/core/function.py``, ``lib/utils/utils.py``):
Written from the rule as stated in the official repository (HRNet/HRNet-Semantic-Segmentation), not from our
implementation: numpy images ``[H, W, 3]`` (normalised, float32), OpenCV resizes and padding, one loop per window.

* ``BaseDataset.inference``: logits upsampled to the input (bilinear), the mirrored pass mirrored back (and, LIP, its
  left/right channels swapped), the two logit maps averaged, then ``exp``.
* ``BaseDataset.multi_scale_inference``: per scale the image is resized (cv2 linear) so that its long side is
  ``int(base * scale + 0.5)`` (short side ``int(short * long / long_orig + 0.5)``); an image whose long side fits
  the shorter side of the window is padded (bottom/right) to the window with black (``-mean / std``) and predicted
  whole; otherwise it is padded to the window where smaller, and windows of the crop size start at ``k * stride``
  (``stride = int(crop * 2 / 3)``, ``ceil((size - crop) / stride) + 1`` of them), are clipped at the border and
  padded to the crop with black; the exp-scores of the overlapping windows are averaged; the scale's scores are
  resized (bilinear) to the image and summed over the scales.
* ``Cityscapes.multi_scale_inference``: scales <= 1 whole image (no padding); larger scales: windows at a stride of
  the crop, the last one moved back inside the image (no padding).
* ``lib/core/function.py testval`` / ``lib/utils/utils.py get_confusion_matrix``: argmax of the summed scores,
  confusion matrix over the non-ignored pixels, IoU = tp / max(1, union) averaged over all classes, mean accuracy =
  tp / max(1, gt) averaged over all classes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrnet_core.evaluation.miou import confusion_matrix, segmentation_metrics
from hrnet_core.evaluation.seg_inference import predict_scores, window_spans, window_stride
from hrnet_core.recipes import ConfigError, load_recipe
from tests.official import DATA_DIR, deterministic_fill

CAMVID = DATA_DIR / "camvid"
requires_camvid = pytest.mark.skipif(not (CAMVID / "val.txt").is_file(), reason="../shared/data/camvid absent")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CAMVID_RECIPE = "hrnet_core/recipes/extra/seg_hrnetv2_w48_360x480_camvid.yaml"


# --------------------------------------------------------------------------------------------------- the official rule


def rule_resize(img: np.ndarray, base: int, scale: float) -> np.ndarray:
    """The image resized so that its long side is ``int(base * scale + 0.5)``."""
    h, w = img.shape[:2]
    long_side = int(base * scale + 0.5)
    if h > w:
        size_wh = (int(w * long_side / h + 0.5), long_side)
    else:
        size_wh = (long_side, int(h * long_side / w + 0.5))
    return cv2.resize(img, size_wh, interpolation=cv2.INTER_LINEAR)


def rule_pad(img: np.ndarray, height: int, width: int, value: np.ndarray) -> np.ndarray:
    """``img`` extended at the bottom / right to at least ``height`` x ``width`` with ``value`` per channel."""
    h, w = img.shape[:2]
    out = np.empty((max(h, height), max(w, width), img.shape[2]), np.float32)
    out[:] = value.astype(np.float32)
    out[:h, :w] = img
    return out


@torch.no_grad()
def rule_net(model, img: np.ndarray, flip: bool, align: bool, swap: list[int] | None = None) -> torch.Tensor:
    """exp of the (flip-averaged) logits ``[1, C, h, w]`` of one normalised image ``[h, w, 3]``."""

    def logits(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))[None])
        out = model(t)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        return F.interpolate(out.float(), size=a.shape[:2], mode="bilinear", align_corners=align)

    pred = logits(img)
    if flip:
        back = logits(img[:, ::-1]).numpy()[:, :, :, ::-1]
        if swap is not None:
            back = back[:, swap]
        pred = (pred + torch.from_numpy(back.copy())) * 0.5
    return pred.exp()


def rule_base(model, img: np.ndarray, *, num_classes: int, crop_hw: tuple[int, int], base: int, scales, flip: bool,
              mean, std, align: bool = False, swap=None) -> torch.Tensor:
    """``BaseDataset.multi_scale_inference``: summed scores ``[1, C, H, W]``."""
    H, W = img.shape[:2]
    ch, cw = crop_hw
    sh, sw = int(ch * 2.0 / 3.0), int(cw * 2.0 / 3.0)
    black = -np.asarray(mean, np.float64) / np.asarray(std, np.float64)
    total = torch.zeros(1, num_classes, H, W)
    for s in scales:
        im = rule_resize(img, base, s)
        h, w = im.shape[:2]
        if max(h, w) <= min(ch, cw):
            scores = rule_net(model, rule_pad(im, ch, cw, black), flip, align, swap)[:, :, :h, :w]
        else:
            if h < ch or w < cw:
                im = rule_pad(im, ch, cw, black)
            nh, nw = im.shape[:2]
            acc = torch.zeros(1, num_classes, nh, nw)
            cnt = torch.zeros(1, 1, nh, nw)
            for r in range(math.ceil((nh - ch) / sh) + 1):
                for c in range(math.ceil((nw - cw) / sw) + 1):
                    y0, x0 = r * sh, c * sw
                    y1, x1 = min(y0 + ch, nh), min(x0 + cw, nw)
                    win = rule_pad(im[y0:y1, x0:x1], ch, cw, black)
                    acc[:, :, y0:y1, x0:x1] += rule_net(model, win, flip, align, swap)[:, :, :y1 - y0, :x1 - x0]
                    cnt[:, :, y0:y1, x0:x1] += 1
            scores = (acc / cnt)[:, :, :h, :w]
        total += F.interpolate(scores, size=(H, W), mode="bilinear", align_corners=align)
    return total


def rule_cityscapes(model, img: np.ndarray, *, num_classes: int, crop_hw: tuple[int, int], base: int, scales,
                    flip: bool, align: bool = False) -> torch.Tensor:
    """``Cityscapes.multi_scale_inference``: summed scores ``[1, C, H, W]``."""
    H, W = img.shape[:2]
    ch, cw = crop_hw
    total = torch.zeros(1, num_classes, H, W)
    for s in scales:
        im = rule_resize(img, base, s)
        h, w = im.shape[:2]
        if s <= 1.0:
            scores = rule_net(model, im, flip, align)
        else:
            acc = torch.zeros(1, num_classes, h, w)
            cnt = torch.zeros(1, 1, h, w)
            for r in range(math.ceil((h - ch) / ch) + 1):
                for c in range(math.ceil((w - cw) / cw) + 1):
                    y1, x1 = min(r * ch + ch, h), min(c * cw + cw, w)
                    y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
                    acc[:, :, y0:y1, x0:x1] += rule_net(model, im[y0:y1, x0:x1], flip, align)
                    cnt[:, :, y0:y1, x0:x1] += 1
            scores = acc / cnt
        total += F.interpolate(scores, size=(H, W), mode="bilinear", align_corners=align)
    return total


def rule_normalise(rgb: np.ndarray, mean, std) -> np.ndarray:
    """``input_transform``: uint8 RGB ``[H, W, 3]`` -> float32 ``(x / 255 - mean) / std``."""
    x = rgb.astype(np.float32) / 255.0
    x -= np.asarray(mean)
    x /= np.asarray(std)
    return x


def rule_metrics(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore: int = 255) -> dict[str, float]:
    """testval's mIoU, pixel and mean accuracy (percent) of one class map against its label."""
    keep = label != ignore
    cm = np.zeros((num_classes, num_classes))
    for t, p in zip(label[keep].ravel(), pred[keep].ravel()):
        cm[t, p] += 1
    gt, pr, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    return {"mIoU": 100 * float(np.mean(tp / np.maximum(1.0, gt + pr - tp))),
            "pixel_acc": 100 * float(tp.sum() / gt.sum()),
            "mean_acc": 100 * float(np.mean(tp / np.maximum(1.0, gt)))}


# --------------------------------------------------------------------------------------------------- fixtures


class _Scaled(torch.nn.Module):
    """The network's logits times ``k`` (keeps float32 ``exp`` finite)."""

    def __init__(self, net: torch.nn.Module, k: float) -> None:
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x):
        return self.net(x) * self.k


@pytest.fixture(scope="module")
def w18():
    from hrnet_core.models import build_model

    torch.set_num_threads(1)
    net = build_model("seg_hrnetv2_w18", num_classes=11).eval()
    deterministic_fill(net)
    return _Scaled(net, 0.05).eval()


@pytest.fixture(scope="module")
def frame():
    """``(rgb uint8 [90, 120, 3], normalised float32 [90, 120, 3], label int64 [90, 120])`` of the first val frame."""
    img = cv2.imread(str(CAMVID / "val" / "0016E5_07959.png"))[:, :, ::-1]
    lab = cv2.imread(str(CAMVID / "valannot" / "0016E5_07959.png"), cv2.IMREAD_UNCHANGED)
    rgb = np.ascontiguousarray(cv2.resize(img, (120, 90), interpolation=cv2.INTER_AREA))
    label = cv2.resize(lab, (120, 90), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    label[label >= 11] = 255
    return rgb, rule_normalise(rgb, MEAN, STD), label


def _ours(model, norm: np.ndarray, **kw) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 0, 1)))
    with torch.no_grad():
        return predict_scores(model, x, num_classes=11, mean=MEAN, std=STD, **kw)


def _agree(ours: torch.Tensor, rule: torch.Tensor) -> None:
    """The rule's scores are tie-free and our classes equal its classes on every pixel (scores within 1e-4)."""
    top = rule[0].topk(2, dim=0).values
    assert float(((top[0] - top[1]) / top[0]).min()) > 1e-5, "the input must be tie-free"
    assert ours.shape == rule.shape[1:]
    assert int((ours.argmax(0) != rule[0].argmax(0)).sum()) == 0
    assert torch.allclose(ours, rule[0], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------- test procedure


def test_official_window_grid_of_a_camvid_frame():
    """480x360 frame, 320x240 windows, stride int(crop * 2 / 3): official windows start at x 0 / 213, y 0 / 160 and
    are clipped at the border (old mmsegmentation grid: x 0 / 160, y 0 / 120, the last window shifted inside). The
    Cityscapes rule moves the last window inside (x 0 / 160)."""
    assert (window_stride(320, 2.0 / 3.0), window_stride(240, 0.6666666666666666)) == (213, 160)
    assert window_spans(480, 320, 213, shift_inside=False) == [(0, 320), (213, 480)]
    assert window_spans(360, 240, 160, shift_inside=False) == [(0, 240), (160, 360)]
    assert window_spans(480, 320, 320, shift_inside=True) == [(0, 320), (160, 480)]
    assert window_spans(300, 320, 213, shift_inside=False) == [(0, 300)]
    # independent: the official count and starts
    for size, win in ((480, 320), (360, 240), (1000, 480), (2560, 2048)):
        stride = int(win * 2.0 / 3.0)
        starts = [k * stride for k in range(math.ceil((size - win) / stride) + 1)]
        assert [s for s, _ in window_spans(size, win, window_stride(win, 2 / 3), False)] == starts


@requires_camvid
def test_whole_image_without_flip_is_exp_of_the_logits(w18, frame):
    """Whole image, no flip: old and new agree (0 pixels differ); pins the exp scores."""
    _, norm, _ = frame
    rule = rule_cityscapes(w18, norm, num_classes=11, crop_hw=(90, 120), base=120, scales=[1.0], flip=False)
    _agree(_ours(w18, norm, mode="whole", crop=(120, 90)), rule)


@requires_camvid
def test_flip_averages_the_logits_then_takes_exp(w18, frame):
    """Whole image + flip: the two passes' logits averaged, then exp. Old (softmax probabilities averaged): 262 of
    10,800 pixels differ from the rule (mIoU 0.350 vs 0.346); new: 0."""
    _, norm, _ = frame
    rule = rule_cityscapes(w18, norm, num_classes=11, crop_hw=(90, 120), base=120, scales=[1.0], flip=True)
    _agree(_ours(w18, norm, mode="whole", crop=(120, 90), flip=True), rule)


@requires_camvid
@pytest.mark.parametrize("flip, old_diff", [(False, 1575), (True, 1086)])
def test_sliding_windows_follow_base_dataset(w18, frame, flip, old_diff):
    """80x60 windows on the 120x90 frame: official windows x 0 / 53 (second clipped at 120 and padded black), y 0 /
    40, flip inside each window. Old (mmsegmentation grid x 0 / 40, y 0 / 30, softmax averaged, flip of the whole
    image): 1,575 (no flip; mIoU 0.449 vs 0.278) / 1,086 (flip; 0.352 vs 0.220) pixels differ; new: 0."""
    _, norm, _ = frame
    rule = rule_base(w18, norm, num_classes=11, crop_hw=(60, 80), base=120, scales=[1.0], flip=flip, mean=MEAN,
                     std=STD)
    _agree(_ours(w18, norm, mode="slide", crop=(80, 60), flip=flip, base_size=120), rule)
    assert old_diff > 0


@requires_camvid
@pytest.mark.parametrize("scales, flip", [([0.5, 0.75], False), ([0.5, 0.75, 1.0, 1.5], True)])
def test_multi_scale_sums_the_scales_and_pads_small_images_black(w18, frame, scales, flip):
    """Scales 0.5 (60x45: fits the 80x60 window, padded with black and predicted whole) and 0.75 (90x68: padded
    to 90x68 -> windows) + 1.0 / 1.5 with flip; scores resized back and summed. Old (mean-colour padding, mmseg grid,
    softmax): 1,461 pixels differ for [0.5, 0.75] (mIoU 0.527 vs 0.442), 813 for [0.5, 0.75, 1.0, 1.5] + flip
    (0.351 vs 0.324); new: 0."""
    _, norm, _ = frame
    rule = rule_base(w18, norm, num_classes=11, crop_hw=(60, 80), base=120, scales=scales, flip=flip, mean=MEAN,
                     std=STD)
    _agree(_ours(w18, norm, mode="slide", crop=(80, 60), flip=flip, scales=scales, base_size=120), rule)


@requires_camvid
def test_cityscapes_rule_whole_below_one_windows_inside_above(w18, frame):
    """Cityscapes rule, window = the frame at scale 1 (as TEST.IMAGE_SIZE 2048x1024), scales 0.75 .. 1.5 + flip:
    whole image for 0.75 / 1.0, windows moved inside for 1.25 / 1.5. Old (the Cityscapes recipes' ``whole`` mode
    at every scale, softmax): 752 pixels differ (mIoU 0.366 vs 0.343); new: 0."""
    _, norm, _ = frame
    scales = [0.75, 1.0, 1.25, 1.5]
    rule = rule_cityscapes(w18, norm, num_classes=11, crop_hw=(90, 120), base=120, scales=scales, flip=True)
    _agree(_ours(w18, norm, mode="cityscapes", crop=(120, 90), stride=1.0, flip=True, scales=scales,
                 base_size=120), rule)


@requires_camvid
def test_lip_resize_test_through_the_task(w18, frame):
    """LIP testval through ``image_scores`` and a LIP recipe (window 64x64, base 64): the uint8 image resized to the
    window, flip with swapped left/right channels (here 1 <-> 2), exp of the mean logits resized to the image. Old
    (float image resized, softmax averaged, probabilities resized): 581 pixels differ (mIoU 0.394 vs 0.381); new: 0."""
    from hrnet_core.evaluation.seg_inference import image_scores
    from hrnet_core.tasks.segmentation import inference_settings

    rgb, _, _ = frame
    swap = [0, 2, 1, 3, 4, 5, 6, 7, 8, 9, 10]
    r = load_recipe("seg_hrnetv2_w48_473x473_lip", {"test.crop_size": [64, 64], "data.base_size": 64})
    assert (r.test.mode, r.test.flip) == ("resize", True)
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_LINEAR)
    rule = rule_base(w18, rule_normalise(small, MEAN, STD), num_classes=11, crop_hw=(64, 64), base=64,
                     scales=[1.0], flip=True, mean=MEAN, std=STD, swap=swap)
    rule = F.interpolate(rule, size=(90, 120), mode="bilinear", align_corners=False)
    with torch.no_grad():
        _agree(image_scores(w18, rgb, inference_settings(r, 11, swap, False)), rule)


@requires_camvid
def test_camvid_recipe_runs_the_official_slide_rule(w18, frame):
    """The CamVid recipe's test procedure through ``image_scores`` (window shrunk to 80x60, base 120, flip on):
    equal to the rule's BaseDataset procedure (old: the recipe did not exist)."""
    from hrnet_core.evaluation.seg_inference import image_scores
    from hrnet_core.tasks.segmentation import inference_settings

    rgb, norm, label = frame
    r = load_recipe(CAMVID_RECIPE, {"test.crop_size": [80, 60], "data.base_size": 120, "test.flip": True})
    rule = rule_base(w18, norm, num_classes=11, crop_hw=(60, 80), base=120, scales=[1.0], flip=True, mean=MEAN,
                     std=STD)
    with torch.no_grad():
        ours = image_scores(w18, rgb, inference_settings(r, 11, None, False))
    _agree(ours, rule)
    cm = confusion_matrix(ours.argmax(0), torch.from_numpy(label), 11).numpy()
    assert segmentation_metrics(cm)["mIoU"] == pytest.approx(rule_metrics(rule[0].argmax(0).numpy(), label, 11)["mIoU"])


# --------------------------------------------------------------------------------------------------- metrics


def test_miou_and_mean_acc_average_over_every_class():
    """4 classes, class 3 in neither labels nor predictions: official mIoU (1/3 + 2/3 + 1/2 + 0) / 4 = 37.5, mean
    accuracy (1/2 + 1 + 1/2 + 0) / 4 = 50.0. Old (nanmean over present classes): mIoU 50.0, mean_acc 66.67; now
    those figures are ``mIoU_present`` / ``mean_acc_present``."""
    label = np.array([[0, 0, 1, 1, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1, 2, 0, 3]])
    m = segmentation_metrics(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), 4).numpy(),
                             ["a", "b", "c", "d"])
    rule = rule_metrics(pred, label, 4)
    for key in ("mIoU", "pixel_acc", "mean_acc"):
        assert m[key] == pytest.approx(rule[key]), key
    assert (m["mIoU"], m["mean_acc"]) == (pytest.approx(37.5), pytest.approx(50.0))
    assert (m["mIoU_present"], m["mean_acc_present"]) == (pytest.approx(50.0), pytest.approx(200 / 3))
    assert m["IoU/d"] == 0.0


# --------------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name, mode, crop, stride", [
    ("seg_hrnetv2_w48_512x1024_cityscapes", "cityscapes", [2048, 1024], 1.0),
    ("seg_hrnetv2_w40_512x1024_cityscapes", "cityscapes", [2048, 1024], 1.0),
    ("seg_hrnetv2_ocr_w48_512x1024_cityscapes", "cityscapes", [2048, 1024], 1.0),
    ("seg_hrnetv2_w48_480x480_pascal_context_59", "slide", [480, 480], 2 / 3),
    ("seg_hrnetv2_w48_480x480_pascal_context_60", "slide", [480, 480], 2 / 3),
    ("seg_hrnetv2_w48_473x473_lip", "resize", [473, 473], 2 / 3),
    (CAMVID_RECIPE, "slide", [480, 360], 2 / 3),
])
def test_paper_recipes_use_the_official_test_procedure(name, mode, crop, stride):
    """The official config's TEST.IMAGE_SIZE is the test window (old: no key, the training crop, e.g. 1024x512 for
    Cityscapes instead of 2048x1024) and the official dataset class's procedure is the mode (old Cityscapes: whole)."""
    t = load_recipe(name).test
    assert (t.mode, t.crop_size) == (mode, crop) and t.stride == pytest.approx(stride)


def test_test_window_key_is_checked():
    with pytest.raises(ConfigError, match="test.crop_size"):
        load_recipe("seg_hrnetv2_w48_480x480_pascal_context_59", {"test.crop_size": [480]})
    with pytest.raises(ConfigError, match="test.mode"):
        load_recipe("seg_hrnetv2_w48_480x480_pascal_context_59", {"test.mode": "tiles"})
