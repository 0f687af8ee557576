"""Bottom-up human pose (HigherHRNet paper, CVPR 2020; FACTS.md section 2): the ``pose_bottomup`` task.

One training sample is one image with all its people: a square crop of the image (scale, rotation, translation,
flip) at ``data.input_size``, with per output resolution (``data.output_size``: 1/4 and 1/2 of the input) the
heatmaps of every person (max over people, std ``data.sigma`` cells), the flat joint indices of up to
``data.max_num_people`` people for the associative-embedding tag loss, and the ignore mask of crowd regions and
people without labelled joints (:mod:`hrnet_core.data.bottomup`).

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- readers ``coco`` (``annotations/person_keypoints_<split>.json`` + ``<split>/``) and ``crowdpose``
  (``json/crowdpose_<split>.json`` + ``images/``, 14 joints, ``crowdIndex``); ``samples.parquet`` has one row per
  image with at least one annotation (the official training set): ``image_id``, ``file_name``, ``width``,
  ``height``, ``crowd_index`` (-1 for COCO), ``num_people``, ``joints`` [N*K*3] (x, y px, visibility), ``ignore``
  (JSON list of the ignore regions' segmentations); evaluation runs on every image of ``images.parquet``;
- batch: ``image`` float32 ``[B, 3, S, S]``; per output ``i``: ``heatmap_i`` float32 ``[B, K, r_i, r_i]``,
  ``mask_i`` float32 ``[B, r_i, r_i]``, ``joints_i`` int64 ``[B, M, K, 2]`` (outputs with tags); ``index`` int64;
- loss (:mod:`hrnet_core.losses.associative_embedding`): masked heatmap MSE at each supervised resolution (factor
  1.0) + AE push / pull on the tags (factors 1e-3), ``{"loss", "heatmap_i", "push_i", "pull_i"}``;
- test procedure (:mod:`hrnet_core.evaluation.bottomup`): short side to the input size, sides up to a multiple of
  64, flip test, heatmap aggregation over outputs, optional multi-scale (``test.scales``), projection to the input
  size; grouping (:mod:`hrnet_core.codecs.grouping`); joints mapped back to image pixels;
- metrics: COCO ``AP, AP50, AP75, APM, APL, AR, ...`` (pycocotools, percent); CrowdPose ``AP, AP50, AP75, AR, ...,
  AP/easy, AP/medium, AP/hard`` (the CrowdPose evaluator's rules, ``hrnet_core.evaluation.crowdpose``); ``predictions.json`` in the COCO results format;
- drawings: predicted skeletons over ground truth;
- synthetic default: the multi-person generated COCO data of the top-down task (:mod:`hrnet_core.data.synthetic`:
  1-3 people, crowd regions, unlabelled far-away people).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.losses.bottomup import BottomUpLoss
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


@dataclass
class BottomUpData(DataConfig):
    """``data:`` of a bottom-up recipe: the shared keys (``input_size`` ``[S, S]``, square) plus the targets.

    ``output_size``: side of each network output in cells (official ``[128, 256]`` for a 512 input); ``sigma``:
    Gaussian std in cells at every resolution (2); ``max_num_people``: people per image in the tag loss (30).
    """

    output_size: list[int]
    sigma: float = 2.0
    max_num_people: int = 30


@dataclass
class BottomUpAugment:
    """``augment:`` (official ``RandomAffineTransform`` + ``RandomHorizontalFlip``): crop side ``short side *
    U(min_scale, max_scale)``, rotation ``U(-max_rotation, max_rotation)`` degrees, translation
    ``randint(+-max_translate * scale)`` px (scale in 200 px), flip with probability 0.5."""

    flip: bool = True
    min_scale: float = 0.75
    max_scale: float = 1.5
    max_rotation: float = 30.0
    max_translate: float = 40.0


@dataclass
class BottomUpTest:
    """``test:`` (official ``TEST`` keys): ``scales`` (multi-scale ``[2, 1, 0.5]``), ``flip``, ``with_heatmaps`` /
    ``with_ae`` (per output: heatmaps averaged = heatmap aggregation; tags used), ``project2image``, ``adjust``,
    ``refine`` and the parser's ``detection_threshold`` (0.1), ``tag_threshold`` (1.0), ``nms_kernel`` (5),
    ``use_detection_val``, ``ignore_too_much``; ``max_num_people`` per joint (30)."""

    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = True
    with_heatmaps: list[bool] = field(default_factory=lambda: [True, True])
    with_ae: list[bool] = field(default_factory=lambda: [True, False])
    project2image: bool = True
    adjust: bool = True
    refine: bool = True
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    use_detection_val: bool = True
    ignore_too_much: bool = False
    max_num_people: int = 30
    num_vis_images: int = 6


@dataclass
class BottomUpLossConfig:
    """``train.loss:`` (official ``LOSS`` keys), one entry per output: ``with_heatmaps_loss``,
    ``heatmaps_loss_factor`` (1.0), ``with_ae_loss`` (1/4 only), ``push_loss_factor`` / ``pull_loss_factor``
    (1e-3); ``ae_loss_type`` ``exp``."""

    with_heatmaps_loss: list[bool] = field(default_factory=lambda: [True, True])
    heatmaps_loss_factor: list[float] = field(default_factory=lambda: [1.0, 1.0])
    with_ae_loss: list[bool] = field(default_factory=lambda: [True, False])
    push_loss_factor: list[float] = field(default_factory=lambda: [0.001, 0.001])
    pull_loss_factor: list[float] = field(default_factory=lambda: [0.001, 0.001])
    ae_loss_type: str = "exp"


def num_outputs(recipe) -> int:
    """Outputs of the recipe's network: ``model.num_deconvs + 1`` (HigherHRNet default 1 deconv module)."""
    nd = recipe.model.num_deconvs
    return 1 + (1 if nd is None else int(nd))


