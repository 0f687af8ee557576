"""The bottom-up test procedure of HigherHRNet (paper Sec. 3.5 / 4.1; official ``tools/valid.py``,
``lib/core/inference.py``, ``lib/utils/transforms.py``; FACTS.md section 2), one image at a time:

1. :func:`multi_scale_size`: the short side goes to ``input_size * scale`` and the long side to the
   ``input_size``-relative size rounded UP to a multiple of 64 (at the smallest test scale), keeping the aspect;
2. :func:`network_maps`: the network on the resized image (and its mirror, ``flip``): the lower-resolution outputs
   upsampled bilinearly to the highest one and the heatmaps averaged over outputs (heatmap aggregation,
   ``with_heatmaps``), the flipped maps mirrored back with the flip permutation; tags of the outputs that carry them
   (``with_ae``); all projected (bilinear) to the scale-1 input size (``project2image``);
3. :func:`infer_image`: heatmaps averaged over the original/flipped passes and over the test scales (largest first),
   tags of scale 1 only, stacked as ``[1, K, H, W, L]`` (original and flipped tags);
4. grouping (:mod:`hrnet_core.codecs.grouping`), then :func:`to_image` maps cells back to image pixels through the
   inverse affine of the resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hrnet_core.data.transforms import affine_transform_points, get_affine_transform

__all__ = ["multi_scale_size", "resize_align", "network_maps", "infer_image", "to_image", "InferenceSettings"]


def multi_scale_size(height: int, width: int, input_size: int, scale: float, min_scale: float
                     ) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """``((w, h) resized px, center px [2], scale [2] in units of 200 px)`` (official ``get_multi_scale_size``)."""
    center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)], dtype=np.float64)
    min_input = int((min_scale * input_size + 63) // 64 * 64)
    if width < height:
        w_resized = int(min_input * scale / min_scale)
        h_resized = int(int((min_input / width * height + 63) // 64 * 64) * scale / min_scale)
        scale_w = width / 200.0
        scale_h = h_resized / w_resized * width / 200.0
    else:
        h_resized = int(min_input * scale / min_scale)
        w_resized = int(int((min_input / height * width + 63) // 64 * 64) * scale / min_scale)
        scale_h = height / 200.0
        scale_w = w_resized / h_resized * height / 200.0
    return (w_resized, h_resized), center, np.array([scale_w, scale_h])


def resize_align(image: np.ndarray, input_size: int, scale: float, min_scale: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image warped to :func:`multi_scale_size` (bilinear) -> ``(image [h, w, 3], center, scale)``."""
    import cv2

    size, center, s = multi_scale_size(image.shape[0], image.shape[1], input_size, scale, min_scale)
    m = get_affine_transform(center, s, 0.0, size)
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR), center, s


@dataclass(frozen=True)
class InferenceSettings:
    """Test settings (official ``TEST`` and ``LOSS`` keys; see ``BottomUpTest``)."""

    num_joints: int
    flip_index: tuple[int, ...]
    with_heatmaps: tuple[bool, ...] = (True, True)
    with_ae: tuple[bool, ...] = (True, False)
    has_heatmaps: tuple[bool, ...] = (True, True)
    has_ae: tuple[bool, ...] = (True, False)
    flip: bool = True
    project2image: bool = True


def network_maps(model, image, cfg: InferenceSettings, size_projected: tuple[int, int] | None):
    """One scale (official ``get_multi_stage_outputs``).

    Args:
        model: outputs a list of ``[1, C_i, h_i, w_i]`` maps (heatmaps first, then tags where ``has_ae[i]``).
        image: ``[1, 3, H, W]`` normalised.
        size_projected: ``(w, h)`` the maps are resized to (``project2image``), else None.

    Returns:
        ``(heatmaps, tags)``: lists of ``[1, K, h, w]`` (one heatmap average per pass; the tag maps in order).
    """
    import torch
    import torch.nn.functional as F

    k = cfg.num_joints
    heatmaps, tags = [], []
    passes = [False, True] if cfg.flip else [False]
    for flipped in passes:
        outputs = model(torch.flip(image, [3]) if flipped else image)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        avg, n = 0, 0
        last = outputs[-1]
        for i, out in enumerate(outputs):
            if len(outputs) > 1 and i != len(outputs) - 1:
                out = F.interpolate(out, size=(last.size(2), last.size(3)), mode="bilinear", align_corners=False)
            if flipped:
                out = torch.flip(out, [3])
            offset = k if cfg.has_heatmaps[i] else 0
            if cfg.has_heatmaps[i] and cfg.with_heatmaps[i]:
                hm = out[:, :k]
                avg = avg + (hm[:, list(cfg.flip_index)] if flipped else hm)
                n += 1
            if cfg.has_ae[i] and cfg.with_ae[i]:
                tg = out[:, offset:]
                tags.append(tg[:, list(cfg.flip_index)] if flipped and tg.shape[1] == k else tg)
        if n:
            heatmaps.append(avg / n)
    if cfg.project2image and size_projected:
        w, h = size_projected
        heatmaps = [F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False) for x in heatmaps]
        tags = [F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False) for x in tags]
    return heatmaps, tags


def infer_image(model, image: np.ndarray, input_size: int, scales: Sequence[float], cfg: InferenceSettings,
                device="cpu"):
    """The multi-scale, flip test of one RGB image ``[H, W, 3]`` uint8 (official ``valid.py`` loop).

    Returns:
        ``(heatmaps [1, K, h, w], tags [1, K, h, w, L], center [2], scale [2])``; ``h, w`` the scale-1 resized
        input size (``project2image``), center/scale of that resize (for :func:`to_image`).
    """
    import torch
    import torch.nn.functional as F

    from hrnet_core.data.transforms import normalize_image

    min_scale = min(scales)
    base_size, center, scale = multi_scale_size(image.shape[0], image.shape[1], input_size, 1.0, min_scale)
    final, tag_list = None, []
    for s in sorted(scales, reverse=True):
        resized, center, scale = resize_align(image, input_size, s, min_scale)
        x = torch.from_numpy(normalize_image(np.ascontiguousarray(resized)))[None].to(device)
        heatmaps, tags = network_maps(model, x, cfg, base_size)
        if s == 1 or len(scales) == 1:
            if final is not None and not cfg.project2image:
                tags = [F.interpolate(t, size=final.shape[2:], mode="bilinear", align_corners=False) for t in tags]
            tag_list.extend(t.unsqueeze(4) for t in tags)
        avg = (heatmaps[0] + heatmaps[1]) / 2.0 if cfg.flip and len(heatmaps) > 1 else heatmaps[0]
        if final is None:
            final = avg
        elif cfg.project2image:
            final = final + avg
        else:
            final = final + F.interpolate(avg, size=final.shape[2:], mode="bilinear", align_corners=False)
    final = final / float(len(scales))
    return final, torch.cat(tag_list, dim=4), center, scale


def to_image(people: np.ndarray, center: np.ndarray, scale: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """Map cells ``(x, y)`` of ``people`` ``[P, K, >=2]`` (maps of ``(w, h)`` = ``map_size``) to image pixels
    (official ``transform_preds`` with the inverse resize affine); other columns are kept. float32, new array."""
    out = np.array(people, dtype=np.float32, copy=True)
    if out.size:
        m = get_affine_transform(center, scale, 0.0, map_size, inverse=True)
        out[..., :2] = affine_transform_points(out[..., :2].astype(np.float64), m)
    return out
