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

Heatmaps from a lower-resolution representation (pose paper Sec. 4.1, ablation "Resolution of representation",
Figure 5): ``heatmap_branch=b`` puts the ``"v1"`` head on branch ``b`` (width ``C * 2**b``, stride ``4 * 2**b``) and
regresses heatmaps at that branch's resolution. The last module then fuses all branches into branch ``b`` only
(``stage4.<last>.fuse_layers.<b>.*``, the same entries as in a multi-scale last module, so ImageNet classification
weights still initialise it); ``b = 0`` is exactly the official layout. With a backbone config that asks for
``multi_scale_output=True`` the full multi-scale last module is kept and branch ``b`` of its output is used.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .hrnet import HRModule, HRNet, HRNetConfig, concat_branches, hrnetv2_channels, init_weights

POSE_HEADS = ("v1", "v1h", "v2")


class BranchOutputHRModule(HRModule):
    """Last multi-resolution module that fuses every branch into branch ``output_branch`` only.

    The generalisation of the official single-scale last module (``multi_scale_output=False``, output branch 0) to any
    output branch: ``forward`` takes the list of ``len(widths)`` branch maps ``[N, widths[j], H / 2**j, W / 2**j]`` and
    returns a one-element list ``[ReLU(sum_j a(X_j, b))]`` of shape ``[N, widths[b], H / 2**b, W / 2**b]`` with the
    exchange unit of :class:`~hrnet_core.models.hrnet.HRModule` (pose paper Sec. 3). Only the fuse row ``b`` exists
    (state-dict keys ``fuse_layers.<b>.<j>.*``), so no parameter is left without gradient (DDP needs that).

    Args:
        widths: branch widths ``[C, 2C, 4C, 8C]``.
        num_blocks: BasicBlocks per branch.
        output_branch: ``b``, the branch that is returned (``0 <= b < len(widths)``).
        fuse: whether the module ends with an exchange unit; without one, branch ``b`` is returned unfused.
        upsample, align_corners, momentum: as :class:`~hrnet_core.models.hrnet.HRModule`.

    Raises:
        ValueError: ``output_branch`` out of range.
    """

    def __init__(self, widths: list[int], num_blocks: int, output_branch: int, fuse: bool = True,
                 upsample: str = "nearest", align_corners: bool = False, momentum: float = 0.1) -> None:
        if not 0 <= output_branch < len(widths):
            raise ValueError(f"output_branch must be in [0, {len(widths) - 1}], got {output_branch}")
        self.output_branch = output_branch  # read by _make_fuse_layers during HRModule.__init__
        super().__init__(widths, num_blocks, fuse=fuse, multi_scale_output=True, upsample=upsample,
                         align_corners=align_corners, momentum=momentum)
        self.multi_scale_output = False  # returns one branch

    def _make_fuse_layers(self, momentum: float) -> nn.ModuleDict:
        rows = super()._make_fuse_layers(momentum)  # every row (multi_scale_output=True at this point)
        return nn.ModuleDict({str(self.output_branch): rows[self.output_branch]})

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(x) != self.num_branches:
            raise ValueError(f"BranchOutputHRModule expects {self.num_branches} inputs, got {len(x)}")
        b = self.output_branch
        x = [branch(t) for branch, t in zip(self.branches, x)]
        if self.fuse_layers is None:
            return [x[b]]
        return [self.fuse_into(b, self.fuse_layers[str(b)], x)]


