"""The segmentation test procedure of the official HRNet-Semantic-Segmentation code (HRNetV2 paper Sec. 4.1).

Official files (HRNet/HRNet-Semantic-Segmentation): ``lib/datasets/base_dataset.py`` (``inference``,
``multi_scale_inference``, ``multi_scale_aug``, ``pad_image``), ``lib/datasets/cityscapes.py``
(``Cityscapes.multi_scale_inference``), ``lib/datasets/lip.py`` (``LIP.inference``, the ``testval`` resize),
``lib/core/function.py`` (``testval``). Sizes are pixels; images are normalised float32 ``[3, H, W]`` (RGB).

One pass (:func:`flip_scores`, ``inference``): the network's logits are upsampled (bilinear) to its input; with flip
the mirrored input is predicted too, its logits mirrored back (and, LIP, its left/right class channels swapped), the
two LOGIT maps averaged; the pass returns ``exp`` of that average (not a softmax).

Per scale ``s`` the image is resized with OpenCV (linear, on the normalised image) so that its long side is
``int(base * s + 0.5)`` (``base``: ``data.base_size``, 0 = the image's own long side; :func:`scaled_size`). Then
``test.mode`` says what is predicted:

* ``slide`` (``BaseDataset.multi_scale_inference``): an image whose long side fits the shorter side of the window
  is padded (bottom / right) to the window with black (``-mean / std``, i.e. zero pixels) and predicted whole;
  otherwise it is padded with black to the window where smaller, and windows of the window size start at
  ``k * stride`` (``stride = floor(window * test.stride)``, official 2/3; ``ceil((size - window) / stride) + 1``
  windows per axis), are clipped at the image border and padded to the window with black; the scores of
  overlapping windows are averaged.
* ``cityscapes`` (``Cityscapes.multi_scale_inference``): scales <= 1 are predicted whole (no padding); larger
  scales by windows at ``floor(window * test.stride)`` (official stride 1.0 of the window), the last window of a row
  / column moved back inside the image (no padding), scores of overlapping windows averaged.
* ``whole``: every scale predicted whole, without padding (the ``cityscapes`` rule for scales <= 1).
* ``resize`` (LIP ``testval``): the image is first resized to the window (the caller resizes the uint8 image, as
  the official dataset does; :func:`predict_scores` resizes a normalised image of another size itself), then the
  ``slide`` rule runs on it, and the scores are resized to ``out_size`` (the label's size).

Each scale's scores are resized (bilinear) to the image and SUMMED over the scales (the official ``final_pred``);
the predicted class is the argmax of the sum (first index on ties, as ``np.argmax``).

:func:`image_scores` runs the procedure of one recipe (:class:`InferenceSettings`, built by
:func:`hrnet_core.tasks.segmentation.inference_settings`) on a uint8 image, :func:`predict_images` on the images of a
split (per image its confusion matrix and the predicted training-id map as PNG bytes; :func:`decode_prediction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hrnet_core.data.io import read_image
from hrnet_core.data.seg_transforms import normalise
from hrnet_core.data.segmentation import IGNORE, apply_lut, read_label
from hrnet_core.evaluation.miou import confusion_matrix, sparse_confusion

__all__ = ["MODES", "network_logits", "flip_scores", "scaled_size", "resize_image", "pad_image", "window_stride",
           "window_spans", "slide_scores", "predict_scores", "predict_probs", "InferenceSettings", "image_scores",
           "predict_images", "decode_prediction"]

#: test.mode values (module docstring).
MODES = ("slide", "cityscapes", "whole", "resize")


def network_logits(model: torch.nn.Module, x: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Logits ``[N, C, H, W]`` float32 of the main output (the last one of an OCR ``[aux, main]``, official
    ``TEST.OUTPUT_INDEX`` -1) upsampled bilinearly to ``x``'s size ``[N, 3, H, W]``."""
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    out = out.float()
    if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
    return out


