"""The face alignment training loss in the loss-dict contract: heatmap MSE, the mean over every heatmap cell (the
official face loss ``nn.MSELoss``; HRNet-Facial-Landmark-Detection ``lib/core/function.py`` ``train``:
``criterion(model(inp), target)``).

Moved from ``hrnet_core/tasks/face_alignment.py`` unchanged (issue 25).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from hrnet_core.tasks.face_alignment import FaceLossConfig

__all__ = ["HeatmapMSE"]


class HeatmapMSE:
    """``(heatmaps [B, K, h, w], batch) -> {"loss": mean((pred - target)^2 [* w])}``: the official face loss
    (``nn.MSELoss``, mean over every cell); with ``use_target_weight`` maps are multiplied by ``target_weight``."""

    def __init__(self, cfg: FaceLossConfig) -> None:
        self.use_target_weight = bool(cfg.use_target_weight)

    def __call__(self, outputs, batch: Mapping[str, Any]) -> dict[str, Any]:
        diff = outputs.float() - batch["target"]
        if self.use_target_weight:
            diff = diff * batch["target_weight"][..., None]
        return {"loss": (diff * diff).mean()}
