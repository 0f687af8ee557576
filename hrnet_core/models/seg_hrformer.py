"""HRFormer + OCR for semantic segmentation (HRFormer paper Sec. 4.3, Table 5; FACTS.md section 7).

The HRFormer backbone (:class:`~hrnet_core.models.hrformer.HRFormerBackbone`, all four branch outputs, relative
position bias added as in the official classification / segmentation code, bilinear fusion upsampling) feeds the
OCR head of HRNet-OCR: the branches are upsampled bilinearly to 1/4 and concatenated (``C1 + C2 + C3 + C4`` channels:
480 for S, 1170 for B); ``aux_head`` (3x3 conv -> 512, BN, ReLU, 1x1 conv -> classes) predicts the soft object
regions, ``conv3x3_ocr`` reduces to 512 channels, the spatial gather and object-contextual attention of
:mod:`hrnet_core.models.seg` give the object-contextual representation, ``cls_head`` (1x1 conv) the main logits.
``forward`` returns ``[aux, main]`` logits at 1/4 (loss 0.4 x aux + 1.0 x main).

The head follows the HRFormer segmentation code's OCR head (openseg ``SpatialOCR``, key channels 256, dropout 0.05);
no official HRFormer segmentation checkpoint layout is part of the shared references, so the parameter names are
ours (backbone names = the official HRFormer backbone's, head names = HRNet-OCR's) and not verified against an
official file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .hrformer import HRFORMER_B, HRFORMER_S, HRFORMER_T, HRFormerBackbone, HRFormerConfig, _apply_overrides
from .hrnet import concat_branches, init_weights
from .seg import SpatialGather, SpatialOCR

__all__ = ["HRFormerOCR", "seg_hrformer_t_ocr", "seg_hrformer_s_ocr", "seg_hrformer_b_ocr", "SEG_HRFORMER_MODELS",
           "override_keys"]

_HEAD_KEYS = ("num_classes",)


class HRFormerOCR(HRFormerBackbone):
    """HRFormer backbone + OCR head (module docstring).

    Input ``[N, 3, H, W]`` -> ``[aux, main]`` logits, each ``[N, num_classes, H/4, W/4]``.

    Args:
        cfg: backbone architecture.
        num_classes: classes (19 Cityscapes, 59 PASCAL-Context, 171 COCO-Stuff).
        mid_channels: width of the OCR representation (512).
        key_channels: attention key width (256).
        dropout: Dropout2d of the OCR output (0.05).
    """

    align_corners = False

    def __init__(self, cfg: HRFormerConfig, num_classes: int = 19, mid_channels: int = 512, key_channels: int = 256,
                 dropout: float = 0.05) -> None:
        super().__init__(cfg, single_scale_output=False)
        if num_classes < 1:
            raise ValueError(f"HRFormerOCR: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        in_ch = int(sum(cfg.widths))
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(in_ch, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels),
                                         nn.ReLU(inplace=True))
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid_channels, key_channels, mid_channels, dropout)
        self.cls_head = nn.Conv2d(mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(in_ch, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels),
                                      nn.ReLU(inplace=True), nn.Conv2d(mid_channels, num_classes, 1))
        for mod in (self.conv3x3_ocr, self.ocr_distri_head, self.cls_head, self.aux_head):
            init_weights(mod, "normal")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = concat_branches(self.forward_features(x), self.align_corners)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        feats = self.ocr_distri_head(feats, self.ocr_gather_head(feats, aux))
        return [aux, self.cls_head(feats)]


def _seg(base: HRFormerConfig, name: str, drop_path_rate: float, overrides: dict[str, Any]) -> HRFormerOCR:
    seg_base = replace(base, rel_pos_bias=True, fuse_upsample="bilinear", drop_path_rate=drop_path_rate)
    cfg, head = _apply_overrides(seg_base, overrides, name, _HEAD_KEYS)
    return HRFormerOCR(cfg, **head)


def seg_hrformer_t_ocr(**overrides: Any) -> HRFormerOCR:
    """HRFormer-T + OCR (PASCAL-Context ablations of the HRFormer paper, Tables 7, 9, 11); drop path 0."""
    return _seg(HRFORMER_T, "seg_hrformer_t_ocr", 0.0, overrides)


def seg_hrformer_s_ocr(**overrides: Any) -> HRFormerOCR:
    """HRFormer-S + OCR (HRFormer Table 11: PASCAL-Context 53.8 single scale); drop path 0.1."""
    return _seg(HRFORMER_S, "seg_hrformer_s_ocr", 0.1, overrides)


def seg_hrformer_b_ocr(**overrides: Any) -> HRFormerOCR:
    """HRFormer-B + OCR (HRFormer Table 5: 56.2M params, Cityscapes val 82.6, PASCAL-Context 58.5); drop path 0.2."""
    return _seg(HRFORMER_B, "seg_hrformer_b_ocr", 0.2, overrides)


for _fn in (seg_hrformer_t_ocr, seg_hrformer_s_ocr, seg_hrformer_b_ocr):
    _fn.default_input_shape = (1, 3, 1024, 1024)  # HRFormer Table 5 counts at 1024x1024

SEG_HRFORMER_MODELS: dict[str, Callable[..., nn.Module]] = {
    "seg_hrformer_t_ocr": seg_hrformer_t_ocr,
    "seg_hrformer_s_ocr": seg_hrformer_s_ocr,
    "seg_hrformer_b_ocr": seg_hrformer_b_ocr,
}


def override_keys(name: str) -> frozenset[str]:
    """Overrides of ``SEG_HRFORMER_MODELS[name]``: every ``HRFormerConfig`` field plus ``num_classes``.

    Raises:
        KeyError: unknown name.
    """
    from .hrformer import _CONFIG_KEYS

    if name not in SEG_HRFORMER_MODELS:
        raise KeyError(f"unknown HRFormer segmentation model {name!r}; known: {', '.join(SEG_HRFORMER_MODELS)}")
    return frozenset(_CONFIG_KEYS) | frozenset(_HEAD_KEYS)
