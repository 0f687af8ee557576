"""Ray Data streaming ingest for training, generic over tasks, with seeded augmentation and deterministic shards.

Every training worker builds its own dataset once for all the epochs it trains (:func:`build_train_dataset`, one
streaming execution): the rows of ``samples.parquet`` that :func:`hrnet_core.data.seeding.epoch_shard` gives its
rank, epoch after epoch in each epoch's order (each cut to whole batches), in blocks of a few batches ->
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

__all__ = ["samples_table", "encode_batch", "shard_rows", "default_rows_per_block", "block_bounds", "sample_nbytes",
           "build_train_dataset", "arrow_blocks_dataset", "decode_warm_modules", "warm_decode_workers", "started", "stack_samples",
           "task_collate", "preserve_order"]


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
        batch: ``pandas.DataFrame`` of ``samples.parquet`` rows plus the ``index`` column (:func:`samples_table`) and,
            for rows of several epochs (:func:`build_train_dataset` with ``epochs > 1``), an ``epoch`` column.
        fn: the task's per-sample function (``Task.sample_transform(recipe, split, train)``).
        seed, epoch: with ``train``, sample ``index`` is augmented with ``sample_rng(seed, epoch, index)``; a row's
            ``epoch`` column, when there is one, takes the place of ``epoch``.

    Raises:
        ValueError: no ``index`` column. hrnet_core.data.io.ImageReadError: a missing or corrupt image (named).
    """
    from hrnet_core.data.seeding import sample_rng

    if "index" not in batch.columns:
        raise ValueError("encode_batch: rows need an 'index' column (the sample's row in samples.parquet, added by "
                         "pipelines.ingest.samples_table) to seed their augmentation")
    indices = batch["index"].to_numpy(np.int64)
    epochs = np.full(len(indices), int(epoch))
    if "epoch" in batch.columns:
        epochs, batch = batch["epoch"].to_numpy(np.int64), batch.drop(columns=["epoch"])
    records = batch.to_dict("records")
    samples = [fn(row, sample_rng(seed, e, index) if train else None)
               for row, index, e in zip(records, indices, epochs)]
    out = stack_samples(samples)
    out["index"] = indices
    return out


