"""ImageNet classification (HRNet-W*-C, HRNetV2 paper appendix / TPAMI Table 14; FACTS.md section 5): the
``classification`` task.

One training sample is one image: decoded as RGB with PIL (the torchvision ``ImageFolder`` loader), cropped with
``RandomResizedCrop(data.input_size, augment.crop_scale, augment.crop_ratio)`` (``data.interpolation``,
antialiased), flipped with probability 0.5 and normalised with ``data.mean`` / ``data.std``. Evaluation:
``Resize(test.resize)`` (shorter side, antialiased) + ``CenterCrop(data.input_size)`` + normalisation, i.e.
torchvision's ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(mean, std)`` -- the transforms are
torchvision's functional ones; only the crop-parameter draw is re-implemented (torchvision's algorithm, drawn from the
sample's numpy generator so that a sample is a function of ``(row, recipe, seed, epoch, index)``).

The DeiT-style recipes of HRFormer (HRFormer paper Sec. 4.3) add timm's RandAugment and RandomErasing per sample and
timm's Mixup / CutMix per batch with a soft-target cross entropy (:class:`ClsAugment`); timm's global random draws
are seeded from the sample's / batch's own generator (:func:`seeded_global_rngs`).

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- reader ``imagenet``: an ``ImageFolder`` split (``<split>/<wnid>/*.JPEG``) or a flat folder + label file
  (``--labels``), class index = sorted folder names or the line order of ``--synsets`` (ImageNet-1k:
  ``n01440764`` -> 0; :mod:`hrnet_core.data.imagenet`); ``samples.parquet`` columns ``image_id``, ``file_name``
  (relative to the split's image folder), ``label``; manifest ``num_classes``, ``classes`` (wnids by index),
  ``class_names``;
- batch: ``image`` float32 ``[B, 3, H, W]``, ``label`` int64 ``[B]``, ``index`` int64 ``[B]``;
- loss: cross entropy (``train.loss.label_smoothing``), or soft-target cross entropy on Mixup / CutMix batches
  (:func:`train_step`), ``{"loss": total}``;
- test procedure: single centre crop; predictions are the ``test.topk`` best classes with softmax probabilities;
  metrics ``top1``, ``top5`` in percent; ``predictions.json`` (per image: file name, label, top-k indices and scores)
  and ``confusion.json`` (most confused class pairs);
- drawings: the image with its top-1 class and probability (green when right, red when wrong);
- synthetic default: six classes of generated textures (:func:`generate`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: classes of the zoo's classification heads unless ``model.num_classes`` says otherwise
DEFAULT_NUM_CLASSES = 1000

# ------------------------------------------------------------------------------------------------ recipe sections


INTERPOLATIONS = ("bilinear", "bicubic")
MIXUP_MODES = ("batch", "pair", "elem")


@dataclass
class ClsData(DataConfig):
    """``data:`` of a classification recipe: the shared keys (``input_size`` is the crop ``[W, H]``, 224x224 for
    ImageNet) plus the normalisation, per RGB channel on ``[0, 1]`` pixel values (torchvision ``Normalize``), and the
    ``interpolation`` of the random resized crop and of the test resize (``bilinear``: HRNet-C, torchvision's
    default; ``bicubic``: the DeiT / Swin recipes HRFormer trains with)."""

    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    interpolation: str = "bilinear"


@dataclass
class ClsAugment:
    """``augment:``.

    HRNet-C (torchvision): ``RandomResizedCrop`` area fraction ``crop_scale`` ``[min, max]`` of the image and aspect
    ratio ``crop_ratio`` ``[min, max]`` (w / h; torchvision defaults ``[0.08, 1]``, ``[3/4, 4/3]``), horizontal
    ``flip`` with probability 0.5.

    DeiT-style additions (HRFormer ImageNet recipes; timm's implementations, :mod:`timm.data`), all off by default:

    - ``auto_augment``: a timm policy string applied after crop and flip, e.g. ``rand-m9-mstd0.5-inc1``
      (RandAugment, magnitude 9, magnitude std 0.5, increasing severity), ``augmix-m5-w3``, ``original``; None = off;
    - ``random_erasing``: probability of timm's ``RandomErasing`` on the normalised crop (``random_erasing_mode``
      ``pixel``: per-pixel normal noise, one box);
    - ``mixup_alpha`` / ``cutmix_alpha``: Beta parameters of timm's ``Mixup`` on the training batch (0 = that one off;
      both > 0: CutMix with probability ``mixup_switch_prob``), applied with probability ``mixup_prob``, per
      ``mixup_mode`` (``batch``: one lambda per batch); the loss becomes soft-target cross entropy with
      ``train.loss.label_smoothing`` folded into the mixed targets.
    """

    flip: bool = True
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    auto_augment: str | None = None
    random_erasing: float = 0.0
    random_erasing_mode: str = "pixel"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"

    @property
    def mixes(self) -> bool:
        """True when Mixup or CutMix is on."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mixup_prob > 0


