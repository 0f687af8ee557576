"""HRFormer: High-Resolution Transformer (Yuan et al., NeurIPS 2021) for pose estimation and ImageNet classification.

The network keeps the HRNet layout (convolutional stem, one Bottleneck stage at 1/4, then stages of 2/3/4
parallel branches at 1/4, 1/8, 1/16, 1/32 with multi-scale fusion after every module) and replaces the BasicBlocks of
stages 2-4 by HRFormer blocks (paper Sec. 3, Fig. 1, Tables 1-2; FACTS.md section 7):

    x = x + DropPath(LSA(LN(x)))         local-window self-attention, windows of 7x7 tokens, relative position bias
    x = x + DropPath(FFN-DW(LN(x)))      1x1 C->rC + BN + GELU, 3x3 depthwise + BN + GELU, 1x1 rC->C + BN + GELU

Fusion follows HRNet with depthwise-separable downsampling (3x3 depthwise s2 + BN + 1x1 + BN, ReLU between steps)
and 1x1 conv + BN + upsampling (nearest in the official classification code, bilinear in the official pose code).

State-dict layout
-----------------
``cls_hrformer_{t,s,b}`` reproduce the official classification checkpoints (HRNet/HRFormer ``cls/models/hrt.py``,
configs ``cls/configs/hrt/hrt_{tiny,small,base}.yaml``) key for key, so ``load_state_dict(official, strict=True)``
works.

``hrformer_{t,s,b}`` (top-down pose) carry the same backbone names at the top level plus a ``final_layer`` head
(1x1 conv with bias, widths[0] -> num_joints, on the 1/4 branch). Official pose checkpoints (HRNet/HRFormer ``pose``,
an mmpose 0.x fork; ``TopDown`` model with ``HRT`` backbone and ``TopDownSimpleHead``) store::

    backbone.<key>                        ->  <key>       e.g. stage2.0.branches.0.0.attn.attn.q_proj.weight
    keypoint_head.final_layer.weight      ->  final_layer.weight    [num_joints, widths[0], 1, 1]
    keypoint_head.final_layer.bias        ->  final_layer.bias      [num_joints]

so stripping the ``backbone.`` / ``keypoint_head.`` prefixes gives exactly our pose keys. In the pose model the last
stage-4 module fuses to the 1/4 branch only (``stage4.<last>.fuse_layers.0.*``), as in the official pose backbone
(``multiscale_output`` False), and the ``relative_position_bias_table`` parameters exist but are not added to the
attention logits (the official pose code has that line commented out; ``rel_pos_bias`` switches it).

Padding: a feature map whose height/width is not a multiple of the window is zero-padded (centred: ``pad // 2`` before,
the rest after) *after* the LayerNorm, attended over without a mask (padded tokens act as keys whose projection is the
k/v bias, as in the official code), then cropped back.

Complexity: ``FlopCounterMode`` MACs (attention matmuls included) equal the reference counts of the official cls models
(T 1.708, S 3.364, B 13.308 GMACs at 224x224). The pose GFLOPs of paper Table 3 match conv + linear MACs / 2^30 with
the attention matmuls left out (measured 1.25 / 2.75 / 12.29 at 256x192 for T / S / B vs 1.3 / 2.8 / 12.2 printed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hrnet_core.models.blocks import Bottleneck, make_layer

__all__ = [
    "HRFORMER_MODELS",
    "inert_parameters",
    "HRFormerConfig",
    "HRFORMER_T",
    "HRFORMER_S",
    "HRFORMER_B",
    "DropPath",
    "WindowMultiheadAttention",
    "LocalWindowSelfAttention",
    "ConvFFN",
    "HRFormerBlock",
    "HRFormerModule",
    "HRFormerBackbone",
    "HRFormerPose",
    "HRFormerClassifier",
    "DepthwiseBottleneck",
    "init_hrformer_weights",
    "hrformer_t",
    "hrformer_s",
    "hrformer_b",
    "cls_hrformer_t",
    "cls_hrformer_s",
    "cls_hrformer_b",
    "override_keys",
]

BN_MOMENTUM = 0.1
LN_EPS = 1e-6
CLS_HEAD_CHANNELS = (32, 64, 128, 256)  # Bottleneck planes of the classification head (x4 -> 128/256/512/1024)
CLS_FEATURE_DIM = 2048

FuseUpsample = Literal["nearest", "bilinear"]


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HRFormerConfig:
    """Architecture of one HRFormer instance (paper Tables 1-2; FACTS.md section 7). Plain data, immutable.

    Per-branch fields (``num_heads``, ``window_size``, ``mlp_ratio``) hold one value per resolution (1/4 .. 1/32);
    builders accept a single int/float for them and broadcast it.

    Attributes:
        widths: channels of the four branches (C1..C4).
        num_heads: attention heads per branch; each must divide its width.
        stage_modules: number of HRFormer modules in stages 2, 3, 4.
        num_blocks: HRFormer blocks per branch in every module (paper: 2).
        stage1_blocks: Bottlenecks in stage 1 (paper: 2, width 64 -> 256 channels).
        window_size: local-window side in tokens per branch (paper: 7).
        mlp_ratio: FFN expansion ratio per branch (paper: 4).
        drop_path_rate: stochastic-depth rate of the last block; rates grow linearly from 0 over all transformer
            blocks of stages 2-4 (official ``torch.linspace(0, rate, depth)``).
        ffn_dw_conv: include the 3x3 depthwise conv (+ its BN) in the FFN; False is the "FFN w/o 3x3 DW-Conv."
            ablation of paper Tables 7 and 9 (removes ``mlp.dw3x3.*`` and ``mlp.norm2.*``).
        rel_pos_bias: add the relative position bias to the attention logits. The table parameter exists either
            way (official checkpoints carry it); official classification adds it, official pose never does.
        fuse_upsample: upsampling of the j>i fusion paths: "nearest" (official cls code) or "bilinear" with
            ``align_corners=False`` (official pose code).
        fused_attention: compute window attention with ``F.scaled_dot_product_attention`` instead of explicit
            matmul + softmax (same math; faster and lighter in training, but FLOP counters may not see the matmuls).
    """

    widths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    stage_modules: tuple[int, int, int]
    num_blocks: int = 2
    stage1_blocks: int = 2
    window_size: tuple[int, int, int, int] = (7, 7, 7, 7)
    mlp_ratio: tuple[float, float, float, float] = (4.0, 4.0, 4.0, 4.0)
    drop_path_rate: float = 0.0
    ffn_dw_conv: bool = True
    rel_pos_bias: bool = True
    fuse_upsample: FuseUpsample = "nearest"
    fused_attention: bool = False

    def __post_init__(self) -> None:
        for name in ("widths", "num_heads", "window_size", "mlp_ratio"):
            value = getattr(self, name)
            if len(value) != 4:
                raise ValueError(f"HRFormerConfig.{name} needs 4 values (one per branch), got {value!r}")
        if len(self.stage_modules) != 3 or any(m < 1 for m in self.stage_modules):
            raise ValueError("HRFormerConfig.stage_modules needs 3 positive values (stages 2-4), "
                             f"got {self.stage_modules!r}")
        for b, (w, h) in enumerate(zip(self.widths, self.num_heads)):
            if h < 1 or w % h != 0:
                raise ValueError(f"HRFormerConfig: branch {b} width {w} is not divisible by num_heads {h}")
        if any(ws < 1 for ws in self.window_size):
            raise ValueError(f"HRFormerConfig.window_size must be positive, got {self.window_size!r}")
        if any(r <= 0 for r in self.mlp_ratio):
            raise ValueError(f"HRFormerConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if self.num_blocks < 1 or self.stage1_blocks < 1:
            raise ValueError("HRFormerConfig.num_blocks and stage1_blocks must be >= 1")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"HRFormerConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.fuse_upsample not in ("nearest", "bilinear"):
            raise ValueError("HRFormerConfig.fuse_upsample must be 'nearest' or 'bilinear', "
                             f"got {self.fuse_upsample!r}")

    @property
    def num_transformer_blocks(self) -> int:
        """Blocks per branch summed over the modules of stages 2-4 (the stochastic-depth schedule length)."""
        return self.num_blocks * sum(self.stage_modules)


# Paper Table 2 / official cls configs: channels, heads, modules in stages 2-4.
HRFORMER_T = HRFormerConfig(widths=(18, 36, 72, 144), num_heads=(1, 2, 4, 8), stage_modules=(1, 3, 2))
HRFORMER_S = HRFormerConfig(widths=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), stage_modules=(1, 4, 2))
HRFORMER_B = HRFormerConfig(widths=(78, 156, 312, 624), num_heads=(2, 4, 8, 16), stage_modules=(1, 4, 2))


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------
def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): zero whole samples with probability ``drop_prob``, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; identity in eval mode or when ``drop_prob == 0``. Any shape ``[N, ...]``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the ``((2w-1)^2, heads)`` bias table for every (query, key) token pair of a ``w x w`` window.

    Tokens are numbered row-major inside the window. Returns int64 ``[w*w, w*w]`` with
    ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` where ``(dy, dx)`` = query position - key position (Swin / T5 style).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # [2, w*w]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # [w*w, w*w, 2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class WindowMultiheadAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learnable relative position bias (paper Eq. 1-2).

    Separate q/k/v/out projections with bias (official ``MultiheadAttentionRPE`` names), scale ``head_dim ** -0.5``.
    Shapes: ``[B_w, w*w, C] -> [B_w, w*w, C]`` where ``B_w`` = batch x windows.

    Args:
        dim: channels C.
        num_heads: heads; must divide ``dim``.
        window_size: window side w (the bias table has ``(2w-1)^2`` rows).
        rel_pos_bias: add the bias to the logits (the table exists regardless, for checkpoint compatibility).
        attn_drop: dropout on the attention weights (training only).
        fused: use ``F.scaled_dot_product_attention``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, rel_pos_bias: bool = True,
                 attn_drop: float = 0.0, fused: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"WindowMultiheadAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.scale = self.head_dim ** -0.5
        self.use_rel_pos_bias = rel_pos_bias
        self.attn_drop = attn_drop
        self.fused = fused
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """The bias added to the logits, ``[heads, w*w, w*w]``."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, self.num_heads)
        return bias.permute(2, 0, 1)

    def qkv_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The q/k/v projections as one ``Linear(dim, 3 * dim)``: weight ``[3C, C]``, bias ``[3C]``, rows q, k, v.

        The q rows carry the softmax scale (``(x Wq^T + bq) * s = x (s Wq)^T + s bq``), so the logits need no extra
        pass over q. Built from the separate parameters on every call (cheap), so gradients reach them unchanged.
        """
        weight = torch.cat((self.q_proj.weight * self.scale, self.k_proj.weight, self.v_proj.weight))
        bias = torch.cat((self.q_proj.bias * self.scale, self.k_proj.bias, self.v_proj.bias))
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if n != self.window_size * self.window_size:
            raise ValueError(f"WindowMultiheadAttention expects {self.window_size ** 2} tokens per window, got {n}")
        # one GEMM for q, k, v (scale folded into q): [B, N, 3, h, d] -> 3 x [B, h, N, d]
        qkv = F.linear(x, *self.qkv_projection()).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias().unsqueeze(0) if self.use_rel_pos_bias else None
        p = self.attn_drop if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=1.0)
        else:
            attn = q @ k.transpose(-2, -1)  # [B, h, N, N], already scaled
            if bias is not None:
                attn = attn + bias
            attn = F.dropout(attn.softmax(dim=-1), p=p, training=self.training)
            out = attn @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"rel_pos_bias={self.use_rel_pos_bias}, fused={self.fused}")


class LocalWindowSelfAttention(nn.Module):
    """Local-window self-attention (LSA) over a feature map: pad to window multiples, partition, attend, merge, crop.

    Shapes: ``[N, H, W, C] -> [N, H, W, C]`` (channels last, as the block holds tokens). H and W need not be multiples
    of the window: the map is zero-padded centred (``pad // 2`` before, the rest after; official ``PadBlock``), the
    padded tokens take part in attention unmasked, and the output is cropped back to ``H x W``.
    The child ``attn`` holds all parameters (official key ``...attn.attn.*``).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, rel_pos_bias: bool = True,
                 attn_drop: float = 0.0, fused: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowMultiheadAttention(dim, num_heads, window_size, rel_pos_bias, attn_drop, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        ws = self.window_size
        pad_h = -h % ws
        pad_w = -w % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        hp, wp = h + pad_h, w + pad_w
        qh, qw = hp // ws, wp // ws
        # [N, qh, ws, qw, ws, C] -> [N*qh*qw, ws*ws, C]: windows in the batch, tokens row-major inside each window.
        windows = x.view(n, qh, ws, qw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n * qh * qw, ws * ws, c)
        out = self.attn(windows)
        out = out.view(n, qh, qw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
        if pad_h or pad_w:
            out = out[:, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w, :]
        return out


class ConvFFN(nn.Module):
    """Feed-forward network with a 3x3 depthwise conv between the point-wise layers (paper Sec. 3, "FFN-DW").

    ``fc1`` 1x1 C->hidden (bias) + BN + GELU, ``dw3x3`` 3x3 depthwise (bias) + BN + GELU, ``fc2`` 1x1 hidden->C (bias)
    + BN + GELU (official ``MlpDWBN``). With ``dw_conv=False`` the depthwise conv and its BN (``norm2``) are absent.
    Shapes: ``[N, C, H, W] -> [N, out_dim, H, W]``.
    """

    # conv -> BatchNorm pairs that hrnet_core.models.fold.fold_batchnorm folds at inference
    conv_bn_pairs = (("fc1", "norm1"), ("dw3x3", "norm2"), ("fc2", "norm3"))

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, dw_conv: bool = True,
                 drop: float = 0.0) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(hidden_dim, momentum=BN_MOMENTUM)
        self.act1 = nn.GELU()
        if dw_conv:
            self.dw3x3 = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
            self.norm2 = nn.BatchNorm2d(hidden_dim, momentum=BN_MOMENTUM)
            self.act2 = nn.GELU()
        else:
            self.dw3x3 = None
            self.norm2 = None
            self.act2 = None
        self.fc2 = nn.Conv2d(hidden_dim, out_dim, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(out_dim, momentum=BN_MOMENTUM)
        self.act3 = nn.GELU()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(pointwise_conv(self.fc1, x)))
        if self.dw3x3 is not None:
            x = self.act2(self.norm2(self.dw3x3(x)))
        x = self.drop(x)
        x = self.act3(self.norm3(pointwise_conv(self.fc2, x)))
        return self.drop(x)


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv (stride 1, no groups) as one GEMM over the tokens of a channels-last map.

    ``[N, C_in, H, W]`` (any memory format) -> ``[N, C_out, H, W]`` in channels-last memory format. Same math as
    ``conv(x)`` (the conv's own parameters, so state dicts and gradients are unchanged); on CPU a plain GEMM over
    ``N*H*W`` tokens avoids the im2col path that small-batch 1x1 convs take, and keeps the FFN in channels-last.
    """
    tokens = x.permute(0, 2, 3, 1)  # [N, H, W, C_in]; a free view when x is channels-last
    return F.linear(tokens, conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


class HRFormerBlock(nn.Module):
    """HRFormer block (paper Fig. 1): ``x + DropPath(LSA(LN(x)))`` then ``x + DropPath(FFN-DW(LN(x)))``, LN eps 1e-6.

    Shapes: ``[N, C, H, W] -> [N, C, H, W]``; any H, W (see :class:`LocalWindowSelfAttention` for padding).
    """

    expansion = 1

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, ffn_dw_conv: bool = True, rel_pos_bias: bool = True,
                 fused_attention: bool = False) -> None:
        super().__init__()
        self.attn = LocalWindowSelfAttention(dim, num_heads, window_size, rel_pos_bias, fused=fused_attention)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), dim, dw_conv=ffn_dw_conv)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Tokens [N, H, W, C] are the channels-last view of x: no copy when x is channels-last (every block after the
        # first of a branch), and the output is returned channels-last (no copy back to NCHW; values are the same).
        t = x.permute(0, 2, 3, 1)
        t = t + self.drop_path(self.attn(self.norm1(t)))
        ffn = self.mlp(self.norm2(t).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        t = t + self.drop_path(ffn)
        return t.permute(0, 3, 1, 2)


def _downsample_step(in_ch: int, out_ch: int, relu: bool) -> nn.Sequential:
    """3x3 depthwise s2 conv + BN + 1x1 conv + BN (+ ReLU): one x2 step of a fusion path (no conv bias)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, in_ch, kernel_size=3, stride=2, padding=1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch, momentum=BN_MOMENTUM),
        nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class HRFormerModule(nn.Module):
    """One HRFormer module: per-branch HRFormer blocks, then HRNet-style multi-resolution fusion.

    Input/output: list of ``[N, widths[b], H/2^b, W/2^b]`` (b = 0..num_branches-1); with ``multi_scale_output=False``
    only the fused highest-resolution map is returned (a list of one).

    Fusion into output i (official ``HighResolutionTransformerModule``): j == i identity; j > i 1x1 conv + BN then
    upsample x2^(j-i) (``fuse_upsample``) and, when the size still differs from branch i (input not divisible by 32),
    a bilinear resize to it (align_corners True after "nearest" as in the cls code, False after "bilinear" as in the
    pose code); j < i: (i-j) depthwise-separable stride-2 steps, ReLU after all but the last, only the last changes
    width. The sum goes through ReLU.
    """

    def __init__(self, widths: Sequence[int], num_heads: Sequence[int], window_size: Sequence[int],
                 mlp_ratio: Sequence[float], num_blocks: int, drop_paths: Sequence[float],
                 multi_scale_output: bool = True, ffn_dw_conv: bool = True, rel_pos_bias: bool = True,
                 fuse_upsample: FuseUpsample = "nearest", fused_attention: bool = False) -> None:
        super().__init__()
        if len(drop_paths) != num_blocks:
            raise ValueError(f"HRFormerModule: need {num_blocks} drop-path rates, got {len(drop_paths)}")
        self.num_branches = len(widths)
        self.widths = list(widths)
        self.multi_scale_output = multi_scale_output
        self.fuse_upsample = fuse_upsample
        self.branches = nn.ModuleList(
            nn.Sequential(*[
                HRFormerBlock(widths[b], num_heads[b], window_size[b], mlp_ratio[b], drop_paths[k],
                              ffn_dw_conv=ffn_dw_conv, rel_pos_bias=rel_pos_bias, fused_attention=fused_attention)
                for k in range(num_blocks)
            ])
            for b in range(self.num_branches)
        )
        self.fuse_layers = self._make_fuse_layers() if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=False)

    def _make_fuse_layers(self) -> nn.ModuleList:
        w = self.widths
        fuse_layers = nn.ModuleList()
        for i in range(self.num_branches if self.multi_scale_output else 1):
            row = nn.ModuleList()
            for j in range(self.num_branches):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(w[j], w[i], kernel_size=1, bias=False),
                                             nn.BatchNorm2d(w[i], momentum=BN_MOMENTUM)))
                elif j == i:
                    row.append(None)
                else:
                    steps = [_downsample_step(w[j], w[i] if k == i - j - 1 else w[j], relu=k < i - j - 1)
                             for k in range(i - j)]
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(row)
        return fuse_layers

    def _upsample(self, x: torch.Tensor, factor: int, size: torch.Size) -> torch.Tensor:
        if self.fuse_upsample == "nearest":
            x = F.interpolate(x, scale_factor=factor, mode="nearest")
            align = True
        else:
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
            align = False
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=align)
        return x

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != self.num_branches:
            raise ValueError(f"HRFormerModule expects {self.num_branches} inputs, got {len(xs)}")
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + self._upsample(row[j](xs[j]), 2 ** (j - i), xs[i].shape[-2:])
                else:
                    y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


