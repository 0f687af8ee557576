"""The task contract: what a task gives the generic pipeline (``pipelines/``, ``sweeps/``).

A task (top-down pose, segmentation, ...) is one :class:`Task` value, a frozen dataclass of plain data and
functions, defined in its own module ``hrnet_core/tasks/<task>.py`` and named in the literal dict of
``hrnet_core/tasks/__init__.py``. The pipeline never imports a task module directly; it reads ``recipe.task`` and
calls these pieces, in the data-flow order of a run::

    DatasetReader.read      raw split in an official layout -> PreparedRows      (hrnet data prepare)
    sample_transform        (row, rng) -> sample arrays (decode -> augment -> encode targets)   (Ray Data tasks)
    collate_fn              numpy batch of samples -> torch batch                 (iter_torch_batches)
    build_model, train_step(recipe) -> step(model, batch) -> loss dict           (Ray Train worker loop)
    eval_items -> predictor (per batch) -> concat -> score (+ write predictions, draw)
                            (hrnet_core.engine.evaluation: validation, hrnet evaluate, hrnet predict)
    sections                the recipe sections of the task (data / augment / test / train.loss dataclasses)
    synthetic               the synthetic default data (offline dvc repro, smoke runs)

Run defaults (the recipe and profile ``dvc repro`` trains, the generated data's size) live in ``params.yaml`` alone.

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
           "SplitPrep", "Predictions", "BatchPredictor", "LossStep", "tensor_collate", "batch_size", "build_zoo_model"]


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
        generate: ``(out_dir, num_train, num_val, seed, progress) -> summary dict``; same seed, same bytes. The sizes
            ``dvc repro`` generates are ``params.yaml`` ``tasks.<task>.generate``.
        splits: how each generated split is prepared (train first, then val).
    """

    generate: Callable[..., dict[str, Any]]
    splits: tuple[SplitPrep, ...]


@dataclass
class Predictions:
    """What a :class:`BatchPredictor` returns for a batch of eval items: one entry per item, in item order.

    ``values`` is task-defined (e.g. a ``[N, K, 3]`` keypoint array, a list of label maps); :attr:`Task.concat`
    joins the batches and the shards predicted by several ranks.
    """

    values: Any


@dataclass(frozen=True)
class BatchPredictor:
    """A task's test procedure cut into batches: what :attr:`Task.predictor` returns and the spine's one evaluation
    loop (:func:`hrnet_core.engine.evaluation.predict_items`) runs, in eval mode without gradients.

    Attributes:
        run: one batch (``load``'s output, or the list of items without ``load``) -> :class:`Predictions` of its items,
            in item order.
        batch_size: items per batch (the recipe's ``test.batch_size``, or 1 for per-image procedures).
        load: optional ``items -> inputs`` (decode, crop, normalise): the loop runs it ``prefetch`` batches ahead in
            background threads while ``run`` computes.
        prefetch: batches decoded ahead (threads) when ``load`` is set.
        cpu_threads: torch intra-op threads on a CPU while predicting (0: unchanged); restored afterwards.
        unit, desc: the progress bar's unit (``person``, ``image``) and label.
    """

    run: Callable[[Any], Predictions]
    batch_size: int = 1
    load: Callable[[Sequence[Any]], Any] | None = None
    prefetch: int = 1
    cpu_threads: int = 0
    unit: str = "item"
    desc: str = "evaluate"