@dataclass
class ClsTest:
    """``test:``: the single centre crop: the shorter side is resized to ``resize`` px, then the centre
    ``data.input_size`` crop is taken (ImageNet 256 -> 224). ``topk``: classes kept per image in the predictions
    (at least 5 for top-5); ``batch_size`` images per forward pass; ``num_vis_images`` drawings."""

    resize: int = 256
    topk: int = 5
    batch_size: int = 100
    num_vis_images: int = 8


@dataclass
class ClsLoss:
    """``train.loss:``: cross entropy with ``label_smoothing`` in ``[0, 1)`` (torch ``cross_entropy``; 0 = plain CE,
    the HRNet-C recipe; 0.1 in DeiT-style recipes)."""

    label_smoothing: float = 0.0


def num_classes(recipe) -> int:
    """Classes of the recipe's network (``model.num_classes``, else the zoo default 1000)."""
    return int(recipe.model.num_classes or DEFAULT_NUM_CLASSES)


def validate(recipe) -> None:
    """Cross-field checks of a classification recipe.

    Raises:
        ConfigError: naming the key: a zoo model without a classification head, ``model.num_classes < 1``, crop
        scale / ratio ranges, a test resize smaller than the crop, normalisation lists, label smoothing, top-k.
    """

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    check_zoo_model(recipe.model)
    need(recipe.model.name.startswith("cls_"), "model.name",
         f"{recipe.model.name!r} has no classification head; use a cls_* model (hrnet models list)")
    need(recipe.model.num_classes is None or recipe.model.num_classes >= 1, "model.num_classes", "must be >= 1")
    d, a, t = recipe.data, recipe.augment, recipe.test
    need(len(d.mean) == 3 and len(d.std) == 3, "data.mean", "data.mean and data.std need 3 values (R, G, B)")
    need(all(s > 0 for s in d.std), "data.std", "must be > 0")
    s = a.crop_scale
    need(len(s) == 2 and 0 < s[0] <= s[1] <= 1, "augment.crop_scale", f"expected [min, max] in (0, 1], got {s}")
    r = a.crop_ratio
    need(len(r) == 2 and 0 < r[0] <= r[1], "augment.crop_ratio", f"expected [min, max] > 0, got {r}")
    need(d.interpolation in INTERPOLATIONS, "data.interpolation", f"{d.interpolation!r}; one of {INTERPOLATIONS}")
    if a.auto_augment:
        try:
            _auto_augment(a.auto_augment, tuple(d.input_size), tuple(d.mean), d.interpolation)
        except Exception as exc:  # noqa: BLE001 - timm raises AssertionError / KeyError / ValueError
            raise ConfigError(f"augment.auto_augment: {a.auto_augment!r} is not a timm policy "
                              f"(e.g. rand-m9-mstd0.5-inc1): {type(exc).__name__}: {exc}") from None
    need(0.0 <= a.random_erasing <= 1.0, "augment.random_erasing", "a probability in [0, 1]")
    need(a.random_erasing_mode in ("pixel", "rand", "const"), "augment.random_erasing_mode",
         f"{a.random_erasing_mode!r}; one of pixel, rand, const")
    need(a.mixup_alpha >= 0 and a.cutmix_alpha >= 0, "augment.mixup_alpha", "mixup_alpha and cutmix_alpha must be >= 0")
    need(0.0 <= a.mixup_prob <= 1.0 and 0.0 <= a.mixup_switch_prob <= 1.0, "augment.mixup_prob",
         "mixup_prob and mixup_switch_prob are probabilities in [0, 1]")
    need(a.mixup_mode in MIXUP_MODES, "augment.mixup_mode", f"{a.mixup_mode!r}; one of {MIXUP_MODES}")
    need(t.resize >= min(d.input_size), "test.resize",
         f"{t.resize} is smaller than the crop data.input_size {d.input_size} (the centre crop would pad)")
    need(t.topk >= 1, "test.topk", "must be >= 1")
    need(t.batch_size > 0, "test.batch_size", "must be > 0")
    need(0.0 <= recipe.train.loss.label_smoothing < 1.0, "train.loss.label_smoothing", "must be in [0, 1)")


