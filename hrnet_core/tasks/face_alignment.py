"""Facial landmark detection (HRNetV2 paper Sec. 4.3, FACTS.md section 4): the ``face_alignment`` task.

One training sample is one face: the square crop of ``scale * 200 * data.crop_padding`` px (1.25) around the
annotated centre is resized to ``data.input_size`` (256x256), augmented (scale U(0.75, 1.25), rotation U(+-30) with
probability 0.6, horizontal flip with the dataset's flip pairs) and encoded as Gaussian heatmaps of
``data.heatmap_size`` (64x64) with std ``data.sigma`` (1.0 for 300W, 1.5 otherwise). ``data.geometry`` picks how:
``official`` (default) is the official HRNet-Facial-Landmark-Detection code's crop (integer box, PIL resize after
``scipy.misc.bytescale``), flip (``W - x``), target (Gaussian on the truncated cell) and decoding (integer image px),
:class:`hrnet_core.data.face_transforms.OfficialFaceTransform` and :func:`hrnet_core.data.faces.official_decode`;
``continuous`` the top-down pose conventions (:class:`hrnet_core.data.face_transforms.FaceTransform`,
:class:`hrnet_core.codecs.heatmap.HeatmapCodec`).

Pieces (see :mod:`hrnet_core.tasks.base` for the contract):

- readers ``wflw`` (98 points), ``aflw`` (19), ``cofw`` (29), ``300w`` (68): the official HRNet face lists (CSV) or
  COCO-style json (``--annotations test_wflw.json``), :mod:`hrnet_core.data.face_readers`; ``samples.parquet`` columns:
  ``image_id``, ``ann_id``, ``file_name``, ``center`` [2] px, ``scale`` (face size / 200 px), ``landmarks`` [K*2] px,
  ``box_size`` (AFLW normaliser px, else 0), ``subsets`` (comma-separated subset tags, e.g. ``challenging``);
- batch: ``image`` float32 ``[B, 3, H, W]``, ``target`` float32 ``[B, K, h, w]``, ``target_weight`` float32
  ``[B, K, 1]``, ``index`` int64 ``[B]``;
- loss: heatmap MSE (mean over every heatmap cell, the official ``nn.MSELoss``; :mod:`hrnet_core.losses.heatmap_mse`),
  ``{"loss": total}``;
- test procedure: the unaugmented crop, the network, optional flip test (the codec's ``flip_test``; the official
  face code tests without it, so ``test.flip`` defaults to false), decoding to image px (official: ``decode_preds``);
- metrics (:mod:`hrnet_core.evaluation.nme`), all in PERCENT, lower is better except AUC: ``NME`` (primary; mean
  per-image NME with the dataset's normaliser), ``FR_0.08``, ``FR_0.1``, ``AUC_0.08``, ``AUC_0.1`` and
  ``NME/<subset>`` for tagged subsets (300W common/challenging, WFLW attributes, AFLW frontal);
- predictions file ``predictions.json`` (per face: image, ids, landmarks px, its NME fraction), ``ced.csv``;
  drawings: predicted landmarks (colour) over ground truth (white) and a CED plot
  (:mod:`hrnet_core.evaluation.face_drawing`);
- synthetic default: cartoon faces in the 300W layout (:mod:`hrnet_core.data.synthetic_faces`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hrnet_core.data.face_readers import face_list_layout, read_face_split
from hrnet_core.data.face_transforms import GEOMETRIES, FaceSample, build_face_transform, face_record
from hrnet_core.evaluation.face_drawing import save_face_visualisations
from hrnet_core.evaluation.nme import item_errors
from hrnet_core.losses.heatmap_mse import HeatmapMSE
from hrnet_core.recipes.config import ConfigError, DataConfig, check_zoo_model

from .base import (BatchPredictor, DatasetReader, LossStep, MetricSpec, PreparedRows, Predictions, RecipeSections,
                   SourceFiles, SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


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


def _read(dataset: str, src: SourceFiles) -> PreparedRows:
    """A split of ``dataset`` (:func:`hrnet_core.data.face_readers.read_face_split`) -> rows (one per face)."""
    t = read_face_split(dataset, src.files["annotations"], src.files["images"])
    return PreparedRows(images=t.images, samples=t.samples, image_root=t.image_root,
                        files={"annotations": t.annotations},
                        meta={"num_landmarks": t.num_landmarks, "subsets": t.subsets})


_INPUTS = {"annotations": "face list (official HRNet CSV) or COCO-style json", "images": "image folder"}


def _reader(name: str, description: str) -> DatasetReader:
    return DatasetReader(name=name, description=description, inputs=_INPUTS, required=("annotations", "images"),
                         default_layout=functools.partial(face_list_layout, name),
                         read=functools.partial(_read, name))


DATASETS: dict[str, DatasetReader] = {
    "wflw": _reader("wflw", "WFLW, 98 points (face_landmarks_wflw_<split>.csv + images/; test subsets pose, "
                            "expression, illumination, makeup, occlusion, blur)"),
    "aflw": _reader("aflw", "AFLW, 19 points, box-size NME (face_landmarks_aflw_<split>.csv + images/; test, "
                            "frontal)"),
    "cofw": _reader("cofw", "COFW, 29 points (the official COFW_{train,test}_color.mat, images extracted beside it "
                            "as <stem>_images/; or a COCO-style json / CSV list in the 300W column order)"),
    "300w": _reader("300w", "300W, 68 points (face_landmarks_300w_<split>.csv + images/; full, common, "
                            "challenging, test)"),
}


# ------------------------------------------------------------------------------------------------ samples


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
    """Predicted landmarks over ground truth on the first ``num_images`` face crops and the CED plot
    (:func:`hrnet_core.evaluation.face_drawing.save_face_visualisations`)."""
    return save_face_visualisations(items, np.asarray(predictions.values), recipe.data.dataset,
                                    recipe.data.crop_padding, out_dir, num_images)


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
