"""Training, generic over tasks: the Ray Train V2 driver (:func:`train`) and worker (:func:`train_loop_per_worker`)
around the pure-torch engine (:mod:`hrnet_core.engine`).

The recipe's task (:mod:`hrnet_core.tasks`, ``recipe.task``) supplies the network, the loss, the per-sample
transform, the collate function and the test procedure; this module knows none of them.

Driver (:func:`train`): checks the prepared splits, the backbone and the batch geometry and resolves every path to
an absolute one (:mod:`pipelines.runs`: Ray workers run elsewhere); finds a finished run ("already complete", no
Ray) or the run folder's MLflow run again; checks that the workers and the decode tasks fit the nodes
(:mod:`pipelines.cluster`); puts the training split's sample table in the object store once; runs a
``TorchTrainer`` (``ScalingConfig``, ``RunConfig(name=run_name, storage_path, FailureConfig(max_failures),
CheckpointConfig(num_to_keep))``) whose failure policy never retries a final error
(:func:`pipelines.ray_adapter.trainer_class`); exports the weights, the history and the final metrics. Ray Train
restores the run's latest checkpoint when ``run_name`` is reused (after a crash, or a worker failure within
``max_failures``).

Worker: ``task.build_model``, SyncBatchNorm on multi-GPU, DDP via ``ray.train.torch.prepare_model``, the optimiser,
autocast and scaler of :mod:`hrnet_core.engine.optim`; one streaming Ray Data execution of its shards of all the
epochs left (:func:`pipelines.ingest.build_train_dataset`); per epoch :func:`hrnet_core.engine.train_one_epoch` (its
non-finite-loss guard stops the run in one line, not retried: the run ends FAILED with tag ``failure``), the
validation of every rank's share of the eval items gathered to rank 0, ``ray.train.report(metrics, checkpoint)``
with model + optimiser + scaler + history; rank 0 logs to MLflow once per epoch and, at the start, every rank's
environment (``env.*`` tags). A finished run gets the paper comparison
(:func:`pipelines.mlflow_runs.close_training_run`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

from hrnet_core.data.prepared import DataError, PreparedSplit  # noqa: E402
from hrnet_core.engine import (  # noqa: E402
    NonFiniteLossError, amp_dtype, batches_per_epoch, build_optimizer, check_finite_loss, lr_at, steps_per_epoch,
)
from hrnet_core.errors import root_cause  # noqa: E402
from hrnet_core.recipes import ConfigError, Recipe  # noqa: E402

from . import mlflow_runs  # noqa: E402
from .cluster import init_ray  # noqa: E402
from .mlflow_runs import close_training_run, log_epoch  # noqa: E402
from .ray_adapter import CONTROLLER_POLL_INTERVAL_S, controller_poll_interval, trainer_class  # noqa: E402
from .runs import (  # noqa: E402
    RUN_IDENTITY, TrainResult, absolutize, already_complete, check_same_run, config_hash, copy_weights,
    default_run_name, has_checkpoints, open_training_splits, run_identity, write_history_csv, write_identity,
)
from .train_worker import train_loop_per_worker, validate_sharded  # noqa: E402

__all__ = ["TrainResult", "train", "train_loop_per_worker", "default_run_name", "config_hash", "lr_at",
           "batches_per_epoch", "steps_per_epoch", "build_optimizer", "validate_sharded", "write_history_csv",
           "DataError", "NonFiniteLossError", "check_finite_loss", "close_training_run", "check_pretrained",
           "log_epoch", "run_identity", "absolutize", "RUN_IDENTITY", "default_cpus_per_worker", "amp_dtype"]


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


def train(recipe: Recipe, *, num_workers: int, use_gpu: bool, run_name: str | None, storage_path: str,
          mlflow_uri: str, experiment: str = "hrnet", parent_run_id: str | None = None, tags: dict | None = None,
          callbacks: list | None = None, cpus_per_worker: float | None = None,
          export_weights: str | Path | None = None, history_out: str | Path | None = None,
          address: str | None = None, placement: str = "pack", data_task_cpus: float | None = None) -> TrainResult:
    """Train ``recipe`` with Ray Train and log the job as one MLflow run (see module docstring).

    Args:
        recipe: resolved recipe (:func:`hrnet_core.recipes.load_recipe`).
        num_workers: training workers (one per GPU with ``use_gpu``).
        use_gpu: one GPU per worker; enables SyncBatchNorm (``train.sync_bn``) and autocast (``train.precision``).
        run_name: Ray Train run name; reusing it resumes from its latest checkpoint, but only a run of the same data
            (dataset fingerprint). ``None``: :func:`pipelines.runs.default_run_name` of the recipe, data and
            backbone. A run that has finished all its epochs is reported as ``already complete`` without Ray.
        storage_path: Ray Train storage (checkpoints); made absolute. Keep it outside DVC outputs.
        mlflow_uri: tracking URI (relative sqlite paths are made absolute).
        experiment: MLflow experiment name. parent_run_id: nest the run under this MLflow run (sweeps).
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
        :class:`pipelines.runs.TrainResult`.

    Raises:
        hrnet_core.data.prepared.DataError: prepared data missing. hrnet_core.recipes.ConfigError: batch geometry that
        cannot reach the global batch; ``run_name`` names a run of other data. FileNotFoundError: ``model.pretrained``
        missing.
        ray.train.TrainingFailedError: training failed more than ``train.max_failures`` times, or at once for a
            final error (bad input, a non-finite loss; the MLflow run ends FAILED with tag ``failure``).
        pipelines.cluster.ClusterError: ``address`` unreachable or refusing the token; the workers and the decode
            tasks cannot fit the nodes (one line naming the resource, before anything is scheduled).
        KeyboardInterrupt: Ctrl+C (the MLflow run is ended ``KILLED``; the same call resumes from the last checkpoint).
    """
    t0 = time.time()
    shown, recipe = recipe, absolutize(recipe)
    splits = open_training_splits(recipe)  # the only time a run reads the manifests
    identity, storage, uri = _checked_run(recipe, splits, run_name, storage_path, mlflow_uri)
    run_name = run_name or identity["run_name"]
    done = already_complete(storage / run_name, recipe, uri, experiment, run_name, export_weights, history_out)
    if done is not None:
        return done
    table = _training_table(recipe, splits[0], num_workers)
    cluster = _fit_cluster(num_workers, use_gpu, cpus_per_worker, address, placement, data_task_cpus)
    write_identity(storage / run_name, identity)
    run_id = _open_run(uri, experiment, run_name, storage, shown, identity, cluster, recipe.accumulation_steps(
        num_workers), parent_run_id, tags)
    config = _loop_config(recipe, shown, table, splits, uri, run_id, num_workers, use_gpu, cluster)
    t_fit = config["fit_started_at"] = time.time()  # the workers' worker_start_s is measured from here
    result = _fit(config, recipe, run_name, storage, num_workers, use_gpu, cluster, placement, callbacks, uri,
                  run_id)
    return _collect(result, shown, uri, run_id, run_name, t0, t_fit, export_weights, history_out)


def _checked_run(recipe: Recipe, splits: tuple[PreparedSplit, PreparedSplit], run_name: str | None,
                 storage_path: str, mlflow_uri: str) -> tuple[dict[str, Any], Path, str]:
    """The checks before anything starts: identity (data, backbone), the backbone loaded once, a named run folder
    of the same data. Returns ``(identity, absolute storage, absolute tracking URI)``."""
    from hrnet_core.tasks import get_task

    identity = run_identity(recipe, splits)  # checks data and backbone before anything starts
    if recipe.model.pretrained:  # the backbone must fit the network: one line here, not a failure in every worker
        check_pretrained(get_task(recipe.task), recipe)
    storage = Path(storage_path).expanduser().resolve()
    check_same_run(storage / (run_name or identity["run_name"]), identity)
    return identity, storage, mlflow_runs.resolve_tracking_uri(mlflow_uri)


def _training_table(recipe: Recipe, train_split: PreparedSplit, num_workers: int):
    """The training split's sample table (:func:`pipelines.ingest.samples_table`).

    Raises:
        ConfigError: fewer samples per worker than one batch.
    """
    from .ingest import samples_table

    table = samples_table(train_split)
    bs = recipe.train.batch_size_per_device
    if table.num_rows // num_workers < bs:
        raise ConfigError(f"train.batch_size_per_device={bs}: the training split {str(train_split.dir)!r} has "
                          f"{table.num_rows} samples, {table.num_rows // num_workers} per worker with {num_workers} "
                          f"workers: not one full batch; use fewer workers, a smaller batch or more data")
    return table


def _fit_cluster(num_workers: int, use_gpu: bool, cpus_per_worker: float | None, address: str | None,
                 placement: str, data_task_cpus: float | None) -> dict[str, Any]:
    """Join or start Ray and check that the workers' bundles and a decode task fit the nodes
    (:func:`pipelines.cluster.check_fit`). Returns ``{"cpus", "data_cpus", "resources", "nodes"}``.

    Raises:
        ConfigError: unknown placement, fewer GPUs than workers. ClusterError: the per-node rule fails.
    """
    import ray

    from .cluster import DEFAULT_DATA_TASK_CPUS, PLACEMENTS, check_fit, node_resources

    if placement not in PLACEMENTS:  # before Ray starts
        raise ConfigError(f"placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
    if not ray.is_initialized():
        init_ray(address)
    resources = ray.cluster_resources()
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
    return {"cpus": cpus, "data_cpus": data_cpus, "resources": resources, "num_workers": num_workers,
            "use_gpu": use_gpu, "alive_nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def _open_run(uri: str, experiment: str, run_name: str, storage: Path, shown: Recipe, identity: dict[str, Any],
              cluster: dict[str, Any], accum: int, parent_run_id: str | None, tags: dict | None) -> str:
    """The run folder's MLflow run found again (it has checkpoints) and tagged ``resumed``, or a new one; the
    recipe logged as params and ``config/recipe.yaml``. Returns the run id."""
    import yaml

    resources = cluster["resources"]
    run_id = mlflow_runs.find_run(uri, experiment, run_name) if has_checkpoints(storage / run_name) else None
    all_tags = {
        **mlflow_runs.recipe_tags(shown), "source": "training", "git_commit": mlflow_runs.git_commit(),
        "dataset_fingerprint": identity["dataset_fingerprint"], "ray.num_workers": cluster["num_workers"],
        "ray.use_gpu": cluster["use_gpu"], "ray.cluster_cpus": float(resources.get("CPU", 1.0)),
        "ray.cluster_gpus": float(resources.get("GPU", 0.0)), "ray.cluster_nodes": cluster["alive_nodes"],
        "ray.storage_path": str(storage), "train.accumulation_steps": accum, **(tags or {}),
    }
    if run_id is None:
        run_id = mlflow_runs.create_run(uri, experiment, run_name, all_tags, parent_run_id=parent_run_id)
    else:
        mlflow_runs.set_tags(uri, run_id, {**all_tags, "resumed": "true"})
    mlflow_runs.log_params(uri, run_id, shown.flat(), on_change="tag")
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "recipe.yaml"
        cfg_file.write_text(yaml.safe_dump(shown.to_dict(), sort_keys=False))
        mlflow_runs.log_artifacts(uri, run_id, [cfg_file], artifact_path="config")
    return run_id


def _loop_config(recipe: Recipe, shown: Recipe, table, splits: tuple[PreparedSplit, PreparedSplit], uri: str,
                 run_id: str, num_workers: int, use_gpu: bool, cluster: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_config`` of the workers (plain data; the sample table put in the object store once)."""
    import ray

    return {
        "samples": ray.put(table),  # read once here; every worker cuts its shard of each epoch from it
        "recipe": recipe.to_dict(), "recipe_shown": shown.to_dict(), "mlflow_uri": uri, "run_id": run_id,
        "accumulation_steps": recipe.accumulation_steps(num_workers), "use_gpu": bool(use_gpu),
        "threads": max(1, int(round(cluster["cpus"]))), "data_task_cpus": cluster["data_cpus"],
        "progress_bars": sys.stdout.isatty(),
        "splits": tuple(splits),  # (train, val) as the driver opened them: the workers do not re-read manifests
    }


