"""HRNetV2p: HRNet backbone + HRFPN neck for object detection.

Follows DET, HRNetV2 paper Sec. 3 / Fig. 3 (c), FACTS.md section 6.

HRFPN: branches ``1..3`` are bilinearly upsampled to the 1/4 branch and concatenated; ``reduction_conv`` (1x1 conv
with bias, no norm) maps ``15C -> 256``; the pyramid is the reduced map plus average-pooled copies (kernel = stride =
``2**i``, ``i = 1..4``); ``fpn_conv.i`` are five unshared 3x3 convs with bias. Output strides 4, 8, 16, 32, 64.
Parameter names follow the official HRNet-Object-Detection release (``reduction_conv.0``, ``fpn_conv.<i>``);
mmdetection 2.x renamed them (``reduction_conv.conv``, ``fpn_convs.<i>.conv``).

:class:`HRNetV2p` is a torchvision-style detection backbone: ``forward`` returns an ``OrderedDict`` of maps named
``"0" .. "4"`` and it has ``out_channels = 256``, so it plugs into ``torchvision.models.detection.FasterRCNN`` /
``MaskRCNN`` (whose default anchor generator has 5 levels and whose default RoI poolers read maps ``"0" .. "3"``,
i.e. strides 4..32 as in the official config). Its state-dict keys are ``backbone.*`` and ``neck.*``, the layout of
mmdetection-style checkpoints.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .hrnet import HRNet, HRNetConfig, resize_to


class HRFPN(nn.Module):
    """High-resolution feature pyramid.

    ``forward``: list of branch maps ``[N, in_channels[b], H/2**b, W/2**b]`` -> tuple of ``num_outs`` maps
    ``[N, out_channels, ceil(H / 2**i), ...]`` (``H`` = 1/4-branch height; pooling floors odd sizes).

    Args:
        in_channels: widths of the input branches (``[C, 2C, 4C, 8C]``).
        out_channels: pyramid width (256).
        num_outs: pyramid levels (5).
        pooling: ``"avg"`` (official) or ``"max"``.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_outs: int = 5,
                 pooling: str = "avg") -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"HRFPN pooling must be 'avg' or 'max', got {pooling!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.pooling = pooling
        self.reduction_conv = nn.Sequential(nn.Conv2d(sum(self.in_channels), out_channels, kernel_size=1))
        self.fpn_conv = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in range(num_outs)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"HRFPN expects {len(self.in_channels)} branch maps, got {len(inputs)}")
        size = inputs[0].shape[-2:]
        out = torch.cat([inputs[0]] + [resize_to(t, size, "bilinear", False) for t in inputs[1:]], dim=1)
        out = self.reduction_conv(out)
        pool = F.avg_pool2d if self.pooling == "avg" else F.max_pool2d
        levels = [out] + [pool(out, kernel_size=2**i, stride=2**i) for i in range(1, self.num_outs)]
        return tuple(conv(level) for conv, level in zip(self.fpn_conv, levels))


class HRNetV2p(nn.Module):
    """HRNet backbone + HRFPN neck as a detection backbone.

    ``forward``: image batch ``[N, 3, H, W]`` -> ``OrderedDict``
    ``{"0": [N, 256, H/4, W/4], ..., "4": [N, 256, H/64, W/64]}``
    (sizes rounded as the strided convs / pooling do; torchvision's transform pads inputs to multiples of 32).

    Args:
        config: backbone config (official DET: multi-scale output, nearest fuse upsampling, BN momentum 0.1).
        out_channels: pyramid width (256).
        num_outs: pyramid levels (5).
        pooling: ``"avg"`` | ``"max"``.
    """

    def __init__(self, config: HRNetConfig | None = None, out_channels: int = 256, num_outs: int = 5,
                 pooling: str = "avg") -> None:
        super().__init__()
        config = config or HRNetConfig(init="kaiming")
        if not config.multi_scale_output:
            raise ValueError("HRNetV2p needs multi_scale_output=True (HRFPN uses all branches)")
        self.config = config
        self.backbone = HRNet(config)
        self.neck = HRFPN(config.branch_widths, out_channels, num_outs, pooling)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        levels = self.neck(self.backbone(x))
        return OrderedDict((str(i), level) for i, level in enumerate(levels))
