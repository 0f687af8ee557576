"""Top-down samples: records (COCO / MPII) -> decoded image -> :class:`TopDownTransform` sample, over a record list
(:class:`TopDownDataset`) or a ``samples.parquet`` row (:class:`TopDownSample`, the ``pose_topdown`` task's per-sample
function; moved from ``hrnet_core/tasks/pose_topdown.py``, issue 25).

Each sample's randomness comes from ``numpy.random.default_rng([seed, epoch, index])``
(:mod:`hrnet_core.data.seeding`), so a sample is reproducible from ``(seed, epoch, index)`` whatever the number of
workers or their order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch.utils.data

from .io import read_image
from .keypoints import keypoint_spec
from .seeding import epoch_permutation, sample_rng
from .transforms import TopDownTransform, box_to_center_scale

__all__ = ["TopDownDataset", "TopDownSample", "epoch_permutation", "sample_rng"]


class TopDownDataset(torch.utils.data.Dataset):
    """Map-style dataset over person records.

    Args:
        records: list of record dicts (``CocoKeypoints.records`` / ``MpiiKeypoints.records``).
        transform: a :class:`~hrnet_core.data.transforms.TopDownTransform`.
        seed: base seed; call :meth:`set_epoch` each epoch for new augmentations.
        image_reader: ``path -> RGB uint8 [H, W, 3]`` (default :func:`~hrnet_core.data.io.read_image`).

    ``__getitem__(i)`` returns the transform's dict (numpy arrays; the default collate makes tensors) plus ``index``.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        transform: TopDownTransform,
        seed: int = 0,
        image_reader: Callable[[str], np.ndarray] = read_image,
    ) -> None:
        self.records = records
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.image_reader = image_reader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.image_reader(record["image_file"])
        sample = self.transform(record, image, sample_rng(self.seed, self.epoch, index))
        sample["index"] = int(index)
        return sample


@dataclass(frozen=True)
class TopDownSample:
    """The per-sample function of a recipe and split (picklable; builds its ``TopDownTransform`` on first use).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image`` float32 ``[3, H, W]``, ``target`` float32
    ``[K, h, w]``, ``target_weight`` float32 ``[K, 1]``. ``rng`` draws the augmentation (training).

    Raises (on call):
        hrnet_core.data.io.ImageReadError: the image is missing or corrupt (names the file).
    """

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

    @functools.cached_property
    def transform(self):
        """The :class:`~hrnet_core.data.transforms.TopDownTransform` of these settings (built on first use)."""
        spec = keypoint_spec(self.dataset, self.num_joints)
        return TopDownTransform(
            input_size=self.input_size, heatmap_size=self.heatmap_size, sigma=self.sigma, flip_pairs=spec.flip_pairs,
            train=self.train, scale_factor=self.scale_factor, rotation_factor=self.rotation_factor,
            rotation_prob=self.rotation_prob, flip=self.flip, half_body_prob=self.half_body_prob,
            num_joints_half_body=self.half_body_min_joints, upper_body_ids=spec.upper_body_ids)

    def record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row -> a reader-style record (absolute ``image_file``, center/scale for the crop).

        COCO rows carry the person box: center/scale are computed for the recipe's input aspect ratio (pixel_std
        200, padding 1.25, FACTS.md section 1). MPII rows carry the provided center/scale, used as they are.
        """
        joints = np.asarray(row["joints"], dtype=np.float64).reshape(self.num_joints, 3)
        center = row.get("center")
        if center is not None and not (isinstance(center, float) and center != center):
            center = np.asarray(center, dtype=np.float64)
            scale = np.asarray(row["scale"], dtype=np.float64)
        else:
            center, scale = box_to_center_scale(np.asarray(row["bbox"], dtype=np.float64),
                                                self.input_size[0] / self.input_size[1])
        return {"image_file": str(Path(self.image_root) / str(row["file_name"])), "image_id": int(row["image_id"]),
                "center": center, "scale": scale, "joints": joints, "score": 1.0}

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        record = self.record(row)
        s = self.transform(record, read_image(record["image_file"]), rng)
        return {"image": s["image"].astype(np.float32, copy=False), "target": s["target"].astype(np.float32, copy=False),
                "target_weight": s["target_weight"].astype(np.float32, copy=False)}