# ------------------------------------------------------------------------------------------------ reader


def _layout(split: str) -> dict[str, str]:
    return {"images": split}


def _read_imagenet(src: SourceFiles) -> PreparedRows:
    """An ImageNet split (either layout, :mod:`hrnet_core.data.imagenet`) -> rows ``image_id``, ``file_name``,
    ``label``; manifest ``num_classes``, ``classes``, ``class_names``."""
    import pandas as pd

    from hrnet_core.data.imagenet import read_classification_split

    root = src.files["images"]
    cs = read_classification_split(root, src.files.get("labels"), src.files.get("synsets"))
    ids = list(range(len(cs.files)))
    images = pd.DataFrame({"image_id": ids, "file_name": cs.files, "width": [0] * len(ids), "height": [0] * len(ids)},
                          columns=["image_id", "file_name", "width", "height"])
    samples = pd.DataFrame({"image_id": ids, "file_name": cs.files, "label": np.asarray(cs.labels, np.int64)},
                           columns=["image_id", "file_name", "label"])
    files = {k: src.files[k] for k in ("labels", "synsets") if k in src.files}
    return PreparedRows(images=images, samples=samples, image_root=root, files=files,
                        meta={"num_classes": len(cs.synsets.wnids), "classes": list(cs.synsets.wnids),
                              "class_names": list(cs.synsets.names)})


DATASETS: dict[str, DatasetReader] = {
    "imagenet": DatasetReader(
        name="imagenet",
        description="ImageNet-style classification: <split>/<wnid>/*.JPEG (ImageFolder) or a flat folder + --labels; "
                    "--synsets fixes the class index (ImageNet-1k order)",
        inputs={"images": "image folder of the split",
                "labels": "label file of a flat folder ('<file> <index or wnid>' lines)",
                "synsets": "synsets file ('<wnid> [name]' lines; line order = class index)"},
        required=("images",), default_layout=_layout, read=_read_imagenet,
        downloads={"train": ("https://image-net.org/data/ILSVRC/2012/ILSVRC2012_img_train.tar",),
                   "val": ("https://image-net.org/data/ILSVRC/2012/ILSVRC2012_img_val.tar",)}),
}


# ------------------------------------------------------------------------------------------------ transforms


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


def _check_classes(recipe, split) -> None:
    from hrnet_core.data.prepared import DataError

    n = int(split.manifest.get("num_classes", 0))
    if n > num_classes(recipe):
        raise DataError(f"{split.dir}: the split has {n} classes but the network of recipe {recipe.name!r} has "
                        f"model.num_classes={num_classes(recipe)}; set model.num_classes={n}")


def sample_transform(recipe, split, train: bool = True) -> ClsSample:
    """The per-sample function of ``recipe`` on ``split``.

    Raises:
        hrnet_core.data.prepared.DataError: the split has more classes than the network.
    """
    _check_classes(recipe, split)
    d, a = recipe.data, recipe.augment
    return ClsSample(image_root=str(split.image_root), input_size=(int(d.input_size[0]), int(d.input_size[1])),
                     mean=tuple(float(v) for v in d.mean), std=tuple(float(v) for v in d.std),
                     resize=int(recipe.test.resize), flip=bool(a.flip),
                     crop_scale=(float(a.crop_scale[0]), float(a.crop_scale[1])),
                     crop_ratio=(float(a.crop_ratio[0]), float(a.crop_ratio[1])), train=train,
                     interpolation=d.interpolation, auto_augment=a.auto_augment or None,
                     random_erasing=float(a.random_erasing), random_erasing_mode=a.random_erasing_mode)


# ------------------------------------------------------------------------------------------------ model + loss


