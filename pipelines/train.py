"""Training, generic over tasks: the driver (``train``) and the per-worker loop of a Ray Train V2 ``TorchTrainer``.

The recipe's task (:mod:`hrnet_core.tasks`, ``recipe.task``) supplies the network, the loss, the per-sample
transform, the collate function and the evaluator; this module knows none of them.

Driver (:func:`train`), in the process that calls it:

1. opens the prepared train/val splits (fails early, naming what is missing) and resolves every path to an
   absolute one (Ray workers run in another working directory);
2. creates the MLflow run once -- or, when ``<storage_path>/<run_name>`` already holds Ray checkpoints, finds the
   run of that name again -- and logs the resolved recipe as params plus tags (recipe, task, paper row, git commit,
   dataset fingerprint, Ray cluster size);
3. puts the training split's sample table in the object store once and starts a ``TorchTrainer`` with
   ``ScalingConfig(num_workers, use_gpu, resources_per_worker)``, ``RunConfig(name=run_name, storage_path,
   FailureConfig(max_failures), CheckpointConfig(num_to_keep), callbacks)``, then ``fit()``. Ray Train restores the
   run's latest checkpoint automatically when ``run_name`` is reused (after a crash, or a worker failure within
   ``max_failures``);
4. exports the final weights (:func:`hrnet_core.weights.save_weights` format), the per-epoch history and final
   metrics.

Worker loop (:func:`train_loop_per_worker`): ``task.build_model`` (+ ImageNet backbone), SyncBatchNorm on multi-GPU,
DDP via ``ray.train.torch.prepare_model``, Adam/AdamW/SGD with the recipe's schedule (per epoch, or per iteration for
``poly``; linear warm-up per step), gradient accumulation to reach ``train.global_batch_size`` on fewer devices, bf16
(or fp16 with loss scaling) autocast on GPU. The worker builds one dataset of its deterministic shards of all the
epochs left (:func:`pipelines.ingest.build_train_dataset`, one streaming execution: decoding of the next epoch
overlaps checkpointing and validation; decode worker processes warmed while the model is built) and takes each
epoch's whole batches from it with the task's ``collate_fn``; the task's
``train_step`` returns the loss dict (``{"loss": total, ...parts}``); the first non-finite term stops the training
in one line (:func:`check_finite_loss`, not retried; the run ends FAILED with tag ``failure``). Validation runs on
every rank's contiguous share of the eval items, gathered to rank 0 for scoring. Every epoch
``ray.train.report(metrics, checkpoint)`` with model + optimiser + scaler + history; rank 0 logs to MLflow once per
epoch (:func:`log_epoch`) and, at the start, every rank's environment (``env.*`` tags). A finished run gets the
paper comparison (``paper/<m>``, ``delta/<m>``, :func:`close_training_run`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

from hrnet_core.data.prepared import DataError, PreparedSplit, dataset_fingerprint, open_split  # noqa: E402
from hrnet_core.recipes import ConfigError, Recipe, recipe_from_dict  # noqa: E402

from . import tracking  # noqa: E402


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_id: MLflow run id.
        metrics: final metrics (last epoch's ``loss``, ``lr``, validation metrics if any, ``train_time_s``,
            ``driver_setup_s``: seconds before the trainer is built, ``fit_s``: from then until ``fit`` returned);
            per epoch the history also holds ``epoch_time_s``, ``data_wait_s``, ``val_time_s`` (validated epochs),
            ``checkpoint_write_s`` and, in the first epoch a worker runs, ``worker_start_s`` (trainer built to the
            worker's loop) and ``worker_setup_s`` (loop entry to its first epoch).
        checkpoint_path: directory of the latest Ray Train checkpoint (holds ``model.pt``, ``train_state.pt``).
        run_name: Ray Train run name (``<storage_path>/<run_name>``).
        history: one dict per epoch.
        weights_path: exported weights file, when ``export_weights`` was given.
    """

    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_name: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    weights_path: str | None = None


RUN_IDENTITY = "hrnet_run.json"


