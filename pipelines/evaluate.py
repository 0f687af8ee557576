"""Evaluation stage: batched inference on the val split -> metrics, predictions file, drawings, MLflow.

Generic over tasks: the recipe's task (:mod:`hrnet_core.tasks`) lists the items to predict (``eval_items``), runs
its test procedure (``predict``: e.g. the top-down flip test, or sliding-window segmentation), scores the predictions
in the papers' units and writes them in the dataset's official results format (``score``), and draws a few
(``draw``). This module adds the files, the untrained baseline and the MLflow logging.

Outputs in ``out_dir``: ``predictions.json``, ``metrics.json`` and ``vis/*.jpg``. Weights files written by training
(:func:`hrnet_core.weights.save_weights`) carry the recipe and the MLflow run id, so ``hrnet evaluate --checkpoint
models/<task>.pt`` needs nothing else. An officially released checkpoint carries no recipe: ``hrnet evaluate RECIPE
--checkpoint FILE`` loads it strictly into the recipe's model and records the evaluation as its own MLflow run tagged
``source=official-checkpoint`` (plus ``checkpoint.sha256``), so "their weights in our evaluator" sits beside "our
training" in the paper report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from hrnet_core.data.prepared import PreparedSplit, open_split
from hrnet_core.recipes import Recipe
from hrnet_core.weights import (SOURCE_OFFICIAL, SOURCE_TRAINING, WEIGHTS_FORMAT, CheckpointError, LoadedCheckpoint,
                                build_network, load_weights, open_checkpoint, save_weights)

__all__ = ["open_val_split", "run_evaluation", "evaluate_untrained", "evaluate", "log_evaluation", "CheckpointError",
           "LoadedCheckpoint", "open_checkpoint", "load_weights", "save_weights", "build_network", "WEIGHTS_FORMAT", "SOURCE_OFFICIAL",
           "SOURCE_TRAINING"]


def open_val_split(recipe: Recipe) -> PreparedSplit:
    """The prepared split ``data.root / data.val_split`` the recipe evaluates on.

    Raises:
        DataError: the split is missing; the message names ``data.val_split`` (and ``data.root``) with the splits
            that ``data.root`` holds, or says that ``data.root`` holds none (a split of another format or without
            images is named by :func:`hrnet_core.data.prepared.open_split`).
    """
    from hrnet_core.data.prepared import DataError

    root = Path(recipe.data.root).expanduser().resolve()
    want = root / recipe.data.val_split
    if not (want / "manifest.json").is_file():
        found = sorted(p.parent.name for p in root.glob("*/manifest.json")) if root.is_dir() else []
        if found:
            raise DataError(f"prepared split {str(want)!r} not found: data.val_split={recipe.data.val_split!r} names no "
                            f"split of data.root, which holds {', '.join(found)} (--set data.val_split=NAME, or "
                            f"--data SPLIT_DIR)")
        raise DataError(f"prepared split {str(want)!r} not found: data.root={str(recipe.data.root)!r} holds no "
                        f"prepared split; set data.root (or --data SPLIT_DIR) to the output of `hrnet data prepare` "
                        f"(data.val_split chooses the split)")
    return open_split(root, recipe.data.val_split)


def run_evaluation(model: torch.nn.Module, recipe: Recipe, split: PreparedSplit, *, device: torch.device | str = "cpu",
                   out_dir: str | Path | None = None, progress: bool = True,
                   num_vis: int | None = None) -> dict[str, float]:
    """Predict the val split with the task's test procedure and score it; with ``out_dir`` also write
    ``predictions.json``, ``metrics.json`` and ``vis/`` (``num_vis`` drawings, default ``test.num_vis_images``).
    The one evaluation loop of training-time validation too (:func:`hrnet_core.engine.evaluation.evaluate_split`).

    Returns:
        The task's metrics (:attr:`hrnet_core.tasks.Task.metrics`) plus ``eval_time_s``.
    """
    from hrnet_core.engine.evaluation import evaluate_split
    from hrnet_core.tasks import get_task

    n = getattr(recipe.test, "num_vis_images", 0) if num_vis is None else num_vis
    return evaluate_split(model, get_task(recipe.task), recipe, split, device=device, out_dir=out_dir,
                          progress=progress, num_vis=n if out_dir is not None else 0)


def evaluate_untrained(recipe: Recipe, *, out_dir: str | Path | None = None, device: str | None = None,
                       progress: bool = True) -> dict[str, float]:
    """Metrics of a freshly initialised model of the recipe (seed ``train.seed``): the no-learning baseline."""
    torch.manual_seed(recipe.train.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_network(recipe).to(dev)
    split = open_val_split(recipe)
    return run_evaluation(model, recipe, split, device=dev, out_dir=out_dir, progress=progress,
                          num_vis=None if out_dir is not None else 0)


def evaluate(recipe: Recipe | None, checkpoint: str, *, mlflow_uri: str | None, run_id: str | None,
             out_dir: str | Path, device: str | None = None, progress: bool = True,
             baseline: bool = False, experiment: str = "hrnet", into_training_run: bool = False) -> dict[str, float]:
    """Evaluate a checkpoint on the recipe's val split and log the results to MLflow.

    Args:
        recipe: resolved recipe; ``None`` uses the recipe stored in our weights file (an official checkpoint needs
            one).
        checkpoint: weights file of :func:`save_weights`, a Ray Train checkpoint directory, or an official ``.pth``
            (:func:`open_checkpoint`).
        mlflow_uri: tracking URI (``None``: default ``sqlite:///mlflow.db``).
        run_id: MLflow run to log into. ``None``: a new run in ``experiment`` -- for our weights tagged
            ``source=evaluation`` and ``eval.training_run_id`` (the training run recorded in the file), for an official
            checkpoint ``source=official-checkpoint``. ``""`` skips MLflow.
        out_dir: where ``predictions.json``, ``metrics.json`` and ``vis/`` go.
        device: ``cuda`` / ``cpu``; default CUDA when available.
        baseline: also score a freshly initialised model (:func:`evaluate_untrained`), reported as
            ``untrained/<metric>``.
        experiment: MLflow experiment of a new run.
        into_training_run: log our weights' evaluation into their training run instead (the pipeline's evaluate
            stage: the final metrics of the run that trained them).

    Returns:
        The metrics of :func:`run_evaluation` (plus ``untrained/*`` with ``baseline``).

    Raises:
        CheckpointError: bad checkpoint; pipelines.prepare.DataError: missing prepared data;
        hrnet_core.models.CheckpointMismatchError: weights of another architecture than the recipe's model.
    """
    loaded = open_checkpoint(checkpoint, recipe)
    recipe = loaded.recipe
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = loaded.model.to(dev)
    split = open_val_split(recipe)
    out = Path(out_dir).resolve()
    metrics = run_evaluation(model, recipe, split, device=dev, out_dir=out, progress=progress)
    if baseline:
        base = evaluate_untrained(recipe, device=str(dev), progress=progress)
        metrics.update({f"untrained/{k}": v for k, v in base.items() if not k.startswith("eval_")})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if run_id == "":
        return metrics
    if run_id is None and loaded.source == SOURCE_TRAINING and into_training_run:
        run_id = loaded.meta.get("mlflow_run_id")
        if not run_id:
            return metrics
    log_evaluation(loaded, split, metrics, out, mlflow_uri=mlflow_uri, run_id=run_id, experiment=experiment)
    return metrics


def log_evaluation(loaded: LoadedCheckpoint, split: PreparedSplit, metrics: dict[str, float], out: Path, *,
                   mlflow_uri: str | None, run_id: str | None, experiment: str = "hrnet") -> str:
    """Log an evaluation to MLflow: metrics, ``eval.*`` tags, predictions/metrics/vis artifacts, and the paper
    comparison (``paper/<m>``, ``delta/<m>``). ``run_id=None`` creates a run (official checkpoints: tags ``recipe``,
    ``paper.*``, ``source=official-checkpoint``, ``checkpoint.sha256``; params: the recipe) and finishes it.

    Returns:
        The run id logged into.
    """
    from . import mlflow_runs

    recipe = loaded.recipe
    uri = mlflow_runs.resolve_tracking_uri(mlflow_uri)
    created = run_id is None
    if created:
        # an ad-hoc evaluation of our weights is its own run, linked to the training run; the paper report counts
        # only training and official-checkpoint runs
        source = "evaluation" if loaded.source == SOURCE_TRAINING else loaded.source
        tags = {**mlflow_runs.recipe_tags(recipe), "source": source, "git_commit": mlflow_runs.git_commit(),
                "dataset_fingerprint": split.fingerprint, "checkpoint.sha256": loaded.meta.get("sha256"),
                "eval.training_run_id": loaded.meta.get("mlflow_run_id")}
        run_id = mlflow_runs.create_run(uri, experiment, f"{source}-{recipe.name}-{loaded.path.stem}", tags)
        mlflow_runs.log_params(uri, run_id, recipe.flat(), on_change="tag")
    step = int(loaded.meta.get("epoch", 0))
    mlflow_runs.log_metrics(uri, run_id, metrics, step=step)
    test_settings = {f"eval.test.{k}": v for k, v in dataclasses.asdict(recipe.test).items()}
    mlflow_runs.set_tags(uri, run_id, {"eval.checkpoint": str(loaded.path.resolve()), **test_settings,
                                    # what decides the numbers; in a training run beside the training's env.*
                                    **{(k if created else f"eval.{k}"): v
                                       for k, v in mlflow_runs.environment_tags().items()},
                                    "eval.dataset_fingerprint": split.fingerprint[:16],
                                    # a profile (e.g. smoke) changes the recipe: paper/ and delta/ are context only
                                    "paper.comparable": str(recipe.profile is None).lower()})
    mlflow_runs.log_artifacts(uri, run_id, [out / "predictions.json", out / "metrics.json"], artifact_path="evaluation")
    if (out / "vis").is_dir():
        mlflow_runs.log_artifacts(uri, run_id, [out / "vis"], artifact_path="evaluation/vis")
    mlflow_runs.log_paper_comparison(run_id, recipe.name, metrics, tracking_uri=uri)
    if created:
        mlflow_runs.end_run(uri, run_id)
    return run_id
