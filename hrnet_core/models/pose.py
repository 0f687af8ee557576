"""Top-down pose estimation network: HRNet + heatmap head (DHRN; pose paper Sec. 3, FACTS.md section 1).

Three heads, chosen by ``head``:

* ``"v1"`` (official, HRNetV1): ``final_layer`` 1x1 conv (bias) ``C -> K`` on the 1/4 branch of a single-scale last
  module. This is the layout of the DHRN checkpoints.
* ``"v1h"`` (HRNetV1h, HRNetV2 paper Sec. 4.4 / Fig. 4): a 1x1 conv + BN + ReLU (``head_conv``) increases the width of
  the 1/4 representation to ``head_width`` (default ``15C``, the width of the HRNetV2 representation, so that V1h and V2
  compare at equal head width), then ``final_layer``. No official checkpoint exists.
* ``"v2"`` (HRNetV2 applied to pose): all four branches are bilinearly upsampled to 1/4 and concatenated (``15C``),
  mixed by ``head_conv`` (1x1 conv + BN + ReLU, ``15C -> head_width``, default 15C), then ``final_layer``. The backbone
  is built with a multi-scale last module (``stage4.2.fuse_layers.{1,2,3}`` exist). No official checkpoint exists.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .hrnet import HRNet, HRNetConfig, concat_branches, hrnetv2_channels, init_weights

POSE_HEADS = ("v1", "v1h", "v2")


class PoseHRNet(HRNet):
    """HRNet for top-down heatmap regression.

    ``forward``: image ``[N, 3, H, W]`` -> heatmaps ``[N, num_joints, H/4, W/4]`` (heatmap cells are 4 input pixels).

    Args:
        config: backbone config; the DHRN layout uses ``multi_scale_output=False`` and nearest upsampling.
            ``head="v2"`` needs all branches and switches ``multi_scale_output`` on.
        num_joints: K (17 for COCO, 16 for MPII, 14 for CrowdPose).
        head: ``"v1"`` | ``"v1h"`` | ``"v2"`` (module docstring).
        head_width: width of ``head_conv`` for v1h / v2 (default ``15C``); ignored for v1.
        final_kernel: kernel size of ``final_layer`` (1 in every official config; 3 pads by 1).

    Raises:
        ValueError: unknown ``head``.
    """

    def __init__(self, config: HRNetConfig | None = None, num_joints: int = 17, head: str = "v1",
                 head_width: int | None = None, final_kernel: int = 1) -> None:
        if head not in POSE_HEADS:
            raise ValueError(f"pose head must be one of {POSE_HEADS}, got {head!r}")
        config = config or HRNetConfig(multi_scale_output=False)
        if head == "v2" and not config.multi_scale_output:
            config = replace(config, multi_scale_output=True)
        super().__init__(config)
        self.head = head
        self.num_joints = num_joints
        c = config.width
        in_ch = c
        if head in ("v1h", "v2"):
            head_in = hrnetv2_channels(config) if head == "v2" else c
            in_ch = head_width or hrnetv2_channels(config)
            self.head_conv = nn.Sequential(nn.Conv2d(head_in, in_ch, 1, 1, 0, bias=False),
                                           nn.BatchNorm2d(in_ch, momentum=config.bn_momentum), nn.ReLU(inplace=True))
        self.final_layer = nn.Conv2d(in_ch, num_joints, final_kernel, 1, 1 if final_kernel == 3 else 0)
        for m in (getattr(self, "head_conv", None), self.final_layer):
            if m is not None:
                init_weights(m, "normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        if self.head == "v2":
            y = self.head_conv(concat_branches(feats))
        elif self.head == "v1h":
            y = self.head_conv(feats[0])
        else:
            y = feats[0]
        return self.final_layer(y)
