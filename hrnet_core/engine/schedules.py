"""Learning-rate schedules as the official training loops step them, and the step counts of an epoch.

Pure Python (no torch): :func:`lr_at` is a function of ``(recipe, epoch, step, total_steps)`` only, so a resumed
run gets every step's rate of an uninterrupted one. The rules and their official sources are pinned by
``tests/test_lr_schedule_official.py``; ``docs/fidelity/schedules.md`` lists them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from hrnet_core.recipes import Recipe

__all__ = ["lr_at", "batches_per_epoch", "steps_per_epoch"]


def _epoch_rate(recipe: "Recipe", epoch: int) -> float:
    """Per-epoch rule at 0-based ``epoch`` (+ ``schedule.epoch_offset``): ``multistep`` ``lr * gamma^(#milestones <=
    e)`` (torch ``MultiStepLR`` at ``last_epoch = e``; mmcv ``StepLrUpdaterHook``), ``cosine`` ``0.5 lr (1 + cos(pi e /
    epochs))``, else ``lr``."""
    t, s = recipe.train, recipe.train.schedule
    e = epoch + s.epoch_offset
    if s.name == "multistep":
        return t.optimizer.lr * s.gamma ** sum(1 for m in s.milestones if e >= m)
    if s.name == "cosine":
        return 0.5 * t.optimizer.lr * (1.0 + math.cos(math.pi * e / t.epochs))
    return t.optimizer.lr


def _step_rate(recipe: "Recipe", t: int, total_steps: int) -> float:
    """Per-step rule after ``t`` optimiser steps: ``poly`` (HRNet-Semantic-Segmentation ``adjust_learning_rate``:
    ``lr (1 - t / total) ** power``, 0 past the end; a warm-up multiplies it) or per-iteration ``cosine`` (timm
    ``CosineLRScheduler``: linear warm-up from ``warmup_ratio * lr`` for ``t < warmup_iters``, then ``min_lr + (lr -
    min_lr)(1 + cos(pi t / total)) / 2``, ``min_lr`` past the end)."""
    s, base = recipe.train.schedule, recipe.train.optimizer.lr
    if s.name == "poly":
        lr = base * max(0.0, 1.0 - min(t, total_steps) / total_steps) ** s.power
        if t < s.warmup_iters:  # no official poly recipe warms up; kept as a multiplier (mmcv style)
            lr *= s.warmup_ratio + (1.0 - s.warmup_ratio) * t / s.warmup_iters
        return lr
    if t < s.warmup_iters:
        return base * (s.warmup_ratio + (1.0 - s.warmup_ratio) * t / s.warmup_iters)
    if t >= total_steps:
        return s.min_lr
    return s.min_lr + 0.5 * (base - s.min_lr) * (1.0 + math.cos(math.pi * t / total_steps))


def lr_at(recipe: "Recipe", epoch: int, step: int, total_steps: int | None = None) -> float:
    """Learning rate of optimiser step ``step`` (global, 0-based, the number of steps already taken) in ``epoch``
    (0-based); ``total_steps``: optimiser steps of the whole run (per-step schedules only).

    Per-step schedules (``poly``; ``cosine`` with ``schedule.per_iteration``) evaluate their rule at ``t = max(step -
    1, 0)``: the official loops (HRNet-Semantic-Segmentation ``lib/core/function.py`` ``train``, HRFormer
    ``cls/main.py`` ``train_one_epoch``) set the rate after each step, so step ``k`` runs with the value computed
    after step ``k - 1`` and the first with the initial one. Per-epoch schedules follow :func:`_epoch_rate`, times the
    mmcv linear warm-up ``warmup_ratio + (1 - warmup_ratio) step / warmup_iters`` while ``step < warmup_iters``
    (``LrUpdaterHook.before_train_iter``). A pure function of its arguments, so a resumed run gets every step's rate
    of an uninterrupted one. See ``hrnet_core.recipes.config.ScheduleConfig``.

    Raises:
        ValueError: a per-step schedule without ``total_steps``.
    """
    s = recipe.train.schedule
    if s.name == "poly" or (s.name == "cosine" and s.per_iteration):
        if not total_steps:
            raise ValueError(f"the per-step {s.name} schedule needs total_steps")
        return _step_rate(recipe, max(int(step) - 1, 0), int(total_steps))
    lr = _epoch_rate(recipe, epoch)
    if s.warmup_iters > 0 and step < s.warmup_iters:
        lr *= s.warmup_ratio + (1.0 - s.warmup_ratio) * step / s.warmup_iters
    return lr


def batches_per_epoch(num_samples: int, world_size: int, batch_size: int) -> int:
    """Full batches of one rank in one epoch: its ``num_samples // world_size`` samples
    (:func:`~hrnet_core.data.seeding.epoch_shard`), the partial last batch dropped (``drop_last``)."""
    return (int(num_samples) // max(1, int(world_size))) // int(batch_size)


def steps_per_epoch(num_samples: int, world_size: int, batch_size: int, accumulation: int) -> int:
    """Optimiser steps of one epoch: each rank's :func:`batches_per_epoch`, grouped by ``accumulation`` (an
    incomplete last group still steps)."""
    return math.ceil(batches_per_epoch(num_samples, world_size, batch_size) / max(1, int(accumulation)))