def config_hash(recipe: Recipe, dataset_fingerprint: str | None = None, pretrained_sha256: str | None = None) -> str:
    """8 hex digits identifying a training run: the resolved recipe, the data it reads and the backbone it starts from.

    File locations do not count (``data.root``, ``model.pretrained`` are replaced by the contents they point to:
    the prepared splits' ``dataset_fingerprint`` and the backbone file's sha256), so the same run is found again from
    another checkout, and other data or another backbone never resumes (or re-reports) a run of the old ones.
    """
    d = recipe.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k != "root"}
    d["model"] = {k: v for k, v in d["model"].items() if k != "pretrained"}
    blob = json.dumps({"recipe": d, "data": dataset_fingerprint, "pretrained": pretrained_sha256 or d.get("pretrained")},
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def default_run_name(recipe: Recipe, dataset_fingerprint: str | None = None, pretrained_sha256: str | None = None) -> str:
    """``<recipe>[-<profile>]-<config hash>`` (:func:`config_hash`)."""
    parts = [recipe.name] + ([recipe.profile] if recipe.profile else [])
    return "-".join(parts + [config_hash(recipe, dataset_fingerprint, pretrained_sha256)])


def run_identity(recipe: Recipe) -> dict[str, Any]:
    """What identifies a run of ``recipe`` (absolute paths): ``{"dataset_fingerprint", "pretrained_sha256",
    "run_name"}``, read from the prepared splits and the backbone file.

    Raises:
        DataError: prepared splits missing. FileNotFoundError: ``model.pretrained`` missing.
    """
    from hrnet_core.data.io import sha256_file

    train_split = open_split(recipe.data.root, recipe.data.train_split)
    val_split = open_split(recipe.data.root, recipe.data.val_split)
    if recipe.model.pretrained and not Path(recipe.model.pretrained).is_file():
        raise FileNotFoundError(f"pretrained backbone weights {recipe.model.pretrained!r} not found (model.pretrained);"
                                f" download the ImageNet checkpoint or set model.pretrained=null")
    fingerprint = dataset_fingerprint(train_split, val_split)
    pre = sha256_file(recipe.model.pretrained) if recipe.model.pretrained else None
    return {"dataset_fingerprint": fingerprint, "pretrained_sha256": pre,
            "run_name": default_run_name(recipe, fingerprint, pre)}


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The Ray Train checkpoint folder of ``run_dir`` with the longest ``history.json`` (None when there is none)."""
    best, best_len = None, -1
    d = Path(run_dir)
    if not d.is_dir():
        return None
    for c in d.iterdir():
        h = c / "history.json"
        if c.is_dir() and c.name.startswith("checkpoint") and h.is_file():
            try:
                n = len(json.loads(h.read_text()))
            except (OSError, ValueError):
                continue
            if n > best_len:
                best, best_len = c, n
    return best


def absolutize(recipe: Recipe, base: str | Path | None = None) -> Recipe:
    """A copy of ``recipe`` whose file paths (``data.root``, ``model.pretrained``) are absolute."""
    base_dir = Path(base) if base is not None else Path.cwd()
    d = recipe.to_dict()
    d["data"]["root"] = str((base_dir / d["data"]["root"]).resolve())
    if d["model"]["pretrained"]:
        d["model"]["pretrained"] = str((base_dir / d["model"]["pretrained"]).resolve())
    return recipe_from_dict(d)


def default_cpus_per_worker(num_workers: int, use_gpu: bool, nodes, data_task_cpus: float = 1.0) -> float:
    """CPUs reserved per training worker by the per-node rule (:func:`pipelines.cluster.default_cpus_per_worker`):
    GPU workers 1; CPU workers ``min(1, headroom / num_workers)`` where the headroom is what the nodes give while one
    keeps ``data_task_cpus`` free for the Ray Data tasks (one node of 2 CPUs, 2 workers -> 0.5 each).

    Args:
        nodes: per-node totals (``[{"CPU": 1.0}, ...]``), or a number of CPUs meaning one node of that size.

    Raises:
        pipelines.cluster.ClusterError: less than 0.25 CPU per worker left (one line naming the CPUs and nodes).
    """
    from .cluster import default_cpus_per_worker as per_node

    node_list = [{"CPU": float(nodes)}] if isinstance(nodes, (int, float)) else nodes
    return per_node(num_workers, use_gpu, node_list, data_task_cpus)


# ------------------------------------------------------------------------------------------------ driver


def train(
    recipe: Recipe,
    *,
    num_workers: int,
    use_gpu: bool,
    run_name: str | None,
    storage_path: str,
    mlflow_uri: str,
    experiment: str = "hrnet",
    parent_run_id: str | None = None,
    tags: dict | None = None,
    callbacks: list | None = None,
    cpus_per_worker: float | None = None,
    export_weights: str | Path | None = None,
    history_out: str | Path | None = None,
    address: str | None = None,
    placement: str = "pack",
    data_task_cpus: float | None = None,
) -> TrainResult:
    """Train ``recipe`` with Ray Train and log the job as one MLflow run (see module docstring).

    Args:
        recipe: resolved recipe (:func:`hrnet_core.recipes.load_recipe`).
        num_workers: training workers (one per GPU with ``use_gpu``).
        use_gpu: one GPU per worker; enables SyncBatchNorm (``train.sync_bn``) and autocast (``train.precision``).
        run_name: Ray Train run name; reusing it resumes from its latest checkpoint, but only a run of the same data
            (dataset fingerprint). ``None``: :func:`default_run_name` of the recipe, data and backbone. A run that
            has finished all its epochs is reported as ``already complete`` without starting Ray.
        storage_path: Ray Train storage (checkpoints); made absolute. Keep it outside DVC outputs.
        mlflow_uri: tracking URI (relative sqlite paths are made absolute).
        experiment: MLflow experiment name.
        parent_run_id: nest the run under this MLflow run (sweeps).
        tags: extra MLflow tags.
        callbacks: ``ray.train.UserCallback`` instances for ``RunConfig(callbacks=...)`` (e.g. a Tune report callback).
        cpus_per_worker: CPUs reserved per worker (default :func:`default_cpus_per_worker`).
        export_weights: also write the final weights here (:func:`hrnet_core.weights.save_weights` format).
        history_out: also write the per-epoch history here (CSV).
        address: Ray cluster to join when Ray is not initialised yet (default: a local instance on 127.0.0.1).
        placement: ``pack`` (Ray Train's default: as few nodes as possible) or ``spread`` (the workers on different
            nodes where they fit); each worker's node is logged as tags ``ray.worker.<rank>.node`` and printed in
            the epoch line.
        data_task_cpus: CPUs of one Ray Data decode task (default 1). The per-node rule
            (:func:`pipelines.cluster.check_fit`) must leave that much free on some node beside the workers.

    Returns:
        :class:`TrainResult`.

    Raises:
        hrnet_core.data.prepared.DataError: prepared data missing. hrnet_core.recipes.ConfigError: batch geometry that
        cannot reach the global batch; ``run_name`` names a run of other data. FileNotFoundError: ``model.pretrained``
        missing.
        ray.train.TrainingFailedError: training failed more than ``train.max_failures`` times.
        pipelines.cluster.ClusterError: ``address`` unreachable or refusing the token; the workers and the decode
            tasks cannot fit the nodes (one line naming the resource, before anything is scheduled).
        KeyboardInterrupt: Ctrl+C (the MLflow run is ended ``KILLED``; the same call resumes from the last checkpoint).
    """
    import ray
    import ray.train

    from .cluster import DEFAULT_DATA_TASK_CPUS, PLACEMENTS, check_fit, node_resources

    from hrnet_core.tasks import get_task

    from .ingest import samples_table

    t0 = time.time()
    shown = recipe
    recipe = absolutize(recipe)
    task = get_task(recipe.task)
    accum = recipe.accumulation_steps(num_workers)
    identity = run_identity(recipe)  # checks data and backbone before anything starts
    if recipe.model.pretrained:  # the backbone must fit the network: one line here, not a failure in every worker
        check_pretrained(task, recipe)
    run_name = run_name or identity["run_name"]
    fingerprint = identity["dataset_fingerprint"]
    storage = Path(storage_path).expanduser().resolve()
    uri = tracking.resolve_tracking_uri(mlflow_uri)
    _check_same_run(storage / run_name, identity)
    done = _finished(storage / run_name, recipe, uri, experiment, run_name, task, export_weights, history_out)
    if done is not None:
        return done
    train_split = open_split(recipe.data.root, recipe.data.train_split)
    val_split = open_split(recipe.data.root, recipe.data.val_split)
    table = samples_table(train_split)
    bs = recipe.train.batch_size_per_device
    if table.num_rows // num_workers < bs:
        raise ConfigError(f"train.batch_size_per_device={bs}: the training split {str(train_split.dir)!r} has "
                          f"{table.num_rows} samples, {table.num_rows // num_workers} per worker with {num_workers} "
                          f"workers: not one full batch; use fewer workers, a smaller batch or more data")
    if not ray.is_initialized():
        init_ray(address)
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
    resources = ray.cluster_resources()
    cluster_cpus = float(resources.get("CPU", 1.0))
    if use_gpu and float(resources.get("GPU", 0.0)) < num_workers:
        raise ConfigError(f"--use-gpu with {num_workers} workers but the Ray cluster has "
                          f"{resources.get('GPU', 0)} GPUs")
    data_cpus = float(data_task_cpus) if data_task_cpus is not None else DEFAULT_DATA_TASK_CPUS
    nodes = node_resources(ray.nodes())
    cpus = cpus_per_worker if cpus_per_worker is not None else \
        default_cpus_per_worker(num_workers, use_gpu, nodes, data_cpus)
    worker_bundle = {"CPU": cpus, **({"GPU": 1.0} if use_gpu else {})}
    # per node: the workers' bundles, and a decode task beside them (a Tune trial's actor is already placed)
    check_fit(nodes, [worker_bundle] * num_workers, data_task_cpus=data_cpus,
              what=f"{num_workers} training workers x {worker_bundle}")

    (storage / run_name).mkdir(parents=True, exist_ok=True)
    (storage / run_name / RUN_IDENTITY).write_text(json.dumps(identity, indent=2) + "\n")
    resuming = _has_checkpoints(storage / run_name)
    run_id = tracking.find_run(uri, experiment, run_name) if resuming else None
    all_tags = {
        **tracking.recipe_tags(shown),
        "source": "training",
        "git_commit": tracking.git_commit(),
        "dataset_fingerprint": fingerprint,
        "ray.num_workers": num_workers,
        "ray.use_gpu": use_gpu,
        "ray.cluster_cpus": cluster_cpus,
        "ray.cluster_gpus": float(resources.get("GPU", 0.0)),
        "ray.cluster_nodes": len([n for n in ray.nodes() if n.get("Alive")]),
        "ray.storage_path": str(storage),
        "train.accumulation_steps": accum,
        **(tags or {}),
    }
    if run_id is None:
        run_id = tracking.create_run(uri, experiment, run_name, all_tags, parent_run_id=parent_run_id)
    else:
        tracking.set_tags(uri, run_id, {**all_tags, "resumed": "true"})
    tracking.log_params(uri, run_id, shown.flat(), on_change="tag")
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "recipe.yaml"
        import yaml

        cfg_file.write_text(yaml.safe_dump(shown.to_dict(), sort_keys=False))
        tracking.log_artifacts(uri, run_id, [cfg_file], artifact_path="config")

    loop_config = {
        "samples": ray.put(table),  # read once here; every worker cuts its shard of each epoch from it
        "recipe": recipe.to_dict(),
        "recipe_shown": shown.to_dict(),
        "mlflow_uri": uri,
        "run_id": run_id,
        "accumulation_steps": accum,
        "use_gpu": bool(use_gpu),
        "threads": max(1, int(round(cpus))),
        "data_task_cpus": data_cpus,
        "progress_bars": sys.stdout.isatty(),
        "train_root": str(train_split.dir.parent),
        "train_split": train_split.name,
        "val_root": str(val_split.dir.parent),
        "val_split": val_split.name,
    }
    del task
    # the worker's worker_start_s is measured from here (Ray Train controller and worker group start)
    t_fit = loop_config["fit_started_at"] = time.time()
    interrupted = threading.Event()
    trainer = _trainer_class(on_sigint=interrupted.set)(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})},
                                               placement_strategy=PLACEMENTS[placement]),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=recipe.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=recipe.train.checkpoints_to_keep),
            callbacks=list(callbacks or []),
            # V2 API in the workers too; no print patching, so pycocotools' summary stays quiet
            worker_runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
    )
    try:
        with controller_poll_interval(CONTROLLER_POLL_INTERVAL_S):
            result = trainer.fit()
    except BaseException as exc:
        # Ctrl+C: Ray Train's SIGINT handler aborts the controller and leaves fit by sys.exit(0) (a SystemExit, not
        # a KeyboardInterrupt); the handler chained in by _trainer_class has set `interrupted` first
        if interrupted.is_set() or isinstance(exc, KeyboardInterrupt):
            tracking.end_run(uri, run_id, "KILLED", only_if_running=True)
            raise KeyboardInterrupt from None
        # a trial that Tune stopped may already be recorded as FINISHED by the sweep: keep that
        _tag_failure(uri, run_id, exc)
        tracking.end_run(uri, run_id, "FAILED", only_if_running=True)
        raise
    ckpt_dir = result.checkpoint.path if result.checkpoint is not None else None
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    weights_path = None
    if ckpt_dir is not None:
        hist_file = Path(ckpt_dir) / "history.json"
        if hist_file.is_file():
            history = json.loads(hist_file.read_text())
        metrics = dict(history[-1]) if history else {}
    metrics["train_time_s"] = time.time() - t0
    metrics["driver_setup_s"] = t_fit - t0  # checks, samples table, Ray start or join, MLflow run
    metrics["fit_s"] = time.time() - t_fit
    if export_weights is not None and ckpt_dir is not None:
        from hrnet_core.weights import load_weights

        load_weights(ckpt_dir)  # a weights file of ours, read safely
        weights_path = str(Path(export_weights).resolve())
        Path(weights_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(ckpt_dir) / "model.pt", weights_path)
        tracking.log_artifacts(uri, run_id, [weights_path], artifact_path="weights")
    if history_out is not None:
        write_history_csv(history, history_out)
    close_training_run(uri, run_id, shown.name, metrics, len(history), profile=shown.profile)
    return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=ckpt_dir, run_name=run_name,
                       history=history, weights_path=weights_path)


def close_training_run(uri: str, run_id: str, recipe_name: str, metrics: dict[str, float], step: int,
                       profile: str | None = None) -> dict[str, float]:
    """End a finished training run: log ``train_time_s`` / ``driver_setup_s`` and the paper comparison of the final
    metrics (``paper/<m>``, ``delta/<m>`` and ``paper.*`` tags, :func:`pipelines.tracking.log_paper_comparison`,
    as ``hrnet evaluate`` does; a sweep trial is compared with its own row), tag ``paper.comparable`` (no profile),
    and mark it FINISHED.

    Args:
        metrics: the final metrics (the last epoch's, with its validation metrics in the papers' names).
        step: the step of the final metrics (epochs trained).

    Returns:
        The ``paper/`` and ``delta/`` metrics logged (``{}`` without paper values).
    """
    tracking.log_metrics(uri, run_id, {k: metrics[k] for k in ("train_time_s", "driver_setup_s") if k in metrics},
                         step=step)
    tracking.set_tags(uri, run_id, {"paper.comparable": str(profile is None).lower()})
    logged = tracking.log_paper_comparison(run_id, recipe_name, metrics, tracking_uri=uri)
    tracking.end_run(uri, run_id, "FINISHED")
    return logged


def check_pretrained(task, recipe: Recipe) -> None:
    """Build the network once with ``model.pretrained`` loaded (as every worker will), so that a backbone that is
    refused (an unsafe pickle: nothing of it runs) or does not fit fails here, in one line.

    Raises:
        hrnet_core.recipes.ConfigError: the loader refused the file (message names ``model.pretrained`` and the
        file). hrnet_core.weights.CheckpointError / hrnet_core.models.CheckpointMismatchError: as raised.
    """
    from hrnet_core.models import CheckpointMismatchError
    from hrnet_core.weights import CheckpointError, safe_load

    try:
        task.build_model(recipe)
    except (CheckpointError, CheckpointMismatchError):
        raise
    except ValueError as exc:
        try:  # the file itself refused: safe_load's one line names the global it asked for
            safe_load(recipe.model.pretrained)
        except CheckpointError as refused:
            raise ConfigError(f"model.pretrained: {refused}") from None
        text = str(exc).strip().splitlines()
        raise ConfigError(f"model.pretrained={recipe.model.pretrained!r}: "
                          f"{text[0].strip() if text else type(exc).__name__}") from None


def _tag_failure(uri: str, run_id: str, exc: BaseException) -> None:
    """Tag a still-running MLflow run with ``failure``: the one-line cause of ``exc`` (:func:`root_cause`)."""
    try:
        if tracking.client(uri).get_run(run_id).info.status != "RUNNING":
            return
        cause = root_cause(exc)
        text = str(cause).strip().splitlines()
        kind = getattr(cause, "kind", type(cause).__name__)
        tracking.set_tags(uri, run_id, {"failure": f"{kind}: {text[-1] if text else ''}"[:4000]})
    except Exception:  # noqa: BLE001 - bookkeeping must not hide the training's own error
        pass


#: exceptions (by class name, anywhere in a failure's cause chain) that mean bad input (or, for a non-finite loss,
#: bad numbers that a deterministic rerun reproduces): retrying cannot help
DATA_ERRORS = ("ImageReadError", "DataError", "AnnotationError", "CheckpointError", "CheckpointMismatchError",
               "NonFiniteLossError")


class NonFiniteLossError(ArithmeticError):
    """A loss term of a training batch is ``nan`` or ``inf`` (:func:`check_finite_loss`); the message is one line."""


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


def log_epoch(uri: str, run_id: str, metrics: dict[str, float], epoch: int) -> dict[str, float]:
    """Log one epoch's metrics at step ``epoch`` (1-based) once: a worker restarted between this log and its
    checkpoint report retrains the epoch and logs it again, which adds nothing
    (:func:`pipelines.tracking.log_metrics_once`). Returns what was logged."""
    return tracking.log_metrics_once(uri, run_id, metrics, step=epoch)


def cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it: Ray Train worker failures, Ray task causes, ``__cause__`` /
    ``__context__``; outermost first."""
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures.values())
        for attr in ("controller_failure", "cause"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return out


class InputError(Exception):
    """A bad-input error of a Ray task or worker known only from its traceback text (the original exception object
    does not survive Ray's serialisation of ``__cause__``); ``str()`` is ``"<ErrorClass>: <message>"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_DATA_ERROR_TEXT = re.compile(r"\b(" + "|".join(DATA_ERRORS) + r"): ([^\n]+)")


def data_error(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s cause chain that is bad input (:data:`DATA_ERRORS`), else None.

    Looks at the exception objects first, then at the tracebacks Ray keeps as text (a failure inside a Ray Data task
    reaches the training worker as ``UserCodeException`` whose cause is only in the traceback); the innermost match
    wins.
    """
    chain = cause_chain(exc)
    for e in chain:
        if any(c.__name__ in DATA_ERRORS for c in type(e).__mro__):
            return e
    for e in reversed(chain):
        text = "\n".join(str(x) for x in (getattr(e, "traceback_str", None), str(e)) if x)
        found = _DATA_ERROR_TEXT.findall(text)
        if found:
            kind, message = found[-1]
            return InputError(kind, message.strip())
    return None


def root_cause(exc: BaseException) -> BaseException:
    """The exception to show for a failed training: the data error if there is one, else the innermost cause."""
    return data_error(exc) or cause_chain(exc)[-1]


def chain_sigint(on_sigint) -> Any:
    """Install a SIGINT handler that calls ``on_sigint()`` and then the handler installed before it (Ray Train's,
    which aborts the run); returns the new handler (its ``previous`` attribute is the chained one)."""
    import signal

    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        on_sigint()
        chained = handler.previous  # type: ignore[attr-defined]
        if callable(chained):
            chained(signum, frame)
        else:  # SIG_DFL / SIG_IGN / unknown: Python's default behaviour
            raise KeyboardInterrupt

    handler.previous = previous  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, handler)
    return handler


