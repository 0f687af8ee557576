"""Object detection and instance segmentation with HRNetV2p (HRNetV2 paper Sec. 5, Tables 6-8; FACTS.md section 6):
the ``detection`` task (Faster R-CNN, Mask R-CNN, Cascade R-CNN on torchvision, :mod:`hrnet_core.models.detectors`).

One training sample is one image with its objects: decoded RGB, resized so that the short side is
``data.input_size[1]`` (800) and the long side at most ``data.input_size[0]`` (1333) (mmdetection's ``img_scale
(1333, 800)``, ``keep_ratio``), or with a short side drawn from ``augment.scales`` (multi-scale training), flipped
with probability 0.5; boxes (and masks for Mask R-CNN) follow. Images of different sizes are batched as lists (the
spine's variable-size path); the detector normalises and pads them to a multiple of 32 itself.

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- reader ``coco_det``: COCO instances (``annotations/instances_<split>.json`` + ``<split>/`` images,
  :mod:`hrnet_core.data.coco_instances`); ``samples.parquet`` has one row per image with at least one non-crowd object
  (DET drops images without objects from training): ``image_id``, ``file_name``, ``width``, ``height``, ``boxes``
  [N*4] (x, y, w, h px), ``category_ids`` [N], ``segmentations`` [N] (json strings of the COCO segmentation); the
  annotation file is copied into the split (evaluation reads crowd regions and areas from it);
- batch: ``image`` list of B float32 ``[3, H_i, W_i]`` in ``[0, 1]``, ``targets`` list of B ``{"boxes" float32
  [N_i, 4] xyxy px, "labels" int64 [N_i], "masks" uint8 [N_i, H_i, W_i] (Mask R-CNN)}``, ``index`` int64 ``[B]``;
- loss: the detector's own loss dict (torchvision), ``loss`` = its sum;
- test procedure (official mmdetection-v1 single-scale test, :func:`predictor`): each image resized by mmcv's
  ``imrescale`` rule (:func:`~hrnet_core.data.det_transforms.resize_for_test`), the detector (normalisation, padding
  to 32, score > 0.05, NMS 0.5, 100 per image), boxes clipped and divided by the scale factor, masks pasted as
  ``get_seg_masks`` at ``test.mask_thresh`` and RLE-encoded (:mod:`hrnet_core.evaluation.coco_detection`);
  ``data.box_convention`` (``mmdet_v1``: inclusive boxes, results ``w = x2 - x1 + 1``);
- metrics: pycocotools box AP (``AP``, primary), ``AP50``, ``AP75``, ``APS``, ``APM``, ``APL``, ``AR*`` and, for
  Mask R-CNN, ``mask_AP``...; ``predictions.json`` in the COCO results format
  (:mod:`hrnet_core.evaluation.coco_detection`); drawings: predicted boxes / masks over the image, ground truth in
  white;
- synthetic default: generated scenes of discs, squares and triangles (:mod:`hrnet_core.data.synthetic_objects`).

The network: ``model.name`` is the HRNetV2p zoo entry (``det_hrnetv2p_w18`` .. ``w48``, backbone overrides such as
``width``, ``stage_blocks`` allowed), ``model.detector`` the architecture (``faster_rcnn``, ``mask_rcnn``,
``cascade_rcnn``), ``model.num_classes`` the classes including background (COCO 81); ``model.pretrained``
initialises the HRNet backbone (ImageNet). ``train.loss`` holds DET's ``train_cfg`` (sampling) and ``norm_eval``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.data.coco_instances import coco_det_layout
from hrnet_core.data.det_transforms import DetSample
from hrnet_core.recipes.config import ConfigError, DataConfig

from .base import (BatchPredictor, DatasetReader, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


BOX_CONVENTIONS = ("mmdet_v1", "continuous")


@dataclass
class DetData(DataConfig):
    """``data:`` of a detection recipe. ``input_size`` is ``[long-side cap, short side]`` px (mmdetection's
    ``img_scale=(1333, 800)``): training and test images are resized to short side ``input_size[1]`` unless the
    long side would exceed ``input_size[0]`` (sizes ``int(side * scale + 0.5)``, mmcv ``imrescale``).

    ``box_convention``: ``mmdet_v1`` (default, the official HRNet-Object-Detection code, an mmdetection v1 fork):
    inclusive pixel boxes -- ground truth ``x2 = x + w - 1`` scaled by the one keep-ratio factor, flipped as
    ``W - 1 - x``, clipped to ``[0, W - 1]``; results ``w = x2 - x1 + 1`` (``xyxy2xywh``). ``continuous``: the
    torchvision / COCO-float convention (``x2 = x + w`` scaled per axis, flip ``W - x``, results ``w = x2 - x1``),
    a documented variant, not a paper setting."""

    box_convention: str = "mmdet_v1"


@dataclass
class DetAugment:
    """``augment:``: horizontal flip with probability ``flip_prob``; ``scales``: short sides (px) drawn uniformly
    per training image (multi-scale training; empty: ``data.input_size[1]``)."""

    flip: bool = True
    flip_prob: float = 0.5
    scales: list[int] = field(default_factory=list)


@dataclass
class DetTest:
    """``test:``: post-processing (DET ``test_cfg.rcnn``: score > 0.05, NMS IoU 0.5, 100 per image; RPN 1000
    proposals), mask binarisation threshold, images per forward pass, drawings (``num_vis_images``, boxes drawn above
    ``vis_score_thresh``)."""

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    rpn_post_nms_top_n: int = 1000
    mask_thresh: float = 0.5
    batch_size: int = 2
    num_vis_images: int = 4
    vis_score_thresh: float = 0.3


@dataclass
class DetTrainCfg:
    """``train.loss:`` DET's ``train_cfg``: RPN anchors and R-CNN RoIs sampled per image, RPN proposals kept
    (2000), the width of the 2-FC box head (1024), and ``norm_eval`` (BatchNorm statistics of the backbone frozen in
    training, DET's setting for ImageNet-initialised backbones; a from-scratch smoke run needs false)."""

    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    rpn_post_nms_top_n: int = 2000
    representation_size: int = 1024
    norm_eval: bool = True


def validate(recipe) -> None:
    """Cross-field checks of a detection recipe.

    Raises:
        ConfigError: naming the key (detector, backbone name and overrides, classes, sizes, probabilities).
    """
    from hrnet_core.models.detectors import DETECTORS
    from hrnet_core.models.zoo import model_overrides

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    m = recipe.model
    need(m.name.startswith("det_hrnetv2p_"), "model.name",
         f"{m.name!r} is not an HRNetV2p detection backbone (det_hrnetv2p_w18 / w32 / w40 / w48)")
    try:
        accepted = model_overrides(m.name)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None
    need(m.detector in DETECTORS, "model.detector", f"{m.detector!r} is not one of {DETECTORS}")
    need(m.num_classes is not None and m.num_classes >= 2, "model.num_classes",
         f"{m.num_classes!r}: classes including background are needed (COCO: 81)")
    bad = [k for k in m.build_kwargs() if k not in accepted and k not in _DETECTOR_KEYS]
    need(not bad, "model." + (bad[0] if bad else ""), f"not accepted by {m.name!r}; backbone keys: "
         f"{', '.join(sorted(accepted))}; detector keys: {', '.join(_DETECTOR_KEYS)}")
    d, a, t = recipe.data, recipe.augment, recipe.test
    need(d.input_size[0] >= d.input_size[1], "data.input_size",
         f"{d.input_size} must be [long-side cap, short side] (e.g. [1333, 800])")
    need(all(s > 0 for s in a.scales), "augment.scales", "short sides must be > 0")
    need(0.0 <= a.flip_prob <= 1.0, "augment.flip_prob", "must be in [0, 1]")
    need(d.box_convention in BOX_CONVENTIONS, "data.box_convention", f"{d.box_convention!r}; one of {BOX_CONVENTIONS}")
    need(0.0 < t.mask_thresh < 1.0, "test.mask_thresh", "must be in (0, 1)")
    need(t.batch_size > 0, "test.batch_size", "must be > 0")
    need(t.detections_per_img > 0, "test.detections_per_img", "must be > 0")
    lo = recipe.train.loss
    need(lo.representation_size > 0, "train.loss.representation_size", "must be > 0")


# model keys the detector builder takes (the others go to the HRNetV2p backbone)
_DETECTOR_KEYS = ("detector", "num_classes")

# ------------------------------------------------------------------------------------------------ readers


def read_coco_det(src: SourceFiles) -> PreparedRows:
    """A COCO instances split -> rows (one per image with at least one non-crowd object;
    :func:`~hrnet_core.data.coco_instances.instance_rows`)."""
    from hrnet_core.data.coco_instances import instance_rows

    ann = Path(src.files["annotations"])
    images, samples, meta = instance_rows(ann)
    return PreparedRows(images=images, samples=samples, image_root=Path(src.files["images"]),
                        files={"annotations": ann}, meta=meta)


DATASETS: dict[str, DatasetReader] = {
    "coco_det": DatasetReader(
        name="coco_det", description="COCO instances (annotations/instances_<split>.json + <split>/ images): boxes, "
                                     "polygon / RLE masks, crowd regions",
        inputs={"annotations": "COCO instances json", "images": "image folder"}, required=("annotations", "images"),
        default_layout=coco_det_layout, read=read_coco_det,
        downloads={"train2017": ("http://images.cocodataset.org/zips/train2017.zip",
                                 "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"),
                   "val2017": ("http://images.cocodataset.org/zips/val2017.zip",
                               "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"),
                   "test-dev2017": ("http://images.cocodataset.org/zips/test2017.zip",
                                    "http://images.cocodataset.org/annotations/image_info_test2017.zip")}),
}

# ------------------------------------------------------------------------------------------------ samples


def _categories(split) -> list[dict[str, Any]]:
    cats = split.manifest.get("categories")
    if not cats:
        from hrnet_core.data.prepared import DataError

        raise DataError(f"prepared split {str(split.dir)!r} has no categories in its manifest (prepare it with the "
                        "coco_det reader)")
    return cats


def _check_classes(recipe, split) -> list[dict[str, Any]]:
    cats = _categories(split)
    if recipe.model.num_classes != len(cats) + 1:
        raise ConfigError(f"model.num_classes: {recipe.model.num_classes}, but the split {str(split.dir)!r} has "
                          f"{len(cats)} categories (+1 background = {len(cats) + 1})")
    return cats


def sample_transform(recipe, split, train: bool = True) -> DetSample:
    """The per-sample function of ``recipe`` on ``split``.

    Raises:
        ConfigError: ``model.num_classes`` is not the split's categories + 1.
    """
    from hrnet_core.data.coco_instances import category_labels

    cats = _check_classes(recipe, split)
    a, d = recipe.augment, recipe.data
    return DetSample(image_root=str(split.image_root), labels=tuple(category_labels(cats).items()),
                     short=int(d.input_size[1]), long_cap=int(d.input_size[0]),
                     scales=tuple(int(s) for s in a.scales) if train else (), flip=bool(a.flip and train),
                     flip_prob=float(a.flip_prob), with_masks=recipe.model.detector == "mask_rcnn",
                     box_convention=d.box_convention)


def collate(batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Numpy batch (object arrays where sizes differ, stacked arrays where they happen to agree) -> ``image`` list
    of float32 ``[3, H, W]`` in ``[0, 1]``, ``targets`` list of ``{"boxes", "labels"[, "masks"]}`` tensors,
    ``index`` int64 ``[B]``."""
    import torch

    n = len(batch["image"])
    # copies: the elements of object arrays can be read-only views of Ray's Arrow blocks
    images = [torch.from_numpy(np.multiply(batch["image"][i], 1.0 / 255.0, dtype=np.float32)) for i in range(n)]
    keys = [k for k in ("boxes", "labels", "masks") if k in batch]
    targets = [{k: torch.from_numpy(np.array(batch[k][i])) for k in keys} for i in range(n)]
    for t in targets:
        t["boxes"] = t["boxes"].reshape(-1, 4).float()
        t["labels"] = t["labels"].reshape(-1).long()
    out: dict[str, Any] = {"image": images, "targets": targets}
    if "index" in batch:
        out["index"] = torch.as_tensor(np.asarray(batch["index"], dtype=np.int64))
    return out


# ------------------------------------------------------------------------------------------------ model + loss


def detector_config(recipe, test: bool = True):
    """The :class:`~hrnet_core.models.detectors.DetectorConfig` of ``recipe``."""
    from hrnet_core.models.detectors import DetectorConfig

    t, lo = recipe.test, recipe.train.loss
    return DetectorConfig(
        detector=recipe.model.detector, num_classes=int(recipe.model.num_classes),
        min_size=int(recipe.data.input_size[1]), max_size=int(recipe.data.input_size[0]),
        rpn_batch_size_per_image=lo.rpn_batch_size_per_image, box_batch_size_per_image=lo.box_batch_size_per_image,
        rpn_pre_nms_top_n_train=lo.rpn_post_nms_top_n, rpn_post_nms_top_n_train=lo.rpn_post_nms_top_n,
        rpn_pre_nms_top_n_test=t.rpn_post_nms_top_n, rpn_post_nms_top_n_test=t.rpn_post_nms_top_n,
        box_score_thresh=t.score_thresh, box_nms_thresh=t.nms_thresh, box_detections_per_img=t.detections_per_img,
        representation_size=lo.representation_size)


def build_model(recipe):
    """The recipe's detector: HRNetV2p from the zoo (``model.name`` + backbone overrides; ``model.pretrained``
    ImageNet weights into its HRNet) inside :func:`~hrnet_core.models.detectors.build_detector`; with
    ``train.loss.norm_eval`` the backbone's BatchNorm statistics stay frozen in training.

    Raises:
        FileNotFoundError / CheckpointMismatchError: ``model.pretrained`` missing or not an HRNet of this width.
    """
    from hrnet_core.models import build_model as build_zoo, load_pretrained_backbone
    from hrnet_core.models.detectors import build_detector, set_norm_eval

    kwargs = {k: v for k, v in recipe.model.build_kwargs().items() if k not in _DETECTOR_KEYS}
    backbone = build_zoo(recipe.model.name, **kwargs)
    if recipe.model.pretrained:
        load_pretrained_backbone(backbone, recipe.model.pretrained)
    return set_norm_eval(build_detector(backbone, detector_config(recipe)), recipe.train.loss.norm_eval)


def detector_losses(outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
    """The detector's loss dict -> ``{"loss": sum of its parts, ...parts}`` (per-stage cascade parts are logged
    but already inside ``loss_classifier`` / ``loss_box_reg``)."""
    import re

    parts = dict(outputs)
    return {"loss": sum(v for k, v in parts.items() if not re.search(r"_s\d+$", k)), **parts}


def detector_step(model, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``detector_losses(model(images, targets))``: torchvision detectors return their loss dict in train mode
    (``generalized_rcnn.py``; the official mmdetection v1 ``BaseDetector.forward_train`` the same way)."""
    return detector_losses(model(batch["image"], batch["targets"]), batch)


