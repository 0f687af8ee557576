"""Top-down sample dataset: records (COCO / MPII) -> decoded image -> :class:`TopDownTransform` sample.

Each sample's randomness comes from ``numpy.random.default_rng([seed, epoch, index])``
(:mod:`hrnet_core.data.seeding`), so a sample is reproducible from ``(seed, epoch, index)`` whatever the number of
workers or their order.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch.utils.data

from .io import read_image
from .seeding import epoch_permutation, sample_rng
from .transforms import TopDownTransform

__all__ = ["TopDownDataset", "epoch_permutation", "sample_rng"]


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
