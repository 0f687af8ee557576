"""Classification loss in the loss-dict contract: cross entropy with label smoothing, or timm's soft-target
cross entropy after Mixup / CutMix (DeiT / HRFormer recipes).

Moved from ``hrnet_core/tasks/classification.py`` unchanged (issue 25); the task module still exports the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from hrnet_core.data.cls_transforms import seeded_global_rngs

if TYPE_CHECKING:
    from hrnet_core.tasks.classification import ClsLoss

#: classes of the zoo's classification heads unless ``model.num_classes`` says otherwise
DEFAULT_NUM_CLASSES = 1000


class CrossEntropy:
    """Cross entropy in the loss-dict contract: ``(logits float [B, C], batch with label int64 [B]) ->
    {"loss": mean CE}`` (``label_smoothing`` as torch's ``cross_entropy``).

    With ``mixup`` (a :class:`timm.data.Mixup`; DeiT-style recipes), :meth:`mix` mixes a training batch's images and
    adds ``soft_target`` float ``[B, C]`` (the mixed, label-smoothed one-hot targets), and the loss of such a batch
    is timm's ``SoftTargetCrossEntropy`` ``mean(sum(-soft_target * log_softmax(logits)))``. The mixing draws are
    seeded by ``seed`` and the batch's sample indices (:func:`seeded_global_rngs`).
    """

    def __init__(self, cfg: ClsLoss, mixup=None, num_classes: int = DEFAULT_NUM_CLASSES, seed: int = 0) -> None:
        self.label_smoothing = float(cfg.label_smoothing)
        self.mixup, self.num_classes, self.seed = mixup, int(num_classes), int(seed)

    def mix(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """``batch`` with Mixup / CutMix applied to ``image`` and ``soft_target`` added (unchanged without mixup).
        An odd last sample is left unmixed with its smoothed one-hot target (timm mixes pairs)."""
        if self.mixup is None:
            return batch
        import torch
        from timm.data.mixup import mixup_target

        x, y = batch["image"].clone(), batch["label"]
        idx = [int(v) for v in np.asarray(batch["index"].cpu() if hasattr(batch["index"], "cpu") else batch["index"])]
        even = len(x) - len(x) % 2
        seed = int(np.random.SeedSequence([self.seed, *idx]).generate_state(1)[0])
        target = mixup_target(y, self.num_classes, 1.0, self.label_smoothing)
        if even:
            with seeded_global_rngs(seed):
                mixed, soft = self.mixup(x[:even], y[:even])
            x = torch.cat([mixed, x[even:]])
            target = torch.cat([soft, target[even:]])
        return {**batch, "image": x, "soft_target": target}

    def __call__(self, logits, batch: Mapping[str, Any]) -> dict[str, Any]:
        import torch.nn.functional as F

        if "soft_target" in batch:
            from timm.loss import SoftTargetCrossEntropy

            return {"loss": SoftTargetCrossEntropy()(logits.float(), batch["soft_target"].float())}
        return {"loss": F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)}
