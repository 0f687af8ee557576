"""One training epoch (pure PyTorch): the optimiser stepping, gradient accumulation, autocast and the
non-finite-loss guard of the Ray Train worker, testable on CPU without Ray.

The loop follows torchvision's ``references/detection/engine.py`` ``train_one_epoch`` (a loss dict per batch; stop
at the first non-finite loss, printing the terms) with the official HRNet loops' per-step rate
(:func:`hrnet_core.engine.schedules.lr_at`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from hrnet_core.errors import FinalError

from .optim import optimizer_step, sync_leftover_grads
from .schedules import lr_at

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hrnet_core.recipes import Recipe

__all__ = ["NonFiniteLossError", "check_finite_loss", "EpochResult", "train_one_epoch", "move_to"]


class NonFiniteLossError(FinalError, ArithmeticError):
    """A loss term of a training batch is ``nan`` or ``inf`` (:func:`check_finite_loss`); the message is one line.
    A :class:`~hrnet_core.errors.FinalError`: a deterministic rerun reproduces it, so it is never retried."""


def check_finite_loss(values: dict[str, float], *, epoch: int, epochs: int, step: int, batch: int,
                      batches: int) -> None:
    """Stop at the first non-finite loss, as torchvision's ``references/detection/engine.py`` ``train_one_epoch``
    does (it prints the loss terms and exits), before the batch's backward pass.

    Args:
        values: the batch's loss terms (``loss`` = the total, then the task's parts), Python floats.
        epoch: 0-based epoch; epochs: ``train.epochs``. step: optimiser steps taken before this batch (global).
        batch: 0-based batch of the epoch (this rank's); batches: batches per epoch.

    Raises:
        NonFiniteLossError: ``non-finite loss at epoch E/N, step S (batch B/M): loss nan, <part> <value>, ...``
        (1-based epoch and batch; ``loss`` first, then the parts in name order).
    """
    if all(math.isfinite(v) for v in values.values()):
        return
    names = (["loss"] if "loss" in values else []) + sorted(k for k in values if k != "loss")
    terms = ", ".join(f"{k} {values[k]:.6g}" for k in names)
    raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}/{epochs}, step {step} (batch {batch + 1}/"
                             f"{batches}): {terms}; lower train.optimizer.lr or check the data")


def move_to(batch: Any, device: Any) -> Any:
    """Tensors of a (nested dict / list / tuple) batch moved to ``device`` (``non_blocking``); other values
    unchanged."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


@dataclass
class EpochResult:
    """What :func:`train_one_epoch` returns (this rank's figures).

    Attributes:
        sums: per loss term (``loss`` and the task's parts), the sum of its batch values (Python floats).
        batches: batches trained. seen: samples trained (``batch_size`` of each batch).
        step: global optimiser steps taken after the epoch. waited: seconds spent waiting for batches.
    """

    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    seen: int = 0
    step: int = 0
    waited: float = 0.0


def train_one_epoch(model: "torch.nn.Module", batches: Iterator[Any], *, step_fn: Callable[[Any, Any], dict],
                    optimizer: "torch.optim.Optimizer", scaler: "torch.amp.GradScaler", recipe: "Recipe",
                    epoch: int, step: int, total_steps: int, accumulation: int, num_batches: int,
                    device: "torch.device", batch_size: Callable[[Any], int],
                    dtype: "torch.dtype | None" = None) -> EpochResult:
    """Train ``num_batches`` batches of ``batches`` (model in train mode), stepping every ``accumulation`` batches.

    Per batch: the batch to ``device`` (:func:`move_to`), every parameter group's rate set to
    ``lr_at(recipe, epoch, step, total_steps)``, ``step_fn(model, batch) -> {"loss": total, ...parts}`` (scalar
    tensors) under autocast ``dtype``, :func:`check_finite_loss`, the backward of ``loss / accumulation`` through
    ``scaler``; an optimiser step (:func:`~hrnet_core.engine.optim.optimizer_step`) ends each group of
    ``accumulation`` batches, and an incomplete last group steps on what it has
    (:func:`~hrnet_core.engine.optim.sync_leftover_grads`).

    Args:
        batches: an iterator yielding at least ``num_batches`` batches (``{name: Tensor | list}``).
        epoch: 0-based epoch; step: global optimiser steps before the epoch; total_steps: of the whole run.
        batch_size: samples in a batch (``Task.batch_size``).

    Returns:
        :class:`EpochResult`.

    Raises:
        NonFiniteLossError: a non-finite loss term (before its backward; names epoch, step and terms).
        StopIteration: ``batches`` ran out before ``num_batches``.
    """
    model.train()
    out = EpochResult(step=int(step))
    micro = 0
    optimizer.zero_grad(set_to_none=True)
    for _ in range(num_batches):
        t_wait = time.perf_counter()
        batch = next(batches)
        out.waited += time.perf_counter() - t_wait
        batch = move_to(batch, device)
        lr = lr_at(recipe, epoch, out.step, total_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro += 1
        sync = micro % accumulation == 0
        values = _micro_step(model, batch, step_fn, scaler, accumulation, sync, dtype, device,
                             dict(epoch=epoch, epochs=recipe.train.epochs, step=out.step, batch=out.batches,
                                  batches=num_batches))
        if sync:
            optimizer_step(optimizer, scaler)
            out.step += 1
        for name, value in values.items():
            out.sums[name] = out.sums.get(name, 0.0) + value
        out.batches += 1
        out.seen += batch_size(batch)
    if micro % accumulation:  # an incomplete accumulation group ends the epoch: step on what it has
        sync_leftover_grads(model, micro % accumulation, accumulation)
        optimizer_step(optimizer, scaler)
        out.step += 1
    return out


def _micro_step(model, batch, step_fn, scaler, accum: int, sync: bool, dtype, device,
                where: dict[str, int]) -> dict[str, float]:
    """One micro-batch: forward (``step_fn`` under autocast when ``dtype``), :func:`check_finite_loss` with
    ``where`` (epoch, epochs, step, batch, batches), the scaled backward of ``loss / accum``; DDP's gradient
    all-reduce only on the group's last micro-batch (``sync``). Returns the loss terms as floats."""
    import torch

    ctx_sync = nullcontext() if sync or not hasattr(model, "no_sync") else model.no_sync()
    with ctx_sync:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            losses = step_fn(model, batch)
        values = {name: float(value.detach().item()) for name, value in losses.items()}
        check_finite_loss(values, **where)
        scaler.scale(losses["loss"] / accum).backward()
    return values
