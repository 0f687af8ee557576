"""Residual units shared by every HRNet-family network.

Parameter names (``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3``/``downsample.{0,1}``) follow the official
releases (DHRN, HH, SEG, FACE, CLS; FACTS.md section 0) so that official state dicts load strictly.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, momentum: float = 0.1) -> nn.Sequential:
    """``Sequential(conv (no bias), BatchNorm2d)``: keys ``0.weight`` and ``1.*`` as in the official downsample layers."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch, momentum=momentum),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with identity (or projected) shortcut; ``expansion = 1``.

    Shapes: ``[N, in_ch, H, W] -> [N, out_ch, H/stride, W/stride]``. He et al. 2016; HRNet pose paper Sec. 3.
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, downsample: nn.Module | None = None,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=momentum)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 conv-BN bottleneck; ``expansion = 4`` (output width ``4 * planes``).

    Shapes: ``[N, in_ch, H, W] -> [N, 4 * planes, H/stride, W/stride]``. He et al. 2016; HRNet stage 1 (FACTS.md section 0).
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(block: type[BasicBlock] | type[Bottleneck], in_ch: int, planes: int, num_blocks: int, stride: int = 1,
               momentum: float = 0.1) -> nn.Sequential:
    """Stack ``num_blocks`` residual units; the first gets a 1x1 conv-BN ``downsample`` when the shape changes.

    Output width is ``planes * block.expansion``.
    """
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = conv_bn(in_ch, out_ch, kernel_size=1, stride=stride, momentum=momentum)
    layers = [block(in_ch, planes, stride, downsample, momentum=momentum)]
    layers += [block(out_ch, planes, momentum=momentum) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)
