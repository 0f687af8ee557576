"""Ray Data streaming ingest for top-down pose training, with seeded augmentation.

``samples.parquet`` (one row per person, see :mod:`pipelines.prepare`; row ``i`` is sample ``index`` ``i``) ->
stamp each row with the current ``epoch`` and its rank in the epoch's order -> ``sort`` by that rank (the
epoch's shuffle: :func:`~hrnet_core.data.topdown.epoch_permutation` of ``(train.seed, epoch)``) ->
``map_batches(topdown_batch)``: decode the image, draw the augmentation (scale, rotation, flip, half body) from
:func:`~hrnet_core.data.topdown.sample_rng` ``(train.seed, epoch, index)``, warp the crop and encode the heatmap
targets -> batches of ``image`` float32 ``[B, 3, H, W]``, ``target`` float32 ``[B, K, h, w]``, ``target_weight``
float32 ``[B, K, 1]``, ``index`` int64 ``[B]``, ``epoch`` int64 ``[B]``.

Reproducibility: every sample's crop and targets are a function of ``(train.seed, epoch, index)`` only (not of the
worker, the task or the batch it lands in), and the epoch's sample order is a permutation fixed by
``(train.seed, epoch)``; a new epoch gives new augmentations and a new order. Which training worker receives which
rows (Ray Data's ``streaming_split`` hands blocks to whichever worker asks first) and, without
``ExecutionOptions(preserve_order=True)``, the order in which finished blocks arrive, still depend on timing.

How the epoch reaches the tasks: Ray Train executes the dataset anew every epoch, after all training workers have
started iterating (``streaming_split`` barrier). The driver creates an :func:`epoch_clock` actor and passes it to
:func:`build_train_dataset` and to the workers, which call :func:`set_epoch` before iterating each epoch; the
stamping tasks read it. ``build_train_dataset(..., epoch=3)`` instead builds the dataset of one fixed epoch.

The heavy work runs in Ray Data tasks, which Ray schedules on any node with free CPUs, so CPU-only nodes can feed
GPU training workers; the training workers only iterate their shard (``ray.train.get_dataset_shard("train")``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrnet_core.recipes import Recipe

from .prepare import PreparedSplit


@dataclass(frozen=True)
class IngestConfig:
    """What a Ray Data task needs to turn sample rows into network inputs (plain data, pickled to the tasks)."""

    image_root: str
    dataset: str
    num_joints: int
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float
    flip: bool
    scale_factor: float
    rotation_factor: float
    rotation_prob: float
    half_body_prob: float
    half_body_min_joints: int
    train: bool = True
    seed: int = 0

    @classmethod
    def from_recipe(cls, recipe: Recipe, split: PreparedSplit, train: bool = True) -> "IngestConfig":
        """The ingest settings of ``recipe`` (data geometry, augmentation, ``train.seed``) for ``split``."""
        a, d = recipe.augment, recipe.data
        return cls(
            image_root=str(split.image_root), dataset=d.dataset, num_joints=int(split.manifest["num_joints"]),
            input_size=(int(d.input_size[0]), int(d.input_size[1])),
            heatmap_size=(int(d.heatmap_size[0]), int(d.heatmap_size[1])), sigma=float(d.sigma), flip=a.flip,
            scale_factor=a.scale_factor, rotation_factor=a.rotation_factor, rotation_prob=a.rotation_prob,
            half_body_prob=a.half_body_prob, half_body_min_joints=a.half_body_min_joints, train=train,
            seed=int(recipe.train.seed),
        )


def keypoint_spec(dataset: str, num_joints: int):
    """The :class:`~hrnet_core.data.keypoints.KeypointSpec` of a dataset (COCO / CrowdPose by joint count, MPII)."""
    from hrnet_core.data.keypoints import COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS, MPII_KEYPOINTS

    if dataset == "mpii":
        return MPII_KEYPOINTS
    for spec in (COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS):
        if spec.num_joints == num_joints:
            return spec
    raise ValueError(f"no keypoint layout with {num_joints} joints for dataset {dataset!r}")


def row_to_record(row: dict[str, Any], cfg: IngestConfig) -> dict[str, Any]:
    """One ``samples.parquet`` row -> a reader-style record (absolute ``image_file``, center/scale for the crop).

    COCO rows carry the person box: center/scale are computed for the recipe's input aspect ratio (pixel_std 200,
    padding 1.25, FACTS.md section 1). MPII rows carry the provided center/scale, used as they are.
    """
    from hrnet_core.data.transforms import box_to_center_scale

    joints = np.asarray(row["joints"], dtype=np.float64).reshape(cfg.num_joints, 3)
    if row.get("center") is not None and not _is_nan(row.get("center")):
        center = np.asarray(row["center"], dtype=np.float64)
        scale = np.asarray(row["scale"], dtype=np.float64)
    else:
        center, scale = box_to_center_scale(np.asarray(row["bbox"], dtype=np.float64),
                                            cfg.input_size[0] / cfg.input_size[1])
    return {
        "image_file": str(Path(cfg.image_root) / str(row["file_name"])),
        "image_id": int(row["image_id"]),
        "center": center,
        "scale": scale,
        "joints": joints,
        "score": 1.0,
    }


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


@functools.lru_cache(maxsize=4)
def _transform(cfg: IngestConfig):
    from hrnet_core.data.transforms import TopDownTransform

    spec = keypoint_spec(cfg.dataset, cfg.num_joints)
    return TopDownTransform(
        input_size=cfg.input_size, heatmap_size=cfg.heatmap_size, sigma=cfg.sigma, flip_pairs=spec.flip_pairs,
        train=cfg.train, scale_factor=cfg.scale_factor, rotation_factor=cfg.rotation_factor,
        rotation_prob=cfg.rotation_prob, flip=cfg.flip, half_body_prob=cfg.half_body_prob,
        num_joints_half_body=cfg.half_body_min_joints, upper_body_ids=spec.upper_body_ids,
    )


def topdown_batch(batch, cfg: IngestConfig, epoch: int = 0) -> dict[str, np.ndarray]:
    """``map_batches`` function: a pandas batch of sample rows -> numpy batch of network inputs and targets.

    Args:
        batch: ``pandas.DataFrame`` of ``samples.parquet`` rows plus an ``index`` column (the sample's row in the
            split, see :func:`samples_table`; required with ``cfg.train``) and optionally an ``epoch`` column.
        cfg: ingest settings; with ``cfg.train`` each sample's augmentation is drawn from
            ``sample_rng(cfg.seed, epoch, index)``.
        epoch: 0-based epoch of rows without an ``epoch`` column.

    Returns:
        ``image`` float32 ``[B, 3, H, W]`` (normalised crops), ``target`` float32 ``[B, K, h, w]``,
        ``target_weight`` float32 ``[B, K, 1]``, ``index`` int64 ``[B]``, ``epoch`` int64 ``[B]``.

    Raises:
        ValueError: ``cfg.train`` and the batch has no ``index`` column.
        hrnet_core.data.io.ImageReadError: an image is missing or corrupt (names the file).
    """
    from hrnet_core.data.io import read_image
    from hrnet_core.data.topdown import sample_rng

    if cfg.train and "index" not in batch.columns:
        raise ValueError("topdown_batch: training rows need an 'index' column (the sample's row in samples.parquet, "
                         "added by pipelines.ingest.samples_table) to seed their augmentation")
    transform = _transform(cfg)
    n = len(batch)
    indices = batch["index"].to_numpy(np.int64) if "index" in batch.columns else np.full(n, -1, np.int64)
    epochs = batch["epoch"].to_numpy(np.int64) if "epoch" in batch.columns else np.full(n, int(epoch), np.int64)
    images, targets, weights = [], [], []
    for row, index, ep in zip(batch.to_dict("records"), indices, epochs):
        record = row_to_record(row, cfg)
        rng = sample_rng(cfg.seed, ep, index) if cfg.train else None
        sample = transform(record, read_image(record["image_file"]), rng)
        images.append(sample["image"])
        targets.append(sample["target"])
        weights.append(sample["target_weight"])
    return {
        "image": np.stack(images).astype(np.float32, copy=False),
        "target": np.stack(targets).astype(np.float32, copy=False),
        "target_weight": np.stack(weights).astype(np.float32, copy=False),
        "index": indices,
        "epoch": epochs,
    }


# ------------------------------------------------------------------------------------------------ epoch clock


class EpochClock:
    """The current epoch of a training run (a Ray actor made by :func:`epoch_clock`).

    Written by the training workers (:func:`set_epoch`, before they iterate an epoch) and read by the ingest's
    stamping tasks.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._epoch = int(epoch)

    def set(self, epoch: int) -> int:
        self._epoch = int(epoch)
        return self._epoch

    def get(self) -> int:
        return self._epoch


