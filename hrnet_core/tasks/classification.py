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
are seeded from the sample's / batch's own generator (:func:`hrnet_core.data.cls_transforms.seeded_global_rngs`).

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

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.data.cls_transforms import ClsSample, _auto_augment
from hrnet_core.data.synthetic_textures import generate
from hrnet_core.losses.classification import DEFAULT_NUM_CLASSES, CrossEntropy
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
    # the per-sample function's lazy imports (PIL decoding, torchvision resize/crop on tensors), warmed before the
    # first epoch (``benchmarks/bench_ingest.py --task classification`` shows the first-epoch cost without it)
    decode_modules=("torch", "torchvision.transforms.functional", "PIL.Image"),
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
