"""Semantic segmentation networks: HRNetV2 + linear head, and HRNetV2 + OCR (SEG; HRNetV2 paper Sec. 3 and 4.1,
OCR paper "Object-Contextual Representations", FACTS.md section 3).

* :class:`SegHRNet`: the four branches are bilinearly upsampled to 1/4 and concatenated (``15C`` channels);
  ``last_layer`` = 1x1 conv (bias) ``15C -> 15C``, BN, ReLU, 1x1 conv (bias) ``-> num_classes`` (keys
  ``last_layer.0/.1/.3``). Logits at 1/4 of the input; the loss / inference upsample them.
* :class:`SegHRNetOCR`: ``aux_head`` (as ``last_layer``) predicts soft object regions; ``conv3x3_ocr`` reduces to 512;
  spatial gather (object-region representations = softmax over pixels of the aux logits, times pixel features);
  object-contextual attention (``ocr_distri_head``: key/query/value projections with 256 channels, scaled dot-product,
  concat with the pixel features + 1x1 conv + BN-ReLU + Dropout2d(0.05)); ``cls_head`` 1x1 conv ``512 -> num_classes``.
  Returns ``[aux, main]`` logits, both at 1/4 (loss 0.4 * aux + 1.0 * main).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .hrnet import HRNet, HRNetConfig, concat_branches, hrnetv2_channels, init_weights


def _bn_relu(channels: int, momentum: float) -> nn.Sequential:
    """``Sequential(BatchNorm2d, ReLU)``: the official OCR ``BNReLU`` (keys ``<name>.0.*``)."""
    return nn.Sequential(nn.BatchNorm2d(channels, momentum=momentum), nn.ReLU(inplace=True))


def _linear_head(in_ch: int, num_classes: int, momentum: float, final_kernel: int = 1) -> nn.Sequential:
    """``1x1 conv (bias) -> BN -> ReLU -> conv (bias) -> num_classes``.

    SEG ``last_layer`` / OCR ``aux_head`` / FACE ``head`` (keys ``.0``, ``.1``, ``.3``).
    """
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 1, 1, 0), nn.BatchNorm2d(in_ch, momentum=momentum),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(in_ch, num_classes, final_kernel, 1, 1 if final_kernel == 3 else 0))


class SegHRNet(HRNet):
    """HRNetV2 for semantic segmentation.

    ``forward``: image ``[N, 3, H, W]`` -> logits ``[N, num_classes, ceil(H/4), ceil(W/4)]``.

    Args:
        config: backbone config; official SEG uses bilinear fuse upsampling with ``align_corners=False`` and
            BN momentum 0.01, multi-scale output.
        num_classes: 19 (Cityscapes), 59 / 60 (PASCAL-Context), 20 (LIP).
        final_kernel: kernel of the classifier conv (1 in every official config).
        head: the representation the head reads (HRNetV2 paper Sec. 4.4, Figure 4 (a)): ``"v2"`` the concatenation
            of all four branches (HRNetV2, official layout); ``"v1"`` the high-resolution branch only (HRNetV1,
            ``C`` channels into ``last_layer``); ``"v1h"`` the high-resolution branch through a 1x1 conv + BN + ReLU
            (``increase``) to ``15C`` channels first (HRNetV1h). Only ``"v2"`` loads the official checkpoints.
    """

    HEADS = ("v2", "v1", "v1h")

    def __init__(self, config: HRNetConfig | None = None, num_classes: int = 19, final_kernel: int = 1,
                 head: str = "v2") -> None:
        config = config or HRNetConfig(upsample="bilinear", bn_momentum=0.01)
        if head not in self.HEADS:
            raise ValueError(f"SegHRNet head must be one of {self.HEADS}, got {head!r}")
        if head != "v2":  # HRNetV1: the last module fuses into the high-resolution branch only (no unused weights)
            config = dataclasses.replace(config, multi_scale_output=False)
        elif not config.multi_scale_output:
            raise ValueError("SegHRNet needs multi_scale_output=True (HRNetV2 concatenates all branches)")
        super().__init__(config)
        self.num_classes = num_classes
        self.head = head
        wide = hrnetv2_channels(config)
        if head == "v1h":
            c = config.branch_widths[0]
            self.increase = nn.Sequential(nn.Conv2d(c, wide, 1, bias=False),
                                          nn.BatchNorm2d(wide, momentum=config.bn_momentum), nn.ReLU(inplace=True))
            init_weights(self.increase, "normal")
        in_ch = config.branch_widths[0] if head == "v1" else wide
        self.last_layer = _linear_head(in_ch, num_classes, config.bn_momentum, final_kernel)
        init_weights(self.last_layer, "normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        if self.head == "v2":
            return self.last_layer(concat_branches(feats, self.config.align_corners))
        high = feats[0]
        return self.last_layer(self.increase(high) if self.head == "v1h" else high)


class SpatialGather(nn.Module):
    """Object-region representations: ``feats [N, C, H, W]``, ``probs [N, K, H, W]`` -> ``[N, C, K, 1]``.

    ``softmax(scale * probs)`` over pixels, then the probability-weighted sum of pixel features per class.
    No parameters (official ``ocr_gather_head``).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        n, k = probs.shape[:2]
        probs = F.softmax(self.scale * probs.reshape(n, k, -1), dim=2)  # [N, K, HW]
        feats = feats.reshape(n, feats.shape[1], -1).permute(0, 2, 1)  # [N, HW, C]
        return torch.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)  # [N, C, K, 1]