def epoch_clock(epoch: int = 0):
    """A new :class:`EpochClock` actor (no CPU reserved); returns its ``ActorHandle``. Needs ``ray.init``."""
    import ray

    return ray.remote(EpochClock).options(num_cpus=0).remote(int(epoch))


def set_epoch(clock, epoch: int) -> None:
    """Set ``clock`` (an :func:`epoch_clock` handle) to ``epoch`` (0-based) and wait until it is set."""
    import ray

    ray.get(clock.set.remote(int(epoch)))


def _current_epoch(epoch) -> int:
    if isinstance(epoch, (int, np.integer)):
        return int(epoch)
    import ray

    return int(ray.get(epoch.get.remote()))


@functools.lru_cache(maxsize=2)
def _epoch_ranks(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """``ranks[index]``: position of sample ``index`` in the epoch's order (inverse of the epoch permutation)."""
    from hrnet_core.data.topdown import epoch_permutation

    perm = epoch_permutation(seed, epoch, num_samples)
    ranks = np.empty(num_samples, dtype=np.int64)
    ranks[perm] = np.arange(num_samples, dtype=np.int64)
    return ranks


def stamp_epoch(batch, epoch, seed: int, num_samples: int):
    """``map_batches`` function (pyarrow batches): add ``epoch`` and ``order`` (rank in the epoch's shuffle).

    ``epoch`` is an int or an :func:`epoch_clock` handle (read once per call).
    """
    import pyarrow as pa

    ep = _current_epoch(epoch)
    index = batch.column("index").to_numpy().astype(np.int64, copy=False)
    order = _epoch_ranks(int(seed), ep, int(num_samples))[index]
    batch = batch.append_column("epoch", pa.array(np.full(len(index), ep, dtype=np.int64)))
    return batch.append_column("order", pa.array(order))


# ------------------------------------------------------------------------------------------------ dataset


def samples_table(split: PreparedSplit):
    """``samples.parquet`` of ``split`` as a ``pyarrow.Table`` with an int64 ``index`` column (row number)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(split.samples_file)
    return table.append_column("index", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def build_train_dataset(recipe: Recipe, split: PreparedSplit, *, epoch=0, task_batch_size: int = 16,
                        cpus_per_task: float = 1.0, shuffle: bool = True, rows_per_block: int = 1024):
    """The training :class:`ray.data.Dataset` (lazy; executed anew, reshuffled and re-augmented, every epoch).

    Args:
        recipe: resolved recipe (data geometry, augmentation, ``train.seed``).
        split: the prepared training split.
        epoch: 0-based epoch (int: a dataset of that epoch) or an :func:`epoch_clock` handle read at every
            execution (Ray Train: the workers :func:`set_epoch` before iterating).
        task_batch_size: rows per ``topdown_batch`` call (one Ray Data task processes several such batches).
        cpus_per_task: CPUs reserved by each decode/augment task.
        shuffle: order the epoch by :func:`~hrnet_core.data.topdown.epoch_permutation` ``(train.seed, epoch)``
            (a sort of the small rows); otherwise split order.
        rows_per_block: sample rows per input block.

    Raises:
        pipelines.prepare.DataError: the split has no samples.
    """
    import ray.data

    from .prepare import DataError

    if int(split.manifest.get("num_samples", 0)) == 0:
        raise DataError(f"prepared split {str(split.dir)!r} has no training samples (people with labeled joints)")
    cfg = IngestConfig.from_recipe(recipe, split, train=True)
    table = samples_table(split)
    n = table.num_rows
    step = max(1, int(rows_per_block))
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, n, step)])
    ds = ds.map_batches(stamp_epoch, fn_kwargs={"epoch": epoch, "seed": cfg.seed, "num_samples": n},
                        batch_size=None, batch_format="pyarrow", num_cpus=min(1.0, cpus_per_task))
    if shuffle:
        ds = ds.sort("order")
    return ds.map_batches(topdown_batch, fn_kwargs={"cfg": cfg}, batch_size=task_batch_size,
                          batch_format="pandas", num_cpus=cpus_per_task)
