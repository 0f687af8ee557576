"""The one evaluation loop of the spine: used by training-time validation (sharded over the Ray Train ranks) and by
``hrnet evaluate`` / ``hrnet predict`` (one process).

A task gives its test procedure cut into batches (:attr:`hrnet_core.tasks.Task.predictor` ->
:class:`hrnet_core.tasks.base.BatchPredictor`); this module owns what every task repeated: eval mode (restored
afterwards), no gradients, the CPU thread setting, the progress bar, the batch loop with its inputs decoded one batch
ahead in a background thread, the rank's share of the items, the gather on rank 0, the score and the files.

Pure PyTorch (``torch.distributed`` only when a process group is initialised); imports nothing of the project at
module level, so every layer can reach it without an import circle.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hrnet_core.data.prepared import PreparedSplit
    from hrnet_core.recipes import Recipe
    from hrnet_core.tasks.base import BatchPredictor, Predictions, Task

__all__ = ["evaluate_split", "predict_items", "run_batches", "shard_bounds"]


def shard_bounds(num_items: int, world: int) -> np.ndarray:
    """Item bounds of ``world`` contiguous shares: rank ``r`` predicts ``items[b[r]:b[r + 1]]`` (int ``[world + 1]``,
    ``linspace`` rounded, so shares differ by one item at most)."""
    return np.linspace(0, num_items, world + 1).round().astype(int)


def run_batches(predictor: "BatchPredictor", items: Sequence[Any], progress: bool = False,
                desc: str = "evaluate") -> list["Predictions"]:
    """``predictor.run`` on consecutive batches of ``predictor.batch_size`` items, in item order; ``predictor.load``
    (when set) decodes the next ``predictor.prefetch`` batches in background threads meanwhile. Returns one
    :class:`~hrnet_core.tasks.base.Predictions` per batch (``[]`` for no items). No mode or gradient handling: see
    :func:`predict_items`."""
    from tqdm import tqdm

    size = max(1, int(predictor.batch_size))
    chunks = [items[s:s + size] for s in range(0, len(items), size)]
    out = []
    bar = tqdm(total=len(items), desc=desc, unit=predictor.unit, disable=not progress)
    for chunk, inputs in zip(chunks, _loaded(predictor, chunks)):
        out.append(predictor.run(inputs))
        bar.update(len(chunk))
    bar.close()
    return out


def _loaded(predictor: "BatchPredictor", chunks: list[Sequence[Any]]) -> Iterator[Any]:
    """``predictor.load(chunk)`` of every chunk in order, ``prefetch`` chunks ahead in threads (the chunks
    themselves without ``load``)."""
    if predictor.load is None:
        yield from chunks
        return
    ahead = max(1, int(predictor.prefetch))
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = [pool.submit(predictor.load, c) for c in chunks[:ahead]]
        for i in range(len(chunks)):
            inputs = pending.pop(0).result()
            if i + ahead < len(chunks):
                pending.append(pool.submit(predictor.load, chunks[i + ahead]))
            yield inputs


@contextmanager
def _eval_mode(model: "torch.nn.Module", device: "torch.device | str", cpu_threads: int) -> Iterator[None]:
    """Eval mode, no gradients and ``cpu_threads`` intra-op threads on a CPU (0: unchanged); all restored."""
    import torch

    was_training, threads = model.training, torch.get_num_threads()
    if cpu_threads > 0 and torch.device(device).type == "cpu":
        torch.set_num_threads(int(cpu_threads))
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)


def predict_items(model: "torch.nn.Module", task: "Task", recipe: "Recipe", split: "PreparedSplit",
                  items: Sequence[Any], *, device: "torch.device | str" = "cpu", progress: bool = False) -> "Predictions":
    """The task's test procedure on ``items`` (a list from ``task.eval_items``, or built by ``hrnet predict``):
    the model in eval mode without gradients (its mode restored afterwards), ``task.predictor(model, recipe, split,
    device)`` run batch by batch (:func:`run_batches`), the batches joined by ``task.concat``.

    Returns:
        The task's :class:`~hrnet_core.tasks.base.Predictions`, one entry per item, in item order.

    Raises:
        Whatever the task's predictor raises on unreadable inputs (e.g. ``hrnet_core.data.io.ImageReadError``).
    """
    predictor = task.predictor(model, recipe, split, device)
    with _eval_mode(model, device, predictor.cpu_threads):
        parts = run_batches(predictor, items, progress, predictor.desc)
    return task.concat(parts)


def _distributed(world: int) -> bool:
    import torch.distributed as dist

    return world > 1 and dist.is_available() and dist.is_initialized()


def evaluate_split(model: "torch.nn.Module", task: "Task", recipe: "Recipe", split: "PreparedSplit", *,
                   device: "torch.device | str" = "cpu", rank: int = 0, world: int = 1,
                   out_dir: str | Path | None = None, progress: bool = False, num_vis: int = 0) -> dict[str, float]:
    """Predict ``split`` with the task's test procedure and score it in the papers' units.

    With ``world > 1`` (an initialised ``torch.distributed`` group, e.g. the Ray Train workers) rank ``r`` predicts
    the ``r``-th contiguous share of ``task.eval_items`` (:func:`shard_bounds`) after rank 0's buffers (BatchNorm
    running statistics) are broadcast, so every rank predicts with the weights rank 0 saves and the metrics do not
    depend on the number of ranks; rank 0 gathers the shares in item order and scores them. Without a process group
    ``rank`` / ``world`` still select the share (the others are then not gathered: use ``world=1``).

    Args:
        model: the network (any mode; restored afterwards), on ``device``.
        task: the recipe's :class:`~hrnet_core.tasks.Task`.
        out_dir: rank 0 writes ``predictions.json`` (the dataset's official results format, by ``task.score``),
            ``metrics.json`` and, with ``num_vis > 0``, ``vis/`` drawings (``task.draw``) there.
        progress: a progress bar per rank.

    Returns:
        On rank 0 the task's metrics (``task.metrics``; e.g. COCO ``AP`` in percent, ``eval_items`` the number of
        items) plus ``eval_time_s`` (wall seconds of this call); ``{}`` on the other ranks.

    Raises:
        hrnet_core.data.prepared.DataError and the task's own errors on bad data (named by the task).

    Follows the official test scripts' order (e.g. deep-high-resolution-net.pytorch ``lib/core/function.py``
    ``validate``: predict every item, then score the whole set once).
    """
    t0 = time.time()
    distributed = _distributed(world)
    if distributed:
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    items = task.eval_items(recipe, split)
    bounds = shard_bounds(len(items), world)
    mine = predict_items(model, task, recipe, split, items[bounds[rank]:bounds[rank + 1]], device=device,
                         progress=progress)
    parts = [mine]
    if distributed:
        parts = [None] * world
        dist.all_gather_object(parts, mine)
    if rank != 0:
        return {}
    return _score(task, recipe, split, items, task.concat(parts), out_dir, num_vis, t0)


def _score(task: "Task", recipe: "Recipe", split: "PreparedSplit", items: Sequence[Any], preds: "Predictions",
           out_dir: str | Path | None, num_vis: int, t0: float) -> dict[str, float]:
    """``task.score`` (+ ``eval_time_s``); with ``out_dir`` also the drawings and ``metrics.json``."""
    work = Path(out_dir) if out_dir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    metrics = task.score(items, preds, recipe, split, work)
    metrics["eval_time_s"] = time.time() - t0
    if work is not None:
        if num_vis > 0:
            task.draw(items, preds, recipe, split, work / "vis", num_vis)
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
