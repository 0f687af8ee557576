"""Ray Data streaming ingest for top-down pose training.

``samples.parquet`` (one row per person, see :mod:`pipelines.prepare`) -> ``random_shuffle`` (of the small rows,
each epoch) -> ``map_batches(topdown_batch)``: decode the image, draw the augmentation (scale, rotation, flip,
half body), warp the crop and encode the heatmap targets -> batches of ``image`` float32 ``[B, 3, H, W]``,
``target`` float32 ``[B, K, h, w]``, ``target_weight`` float32 ``[B, K, 1]``.

The heavy work runs in Ray Data tasks, which Ray schedules on any node with free CPUs, so CPU-only nodes can feed
GPU training workers; the training workers only iterate their shard (``ray.train.get_dataset_shard("train")``).
Augmentation randomness comes from fresh OS entropy per batch (a new draw every epoch); model initialisation and
anything else in the workers is seeded from ``train.seed``.
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

    @classmethod
    def from_recipe(cls, recipe: Recipe, split: PreparedSplit, train: bool = True) -> "IngestConfig":
        a, d = recipe.augment, recipe.data
        return cls(
            image_root=str(split.image_root), dataset=d.dataset, num_joints=int(split.manifest["num_joints"]),
            input_size=(int(d.input_size[0]), int(d.input_size[1])),
            heatmap_size=(int(d.heatmap_size[0]), int(d.heatmap_size[1])), sigma=float(d.sigma), flip=a.flip,
            scale_factor=a.scale_factor, rotation_factor=a.rotation_factor, rotation_prob=a.rotation_prob,
            half_body_prob=a.half_body_prob, half_body_min_joints=a.half_body_min_joints, train=train,
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


def topdown_batch(batch, cfg: IngestConfig) -> dict[str, np.ndarray]:
    """``map_batches`` function: a pandas batch of sample rows -> numpy batch of network inputs and targets.

    Returns ``image`` float32 ``[B, 3, H, W]`` (normalised crops), ``target`` float32 ``[B, K, h, w]``,
    ``target_weight`` float32 ``[B, K, 1]``.

    Raises:
        hrnet_core.data.io.ImageReadError: an image is missing or corrupt (names the file).
    """
    from hrnet_core.data.io import read_image

    transform = _transform(cfg)
    rng = np.random.default_rng()
    images, targets, weights = [], [], []
    for row in batch.to_dict("records"):
        record = row_to_record(row, cfg)
        sample = transform(record, read_image(record["image_file"]), rng)
        images.append(sample["image"])
        targets.append(sample["target"])
        weights.append(sample["target_weight"])
    return {
        "image": np.stack(images).astype(np.float32, copy=False),
        "target": np.stack(targets).astype(np.float32, copy=False),
        "target_weight": np.stack(weights).astype(np.float32, copy=False),
    }


def build_train_dataset(recipe: Recipe, split: PreparedSplit, *, task_batch_size: int = 16,
                        cpus_per_task: float = 1.0, shuffle: bool = True):
    """The training :class:`ray.data.Dataset` (lazy; executed anew, reshuffled and re-augmented, every epoch).

    Args:
        recipe: resolved recipe (data geometry + augmentation).
        split: the prepared training split.
        task_batch_size: rows per ``map_batches`` call (one Ray Data task processes several such batches).
        cpus_per_task: CPUs reserved by each decode/augment task.
        shuffle: global shuffle of the sample rows before decoding (cheap: rows are small).

    Raises:
        pipelines.prepare.DataError: the split has no samples.
    """
    import ray.data

    from .prepare import DataError

    if int(split.manifest.get("num_samples", 0)) == 0:
        raise DataError(f"prepared split {str(split.dir)!r} has no training samples (people with labeled joints)")
    cfg = IngestConfig.from_recipe(recipe, split, train=True)
    ds = ray.data.read_parquet(str(split.samples_file))
    if shuffle:
        ds = ds.random_shuffle()
    return ds.map_batches(topdown_batch, fn_kwargs={"cfg": cfg}, batch_size=task_batch_size,
                          batch_format="pandas", num_cpus=cpus_per_task)