def train_step(recipe) -> Any:
    """The detectors' training step (:func:`detector_step`); the recipe's loss settings are the model's own."""
    return detector_step


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """Every image of the split (``images.parquet`` rows plus absolute ``image_file``), objects or not."""
    import pyarrow.parquet as pq

    rows = pq.read_table(split.images_file).to_pylist()
    for r in rows:
        r["image_file"] = str(Path(split.image_root) / r["file_name"])
    return rows


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """The official single-scale test per batch of ``test.batch_size`` images (HRNet-Object-Detection
    ``tools/test.py`` on mmdetection v1): per image ``{"image_id", "boxes" float32 [D, 4] xyxy original px, "scores"
    [D], "category_ids" [D], "masks" [D] compressed RLEs (Mask R-CNN)}`` in item order.

    Each image resized by :func:`~hrnet_core.data.det_transforms.resize_for_test`, the detector
    (:func:`~hrnet_core.models.detectors.raw_detections`: normalisation, padding to 32, RPN, R-CNN with score > 0.05,
    NMS 0.5, 100 per image), boxes back to the original image by the scale factor and masks pasted there
    (:func:`~hrnet_core.evaluation.coco_detection.to_original`).
    """
    from hrnet_core.data.coco_instances import category_labels

    cat_of = {label: cid for cid, label in category_labels(_categories(split)).items()}
    run = functools.partial(_predict_images, model, recipe, cat_of, device)
    return BatchPredictor(run=run, batch_size=int(recipe.test.batch_size), unit="image")