def tensor_collate(batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The ``collate_fn`` of tasks whose samples are fixed-size arrays: every column as a tensor ``[B, ...]``."""
    import torch

    return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in batch.items()}


def batch_size(batch: Mapping[str, Any]) -> int:
    """Samples in a collated training batch: the length of its ``index`` column (int64 ``[B]``, the samples' rows
    in ``samples.parquet``, added by ``pipelines.ingest.encode_batch``; every ``collate_fn`` keeps it).

    Raises:
        KeyError: the batch has no ``index`` (a ``collate_fn`` that drops it).
    """
    return int(len(batch["index"]))


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


@dataclass(frozen=True)
class LossStep:
    """The training step of a network that maps ``batch["image"]`` to outputs which ``loss`` compares with the
    batch's targets: ``step(model, batch) = loss(model(batch["image"]), batch)``, the torchvision-style loss dict
    ``{"loss": total (the tensor to backpropagate), ...parts}``.

    Attributes:
        loss: ``(outputs, batch) -> {"loss": Tensor [], ...}`` (a picklable loss object of the task).
    """

    loss: Callable[..., dict[str, "torch.Tensor"]]

    def __call__(self, model: "torch.nn.Module", batch: Mapping[str, Any]) -> dict[str, "torch.Tensor"]:
        """The loss dict of one batch (the model in train mode, gradients on)."""
        return self.loss(model(batch["image"]), batch)


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
        synthetic: the generated default data.
        validate: ``recipe -> None``; cross-field checks of the task's sections (raise ``ConfigError`` naming the
            key).
        sample_transform: ``(recipe, split, train) -> fn(row, rng) -> {name: np.ndarray}``. ``row`` is a
            ``samples.parquet`` row (dict) for training, an eval item for evaluation; ``rng`` is
            :func:`hrnet_core.data.seeding.sample_rng` ``(train.seed, epoch, index)`` when training, None at eval.
            The returned function must be picklable (it runs in Ray Data tasks).
        collate_fn: ``{name: np.ndarray [B, ...]} -> {name: Tensor | list}`` (Ray Data ``iter_torch_batches``;
            default :func:`tensor_collate`). Variable-size samples arrive as object arrays and may become lists; the
            ``index`` column is kept (:func:`batch_size`).
        build_model: ``recipe -> nn.Module`` (default :func:`build_zoo_model`: zoo model + ``model.pretrained``).
        train_step: ``recipe -> step``, built once per run; ``step(model, batch) -> {"loss": total, ...parts}`` (a
            :class:`LossStep` for image -> outputs -> loss tasks; detectors take the targets and return their own
            loss dict).
        eval_items: ``(recipe, split) -> list`` of picklable items to predict (people, images, sequences, ...).
        predictor: ``(model, recipe, split, device) -> BatchPredictor``: the test procedure per batch of items
            (the spine's loop, :mod:`hrnet_core.engine.evaluation`, sets eval mode and no grad and walks the items).
        concat: ``[Predictions, ...] -> Predictions`` (batches and shards in item order).
        score: ``(items, predictions, recipe, split, out_dir | None) -> metrics``; with ``out_dir`` also writes
            ``predictions.json`` in the dataset's official results format.
        draw: ``(items, predictions, recipe, split, out_dir, num_images) -> [image files]``: drawings for MLflow.
        decode_modules: modules that ``sample_transform``'s function imports when it first runs (lazily), beyond
            NumPy/OpenCV: the training ingest imports them in its decode worker processes while the model is built
            (``pipelines.ingest.warm_decode_workers``), not in the first epoch.
    """

    name: str
    description: str
    datasets: Mapping[str, DatasetReader]
    sections: RecipeSections
    metrics: MetricSpec
    synthetic: SyntheticData
    validate: Callable[["Recipe"], None]
    sample_transform: Callable[["Recipe", "PreparedSplit", bool], Callable[[Mapping[str, Any], np.random.Generator | None], dict[str, np.ndarray]]]
    train_step: Callable[["Recipe"], Callable[["torch.nn.Module", Mapping[str, Any]], dict[str, "torch.Tensor"]]]
    eval_items: Callable[["Recipe", "PreparedSplit"], Sequence[Any]]
    predictor: Callable[..., BatchPredictor]
    concat: Callable[[Sequence[Predictions]], Predictions]
    score: Callable[..., dict[str, float]]
    draw: Callable[..., list[Path]]
    collate_fn: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] = tensor_collate
    build_model: Callable[["Recipe"], "torch.nn.Module"] = build_zoo_model
    decode_modules: tuple[str, ...] = ()

    def dataset(self, name: str) -> DatasetReader:
        """The reader ``name``.

        Raises:
            KeyError: unknown dataset; the message lists this task's datasets.
        """
        if name not in self.datasets:
            raise KeyError(f"task {self.name!r} has no dataset {name!r}; its datasets: {', '.join(self.datasets)}")
        return self.datasets[name]