class ObjectAttentionBlock(nn.Module):
    """Pixel-to-object attention (official ``_ObjectAttentionBlock``, scale 1).

    ``x [N, C, H, W]`` (pixels), ``proxy [N, C, K, 1]`` (object regions) -> context ``[N, C, H, W]``:
    ``f_up(softmax(f_pixel(x)^T f_object(proxy) / sqrt(key_channels)) f_down(proxy)^T)``.
    Keys ``f_pixel.{0,1.0,2,3.0}``, ``f_object.*``, ``f_down.{0,1.0}``, ``f_up.{0,1.0}``.
    """

    def __init__(self, in_channels: int, key_channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.key_channels = key_channels

        def proj(i: int, o: int, two: bool) -> nn.Sequential:
            layers = [nn.Conv2d(i, o, 1, bias=False), _bn_relu(o, momentum)]
            if two:
                layers += [nn.Conv2d(o, o, 1, bias=False), _bn_relu(o, momentum)]
            return nn.Sequential(*layers)

        self.f_pixel = proj(in_channels, key_channels, True)
        self.f_object = proj(in_channels, key_channels, True)
        self.f_down = proj(in_channels, key_channels, False)
        self.f_up = proj(key_channels, in_channels, False)

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        query = self.f_pixel(x).reshape(n, self.key_channels, -1).permute(0, 2, 1)  # [N, HW, Ck]
        key = self.f_object(proxy).reshape(n, self.key_channels, -1)  # [N, Ck, K]
        value = self.f_down(proxy).reshape(n, self.key_channels, -1).permute(0, 2, 1)  # [N, K, Ck]
        sim = F.softmax(torch.matmul(query, key) * self.key_channels ** -0.5, dim=-1)  # [N, HW, K]
        context = torch.matmul(sim, value).permute(0, 2, 1).reshape(n, self.key_channels, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """Object-contextual representation: ``concat(context, feats)`` -> 1x1 conv -> BN-ReLU -> Dropout2d.

    ``feats [N, C, H, W]``, ``proxy [N, C, K, 1]`` -> ``[N, out_channels, H, W]`` (official ``SpatialOCR_Module``).
    """

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels, momentum)
        self.conv_bn_dropout = nn.Sequential(nn.Conv2d(2 * in_channels, out_channels, 1, bias=False),
                                             _bn_relu(out_channels, momentum), nn.Dropout2d(dropout))

    def forward(self, feats: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))


class SegHRNetOCR(HRNet):
    """HRNetV2 + OCR head for semantic segmentation.

    ``forward``: image ``[N, 3, H, W]`` -> ``[aux, main]`` logits, each ``[N, num_classes, ceil(H/4), ceil(W/4)]``.

    Args:
        config: backbone config; the official OCR configs use bilinear fuse upsampling with ``align_corners=True``
            and BN momentum 0.1.
        num_classes: number of classes.
        mid_channels: width after ``conv3x3_ocr`` (512).
        key_channels: attention key width (256).
        dropout: Dropout2d rate of the OCR output (0.05).
    """

    def __init__(self, config: HRNetConfig | None = None, num_classes: int = 19, mid_channels: int = 512,
                 key_channels: int = 256, dropout: float = 0.05) -> None:
        config = config or HRNetConfig(upsample="bilinear", align_corners=True)
        if not config.multi_scale_output:
            raise ValueError("SegHRNetOCR needs multi_scale_output=True (HRNetV2 concatenates all branches)")
        super().__init__(config)
        self.num_classes = num_classes
        m = config.bn_momentum
        in_ch = hrnetv2_channels(config)
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(in_ch, mid_channels, 3, 1, 1),
                                         nn.BatchNorm2d(mid_channels, momentum=m), nn.ReLU(inplace=True))
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid_channels, key_channels, mid_channels, dropout, m)
        self.cls_head = nn.Conv2d(mid_channels, num_classes, 1, 1, 0)
        self.aux_head = _linear_head(in_ch, num_classes, m)
        for mod in (self.conv3x3_ocr, self.ocr_distri_head, self.cls_head, self.aux_head):
            init_weights(mod, "normal")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = concat_branches(self.forward_features(x), self.config.align_corners)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(feats, aux)
        feats = self.ocr_distri_head(feats, context)
        return [aux, self.cls_head(feats)]
