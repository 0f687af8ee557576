"""Joints MSE loss with target weights (+ optional online hard keypoint mining) for heatmap regression.

HRNet pose paper (Sun et al., CVPR 2019), Sec. 3 "Loss function": mean squared error between predicted and
ground-truth heatmaps; official form (leoxiaobin/deep-high-resolution-net.pytorch, ``FACTS.md`` section 1): the mean
over joints of ``0.5 * MSE(pred * w, gt * w)``. OHKM (Chen et al., CPN, CVPR 2018) keeps, per sample, the ``topk``
joints with the largest loss (official ``JointsOHKMMSELoss``, k = 8). :class:`JointsLoss` puts it in the
loss-dict contract of the ``pose_topdown`` task (moved from ``hrnet_core/tasks/pose_topdown.py``, issue 25).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["JointsLoss", "JointsMSELoss"]


class JointsMSELoss(nn.Module):
    """``0.5 * mean((pred - gt)^2 * w^2)`` over batch, joints and heatmap cells.

    Args:
        use_target_weight: multiply predictions and targets by the per-joint weight (0 for unlabelled joints).
        topk: ``None`` for the plain loss; an int enables OHKM: per sample, the mean of the ``topk`` largest
            per-joint losses, then the batch mean.

    Shapes:
        ``output``, ``target``: ``[N, K, h, w]``; ``target_weight``: ``[N, K, 1]`` (or ``[N, K]``). Returns a scalar.

    Raises:
        ValueError: shapes disagree, or ``topk`` exceeds the number of joints.
    """

    def __init__(self, use_target_weight: bool = True, topk: int | None = None) -> None:
        super().__init__()
        if topk is not None and topk < 1:
            raise ValueError(f"topk must be >= 1 or None, got {topk}")
        self.use_target_weight = bool(use_target_weight)
        self.topk = topk

    def per_joint(self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> torch.Tensor:
        """Per-sample, per-joint loss ``[N, K]`` = ``0.5 * mean_cells(((pred - gt) * w)^2)``."""
        if output.shape != target.shape or output.dim() != 4:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} must both be [N, K, h, w]")
        diff = (output - target).flatten(2)
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("use_target_weight=True needs target_weight [N, K, 1]")
            w = target_weight.reshape(output.shape[0], output.shape[1], 1).to(diff.dtype)
            diff = diff * w
        return 0.5 * diff.pow(2).mean(dim=2)

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = self.per_joint(output, target, target_weight)
        if self.topk is None:
            return loss.mean()
        if self.topk > loss.shape[1]:
            raise ValueError(f"topk={self.topk} exceeds the number of joints {loss.shape[1]}")
        return loss.topk(self.topk, dim=1).values.mean(dim=1).mean()


class JointsLoss:
    """Joints MSE of :class:`JointsMSELoss` in the loss-dict contract: ``(heatmaps, batch) -> {"loss": total}`` with
    heatmaps float ``[B, K, h, w]`` (the batch's ``target``, ``target_weight``).

    Args:
        use_target_weight, ohkm_topk: the recipe's ``train.loss`` keys (:class:`JointsMSELoss`'s ``use_target_weight``
            and ``topk``).
    """

    def __init__(self, use_target_weight: bool = True, ohkm_topk: int | None = None) -> None:
        self.mse = JointsMSELoss(use_target_weight, ohkm_topk)

    def __call__(self, outputs, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"loss": self.mse(outputs.float(), batch["target"], batch["target_weight"])}