def _trainer_class(on_sigint=None):
    """``TorchTrainer`` whose failure policy never retries bad input (:func:`data_error`): Ray Train's
    ``FailureConfig(max_failures)`` retries are for lost or crashed workers, and a corrupt image fails the same way on
    every attempt. Uses Ray Train V2's failure-policy hook; without it (another Ray version) the default policy
    applies. ``on_sigint``: called on Ctrl+C before Ray Train's own SIGINT handler (:func:`chain_sigint`, installed
    right after Ray's, which ``fit`` registers in the main thread), so that :func:`train` knows the run was
    interrupted when ``fit`` ends by Ray's ``sys.exit(0)``."""
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy
    except ImportError:  # pragma: no cover - other Ray versions
        return TorchTrainer
    if not hasattr(DefaultFailurePolicy, "_is_retryable_error") or \
            not hasattr(TorchTrainer, "_initialize_and_run_controller"):
        return TorchTrainer  # pragma: no cover

    class Trainer(TorchTrainer):
        def _initialize_and_run_controller(self, **kwargs):
            kwargs["failure_policy"] = DataErrorsAreFinal(self.run_config.failure_config)
            return super()._initialize_and_run_controller(**kwargs)

        def _register_sigint_handler(self, controller):
            super()._register_sigint_handler(controller)
            if on_sigint is not None:
                chain_sigint(on_sigint)

    return Trainer


