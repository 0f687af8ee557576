"""Training: the driver (``train``) and the per-worker loop of a Ray Train V2 ``TorchTrainer``.

Driver (:func:`train`), in the process that calls it:

1. opens the prepared train/val splits (fails early, naming what is missing) and resolves every path to an
   absolute one (Ray workers run in another working directory);
2. creates the MLflow run once -- or, when ``<storage_path>/<run_name>`` already holds Ray checkpoints, finds the
   run of that name again -- and logs the resolved recipe as params plus tags (recipe, paper row, git commit,
   dataset fingerprint, Ray cluster size);
3. builds the Ray Data ingest (:mod:`pipelines.ingest`) and a ``TorchTrainer`` with ``ScalingConfig(num_workers,
   use_gpu, resources_per_worker)``, ``RunConfig(name=run_name, storage_path, FailureConfig(max_failures),
   CheckpointConfig(num_to_keep), callbacks)``, then ``fit()``. Ray Train restores the run's latest checkpoint
   automatically when ``run_name`` is reused (after a crash, or a worker failure within ``max_failures``);
4. exports the final weights (:func:`pipelines.evaluate.save_weights`), the per-epoch history and final metrics.

Worker loop (:func:`train_loop_per_worker`): model from the zoo (+ optional ImageNet backbone), SyncBatchNorm on
multi-GPU, DDP via ``ray.train.torch.prepare_model``, Adam/AdamW/SGD with the recipe's schedule (per epoch, linear
warm-up per step), gradient accumulation to reach ``train.global_batch_size`` on fewer devices, bf16 (or fp16 with
loss scaling) autocast on GPU, JointsMSE loss, optional in-training validation on rank 0, and every epoch
``ray.train.report(metrics, checkpoint)`` with model + optimiser + scaler + history; rank 0 logs to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

from hrnet_core.recipes import ConfigError, Recipe, recipe_from_dict  # noqa: E402

from . import tracking  # noqa: E402
from .prepare import DataError, PreparedSplit, dataset_fingerprint, open_split  # noqa: E402

HEAD_PREFIXES = ("final_layer.", "head_conv.")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_id: MLflow run id.
        metrics: final metrics (last epoch's ``loss``, ``lr``, validation metrics if any, ``train_time_s``).
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


def config_hash(recipe: Recipe) -> str:
    """8 hex digits identifying a resolved recipe (same recipe -> same default run name -> automatic resume)."""
    blob = json.dumps(recipe.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def default_run_name(recipe: Recipe) -> str:
    """``<recipe>[-<profile>]-<config hash>``."""
    parts = [recipe.name] + ([recipe.profile] if recipe.profile else []) + [config_hash(recipe)]
    return "-".join(parts)


def absolutize(recipe: Recipe, base: str | Path | None = None) -> Recipe:
    """A copy of ``recipe`` whose file paths (``data.root``, ``model.pretrained``) are absolute."""
    base_dir = Path(base) if base is not None else Path.cwd()
    d = recipe.to_dict()
    d["data"]["root"] = str((base_dir / d["data"]["root"]).resolve())
    if d["model"]["pretrained"]:
        d["model"]["pretrained"] = str((base_dir / d["model"]["pretrained"]).resolve())
    return recipe_from_dict(d)


def default_cpus_per_worker(num_workers: int, use_gpu: bool, cluster_cpus: float) -> float:
    """CPUs reserved per training worker, leaving at least one CPU of the cluster to the Ray Data tasks.

    GPU workers: 1 CPU (the GPU does the work; the rest of the cluster decodes). CPU workers:
    ``min(1, (cpus - 1) / num_workers)``, at least 0.25 (2 CPUs, 2 workers -> 0.5 each, 1 CPU left for ingest).
    """
    if use_gpu:
        return 1.0
    spare = (cluster_cpus - 1.0) / max(1, num_workers)
    return float(max(0.25, min(1.0, spare)))


# ------------------------------------------------------------------------------------------------ driver


def train(
    recipe: Recipe,
    *,
    num_workers: int,
    use_gpu: bool,
    run_name: str,
    storage_path: str,
    mlflow_uri: str,
    experiment: str = "hrnet",
    parent_run_id: str | None = None,
    tags: dict | None = None,
    callbacks: list | None = None,
    cpus_per_worker: float | None = None,
    export_weights: str | Path | None = None,
    history_out: str | Path | None = None,
) -> TrainResult:
    """Train ``recipe`` with Ray Train and log the job as one MLflow run (see module docstring).

    Args:
        recipe: resolved recipe (:func:`hrnet_core.recipes.load_recipe`).
        num_workers: training workers (one per GPU with ``use_gpu``).
        use_gpu: one GPU per worker; enables SyncBatchNorm (``train.sync_bn``) and autocast (``train.precision``).
        run_name: Ray Train run name; reusing it resumes from its latest checkpoint.
        storage_path: Ray Train storage (checkpoints); made absolute. Keep it outside DVC outputs.
        mlflow_uri: tracking URI (relative sqlite paths are made absolute).
        experiment: MLflow experiment name.
        parent_run_id: nest the run under this MLflow run (sweeps).
        tags: extra MLflow tags.
        callbacks: ``ray.train.UserCallback`` instances for ``RunConfig(callbacks=...)`` (e.g. a Tune report callback).
        cpus_per_worker: CPUs reserved per worker (default :func:`default_cpus_per_worker`).
        export_weights: also write the final weights here (:func:`pipelines.evaluate.save_weights`).
        history_out: also write the per-epoch history here (CSV).

    Returns:
        :class:`TrainResult`.

    Raises:
        pipelines.prepare.DataError: prepared data missing. hrnet_core.recipes.ConfigError: batch geometry that
        cannot reach the global batch. FileNotFoundError: ``model.pretrained`` missing.
        ray.train.TrainingFailedError: training failed more than ``train.max_failures`` times.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from .ingest import build_train_dataset, epoch_clock

    t0 = time.time()
    shown = recipe
    recipe = absolutize(recipe)
    accum = recipe.accumulation_steps(num_workers)
    train_split = open_split(recipe.data.root, recipe.data.train_split)
    val_split = open_split(recipe.data.root, recipe.data.val_split)
    if recipe.model.pretrained and not Path(recipe.model.pretrained).is_file():
        raise FileNotFoundError(f"pretrained backbone weights {recipe.model.pretrained!r} not found (model.pretrained);"
                                f" download the ImageNet checkpoint or set model.pretrained=null")
    if not ray.is_initialized():
        ray.init()
    resources = ray.cluster_resources()
    cluster_cpus = float(resources.get("CPU", 1.0))
    if use_gpu and float(resources.get("GPU", 0.0)) < num_workers:
        raise ConfigError(f"--use-gpu with {num_workers} workers but the Ray cluster has "
                          f"{resources.get('GPU', 0)} GPUs")
    cpus = cpus_per_worker if cpus_per_worker is not None else default_cpus_per_worker(num_workers, use_gpu, cluster_cpus)

    storage = Path(storage_path).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    uri = tracking.resolve_tracking_uri(mlflow_uri)
    resuming = _has_checkpoints(storage / run_name)
    run_id = tracking.find_run(uri, experiment, run_name) if resuming else None
    fingerprint = dataset_fingerprint(train_split, val_split)
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

    clock = epoch_clock()  # the workers set it each epoch; the ingest seeds augmentation from (seed, epoch, index)
    loop_config = {
        "epoch_clock": clock,
        "recipe": recipe.to_dict(),
        "recipe_shown": shown.to_dict(),
        "mlflow_uri": uri,
        "run_id": run_id,
        "accumulation_steps": accum,
        "use_gpu": bool(use_gpu),
        "threads": max(1, int(round(cpus))),
        "val_root": str(val_split.dir.parent),
        "val_split": val_split.manifest["split"],
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=recipe.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=recipe.train.checkpoints_to_keep),
            callbacks=list(callbacks or []),
            # V2 API in the workers too; no print patching, so pycocotools' summary stays quiet
            worker_runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
        datasets={"train": build_train_dataset(recipe, train_split, epoch=clock)},
    )
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        tracking.end_run(uri, run_id, "KILLED")
        raise
    except Exception:
        tracking.end_run(uri, run_id, "FAILED")
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
    if export_weights is not None and ckpt_dir is not None:
        from .evaluate import load_weights

        payload = load_weights(ckpt_dir)
        weights_path = str(Path(export_weights).resolve())
        Path(weights_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(ckpt_dir) / "model.pt", weights_path)
        tracking.log_artifacts(uri, run_id, [weights_path], artifact_path="weights")
        del payload
    if history_out is not None:
        write_history_csv(history, history_out)
    tracking.log_metrics(uri, run_id, {"train_time_s": metrics["train_time_s"]}, step=len(history))
    tracking.end_run(uri, run_id, "FINISHED")
    return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=ckpt_dir, run_name=run_name,
                       history=history, weights_path=weights_path)


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


