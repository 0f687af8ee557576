"""The task contract: what a task gives the generic pipeline (``pipelines/``, ``sweeps/``).

A task (top-down pose, segmentation, ...) is one :class:`Task` value, a frozen dataclass of plain data and
functions, defined in its own module ``hrnet_core/tasks/<task>.py`` and named in the literal dict of
``hrnet_core/tasks/__init__.py``. The pipeline never imports a task module directly; it reads ``recipe.task`` and
calls these pieces, in the data-flow order of a run::

    DatasetReader.read      raw split in an official layout -> PreparedRows      (hrnet data prepare)
    sample_transform        (row, rng) -> sample arrays (decode -> augment -> encode targets)   (Ray Data tasks)
    collate_fn              numpy batch of samples -> torch batch                 (iter_torch_batches)
    build_model, build_loss, train_step                                          (Ray Train worker loop)
    eval_items -> predict -> score (+ write predictions, draw)                    (validation, hrnet evaluate)
    sections                the recipe sections of the task (data / augment / test / train.loss dataclasses)
    generate                the synthetic default data (offline dvc repro, smoke runs)

Everything here is pure PyTorch / NumPy (no Ray, MLflow or DVC). See ``docs/TASKS.md`` for the data shapes and a
walk-through of adding a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from hrnet_core.data.prepared import PreparedSplit
    from hrnet_core.recipes import Recipe

__all__ = ["Task", "DatasetReader", "SourceFiles", "PreparedRows", "RecipeSections", "MetricSpec", "SyntheticData",
           "SplitPrep", "Predictions", "default_train_step", "tensor_collate", "image_batch_size", "build_zoo_model"]


@dataclass(frozen=True)
class SourceFiles:
    """Where one split of a raw dataset lives (absolute paths, resolved by ``hrnet data prepare``).

    Attributes:
        root: the source folder (official layout or local mirror).
        split: split name (``train2017``, ``valid``, ...).
        files: named inputs, e.g. ``{"annotations": .../person_keypoints_val2017.json, "images": .../val2017,
            "detections": ...}``; keys are the reader's :attr:`DatasetReader.inputs`, absent optional ones omitted.
    """

    root: Path
    split: str
    files: Mapping[str, Path]


@dataclass
class PreparedRows:
    """What a reader returns for one split: the tables and files ``hrnet data prepare`` writes.

    Attributes:
        images: one row per image: ``image_id`` int, ``file_name`` str (relative to ``image_root``), ``width``,
            ``height`` int (0 when unknown). Every listed image is decoded and checksummed by the prepare step.
        samples: one row per training sample, in the task's own columns (row ``i`` is sample index ``i``).
        image_root: absolute folder of the images.
        files: extra files copied into the split: ``{key: source path}``; stored as ``<key><suffix>`` and listed in
            ``manifest["files"]`` (read back with :meth:`PreparedSplit.file`).
        meta: task-specific manifest entries (JSON-serialisable), e.g. ``{"num_joints": 17}``.
    """

    images: "pd.DataFrame"
    samples: "pd.DataFrame"
    image_root: Path
    files: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetReader:
    """One official dataset layout a task accepts.

    Attributes:
        name: dataset name on the command line (``hrnet data prepare <name>``) and in ``data.dataset``.
        description: one line for ``hrnet tasks list``.
        inputs: ``{input key: help}`` of the files the reader takes (``annotations``, ``images``, ...); each can be
            given on the command line as ``--<key> PATH`` relative to the source.
        required: the input keys that must exist.
        default_layout: ``split -> {input key: path relative to the source}`` (the official layout).
        read: ``SourceFiles -> PreparedRows``; raises ``hrnet_core.data.prepared.DataError`` (or
            ``AnnotationError``) naming the file at fault.
        downloads: ``{split: [archive URL, ...]}`` fetched by ``--source official``.
    """

    name: str
    description: str
    inputs: Mapping[str, str]
    required: tuple[str, ...]
    default_layout: Callable[[str], Mapping[str, str]]
    read: Callable[[SourceFiles], PreparedRows]
    downloads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeSections:
    """The task's recipe schema: dataclasses of its recipe sections (unknown keys are errors naming the key).

    Attributes:
        data: subclass of :class:`hrnet_core.recipes.DataConfig` (``dataset, root, train_split, val_split,
            input_size`` plus the task's target geometry, e.g. ``heatmap_size``, ``sigma``).
        augment: training augmentation settings (``augment:``).
        test: test-procedure settings (``test:``).
        loss: loss settings (``train.loss:``).
    """

    data: type
    augment: type
    test: type
    loss: type


@dataclass(frozen=True)
class MetricSpec:
    """The evaluator's metrics.

    Attributes:
        primary: the metric a run is judged by (``AP``, ``mIoU``, ``NME``, ``top1``), in the papers' units.
        higher_is_better: direction of ``primary`` (Ray Tune ``mode``: ``max`` / ``min``).
        names: every metric the evaluator may return, in display order.
        units: one line on the units (percent, fraction of the normaliser, ...).
        by_dataset: the primary metric of datasets that report another one (MPII: ``PCKh``).
    """

    primary: str
    higher_is_better: bool
    names: tuple[str, ...]
    units: str = "percent"
    by_dataset: Mapping[str, str] = field(default_factory=dict)

    def primary_for(self, dataset: str) -> str:
        """The primary metric on ``dataset``."""
        return self.by_dataset.get(dataset, self.primary)


@dataclass(frozen=True)
class SplitPrep:
    """How ``dvc repro`` / a smoke run prepares one split of the generated data.

    Attributes:
        dataset: reader name.
        split: split name.
        inputs: reader inputs relative to the generated folder (``{"detections": "..."}``); others default.
    """

    dataset: str
    split: str
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticData:
    """The task's generated default data (offline, learnable by a smoke run).

    Attributes:
        generate: ``(out_dir, num_train, num_val, seed, progress) -> summary dict``; same seed, same bytes.
        splits: how each generated split is prepared (train first, then val).
        defaults: default ``num_train``, ``num_val`` of ``hrnet data generate``.
    """

    generate: Callable[..., dict[str, Any]]
    splits: tuple[SplitPrep, ...]
    defaults: Mapping[str, int] = field(default_factory=lambda: {"num_train": 200, "num_val": 20})


@dataclass
class Predictions:
    """What :attr:`Task.predict` returns for a list of eval items: one entry per item, in item order.

    ``values`` is task-defined (e.g. a ``[N, K, 3]`` keypoint array, a list of label maps); :func:`concat` of the
    task joins the shards predicted by several ranks.
    """

    values: Any


def tensor_collate(batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The ``collate_fn`` of tasks whose samples are fixed-size arrays: every column as a tensor ``[B, ...]``."""
    import torch

    return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in batch.items()}


