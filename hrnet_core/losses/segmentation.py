"""Segmentation losses of the HRNetV2 / HRNet-OCR recipes (FACTS.md section 3; official SEG ``core/criterion.py``).

* :func:`cross_entropy`: pixel-wise cross-entropy with an ignore index and optional class weights (the weighted mean
  of ``torch.nn.functional.cross_entropy``).
* :func:`ohem_cross_entropy`: online hard example mining. With ``p`` the softmax probability of the true class at
  every non-ignored pixel of the batch and ``p_(k)`` the k-th smallest (0-based), the threshold is
  ``max(p_(min(min_kept, n - 1)), thresh)`` and the pixels with ``p < threshold`` are kept; the loss is the plain
  mean of their (class-weighted) per-pixel cross-entropies. So every pixel the network is less than ``thresh`` sure
  about counts, and when fewer than ``min_kept`` are that unsure, the ``min_kept`` least sure pixels count (exactly
  ``min_kept`` when the probabilities are distinct; ties at ``p_(min_kept)`` are left out by the strict ``<``).
* :func:`pixel_mean_cross_entropy`: the class-weighted per-pixel cross-entropy averaged over ALL ``N*H*W`` pixels
  (ignored pixels count as 0, no division by the weights).
* :class:`SegmentationLoss`: logits at 1/4 are upsampled bilinearly to the label size first; a network with several
  outputs (OCR: ``[aux, main]``) gets ``sum(w_i * loss_i)`` with ``balance_weights`` (official 0.4, 1.0). Without
  OHEM every output gets :func:`cross_entropy` (official ``CrossEntropy``). With OHEM the last (main) output gets
  :func:`ohem_cross_entropy` and the others, by default (``aux_reduction: official``), :func:`pixel_mean_cross_entropy`:
  the official ``OhemCrossEntropy`` gives them the ``reduction='none'`` loss map, which ``FullModel`` /
  ``function.train`` (``losses.mean()``) average over every pixel of the batch (official ``lib/core/criterion.py``,
  ``lib/utils/utils.py``, ``lib/core/function.py``). ``aux_reduction: valid_mean`` keeps the weighted mean over the
  labelled pixels for them (a variant: independent of the share of ignored pixels in the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy", "pixel_mean_cross_entropy", "ohem_cross_entropy", "ohem_keep_mask", "SegLossConfig",
           "SegmentationLoss", "AUX_REDUCTIONS"]

AUX_REDUCTIONS = ("official", "valid_mean")


def cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``[N, C, H, W]`` against ``label`` int64 ``[N, H, W]`` over non-ignored
    pixels (weighted mean when ``weight`` ``[C]`` is given). Zero (with a gradient path) when every pixel is
    ignored."""
    if not bool((label != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), label, weight=weight, ignore_index=ignore_index)


def pixel_mean_cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255,
                             weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum(w[y] * CE) / (N * H * W)``: the class-weighted per-pixel cross-entropy of ``logits`` ``[N, C, H, W]``
    against ``label`` int64 ``[N, H, W]`` averaged over every pixel, ignored pixels counting 0 (official
    ``OhemCrossEntropy._ce_forward`` with ``reduction='none'``, averaged by ``losses.mean()`` in
    ``lib/core/function.py`` ``train``)."""
    per_pixel = F.cross_entropy(logits.float(), label, weight=weight, ignore_index=ignore_index, reduction="none")
    return per_pixel.mean()


def ohem_keep_mask(logits: torch.Tensor, label: torch.Tensor, thresh: float, min_kept: int,
                   ignore_index: int = 255) -> torch.Tensor:
    """Boolean ``[N, H, W]``: the pixels OHEM keeps (module docstring); ignored pixels are never kept.

    Args:
        logits: ``[N, C, H, W]`` at the label's resolution.
        label: int64 ``[N, H, W]``.
        thresh: probability threshold (official Cityscapes recipe 0.9; code default 0.7).
        min_kept: pixels kept at least (official recipe 131072; code default 100000); values < 1 count as 1.
    """
    valid = label != ignore_index
    n = int(valid.sum())
    if n == 0:
        return valid
    with torch.no_grad():
        prob = F.softmax(logits.detach().float(), dim=1)
        safe = torch.where(valid, label, torch.zeros_like(label))
        p_true = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        sorted_p = torch.sort(p_true[valid]).values
        kth = sorted_p[min(max(int(min_kept), 1), n - 1)]
        threshold = torch.clamp(kth, min=float(thresh))
        return valid & (p_true < threshold)


def ohem_cross_entropy(logits: torch.Tensor, label: torch.Tensor, thresh: float = 0.7, min_kept: int = 100000,
                       ignore_index: int = 255, weight: torch.Tensor | None = None) -> torch.Tensor:
    """OHEM cross-entropy (module docstring): plain mean of the kept pixels' per-pixel (class-weighted) losses."""
    keep = ohem_keep_mask(logits, label, thresh, min_kept, ignore_index)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    per_pixel = F.cross_entropy(logits.float(), label, weight=weight, ignore_index=ignore_index, reduction="none")
    return per_pixel[keep].mean()


