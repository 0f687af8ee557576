"""Inference-time folding of BatchNorm into the preceding convolution (HRNet-family networks).

An eval-mode ``BatchNorm2d`` after a ``Conv2d`` is an affine map per output channel, so
``bn(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(var + eps)`` and ``b' = (b - mean) * g / sqrt(var + eps) + beta``
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). Folding removes one full pass over every feature map at inference;
outputs agree with the unfolded network to float rounding (~1e-6 relative).

Which pairs are folded (the HRNet-family conventions; the networks' forward code is untouched):

- consecutive ``Conv2d`` -> ``BatchNorm2d`` children of an ``nn.Sequential`` (transitions, fusion paths, downsample
  shortcuts, heads);
- sibling attributes ``conv<i>`` / ``bn<i>`` (HRNet stems, BasicBlock, Bottleneck);
- the pairs a module class lists in ``conv_bn_pairs`` (e.g. the HRFormer FFN: ``fc1``/``norm1``, ``dw3x3``/``norm2``,
  ``fc2``/``norm3``).

In each pair the BatchNorm becomes ``nn.Identity`` and the conv is replaced by the folded conv (with bias).
``torch.fx`` tracing is not used because the HRNet fusion code branches on feature-map sizes.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["conv_bn_pairs", "fold_batchnorm"]

_CONV_NAME = re.compile(r"^conv(\d+)$")


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of the direct children of ``module`` that form a foldable Conv2d -> BatchNorm2d pair."""
    children = dict(module.named_children())
    pairs: list[tuple[str, str]] = []
    if isinstance(module, nn.Sequential):
        names = list(children)
        pairs += [(a, b) for a, b in zip(names, names[1:])
                  if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)]
    else:
        for name in children:
            m = _CONV_NAME.match(name)
            if m and f"bn{m.group(1)}" in children:
                pairs.append((name, f"bn{m.group(1)}"))
        pairs += list(getattr(module, "conv_bn_pairs", ()))
    return [(c, b) for c, b in pairs
            if isinstance(children.get(c), nn.Conv2d) and isinstance(children.get(b), nn.BatchNorm2d)
            and children[c].out_channels == children[b].num_features and not children[c].transposed]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every Conv2d -> BatchNorm2d pair (see the module doc) folded.

    The input model is not modified. The copy is meant for inference only (its BatchNorms are gone).

    Returns:
        The folded copy (same class, same forward; ``nn.Identity`` in place of the folded BatchNorms).
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for conv_name, bn_name in conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            fused = fuse_conv_bn_eval(conv, bn)
            fused.weight.requires_grad_(False)
            fused.bias.requires_grad_(False)
            module._modules[conv_name] = fused
            module._modules[bn_name] = nn.Identity()
    return folded