def _fit(config: dict[str, Any], recipe: Recipe, run_name: str, storage: Path, num_workers: int, use_gpu: bool,
         cluster: dict[str, Any], placement: str, callbacks: list | None, uri: str, run_id: str):
    """Build the ``TorchTrainer`` and ``fit``; Ctrl+C ends the MLflow run KILLED (raised as KeyboardInterrupt), any
    other failure FAILED with tag ``failure`` (re-raised). Returns Ray Train's ``Result``."""
    import ray.train

    from .cluster import PLACEMENTS

    interrupted = threading.Event()
    cpus = cluster["cpus"]
    trainer = trainer_class(on_sigint=interrupted.set)(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})},
                                               placement_strategy=PLACEMENTS[placement]),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=recipe.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=recipe.train.checkpoints_to_keep),
            callbacks=list(callbacks or []),
            # V2 API in the workers too; no print patching, so pycocotools' summary stays quiet
            worker_runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}))
    try:
        with controller_poll_interval(CONTROLLER_POLL_INTERVAL_S):
            return trainer.fit()
    except BaseException as exc:
        # Ctrl+C: Ray Train's SIGINT handler aborts the controller and leaves fit by sys.exit(0) (a SystemExit, not
        # a KeyboardInterrupt); the handler chained in by trainer_class has set `interrupted` first
        if interrupted.is_set() or isinstance(exc, KeyboardInterrupt):
            mlflow_runs.end_run(uri, run_id, "KILLED", only_if_running=True)
            raise KeyboardInterrupt from None
        # a trial that Tune stopped may already be recorded as FINISHED by the sweep: keep that
        cause = root_cause(exc)
        mlflow_runs.tag_failure(uri, run_id, failure_kind(cause), failure_line(cause))
        mlflow_runs.end_run(uri, run_id, "FAILED", only_if_running=True)
        raise