@dataclass
class SegLossConfig:
    """``train.loss:`` of a segmentation recipe.

    ``ignore_index`` 255; ``class_weights``: ``[C]`` per-class weights, ``"dataset"`` for the dataset's official
    weights (Cityscapes), or null; ``ohem`` with ``ohem_thresh`` / ``ohem_min_kept`` (official Cityscapes recipe:
    0.9 / 131072); ``balance_weights``: one weight per network output (OCR ``[0.4, 1.0]`` = aux, main; plain
    HRNetV2 ``[1.0]``); ``align_corners`` of the logits upsampling (null = the network's own setting);
    ``aux_reduction`` of the outputs before the last when OHEM is on: ``official`` (mean over all pixels, see the
    module docstring) or ``valid_mean`` (weighted mean over the labelled pixels, as without OHEM).
    """

    ignore_index: int = 255
    class_weights: Any = None
    ohem: bool = False
    ohem_thresh: float = 0.9
    ohem_min_kept: int = 131072
    balance_weights: list[float] = field(default_factory=lambda: [1.0])
    align_corners: bool | None = None
    aux_reduction: str = "official"


class SegmentationLoss:
    """``(outputs, batch) -> {"loss": total, "ce" or "ohem": main part, "aux": aux part (OCR)}``.

    ``outputs``: logits ``[N, C, h, w]`` or a list of them (``[aux, main]``); ``batch["label"]`` int64 ``[N, H, W]``.
    Logits are upsampled bilinearly to ``H, W`` (``align_corners`` as given) before the loss.

    Raises:
        ValueError: ``cfg.aux_reduction`` is not one of :data:`AUX_REDUCTIONS`; on call: the number of outputs
            differs from the number of ``balance_weights``.
    """

    def __init__(self, cfg: SegLossConfig, class_weights: Sequence[float] | None, align_corners: bool) -> None:
        if cfg.aux_reduction not in AUX_REDUCTIONS:
            raise ValueError(f"train.loss.aux_reduction: one of {', '.join(AUX_REDUCTIONS)}, got {cfg.aux_reduction!r}")
        self.cfg = cfg
        self.align_corners = bool(align_corners)
        self._weights = None if not class_weights else torch.tensor(list(class_weights), dtype=torch.float32)

    def _upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=self.align_corners)

    def __call__(self, outputs: Any, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        label = batch["label"]
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        bw = list(self.cfg.balance_weights)
        if len(bw) != len(outs):
            raise ValueError(f"train.loss.balance_weights has {len(bw)} weights but the network returns "
                             f"{len(outs)} outputs")
        weight = None if self._weights is None else self._weights.to(label.device)
        parts: dict[str, torch.Tensor] = {}
        total = None
        for k, (w, logits) in enumerate(zip(bw, outs)):
            logits = self._upsample(logits, tuple(label.shape[-2:]))
            main = k == len(outs) - 1
            if main and self.cfg.ohem:
                value = ohem_cross_entropy(logits, label, self.cfg.ohem_thresh, self.cfg.ohem_min_kept,
                                           self.cfg.ignore_index, weight)
            elif self.cfg.ohem and self.cfg.aux_reduction == "official":
                value = pixel_mean_cross_entropy(logits, label, self.cfg.ignore_index, weight)
            else:
                value = cross_entropy(logits, label, self.cfg.ignore_index, weight)
            name = ("ohem" if self.cfg.ohem else "ce") if main else ("aux" if len(outs) == 2 else f"aux{k}")
            parts[name] = value.detach()
            total = w * value if total is None else total + w * value
        return {"loss": total, **parts}