def _predict_images(model, recipe, cat_of: Mapping[int, int], device, chunk: Sequence[dict[str, Any]]) -> Predictions:
    """Detections of one batch of images."""
    import torch

    from hrnet_core.data.det_transforms import resize_for_test
    from hrnet_core.data.io import read_image
    from hrnet_core.evaluation.coco_detection import encode_masks, to_original
    from hrnet_core.models.detectors import raw_detections

    t, d = recipe.test, recipe.data
    short, long_cap = int(d.input_size[1]), int(d.input_size[0])
    originals = [read_image(r["image_file"]) for r in chunk]
    resized = [resize_for_test(im, short, long_cap) for im in originals]
    images = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(device).float().div_(255.0)
              for im, _ in resized]
    out = []
    for r, im, (small, s), det in zip(chunk, originals, resized, raw_detections(model, images)):
        o = to_original(det, s, (im.shape[1], im.shape[0]), (small.shape[1], small.shape[0]), d.box_convention,
                        t.mask_thresh)
        p = {"image_id": int(r["image_id"]), "boxes": o["boxes"], "scores": o["scores"],
             "category_ids": np.asarray([cat_of.get(int(v), -1) for v in o["labels"]], dtype=np.int64)}
        if "masks" in o:
            p["masks"] = encode_masks(o["masks"])
        out.append(p)
    return Predictions(out)


def concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions([p for part in parts for p in part.values])


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """COCO box AP (and mask AP for Mask R-CNN) in percent on the items' images, plus ``eval_items``; with
    ``out_dir`` also ``predictions.json`` (COCO results format). A split without annotations (test-dev image info)
    gets only ``eval_items``: its results file goes to the COCO evaluation server."""
    from hrnet_core.evaluation.coco_detection import coco_detection_metrics, results_json

    res = results_json(predictions, recipe.data.box_convention)
    types = ("bbox", "segm") if recipe.model.detector == "mask_rcnn" else ("bbox",)
    ann = split.file("annotations")
    # test-dev: an image-info file without annotations; the results file is for the COCO evaluation server
    metrics = coco_detection_metrics(ann, res, [int(r["image_id"]) for r in items], types) \
        if split.manifest.get("num_objects", 1) else {}
    metrics["eval_items"] = float(len(items))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(json.dumps(res))
    return metrics


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """Ground-truth boxes (white) and predictions above ``test.vis_score_thresh`` of the first ``num_images`` images
    as ``<out_dir>/<image_id>.jpg`` (:func:`~hrnet_core.evaluation.det_drawing.save_detection_drawings`)."""
    from hrnet_core.evaluation.det_drawing import save_detection_drawings

    return save_detection_drawings(items, predictions.values, split.file("annotations"), out_dir, num_images,
                                   recipe.test.vis_score_thresh)