class CrossEntropy:
    """Cross entropy in the loss-dict contract: ``(logits float [B, C], batch with label int64 [B]) ->
    {"loss": mean CE}`` (``label_smoothing`` as torch's ``cross_entropy``).

    With ``mixup`` (a :class:`timm.data.Mixup`; DeiT-style recipes), :meth:`mix` mixes a training batch's images and
    adds ``soft_target`` float ``[B, C]`` (the mixed, label-smoothed one-hot targets), and the loss of such a batch
    is timm's ``SoftTargetCrossEntropy`` ``mean(sum(-soft_target * log_softmax(logits)))``. The mixing draws are
    seeded by ``seed`` and the batch's sample indices (:func:`seeded_global_rngs`).
    """

    def __init__(self, cfg: ClsLoss, mixup=None, num_classes: int = DEFAULT_NUM_CLASSES, seed: int = 0) -> None:
        self.label_smoothing = float(cfg.label_smoothing)
        self.mixup, self.num_classes, self.seed = mixup, int(num_classes), int(seed)

    def mix(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """``batch`` with Mixup / CutMix applied to ``image`` and ``soft_target`` added (unchanged without mixup).
        An odd last sample is left unmixed with its smoothed one-hot target (timm mixes pairs)."""
        if self.mixup is None:
            return batch
        import torch
        from timm.data.mixup import mixup_target

        x, y = batch["image"].clone(), batch["label"]
        idx = [int(v) for v in np.asarray(batch["index"].cpu() if hasattr(batch["index"], "cpu") else batch["index"])]
        even = len(x) - len(x) % 2
        seed = int(np.random.SeedSequence([self.seed, *idx]).generate_state(1)[0])
        target = mixup_target(y, self.num_classes, 1.0, self.label_smoothing)
        if even:
            with seeded_global_rngs(seed):
                mixed, soft = self.mixup(x[:even], y[:even])
            x = torch.cat([mixed, x[even:]])
            target = torch.cat([soft, target[even:]])
        return {**batch, "image": x, "soft_target": target}

    def __call__(self, logits, batch: Mapping[str, Any]) -> dict[str, Any]:
        import torch.nn.functional as F

        if "soft_target" in batch:
            from timm.loss import SoftTargetCrossEntropy

            return {"loss": SoftTargetCrossEntropy()(logits.float(), batch["soft_target"].float())}
        return {"loss": F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)}


def build_loss(recipe) -> CrossEntropy:
    """The recipe's loss; with ``augment.mixup_alpha`` / ``cutmix_alpha`` it carries a :class:`timm.data.Mixup`
    (DeiT settings from ``augment.mixup_*``, smoothing ``train.loss.label_smoothing``)."""
    a = recipe.augment
    mixup = None
    if a.mixes:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha, prob=a.mixup_prob,
                      switch_prob=a.mixup_switch_prob, mode=a.mixup_mode,
                      label_smoothing=recipe.train.loss.label_smoothing, num_classes=num_classes(recipe))
    return CrossEntropy(recipe.train.loss, mixup, num_classes(recipe), recipe.train.seed)


