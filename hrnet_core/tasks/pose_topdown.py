"""Top-down human pose (HRNet pose paper, CVPR 2019; FACTS.md section 1): the ``pose_topdown`` task.

One training sample is one person: the crop around the person box (COCO: ground-truth box; MPII: provided
center/scale) is warped to ``data.input_size``, augmented (scale, rotation, flip with the dataset's flip pairs,
half body) and encoded as Gaussian heatmaps of ``data.heatmap_size`` with std ``data.sigma`` heatmap cells.

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- readers ``coco`` (``person_keypoints_*.json`` + images, optional person detection results) and ``mpii`` (the HRNet
  json of MPII + images, optional ``gt_valid.mat`` head boxes); ``samples.parquet`` columns: ``image_id``,
  ``ann_id``, ``file_name``, ``bbox`` [4] px (x, y, w, h), ``joints`` [K*3] (x, y px of the original image,
  visibility 0/1), MPII also ``center`` [2] px, ``scale`` [2] (x 200 px) and ``headbox`` [4];
- batch: ``image`` float32 ``[B, 3, H, W]`` (normalised crops), ``target`` float32 ``[B, K, h, w]`` (heatmaps),
  ``target_weight`` float32 ``[B, K, 1]``, ``index`` int64 ``[B]``;
- loss: joints MSE with target weights (+ optional OHKM), ``{"loss": total}``;
- test procedure: detector (COCO, ``test.use_gt_boxes: false``) or ground-truth boxes, flip test with the flipped
  heatmap shifted one cell, argmax + quarter offset, inverse affine to image pixels; COCO: rescoring, OKS-NMS and
  ``COCOeval`` (AP, AP50, ... in percent); MPII: PCKh@0.5 ("Mean") and @0.1, per joint group;
- drawings: predicted skeletons (colour) over ground truth (white);
- synthetic default: articulated figures in the COCO layout (:mod:`hrnet_core.data.synthetic`).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.data.keypoints import keypoint_spec
from hrnet_core.data.topdown import TopDownSample
from hrnet_core.losses.joints_mse import JointsLoss
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


@dataclass
class TopDownData(DataConfig):
    """``data:`` of a top-down pose recipe: the shared keys plus the heatmap geometry.

    ``heatmap_size`` is ``[W, H]`` in heatmap cells (input / 4 for HRNet); ``sigma`` the Gaussian std in heatmap
    cells.
    """

    heatmap_size: list[int]
    sigma: float


@dataclass
class TopDownAugment:
    """``augment:``: training augmentation of the top-down pipeline (FACTS.md section 1).

    ``scale_factor``: scale ~ clip(N(0,1) * f + 1, 1 - f, 1 + f); ``rotation_factor`` in degrees, applied with
    ``rotation_prob``; half body when more than ``half_body_min_joints`` joints are visible, with ``half_body_prob``.
    """

    flip: bool = True
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8


@dataclass
class TopDownTest:
    """``test:``: the test procedure (FACTS.md section 1).

    ``use_gt_boxes=False`` uses the prepared split's person detection file (the paper's numbers);
    ``det_score_thr`` drops weaker detections; ``joint_score_thr`` (in_vis_thre) selects joints for the person
    score; ``oks_nms_thr`` is the OKS-NMS threshold; ``flip`` averages with the flipped image, whose heatmap is
    shifted one heatmap cell right when ``shift_heatmap``.
    """

    flip: bool = True
    shift_heatmap: bool = True
    use_gt_boxes: bool = False
    det_score_thr: float = 0.0
    joint_score_thr: float = 0.2
    oks_nms_thr: float = 0.9
    batch_size: int = 64
    num_vis_images: int = 6


@dataclass
class JointsMSELossConfig:
    """``train.loss:``: joints MSE (mean over joints of 0.5 * MSE(pred * w, gt * w)); ``ohkm_topk`` enables OHKM."""

    use_target_weight: bool = True
    ohkm_topk: int | None = None


# branches of an HRNet / HRFormer backbone with the standard three multi-resolution stages (every pose zoo entry)
STANDARD_NUM_BRANCHES = 4


def validate(recipe) -> None:
    """Cross-field checks of a top-down recipe (heatmap geometry, heatmap branch, probabilities, zoo model keys).

    Raises:
        ConfigError: naming the key.
    """

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    d = recipe.data
    v = d.heatmap_size
    need(len(v) == 2 and all(x > 0 for x in v), "data.heatmap_size", f"expected [W, H] of positive ints, got {v}")
    iw, ih = d.input_size
    hw, hh = d.heatmap_size
    need(iw * hh == ih * hw, "data.heatmap_size", f"{d.heatmap_size} has a different aspect than input {d.input_size}")
    need(d.sigma > 0, "data.sigma", "must be > 0")
    check_zoo_model(recipe.model)
    m = recipe.model
    need(m.num_joints is None or m.num_joints > 0, "model.num_joints", "must be > 0")
    b = m.heatmap_branch
    if b is not None:
        num_branches = len(m.stage_modules) + 1 if m.stage_modules is not None else STANDARD_NUM_BRANCHES
        need(0 <= b < num_branches, "model.heatmap_branch", f"{b} is not a branch of the backbone (0 .. {num_branches - 1})")
        stride = 4 * 2**b
        expected = [iw / stride, ih / stride]
        need([hw, hh] == expected, "data.heatmap_size",
             f"{d.heatmap_size} does not match model.heatmap_branch={b}: the heatmaps of branch {b} have "
             f"stride {stride}, so data.input_size {d.input_size} needs data.heatmap_size "
             f"[{expected[0]:g}, {expected[1]:g}]" + ("" if all(x.is_integer() for x in expected) else
                                                       f" (input size not divisible by {stride})"))
    a = recipe.augment
    need(0.0 <= a.rotation_prob <= 1.0, "augment.rotation_prob", "must be in [0, 1]")
    need(0.0 <= a.half_body_prob <= 1.0, "augment.half_body_prob", "must be in [0, 1]")
    need(recipe.test.batch_size > 0, "test.batch_size", "must be > 0")


# ------------------------------------------------------------------------------------------------ readers


def _coco_layout(split: str) -> dict[str, str]:
    return {"annotations": f"annotations/person_keypoints_{split}.json", "images": split}


def _mpii_layout(split: str) -> dict[str, str]:
    return {"annotations": f"annot/{split}.json", "images": "images"}


def _read_coco(src: SourceFiles) -> PreparedRows:
    """COCO keypoints split -> rows (one per person with labelled joints; crowd regions dropped)."""
    from hrnet_core.data.topdown_rows import coco_keypoint_tables

    img_root = src.files["images"]
    tables = coco_keypoint_tables(src.files["annotations"], img_root)
    files = {"annotations": src.files["annotations"]}
    if "detections" in src.files:
        files["detections"] = src.files["detections"]
    return PreparedRows(images=tables.images, samples=tables.samples, image_root=img_root, files=files,
                        meta={"num_joints": tables.num_joints})


def _read_mpii(src: SourceFiles) -> PreparedRows:
    """MPII (HRNet json) split -> rows (one per person with labelled joints, provided center/scale)."""
    from hrnet_core.data.topdown_rows import mpii_keypoint_tables

    img_root = src.files["images"]
    tables = mpii_keypoint_tables(src.files["annotations"], img_root, headboxes=src.files.get("headboxes"))
    files = {"annotations": src.files["annotations"]}
    if "headboxes" in src.files:
        files["headboxes"] = src.files["headboxes"]
    return PreparedRows(images=tables.images, samples=tables.samples, image_root=img_root, files=files,
                        meta={"num_joints": tables.num_joints})


_KEYPOINT_INPUTS = {"annotations": "annotation file", "images": "image folder"}

DATASETS: dict[str, DatasetReader] = {
    "coco": DatasetReader(
        name="coco", description="COCO person keypoints (person_keypoints_<split>.json + <split>/; CrowdPose-style json too)",
        inputs={**_KEYPOINT_INPUTS, "detections": "person detection results json (evaluation boxes)"},
        required=("annotations", "images"), default_layout=_coco_layout, read=_read_coco,
        downloads={"train2017": ("http://images.cocodataset.org/zips/train2017.zip",
                                 "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"),
                   "val2017": ("http://images.cocodataset.org/zips/val2017.zip",
                               "http://images.cocodataset.org/annotations/annotations_trainval2017.zip")}),
    "mpii": DatasetReader(
        name="mpii", description="MPII human pose, HRNet json (annot/<split>.json + images/)",
        inputs={**_KEYPOINT_INPUTS, "headboxes": "head boxes for PCKh (annot/gt_valid.mat or json)"},
        required=("annotations", "images"), default_layout=_mpii_layout, read=_read_mpii,
        # images from the MPII site; the HRNet json annotations (train/valid/gt_valid.mat) come with the official
        # HRNet code's data instructions
        downloads={s: ("https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz",)
                   for s in ("train", "valid")}),
}


# ------------------------------------------------------------------------------------------------ samples


def sample_transform(recipe, split, train: bool = True) -> TopDownSample:
    """The per-sample function of ``recipe`` on ``split`` (data geometry and augmentation of the recipe)."""
    a, d = recipe.augment, recipe.data
    return TopDownSample(
        image_root=str(split.image_root), dataset=d.dataset, num_joints=int(split.manifest["num_joints"]),
        input_size=(int(d.input_size[0]), int(d.input_size[1])),
        heatmap_size=(int(d.heatmap_size[0]), int(d.heatmap_size[1])), sigma=float(d.sigma), flip=a.flip,
        scale_factor=a.scale_factor, rotation_factor=a.rotation_factor, rotation_prob=a.rotation_prob,
        half_body_prob=a.half_body_prob, half_body_min_joints=a.half_body_min_joints, train=train)


# ------------------------------------------------------------------------------------------------ model + loss


def train_step(recipe) -> LossStep:
    """``step(model, batch) -> {"loss": joints MSE}`` of the recipe's ``train.loss`` (deep-high-resolution-net.pytorch
    ``lib/core/function.py`` ``train``: ``criterion(model(input), target, target_weight)``)."""
    loss = recipe.train.loss
    return LossStep(JointsLoss(loss.use_target_weight, loss.ohkm_topk))


# ------------------------------------------------------------------------------------------------ evaluation


def eval_reader(recipe, split):
    """The reader with the people to predict, per the recipe's test settings.

    COCO: :class:`~hrnet_core.data.coco.CocoKeypoints` on the split's annotations, with the split's detection file
    unless ``test.use_gt_boxes``; MPII: :class:`~hrnet_core.data.mpii.MpiiKeypoints` with head boxes.

    Raises:
        hrnet_core.data.prepared.DataError: detector boxes requested but the split has no detection file; MPII
        records without head boxes.
    """
    from hrnet_core.data.prepared import DataError

    aspect = recipe.data.input_size[0] / recipe.data.input_size[1]
    if recipe.data.dataset == "coco":
        from hrnet_core.data.coco import CocoKeypoints

        if recipe.test.use_gt_boxes:
            return CocoKeypoints(split.ann_file, split.image_root, use_gt_boxes=True, aspect_ratio=aspect)
        if split.detections is None:
            raise DataError(f"recipe {recipe.name} evaluates with detector boxes (test.use_gt_boxes=false) but "
                            f"{str(split.dir)!r} has no detections.json; prepare it with --detections or set "
                            f"test.use_gt_boxes=true")
        return CocoKeypoints(split.ann_file, split.image_root, detections=split.detections,
                             det_score_thr=recipe.test.det_score_thr, use_gt_boxes=False, aspect_ratio=aspect)
    from hrnet_core.data.mpii import MpiiKeypoints

    reader = MpiiKeypoints(split.ann_file, split.image_root, headbox_file=split.headboxes)
    missing = sum(1 for r in reader.records if r.get("headbox") is None)
    if missing:
        raise DataError(f"{missing} of {len(reader.records)} MPII records in {str(split.dir)!r} have no head box "
                        f"(PCKh needs them); prepare the split with --headboxes annot/gt_valid.mat")
    return reader


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """People to predict (records with ``image_file``, ``center``, ``scale``, ``score``, ``area``, ...).

    COCO with ground-truth boxes (``test.use_gt_boxes``): the prepared rows themselves (``samples.parquet``: every
    non-crowd person with labelled joints, the reader's ground-truth records), with center/scale for the recipe's
    aspect ratio. Detector boxes and MPII: :func:`eval_reader` (the split's detection file / head boxes).
    """
    if recipe.data.dataset == "coco" and recipe.test.use_gt_boxes:
        return prepared_gt_items(recipe, split)
    return list(eval_reader(recipe, split).records)


def prepared_gt_items(recipe, split) -> list[dict[str, Any]]:
    """Ground-truth-box eval records of a COCO split from its ``samples.parquet`` rows (no annotation parsing)."""
    import pyarrow.parquet as pq

    fn = sample_transform(recipe, split, train=False)
    items = []
    for row in pq.read_table(split.samples_file).to_pylist():
        rec = fn.record(row)
        rec["area"] = float(rec["scale"][0] * rec["scale"][1] * 200.0**2)  # padded box, as the official OKS-NMS uses
        rec["bbox"] = np.asarray(row["bbox"], dtype=np.float64)
        rec["ann_id"] = int(row["ann_id"])
        items.append(rec)
    return items


def inference_network(model, device="cpu"):
    """The network :func:`predict` runs: an eval-mode copy of ``model`` with BatchNorm folded into the convolutions
    (:func:`hrnet_core.models.fold.fold_batchnorm`) on ``device`` in channels-last memory format (oneDNN / cuDNN NHWC
    kernels: ~1.4x less CPU time than NCHW for HRNet-W32 at 256x192, ``benchmarks/bench_eval.py``); on a CPU it runs
    :data:`~hrnet_core.models.microbatch.CPU_MICRO_BATCH` crops per call (:class:`~hrnet_core.models.microbatch.
    MicroBatched`: cache-resident feature maps, ~10 % less time per crop than a flip-tested batch of 64). ``model`` is
    not touched."""
    import torch

    from hrnet_core.models.fold import fold_batchnorm
    from hrnet_core.models.microbatch import MicroBatched

    net = fold_batchnorm(getattr(model, "_orig_mod", model)).to(device, memory_format=torch.channels_last)
    return MicroBatched(net) if torch.device(device).type == "cpu" else net


def predictor(model, recipe, split, device="cpu", *, folded=None) -> BatchPredictor:
    """The test procedure per batch of ``test.batch_size`` people (eval items or detector boxes): keypoints
    ``[b, K, 3]`` (x, y original-image px, heatmap maximum) in item order.

    ``folded``: :func:`inference_network` (or ``fold_batchnorm(model)``) already on ``device``, for callers that
    predict many small batches with one network (the pose tracker, frame by frame); folding copies the network, so
    it is done once there.

    The official test procedure (deep-high-resolution-net.pytorch ``lib/core/function.py`` ``validate``: flip test
    with shifted flipped heatmaps, ``get_final_preds``: argmax + quarter offset, inverse crop affine), run the fast
    way (issue 16): :func:`inference_network` (BatchNorm folded, channels-last; ``model`` itself is not touched),
    original and mirrored crops in one forward (:func:`~hrnet_core.codecs.heatmap.flip_test_one_forward`),
    ``torch.inference_mode``, decoding on the model's device (:func:`~hrnet_core.codecs.heatmap.decode_on_device`),
    the next batch read and warped by the loop's background thread meanwhile. fp32; predictions equal the plain
    two-forward loop's to float rounding (test).
    """
    from hrnet_core.data.transforms import TopDownTransform
    from hrnet_core.evaluation.topdown import CropLoader

    d = recipe.data
    flip_pairs = keypoint_spec(d.dataset, int(split.manifest["num_joints"])).flip_pairs
    transform = TopDownTransform(d.input_size, d.heatmap_size, d.sigma, flip_pairs, train=False)
    net = folded if folded is not None else inference_network(model, device)
    run = functools.partial(_predict_crops, net, recipe, flip_pairs, device)
    return BatchPredictor(run=run, batch_size=int(recipe.test.batch_size), load=CropLoader(transform),
                          unit="person")


def _predict_crops(net, recipe, flip_pairs, device, batch: Mapping[str, np.ndarray]) -> Predictions:
    """Keypoints ``[b, K, 3]`` of one loaded batch (:func:`hrnet_core.evaluation.topdown.predict_crops`)."""
    from hrnet_core.evaluation.topdown import predict_crops

    t = recipe.test
    return Predictions(predict_crops(net, flip_pairs, device, batch, flip=t.flip, shift_heatmap=t.shift_heatmap,
                                     heatmap_size=recipe.data.heatmap_size))


def concat(parts: Sequence[Predictions]) -> Predictions:
    """Keypoints ``[N, K, 3]`` of batches / shards in order (empty ones skipped)."""
    arrays = [p.values for p in parts if len(p.values)]
    return Predictions(np.concatenate(arrays) if arrays else np.zeros((0, 0, 3), np.float32))


def _coco_results(items, preds: np.ndarray, recipe, num_joints: int, sigmas):
    """COCO results of the recipe's test thresholds (:func:`hrnet_core.evaluation.topdown.coco_results`)."""
    from hrnet_core.evaluation.topdown import coco_results

    return coco_results(items, preds, num_joints, sigmas, in_vis_thr=recipe.test.joint_score_thr,
                        oks_thr=recipe.test.oks_nms_thr)


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of the predictions; with ``out_dir`` also ``predictions.json`` (COCO results format; MPII: per-record
    joints).

    Returns:
        COCO: ``AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL`` in percent (areas without ground truth
        omitted); MPII: ``PCKh`` (Mean@0.5), ``PCKh_0.1`` (Mean@0.1; MLflow names allow no "@") and per-joint-group
        ``PCKh/<group>``; plus ``eval_items`` (people scored).
    """
    preds = predictions.values
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(out_dir) if out_dir is not None else Path(tmp)
        pred_dir.mkdir(parents=True, exist_ok=True)
        if recipe.data.dataset == "coco":
            from hrnet_core.evaluation.coco_keypoints import evaluate_coco_keypoints, write_coco_results
            from pycocotools.coco import COCO
            import contextlib
            import io

            k = int(split.manifest["num_joints"])
            sigmas = None if k == 17 else keypoint_spec("coco", k).sigmas
            results = _coco_results(items, preds, recipe, k, sigmas)
            pred_file = write_coco_results(results, pred_dir / "predictions.json")
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(str(split.ann_file))
            stats = evaluate_coco_keypoints(gt, pred_file, sigmas=sigmas)
            metrics.update({key: 100.0 * v for key, v in stats.items() if v >= 0})
        else:
            from hrnet_core.evaluation.pckh import pckh_metrics, write_mpii_predictions

            metrics.update(pckh_metrics(preds, items))
            write_mpii_predictions(items, preds, pred_dir / "predictions.json")
    metrics["eval_items"] = float(len(items))
    return metrics


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """Predicted skeletons (colour, after rescoring and OKS-NMS for COCO) over ground truth (white) for the first
    ``num_images`` images, as ``<out_dir>/<image_id>.jpg``."""
    from hrnet_core.evaluation.pose_drawing import coco_ground_truth, record_ground_truth, save_visualisations

    preds = predictions.values
    image_files = {int(r["image_id"]): r["image_file"] for r in items}
    if recipe.data.dataset == "coco":
        k = int(split.manifest["num_joints"])
        results = _coco_results(items, preds, recipe, k, None if k == 17 else keypoint_spec("coco", k).sigmas)
        gt_by_image = coco_ground_truth(split.ann_file)
    else:
        results = [{"image_id": int(r["image_id"]), "keypoints": p, "score": 1.0} for r, p in zip(items, preds)]
        gt_by_image = record_ground_truth(items)
    return save_visualisations(results, image_files, out_dir, num_images=num_images, ground_truth=gt_by_image,
                               joint_thr=recipe.test.joint_score_thr)


# ------------------------------------------------------------------------------------------------ synthetic data


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Synthetic COCO-format person keypoints (:func:`hrnet_core.data.synthetic.generate_dataset`)."""
    from hrnet_core.data.synthetic import generate_dataset

    return generate_dataset(out_dir, num_train, num_val, seed, progress=progress)


SYNTHETIC = SyntheticData(
    generate=generate,
    splits=(SplitPrep("coco", "train2017"),
            SplitPrep("coco", "val2017", {"detections": "person_detection_results/synthetic_val2017_detections_person.json"})),
)

TASK = Task(
    name="pose_topdown",
    description="top-down human pose: person crops -> heatmaps (HRNet pose paper; COCO AP, MPII PCKh)",
    datasets=DATASETS,
    sections=RecipeSections(data=TopDownData, augment=TopDownAugment, test=TopDownTest, loss=JointsMSELossConfig),
    metrics=MetricSpec(primary="AP", higher_is_better=True,
                       names=("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL", "PCKh",
                              "PCKh_0.1"),
                       units="percent (COCO AP/AR from COCOeval; MPII PCKh)", by_dataset={"mpii": "PCKh"}),
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
