"""Facial landmark detection (HRNetV2 paper Sec. 4.3, FACTS.md section 4): the ``face_alignment`` task.

One training sample is one face: the square crop of ``scale * 200 * data.crop_padding`` px (1.25) around the
annotated centre is resized to ``data.input_size`` (256x256), augmented (scale U(0.75, 1.25), rotation U(+-30) with
probability 0.6, horizontal flip with the dataset's flip pairs) and encoded as Gaussian heatmaps of
``data.heatmap_size`` (64x64) with std ``data.sigma`` (1.0 for 300W, 1.5 otherwise). ``data.geometry`` picks how:
``official`` (default) is the official HRNet-Facial-Landmark-Detection code's crop (integer box, PIL resize after
``scipy.misc.bytescale``), flip (``W - x``), target (Gaussian on the truncated cell) and decoding (integer image px),
:class:`OfficialFaceTransform` and :func:`hrnet_core.data.faces.official_decode`; ``continuous`` the top-down pose
conventions (:class:`FaceTransform`, :class:`hrnet_core.codecs.heatmap.HeatmapCodec`).

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- readers ``wflw`` (98 points), ``aflw`` (19), ``cofw`` (29), ``300w`` (68): the official HRNet face lists (CSV) or
  COCO-style json (``--annotations test_wflw.json``), :mod:`hrnet_core.data.faces`; ``samples.parquet`` columns:
  ``image_id``, ``ann_id``, ``file_name``, ``center`` [2] px, ``scale`` (face size / 200 px), ``landmarks`` [K*2] px,
  ``box_size`` (AFLW normaliser px, else 0), ``subsets`` (comma-separated subset tags, e.g. ``challenging``);
- batch: ``image`` float32 ``[B, 3, H, W]``, ``target`` float32 ``[B, K, h, w]``, ``target_weight`` float32
  ``[B, K, 1]``, ``index`` int64 ``[B]``;
- loss: heatmap MSE (mean over every heatmap cell, the official ``nn.MSELoss``), ``{"loss": total}``;
- test procedure: the unaugmented crop, the network, optional flip test (the codec's ``flip_test``; the official
  face code tests without it, so ``test.flip`` defaults to false), decoding to image px (official: ``decode_preds``);
- metrics (:mod:`hrnet_core.evaluation.nme`), all in PERCENT, lower is better except AUC: ``NME`` (primary; mean
  per-image NME with the dataset's normaliser), ``FR_0.08``, ``FR_0.1``, ``AUC_0.08``, ``AUC_0.1`` and
  ``NME/<subset>`` for tagged subsets (300W common/challenging, WFLW attributes, AFLW frontal);
- predictions file ``predictions.json`` (per face: image, ids, landmarks px, its NME fraction), ``ced.csv``;
  drawings: predicted landmarks (colour) over ground truth (white) and a CED plot;
- synthetic default: cartoon faces in the 300W layout (:mod:`hrnet_core.data.synthetic_faces`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.data.transforms import TopDownTransform
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


#: values of ``data.geometry``
GEOMETRIES = ("official", "continuous")


@dataclass
class FaceData(DataConfig):
    """``data:`` of a face recipe: the shared keys plus the heatmap geometry.

    ``heatmap_size`` ``[W, H]`` in cells (input / 4); ``sigma`` the Gaussian std in cells (300W 1.0, else 1.5);
    ``crop_padding``: the crop is ``scale * 200 * crop_padding`` px wide (official 1.25), train and test.

    ``geometry`` (crop, flip, heatmap target and decoding, train and test alike):

    - ``official`` (default): the official face code's (:mod:`hrnet_core.data.faces`, "official geometry"): integer
      crop box resized with PIL after ``scipy.misc.bytescale`` (contrast stretched to 0..255, the whole image shrunk
      first when the crop is >= 2x the input), flip to ``W - x``, Gaussian on the truncated heatmap cell, decoding to
      integer image px. The released checkpoints were trained and tested on exactly this;
    - ``continuous``: the top-down pose conventions: sub-pixel ``cv2.warpAffine`` of the full-resolution image (no
      contrast stretch), flip to ``W - 1 - x``, Gaussian on the rounded cell, continuous decoding (argmax + quarter
      offset inside ``2..w-2``, inverse affine without truncation). Cleaner, but not what the official checkpoints saw:
      on 10 real sample faces the test crops differ by 3.8 grey levels on average.
    """

    heatmap_size: list[int]
    sigma: float
    crop_padding: float = 1.25
    geometry: str = "official"


@dataclass
class FaceAugment:
    """``augment:`` (official face code): scale ``U(1 - scale_factor, 1 + scale_factor)``, rotation
    ``U(-rotation_factor, rotation_factor)`` degrees with probability ``rotation_prob``, flip with probability 0.5."""

    flip: bool = True
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6


@dataclass
class FaceTest:
    """``test:``: ``flip`` averages with the mirrored crop (official face test: off, and its ``flip_back`` import is
    missing from the official ``lib/utils/transforms.py``, so it is an extra here); ``shift_heatmap`` shifts the
    flipped heatmap one cell right (top-down pose convention)."""

    flip: bool = False
    shift_heatmap: bool = True
    batch_size: int = 64
    num_vis_images: int = 6


@dataclass
class FaceLossConfig:
    """``train.loss:``: heatmap MSE; ``use_target_weight`` zeroes landmarks whose Gaussian misses the map (official:
    false, every map counts)."""

    use_target_weight: bool = False


def validate(recipe) -> None:
    """Cross-field checks of a face recipe.

    Raises:
        ConfigError: naming the key (heatmap geometry, landmark count of the dataset, probabilities, zoo keys).
    """
    from hrnet_core.data.faces import face_layout

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    d = recipe.data
    need(len(d.heatmap_size) == 2 and all(x > 0 for x in d.heatmap_size), "data.heatmap_size",
         f"expected [W, H] of positive ints, got {d.heatmap_size}")
    iw, ih = d.input_size
    hw, hh = d.heatmap_size
    need(iw == 4 * hw and ih == 4 * hh, "data.heatmap_size",
         f"{d.heatmap_size} is not data.input_size / 4 ({d.input_size}); the face network predicts at stride 4")
    need(d.sigma > 0, "data.sigma", "must be > 0")
    need(d.crop_padding > 0, "data.crop_padding", "must be > 0")
    need(d.geometry in GEOMETRIES, "data.geometry", f"{d.geometry!r} is not one of {', '.join(GEOMETRIES)}")
    need(d.geometry != "official" or (iw == ih and hw == hh), "data.input_size",
         f"{d.input_size}: the official face geometry crops squares (use data.geometry: continuous otherwise)")
    check_zoo_model(recipe.model)
    need(recipe.model.name.startswith("face_"), "model.name", f"{recipe.model.name!r} is not a face network "
         "(face_hrnetv2_w18)")
    k = face_layout(d.dataset).num_landmarks
    need(recipe.model.num_landmarks == k, "model.num_landmarks",
         f"{recipe.model.num_landmarks} but {d.dataset} has {k} landmarks")
    a = recipe.augment
    need(0.0 <= a.rotation_prob <= 1.0, "augment.rotation_prob", "must be in [0, 1]")
    need(0.0 <= a.scale_factor < 1.0, "augment.scale_factor", "must be in [0, 1)")
    need(recipe.test.batch_size > 0, "test.batch_size", "must be > 0")


# ------------------------------------------------------------------------------------------------ readers

# split name -> stem of the official list file ("face_landmarks_<dataset>_<stem>.csv")
_LIST_STEMS: dict[str, dict[str, str]] = {
    "300w": {"full": "valid", "common": "valid_common", "challenging": "valid_challenge"},
    "wflw": {"pose": "test_largepose", "expression": "test_expression", "illumination": "test_illumination",
             "makeup": "test_makeup", "occlusion": "test_occlusion", "blur": "test_blur"},
    "aflw": {"frontal": "test_frontal"},
    "cofw": {},
}


def _layout(dataset: str):
    def layout(split: str) -> dict[str, str]:
        stem = _LIST_STEMS[dataset].get(split, split)
        return {"annotations": f"face_landmarks_{dataset}_{stem}.csv", "images": "images"}

    return layout


def _read(dataset: str, src: SourceFiles) -> PreparedRows:
    """A split of ``dataset`` (official CSV list or COCO-style json) -> rows (one per face)."""
    import pandas as pd

    from hrnet_core.data.faces import face_layout, read_cofw_mat, read_face_coco, read_face_csv, tag_subsets
    from hrnet_core.data.io import AnnotationError

    ann = Path(src.files["annotations"])
    image_root = Path(src.files["images"])
    subsets: list[str] = []
    if ann.suffix == ".json":
        records, image_table = read_face_coco(ann, dataset)
    elif ann.suffix == ".csv":
        records, image_table = read_face_csv(ann, dataset), None
        subsets = tag_subsets(records, ann, dataset)
    elif ann.suffix == ".mat" and dataset == "cofw":  # the official release: images inside, extracted once
        image_root = ann.with_name(f"{ann.stem}_images")
        records, image_table = read_cofw_mat(ann, image_root), None
    else:
        raise AnnotationError(f"{ann}: expected an official face list (.csv), a COCO-style json"
                              f"{' or (COFW) the official .mat' if dataset == 'cofw' else ''}; unknown format")
    if image_table is None:
        ids = {name: i for i, name in enumerate(dict.fromkeys(r.file_name for r in records))}
        images = pd.DataFrame([{"image_id": i, "file_name": f, "width": 0, "height": 0} for f, i in ids.items()],
                              columns=["image_id", "file_name", "width", "height"])
        for r in records:
            r.image_id = ids[r.file_name]
    else:
        images = pd.DataFrame([{"image_id": int(i["id"]), "file_name": str(i["file_name"]),
                                "width": int(i.get("width", 0)), "height": int(i.get("height", 0))}
                               for i in image_table], columns=["image_id", "file_name", "width", "height"])
    if dataset == "aflw":
        bad = [r.ann_id for r in records if not r.box_size > 0]
        if bad:
            raise AnnotationError(f"{ann}: AFLW faces without a box size (the NME normaliser): ann ids {bad[:5]}")
    samples = pd.DataFrame([{
        "image_id": int(r.image_id), "ann_id": int(r.ann_id), "file_name": r.file_name,
        "center": [float(v) for v in r.center], "scale": float(r.scale),
        "landmarks": [float(v) for v in r.landmarks.reshape(-1)], "box_size": float(r.box_size),
        "subsets": ",".join(r.subsets)} for r in records])
    return PreparedRows(images=images, samples=samples, image_root=image_root,
                        files={"annotations": ann},
                        meta={"num_landmarks": face_layout(dataset).num_landmarks, "subsets": subsets})


def _read_wflw(src: SourceFiles) -> PreparedRows:
    return _read("wflw", src)


def _read_aflw(src: SourceFiles) -> PreparedRows:
    return _read("aflw", src)


def _read_cofw(src: SourceFiles) -> PreparedRows:
    return _read("cofw", src)


def _read_300w(src: SourceFiles) -> PreparedRows:
    return _read("300w", src)


_INPUTS = {"annotations": "face list (official HRNet CSV) or COCO-style json", "images": "image folder"}

DATASETS: dict[str, DatasetReader] = {
    "wflw": DatasetReader(
        name="wflw", description="WFLW, 98 points (face_landmarks_wflw_<split>.csv + images/; test subsets pose, "
                                 "expression, illumination, makeup, occlusion, blur)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout("wflw"), read=_read_wflw),
    "aflw": DatasetReader(
        name="aflw", description="AFLW, 19 points, box-size NME (face_landmarks_aflw_<split>.csv + images/; "
                                 "test, frontal)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout("aflw"), read=_read_aflw),
    "cofw": DatasetReader(
        name="cofw", description="COFW, 29 points (the official COFW_{train,test}_color.mat, images extracted beside "
                                 "it as <stem>_images/; or a COCO-style json / CSV list in the 300W column order)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout("cofw"), read=_read_cofw),
    "300w": DatasetReader(
        name="300w", description="300W, 68 points (face_landmarks_300w_<split>.csv + images/; full, common, "
                                 "challenging, test)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout("300w"), read=_read_300w),
}


# ------------------------------------------------------------------------------------------------ samples


def draw_augmentation(rng: np.random.Generator, scale_factor: float, rotation_factor: float, rotation_prob: float,
                      flip: bool) -> tuple[float, float, bool]:
    """The official face augmentation draw (``lib/datasets/face300w.py`` ``__getitem__``): scale multiplier
    ``U(1 - sf, 1 + sf)``, rotation ``U(-rf, rf)`` degrees with probability ``rotation_prob`` (else 0), flip with
    probability 0.5 (when ``flip``). Always four uniforms from ``rng``, so the draw count is fixed per sample.

    Returns:
        ``(scale multiplier, rotation degrees, flipped)``.
    """
    u_scale, u_rot_gate, u_rot, u_flip = rng.random(4)
    mult = 1.0 - scale_factor + 2.0 * scale_factor * float(u_scale)
    rotation = (2.0 * float(u_rot) - 1.0) * rotation_factor if u_rot_gate <= rotation_prob else 0.0
    return mult, rotation, bool(flip and u_flip <= 0.5)


class FaceTransform(TopDownTransform):
    """``data.geometry: continuous``: :class:`~hrnet_core.data.transforms.TopDownTransform` with the face augmentation
    draws (:func:`draw_augmentation`); no half body. Crop (``cv2.warpAffine``), flip (``x' = W - x - 1``, pairs
    swapped), heatmap encoding (rounded cell) and normalisation are the top-down ones.

    Records: ``center`` [2] px, ``scale`` [2] (x 200 px, padding included), ``joints`` [K, 3] px (visibility 1).
    """

    def sample_params(self, record: dict, image_width: int, rng: np.random.Generator):
        center = np.asarray(record["center"], dtype=np.float64).copy()
        scale = np.asarray(record["scale"], dtype=np.float64).copy()
        if not self.train:
            return center, scale, 0.0, False
        mult, rotation, flipped = draw_augmentation(rng, self.scale_factor, self.rotation_factor, self.rotation_prob,
                                                    self.flip)
        return center, scale * mult, rotation, flipped


_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class OfficialFaceTransform:
    """``data.geometry: official``: one face as the official face datasets build it (``lib/datasets/face300w.py``,
    ``wflw.py``, ``aflw.py``, ``cofw.py`` ``__getitem__``; the pieces in :mod:`hrnet_core.data.faces`).

    Train: :func:`draw_augmentation`; a flip mirrors image, points and centre to ``W - x``
    (:func:`~hrnet_core.data.faces.official_flip`). Crop :func:`~hrnet_core.data.faces.official_face_crop` (the image
    as float32, as PIL-loaded officially, except COFW whose ``.mat`` images are uint8: ``float_source``), targets
    :func:`~hrnet_core.data.faces.official_face_targets`, normalisation ``(x / 255 - mean) / std`` in float32.

    Args:
        input_size: crop side px (256). heatmap_size: side in cells (64). sigma: cells. flip_pairs: dataset pairs.
        train: draw the augmentation. float_source: byte-scale the image when it is pre-shrunk (not COFW).

    ``__call__(record, image, rng)``: a :func:`face_record` and its RGB uint8 image ``[H, W, 3]`` -> ``image`` float32
    ``[3, S, S]``, ``target`` float32 ``[K, s, s]``, ``target_weight`` float32 ``[K, 1]``, ``joints`` float32 ``[K, 3]``
    (Gaussian cell x, y, drawn 0/1), ``center`` float32 ``[2]`` and ``scale`` float64 (after augmentation; the centre
    mirrored when flipped), ``rotation``, ``flipped``.

    Raises (on call):
        ValueError: not an RGB uint8 image, or ``train`` without ``rng``.
    """

    input_size: int
    heatmap_size: int
    sigma: float
    flip_pairs: tuple[tuple[int, int], ...]
    train: bool
    float_source: bool = True
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    flip: bool = True

    def __call__(self, record: Mapping[str, Any], image: np.ndarray,
                 rng: np.random.Generator | None = None) -> dict[str, Any]:
        from hrnet_core.data.faces import official_face_crop, official_face_targets, official_flip

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        if self.train and rng is None:
            raise ValueError("OfficialFaceTransform(train=True) needs a numpy.random.Generator")
        center = np.asarray(record["center"], dtype=np.float32)
        scale = float(np.ravel(record["scale"])[0])
        points = np.asarray(record["landmarks"], dtype=np.float64)
        mult, rotation, flipped = (draw_augmentation(rng, self.scale_factor, self.rotation_factor, self.rotation_prob,
                                                     self.flip) if self.train else (1.0, 0.0, False))
        scale = scale * mult
        src = image[:, ::-1] if flipped else image
        if flipped:
            points, center = official_flip(points, center, image.shape[1], self.flip_pairs)
        crop = official_face_crop(src, center, scale, self.input_size, rotation, float_source=self.float_source)
        target, weight, cells = official_face_targets(points, center, scale, rotation, self.heatmap_size, self.sigma)
        normed = (crop.astype(np.float32) / np.float32(255.0) - _MEAN) / _STD
        return {"image": np.ascontiguousarray(normed.transpose(2, 0, 1)), "target": target, "target_weight": weight,
                "joints": np.concatenate([np.nan_to_num(cells, nan=0.0), weight], axis=1).astype(np.float32),
                "center": center, "scale": scale, "rotation": float(rotation), "flipped": flipped}


def face_record(row: Mapping[str, Any], image_root: str | Path, num_landmarks: int, padding: float) -> dict[str, Any]:
    """A ``samples.parquet`` row -> a transform record: absolute ``image_file``, ``center`` [2] px, ``scale`` [2]
    (``row.scale * padding``, square crop), ``joints`` float64 [K, 3] (x, y px, visibility 1), ``landmarks`` [K, 2]."""
    pts = np.asarray(row["landmarks"], dtype=np.float64).reshape(num_landmarks, 2)
    s = float(row["scale"]) * padding
    return {"image_file": str(Path(image_root) / str(row["file_name"])), "image_id": int(row["image_id"]),
            "center": np.asarray(row["center"], dtype=np.float64), "scale": np.array([s, s]),
            "joints": np.concatenate([pts, np.ones((num_landmarks, 1))], axis=1), "landmarks": pts, "score": 1.0}


def build_face_transform(geometry: str, dataset: str, input_size: Sequence[int], heatmap_size: Sequence[int],
                         sigma: float, train: bool, flip: bool = True, scale_factor: float = 0.25,
                         rotation_factor: float = 30.0, rotation_prob: float = 0.6):
    """The sample transform of ``data.geometry`` (:class:`OfficialFaceTransform` or :class:`FaceTransform`) for
    ``dataset`` (its flip pairs; COFW's images are not byte-scaled when pre-shrunk, as its official uint8 ``.mat``
    images). Sizes are ``(W, H)`` px / cells.

    Raises:
        ValueError: unknown ``geometry``.
    """
    from hrnet_core.data.faces import face_layout

    pairs = face_layout(dataset).flip_pairs
    if geometry == "official":
        return OfficialFaceTransform(int(input_size[0]), int(heatmap_size[0]), float(sigma), pairs, train,
                                     float_source=dataset != "cofw", scale_factor=scale_factor,
                                     rotation_factor=rotation_factor, rotation_prob=rotation_prob, flip=flip)
    if geometry == "continuous":
        return FaceTransform(input_size, heatmap_size, sigma, pairs, train=train, scale_factor=scale_factor,
                             rotation_factor=rotation_factor, rotation_prob=rotation_prob, flip=flip,
                             half_body_prob=0.0)
    raise ValueError(f"unknown face geometry {geometry!r}; known: {', '.join(GEOMETRIES)}")


@dataclass(frozen=True)
class FaceSample:
    """The per-sample function of a recipe and split (picklable; builds its transform, :func:`build_face_transform`,
    on first use).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image`` float32 ``[3, H, W]``, ``target`` float32
    ``[K, h, w]``, ``target_weight`` float32 ``[K, 1]``.

    Raises (on call):
        hrnet_core.data.io.ImageReadError: the image is missing or corrupt (names the file).
    """

    image_root: str
    dataset: str
    num_landmarks: int
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float
    padding: float
    flip: bool
    scale_factor: float
    rotation_factor: float
    rotation_prob: float
    train: bool = True
    geometry: str = "official"

    @functools.cached_property
    def transform(self):
        return build_face_transform(self.geometry, self.dataset, self.input_size, self.heatmap_size, self.sigma,
                                    self.train, flip=self.flip, scale_factor=self.scale_factor,
                                    rotation_factor=self.rotation_factor, rotation_prob=self.rotation_prob)

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        from hrnet_core.data.io import read_image

        record = face_record(row, self.image_root, self.num_landmarks, self.padding)
        s = self.transform(record, read_image(record["image_file"]), rng)
        return {"image": s["image"], "target": s["target"].astype(np.float32, copy=False),
                "target_weight": s["target_weight"].astype(np.float32, copy=False)}


def sample_transform(recipe, split, train: bool = True) -> FaceSample:
    """The per-sample function of ``recipe`` on ``split``."""
    a, d = recipe.augment, recipe.data
    return FaceSample(
        image_root=str(split.image_root), dataset=d.dataset, num_landmarks=int(split.manifest["num_landmarks"]),
        input_size=(int(d.input_size[0]), int(d.input_size[1])),
        heatmap_size=(int(d.heatmap_size[0]), int(d.heatmap_size[1])), sigma=float(d.sigma),
        padding=float(d.crop_padding), flip=a.flip, scale_factor=a.scale_factor, rotation_factor=a.rotation_factor,
        rotation_prob=a.rotation_prob, train=train, geometry=d.geometry)


# ------------------------------------------------------------------------------------------------ model + loss




class HeatmapMSE:
    """``(heatmaps [B, K, h, w], batch) -> {"loss": mean((pred - target)^2 [* w])}``: the official face loss
    (``nn.MSELoss``, mean over every cell); with ``use_target_weight`` maps are multiplied by ``target_weight``."""

    def __init__(self, cfg: FaceLossConfig) -> None:
        self.use_target_weight = bool(cfg.use_target_weight)

    def __call__(self, outputs, batch: Mapping[str, Any]) -> dict[str, Any]:
        diff = outputs.float() - batch["target"]
        if self.use_target_weight:
            diff = diff * batch["target_weight"][..., None]
        return {"loss": (diff * diff).mean()}


def train_step(recipe) -> LossStep:
    """``step(model, batch) -> {"loss": heatmap MSE}`` (HRNet-Facial-Landmark-Detection ``lib/core/function.py``
    ``train``: ``criterion(model(inp), target)``)."""
    return LossStep(HeatmapMSE(recipe.train.loss))


# ------------------------------------------------------------------------------------------------ evaluation


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """The faces of the split: ``samples.parquet`` rows (plain lists) plus absolute ``image_file``."""
    import pyarrow.parquet as pq

    rows = pq.read_table(split.samples_file).to_pylist()
    for r in rows:
        r["image_file"] = str(Path(split.image_root) / r["file_name"])
    return rows


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """The test procedure per batch of ``test.batch_size`` faces: landmarks ``[b, K, 3]`` (x, y original-image px,
    heatmap maximum) in item order.

    The official test procedure (HRNet-Facial-Landmark-Detection ``lib/core/function.py`` ``inference``) with
    ``data.geometry: official``: the unaugmented :func:`~hrnet_core.data.faces.official_face_crop`, the network,
    ``decode_preds`` (:func:`~hrnet_core.data.faces.official_decode`: integer image px); with ``continuous``: the cv2
    crop and :meth:`~hrnet_core.codecs.heatmap.HeatmapCodec.decode_to_image`. ``test.flip`` adds the flip test (not
    official). fp32 inference.
    """
    from hrnet_core.codecs.heatmap import HeatmapCodec

    d = recipe.data
    transform = build_face_transform(d.geometry, d.dataset, d.input_size, d.heatmap_size, d.sigma, train=False)
    codec = HeatmapCodec(d.input_size, d.heatmap_size, d.sigma)
    run = functools.partial(_predict_faces, model, recipe, int(split.manifest["num_landmarks"]), transform, codec,
                            device)
    return BatchPredictor(run=run, batch_size=int(recipe.test.batch_size), unit="face")


def _predict_faces(model, recipe, k: int, transform, codec, device, items: Sequence[dict[str, Any]]) -> Predictions:
    """Landmarks ``[b, K, 3]`` of one batch of faces."""
    import torch

    from hrnet_core.codecs.heatmap import flip_test
    from hrnet_core.data.faces import face_layout, official_decode
    from hrnet_core.data.io import read_image

    d, t = recipe.data, recipe.test
    recs = [face_record(r, "", k, d.crop_padding) | {"image_file": r["image_file"]} for r in items]
    samples = [transform(r, read_image(r["image_file"])) for r in recs]
    x = torch.from_numpy(np.stack([s["image"] for s in samples])).to(device)
    pairs = face_layout(d.dataset).flip_pairs
    hm = (flip_test(model, x, pairs, shift=t.shift_heatmap) if t.flip else model(x)).float().cpu().numpy()
    centers = np.stack([s["center"] for s in samples])
    if d.geometry == "official":
        coords, maxvals = official_decode(hm, centers, [s["scale"] for s in samples])
    else:
        coords, maxvals = codec.decode_to_image(hm, centers, np.stack([s["scale"] for s in samples]))
    return Predictions(np.concatenate([coords, maxvals], axis=2))


def concat(parts: Sequence[Predictions]) -> Predictions:
    arrays = [p.values for p in parts if len(p.values)]
    return Predictions(np.concatenate(arrays) if arrays else np.zeros((0, 0, 3), np.float32))


def item_errors(items: Sequence[Mapping[str, Any]], preds: np.ndarray, dataset: str) -> np.ndarray:
    """Per-face NME fractions of ``preds`` ``[N, K, >=2]`` against the items' ground truth (dataset normaliser)."""
    from hrnet_core.data.faces import face_layout, normalising_distance
    from hrnet_core.evaluation.nme import per_image_nme

    k = face_layout(dataset).num_landmarks
    gt = np.stack([np.asarray(r["landmarks"], dtype=np.float64).reshape(k, 2) for r in items]) if items else \
        np.zeros((0, k, 2))
    norm = np.array([normalising_distance(dataset, g, float(r.get("box_size") or 0.0)) for g, r in zip(gt, items)])
    return per_image_nme(np.asarray(preds)[..., :2], gt, norm)


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """NME / FR / AUC (percent, :func:`hrnet_core.evaluation.nme.face_metrics`) and ``NME/<subset>`` of the tagged
    subsets, plus ``eval_items``; with ``out_dir`` also ``predictions.json`` and ``ced.csv`` (CED up to 0.1)."""
    from hrnet_core.evaluation.nme import ced_curve, face_metrics

    preds = np.asarray(predictions.values)
    errors = item_errors(items, preds, recipe.data.dataset)
    tags = [set(filter(None, str(r.get("subsets") or "").split(","))) for r in items]
    names = sorted(set().union(*tags)) if tags else []
    metrics = face_metrics(errors, {n: [n in t for t in tags] for n in names})
    metrics["eval_items"] = float(len(items))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(json.dumps(
            [{"file_name": r["file_name"], "image_id": int(r["image_id"]), "ann_id": int(r["ann_id"]),
              "landmarks": np.round(p[:, :2], 3).tolist(), "score": np.round(p[:, 2], 4).tolist(),
              "nme": round(float(e), 6)} for r, p, e in zip(items, preds, errors)]))
        xs, f = ced_curve(errors, 0.1)
        (out / "ced.csv").write_text("nme,fraction\n" + "".join(f"{x:.4f},{y:.6f}\n" for x, y in zip(xs, f)))
    return metrics


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """Predicted landmarks (colour; outer eye corners red) over ground truth (white) on the face crop of the first
    ``num_images`` faces as ``<out_dir>/<ann_id>.jpg``, and the CED plot ``<out_dir>/ced.png``."""
    import cv2

    from hrnet_core.data.faces import face_layout
    from hrnet_core.data.io import read_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = face_layout(recipe.data.dataset)
    marked = set(layout.norm_pair or ())
    files: list[Path] = []
    preds = np.asarray(predictions.values)
    for r, p in list(zip(items, preds))[:num_images]:
        img = read_image(r["image_file"])
        c = np.asarray(r["center"], dtype=np.float64)
        half = float(r["scale"]) * 200.0 * recipe.data.crop_padding / 2
        x0, y0 = c - half
        k = 256.0 / (2 * half)
        m = np.array([[k, 0, -k * x0], [0, k, -k * y0]])
        crop = cv2.warpAffine(img, m, (256, 256), flags=cv2.INTER_LINEAR)
        gt = np.asarray(r["landmarks"], dtype=np.float64).reshape(-1, 2)
        for i, (q, g) in enumerate(zip(p[:, :2], gt)):
            cv2.circle(crop, (int(k * (g[0] - x0)), int(k * (g[1] - y0))), 2, (255, 255, 255), -1, cv2.LINE_AA)
            col = (255, 0, 0) if i in marked else (0, 255, 0)
            cv2.circle(crop, (int(k * (q[0] - x0)), int(k * (q[1] - y0))), 2, col, -1, cv2.LINE_AA)
        f = out / f"{int(r['ann_id'])}.jpg"
        cv2.imwrite(str(f), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        files.append(f)
    files.append(_ced_plot(item_errors(items, preds, recipe.data.dataset), out / "ced.png", recipe.data.dataset))
    return files


def _ced_plot(errors: np.ndarray, path: Path, dataset: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hrnet_core.evaluation.nme import auc, ced_curve

    xs, f = ced_curve(errors, 0.1)
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot(xs, f)
    ax.set_xlabel("NME (fraction of the normaliser)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(f"CED {dataset}: AUC@0.1 {100 * auc(errors, 0.1):.1f}%")
    ax.set_xlim(0, 0.1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ synthetic data


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Generated faces in the 300W layout (:func:`hrnet_core.data.synthetic_faces.generate_faces`)."""
    from hrnet_core.data.synthetic_faces import generate_faces

    return generate_faces(out_dir, num_train, num_val, seed, progress=progress)


SYNTHETIC = SyntheticData(generate=generate, splits=(SplitPrep("300w", "train"), SplitPrep("300w", "valid")))

TASK = Task(
    name="face_alignment",
    description="facial landmarks: face crops -> heatmaps (HRNetV2 paper; NME on WFLW, AFLW, COFW, 300W)",
    datasets=DATASETS,
    sections=RecipeSections(data=FaceData, augment=FaceAugment, test=FaceTest, loss=FaceLossConfig),
    metrics=MetricSpec(primary="NME", higher_is_better=False,
                       names=("NME", "FR_0.08", "FR_0.1", "AUC_0.08", "AUC_0.1", "NME/common", "NME/challenging",
                              "NME/frontal", "NME/pose", "NME/expression", "NME/illumination", "NME/makeup",
                              "NME/occlusion", "NME/blur"),
                       units="percent of the normalising distance (NME, FR); AUC percent (higher is better)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=sample_transform,
    train_step=train_step,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
    decode_modules=("PIL.Image",),  # the official crop resizes with PIL (scipy.misc.imresize semantics)
)