@dataclass(frozen=True)
class MixStep:
    """One training step: Mixup / CutMix when the recipe asks for it (:meth:`CrossEntropy.mix`), forward, loss
    (HRFormer / timm ``train_one_epoch``: ``mixup_fn(samples, targets)`` then ``criterion(model(samples), targets)``).

    Attributes:
        loss: the recipe's :class:`CrossEntropy` (:func:`build_loss`).
    """

    loss: CrossEntropy

    def __call__(self, model, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``{"loss": cross entropy}`` of one (mixed) batch."""
        batch = self.loss.mix(batch)
        return self.loss(model(batch["image"]), batch)


def train_step(recipe) -> MixStep:
    """The recipe's training step (:class:`MixStep` of :func:`build_loss`)."""
    return MixStep(build_loss(recipe))


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """Images to predict: the ``samples.parquet`` rows (``image_id``, ``file_name``, ``label``), in order.

    Raises:
        hrnet_core.data.prepared.DataError: the split has more classes than the network.
    """
    import pyarrow.parquet as pq

    _check_classes(recipe, split)
    return pq.read_table(split.samples_file).to_pylist()


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """The ``test.topk`` best classes of every item (single centre crop), per batch of ``test.batch_size`` images
    (two threads decode the next two batches meanwhile).

    Returns:
        A :class:`~hrnet_core.tasks.base.BatchPredictor` whose batches give ``Predictions({"index": int64 [b, k],
        "score": float32 [b, k]})``: classes ranked on the logits as the official ``accuracy()`` does
        (HRNet-Image-Classification ``lib/core/evaluate.py``), their softmax probabilities, best first
        (``k = min(test.topk, classes)``).
    """
    fn = sample_transform(recipe, split, train=False)
    k = min(int(recipe.test.topk), num_classes(recipe))
    return BatchPredictor(run=functools.partial(_rank, model, k, device), batch_size=int(recipe.test.batch_size),
                          load=functools.partial(_centre_crops, fn), prefetch=2, unit="img")


def _centre_crops(fn: ClsSample, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Preprocessed eval batch ``[b, 3, H, W]``."""
    return np.stack([fn.eval_tensor(fn.load(str(r["file_name"]))) for r in items])


def _rank(model, k: int, device, x: np.ndarray) -> Predictions:
    """Top-``k`` classes and probabilities of one batch."""
    import torch

    from hrnet_core.evaluation.classification import rank_by_logits

    logits = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    idx, sc = rank_by_logits(logits, k)  # official accuracy(): topk of the logits
    return _values([idx], [sc.astype(np.float32)], k)


def _values(idx_parts, score_parts, k: int) -> Predictions:
    if not idx_parts:
        return Predictions({"index": np.zeros((0, k), np.int64), "score": np.zeros((0, k), np.float32)})
    return Predictions({"index": np.concatenate(idx_parts), "score": np.concatenate(score_parts)})


def concat(parts: Sequence[Predictions]) -> Predictions:
    """Join the batches / shards (item order; empty ones skipped)."""
    parts = [p for p in parts if p is not None and len(p.values["index"])]
    k = parts[0].values["index"].shape[1] if parts else 5
    return _values([p.values["index"] for p in parts], [p.values["score"] for p in parts], k)


def _class_names(split) -> list[str]:
    names = split.manifest.get("class_names") or split.manifest.get("classes") or []
    return [str(n) for n in names]


def score(items: Sequence[Mapping[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """``top1``, ``top5`` accuracy in percent (+ ``eval_items``); with ``out_dir`` also ``predictions.json`` (per
    image: ``file_name`` relative to the split's image folder, ``label``, ``topk`` class indices and ``scores``
    softmax probabilities, best first) and ``confusion.json`` (the 20 most frequent wrong (true, predicted) pairs
    with class ids and counts)."""
    from hrnet_core.evaluation.classification import most_confused, topk_accuracy

    idx = predictions.values["index"]
    labels = np.asarray([int(r["label"]) for r in items], np.int64)
    acc = topk_accuracy(idx, labels, (1, 5))
    metrics = {"top1": acc[1], "top5": acc[5], "eval_items": float(len(items))}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sc = predictions.values["score"]
        (out / "predictions.json").write_text(json.dumps(
            [{"file_name": str(r["file_name"]), "label": int(y), "topk": [int(v) for v in i],
              "scores": [round(float(v), 6) for v in s]} for r, y, i, s in zip(items, labels, idx, sc)]))
        classes = [str(c) for c in split.manifest.get("classes") or []]
        names = _class_names(split)

        def cls(i: int) -> dict[str, Any]:
            return {"index": i, "id": classes[i] if i < len(classes) else str(i),
                    "name": names[i] if i < len(names) else str(i)}

        pairs = most_confused(labels, idx[:, 0] if len(idx) else [], 20)
        (out / "confusion.json").write_text(json.dumps(
            [{"true": cls(t), "predicted": cls(p), "count": c} for t, p, c in pairs], indent=1))
    return metrics


def draw(items: Sequence[Mapping[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """The first ``num_images`` images (height 224) with the top-1 class name and probability (green: right, red:
    wrong) and the true class, as ``<out_dir>/<image_id>.jpg``."""
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fn = sample_transform(recipe, split, train=False)
    names = _class_names(split)
    files = []
    for r, i, s in list(zip(items, predictions.values["index"], predictions.values["score"]))[:num_images]:
        img = np.asarray(fn.load(str(r["file_name"])))
        h = 224
        w = max(1, int(round(img.shape[1] * h / img.shape[0])))
        img = cv2.resize(img, (max(w, 224), h), interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        label, top = int(r["label"]), int(i[0])
        name = (lambda k: names[k] if k < len(names) else str(k))
        colour = (0, 200, 0) if top == label else (0, 0, 230)
        for y, text, c in ((18, f"{name(top)[:28]} {float(s[0]):.2f}", colour), (38, f"gt: {name(label)[:28]}",
                                                                                  (255, 255, 255))):
            cv2.putText(bgr, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(bgr, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
        f = out / f"{int(r['image_id'])}.jpg"
        cv2.imwrite(str(f), bgr)
        files.append(f)
    return files


# ------------------------------------------------------------------------------------------------ synthetic data

#: the generated classes (folder names; the class index is their sorted order)
SYNTHETIC_CLASSES = ("checker", "diagonal", "dots", "hstripes", "plain", "vstripes")


def _synthetic_image(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 ``[size, size, 3]`` image of class ``cls``: a texture of two random colours over the whole
    image (so that every random crop and flip keeps the class) plus Gaussian noise (std 12):

    - ``checker``: checkerboard, random period and orientation; ``dots``: a grid of discs;
    - ``hstripes`` / ``vstripes`` / ``diagonal``: stripes within 15 degrees of horizontal / vertical / 45 degrees
      (either diagonal; a horizontal flip turns one into the other);
    - ``plain``: the background colour only.

    Periods are 10-20 % of ``size``; phases random.
    """
    bg = rng.integers(0, 256, 3)
    fg = (bg + rng.integers(80, 176, 3)) % 256
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(0.1, 0.2) * size)
    jitter = float(np.deg2rad(rng.uniform(-15, 15)))
    theta = {"hstripes": np.pi / 2, "vstripes": 0.0, "diagonal": float(rng.choice([np.pi / 4, 3 * np.pi / 4]))}.get(
        cls, float(rng.uniform(0, np.pi / 2))) + jitter
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)
    v = -xx * np.sin(theta) + yy * np.cos(theta) + rng.uniform(0, period)
    if cls in ("hstripes", "vstripes", "diagonal"):
        mask = np.floor(u / period) % 2 == 0
    elif cls == "checker":
        mask = (np.floor(u / period) % 2 == 0) ^ (np.floor(v / period) % 2 == 0)
    elif cls == "dots":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        mask = du ** 2 + dv ** 2 <= (0.3 * period) ** 2
    elif cls == "plain":
        mask = np.zeros((size, size), bool)
    else:  # pragma: no cover
        raise ValueError(f"unknown synthetic class {cls!r}")
    img[mask] = fg
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None,
             size: int = 40) -> dict[str, Any]:
    """Generated ImageFolder data: ``<out>/train/<class>/<class>_<n>.JPEG`` and ``<out>/val/...`` of the
    :data:`SYNTHETIC_CLASSES` (``num_train`` / ``num_val`` images in all, classes in turn), ``size`` px squares,
    JPEG quality 95, plus ``synsets.txt``. Same seed, same bytes.

    Returns:
        ``{"out_dir", "train", "val", "classes"}``.
    """
    import cv2

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("val", num_val)):
        for c in SYNTHETIC_CLASSES:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            c = SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)]
            img = _synthetic_image(c, size, rng)
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out / split / c / f"{c}_{i:05d}.JPEG").write_bytes(buf.tobytes())
            if progress:
                progress(1)
    (out / "synsets.txt").write_text("".join(f"{c} {c}\n" for c in SYNTHETIC_CLASSES))
    return {"out_dir": str(out), "train": num_train, "val": num_val, "classes": len(SYNTHETIC_CLASSES)}


SYNTHETIC = SyntheticData(
    generate=generate,
    splits=(SplitPrep("imagenet", "train", {"synsets": "synsets.txt"}),
            SplitPrep("imagenet", "val", {"synsets": "synsets.txt"}))
)

TASK = Task(
    name="classification",
    description="image classification: centre-crop top-1 / top-5 (HRNet-W*-C, ImageNet; the backbones' pretraining)",
    datasets=DATASETS,
    sections=RecipeSections(data=ClsData, augment=ClsAugment, test=ClsTest, loss=ClsLoss),
    metrics=MetricSpec(primary="top1", higher_is_better=True, names=("top1", "top5"),
                       units="percent (single centre crop accuracy)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=sample_transform,
    # the per-sample function's lazy imports (PIL decoding, torchvision resize/crop on tensors): ~2.7 s in the first
    # epoch of bench_ingest --task classification before they were warmed
    decode_modules=("torch", "torchvision.transforms.functional", "PIL.Image"),
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