def image_batch_size(batch: Mapping[str, Any]) -> int:
    """Samples in a batch with an ``image`` tensor (or list) ``[B, ...]``."""
    return int(len(batch["image"]))


def build_zoo_model(recipe) -> "torch.nn.Module":
    """The recipe's network from the model zoo (``model.name`` + its overrides); ``model.pretrained`` (ImageNet
    classification weights) initialises its backbone, the task head stays new.

    Raises:
        FileNotFoundError: ``model.pretrained`` missing. hrnet_core.models.CheckpointMismatchError: a backbone
        tensor missing from the file or of another shape (named).
    """
    from hrnet_core.models import build_model, load_pretrained_backbone

    model = build_model(recipe.model.name, **recipe.model.build_kwargs())
    if recipe.model.pretrained:
        load_pretrained_backbone(model, recipe.model.pretrained)
    return model


def default_train_step(model: "torch.nn.Module", batch: Mapping[str, Any], loss_fn: Callable) -> dict[str, "torch.Tensor"]:
    """``loss_fn(model(batch["image"]), batch)``: the training step of tasks whose network maps an image tensor to
    outputs and whose loss compares them with the batch targets. Returns the loss dict (``{"loss": total, ...}``)."""
    return loss_fn(model(batch["image"]), batch)


@dataclass(frozen=True)
class Task:
    """A task of the spine (module docstring). Every function is a module-level function of the task's module, so
    a :class:`Task` pickles by reference to Ray workers.

    Attributes:
        name: the ``task:`` value of recipes (one of :data:`hrnet_core.tasks.TASK_NAMES`).
        description: one line.
        datasets: readers by dataset name.
        sections: the recipe schema of the task.
        metrics: the evaluator's metrics.
        smoke_profile: profile name (``hrnet_core/recipes/profiles``) of a CPU smoke run of this task.
        default_recipe: the recipe ``dvc repro`` trains (with :attr:`smoke_profile`).
        synthetic: the generated default data.
        validate: ``recipe -> None``; cross-field checks of the task's sections (raise ``ConfigError`` naming the
            key).
        sample_transform: ``(recipe, split, train) -> fn(row, rng) -> {name: np.ndarray}``. ``row`` is a
            ``samples.parquet`` row (dict) for training, an eval item for evaluation; ``rng`` is
            :func:`hrnet_core.data.seeding.sample_rng` ``(train.seed, epoch, index)`` when training, None at eval.
            The returned function must be picklable (it runs in Ray Data tasks).
        collate_fn: ``{name: np.ndarray [B, ...]} -> {name: Tensor | list}`` (Ray Data ``iter_torch_batches``;
            default :func:`tensor_collate`). Variable-size samples arrive as object arrays and may become lists.
        batch_layout: ``{name: "dtype [shape]"}`` of the collated training batch (documentation and tests).
        batch_size: ``batch -> number of samples in it`` (default :func:`image_batch_size`).
        build_model: ``recipe -> nn.Module`` (default :func:`build_zoo_model`: zoo model + ``model.pretrained``).
        build_loss: ``recipe -> callable(outputs, batch) -> {"loss": total, ...parts}``.
        train_step: ``(model, batch, loss_fn) -> {"loss": total, ...}`` (default :func:`default_train_step`;
            detection models take targets and return their own loss dict).
        eval_items: ``(recipe, split) -> list`` of picklable items to predict (people, images, ...).
        predict: ``(model, items, recipe, split, device, progress) -> Predictions`` (model in eval mode, no grad).
        concat: ``[Predictions, ...] -> Predictions`` (shards in item order).
        score: ``(items, predictions, recipe, split, out_dir | None) -> metrics``; with ``out_dir`` also writes
            ``predictions.json`` in the dataset's official results format.
        draw: ``(items, predictions, recipe, split, out_dir, num_images) -> [image files]``: drawings for MLflow.
        iteration_schedule: True when the LR schedule of the task's recipes is per iteration (poly LR); the loop
            steps it per optimiser step either way, this only documents the default.
        decode_modules: modules that ``sample_transform``'s function imports when it first runs (lazily), beyond
            NumPy/OpenCV: the training ingest imports them in its decode worker processes while the model is built
            (``pipelines.ingest.warm_decode_workers``), not in the first epoch.
    """

    name: str
    description: str
    datasets: Mapping[str, DatasetReader]
    sections: RecipeSections
    metrics: MetricSpec
    smoke_profile: str
    default_recipe: str
    synthetic: SyntheticData
    validate: Callable[["Recipe"], None]
    sample_transform: Callable[["Recipe", "PreparedSplit", bool], Callable[[Mapping[str, Any], np.random.Generator | None], dict[str, np.ndarray]]]
    batch_layout: Mapping[str, str]
    build_loss: Callable[["Recipe"], Callable[..., dict[str, "torch.Tensor"]]]
    eval_items: Callable[["Recipe", "PreparedSplit"], Sequence[Any]]
    predict: Callable[..., Predictions]
    concat: Callable[[Sequence[Predictions]], Predictions]
    score: Callable[..., dict[str, float]]
    draw: Callable[..., list[Path]]
    collate_fn: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] = tensor_collate
    batch_size: Callable[[Mapping[str, Any]], int] = image_batch_size
    build_model: Callable[["Recipe"], "torch.nn.Module"] = build_zoo_model
    train_step: Callable[..., dict[str, "torch.Tensor"]] = default_train_step
    iteration_schedule: bool = False
    decode_modules: tuple[str, ...] = ()

    def dataset(self, name: str) -> DatasetReader:
        """The reader ``name``.

        Raises:
            KeyError: unknown dataset; the message lists this task's datasets.
        """
        if name not in self.datasets:
            raise KeyError(f"task {self.name!r} has no dataset {name!r}; its datasets: {', '.join(self.datasets)}")
        return self.datasets[name]