def lr_at(recipe: Recipe, epoch: int, step: int) -> float:
    """Learning rate at ``epoch`` (0-based) and optimiser ``step`` (global, 0-based).

    ``multistep``: ``lr * gamma^(#milestones <= epoch)``; ``cosine``: ``0.5 * lr * (1 + cos(pi * epoch / epochs))``;
    ``constant``. A linear warm-up from ``warmup_ratio * lr`` over ``warmup_iters`` steps multiplies the result.
    """
    t, s = recipe.train, recipe.train.schedule
    base = t.optimizer.lr
    if s.name == "multistep":
        lr = base * s.gamma ** sum(1 for m in s.milestones if epoch >= m)
    elif s.name == "cosine":
        lr = 0.5 * base * (1.0 + math.cos(math.pi * epoch / t.epochs))
    else:
        lr = base
    if s.warmup_iters > 0 and step < s.warmup_iters:
        lr *= s.warmup_ratio + (1.0 - s.warmup_ratio) * step / s.warmup_iters
    return lr


def build_optimizer(recipe: Recipe, model):
    """Adam / AdamW / SGD from ``train.optimizer`` (the official pose recipes: Adam, no weight decay).

    ``model``: the module (parameters named in ``train.optimizer.no_decay`` get weight decay 0) or an iterable of
    parameters.
    """
    import torch

    o = recipe.train.optimizer
    if isinstance(model, torch.nn.Module):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        exempt = [p for n, p in named if any(k in n for k in o.no_decay)]
        rest = [p for n, p in named if not any(k in n for k in o.no_decay)]
        params = [{"params": rest}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    else:
        params = model
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def load_pretrained_backbone(model, path: str | Path) -> int:
    """Load ImageNet classification weights into the backbone of a pose model; the head stays initialised.

    Every model tensor outside the head (``final_layer``, ``head_conv``) must be present with the same shape in
    the file; classification-only tensors of the file are ignored. Returns the number of tensors loaded.

    Raises:
        FileNotFoundError: missing file. ValueError: a backbone tensor missing or of another shape (named).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained backbone weights {str(p)!r} not found")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    own = model.state_dict()
    needed = [k for k in own if not k.startswith(HEAD_PREFIXES) and not k.endswith("num_batches_tracked")]
    bad = [k for k in needed if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{p}: {len(bad)} backbone tensors missing or of another shape, first {bad[0]!r}")
    with torch.no_grad():
        for k in needed:
            own[k].copy_(sd[k])
    return len(needed)


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
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from hrnet_core.losses.joints_mse import JointsMSELoss
    from hrnet_core.models import build_model

    from .ingest import set_epoch

    recipe = recipe_from_dict(config["recipe"])
    shown = recipe_from_dict(config.get("recipe_shown", config["recipe"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(recipe.train.seed)
    use_gpu = bool(config["use_gpu"])
    device = ray.train.torch.get_device()

    model = build_model(recipe.model.name, **recipe.model.build_kwargs())
    if recipe.model.pretrained:
        load_pretrained_backbone(model, recipe.model.pretrained)
    if use_gpu and recipe.train.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs(model))
    bare = model.module if hasattr(model, "module") else model
    optimizer = build_optimizer(recipe, model)
    amp_dtype = _amp_dtype(recipe.train.precision, use_gpu)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = JointsMSELoss(recipe.train.loss.use_target_weight, recipe.train.loss.ohkm_topk)
    accum = int(config["accumulation_steps"])

    start_epoch, step, history = 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            weights = torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=False)
            state = torch.load(Path(d) / "train_state.pt", map_location="cpu", weights_only=False)
            bare.load_state_dict(weights["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, step = int(state["epoch"]), int(state["step"])
            history = json.loads((Path(d) / "history.json").read_text())

    val_split = open_split(config["val_root"], config["val_split"]) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    bs = recipe.train.batch_size_per_device
    for epoch in range(start_epoch, recipe.train.epochs):
        if config.get("epoch_clock") is not None:  # before iterating: this epoch's ingest reads it
            set_epoch(config["epoch_clock"], epoch)
        model.train()
        t_epoch = time.time()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # sum of losses, number of batches
        seen = 0
        micro = 0
        optimizer.zero_grad(set_to_none=True)
        for batch in shard.iter_torch_batches(batch_size=bs, drop_last=True, device=device, prefetch_batches=2):
            lr = lr_at(recipe, epoch, step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            micro += 1
            sync = micro % accum == 0
            ctx_sync = nullcontext() if sync or not hasattr(model, "no_sync") else model.no_sync()
            with ctx_sync:
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = model(batch["image"])
                loss = loss_fn(out.float(), batch["target"], batch["target_weight"])
                scaler.scale(loss / accum).backward()
            if sync:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64, device=device)
            seen += len(batch["image"])
        if micro % accum:  # an incomplete accumulation group ends the epoch: step on what it has
            _sync_leftover_grads(model, micro % accum, accum)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        stats = torch.tensor([float(seen)], dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss_sum)
            dist.all_reduce(stats)
        elapsed = time.time() - t_epoch
        metrics: dict[str, float] = {
            "epoch": float(epoch + 1),
            "loss": float(loss_sum[0] / max(loss_sum[1], 1.0)),
            "lr": float(lr_at(recipe, epoch, step)),
            "epoch_time_s": elapsed,
            "samples_per_s": float(stats[0]) / max(elapsed, 1e-9),
            "optimizer_steps": float(step),
        }
        last = epoch + 1 == recipe.train.epochs
        if rank == 0 and recipe.train.val_every and ((epoch + 1) % recipe.train.val_every == 0 or last):
            metrics.update({f"{k}": v for k, v in _validate(bare, recipe, val_split, device).items()})
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                from .evaluate import save_weights

                save_weights(Path(tmp) / "model.pt", bare.state_dict(), shown,
                             {"epoch": epoch + 1, "mlflow_run_id": config["run_id"], "metrics": metrics})
                torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                            "step": step}, Path(tmp) / "train_state.pt")
                (Path(tmp) / "history.json").write_text(json.dumps(history))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                tracking.log_metrics(config["mlflow_uri"], config["run_id"], metrics, step=epoch + 1)
            ray.train.report(metrics, checkpoint=ckpt)


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


def _validate(model, recipe: Recipe, split: PreparedSplit, device) -> dict[str, float]:
    from .evaluate import run_evaluation

    metrics = run_evaluation(model, recipe, split, device=device, out_dir=None, progress=False, num_vis=0)
    return {k: v for k, v in metrics.items() if k not in ("eval_persons",)}


__all__ = ["TrainResult", "train", "train_loop_per_worker", "default_run_name", "config_hash", "lr_at",
           "build_optimizer", "load_pretrained_backbone", "write_history_csv", "DataError"]
