"""Semantic segmentation (HRNetV2 paper Sec. 4.1, HRNet-OCR, HRFormer + OCR; FACTS.md sections 3 and 7): the
``segmentation`` task.

One training sample is one image (official ``lib/datasets/base_dataset.py`` ``BaseDataset.gen_sample``): the label
PNG is mapped to training ids (the dataset's lookup table, 255 = ignore), the image and label are rescaled together
so that the long side is ``int(data.base_size * s + 0.5)`` and the other side ``int(other * long / long_before +
0.5)`` (:func:`hrnet_core.data.seg_transforms.rescaled_size`), with ``s`` drawn from ``augment.scale_range`` in
steps of ``augment.scale_step`` (official ``0.5 + randint(0, scale_factor) / 10``: 0.5 .. 2.1 for Cityscapes /
PASCAL-Context (scale factor 16), 0.5 .. 1.6 for LIP (11); step 0 draws uniformly), padded at the bottom / right to
the crop with black pixels / ignore labels, randomly cropped to ``data.input_size`` and flipped with probability 0.5
(the dataset's left/right classes swapped, LIP). With ``augment.resize_to_crop`` (the LIP recipe; official
``lib/datasets/lip.py``) the flip comes first and the whole image is resized to the crop size (aspect ratio not
kept) before the rescale. Batches have the fixed crop size.

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- readers ``cityscapes``, ``lip``, ``pascal_context_59`` / ``pascal_context_60`` (``pascal_context`` = 59, the
  HRFormer tables' name), ``camvid`` and the generic ``seg_list`` (:mod:`hrnet_core.data.seg_readers`,
  :mod:`hrnet_core.data.segmentation`);
  ``samples.parquet`` columns ``image_id``, ``file_name``, ``label_file``, ``label_sha256``, ``width``, ``height``;
  the manifest carries the class names, the label lookup table, the output ids, flip pairs and palette;
- batch: ``image`` float32 ``[B, 3, H, W]`` (ImageNet mean/std), ``label`` int64 ``[B, H, W]`` (255 = ignore),
  ``index`` int64 ``[B]``;
- loss (:mod:`hrnet_core.losses.segmentation`): cross-entropy with ignore index and class weights, OHEM, OCR
  ``0.4 * aux + 1.0 * main``; logits upsampled to the crop first;
- test procedure (:mod:`hrnet_core.evaluation.seg_inference`, the official ``multi_scale_inference``): ``test.mode``
  slide (``BaseDataset``: windows of ``test.crop_size`` at stride 2/3, clipped and padded with black) / cityscapes
  (``Cityscapes``: whole image at scales <= 1, windows moved inside the image above) / whole / resize (LIP),
  ``test.flip`` (logits of the two passes averaged, then exp), ``test.scales`` (long side ``scale *
  data.base_size``; the scales' scores summed); the confusion matrix of every image is accumulated on the device
  (``torch.bincount``);
- metrics (:mod:`hrnet_core.evaluation.miou`, official ``testval``), percent: ``mIoU`` (primary; mean over all
  classes), ``pixel_acc``, ``mean_acc``, ``IoU/<class>``, and ``mIoU_present`` / ``mean_acc_present`` (means over the
  classes present, mmsegmentation's);
- outputs: ``predictions.json`` (per image: file, prediction PNG, pixel accuracy), ``labels/<image stem>.png``
  (predictions in the dataset's own ids: Cityscapes labelIds for the benchmark server, PASCAL-Context-59 ids + 1),
  ``confusion_matrix.csv`` (:mod:`hrnet_core.evaluation.seg_outputs`); drawings: image | ground truth | prediction,
  colour-coded with the dataset palette (:mod:`hrnet_core.evaluation.seg_drawing`);
- synthetic default: generated scenes (:mod:`hrnet_core.data.synthetic_scenes`) in the ``seg_list`` layout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hrnet_core.data import seg_readers
from hrnet_core.data.seg_transforms import SegSample
from hrnet_core.losses.segmentation import SegLossConfig
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


@dataclass
class SegData(DataConfig):
    """``data:`` of a segmentation recipe: the shared keys (``input_size`` = training crop ``[W, H]``) plus

    ``base_size``: long side in pixels at scale 1 for the training rescale and the test scales (official: Cityscapes
    2048, PASCAL-Context 520, LIP 473; 0 = the image's own size); ``mean`` / ``std``: RGB normalisation (ImageNet).
    """

    base_size: int = 0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class SegAugment:
    """``augment:``: rescale by ``s`` in ``scale_range`` (steps of ``scale_step``; 0 = uniform), pad, random crop,
    horizontal flip with probability 0.5 (``flip``).

    Official values (``TRAIN.SCALE_FACTOR`` of the configs, ``s = 0.5 + randint(0, SCALE_FACTOR) / 10``): ``[0.5,
    2.1]`` (16: Cityscapes, PASCAL-Context; the default), ``[0.5, 1.6]`` (11: LIP). ``resize_to_crop``: the official
    LIP order (``lib/datasets/lip.py`` ``LIP.__getitem__``): flip first, resize the whole image to ``data.input_size``
    without keeping the aspect ratio, then rescale / pad / crop (no second flip); false = ``BaseDataset.gen_sample``.
    """

    flip: bool = True
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.1])
    scale_step: float = 0.1
    resize_to_crop: bool = False


@dataclass
class SegTest:
    """``test:`` (the official test procedure as options, :mod:`hrnet_core.evaluation.seg_inference`): ``mode``
    ``slide`` (official ``BaseDataset.multi_scale_inference``) / ``cityscapes`` (official
    ``Cityscapes.multi_scale_inference``) / ``whole`` / ``resize`` (the LIP test); ``crop_size``: the test window
    ``[W, H]`` in pixels (official ``TEST.IMAGE_SIZE``; ``resize``: the size the image is resized to; null = the
    training crop ``data.input_size``); ``stride`` between windows as a fraction of the window (official 2/3,
    Cityscapes 1.0); ``flip``; ``scales`` (long side ``scale * data.base_size``, official ``TEST.BASE_SIZE``;
    multi-scale 0.5 .. 1.75 (Cityscapes) or 2.0 in steps of 0.25); ``save_label_pngs``: write predictions in the
    dataset's ids; ``num_vis_images`` drawings; ``cpu_threads``: torch intra-op threads while predicting on the CPU
    (0 leaves torch's setting; restored afterwards)."""

    mode: str = "slide"
    crop_size: list[int] | None = None
    stride: float = 2.0 / 3.0
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    save_label_pngs: bool = True
    num_vis_images: int = 4
    cpu_threads: int = 0


def _is_seg_model(name: str) -> bool:
    return name.startswith("seg_")


def _num_outputs(name: str) -> int:
    return 2 if "ocr" in name else 1


def validate(recipe) -> None:
    """Cross-field checks of a segmentation recipe.

    Raises:
        ConfigError: naming the key (model, class count of the dataset, augmentation ranges, test procedure, loss).
    """
    from hrnet_core.data.segmentation import LAYOUTS

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    d, a, t, loss = recipe.data, recipe.augment, recipe.test, recipe.train.loss
    check_zoo_model(recipe.model)
    need(_is_seg_model(recipe.model.name), "model.name",
         f"{recipe.model.name!r} is not a segmentation network (seg_hrnetv2_w48, seg_hrnetv2_ocr_w48, ...)")
    layout = LAYOUTS.get(d.dataset)
    if layout is not None and recipe.model.num_classes is not None:
        need(recipe.model.num_classes == layout.num_classes, "model.num_classes",
             f"{recipe.model.num_classes} but {d.dataset} has {layout.num_classes} classes")
    need(len(d.input_size) == 2 and all(int(v) > 0 for v in d.input_size), "data.input_size",
         f"expected [W, H] > 0, got {d.input_size}")
    need(d.base_size >= 0, "data.base_size", "must be >= 0")
    need(len(d.mean) == 3 and len(d.std) == 3 and all(s > 0 for s in d.std), "data.mean/std", "3 values, std > 0")
    need(len(a.scale_range) == 2 and 0 < a.scale_range[0] <= a.scale_range[1], "augment.scale_range",
         f"expected [min, max] with 0 < min <= max, got {a.scale_range}")
    need(a.scale_step >= 0, "augment.scale_step", "must be >= 0")
    from hrnet_core.losses.segmentation import AUX_REDUCTIONS

    need(loss.aux_reduction in AUX_REDUCTIONS, "train.loss.aux_reduction",
         f"one of {', '.join(AUX_REDUCTIONS)}, got {loss.aux_reduction!r}")
    from hrnet_core.evaluation.seg_inference import MODES

    need(t.mode in MODES, "test.mode", f"one of {', '.join(MODES)}, got {t.mode!r}")
    need(t.crop_size is None or (len(t.crop_size) == 2 and all(int(v) > 0 for v in t.crop_size)), "test.crop_size",
         f"null or [W, H] > 0, got {t.crop_size}")
    need(0.0 < t.stride <= 1.0, "test.stride", "must be in (0, 1]")
    need(t.cpu_threads >= 0, "test.cpu_threads", "must be >= 0 (0 leaves torch's setting)")
    need(len(t.scales) > 0 and all(s > 0 for s in t.scales), "test.scales", "a non-empty list of scales > 0")
    n_out = _num_outputs(recipe.model.name)
    need(len(loss.balance_weights) == n_out, "train.loss.balance_weights",
         f"{recipe.model.name} returns {n_out} output(s) ({'aux, main' if n_out == 2 else 'main'}), got "
         f"{loss.balance_weights}")
    need(0.0 < loss.ohem_thresh <= 1.0 and loss.ohem_min_kept >= 0, "train.loss.ohem_thresh/ohem_min_kept",
         "thresh in (0, 1], min_kept >= 0")
    cw = loss.class_weights
    need(cw is None or cw == "dataset" or (isinstance(cw, list) and all(float(w) >= 0 for w in cw)),
         "train.loss.class_weights", f"null, 'dataset' or a list of weights, got {cw!r}")
    if isinstance(cw, list) and recipe.model.num_classes is not None:
        need(len(cw) == recipe.model.num_classes, "train.loss.class_weights",
             f"{len(cw)} weights for {recipe.model.num_classes} classes")


# ------------------------------------------------------------------------------------------------ readers


def _rows(image_root: Path, pairs: Sequence[tuple[str, str]], layout) -> PreparedRows:
    from hrnet_core.data.segmentation import label_rows

    images, samples = label_rows(image_root, pairs, layout)
    return PreparedRows(images=images, samples=samples, image_root=image_root, meta=layout.to_meta())


def _prepare(read: Callable[[Mapping[str, Path]], tuple], src: SourceFiles) -> PreparedRows:
    """A split reader of :mod:`hrnet_core.data.seg_readers` (``files -> (image_root, pairs, layout)``) as
    ``SourceFiles -> PreparedRows``, every label checked and hashed (:func:`hrnet_core.data.segmentation.label_rows`).

    Raises:
        hrnet_core.data.io.AnnotationError / ImageReadError: from the reader or the label checks (naming the file).
    """
    return _rows(*read(src.files))


def _reader(read: Callable, *args: Any) -> Callable[[SourceFiles], PreparedRows]:
    return functools.partial(_prepare, functools.partial(read, *args))


def _pascal_layout(split: str) -> dict[str, str]:
    # the papers' "test" split of PASCAL-Context is the val list of the Detail-API / mmsegmentation preparation
    stem = "val" if split == "test" else split
    return {"list": f"ImageSets/SegmentationContext/{stem}.txt", "images": "JPEGImages",
            "labels": "SegmentationClassContext"}


_PASCAL_INPUTS = {"list": "image id list (ImageSets/SegmentationContext/<split>.txt)", "images": "JPEGImages folder",
                  "labels": "label PNG folder (0 = background, 1..59)"}
_LIST_INPUTS = {"list": "list file of 'image label' lines", "images": "folder the list's paths are relative to"}

DATASETS: dict[str, DatasetReader] = {
    "cityscapes": DatasetReader(
        name="cityscapes", description="Cityscapes fine, 19 classes (leftImg8bit/<split> + gtFine/<split> labelIds)",
        inputs={"images": "leftImg8bit/<split> folder", "labels": "gtFine/<split> folder (*_gtFine_labelIds.png)"},
        required=("images", "labels"),
        default_layout=lambda split: {"images": f"leftImg8bit/{split}", "labels": f"gtFine/{split}"},
        read=_reader(seg_readers.read_cityscapes)),
    "lip": DatasetReader(
        name="lip", description="LIP human parsing, 20 classes (<split>_images + <split>_segmentations)",
        inputs={"images": "image folder (*.jpg)", "labels": "label PNG folder"}, required=("images", "labels"),
        default_layout=lambda split: {"images": f"{split}_images", "labels": f"{split}_segmentations"},
        read=_reader(seg_readers.read_lip)),
    "pascal_context_59": DatasetReader(
        name="pascal_context_59", description="PASCAL-Context, 59 classes (prepared label PNGs, zero label reduced)",
        inputs=_PASCAL_INPUTS, required=("list", "images", "labels"), default_layout=_pascal_layout,
        read=_reader(seg_readers.read_pascal_context, "pascal_context_59")),
    "pascal_context": DatasetReader(
        name="pascal_context", description="PASCAL-Context, 59 classes (= pascal_context_59; the HRFormer name)",
        inputs=_PASCAL_INPUTS, required=("list", "images", "labels"), default_layout=_pascal_layout,
        read=_reader(seg_readers.read_pascal_context, "pascal_context_59")),
    "pascal_context_60": DatasetReader(
        name="pascal_context_60", description="PASCAL-Context, 60 classes (prepared label PNGs, background = 0)",
        inputs=_PASCAL_INPUTS, required=("list", "images", "labels"), default_layout=_pascal_layout,
        read=_reader(seg_readers.read_pascal_context, "pascal_context_60")),
    "camvid": DatasetReader(
        name="camvid", description="CamVid, 11 classes (<split>.txt of 'image label' lines; 11 = void)",
        inputs=_LIST_INPUTS, required=("list", "images"),
        default_layout=lambda split: {"list": f"{split}.txt", "images": "."},
        read=_reader(seg_readers.read_camvid)),
    "seg_list": DatasetReader(
        name="seg_list", description="generic: <split>.txt of 'image label' lines + classes.txt (one name a line)",
        inputs={**_LIST_INPUTS, "classes": "class names, one per line (line k = label value k)"},
        required=("list", "images", "classes"),
        default_layout=lambda split: {"list": f"{split}.txt", "images": ".", "classes": "classes.txt"},
        read=_reader(seg_readers.read_seg_list)),
}


def sample_transform(recipe, split, train: bool = True) -> SegSample:
    """The per-sample function of ``recipe`` on ``split`` (the training augmentation; evaluation reads whole images
    in :func:`predict`)."""
    m, d, a = split.manifest, recipe.data, recipe.augment
    return SegSample(image_root=str(split.image_root), lut=tuple(int(v) for v in m["label_lut"]),
                     flip_pairs=tuple((int(x), int(y)) for x, y in m.get("flip_pairs", ())),
                     crop=(int(d.input_size[0]), int(d.input_size[1])), base_size=int(d.base_size),
                     scale_range=(float(a.scale_range[0]), float(a.scale_range[1])), scale_step=float(a.scale_step),
                     flip=bool(a.flip and train), mean=tuple(d.mean), std=tuple(d.std),
                     resize_to_crop=bool(a.resize_to_crop))


# ------------------------------------------------------------------------------------------------ model + loss


def model_align_corners(name: str) -> bool:
    """``align_corners`` of the network's bilinear resizes: the zoo spec's (SEG False, SEG-OCR True); HRFormer
    segmentation networks False."""
    from hrnet_core.models.zoo import MODEL_SPECS

    spec = MODEL_SPECS.get(name)
    return bool(spec.backbone.get("align_corners", False)) if spec is not None else False


def class_weights(recipe, manifest: Mapping[str, Any] | None = None) -> list[float] | None:
    """The loss's class weights: ``train.loss.class_weights`` as a list, ``"dataset"`` -> the dataset's official
    weights (Cityscapes), else None.

    Raises:
        ConfigError: ``"dataset"`` for a dataset without official weights.
    """
    from hrnet_core.data.segmentation import LAYOUTS

    cw = recipe.train.loss.class_weights
    if cw is None:
        return None
    if cw == "dataset":
        w = list((manifest or {}).get("class_weights") or ())
        if not w and recipe.data.dataset in LAYOUTS:
            w = list(LAYOUTS[recipe.data.dataset].class_weights)
        if not w:
            raise ConfigError(f"train.loss.class_weights: 'dataset', but {recipe.data.dataset} has no official class "
                              "weights (give a list or null)")
        return [float(v) for v in w]
    return [float(v) for v in cw]


def train_step(recipe) -> LossStep:
    """``step(model, batch) -> {"loss": total, ...}``: the recipe's
    :class:`~hrnet_core.losses.segmentation.SegmentationLoss` on the network's outputs (HRNet-Semantic-Segmentation
    ``lib/core/function.py`` ``train``, the loss inside ``FullModel``).

    Raises:
        ConfigError: ``train.loss.class_weights`` of another length than ``model.num_classes``.
    """
    return LossStep(build_loss(recipe))


def build_loss(recipe):
    """:class:`~hrnet_core.losses.segmentation.SegmentationLoss` of the recipe (``(outputs, batch) -> loss dict``).

    Raises:
        ConfigError: ``train.loss.class_weights`` of another length than ``model.num_classes``.
    """
    from hrnet_core.losses.segmentation import SegmentationLoss

    cfg = recipe.train.loss
    align = cfg.align_corners if cfg.align_corners is not None else model_align_corners(recipe.model.name)
    weights = class_weights(recipe)
    if weights is not None and recipe.model.num_classes is not None and len(weights) != recipe.model.num_classes:
        raise ConfigError(f"train.loss.class_weights: {len(weights)} weights for {recipe.model.num_classes} classes "
                          f"(data.dataset {recipe.data.dataset})")
    return SegmentationLoss(cfg, weights, align)


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """The images of the split: ``samples.parquet`` rows plus absolute ``image_file`` / ``label_path``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(split.samples_file).to_pylist()
    for r in rows:
        r["image_file"] = str(Path(split.image_root) / r["file_name"])
        r["label_path"] = str(Path(split.image_root) / r["label_file"])
    return rows


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """The test procedure one image at a time (``test.cpu_threads`` on a CPU): per image ``{"confusion": (flat
    indices, counts) of its [C, C] confusion matrix, "png": the predicted training-id map as PNG bytes}``.

    The test procedure is ``recipe.test`` (module docstring; :func:`hrnet_core.evaluation.seg_inference.image_scores`,
    HRNet-Semantic-Segmentation ``lib/core/function.py`` ``testval``); the confusion matrix is built on ``device``.
    fp32.
    """
    from hrnet_core.data.segmentation import layout_from_meta

    layout = layout_from_meta(split.manifest)
    perm = layout.flip_permutation() if layout.flip_pairs else None
    cfg = inference_settings(recipe, layout.num_classes, perm, model_align_corners(recipe.model.name))
    run = functools.partial(_predict_images, model, cfg, layout.lut_array(), device)
    return BatchPredictor(run=run, batch_size=1, cpu_threads=int(recipe.test.cpu_threads), unit="img")


def inference_settings(recipe, num_classes: int, flip_permutation: Sequence[int] | None, align_corners: bool):
    """:class:`hrnet_core.evaluation.seg_inference.InferenceSettings` of the recipe's ``test`` / ``data`` sections:
    the window is ``test.crop_size`` or the training crop ``data.input_size``."""
    from hrnet_core.evaluation.seg_inference import InferenceSettings

    d, t = recipe.data, recipe.test
    crop = tuple(int(v) for v in (t.crop_size or d.input_size))
    return InferenceSettings(num_classes=num_classes, mode=t.mode, crop=crop, stride=t.stride, flip=t.flip,
                             flip_permutation=flip_permutation, scales=t.scales, base_size=d.base_size,
                             align_corners=align_corners, mean=d.mean, std=d.std)


def _predict_images(model, cfg, lut: np.ndarray, device, items: Sequence[dict[str, Any]]) -> Predictions:
    """Confusion matrix and PNG of each image of ``items``."""
    from hrnet_core.evaluation.seg_inference import predict_images

    return Predictions(predict_images(model, cfg, lut, device, items))


def concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions([v for p in parts for v in p.values])


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """mIoU / pixel_acc / mean_acc / IoU per class (percent) of the summed confusion matrices, plus
    ``eval_items``; with ``out_dir`` also ``predictions.json``, ``confusion_matrix.csv`` and (``test.save_label_pngs``)
    ``labels/<image stem>.png`` in the dataset's own ids (:func:`hrnet_core.evaluation.seg_outputs.write_outputs`)."""
    from hrnet_core.data.segmentation import layout_from_meta
    from hrnet_core.evaluation.miou import dense_confusion, segmentation_metrics
    from hrnet_core.evaluation.seg_outputs import write_outputs

    layout = layout_from_meta(split.manifest)
    n = layout.num_classes
    cms = [dense_confusion(v["confusion"], n) for v in predictions.values]
    total = np.sum(cms, axis=0) if cms else np.zeros((n, n), np.int64)
    metrics = segmentation_metrics(total, layout.classes)
    metrics["eval_items"] = float(len(items))
    if out_dir is not None:
        write_outputs(out_dir, items, predictions.values, cms, total, layout, split.dataset,
                      bool(getattr(recipe.test, "save_label_pngs", True)))
    return metrics


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """``<out_dir>/<image stem>.jpg``: image | ground truth | prediction side by side, colour-coded with the dataset
    palette (ignore black), for the first ``num_images`` images
    (:func:`hrnet_core.evaluation.seg_drawing.save_drawings`)."""
    from hrnet_core.data.segmentation import layout_from_meta
    from hrnet_core.evaluation.seg_drawing import save_drawings

    return save_drawings(items, predictions.values, layout_from_meta(split.manifest), out_dir, num_images)


# ------------------------------------------------------------------------------------------------ synthetic data


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Generated scenes (:func:`hrnet_core.data.synthetic_scenes.generate_scenes`, 128x96, 5 classes)."""
    from hrnet_core.data.synthetic_scenes import generate_scenes

    return generate_scenes(out_dir, num_train, num_val, seed, progress=progress)


SYNTHETIC = SyntheticData(generate=generate, splits=(SplitPrep("seg_list", "train"), SplitPrep("seg_list", "val")))

TASK = Task(
    name="segmentation",
    description="semantic segmentation: images -> per-pixel classes (HRNetV2, HRNet-OCR, HRFormer + OCR; mIoU)",
    datasets=DATASETS,
    sections=RecipeSections(data=SegData, augment=SegAugment, test=SegTest, loss=SegLossConfig),
    metrics=MetricSpec(primary="mIoU", higher_is_better=True,
                       names=("mIoU", "pixel_acc", "mean_acc", "mIoU_present", "mean_acc_present"),
                       units="percent (IoU/<class>: per-class IoU, percent)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=sample_transform,
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
