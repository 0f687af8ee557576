"""The multi-resolution HRNet backbone, shared by every HRNet-based network of the zoo.

One configurable implementation of the HRNet body (pose paper Sec. 3, HRNetV2 paper Sec. 3, FACTS.md section 0):

* stem: two 3x3 stride-2 convs (3 -> 64 -> 64) with BN + ReLU, resolution 1/4;
* stage 1 (``layer1``): ``stage1_blocks`` Bottlenecks of width ``stage1_planes`` (output ``4 * stage1_planes``);
* ``transition{s}``: adapts the previous stage's branches to the next stage and adds one new, half-resolution branch
  (3x3 stride-2 conv + BN + ReLU from the lowest-resolution branch);
* ``stage{s}`` (s = 2, 3, ...): ``stage_modules[s-2]`` multi-resolution modules with ``s`` parallel branches of widths
  ``C, 2C, 4C, 8C, ...`` (``C = width``), each branch ``stage_blocks[s-2]`` BasicBlocks, followed by a fusion
  ("exchange unit") that sums every branch resampled to every resolution.

Parameter names and registration order follow the official releases (DHRN, HH, SEG, FACE, CLS, DET, TIMM), so the
state dicts of those releases load with ``strict=True`` into the networks built on this class.

Switches used by the papers' ablations:

* ``fusion`` (pose paper Sec. 4.4, Table 6): ``"all"`` = every module ends with an exchange unit (1 + 4 + 3 = 8 for
  the standard layout); ``"across_stage"`` = only the last module of each stage fuses (3 fusions: the exchange units
  across stages, none within stages); ``"final"`` = only the last module of the last stage fuses (1 fusion).
  A module without fusion keeps its branches independent (no ``fuse_layers`` keys).
* ``upsample``: ``"nearest"`` (DHRN, HH, CLS, DET, TIMM: ``1x1 conv + BN + nearest x2^k``) or ``"bilinear"`` (SEG, FACE;
  resized to the target branch's size with ``align_corners``). Nearest upsampling is computed to the target branch's
  size, which equals the official ``scale_factor=2**k`` upsampling whenever the official code runs (sizes that are
  exact multiples) and also works for inputs whose size is not a multiple of 32.
* ``multi_scale_output``: ``False`` builds the last module with only the highest-resolution output
  (``fuse_layers.0`` only; DHRN and HH), ``True`` keeps all branches (SEG, FACE, CLS, DET).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BasicBlock, Bottleneck, make_layer

FUSION_SCHEMES = ("all", "across_stage", "final")
UPSAMPLE_MODES = ("nearest", "bilinear")
INIT_SCHEMES = ("normal", "kaiming")


@dataclass(frozen=True)
class HRNetConfig:
    """Plain-data description of an HRNet backbone.

    Attributes:
        width: ``C``, the width of the highest-resolution branch; branch ``b`` has width ``C * 2**b``.
        stage1_blocks: number of Bottlenecks in stage 1 (4 in HRNet-W*; 1 / 2 in the official
            ``small_v1`` / ``small_v2``).
        stage1_planes: Bottleneck width of stage 1 (64; 32 in ``small_v1``); stage-1 output is ``4 * stage1_planes``.
        stage_modules: modules per multi-resolution stage (stages 2, 3, 4, ...); the standard layout is ``(1, 4, 3)``.
        stage_blocks: BasicBlocks per branch in each multi-resolution stage; the standard layout is ``(4, 4, 4)``.
        fusion: ``"all"`` | ``"across_stage"`` | ``"final"`` (pose paper Table 6; see module docstring).
        upsample: ``"nearest"`` | ``"bilinear"`` fuse upsampling.
        align_corners: ``align_corners`` of bilinear resizing (ignored for nearest).
        multi_scale_output: whether the last module returns all branches (``True``) or only the 1/4 branch.
        bn_momentum: BatchNorm momentum (0.1 in DHRN, HH, CLS, SEG-OCR, DET; 0.01 in SEG master and FACE).
        init: weight initialisation: ``"normal"`` (conv weights N(0, 0.001), as DHRN/HH/SEG/FACE) or ``"kaiming"``
            (He normal, fan_out, as CLS/DET). BN weights 1, biases 0 in both.
    """

    width: int = 32
    stage1_blocks: int = 4
    stage1_planes: int = 64
    stage_modules: tuple[int, ...] = (1, 4, 3)
    stage_blocks: tuple[int, ...] = (4, 4, 4)
    fusion: str = "all"
    upsample: str = "nearest"
    align_corners: bool = False
    multi_scale_output: bool = True
    bn_momentum: float = 0.1
    init: str = "normal"

    def __post_init__(self) -> None:
        # tuples from lists (YAML / CLI overrides) so that the frozen config stays hashable
        object.__setattr__(self, "stage_modules", tuple(int(m) for m in self.stage_modules))
        object.__setattr__(self, "stage_blocks", tuple(int(b) for b in self.stage_blocks))
        if self.width < 1:
            raise ValueError(f"HRNetConfig.width must be >= 1, got {self.width}")
        if self.stage1_blocks < 1 or self.stage1_planes < 1:
            raise ValueError(f"HRNetConfig stage 1 needs >= 1 block and >= 1 plane, got stage1_blocks="
                             f"{self.stage1_blocks}, stage1_planes={self.stage1_planes}")
        if len(self.stage_modules) == 0 or len(self.stage_modules) != len(self.stage_blocks):
            raise ValueError(f"HRNetConfig.stage_modules {self.stage_modules} and stage_blocks {self.stage_blocks} "
                             "must be non-empty and of equal length (one entry per multi-resolution stage)")
        if min(self.stage_modules) < 1 or min(self.stage_blocks) < 1:
            raise ValueError(f"HRNetConfig: every stage needs >= 1 module and >= 1 block, got "
                             f"stage_modules={self.stage_modules}, stage_blocks={self.stage_blocks}")
        if self.fusion not in FUSION_SCHEMES:
            raise ValueError(f"HRNetConfig.fusion must be one of {FUSION_SCHEMES}, got {self.fusion!r}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"HRNetConfig.upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"HRNetConfig.init must be one of {INIT_SCHEMES}, got {self.init!r}")

    @property
    def num_branches(self) -> int:
        """Number of parallel branches of the last stage (4 for the standard layout)."""
        return len(self.stage_modules) + 1

    @property
    def branch_widths(self) -> list[int]:
        """Widths of the last stage's branches: ``[C, 2C, 4C, 8C]`` for the standard layout."""
        return [self.width * 2**b for b in range(self.num_branches)]

    def module_fuses(self, stage_index: int, module_index: int) -> bool:
        """Whether module ``module_index`` of multi-resolution stage ``stage_index`` (0 = stage 2) fuses."""
        last_module = module_index == self.stage_modules[stage_index] - 1
        if self.fusion == "all":
            return True
        if self.fusion == "across_stage":
            return last_module
        return last_module and stage_index == len(self.stage_modules) - 1


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size, mode: str, align_corners: bool) -> torch.Tensor:
    """Resize ``[N, C, h, w] -> [N, C, *size]`` (nearest, or bilinear with ``align_corners``)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class HRModule(nn.Module):
    """One multi-resolution module: parallel BasicBlock branches, then (optionally) the exchange unit.

    Input/output: a list of ``num_branches`` tensors ``[N, widths[b], H / 2**b, W / 2**b]``. With ``fuse=True`` output
    ``i`` is ``ReLU(sum_j a(X_j, i))`` where ``a`` is identity (``j == i``), 1x1 conv + BN + upsampling (``j > i``) or
    ``i - j`` strided 3x3 conv + BN steps with ReLU between them (``j < i``; only the last step changes the width)
    (pose paper Sec. 3, "Repeated multi-scale fusion"). With ``multi_scale_output=False`` only output 0 is produced.
    Without fusion the branch outputs are returned unchanged (``fuse_layers`` is ``None``).
    Keys: ``branches.<b>.<k>.*``, ``fuse_layers.<i>.<j>.*`` as in the official releases.
    """

    def __init__(self, widths: list[int], num_blocks: int, fuse: bool = True, multi_scale_output: bool = True,
                 upsample: str = "nearest", align_corners: bool = False, momentum: float = 0.1) -> None:
        super().__init__()
        self.widths = list(widths)
        self.num_branches = len(widths)
        self.upsample = upsample
        self.align_corners = align_corners
        self.multi_scale_output = multi_scale_output
        self.branches = nn.ModuleList(
            [make_layer(BasicBlock, w, w, num_blocks, momentum=momentum) for w in self.widths])
        self.fuse_layers = self._make_fuse_layers(momentum) if fuse and self.num_branches > 1 else None

    def _make_fuse_layers(self, momentum: float) -> nn.ModuleList:
        widths = self.widths
        fuse_layers = nn.ModuleList()
        for i in range(self.num_branches if self.multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(self.num_branches):
                if j > i:  # upsample: 1x1 conv to width i + BN; the resize happens in forward
                    row.append(nn.Sequential(nn.Conv2d(widths[j], widths[i], 1, 1, 0, bias=False),
                                             nn.BatchNorm2d(widths[i], momentum=momentum)))
                elif j == i:
                    row.append(None)
                else:  # downsample by (i - j) strided 3x3 convs
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_w = widths[i] if last else widths[j]
                        step = [nn.Conv2d(widths[j], out_w, 3, 2, 1, bias=False),
                                nn.BatchNorm2d(out_w, momentum=momentum)]
                        if not last:
                            step.append(nn.ReLU(inplace=False))
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(row)
        return fuse_layers

    @property
    def fuses(self) -> bool:
        """Whether this module ends with an exchange unit."""
        return self.fuse_layers is not None

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(x) != self.num_branches:
            raise ValueError(f"HRModule expects {self.num_branches} inputs, got {len(x)}")
        x = [branch(t) for branch, t in zip(self.branches, x)]
        if self.fuse_layers is None:
            return x if self.multi_scale_output else x[:1]
        return [self.fuse_into(i, row, x) for i, row in enumerate(self.fuse_layers)]

    def fuse_into(self, i: int, row: nn.ModuleList, x: list[torch.Tensor]) -> torch.Tensor:
        """Exchange unit output of branch ``i``: ``ReLU(sum_j a(X_j, i))`` (pose paper Sec. 3).

        Args:
            i: output branch. row: ``fuse_layers[i]`` (``row[j]`` maps branch ``j`` to branch ``i``'s width).
            x: the branch outputs ``[N, widths[j], H / 2**j, W / 2**j]``.

        Returns:
            ``[N, widths[i], H / 2**i, W / 2**i]``; higher branches are resized with ``upsample``.
        """
        size = x[i].shape[-2:]
        y = x[0] if i == 0 else row[0](x[0])
        for j in range(1, self.num_branches):
            if j == i:
                y = y + x[j]
            elif j > i:
                y = y + resize_to(row[j](x[j]), size, self.upsample, self.align_corners)
            else:
                y = y + row[j](x[j])
        return F.relu(y)


def make_transition(pre_widths: list[int], cur_widths: list[int], momentum: float = 0.1) -> nn.ModuleList:
    """Transition between stages (official ``transition{s}``).

    Existing branch ``i``: ``None`` when its width is unchanged, else 3x3 conv + BN + ReLU. New branch ``i``:
    ``i + 1 - len(pre_widths)`` steps of 3x3 stride-2 conv + BN + ReLU from the last previous branch (only the last step
    changes the width), wrapped in a ``Sequential`` (keys ``transition1.1.0.0.weight``).
    """
    layers = nn.ModuleList()
    n_pre = len(pre_widths)
    for i, w in enumerate(cur_widths):
        if i < n_pre:
            if w != pre_widths[i]:
                layers.append(nn.Sequential(nn.Conv2d(pre_widths[i], w, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(w, momentum=momentum), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            steps = []
            for k in range(i + 1 - n_pre):
                in_w = pre_widths[-1]
                out_w = w if k == i - n_pre else in_w
                steps.append(nn.Sequential(nn.Conv2d(in_w, out_w, 3, 2, 1, bias=False),
                                           nn.BatchNorm2d(out_w, momentum=momentum), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return layers


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise convs / BN in place.

    ``"normal"``: conv and transposed-conv weights N(0, 0.001), biases 0 (DHRN, HH, SEG, FACE ``init_weights``).
    ``"kaiming"``: He normal (fan_out, ReLU) conv weights, biases 0 (CLS, DET). Both set BN weight 1, bias 0.
    Linear layers keep PyTorch's default initialisation (as in CLS).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if scheme == "normal":
                nn.init.normal_(m.weight, std=0.001)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class HRNet(nn.Module):
    """HRNet backbone: ``[N, 3, H, W] -> list`` of ``num_branches`` maps ``[N, C * 2**b, H / 2**(b+2), W / 2**(b+2)]``
    (only the 1/4 map when ``multi_scale_output`` is False).

    Task networks (pose, HigherHRNet, segmentation, face, classification) subclass this and register their head modules
    after ``super().__init__``, so that their state dicts have the official flat layout (``conv1.weight`` ...
    ``stage4.*`` followed by the head). Spatial sizes follow ``ceil(H / 2)`` per stride-2 conv.

    Args:
        config: :class:`HRNetConfig`.
    """

    def __init__(self, config: HRNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or HRNetConfig()
        self.config = cfg
        m = cfg.bn_momentum
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=m)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=m)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, 64, cfg.stage1_planes, cfg.stage1_blocks, momentum=m)

        pre_widths = [cfg.stage1_planes * Bottleneck.expansion]
        n_stages = len(cfg.stage_modules)
        for si in range(n_stages):
            widths = [cfg.width * 2**b for b in range(si + 2)]
            self.add_module(f"transition{si + 1}", make_transition(pre_widths, widths, momentum=m))
            modules = []
            for mi in range(cfg.stage_modules[si]):
                is_last = si == n_stages - 1 and mi == cfg.stage_modules[si] - 1
                modules.append(HRModule(widths, cfg.stage_blocks[si], fuse=cfg.module_fuses(si, mi),
                                        multi_scale_output=cfg.multi_scale_output or not is_last,
                                        upsample=cfg.upsample, align_corners=cfg.align_corners, momentum=m))
            self.add_module(f"stage{si + 2}", nn.Sequential(*modules))
            pre_widths = widths
        self.num_stages = n_stages
        self.out_channels = cfg.branch_widths if cfg.multi_scale_output else cfg.branch_widths[:1]
        init_weights(self, cfg.init)

    @property
    def num_fusions(self) -> int:
        """Number of modules that end with an exchange unit (8 / 3 / 1 for fusion all / across_stage / final)."""
        return sum(1 for m in self.modules() if isinstance(m, HRModule) and m.fuses)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features: list of branch maps (see class docstring). ``x``: ``[N, 3, H, W]`` normalised image."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HRNet expects an input of shape [N, 3, H, W], got {list(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        y_list = [self.layer1(x)]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s + 1}")
            x_list = []
            for i, t in enumerate(transition):
                if t is None:
                    x_list.append(y_list[i])
                else:
                    x_list.append(t(y_list[i] if i < len(y_list) else y_list[-1]))
            y_list = getattr(self, f"stage{s + 2}")(x_list)
        return y_list

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def concat_branches(feats: list[torch.Tensor], align_corners: bool = False) -> torch.Tensor:
    """HRNetV2 representation: bilinearly upsample every branch to the first one's size and concatenate.

    ``[N, C, H, W], [N, 2C, H/2, W/2], ... -> [N, 15C, H, W]`` for four branches (HRNetV2 paper Sec. 3, Fig. 3 (b)).
    """
    size = feats[0].shape[-2:]
    return torch.cat([feats[0]] + [resize_to(f, size, "bilinear", align_corners) for f in feats[1:]], dim=1)


def hrnetv2_channels(config: HRNetConfig) -> int:
    """Channels of the concatenated HRNetV2 representation: ``C * (2**B - 1)`` (15C for four branches)."""
    return int(sum(config.branch_widths))


__all__ = ["HRNetConfig", "HRModule", "HRNet", "make_transition", "init_weights", "resize_to", "concat_branches",
           "hrnetv2_channels", "FUSION_SCHEMES", "UPSAMPLE_MODES"]