def failure_kind(cause: BaseException) -> str:
    """The class name shown for a failure's cause (a worker's re-raised final error keeps its original name)."""
    return getattr(cause, "kind", type(cause).__name__)


def failure_line(cause: BaseException) -> str:
    """The last line of a failure cause's message (``""`` when empty)."""
    text = str(cause).strip().splitlines()
    return text[-1] if text else ""


def _collect(result, shown: Recipe, uri: str, run_id: str, run_name: str, t0: float, t_fit: float,
             export_weights, history_out) -> TrainResult:
    """History and final metrics from the last checkpoint, the exported weights and history, the run closed."""
    ckpt_dir = result.checkpoint.path if result.checkpoint is not None else None
    history: list[dict[str, float]] = []
    weights_path = None
    if ckpt_dir is not None and (Path(ckpt_dir) / "history.json").is_file():
        history = json.loads((Path(ckpt_dir) / "history.json").read_text())
    metrics: dict[str, float] = dict(history[-1]) if history else {}
    metrics["train_time_s"] = time.time() - t0
    metrics["driver_setup_s"] = t_fit - t0  # checks, samples table, Ray start or join, MLflow run
    metrics["fit_s"] = time.time() - t_fit
    if export_weights is not None and ckpt_dir is not None:
        from hrnet_core.weights import load_weights

        load_weights(ckpt_dir)  # a weights file of ours, read safely
        weights_path = copy_weights(ckpt_dir, export_weights)
        mlflow_runs.log_artifacts(uri, run_id, [weights_path], artifact_path="weights")
    if history_out is not None:
        write_history_csv(history, history_out)
    close_training_run(uri, run_id, shown.name, metrics, len(history), profile=shown.profile)
    return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=ckpt_dir, run_name=run_name,
                       history=history, weights_path=weights_path)


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