def ae_outputs(recipe) -> list[bool]:
    """Per output, whether the network predicts tags there (``model.ae_outputs``, default the 1/4 output only)."""
    n = num_outputs(recipe)
    return list(recipe.model.ae_outputs) if recipe.model.ae_outputs is not None else [True] + [False] * (n - 1)


def validate(recipe) -> None:
    """Cross-field checks of a bottom-up recipe.

    Raises:
        ConfigError: naming the key (square input, output sizes per network output, per-output lists, joint count of
            the dataset, loss/tag consistency, thresholds).
    """

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    d, t, loss = recipe.data, recipe.test, recipe.train.loss
    check_zoo_model(recipe.model)
    need(recipe.model.name.startswith("higher_hrnet"), "model.name",
         f"{recipe.model.name!r} is not a bottom-up network (higher_hrnet_w32 / w48)")
    need(len(d.input_size) == 2 and d.input_size[0] == d.input_size[1] and d.input_size[0] % 64 == 0,
         "data.input_size", f"{d.input_size}: the bottom-up input is square, a multiple of 64")
    n = num_outputs(recipe)
    expected = [d.input_size[0] // 4 * 2**i for i in range(n)]
    need(list(d.output_size) == expected, "data.output_size",
         f"{d.output_size} does not match the {n} network outputs (input / 4 * 2^i: {expected})")
    need(d.sigma > 0, "data.sigma", "must be > 0")
    need(d.max_num_people > 0, "data.max_num_people", "must be > 0")
    k = {"coco": 17, "crowdpose": 14}.get(d.dataset)
    need(k is not None, "data.dataset", f"{d.dataset!r}: bottom-up readers are coco and crowdpose")
    need(recipe.model.num_joints in (None, k), "model.num_joints", f"{recipe.model.num_joints} but {d.dataset} has "
         f"{k} joints")
    ae = ae_outputs(recipe)
    for key, value in (("train.loss.with_heatmaps_loss", loss.with_heatmaps_loss),
                       ("train.loss.heatmaps_loss_factor", loss.heatmaps_loss_factor),
                       ("train.loss.with_ae_loss", loss.with_ae_loss),
                       ("train.loss.push_loss_factor", loss.push_loss_factor),
                       ("train.loss.pull_loss_factor", loss.pull_loss_factor),
                       ("test.with_heatmaps", t.with_heatmaps), ("test.with_ae", t.with_ae)):
        need(len(value) == n, key, f"{list(value)} needs one entry per network output ({n})")
    for i in range(n):
        need(not loss.with_ae_loss[i] or ae[i], "train.loss.with_ae_loss",
             f"output {i} has no tags (model.ae_outputs={ae})")
        need(not t.with_ae[i] or ae[i], "test.with_ae", f"output {i} has no tags (model.ae_outputs={ae})")
    need(any(t.with_ae), "test.with_ae", "grouping needs the tags of at least one output")
    need(any(h and w for h, w in zip(t.with_heatmaps, loss.with_heatmaps_loss)), "test.with_heatmaps",
         "no output with heatmaps is used at test time")
    need(loss.ae_loss_type in ("exp", "max"), "train.loss.ae_loss_type", "must be 'exp' or 'max'")
    need(len(t.scales) > 0 and 1.0 in t.scales, "test.scales", f"{t.scales} must contain 1 (the tags' scale)")
    need(t.nms_kernel % 2 == 1, "test.nms_kernel", "must be odd")
    a = recipe.augment
    need(0 < a.min_scale <= a.max_scale, "augment.min_scale", "need 0 < min_scale <= max_scale")


# ------------------------------------------------------------------------------------------------ readers


def _coco_layout(split: str) -> dict[str, str]:
    return {"annotations": f"annotations/person_keypoints_{split}.json", "images": split}


def _crowdpose_layout(split: str) -> dict[str, str]:
    return {"annotations": f"json/crowdpose_{split}.json", "images": "images"}


def _read(src: SourceFiles, expected_joints: int, dataset: str) -> PreparedRows:
    """A COCO-format keypoint split -> rows (one per image with an annotation) + the image table."""
    import pandas as pd

    from hrnet_core.data.bottomup import BottomUpAnnotations, image_row
    from hrnet_core.data.io import AnnotationError

    ann = BottomUpAnnotations(src.files["annotations"], src.files["images"])
    if ann.spec.num_joints != expected_joints:
        raise AnnotationError(f"{src.files['annotations']}: {ann.spec.num_joints} joints per person, but {dataset} "
                              f"has {expected_joints}")
    images = pd.DataFrame([{k: r[k] for k in ("image_id", "file_name", "width", "height")} for r in ann.images],
                          columns=["image_id", "file_name", "width", "height"])
    samples = pd.DataFrame([image_row(r) for r in ann.images if r["num_annotations"] > 0])
    return PreparedRows(images=images, samples=samples, image_root=Path(src.files["images"]),
                        files={"annotations": Path(src.files["annotations"])},
                        meta={"num_joints": ann.spec.num_joints, "keypoint_layout": ann.spec.name})


def _read_coco(src: SourceFiles) -> PreparedRows:
    return _read(src, 17, "coco")


def _read_crowdpose(src: SourceFiles) -> PreparedRows:
    return _read(src, 14, "crowdpose")


_INPUTS = {"annotations": "keypoint annotation file (COCO format)", "images": "image folder"}

DATASETS: dict[str, DatasetReader] = {
    "coco": DatasetReader(
        name="coco", description="COCO person keypoints, all people per image (person_keypoints_<split>.json + "
                                 "<split>/)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_coco_layout, read=_read_coco,
        downloads={"train2017": ("http://images.cocodataset.org/zips/train2017.zip",
                                 "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"),
                   "val2017": ("http://images.cocodataset.org/zips/val2017.zip",
                               "http://images.cocodataset.org/annotations/annotations_trainval2017.zip")}),
    "crowdpose": DatasetReader(
        name="crowdpose", description="CrowdPose, 14 joints, crowd index (json/crowdpose_<split>.json + images/; "
                                      "trainval, test)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_crowdpose_layout, read=_read_crowdpose),
}


def keypoint_spec(dataset: str):
    """COCO or CrowdPose :class:`~hrnet_core.data.keypoints.KeypointSpec`."""
    from hrnet_core.data.keypoints import get_keypoint_spec

    return get_keypoint_spec(dataset)


# ------------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True)
class BottomUpSample:
    """The per-sample function of a recipe and split (picklable; builds its transform on first use).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image``, ``heatmap_i``, ``mask_i``, ``joints_i`` (see
    :class:`~hrnet_core.data.bottomup.BottomUpTransform`).

    Raises (on call):
        hrnet_core.data.io.ImageReadError: the image is missing or corrupt (names the file).
    """

    image_root: str
    dataset: str
    input_size: int
    output_sizes: tuple[int, ...]
    sigma: float
    max_num_people: int
    with_joints: tuple[bool, ...]
    flip: bool
    min_scale: float
    max_scale: float
    max_rotation: float
    max_translate: float
    train: bool = True

    @functools.cached_property
    def transform(self):
        from hrnet_core.data.bottomup import BottomUpTransform

        spec = keypoint_spec(self.dataset)
        return BottomUpTransform(num_joints=spec.num_joints, input_size=self.input_size,
                                 output_sizes=self.output_sizes, sigma=self.sigma, flip_pairs=spec.flip_pairs,
                                 max_num_people=self.max_num_people, train=self.train, min_scale=self.min_scale,
                                 max_scale=self.max_scale, max_rotation=self.max_rotation,
                                 max_translate=self.max_translate, flip=self.flip, with_joints=self.with_joints)

    def record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row -> ``{"image_file", "joints" [N, K, 3], "ignore" [...]}``."""
        k = keypoint_spec(self.dataset).num_joints
        return {"image_file": str(Path(self.image_root) / str(row["file_name"])),
                "joints": np.asarray(row["joints"], dtype=np.float64).reshape(-1, k, 3),
                "ignore": json.loads(row["ignore"]) if row.get("ignore") else []}

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        from hrnet_core.data.io import read_image

        rec = self.record(row)
        return self.transform(rec, read_image(rec["image_file"]), rng)


def sample_transform(recipe, split, train: bool = True) -> BottomUpSample:
    """The per-sample function of ``recipe`` on ``split``."""
    a, d, loss = recipe.augment, recipe.data, recipe.train.loss
    return BottomUpSample(
        image_root=str(split.image_root), dataset=d.dataset, input_size=int(d.input_size[0]),
        output_sizes=tuple(int(s) for s in d.output_size), sigma=float(d.sigma),
        max_num_people=int(d.max_num_people), with_joints=tuple(bool(x) for x in loss.with_ae_loss), flip=a.flip,
        min_scale=a.min_scale, max_scale=a.max_scale, max_rotation=a.max_rotation, max_translate=a.max_translate,
        train=train)


# ------------------------------------------------------------------------------------------------ loss


def train_step(recipe) -> LossStep:
    """``step(model, batch) -> {"loss": total, heatmap / push / pull parts}`` (HigherHRNet-Human-Pose-Estimation
    ``lib/core/trainer.py`` ``do_train``: ``loss_factory(outputs, heatmaps, masks, joints)``, summed)."""
    return LossStep(BottomUpLoss(recipe.train.loss, keypoint_spec(recipe.data.dataset).num_joints))


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """Every image of the split (``images.parquet``): ``image_id``, ``file_name``, absolute ``image_file``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(split.images_file, columns=["image_id", "file_name"]).to_pylist()
    for r in rows:
        r["image_file"] = str(Path(split.image_root) / r["file_name"])
    return rows


def grouping_params(recipe):
    """The parser settings of the recipe (:class:`hrnet_core.codecs.grouping.GroupingParams`)."""
    from hrnet_core.codecs.grouping import GroupingParams

    t = recipe.test
    return GroupingParams(num_joints=keypoint_spec(recipe.data.dataset).num_joints,
                          max_num_people=t.max_num_people, detection_threshold=t.detection_threshold,
                          tag_threshold=t.tag_threshold, use_detection_val=t.use_detection_val,
                          ignore_too_much=t.ignore_too_much, nms_kernel=t.nms_kernel)


def inference_settings(recipe):
    """:class:`hrnet_core.evaluation.bottomup.InferenceSettings` of the recipe."""
    from hrnet_core.evaluation.bottomup import InferenceSettings

    t, loss = recipe.test, recipe.train.loss
    spec = keypoint_spec(recipe.data.dataset)
    return InferenceSettings(num_joints=spec.num_joints, flip_index=tuple(int(i) for i in spec.flip_index),
                             with_heatmaps=tuple(t.with_heatmaps), with_ae=tuple(t.with_ae),
                             has_heatmaps=tuple(loss.with_heatmaps_loss), has_ae=tuple(ae_outputs(recipe)),
                             flip=t.flip, project2image=t.project2image)


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """The test procedure one image at a time (one intra-op thread on a CPU: on the smoke network's small maps
    intra-op threads cost more than they gain): per image ``(people float32 [P, K, 3] (x, y image px, heatmap value), scores float32
    [P])``, in item order (HigherHRNet-Human-Pose-Estimation ``tools/valid.py``: multi-scale, flip, aggregate,
    group, refine, project to the image)."""
    run = functools.partial(_predict_images, model, recipe, grouping_params(recipe), inference_settings(recipe),
                            device)
    return BatchPredictor(run=run, batch_size=1, cpu_threads=1, unit="image")


def _predict_images(model, recipe, params, cfg, device, items: Sequence[dict[str, Any]]) -> Predictions:
    """People and scores of each image of ``items``."""
    from hrnet_core.codecs.grouping import group
    from hrnet_core.data.io import read_image
    from hrnet_core.evaluation.bottomup import infer_image, to_image

    t, out = recipe.test, []
    for item in items:
        image = read_image(item["image_file"])
        hm, tags, center, scale = infer_image(model, image, int(recipe.data.input_size[0]), t.scales, cfg, device)
        hm, tags = hm.float().cpu(), tags.float().cpu()
        people, scores = group(hm, tags, params, t.adjust, t.refine)
        people = to_image(people, center, scale, (hm.shape[3], hm.shape[2]))
        out.append((people[..., :3].astype(np.float32), scores.astype(np.float32)))
    return Predictions(out)


def concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions([v for p in parts for v in p.values])


def coco_results(items: Sequence[Mapping[str, Any]], predictions: Predictions) -> list[dict[str, Any]]:
    """COCO keypoint results: one entry per predicted person (``image_id``, ``category_id`` 1, ``keypoints`` [K, 3]
    x, y px and heatmap value, ``score`` the person score); the official bottom-up evaluation applies no NMS."""
    results = []
    for item, (people, scores) in zip(items, predictions.values):
        for p, s in zip(people, scores):
            results.append({"image_id": int(item["image_id"]), "category_id": 1,
                            "keypoints": np.asarray(p, dtype=np.float64)[:, :3], "score": float(s)})
    return results


def score_results(results: Sequence[Mapping[str, Any]], ann_file: str | Path, dataset: str,
                  out_dir: str | Path) -> dict[str, float]:
    """Write ``<out_dir>/predictions.json`` and evaluate it: COCO (pycocotools) or CrowdPose (``hrnet_core.evaluation.crowdpose``); metrics
    in percent (areas without ground truth omitted)."""
    from hrnet_core.evaluation.coco_keypoints import evaluate_coco_keypoints, write_coco_results

    pred_file = write_coco_results(results, Path(out_dir) / "predictions.json")
    if not results:
        names = ("AP", "AP50", "AP75", "AR")
        return {n: 0.0 for n in names}
    if dataset == "crowdpose":
        from hrnet_core.evaluation.crowdpose import evaluate_crowdpose

        stats = evaluate_crowdpose(ann_file, pred_file)
    else:
        stats = evaluate_coco_keypoints(ann_file, pred_file)
    return {k: 100.0 * v for k, v in stats.items() if v >= 0}


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """AP / AR (percent) of the predictions (:func:`score_results`) plus ``eval_items`` and ``people`` (predicted
    people); with ``out_dir`` also ``predictions.json`` (COCO results format)."""
    import tempfile

    results = coco_results(items, predictions)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = score_results(results, split.ann_file, recipe.data.dataset, out_dir if out_dir is not None else tmp)
    metrics["eval_items"] = float(len(items))
    metrics["people"] = float(len(results))
    return metrics


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """Predicted skeletons (colour) over ground truth (white) for the first ``num_images`` images, as
    ``<out_dir>/<image_id>.jpg``."""
    from hrnet_core.evaluation.pose_drawing import coco_ground_truth, save_visualisations

    results = coco_results(items, predictions)
    image_files = {int(r["image_id"]): r["image_file"] for r in items}
    gt = coco_ground_truth(split.ann_file)
    return save_visualisations(results, image_files, out_dir, num_images=num_images, ground_truth=gt,
                               joint_thr=recipe.test.detection_threshold)


# ------------------------------------------------------------------------------------------------ synthetic data


# Figures 65-95% of the image height (the top-down default: 45-90%): the bottom-up smoke network sees the whole
# image at 64x64, where a 45% figure shrinks to ~20 px (5 cells of the 1/4 map, with the recipe's crop scale up to
# 1.5) and its joints merge under the std-2 peaks; measured with the smoke profile's exp push at 32 epochs: AP 1.0
# with 65-95% figures (2 Ray workers) vs 0.07 with 45-90% (one process).
BOTTOMUP_SYNTHETIC_PERSON_HEIGHT = (0.65, 0.95)


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Synthetic multi-person COCO-format keypoints (:func:`hrnet_core.data.synthetic.generate_dataset`; 1-3
    figures of 65-95% of the image height, :data:`BOTTOMUP_SYNTHETIC_PERSON_HEIGHT`)."""
    from hrnet_core.data.synthetic import SyntheticConfig, generate_dataset

    cfg = SyntheticConfig(person_height=BOTTOMUP_SYNTHETIC_PERSON_HEIGHT)
    return generate_dataset(out_dir, num_train, num_val, seed, cfg=cfg, progress=progress)


SYNTHETIC = SyntheticData(generate=generate, splits=(SplitPrep("coco", "train2017"), SplitPrep("coco", "val2017")))

TASK = Task(
    name="pose_bottomup",
    description="bottom-up human pose: images -> heatmaps + associative-embedding tags -> people (HigherHRNet; "
                "COCO AP, CrowdPose AP easy/medium/hard)",
    datasets=DATASETS,
    sections=RecipeSections(data=BottomUpData, augment=BottomUpAugment, test=BottomUpTest, loss=BottomUpLossConfig),
    metrics=MetricSpec(primary="AP", higher_is_better=True,
                       names=("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL", "AP/easy",
                              "AP/medium", "AP/hard"),
                       units="percent (COCOeval; CrowdPose keypoints_crowd with easy/medium/hard)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=sample_transform,
    decode_modules=("pycocotools.mask",),  # crowd / instance masks are rasterised per sample
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
