"""The Ray Train worker of :func:`pipelines.train.train`: Ray's side of one rank (context, checkpoints, Ray Data
stream, DDP, MLflow logging by rank 0) around the pure-torch epoch of :func:`hrnet_core.engine.train_one_epoch`.

``config`` (built by :func:`pipelines.train.train`, plain data): ``samples`` (object ref of the sample table),
``recipe`` / ``recipe_shown`` (dicts), ``mlflow_uri``, ``run_id``, ``accumulation_steps``, ``use_gpu``, ``threads``,
``data_task_cpus``, ``progress_bars``, ``splits`` (the ``(train, val)`` :class:`PreparedSplit` pair the driver
opened: workers do not re-read the manifests), ``fit_started_at``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnet_core.data.prepared import PreparedSplit
from hrnet_core.engine import amp_dtype, batches_per_epoch, build_optimizer, lr_at, make_scaler, steps_per_epoch
from hrnet_core.engine import train_one_epoch
from hrnet_core.errors import WorkerInputFailure, final_error
from hrnet_core.recipes import Recipe, recipe_from_dict
from hrnet_core.tasks.base import batch_size

from . import mlflow_runs

__all__ = ["train_loop_per_worker", "validate_sharded", "ddp_kwargs"]


@dataclass
class _Worker:
    """One rank's training state (built by :func:`_setup`)."""

    config: dict[str, Any]
    recipe: Recipe
    shown: Recipe
    task: Any
    rank: int
    world: int
    device: Any
    t_entry: float
    start_epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    model: Any = None
    bare: Any = None
    optimizer: Any = None
    scaler: Any = None
    dtype: Any = None
    step_fn: Any = None
    stream: Any = None
    val_split: Any = None
    epoch_batches: int = 0
    total_steps: int = 0
    nodes: list = field(default_factory=list)
    setup_s: float = 0.0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function (see :mod:`pipelines.train`).

    Raises:
        hrnet_core.errors.WorkerInputFailure: a final error (bad input: an unreadable image in a Ray Data task, a
            non-finite loss ...) anywhere in the failure's cause chain, as plain data that survives Ray's
            serialisation (the driver's failure policy then stops at once instead of retrying).
    """
    try:
        _run(config)
    except BaseException as exc:
        found = final_error(exc)
        if found is None or isinstance(found, WorkerInputFailure):
            raise
        raise WorkerInputFailure.of(found) from None


def _run(config: dict[str, Any]) -> None:
    """Set up the rank (:func:`_setup`), then train every epoch left (:func:`_epoch`)."""
    w = _setup(config)
    for epoch in range(w.start_epoch, w.recipe.train.epochs):
        _epoch(w, epoch)


def _setup(config: dict[str, Any]) -> _Worker:
    """Everything before the first epoch, in the order the draws of the seeded RNG depend on: decode workers warmed,
    threads and seed, environment tags, the checkpoint restored, the data stream started, the model built."""
    import ray.train
    import ray.train.torch
    import torch

    from hrnet_core.tasks import get_task

    from .cluster import decode_slots, free_cpus_per_node
    from .ingest import warm_decode_workers

    t_entry = time.time()
    recipe = recipe_from_dict(config["recipe"])
    task = get_task(recipe.task)
    data_cpus = float(config.get("data_task_cpus", 1.0))
    # decode worker processes import their modules while this worker starts (not in the first epoch): as many as
    # decode tasks can start now, counted per node (fractions of a CPU on two nodes make no task)
    warm_decode_workers(task, decode_slots(free_cpus_per_node(), data_cpus), cpus_per_task=data_cpus)
    ctx = ray.train.get_context()
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(recipe.train.seed)
    w = _Worker(config=config, recipe=recipe, shown=recipe_from_dict(config.get("recipe_shown", config["recipe"])),
                task=task, rank=ctx.get_world_rank(), world=ctx.get_world_size(),
                device=ray.train.torch.get_device(), t_entry=t_entry)
    _log_environment(config, w.device, w.rank, w.world)
    restored = _restore(w)
    _start_stream(w, data_cpus)
    _build_model(w, restored)
    _gather_nodes(w)
    w.setup_s = time.time() - t_entry  # this worker's start-up before its first epoch (not in any epoch's time)
    return w


def _restore(w: _Worker) -> tuple[dict, dict] | None:
    """The run's latest Ray Train checkpoint, if any: sets ``start_epoch``, ``step``, ``history``; returns
    ``(model.pt, train_state.pt)`` contents (read with ``safe_load``)."""
    import ray.train

    from hrnet_core.weights import safe_load

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        restored = safe_load(Path(d) / "model.pt"), safe_load(Path(d) / "train_state.pt")
        w.history = json.loads((Path(d) / "history.json").read_text())
    w.start_epoch, w.step = int(restored[1]["epoch"]), int(restored[1]["step"])
    return restored


def _start_stream(w: _Worker, data_cpus: float) -> None:
    """One streaming Ray Data execution for every epoch left: each epoch's shard cut to whole batches, in epoch
    order; it starts (executor, first blocks) in the background while the model is built."""
    import ray
    import ray.data

    from .ingest import build_train_dataset, preserve_order, started, task_collate
    from .ray_adapter import quiet_train_reports

    recipe, config = w.recipe, w.config
    train_split, w.val_split = config["splits"]
    table = ray.get(config["samples"])
    bs = recipe.train.batch_size_per_device
    w.total_steps = recipe.train.epochs * steps_per_epoch(table.num_rows, w.world, bs,
                                                          int(config["accumulation_steps"]))
    preserve_order()
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = bool(config.get("progress_bars", False))
    # a failing decode task raises the task's own exception (an ImageReadError arrives as one, a final error that
    # is never retried), not a UserCodeException that keeps its cause only as traceback text
    data_ctx.raise_original_map_exception = True
    quiet_train_reports()
    w.epoch_batches = batches_per_epoch(table.num_rows, w.world, bs)
    w.stream = iter(())
    if w.start_epoch < recipe.train.epochs:
        shard = build_train_dataset(w.task, recipe, train_split, epoch=w.start_epoch, rank=w.rank,
                                    world_size=w.world, table=table, epochs=recipe.train.epochs - w.start_epoch,
                                    batch_size=bs, cpus_per_task=data_cpus)
        w.stream = started(shard.iter_torch_batches(batch_size=bs, drop_last=True,
                                                    collate_fn=task_collate(w.task.collate_fn), prefetch_batches=2))


def _build_model(w: _Worker, restored: tuple[dict, dict] | None) -> None:
    """The task's network (SyncBatchNorm on multi-GPU, DDP by ``prepare_model``), optimiser, autocast dtype,
    scaler and train step; the restored states loaded."""
    import ray.train.torch
    import torch

    recipe, task = w.recipe, w.task
    model = task.build_model(recipe)
    if bool(w.config["use_gpu"]) and recipe.train.sync_bn and w.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    w.model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs(model))
    w.bare = w.model.module if hasattr(w.model, "module") else w.model
    w.optimizer = build_optimizer(recipe, w.model)
    w.dtype = amp_dtype(recipe.train.precision, bool(w.config["use_gpu"]))
    w.scaler = make_scaler(w.dtype)
    w.step_fn = task.train_step(recipe)  # step(model, batch) -> loss dict, built once per run (Task contract)
    if restored is not None:
        w.bare.load_state_dict(restored[0]["state_dict"])
        w.optimizer.load_state_dict(restored[1]["optimizer"])
        w.scaler.load_state_dict(restored[1]["scaler"])


def _gather_nodes(w: _Worker) -> None:
    """Every worker's Ray node, by rank (MLflow tags by rank 0, and the epoch line)."""
    import torch.distributed as dist

    from .cluster import node_tags, worker_node

    w.nodes = [worker_node()]
    if w.world > 1 and dist.is_available() and dist.is_initialized():
        w.nodes = [None] * w.world
        dist.all_gather_object(w.nodes, worker_node())
    if w.rank == 0:
        mlflow_runs.set_tags(w.config["mlflow_uri"], w.config["run_id"], node_tags(w.nodes))


def _epoch(w: _Worker, epoch: int) -> None:
    """One epoch: :func:`hrnet_core.engine.train_one_epoch`, the figures reduced over ranks, validation when due,
    the epoch line, checkpoint and report."""
    recipe = w.recipe
    t_epoch = time.time()
    res = train_one_epoch(w.model, w.stream, step_fn=w.step_fn, optimizer=w.optimizer, scaler=w.scaler,
                          recipe=recipe, epoch=epoch, step=w.step, total_steps=w.total_steps,
                          accumulation=int(w.config["accumulation_steps"]), num_batches=w.epoch_batches,
                          device=w.device, batch_size=batch_size, dtype=w.dtype)
    w.step = res.step
    metrics = _epoch_metrics(w, epoch, res, time.time() - t_epoch)
    last = epoch + 1 == recipe.train.epochs
    if recipe.train.val_every and ((epoch + 1) % recipe.train.val_every == 0 or last):
        t_val = time.time()
        metrics.update(validate_sharded(w.bare, w.task, recipe, w.val_split, w.device, w.rank, w.world))
        metrics["val_time_s"] = time.time() - t_val
    w.history.append(metrics)
    if w.rank == 0:
        _print_epoch(w, epoch, metrics)
    _checkpoint_and_report(w, epoch, metrics)


def _epoch_metrics(w: _Worker, epoch: int, res, elapsed: float) -> dict[str, float]:
    """The epoch's figures: loss terms averaged over every rank's batches (all-reduced in float64), ``lr`` after
    the epoch, throughput, timings (and, in a worker's first epoch, its start-up)."""
    import torch
    import torch.distributed as dist

    names = sorted(res.sums)
    stats = torch.tensor([res.sums[n] for n in names] + [float(res.batches), float(res.seen)], dtype=torch.float64,
                         device=w.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    n_batches = max(float(stats[-2]), 1.0)
    metrics: dict[str, float] = {
        "epoch": float(epoch + 1),
        **{name: float(stats[k] / n_batches) for k, name in enumerate(names)},
        "lr": float(lr_at(w.recipe, epoch, w.step, w.total_steps)),
        "epoch_time_s": elapsed,
        "data_wait_s": res.waited,
        "samples_per_s": float(stats[-1]) / max(elapsed, 1e-9),
        "optimizer_steps": float(w.step),
    }
    if epoch == w.start_epoch:
        metrics["worker_setup_s"] = w.setup_s
        if "fit_started_at" in w.config:  # Ray Train controller + worker group start (same clock on one node)
            metrics["worker_start_s"] = max(0.0, w.t_entry - float(w.config["fit_started_at"]))
    return metrics


def _print_epoch(w: _Worker, epoch: int, metrics: dict[str, float]) -> None:
    """The one line per epoch (rank 0): loss, lr, throughput, the primary metric when validated, the nodes."""
    from .cluster import nodes_line

    primary = w.task.metrics.primary_for(w.recipe.data.dataset)
    shown_metric = f"  {primary} {metrics[primary]:.2f}" if primary in metrics else ""
    print(f"epoch {epoch + 1}/{w.recipe.train.epochs}  loss {metrics['loss']:.6g}  lr {metrics['lr']:.3g}  "
          f"{metrics['samples_per_s']:.1f} samples/s{shown_metric}  {nodes_line(w.nodes)}", flush=True)


def _checkpoint_and_report(w: _Worker, epoch: int, metrics: dict[str, float]) -> None:
    """Rank 0 writes the checkpoint (weights + optimiser state + history) and logs the epoch to MLflow once; every
    rank reports to Ray Train."""
    import ray.train
    import torch

    from hrnet_core.weights import save_weights

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if w.rank == 0:
            t_save = time.time()
            save_weights(Path(tmp) / "model.pt", w.bare.state_dict(), w.shown,
                         {"epoch": epoch + 1, "mlflow_run_id": w.config["run_id"], "metrics": metrics})
            torch.save({"optimizer": w.optimizer.state_dict(), "scaler": w.scaler.state_dict(), "epoch": epoch + 1,
                        "step": w.step}, Path(tmp) / "train_state.pt")
            metrics["checkpoint_write_s"] = time.time() - t_save  # weights + optimiser state files
            (Path(tmp) / "history.json").write_text(json.dumps(w.history))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
            mlflow_runs.log_epoch(w.config["mlflow_uri"], w.config["run_id"], metrics, epoch + 1)
        ray.train.report(metrics, checkpoint=ckpt)


def ddp_kwargs(model: Any) -> dict[str, Any]:
    """``DistributedDataParallel`` options for ``model`` (passed to ``ray.train.torch.prepare_model``).

    ``find_unused_parameters=True`` only when the model has parameters its forward never uses
    (:func:`hrnet_core.models.hrformer.inert_parameters`: the HRFormer pose models' relative position bias tables).
    Turning it on for every model would cost each DDP iteration a walk of the autograd graph.
    """
    from hrnet_core.models.hrformer import inert_parameters

    return {"find_unused_parameters": True} if inert_parameters(model) else {}


def _log_environment(config: dict[str, Any], device: Any, rank: int, world: int) -> None:
    """Every rank's :func:`pipelines.mlflow_runs.environment_tags`, gathered to rank 0 and set on the run (merged:
    a value the ranks share once, differing ones per rank)."""
    import torch.distributed as dist

    env = mlflow_runs.environment_tags(device)
    gathered: list[Any] = [env]
    if world > 1 and dist.is_available() and dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, env)
    if rank == 0:
        mlflow_runs.set_tags(config["mlflow_uri"], config["run_id"], mlflow_runs.merge_environment_tags(gathered))


def validate_sharded(model: Any, task: Any, recipe: Recipe, split: PreparedSplit, device: Any, rank: int,
                     world: int) -> dict[str, float]:
    """Validation on every rank: rank ``r`` predicts the ``r``-th contiguous share of the task's eval items, rank 0
    gathers the predictions (in item order) and scores them. Returns the metrics on rank 0, ``{}`` elsewhere.

    Rank 0's BatchNorm statistics are broadcast first, so every rank's predictions are those a single process makes
    with the saved weights (the model is in eval mode): the metrics do not depend on the number of ranks.
    """
    from hrnet_core.engine.evaluation import evaluate_split

    metrics = evaluate_split(model, task, recipe, split, device=device, rank=rank, world=world)
    return {k: v for k, v in metrics.items() if not k.startswith("eval_items")}
