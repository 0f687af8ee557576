"""Classification transforms (ImageNet / DeiT recipes): the seeded RandomResizedCrop parameters, timm's
AutoAugment / RandAugment / AugMix policies with a Pillow-safe posterize, and :class:`ClsSample`, the picklable
per-sample function of :func:`hrnet_core.tasks.classification.sample_transform` (Ray pickles it by this path).

Moved from ``hrnet_core/tasks/classification.py`` unchanged (issue 25); the task module still exports the names.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


def random_resized_crop_params(width: int, height: int, scale: Sequence[float], ratio: Sequence[float],
                               rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop: torchvision ``RandomResizedCrop.get_params`` (10 tries of an area
    fraction ~ U(scale) and a log-uniform aspect ratio, else the central crop clipped to ``ratio``), drawn from
    ``rng`` instead of torch's global generator."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, NumPy's global and torch's CPU generator with ``seed`` for the block, then restore
    them. timm's augmentations (RandAugment, RandomErasing, Mixup) draw from these global generators; seeding them
    from the sample's (or batch's) own generator keeps a sample a function of ``(row, recipe, seed, epoch, index)``
    without touching anyone else's random state."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _auto_augment(policy: str, input_size: Sequence[int], mean: Sequence[float], interpolation: str):
    """timm's AutoAugment / RandAugment / AugMix transform (PIL -> PIL) for ``policy``, with the hyper-parameters
    timm's ``create_transform`` gives it (translation 45 % of the crop side, fill = the mean colour, the recipe's
    interpolation).

    Raises:
        AssertionError / KeyError / ValueError (timm): not a policy string.
    """
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    params = {"translate_const": int(min(input_size) * 0.45),
              "img_mean": tuple(min(255, round(255 * m)) for m in mean),
              "interpolation": str_to_pil_interp(interpolation)}
    if policy.startswith("rand"):
        transform = rand_augment_transform(policy, params)
    elif policy.startswith("augmix"):
        transform = augment_and_mix_transform(policy, {**params, "translate_pct": 0.3})
    else:
        transform = auto_augment_transform(policy, params)
    ops = list(getattr(transform, "ops", [])) + [op for sub in getattr(transform, "policy", []) for op in sub]
    for op in ops:
        if getattr(op, "name", "").startswith("Posterize"):
            op.aug_fn = posterize_keeping_zero_bits
    return transform


def posterize_keeping_zero_bits(img, bits_to_keep: int, **kwargs):
    """timm's ``posterize`` op, where keeping 0 bits gives the black image the policy means ("keep 4 down to 0
    most significant bits": ``PosterizeIncreasing`` at magnitude 10, which ``rand-m9-mstd0.5`` draws in ~2 % of its
    ops) as Pillow < 10 did; current Pillow refuses ``bits < 1`` with a ValueError that would end a training run."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[name]


@dataclass(frozen=True)
class ClsSample:
    """The per-sample function of a recipe and split (picklable).

    ``__call__(row, rng)``: a ``samples.parquet`` row (``file_name``, ``label``) -> ``image`` float32 ``[3, H, W]``
    (normalised), ``label`` int64 scalar. Training (``rng`` given and ``train``): random resized crop + flip (+ the
    DeiT-style timm ``auto_augment`` policy and ``random_erasing`` when set, drawn under
    :func:`seeded_global_rngs` from ``rng``); else the centre crop of :meth:`eval_tensor`.

    Raises (on call):
        hrnet_core.data.io.ImageReadError: the image is missing or corrupt (names the file).
    """

    image_root: str
    input_size: tuple[int, int]  # (W, H)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int
    flip: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    train: bool = True
    interpolation: str = "bilinear"
    auto_augment: str | None = None
    random_erasing: float = 0.0
    random_erasing_mode: str = "pixel"

    @functools.cached_property
    def _policy(self):
        return _auto_augment(self.auto_augment, self.input_size, self.mean, self.interpolation)

    @functools.cached_property
    def _eraser(self):
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(self.random_erasing, mode=self.random_erasing_mode, max_count=1, device="cpu")

    def load(self, file_name: str):
        """The RGB ``PIL.Image`` of ``file_name`` (relative to the split's image folder)."""
        from hrnet_core.data.imagenet import read_rgb_pil

        return read_rgb_pil(Path(self.image_root) / file_name)

    def _finish(self, img) -> np.ndarray:
        import torchvision.transforms.functional as TF

        return TF.normalize(TF.to_tensor(img), list(self.mean), list(self.std)).numpy()

    def eval_tensor(self, img) -> np.ndarray:
        """``Resize(resize)`` (shorter side, ``interpolation``) + ``CenterCrop(H, W)`` + ``ToTensor`` +
        ``Normalize``: float32 ``[3, H, W]``."""
        import torchvision.transforms.functional as TF

        w, h = self.input_size
        img = TF.resize(img, self.resize, interpolation=_interpolation(self.interpolation), antialias=True)
        return self._finish(TF.center_crop(img, [h, w]))

    def train_tensor(self, img, rng: np.random.Generator) -> np.ndarray:
        """``RandomResizedCrop((H, W), crop_scale, crop_ratio)`` + ``RandomHorizontalFlip`` (+ ``auto_augment``) +
        ``ToTensor`` + ``Normalize`` (+ ``RandomErasing``), the randomness drawn from ``rng``: float32
        ``[3, H, W]``."""
        import torch
        import torchvision.transforms.functional as TF

        w, h = self.input_size
        top, left, ch, cw = random_resized_crop_params(img.width, img.height, self.crop_scale, self.crop_ratio, rng)
        img = TF.resized_crop(img, top, left, ch, cw, [h, w], interpolation=_interpolation(self.interpolation),
                              antialias=True)
        if self.flip and rng.random() < 0.5:
            img = TF.hflip(img)
        if self.auto_augment:
            with seeded_global_rngs(int(rng.integers(2**62))):
                img = self._policy(img)
        x = self._finish(img)
        if self.random_erasing > 0:
            with seeded_global_rngs(int(rng.integers(2**62))):
                x = self._eraser(torch.from_numpy(x)).numpy()
        return x

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        img = self.load(str(row["file_name"]))
        x = self.train_tensor(img, rng) if (self.train and rng is not None) else self.eval_tensor(img)
        return {"image": x.astype(np.float32, copy=False), "label": np.asarray(int(row["label"]), dtype=np.int64)}
