"""The bottom-up (HigherHRNet) training loss in the loss-dict contract: masked heatmap MSE plus associative-embedding
push / pull per output resolution (HigherHRNet-Human-Pose-Estimation ``lib/core/loss.py`` ``MultiLossFactory``).

Moved from ``hrnet_core/tasks/pose_bottomup.py`` unchanged (issue 25); the task module still exports the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from hrnet_core.tasks.pose_bottomup import BottomUpLossConfig


class BottomUpLoss:
    """``(outputs [list of [B, C_i, r_i, r_i]], batch) -> {"loss", "heatmap_i", "push_i", "pull_i"}`` (official
    ``MultiLossFactory`` + the training loop's sum): per output ``i``, ``heatmaps_loss_factor[i] *`` masked MSE of
    the first K channels, and with ``with_ae_loss[i]`` the AE push / pull of the next K channels times their factors;
    every term is averaged over the batch and summed into ``loss``."""

    def __init__(self, cfg: BottomUpLossConfig, num_joints: int) -> None:
        self.cfg = cfg
        self.num_joints = num_joints

    def __call__(self, outputs, batch: Mapping[str, Any]) -> dict[str, Any]:
        from hrnet_core.losses.associative_embedding import ae_loss, masked_heatmap_loss

        c, k = self.cfg, self.num_joints
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        parts: dict[str, Any] = {}
        total = 0.0
        for i, out in enumerate(outputs):
            out = out.float()
            offset = 0
            if c.with_heatmaps_loss[i]:
                hm = masked_heatmap_loss(out[:, :k], batch[f"heatmap_{i}"], batch[f"mask_{i}"]).mean()
                parts[f"heatmap_{i}"] = hm * c.heatmaps_loss_factor[i]
                total = total + parts[f"heatmap_{i}"]
                offset = k
            if c.with_ae_loss[i]:
                push, pull = ae_loss(out[:, offset:offset + k], batch[f"joints_{i}"], c.ae_loss_type)
                parts[f"push_{i}"] = push.mean() * c.push_loss_factor[i]
                parts[f"pull_{i}"] = pull.mean() * c.pull_loss_factor[i]
                total = total + parts[f"push_{i}"] + parts[f"pull_{i}"]
        return {"loss": total, **parts}