class PoseHRNet(HRNet):
    """HRNet for top-down heatmap regression.

    ``forward``: image ``[N, 3, H, W]`` (normalised) -> heatmaps ``[N, num_joints, H / s, W / s]`` with the heatmap
    stride ``s = 4 * 2**heatmap_branch`` input pixels per heatmap cell (4 for the standard head; sizes round up per
    stride-2 conv, ``ceil``).

    Args:
        config: backbone config; the DHRN layout uses ``multi_scale_output=False`` and nearest upsampling.
            ``head="v2"`` needs all branches and switches ``multi_scale_output`` on.
        num_joints: K (17 for COCO, 16 for MPII, 14 for CrowdPose).
        head: ``"v1"`` | ``"v1h"`` | ``"v2"`` (module docstring).
        head_width: width of ``head_conv`` for v1h / v2 (default ``15C``); ignored for v1.
        final_kernel: kernel size of ``final_layer`` (1 in every official config; 3 pads by 1).
        heatmap_branch: ``b``, the branch the heatmaps are regressed from (pose paper Sec. 4.1 / Figure 5):
            0 = 1/4 resolution (1x, the official models), 1 = 1/8 (2x), 2 = 1/16 (4x), 3 = 1/32 (8x).
            ``final_layer`` is a ``C * 2**b -> K`` conv on that branch. With a single-scale config the last module
            fuses into branch ``b`` only (:class:`BranchOutputHRModule`; ``b = 0`` keeps the official layout, keys
            and parameter count); with ``multi_scale_output=True`` all branches are kept and branch ``b`` is used.
            Only the ``"v1"`` head supports ``b > 0`` (v1h widens the 1/4 map and v2 concatenates at 1/4, as
            defined in the HRNetV2 paper; neither is part of the Figure 5 ablation).

    Raises:
        ValueError: unknown ``head``; ``heatmap_branch`` not an integer in ``[0, num_branches - 1]``;
            ``heatmap_branch > 0`` with head ``"v1h"`` / ``"v2"``.
    """

    def __init__(self, config: HRNetConfig | None = None, num_joints: int = 17, head: str = "v1",
                 head_width: int | None = None, final_kernel: int = 1, heatmap_branch: int = 0) -> None:
        if head not in POSE_HEADS:
            raise ValueError(f"pose head must be one of {POSE_HEADS}, got {head!r}")
        config = config or HRNetConfig(multi_scale_output=False)
        if isinstance(heatmap_branch, bool) or not isinstance(heatmap_branch, int) \
                or not 0 <= heatmap_branch < config.num_branches:
            raise ValueError(f"heatmap_branch must be an integer in [0, {config.num_branches - 1}] (the backbone has "
                             f"{config.num_branches} branches), got {heatmap_branch!r}")
        if heatmap_branch > 0 and head != "v1":
            raise ValueError(f"heatmap_branch={heatmap_branch} needs head 'v1' (a 1x1 conv on branch "
                             f"{heatmap_branch}); head {head!r} builds its representation at 1/4 resolution")
        if head == "v2" and not config.multi_scale_output:
            config = replace(config, multi_scale_output=True)
        super().__init__(config)
        self.head = head
        self.num_joints = num_joints
        self.heatmap_branch = heatmap_branch
        self.heatmap_stride = 4 * 2**heatmap_branch
        # index of the head's branch in forward_features' output
        self._feature_index = heatmap_branch if config.multi_scale_output else 0
        if heatmap_branch > 0 and not config.multi_scale_output:
            self._replace_last_module(config, heatmap_branch)
        c = config.branch_widths[heatmap_branch]
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

    def _replace_last_module(self, config: HRNetConfig, branch: int) -> None:
        """Swap the single-scale last module (output branch 0) for one that outputs ``branch``."""
        stage = getattr(self, f"stage{self.num_stages + 1}")
        last = stage[-1]
        new = BranchOutputHRModule(last.widths, config.stage_blocks[-1], branch, fuse=last.fuses,
                                   upsample=config.upsample, align_corners=config.align_corners,
                                   momentum=config.bn_momentum)
        init_weights(new, config.init)
        stage[len(stage) - 1] = new
        self.out_channels = [config.branch_widths[branch]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> heatmaps ``[N, K, ceil(H / s), ceil(W / s)]``, ``s = heatmap_stride`` (class docstring)."""
        feats = self.forward_features(x)
        if self.head == "v2":
            y = self.head_conv(concat_branches(feats))
        elif self.head == "v1h":
            y = self.head_conv(feats[0])
        else:
            y = feats[self._feature_index]
        return self.final_layer(y)