class DepthwiseBottleneck(Bottleneck):
    """Bottleneck whose 3x3 conv is depthwise (official ``BottleneckDWP``; HRFormer classification head).

    Same names and shapes as :class:`~hrnet_core.models.blocks.Bottleneck` except ``conv2.weight``
    ``[planes, 1, 3, 3]``.
    Shapes: ``[N, in_ch, H, W] -> [N, 4 * planes, H/stride, W/stride]``.
    """

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 momentum: float = BN_MOMENTUM) -> None:
        super().__init__(in_ch, planes, stride, downsample, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)


# ----------------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------------
def init_hrformer_weights(module: nn.Module) -> None:
    """Initialise ``module`` and its children as the official classification code does.

    Conv: Kaiming-normal (fan_out, ReLU gain), zero bias; BatchNorm/LayerNorm: weight 1, bias 0; Linear:
    truncated normal std 0.02, zero bias; relative position bias tables: truncated normal std 0.02.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, WindowMultiheadAttention):
            nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))


def _make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """HRNet transition (FACTS.md section 0): keep/convert existing branches, add new ones from the last branch."""
    layers = nn.ModuleList()
    for i, out_ch in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn_relu(pre[i], out_ch, 1) if pre[i] != out_ch else None)
        else:
            steps = [_conv_bn_relu(pre[-1], out_ch if k == i - len(pre) else pre[-1], 2)
                     for k in range(i + 1 - len(pre))]
            layers.append(nn.Sequential(*steps))
    return layers


class HRFormerBackbone(nn.Module):
    """HRFormer backbone: stem (two 3x3 s2 conv-BN-ReLU), stage 1 (Bottlenecks), stages 2-4 of HRFormer modules.

    Input ``[N, 3, H, W]``; :meth:`forward_features` returns the four branch maps
    ``[N, widths[b], H/2^(b+2), W/2^(b+2)]``
    (only the 1/4 map when ``single_scale_output``). Parameter names follow the official HRFormer code (module doc).
    Weights are initialised by :func:`init_hrformer_weights`.

    Args:
        cfg: architecture.
        single_scale_output: build the last stage-4 module with fusion into the 1/4 branch only (official pose).
    """

    def __init__(self, cfg: HRFormerConfig, single_scale_output: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, 64, 64, cfg.stage1_blocks, momentum=BN_MOMENTUM)

        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.num_transformer_blocks, device="cpu").tolist()
        pre = [64 * Bottleneck.expansion]
        module_index = 0
        for s, num_modules in enumerate(cfg.stage_modules):
            nb = s + 2  # branches in stage s + 2
            widths = list(cfg.widths[:nb])
            setattr(self, f"transition{s + 1}", _make_transition(pre, widths))
            modules = []
            for m in range(num_modules):
                last = s == 2 and m == num_modules - 1
                rates = dpr[module_index * cfg.num_blocks:(module_index + 1) * cfg.num_blocks]
                modules.append(HRFormerModule(
                    widths, cfg.num_heads[:nb], cfg.window_size[:nb], cfg.mlp_ratio[:nb], cfg.num_blocks, rates,
                    multi_scale_output=not (last and single_scale_output), ffn_dw_conv=cfg.ffn_dw_conv,
                    rel_pos_bias=cfg.rel_pos_bias, fuse_upsample=cfg.fuse_upsample,
                    fused_attention=cfg.fused_attention))
                module_index += 1
            setattr(self, f"stage{s + 2}", nn.Sequential(*modules))
            pre = widths
        init_hrformer_weights(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-resolution features: list of ``[N, widths[b], H/2^(b+2), W/2^(b+2)]``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HRFormer expects input [N, 3, H, W], got {list(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in range(3):
            transition = getattr(self, f"transition{s + 1}")
            xs = [ys[i] if t is None and i < len(ys) else t(ys[min(i, len(ys) - 1)])
                  for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{s + 2}")(xs)
        return ys

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)

class HRFormerPose(HRFormerBackbone):
    """Top-down pose HRFormer: backbone + ``final_layer`` 1x1 conv (bias) on the 1/4 branch (paper Sec. 4.1).

    Input ``[N, 3, H, W]`` (e.g. 256x192) -> heatmaps ``[N, num_joints, H/4, W/4]`` (e.g. 64x48).
    """

    def __init__(self, cfg: HRFormerConfig, num_joints: int = 17) -> None:
        super().__init__(cfg, single_scale_output=True)
        if num_joints < 1:
            raise ValueError(f"HRFormerPose: num_joints must be >= 1, got {num_joints}")
        self.num_joints = num_joints
        self.final_layer = nn.Conv2d(cfg.widths[0], num_joints, kernel_size=1)
        # Heatmap head init of DHRN / mmpose: normal std 0.001, bias 0.
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.forward_features(x)[0])


class HRFormerClassifier(HRFormerBackbone):
    """ImageNet HRFormer (official ``cls/models/hrt.py``): backbone + HRNet-style classification head.

    Head: ``incre_modules.b`` one depthwise Bottleneck per branch to 128/256/512/1024 channels; ``downsamp_modules.b``
    3x3 depthwise s2 conv (bias) + BN + 1x1 conv (bias) + BN + ReLU, added into the next resolution; ``final_layer``
    1x1 conv (bias) -> 2048 + BN + ReLU; global average pool; ``classifier`` Linear(2048, num_classes).
    Input ``[N, 3, H, W]`` (224x224) -> logits ``[N, num_classes]``.
    """

    def __init__(self, cfg: HRFormerConfig, num_classes: int = 1000) -> None:
        super().__init__(cfg, single_scale_output=False)
        if num_classes < 1:
            raise ValueError(f"HRFormerClassifier: num_classes must be >= 1, got {num_classes}")
        exp = DepthwiseBottleneck.expansion
        self.incre_modules = nn.ModuleList(
            make_layer(DepthwiseBottleneck, w, CLS_HEAD_CHANNELS[b], 1, momentum=BN_MOMENTUM)
            for b, w in enumerate(cfg.widths)
        )
        downsamp = []
        for b in range(len(cfg.widths) - 1):
            in_ch, out_ch = CLS_HEAD_CHANNELS[b] * exp, CLS_HEAD_CHANNELS[b + 1] * exp
            downsamp.append(nn.Sequential(
                nn.Conv2d(in_ch, in_ch, kernel_size=3, stride=2, padding=1, groups=in_ch),
                nn.BatchNorm2d(in_ch, momentum=BN_MOMENTUM),
                nn.Conv2d(in_ch, out_ch, kernel_size=1),
                nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ))
        self.downsamp_modules = nn.ModuleList(downsamp)
        self.final_layer = nn.Sequential(
            nn.Conv2d(CLS_HEAD_CHANNELS[-1] * exp, CLS_FEATURE_DIM, kernel_size=1),
            nn.BatchNorm2d(CLS_FEATURE_DIM, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(CLS_FEATURE_DIM, num_classes)
        self.num_classes = num_classes
        for head in (self.incre_modules, self.downsamp_modules, self.final_layer, self.classifier):
            init_hrformer_weights(head)

    def forward_head(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``[N, num_classes]`` from the four branch maps."""
        y = self.incre_modules[0](ys[0])
        for b, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[b + 1](ys[b + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------------------------
_PER_BRANCH = ("num_heads", "window_size", "mlp_ratio")
_CONFIG_KEYS = tuple(f.name for f in fields(HRFormerConfig))
_POSE_HEAD_KEYS = ("num_joints",)
_CLS_HEAD_KEYS = ("num_classes",)


def _broadcast(name: str, value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * 4
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    raise ValueError(f"HRFormer override {name!r} must be a number or a sequence of 4, got {value!r}")


def _apply_overrides(base: HRFormerConfig, overrides: dict[str, Any], model_name: str,
                     head_keys: Sequence[str]) -> tuple[HRFormerConfig, dict[str, Any]]:
    """Split ``overrides`` into config fields and head arguments; unknown keys raise ``TypeError`` naming them."""
    unknown = sorted(set(overrides) - set(_CONFIG_KEYS) - set(head_keys))
    if unknown:
        raise TypeError(f"{model_name}: unknown override(s) {unknown}; "
                        f"valid: {sorted(_CONFIG_KEYS + tuple(head_keys))}")
    cfg_kw: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in head_keys:
            continue
        if key in _PER_BRANCH:
            value = _broadcast(key, value)
        elif key in ("widths", "stage_modules"):
            value = tuple(value)
        cfg_kw[key] = value
    head_kw = {k: overrides[k] for k in head_keys if k in overrides}
    return replace(base, **cfg_kw), head_kw


def _pose(base: HRFormerConfig, name: str, drop_path_rate: float, overrides: dict[str, Any]) -> HRFormerPose:
    pose_base = replace(base, rel_pos_bias=False, fuse_upsample="bilinear", drop_path_rate=drop_path_rate)
    cfg, head = _apply_overrides(pose_base, overrides, name, _POSE_HEAD_KEYS)
    return HRFormerPose(cfg, **head)


def _cls(base: HRFormerConfig, name: str, drop_path_rate: float, overrides: dict[str, Any]) -> HRFormerClassifier:
    cls_base = replace(base, rel_pos_bias=True, fuse_upsample="nearest", drop_path_rate=drop_path_rate)
    cfg, head = _apply_overrides(cls_base, overrides, name, _CLS_HEAD_KEYS)
    return HRFormerClassifier(cfg, **head)


def hrformer_t(**overrides: Any) -> HRFormerPose:
    """HRFormer-T top-down pose model (paper Table 3: 2.5M params, COCO val AP 70.9 at 256x192).

    Official pose settings: no relative position bias in the logits, bilinear fusion upsampling, drop path 0
    (FACTS.md lists rates for S/B only). Overrides: any :class:`HRFormerConfig` field and ``num_joints`` (17).
    Raises ``TypeError`` for unknown overrides, ``ValueError`` for invalid values.
    """
    return _pose(HRFORMER_T, "hrformer_t", 0.0, overrides)


def hrformer_s(**overrides: Any) -> HRFormerPose:
    """HRFormer-S top-down pose model (paper Table 3: 7.8M params, AP 74.0 at 256x192); drop path 0.1."""
    return _pose(HRFORMER_S, "hrformer_s", 0.1, overrides)


def hrformer_b(**overrides: Any) -> HRFormerPose:
    """HRFormer-B top-down pose model (paper Table 3: 43.2M params, AP 75.6 at 256x192); drop path 0.2."""
    return _pose(HRFORMER_B, "hrformer_b", 0.2, overrides)


def cls_hrformer_t(**overrides: Any) -> HRFormerClassifier:
    """HRFormer-T ImageNet classifier (official ``hrt_tiny``: 8.04M params, top-1 78.5); drop path 0.

    Official cls settings: relative position bias added, nearest fusion upsampling. Overrides: any
    :class:`HRFormerConfig` field and ``num_classes`` (1000).
    """
    return _cls(HRFORMER_T, "cls_hrformer_t", 0.0, overrides)


def cls_hrformer_s(**overrides: Any) -> HRFormerClassifier:
    """HRFormer-S ImageNet classifier (official ``hrt_small``: 13.5M params, top-1 81.2); drop path 0."""
    return _cls(HRFORMER_S, "cls_hrformer_s", 0.0, overrides)


def cls_hrformer_b(**overrides: Any) -> HRFormerClassifier:
    """HRFormer-B ImageNet classifier (official ``hrt_base``: 50.3M params, top-1 82.8); drop path 0.2."""
    return _cls(HRFORMER_B, "cls_hrformer_b", 0.2, overrides)


def override_keys(name: str) -> frozenset[str]:
    """Keyword overrides the builder ``HRFORMER_MODELS[name]`` accepts: every :class:`HRFormerConfig` field plus the
    head argument (``num_joints`` for the pose models, ``num_classes`` for the ``cls_*`` classifiers).

    Any other key makes the builder raise ``TypeError``; recipes check against this set before building.

    Raises:
        KeyError: ``name`` is not an HRFormer model (message lists the known names).
    """
    if name not in HRFORMER_MODELS:
        raise KeyError(f"unknown HRFormer model {name!r}; known: {', '.join(sorted(HRFORMER_MODELS))}")
    head = _CLS_HEAD_KEYS if HRFORMER_MODELS[name] in (cls_hrformer_t, cls_hrformer_s, cls_hrformer_b) \
        else _POSE_HEAD_KEYS
    return frozenset(_CONFIG_KEYS) | frozenset(head)


def inert_parameters(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters that never take part in its forward pass.

    These are the ``relative_position_bias_table`` of every :class:`WindowMultiheadAttention` built with
    ``rel_pos_bias=False``: the official HRFormer pose layout keeps the tables, so that checkpoints load and the
    parameter counts match the paper, but does not add them to the attention logits. Such parameters never receive
    a gradient. ``DistributedDataParallel`` then needs ``find_unused_parameters=True``; otherwise the second iteration
    fails with "Expected to have finished reduction in the prior iteration".

    Returns:
        Dotted parameter names as in ``model.named_parameters()``; ``[]`` for every HRNet model and for HRFormer
        classifiers.
    """
    return [f"{name}.relative_position_bias_table" if name else "relative_position_bias_table"
            for name, m in model.named_modules()
            if isinstance(m, WindowMultiheadAttention) and not m.use_rel_pos_bias]


HRFORMER_MODELS: dict[str, Callable[..., nn.Module]] = {
    "hrformer_t": hrformer_t,
    "hrformer_s": hrformer_s,
    "hrformer_b": hrformer_b,
    "cls_hrformer_t": cls_hrformer_t,
    "cls_hrformer_s": cls_hrformer_s,
    "cls_hrformer_b": cls_hrformer_b,
}
