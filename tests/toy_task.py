"""A toy two-class segmentation task, defined outside ``hrnet_core`` and ``pipelines``, to show that a task with an
iteration-based schedule (poly LR), label-map targets and sliding-window evaluation fits the task contract
(:mod:`hrnet_core.tasks.base`) and trains through the real ``pipelines.train.train`` with no code of its own in
``pipelines/``. Recipes name it ``task: tests.toy_task:TASK``.

Data: generated images (dark noise with one bright disc, 40-56 px sides); the label map is 1 inside the disc, 0
outside, 255 (ignore) on a one-pixel ring at its border. Reader ``toy_seg``: a list file ``<split>.txt`` of
``image label`` lines. Network: a three-layer fully convolutional net. Loss: cross-entropy with ignore index 255.
Test: sliding windows of the crop size with stride 2/3 crop, logits averaged; metric mIoU and pixel accuracy (percent).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from hrnet_core.recipes.config import DataConfig
from hrnet_core.tasks.base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections, SourceFiles,
                                   SplitPrep, SyntheticData, Task)

IGNORE = 255
NUM_CLASSES = 2


@dataclass
class ToyData(DataConfig):
    """``data:``: the shared keys only (``input_size`` is the training crop ``[W, H]``)."""


@dataclass
class ToyAugment:
    flip: bool = True


@dataclass
class ToyTest:
    """``stride``: sliding-window stride as a fraction of the crop (official HRNetV2: 2/3)."""

    stride: float = 2.0 / 3.0
    num_vis_images: int = 2


@dataclass
class ToyLoss:
    ignore_index: int = IGNORE


def validate(recipe) -> None:
    from hrnet_core.recipes import ConfigError

    if recipe.model.name != "toy_fcn":
        raise ConfigError(f"model.name: the toy task builds 'toy_fcn', not {recipe.model.name!r}")
    if not 0.0 < recipe.test.stride <= 1.0:
        raise ConfigError("test.stride: must be in (0, 1]")


# ------------------------------------------------------------------------------------------------ data


def generate(out_dir, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("val", num_val)):
        lines = []
        for i in range(n):
            h, w = int(rng.integers(40, 57)), int(rng.integers(40, 57))
            img = rng.integers(0, 110, size=(h, w, 3)).astype(np.uint8)
            cx, cy, r = rng.uniform(12, w - 12), rng.uniform(12, h - 12), rng.uniform(6, 11)
            yy, xx = np.mgrid[0:h, 0:w]
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            img[d <= r] = rng.integers(170, 256, size=3)
            label = np.where(d <= r, 1, 0).astype(np.uint8)
            label[np.abs(d - r) < 0.7] = IGNORE
            name = f"{split}_{i:04d}"
            cv2.imwrite(str(out / "images" / f"{name}.png"), img)
            cv2.imwrite(str(out / "images" / f"{name}_label.png"), label)
            lines.append(f"images/{name}.png images/{name}_label.png")
            if progress:
                progress(1)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {"out_dir": str(out), "train": num_train, "val": num_val}


def _read(src: SourceFiles) -> PreparedRows:
    import pandas as pd

    from hrnet_core.data.prepared import DataError

    root = src.files["images"]
    rows = []
    for k, line in enumerate(src.files["list"].read_text().splitlines()):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{src.files['list']}:{k + 1}: expected 'image label', got {line!r}")
        rows.append({"image_id": k, "file_name": parts[0], "label_file": parts[1]})
    samples = pd.DataFrame(rows)
    images = pd.DataFrame([{"image_id": r["image_id"], "file_name": r["file_name"], "width": 0, "height": 0}
                           for r in rows])
    return PreparedRows(images=images, samples=samples, image_root=root, meta={"num_classes": NUM_CLASSES})


DATASETS = {"toy_seg": DatasetReader(
    name="toy_seg", description="toy discs: <split>.txt of 'image label' lines",
    inputs={"list": "split list file", "images": "folder the list's paths are relative to"},
    required=("list", "images"), default_layout=lambda split: {"list": f"{split}.txt", "images": "."}, read=_read)}


@dataclass(frozen=True)
class ToySample:
    image_root: str
    crop: tuple[int, int]
    flip: bool
    train: bool

    def load(self, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        from hrnet_core.data.io import read_image

        img = read_image(Path(self.image_root) / row["file_name"])
        label = cv2.imread(str(Path(self.image_root) / row["label_file"]), cv2.IMREAD_GRAYSCALE)
        return img, label

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        img, label = self.load(row)
        w, h = self.crop
        pad_h, pad_w = max(0, h - img.shape[0]), max(0, w - img.shape[1])
        img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE)
        y0 = int(rng.integers(0, img.shape[0] - h + 1)) if rng is not None else 0
        x0 = int(rng.integers(0, img.shape[1] - w + 1)) if rng is not None else 0
        img, label = img[y0:y0 + h, x0:x0 + w], label[y0:y0 + h, x0:x0 + w]
        if rng is not None and self.flip and rng.random() < 0.5:
            img, label = img[:, ::-1], label[:, ::-1]
        return {"image": normalise(img), "label": np.ascontiguousarray(label).astype(np.int64)}


def normalise(img: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(img).transpose(2, 0, 1).astype(np.float32) / 255.0 - 0.5)


def sample_transform(recipe, split, train: bool = True) -> ToySample:
    w, h = recipe.data.input_size
    return ToySample(str(split.image_root), (int(w), int(h)), recipe.augment.flip, train)




# ------------------------------------------------------------------------------------------------ model + loss


def build_model(recipe) -> torch.nn.Module:
    c = 8
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.BatchNorm2d(c), torch.nn.ReLU(),
        torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(c, NUM_CLASSES, 1))


class CrossEntropy:
    def __init__(self, cfg: ToyLoss) -> None:
        self.ignore = cfg.ignore_index

    def __call__(self, logits, batch) -> dict[str, torch.Tensor]:
        ce = torch.nn.functional.cross_entropy(logits.float(), batch["label"], ignore_index=self.ignore)
        return {"loss": ce, "ce": ce.detach()}


def train_step(recipe) -> LossStep:
    return LossStep(CrossEntropy(recipe.train.loss))


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(split.samples_file).to_pylist()


def sliding_window_logits(model, image: torch.Tensor, crop: tuple[int, int], stride: float) -> torch.Tensor:
    """Logits ``[C, H, W]`` of ``image`` ``[3, H, W]`` averaged over windows of ``crop`` ``(w, h)`` at ``stride``."""
    _, H, W = image.shape
    w, h = min(crop[0], W), min(crop[1], H)
    sy, sx = max(1, int(h * stride)), max(1, int(w * stride))
    ys = sorted({*range(0, H - h + 1, sy), H - h})
    xs = sorted({*range(0, W - w + 1, sx), W - w})
    total = torch.zeros(NUM_CLASSES, H, W)
    count = torch.zeros(1, H, W)
    for y in ys:
        for x in xs:
            total[:, y:y + h, x:x + w] += model(image[None, :, y:y + h, x:x + w])[0].float().cpu()
            count[:, y:y + h, x:x + w] += 1
    return total / count


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """One image per batch: the arg-max label map ``uint8 [H, W]`` of the sliding-window logits."""
    return BatchPredictor(run=functools.partial(_label_maps, model, sample_transform(recipe, split, train=False),
                                                recipe.test.stride, device))


def _label_maps(model, fn, stride: float, device, rows) -> Predictions:
    out = []
    for row in rows:
        img, _ = fn.load(row)
        x = torch.from_numpy(normalise(img)).to(device)
        out.append(sliding_window_logits(model, x, fn.crop, stride).argmax(0).numpy().astype(np.uint8))
    return Predictions(out)


def concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions([p for part in parts for p in part.values])


def confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    keep = label != IGNORE
    return np.bincount(NUM_CLASSES * label[keep].astype(int) + pred[keep], minlength=NUM_CLASSES ** 2).reshape(
        NUM_CLASSES, NUM_CLASSES)


def score(items, predictions: Predictions, recipe, split, out_dir=None) -> dict[str, float]:
    fn = sample_transform(recipe, split, train=False)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for row, pred in zip(items, predictions.values):
        cm += confusion(pred, fn.load(row)[1])
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    metrics = {"mIoU": 100.0 * float(iou.mean()), "pixel_acc": 100.0 * float(np.diag(cm).sum() / max(cm.sum(), 1)),
               "eval_items": float(len(items))}
    if out_dir is not None:
        Path(out_dir, "predictions.json").write_text(json.dumps(
            [{"file_name": r["file_name"], "foreground_pixels": int(p.sum())} for r, p in zip(items, predictions.values)]))
    return metrics


def draw(items, predictions: Predictions, recipe, split, out_dir, num_images: int) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for row, pred in list(zip(items, predictions.values))[:num_images]:
        f = out / f"{Path(row['file_name']).stem}.png"
        cv2.imwrite(str(f), pred * 255)
        files.append(f)
    return files


TASK = Task(
    name="toy_segmentation",
    description="toy two-class segmentation (tests only)",
    datasets=DATASETS,
    sections=RecipeSections(data=ToyData, augment=ToyAugment, test=ToyTest, loss=ToyLoss),
    metrics=MetricSpec(primary="mIoU", higher_is_better=True, names=("mIoU", "pixel_acc")),
    synthetic=SyntheticData(generate=generate, splits=(SplitPrep("toy_seg", "train"), SplitPrep("toy_seg", "val"))),
    validate=validate,
    sample_transform=sample_transform,
    build_model=build_model,
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