def DataErrorsAreFinal(failure_config):  # noqa: N802 - builds the policy class, which needs Ray's internals
    """Ray Train's ``DefaultFailurePolicy`` for ``failure_config``, except that a failure caused by bad input
    (:func:`data_error`) is raised at once (see :func:`_trainer_class`)."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

    class _DataErrorsAreFinal(DefaultFailurePolicy):
        def _is_retryable_error(self, training_failed_error) -> bool:
            if data_error(training_failed_error) is not None:
                return False
            return super()._is_retryable_error(training_failed_error)

    return _DataErrorsAreFinal(failure_config)


#: seconds between the Ray Train controller's polls of the worker group (Ray's default 2.0 s: the run's end is noticed
#: up to 2 s late, 4.4 s after the last report in bench_ingest; with 0.2 s: 1.0 s).
#: ``$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` wins when set.
CONTROLLER_POLL_INTERVAL_S = 0.25


@contextmanager
def controller_poll_interval(seconds: float):
    """Within the block, a Ray Train controller started by ``fit`` polls its workers every ``seconds`` (Ray propagates
    ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` from the driver to the controller), unless the variable is already set."""
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(key, None)


def init_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local instance without the dashboard.

    Ray 2.60 cannot be confined to the loopback interface: it replaces a node address of 127.0.0.1 by the machine's
    own (``services.resolve_ip_for_localhost``) and binds the GCS, raylet and worker servers to every interface;
    its token authentication (on by default) protects them (README, "Network exposure").
    """
    import ray

    from .cluster import connect

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        connect(address)  # a wrong address or a missing token: one line within seconds (ClusterError)
    else:
        ray.init(include_dashboard=False)


def _check_same_run(run_dir: Path, identity: dict[str, Any]) -> None:
    """A run folder with checkpoints may only be continued with the data (and backbone) it was trained on."""
    f = run_dir / RUN_IDENTITY
    if not f.is_file() or not _has_checkpoints(run_dir):
        return
    stored = json.loads(f.read_text())
    for key in ("dataset_fingerprint", "pretrained_sha256"):
        if stored.get(key) != identity.get(key):
            raise ConfigError(f"run {run_dir.name!r} ({run_dir}) was trained with {key} {stored.get(key)}, this "
                              f"recipe has {identity.get(key)}: it cannot be resumed; drop --run-name (a new run) or "
                              f"name another run")


def _finished(run_dir: Path, recipe: Recipe, uri: str, experiment: str, run_name: str, task, export_weights,
              history_out) -> TrainResult | None:
    """The result of a run that has already trained all ``train.epochs`` (read from its last checkpoint; no Ray)."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    history = json.loads((ckpt / "history.json").read_text())
    if len(history) < recipe.train.epochs:
        return None
    from hrnet_core.weights import load_weights

    load_weights(ckpt)  # a weights file of ours, read safely (as the normal path) before it is copied anywhere
    run_id = tracking.find_run(uri, experiment, run_name) or ""
    metrics = dict(history[-1])
    note = _complete_run(uri, run_id, recipe, metrics, len(history)) if run_id else ""
    primary = task.metrics.primary_for(recipe.data.dataset)
    value = f", {primary} {metrics[primary]:.2f}" if primary in metrics else ""
    print(f"already complete: run {run_name} (MLflow {run_id or '?'}{note}), {len(history)} epochs{value}", flush=True)
    weights_path = None
    if export_weights is not None:
        weights_path = str(Path(export_weights).resolve())
        Path(weights_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt / "model.pt", weights_path)
    if history_out is not None:
        write_history_csv(history, history_out)
    return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=str(ckpt), run_name=run_name, history=history,
                       weights_path=weights_path)


def _complete_run(uri: str, run_id: str, recipe: Recipe, metrics: dict[str, float], epochs: int) -> str:
    """The MLflow run of a run folder whose checkpoints hold every epoch: FINISHED as it is; one that ended otherwise
    (the driver died after the last epoch) is closed now (:func:`close_training_run`, tag
    ``completed_from_checkpoint``). Returns a note for the "already complete" line."""
    status = tracking.client(uri).get_run(run_id).info.status
    if status == "FINISHED":
        return ""
    tracking.set_tags(uri, run_id, {"completed_from_checkpoint": "true"})
    close_training_run(uri, run_id, recipe.name, metrics, epochs, profile=recipe.profile)
    return f"; it had ended {status}, now FINISHED: its checkpoints hold every epoch"


def _has_checkpoints(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint") for p in run_dir.iterdir())


def write_history_csv(history: list[dict[str, float]], path: str | Path) -> Path:
    """Per-epoch history as CSV (columns: epoch, then every metric seen; empty cells where not measured)."""
    import csv

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch"] + sorted({k for h in history for k in h} - {"epoch"})
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for h in history:
            w.writerow({k: h.get(k, "") for k in keys})
    return p


# ------------------------------------------------------------------------------------------------ worker side


def _epoch_rate(recipe: Recipe, epoch: int) -> float:
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


def _step_rate(recipe: Recipe, t: int, total_steps: int) -> float:
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


def lr_at(recipe: Recipe, epoch: int, step: int, total_steps: int | None = None) -> float:
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


def build_optimizer(recipe: Recipe, model):
    """Adam / AdamW / SGD from ``train.optimizer`` (the official pose recipes: Adam, no weight decay).

    ``model``: the module (parameters named in ``train.optimizer.no_decay`` get weight decay 0; the entry ``<1d>``
    exempts every parameter of at most one dimension -- biases and normalisation weights, as DeiT / Swin do) or an
    iterable of parameters.
    """
    import torch

    o = recipe.train.optimizer
    if isinstance(model, torch.nn.Module):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def exempt_from_decay(name: str, p) -> bool:
            return any(k in name for k in o.no_decay) or ("<1d>" in o.no_decay and p.ndim <= 1)

        exempt = [p for n, p in named if exempt_from_decay(n, p)]
        rest = [p for n, p in named if not exempt_from_decay(n, p)]
        params = [{"params": rest}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    else:
        params = model
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def ddp_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """``DistributedDataParallel`` options for ``model`` (passed to ``ray.train.torch.prepare_model``).

    ``find_unused_parameters=True`` only when the model has parameters its forward never uses
    (:func:`hrnet_core.models.hrformer.inert_parameters`: the HRFormer pose models' relative position bias tables).
    Turning it on for every model would cost each DDP iteration a walk of the autograd graph.
    """
    from hrnet_core.models.hrformer import inert_parameters

    return {"find_unused_parameters": True} if inert_parameters(model) else {}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function (see module docstring). ``config`` is built by :func:`train`."""
    import ray
    import ray.data
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from hrnet_core.tasks import get_task
    from hrnet_core.weights import safe_load, save_weights

    from .cluster import decode_slots, free_cpus_per_node, node_tags, nodes_line, worker_node
    from .ingest import build_train_dataset, move_to, preserve_order, started, task_collate, warm_decode_workers

    t_entry = time.time()
    recipe = recipe_from_dict(config["recipe"])
    shown = recipe_from_dict(config.get("recipe_shown", config["recipe"]))
    task = get_task(recipe.task)
    data_cpus = float(config.get("data_task_cpus", 1.0))
    # decode worker processes import their modules while this worker starts (not in the first epoch): as many as
    # decode tasks can start now, counted per node (fractions of a CPU on two nodes make no task)
    warm_decode_workers(task, decode_slots(free_cpus_per_node(), data_cpus), cpus_per_task=data_cpus)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(recipe.train.seed)
    use_gpu = bool(config["use_gpu"])
    device = ray.train.torch.get_device()
    _log_environment(config, device, rank, world)

    start_epoch, step, history, restored = 0, 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restored = safe_load(Path(d) / "model.pt"), safe_load(Path(d) / "train_state.pt")
            history = json.loads((Path(d) / "history.json").read_text())
        start_epoch, step = int(restored[1]["epoch"]), int(restored[1]["step"])

    train_split = open_split(config["train_root"], config["train_split"])
    val_split = open_split(config["val_root"], config["val_split"])
    table = ray.get(config["samples"])
    bs = recipe.train.batch_size_per_device
    accum = int(config["accumulation_steps"])
    total_steps = recipe.train.epochs * steps_per_epoch(table.num_rows, world, bs, accum)
    preserve_order()
    ray.data.DataContext.get_current().enable_progress_bars = bool(config.get("progress_bars", False))
    _quiet_ray_reports()
    primary = task.metrics.primary_for(recipe.data.dataset)
    # one streaming execution for every epoch left: each epoch's shard cut to whole batches, in epoch order; it
    # starts (executor, first blocks) in the background while the model is built
    epoch_batches = batches_per_epoch(table.num_rows, world, bs)
    stream = iter(())
    if start_epoch < recipe.train.epochs:
        shard = build_train_dataset(task, recipe, train_split, epoch=start_epoch, rank=rank, world_size=world,
                                    table=table, epochs=recipe.train.epochs - start_epoch, batch_size=bs,
                                    cpus_per_task=data_cpus)
        stream = started(shard.iter_torch_batches(batch_size=bs, drop_last=True,
                                                  collate_fn=task_collate(task.collate_fn), prefetch_batches=2))

    model = task.build_model(recipe)
    if use_gpu and recipe.train.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs(model))
    bare = model.module if hasattr(model, "module") else model
    optimizer = build_optimizer(recipe, model)
    amp_dtype = _amp_dtype(recipe.train.precision, use_gpu)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_step = task.train_step(recipe)  # step(model, batch) -> loss dict, built once per run
    if restored is not None:
        bare.load_state_dict(restored[0]["state_dict"])
        optimizer.load_state_dict(restored[1]["optimizer"])
        scaler.load_state_dict(restored[1]["scaler"])
        del restored
    nodes = [worker_node()]  # every worker's Ray node, by rank: MLflow tags and the epoch line
    if world > 1 and dist.is_available() and dist.is_initialized():
        nodes = [None] * world
        dist.all_gather_object(nodes, worker_node())
    if rank == 0:
        tracking.set_tags(config["mlflow_uri"], config["run_id"], node_tags(nodes))
    setup_s = time.time() - t_entry  # this worker's start-up before its first epoch (not in any epoch's time)
    for epoch in range(start_epoch, recipe.train.epochs):
        model.train()
        t_epoch = time.time()
        sums: dict[str, Any] = {}  # per loss part: sum over batches
        batches = 0
        seen = 0
        micro = 0
        optimizer.zero_grad(set_to_none=True)
        waited = 0.0  # seconds this epoch waited for the ingest (the rest is compute, logging, checkpointing)
        for _ in range(epoch_batches):
            t_wait = time.perf_counter()
            batch = next(stream)
            waited += time.perf_counter() - t_wait
            batch = move_to(batch, device)
            lr = lr_at(recipe, epoch, step, total_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            micro += 1
            sync = micro % accum == 0
            ctx_sync = nullcontext() if sync or not hasattr(model, "no_sync") else model.no_sync()
            with ctx_sync:
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    losses = train_step(model, batch)
                values = {name: float(value.detach().item()) for name, value in losses.items()}
                check_finite_loss(values, epoch=epoch, epochs=recipe.train.epochs, step=step, batch=batches,
                                  batches=epoch_batches)
                loss = losses["loss"]
                scaler.scale(loss / accum).backward()
            if sync:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            batches += 1
            seen += len(batch["index"])  # batch size: the index column
        if micro % accum:  # an incomplete accumulation group ends the epoch: step on what it has
            _sync_leftover_grads(model, micro % accum, accum)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        names = sorted(sums)
        stats = torch.tensor([sums[n] for n in names] + [float(batches), float(seen)], dtype=torch.float64,
                             device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        elapsed = time.time() - t_epoch
        n_batches = max(float(stats[-2]), 1.0)
        metrics: dict[str, float] = {
            "epoch": float(epoch + 1),
            **{name: float(stats[k] / n_batches) for k, name in enumerate(names)},
            "lr": float(lr_at(recipe, epoch, step, total_steps)),
            "epoch_time_s": elapsed,
            "data_wait_s": waited,
            "samples_per_s": float(stats[-1]) / max(elapsed, 1e-9),
            "optimizer_steps": float(step),
        }
        if epoch == start_epoch:
            metrics["worker_setup_s"] = setup_s
            if "fit_started_at" in config:  # Ray Train controller + worker group start (same clock on one node)
                metrics["worker_start_s"] = max(0.0, t_entry - float(config["fit_started_at"]))
        last = epoch + 1 == recipe.train.epochs
        if recipe.train.val_every and ((epoch + 1) % recipe.train.val_every == 0 or last):
            t_val = time.time()
            metrics.update(validate_sharded(bare, task, recipe, val_split, device, rank, world))
            metrics["val_time_s"] = time.time() - t_val
        history.append(metrics)
        if rank == 0:  # one line per epoch
            shown_metric = f"  {primary} {metrics[primary]:.2f}" if primary in metrics else ""
            print(f"epoch {epoch + 1}/{recipe.train.epochs}  loss {metrics['loss']:.6g}  lr {metrics['lr']:.3g}  "
                  f"{metrics['samples_per_s']:.1f} samples/s{shown_metric}  {nodes_line(nodes)}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                t_save = time.time()
                save_weights(Path(tmp) / "model.pt", bare.state_dict(), shown,
                             {"epoch": epoch + 1, "mlflow_run_id": config["run_id"], "metrics": metrics})
                torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                            "step": step}, Path(tmp) / "train_state.pt")
                metrics["checkpoint_write_s"] = time.time() - t_save  # weights + optimiser state files
                (Path(tmp) / "history.json").write_text(json.dumps(history))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                log_epoch(config["mlflow_uri"], config["run_id"], metrics, epoch + 1)
            ray.train.report(metrics, checkpoint=ckpt)


def _log_environment(config: dict[str, Any], device, rank: int, world: int) -> None:
    """Every rank's :func:`pipelines.tracking.environment_tags`, gathered to rank 0 and set on the run (merged:
    a value the ranks share once, differing ones per rank)."""
    import torch.distributed as dist

    env = tracking.environment_tags(device)
    gathered: list[Any] = [env]
    if world > 1 and dist.is_available() and dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, env)
    if rank == 0:
        tracking.set_tags(config["mlflow_uri"], config["run_id"], tracking.merge_environment_tags(gathered))


def _quiet_ray_reports() -> None:
    """Silence Ray Train's per-report INFO dump (``Reporting training result ...: TrainingReport(...)``) in this
    worker; the loop prints its own line per epoch."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # pragma: no cover - other Ray versions
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def validate_sharded(model, task, recipe: Recipe, split: PreparedSplit, device, rank: int, world: int) -> dict[str, float]:
    """Validation on every rank: rank ``r`` predicts the ``r``-th contiguous share of the task's eval items, rank 0
    gathers the predictions (in item order) and scores them. Returns the metrics on rank 0, ``{}`` elsewhere.

    Rank 0's BatchNorm statistics are broadcast first, so every rank's predictions are those a single process makes
    with the saved weights (the model is in eval mode): the metrics do not depend on the number of ranks.
    """
    from hrnet_core.engine.evaluation import evaluate_split

    metrics = evaluate_split(model, task, recipe, split, device=device, rank=rank, world=world)
    return {k: v for k, v in metrics.items() if not k.startswith("eval_items")}


def _sync_leftover_grads(model, n_micro: int, accum: int) -> None:
    """Scale and all-reduce gradients of an incomplete accumulation group at the end of an epoch.

    The last micro-batch ran under ``no_sync`` (it was not the end of a group), so DDP did not average the
    gradients: average them here and rescale from ``1/accum`` to ``1/n_micro`` per micro-batch.
    """
    import torch.distributed as dist

    factor = accum / n_micro
    distributed = dist.is_available() and dist.is_initialized() and hasattr(model, "no_sync")
    world = dist.get_world_size() if distributed else 1
    for p in model.parameters():
        if p.grad is None:
            continue
        if distributed:
            dist.all_reduce(p.grad)
            p.grad /= world
        p.grad *= factor


def _amp_dtype(precision: str, use_gpu: bool):
    import torch

    if not use_gpu or precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


__all__ = ["TrainResult", "train", "train_loop_per_worker", "default_run_name", "config_hash", "lr_at",
           "batches_per_epoch", "steps_per_epoch", "build_optimizer", "validate_sharded", "write_history_csv",
           "DataError", "NonFiniteLossError", "check_finite_loss", "close_training_run", "check_pretrained",
           "log_epoch"]