def shard_rows(table, seed: int, epoch: int, rank: int = 0, world_size: int = 1, *, epochs: int = 1,
               batch_size: int | None = None, shuffle: bool = True):
    """The rows one rank trains on in epochs ``epoch .. epoch + epochs - 1``, in training order, as one
    ``pyarrow.Table`` (the :func:`samples_table` columns, plus an int64 ``epoch`` column when ``epochs > 1``).

    Each epoch is :func:`~hrnet_core.data.seeding.epoch_shard` ``(seed, e, rows, rank, world_size)``; with
    ``batch_size`` it is cut to whole batches (the rows that ``drop_last`` would drop), so that batches of
    ``batch_size`` never straddle two epochs.
    """
    import pyarrow as pa

    from hrnet_core.data.seeding import epoch_shard

    parts = []
    for e in range(int(epoch), int(epoch) + max(1, int(epochs))):
        idx = epoch_shard(seed, e, table.num_rows, rank, world_size, shuffle=shuffle)
        if batch_size:
            idx = idx[:len(idx) // int(batch_size) * int(batch_size)]
        part = table.take(idx)
        if epochs > 1:
            part = part.append_column("epoch", pa.array(np.full(len(idx), e, dtype=np.int64)))
        parts.append(part)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


#: decoded bytes per block at most: a block is decoded by one ``encode_batch`` call (see :func:`build_train_dataset`)
MAX_BLOCK_BYTES = 128 << 20


def default_rows_per_block(rows_per_epoch: int, decode_cpus: float, sample_bytes: int = 0) -> int:
    """Rows per input block: about two blocks per decode CPU and epoch (every CPU decodes from the start; the first
    batch arrives after one block), at most 128 rows and at most :data:`MAX_BLOCK_BYTES` of decoded samples of
    ``sample_bytes`` each (0: unknown, no byte limit).

    Ray Data pays a fixed cost per block (task launch, tensor columns to Arrow, object store round trip, the
    executor's scheduling step in the consuming process), so blocks are as large as the first-batch latency allows
    (``benchmarks/bench_ingest.py``; the figures are in the README, "Throughput").
    """
    per = max(1, int(rows_per_epoch) // max(1, int(2 * max(1.0, float(decode_cpus)))))
    if sample_bytes > 0:
        per = min(per, max(1, MAX_BLOCK_BYTES // int(sample_bytes)))
    return min(per, 128)


def block_bounds(rows: int, rows_per_block: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of the input blocks: a quarter, then half of ``rows_per_block``, then whole
    blocks. The first batch waits for the first block to be decoded (the smoke recipe's 128-row blocks: ~1 s), and the
    next ones are decoded while the first batches train."""
    rows, step = int(rows), max(1, int(rows_per_block))
    bounds, start = [], 0
    for size in [max(1, step // 4), max(1, step // 2)]:
        if start < rows:
            bounds.append((start, min(rows, start + size)))
            start = bounds[-1][1]
    bounds += [(a, min(rows, a + step)) for a in range(start, rows, step)]
    return bounds


def sample_nbytes(sample: Mapping[str, Any]) -> int:
    """Bytes of a decoded sample's arrays (the per-sample function's output)."""
    return int(sum(np.asarray(v).nbytes for v in sample.values()))


def _decode_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else 1.0


def build_train_dataset(task, recipe, split: PreparedSplit, *, epoch: int, rank: int = 0, world_size: int = 1,
                        table=None, task_batch_size: int | None = None, cpus_per_task: float = 1.0,
                        rows_per_block: int | None = None, shuffle: bool = True, epochs: int = 1,
                        batch_size: int | None = None, concurrency: int | None = None):
    """The training :class:`ray.data.Dataset` of one rank for ``epochs`` consecutive epochs from ``epoch`` (lazy).

    One dataset for all the epochs of a run (``epochs`` = the epochs left) is one streaming execution: Ray Data's
    executor, its decode tasks and the worker processes they run in (imports paid once) start once, and decoding
    the next epoch overlaps the end of the current one (checkpoint, report, validation). Blocks of
    ``rows_per_block`` rows (about two per decode CPU and epoch) stream: the first batch arrives after one block
    is decoded, and every decode CPU gets blocks from the start. A block is decoded by one ``encode_batch`` call, so
    its arrays are one contiguous chunk that the consumer slices into batches without copying the block first
    (blocks of several 16-row calls were concatenated by Ray Data's batcher in the training process: 2 decode tasks
    streamed 1,145 crops/s, one call per block 1,700-1,800 on the idle 2-core machine, ``bench_ingest``).

    Args:
        task: the recipe's :class:`~hrnet_core.tasks.Task`.
        recipe: resolved recipe (``train.seed``, the task's data/augment sections).
        split: the prepared training split.
        epoch: 0-based first epoch (seeds the order and the augmentation).
        rank, world_size: this worker's shard (:func:`~hrnet_core.data.seeding.epoch_shard`).
        table: :func:`samples_table` of ``split`` if already read (the driver puts it in the object store once).
        task_batch_size: rows per ``encode_batch`` call (default: the whole block).
        cpus_per_task: CPUs reserved by each decode/augment task.
        rows_per_block: rows per input block (default :func:`default_rows_per_block` of the epoch's rows,
            ``concurrency`` or the cluster's CPUs, and the decoded size of the shard's first sample).
        shuffle: the epoch permutation; otherwise split order.
        epochs: consecutive epochs in this dataset (:func:`shard_rows`).
        batch_size: cut each epoch to whole batches of this size (needed with ``epochs > 1`` and ``drop_last``
            iteration, so that every epoch's batches are the ones a dataset of that epoch alone gives).
        concurrency: at most this many decode tasks at a time (default: as many as the CPUs allow).

    Raises:
        DataError: the split has no samples.
    """
    import ray.data

    table = samples_table(split) if table is None else table
    seed = int(recipe.train.seed)
    shard = shard_rows(table, seed, epoch, rank, world_size, epochs=epochs, batch_size=batch_size, shuffle=shuffle)
    fn = task.sample_transform(recipe, split, True)
    if rows_per_block is None:
        first = shard.slice(0, 1).to_pandas()
        probe = sample_nbytes(encode_batch(first, fn, seed, int(epoch))) if shard.num_rows else 0
        rows_per_block = default_rows_per_block(shard.num_rows // max(1, int(epochs)), concurrency or _decode_cpus(),
                                                probe)
    ds = arrow_blocks_dataset([shard.slice(a, b - a) for a, b in block_bounds(shard.num_rows, rows_per_block)]
                              or [shard])
    extra = {"concurrency": int(concurrency)} if concurrency else {}
    return ds.map_batches(encode_batch, fn_kwargs={"fn": fn, "seed": seed, "epoch": int(epoch)},
                          batch_size=task_batch_size, batch_format="pandas", num_cpus=cpus_per_task, **extra)


def arrow_blocks_dataset(tables: list):
    """A Ray Data dataset of ``tables``, one block each, in order, made without Ray tasks.

    ``ray.data.from_arrow`` reads each block's metadata in a remote task of 1 CPU (Ray Data's default), whatever
    ``cpus_per_task`` the decode tasks use: on two 1-CPU nodes holding a 0.5-CPU training worker and a 0.01-CPU trial
    actor those tasks waited forever (``Pending Demands: {'CPU': 1.0}``). ``ray.data.from_blocks`` computes the
    metadata in this process and keeps the blocks as given; ``from_arrow`` where a Ray version lacks it.
    """
    import ray.data

    from_blocks = getattr(ray.data, "from_blocks", None)
    return from_blocks(tables) if from_blocks is not None else ray.data.from_arrow(tables)


def _warm(modules: list[str]) -> int:
    import importlib
    import os

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # a task module outside the package (tests): the decode task imports it itself
            pass
    return os.getpid()


def decode_warm_modules(task) -> list[str]:
    """The modules a decode task of ``task`` needs, which :func:`warm_decode_workers` imports ahead of it: NumPy,
    pandas, PyArrow, OpenCV, Ray Data, this module, the module of the task's per-sample function and its
    ``decode_modules`` (the function's lazy imports)."""
    return ["numpy", "pandas", "pyarrow", "cv2", "pipelines.ingest", "hrnet_core.data.seeding",
            getattr(task.sample_transform, "__module__", None) or "hrnet_core.tasks", "ray.data",
            *getattr(task, "decode_modules", ())]


def warm_decode_workers(task, n: int, cpus_per_task: float = 1.0) -> list:
    """Start ``n`` Ray worker processes that import what the decode tasks of ``task`` need
    (:func:`decode_warm_modules`), without waiting for them: Ray runs the dataset's decode tasks in these idle
    workers afterwards (same job and runtime environment), so the imports are paid while the caller builds its model
    instead of in the first epoch. Returns the tasks' refs (the workers' pids)."""
    import ray
    import ray.data

    modules = decode_warm_modules(task)
    # Ray Data's own scheduling strategy, stated explicitly: a task launched from a Ray Train worker would otherwise be
    # captured by the worker's placement group (a Tune trial's bundles may hold less than one CPU), where the decode
    # tasks never run.
    strategy = ray.data.DataContext.get_current().scheduling_strategy
    warm = ray.remote(num_cpus=cpus_per_task, max_retries=0, scheduling_strategy=strategy)(_warm)
    return [warm.remote(modules) for _ in range(max(0, int(n)))]


class started:  # noqa: N801 - used like a function
    """An iterator over ``iterable`` whose first item is fetched in a background thread from now on (a Ray Data
    iterator starts its executor and first decode tasks then, while the caller builds its model); ``next`` waits for
    it, then iterates in the caller's thread. An exception of the first fetch is raised by the first ``next``."""

    def __init__(self, iterable) -> None:
        import threading

        self._it = iter(iterable)
        self._first: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fetch, name="ingest-start", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first.append(next(self._it))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread (StopIteration included)
            self._error = exc

    def __iter__(self):
        return self

    def __next__(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            if self._first:
                return self._first.pop()
        return next(self._it)


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