def flip_scores(model: torch.nn.Module, x: torch.Tensor, *, align_corners: bool, flip: bool,
                flip_permutation: Sequence[int] | None = None) -> torch.Tensor:
    """``exp`` of the logits of ``x`` ``[1, 3, h, w]``, averaged with the mirrored pass when ``flip``: ``[1, C, h,
    w]`` float32 (official ``BaseDataset.inference`` / ``LIP.inference``).

    Args:
        flip_permutation: class channel order of the mirrored pass (LIP left/right classes); None = identity.
    """
    logits = network_logits(model, x, align_corners)
    if flip:
        back = torch.flip(network_logits(model, torch.flip(x, dims=[3]), align_corners), dims=[3])
        if flip_permutation is not None:
            back = back[:, list(flip_permutation)]
        logits = (logits + back) * 0.5
    return logits.exp()


def scaled_size(height: int, width: int, base_size: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` in pixels of an image rescaled to the long side ``int(base * scale + 0.5)`` (``base_size`` 0: the
    image's long side), short side ``int(short * long / long_orig + 0.5)`` (official ``multi_scale_aug``)."""
    base = base_size if base_size > 0 else max(height, width)
    long_side = int(base * scale + 0.5)
    if height > width:
        return long_side, int(width * long_side / height + 0.5)
    return int(height * long_side / width + 0.5), long_side


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised image ``[1, 3, h, w]`` resized to ``size`` ``(h, w)`` with ``cv2.resize`` (linear) on the CPU,
    returned on ``x``'s device (the official code resizes the normalised numpy image)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    hwc = x[0].permute(1, 2, 0).float().cpu().numpy()
    out = cv2.resize(hwc, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))[None].to(x.device)


def pad_image(x: torch.Tensor, size: tuple[int, int], value: torch.Tensor) -> torch.Tensor:
    """``x`` ``[1, 3, h, w]`` extended at the bottom / right to at least ``size`` ``(h, w)`` with ``value`` ``[3]``
    per channel (official ``pad_image`` with ``-mean / std``: black)."""
    h, w = x.shape[-2:]
    ph, pw = max(int(size[0]) - h, 0), max(int(size[1]) - w, 0)
    if not (ph or pw):
        return x
    out = value.to(x.device, x.dtype).view(1, -1, 1, 1).expand(1, x.shape[1], h + ph, w + pw).clone()
    out[:, :, :h, :w] = x
    return out


def window_stride(window: int, fraction: float) -> int:
    """``floor(window * fraction)`` in pixels, >= 1, with ``fraction`` read as the nearest ratio of small integers
    (2/3 stored as 0.6666666666666666 gives ``int(window * 2.0 / 3.0)`` exactly, the official stride)."""
    f = Fraction(fraction).limit_denominator(1000)
    return max(1, int(window) * f.numerator // f.denominator)


def window_spans(size: int, window: int, stride: int, shift_inside: bool) -> list[tuple[int, int]]:
    """``[(start, end)]`` pixel spans of the windows along one axis of ``size`` pixels.

    ``ceil((size - window) / stride) + 1`` windows (at least one) starting at ``k * stride`` and clipped at
    ``size`` (official ``BaseDataset``); ``shift_inside``: a clipped window is moved back to end at ``size`` (start
    ``max(end - window, 0)``, official ``Cityscapes``). 480 px, window 320, stride 213: ``[(0, 320), (213, 480)]``.
    """
    n = max(math.ceil((size - window) / stride), 0) + 1
    spans = []
    for k in range(n):
        end = min(k * stride + window, size)
        start = max(end - window, 0) if shift_inside else k * stride
        spans.append((start, end))
    return spans


def slide_scores(score_fn, x: torch.Tensor, window: tuple[int, int], stride: float, num_classes: int,
                 pad_value: torch.Tensor | None) -> torch.Tensor:
    """Averaged window scores ``[1, C, h, w]`` of ``x`` ``[1, 3, h, w]``.

    Args:
        score_fn: window ``[1, 3, wh, ww]`` -> scores ``[1, C, wh, ww]``.
        window: ``(h, w)`` pixels.
        stride: fraction of the window between window starts (:func:`window_stride`).
        pad_value: ``[3]``: the ``BaseDataset`` rule (image and border windows padded to the window with it, windows
            clipped); None: the ``Cityscapes`` rule (windows moved inside the image, no padding).
    """
    h, w = x.shape[-2:]
    wh, ww = int(window[0]), int(window[1])
    if pad_value is not None:
        x = pad_image(x, (wh, ww), pad_value)
    H, W = x.shape[-2:]
    inside = pad_value is None
    total = torch.zeros((1, num_classes, H, W), device=x.device)
    count = torch.zeros((1, 1, H, W), device=x.device)
    for y0, y1 in window_spans(H, wh, window_stride(wh, stride), inside):
        for x0, x1 in window_spans(W, ww, window_stride(ww, stride), inside):
            crop = x[:, :, y0:y1, x0:x1]
            if pad_value is not None:
                crop = pad_image(crop, (wh, ww), pad_value)
            total[:, :, y0:y1, x0:x1] += score_fn(crop)[:, :, :y1 - y0, :x1 - x0]
            count[:, :, y0:y1, x0:x1] += 1
    return (total / count)[:, :, :h, :w]


def _scale_scores(score_fn, x: torch.Tensor, mode: str, scale: float, window: tuple[int, int], stride: float,
                  num_classes: int, black: torch.Tensor) -> torch.Tensor:
    """Scores ``[1, C, h, w]`` of the rescaled image ``x`` by ``mode`` (module docstring)."""
    h, w = x.shape[-2:]
    if mode == "whole" or (mode == "cityscapes" and scale <= 1.0):
        return score_fn(x)
    if mode == "cityscapes":
        return slide_scores(score_fn, x, window, stride, num_classes, None)
    if max(h, w) <= min(window):
        return score_fn(pad_image(x, window, black))[:, :, :h, :w]
    return slide_scores(score_fn, x, window, stride, num_classes, black)


def predict_scores(model: torch.nn.Module, image: torch.Tensor, *, num_classes: int, mode: str = "slide",
                   crop: tuple[int, int] = (512, 512), stride: float = 2.0 / 3.0, flip: bool = False,
                   flip_permutation: Sequence[int] | None = None, scales: Sequence[float] = (1.0,),
                   base_size: int = 0, align_corners: bool = False,
                   mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                   out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Summed class scores ``[C, H, W]`` (float32, sums of ``exp(logits)``, on ``image``'s device) of one normalised
    image ``[3, H, W]`` by the official test procedure ``mode`` (module docstring); argmax = predicted class.

    Args:
        crop: test window ``(w, h)`` in pixels (official ``TEST.IMAGE_SIZE``); ``resize``: the size the image is
            resized to.
        stride: fraction of the window between window starts (``slide`` 2/3, ``cityscapes`` 1.0).
        flip_permutation: class channel order under a horizontal flip (identity when None).
        scales: image scales (official multi-scale: 0.5 .. 1.75 or 2.0 in steps of 0.25).
        base_size: long side in pixels at scale 1 (0: the image's own long side).
        align_corners: of every bilinear resize of scores (the network's ``MODEL.ALIGN_CORNERS``).
        mean, std: the normalisation; the black padding is ``-mean / std``.
        out_size: ``(H, W)`` the summed scores are resized to (bilinear; the label's size, official ``testval``);
            None: ``image``'s size (``resize`` mode: pass the original size when the image was resized before).

    Raises:
        ValueError: unknown mode or an empty ``scales``.
    """
    if mode not in MODES:
        raise ValueError(f"test.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not scales:
        raise ValueError("test.scales must not be empty")
    window = (int(crop[1]), int(crop[0]))
    out_size = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
    x0 = image[None].float()
    if mode == "resize":
        x0 = resize_image(x0, window)
    _, _, H, W = x0.shape
    black = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)

    def score_fn(t: torch.Tensor) -> torch.Tensor:
        return flip_scores(model, t, align_corners=align_corners, flip=flip, flip_permutation=flip_permutation)

    total = torch.zeros((1, num_classes, H, W), device=image.device)
    for s in scales:
        x = resize_image(x0, scaled_size(H, W, base_size, float(s)))
        p = _scale_scores(score_fn, x, mode, float(s), window, stride, num_classes, black.float())
        total += F.interpolate(p, size=(H, W), mode="bilinear", align_corners=align_corners)
    if out_size != (H, W):
        total = F.interpolate(total, size=out_size, mode="bilinear", align_corners=align_corners)
    return total[0]


def predict_probs(model: torch.nn.Module, image: torch.Tensor, **kwargs) -> torch.Tensor:
    """:func:`predict_scores` divided by their per-pixel sum: ``[C, H, W]`` non-negative, summing to 1 over the
    classes, same argmax (for callers that want probability-like maps). Keyword arguments as
    :func:`predict_scores`."""
    scores = predict_scores(model, image, **kwargs)
    return scores / scores.sum(0, keepdim=True)


@dataclass(frozen=True)
class InferenceSettings:
    """The test procedure of one recipe as plain values (the keywords of :func:`predict_scores`; ``SegTest`` and
    ``SegData`` of :mod:`hrnet_core.tasks.segmentation`): ``crop`` the window ``(w, h)`` (``test.crop_size`` or the
    training crop), ``mean`` / ``std`` the normalisation, ``align_corners`` the network's."""

    num_classes: int
    mode: str
    crop: tuple[int, int]
    stride: float
    flip: bool
    flip_permutation: Sequence[int] | None
    scales: Sequence[float]
    base_size: int
    align_corners: bool
    mean: Sequence[float]
    std: Sequence[float]


def image_scores(model, img: np.ndarray, cfg: InferenceSettings, device="cpu"):
    """Summed class scores ``[C, H, W]`` (torch float32 on ``device``) of one uint8 RGB image ``[H, W, 3]`` by the
    recipe's test procedure (:func:`hrnet_core.evaluation.seg_inference.predict_scores`); ``resize`` mode resizes
    the uint8 image to ``test.crop_size`` before normalising, as the official LIP ``testval`` dataset does."""
    crop = cfg.crop
    h, w = img.shape[:2]
    if cfg.mode == "resize" and (w, h) != crop:
        img = cv2.resize(img, crop, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(normalise(img, cfg.mean, cfg.std)).to(device)
    return predict_scores(model, x, num_classes=cfg.num_classes, mode=cfg.mode, crop=crop, stride=cfg.stride,
                          flip=cfg.flip, flip_permutation=cfg.flip_permutation, scales=cfg.scales,
                          base_size=cfg.base_size, align_corners=cfg.align_corners, mean=cfg.mean, std=cfg.std,
                          out_size=(h, w))


def predict_images(model, cfg: InferenceSettings, lut: np.ndarray, device,
                   items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Confusion matrix and PNG of each image of ``items`` (``image_file``, ``label_path``; labels mapped to training
    ids by ``lut``): per image ``{"confusion": (flat indices, counts) of its [C, C] confusion matrix
    (:func:`~hrnet_core.evaluation.miou.sparse_confusion`), "png": the predicted training-id map as PNG bytes}``;
    the confusion matrix is built on ``device`` (HRNet-Semantic-Segmentation ``lib/core/function.py`` ``testval``)."""
    n = cfg.num_classes
    out = []
    for r in items:
        scores = image_scores(model, read_image(r["image_file"]), cfg, device)
        pred = scores.argmax(0)
        label = torch.from_numpy(apply_lut(read_label(r["label_path"]), lut)).to(device)
        cm = confusion_matrix(pred, label, n, IGNORE).cpu().numpy()
        png = cv2.imencode(".png", pred.to(torch.uint8).cpu().numpy())[1]
        out.append({"confusion": sparse_confusion(cm), "png": png.tobytes()})
    return out


def decode_prediction(value: Mapping[str, Any]) -> np.ndarray:
    """The predicted training-id map ``uint8 [H, W]`` of one :func:`predict_images` entry."""
    return cv2.imdecode(np.frombuffer(value["png"], np.uint8), cv2.IMREAD_UNCHANGED)
