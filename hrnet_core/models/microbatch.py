"""Inference in micro-batches: a network run on slices of its input batch, outputs concatenated (issue 16, goal 4).

On a CPU an HRNet forward is memory-bound enough that its time per image grows with the batch: for pose HRNet-W32 at
256x192, channels-last, BatchNorm folded, one thread (``benchmarks/bench_eval.py``, 2-core AMD EPYC, 2 MiB L2 per core)
4-8 crops take 85-91 ms per crop, 32 crops 97 ms and 64 crops (a flip-tested batch of 32) 102-103 ms: the feature maps
of a few crops stay in cache between layers. Slicing the batch does not change any image's result in eval mode (no
batch statistics), only float rounding of the kernels picked (~1e-6 relative). On a GPU the whole batch is one call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["CPU_MICRO_BATCH", "MicroBatched"]

CPU_MICRO_BATCH = 8  # images per forward on CPU (see the module doc for the measurement)


class MicroBatched(nn.Module):
    """Wraps ``net`` so that ``forward(x)`` runs ``net`` on ``x[i:i + size]`` slices and concatenates along dim 0.

    Args:
        net: eval-mode network ``[B, ...] -> Tensor`` or a list/tuple of tensors (each concatenated).
        size: images per call (>= 1).

    Raises:
        ValueError: ``size < 1``.
    """

    def __init__(self, net: nn.Module, size: int = CPU_MICRO_BATCH) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {size}")
        self.net, self.size = net, int(size)

    def forward(self, x: torch.Tensor) -> Any:
        if x.shape[0] <= self.size:
            return self.net(x)
        outs = [self.net(part) for part in torch.split(x, self.size)]
        if isinstance(outs[0], (list, tuple)):
            return type(outs[0])(torch.cat(level) for level in zip(*outs))
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return f"size={self.size}"
