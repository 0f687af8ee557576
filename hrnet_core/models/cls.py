"""ImageNet classification network: HRNet + classification head (CLS / TIMM; HRNetV2 paper Appendix, Fig. 5,
FACTS.md section 5).

Head: ``incre_modules.b`` one Bottleneck per branch raising the widths to ``128, 256, 512, 1024``;
``downsamp_modules.b`` 3x3 stride-2 conv (bias) + BN + ReLU adds the running high-resolution representation into the
next branch; ``final_layer`` 1x1 conv (bias) ``1024 -> 2048`` + BN + ReLU; global average pooling;
``classifier`` Linear ``2048 -> num_classes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Bottleneck, make_layer
from .hrnet import HRNet, HRNetConfig, init_weights


class ClsHRNet(HRNet):
    """HRNet-W*-C for image classification.

    ``forward``: image ``[N, 3, H, W]`` (224x224 officially) -> logits ``[N, num_classes]``.
    ``forward_head_features`` returns the pooled ``[N, 2048]`` representation.

    Args:
        config: backbone config (official CLS: nearest upsampling, BN momentum 0.1, He init).
        num_classes: 1000 for ImageNet.
        head_planes: Bottleneck planes of ``incre_modules`` per branch (official ``32 * 2**b``; output ``4x`` that).
        num_features: width of ``final_layer`` (2048).
    """

    def __init__(self, config: HRNetConfig | None = None, num_classes: int = 1000,
                 head_planes: tuple[int, ...] | None = None, num_features: int = 2048) -> None:
        config = config or HRNetConfig(width=18, init="kaiming")
        if not config.multi_scale_output:
            raise ValueError("ClsHRNet needs multi_scale_output=True (the head uses all branches)")
        super().__init__(config)
        m = config.bn_momentum
        widths = config.branch_widths
        head_planes = tuple(head_planes or (32 * 2**b for b in range(len(widths))))
        if len(head_planes) != len(widths):
            raise ValueError(f"head_planes needs one entry per branch ({len(widths)}), got {head_planes}")
        out = [p * Bottleneck.expansion for p in head_planes]
        self.num_classes = num_classes
        self.incre_modules = nn.ModuleList(
            [make_layer(Bottleneck, w, p, 1, momentum=m) for w, p in zip(widths, head_planes)])
        self.downsamp_modules = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(out[b], out[b + 1], 3, 2, 1), nn.BatchNorm2d(out[b + 1], momentum=m),
                           nn.ReLU(inplace=True)) for b in range(len(out) - 1)])
        self.final_layer = nn.Sequential(nn.Conv2d(out[-1], num_features, 1, 1, 0),
                                         nn.BatchNorm2d(num_features, momentum=m), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(num_features, num_classes)
        for mod in (self.incre_modules, self.downsamp_modules, self.final_layer):
            init_weights(mod, config.init)

    def forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled representation ``[N, num_features]`` before the classifier."""
        feats = self.forward_features(x)
        y = self.incre_modules[0](feats[0])
        for b, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[b + 1](feats[b + 1]) + down(y)
        y = self.final_layer(y)
        return F.adaptive_avg_pool2d(y, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_head_features(x))