# ------------------------------------------------------------------------------------------------ synthetic data


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Generated object scenes (:func:`hrnet_core.data.synthetic_objects.generate_objects`)."""
    from hrnet_core.data.synthetic_objects import generate_objects

    return generate_objects(out_dir, num_train, num_val, seed, progress=progress)


SYNTHETIC = SyntheticData(generate=generate, splits=(SplitPrep("coco_det", "train2017"), SplitPrep("coco_det", "val2017")))

BOX_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL", "AR1", "AR10", "AR100", "ARS", "ARM", "ARL")

TASK = Task(
    name="detection",
    description="object detection / instance segmentation: Faster, Mask, Cascade R-CNN with HRNetV2p "
                "(HRNetV2 paper; COCO box and mask AP)",
    datasets=DATASETS,
    sections=RecipeSections(data=DetData, augment=DetAugment, test=DetTest, loss=DetTrainCfg),
    metrics=MetricSpec(primary="AP", higher_is_better=True,
                       names=BOX_METRICS + tuple(f"mask_{n}" for n in BOX_METRICS),
                       units="percent (pycocotools COCOeval stats; -1 where no ground truth in the area range)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=sample_transform,
    decode_modules=("pycocotools.mask",),  # crowd / instance masks are rasterised per sample
    collate_fn=collate,
    build_model=build_model,
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
