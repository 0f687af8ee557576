"""Ray Data streaming ingest for training, generic over tasks, with seeded augmentation and deterministic shards.

Every training worker builds its own dataset for each epoch (:func:`build_train_dataset`): the rows of
``samples.parquet`` that :func:`hrnet_core.data.seeding.epoch_shard` gives its rank, in the epoch's order, ->
``map_batches(encode_batch)``: the task's per-sample function (:attr:`hrnet_core.tasks.Task.sample_transform`:
decode, augment, encode targets) on each row with the generator
:func:`~hrnet_core.data.seeding.sample_rng` ``(train.seed, epoch, index)`` -> numpy batches that the worker turns
into tensors with the task's ``collate_fn`` (``iter_torch_batches(collate_fn=...)``).

Reproducibility: a sample is a function of ``(train.seed, epoch, index)`` only; which rank trains on which samples,
and in which order, is a function of ``(train.seed, epoch, rank, world_size)`` only (equal, non-overlapping shards of the
epoch permutation), and the ingest runs with ``preserve_order``. The same recipe, seed and worker count therefore give
the same batches, run after run. The decode/augment work runs in Ray Data tasks, which Ray schedules on any node with
free CPUs, so CPU-only nodes can feed GPU training workers.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from hrnet_core.data.prepared import DataError, PreparedSplit

__all__ = ["samples_table", "encode_batch", "build_train_dataset", "stack_samples", "task_collate", "preserve_order",
           "move_to"]


def samples_table(split: PreparedSplit):
    """``samples.parquet`` of ``split`` as a ``pyarrow.Table`` with an int64 ``index`` column (row number).

    Raises:
        DataError: the split has no training samples.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if split.num_samples == 0:
        raise DataError(f"prepared split {str(split.dir)!r} has no training samples")
    table = pq.read_table(split.samples_file)
    return table.append_column("index", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def stack_samples(samples: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``[{name: array}]`` -> ``{name: array [B, ...]}``; names whose arrays differ in shape become object arrays
    (variable-size samples, e.g. detection targets), which the task's ``collate_fn`` turns into lists."""
    out: dict[str, np.ndarray] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        shapes = {np.shape(v) for v in values}
        if len(shapes) == 1:
            out[key] = np.stack(values)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[key] = arr
    return out


def encode_batch(batch, fn: Callable, seed: int, epoch: int, train: bool = True) -> dict[str, np.ndarray]:
    """``map_batches`` function: a pandas batch of sample rows (with ``index``) -> numpy batch of network inputs and
    targets, plus ``index`` int64 ``[B]``.

    Args:
        batch: ``pandas.DataFrame`` of ``samples.parquet`` rows plus the ``index`` column (:func:`samples_table`).
        fn: the task's per-sample function (``Task.sample_transform(recipe, split, train)``).
        seed, epoch: with ``train``, sample ``index`` is augmented with ``sample_rng(seed, epoch, index)``.

    Raises:
        ValueError: no ``index`` column. hrnet_core.data.io.ImageReadError: a missing or corrupt image (named).
    """
    from hrnet_core.data.seeding import sample_rng

    if "index" not in batch.columns:
        raise ValueError("encode_batch: rows need an 'index' column (the sample's row in samples.parquet, added by "
                         "pipelines.ingest.samples_table) to seed their augmentation")
    indices = batch["index"].to_numpy(np.int64)
    samples = [fn(row, sample_rng(seed, epoch, index) if train else None)
               for row, index in zip(batch.to_dict("records"), indices)]
    out = stack_samples(samples)
    out["index"] = indices
    return out


def build_train_dataset(task, recipe, split: PreparedSplit, *, epoch: int, rank: int = 0, world_size: int = 1,
                        table=None, task_batch_size: int = 16, cpus_per_task: float = 1.0,
                        rows_per_block: int = 64, shuffle: bool = True):
    """The training :class:`ray.data.Dataset` of one rank for one epoch (lazy).

    Args:
        task: the recipe's :class:`~hrnet_core.tasks.Task`.
        recipe: resolved recipe (``train.seed``, the task's data/augment sections).
        split: the prepared training split.
        epoch: 0-based epoch (seeds the order and the augmentation).
        rank, world_size: this worker's shard (:func:`~hrnet_core.data.seeding.epoch_shard`).
        table: :func:`samples_table` of ``split`` if already read (the driver puts it in the object store once).
        task_batch_size: rows per ``encode_batch`` call.
        cpus_per_task: CPUs reserved by each decode/augment task.
        rows_per_block: rows per input block (small blocks: the first batch arrives before the epoch is decoded).
        shuffle: the epoch permutation; otherwise split order.

    Raises:
        DataError: the split has no samples.
    """
    import ray.data

    from hrnet_core.data.seeding import epoch_shard

    table = samples_table(split) if table is None else table
    seed = int(recipe.train.seed)
    idx = epoch_shard(seed, epoch, table.num_rows, rank, world_size, shuffle=shuffle)
    shard = table.take(idx)
    step = max(1, int(rows_per_block))
    ds = ray.data.from_arrow([shard.slice(i, step) for i in range(0, shard.num_rows, step)] or [shard])
    fn = task.sample_transform(recipe, split, True)
    return ds.map_batches(encode_batch, fn_kwargs={"fn": fn, "seed": seed, "epoch": int(epoch)},
                          batch_size=task_batch_size, batch_format="pandas", num_cpus=cpus_per_task)


def task_collate(collate_fn: Callable[[Mapping[str, np.ndarray]], Any]):
    """The task's ``collate_fn`` as a Ray Data ``NumpyBatchCollateFn`` (``iter_torch_batches(collate_fn=...)``); the
    numpy arrays it receives are writable copies where Ray hands out read-only views."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    class TaskCollate(NumpyBatchCollateFn):
        def __init__(self, fn: Callable[[Mapping[str, np.ndarray]], Any]) -> None:
            self.fn = fn

        def __call__(self, batch: Mapping[str, np.ndarray]) -> Any:
            return self.fn({k: v if v.flags.writeable else v.copy() for k, v in batch.items()})

    return TaskCollate(collate_fn)


def preserve_order() -> None:
    """Make this process's Ray Data executions deliver blocks in input order (deterministic batches)."""
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True


def move_to(batch: Any, device) -> Any:
    """Tensors of a (nested dict / list) batch moved to ``device``; other values unchanged."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch
