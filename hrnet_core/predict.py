"""``hrnet predict``: a trained network on the user's own images, folders and videos, for every task (issue 26).

The task-specific half of prediction (items, drawings and results files per task) lives here in ``hrnet_core``;
:mod:`pipelines.predict` adds the run lookup (run folders, run names, MLflow run ids) and
:mod:`pipelines.batch_predict` the Ray Data mapping.

The predictor runs the task's own test procedure, the one ``hrnet evaluate`` runs (:mod:`pipelines.evaluate`): it
builds the task's eval items from the input files instead of a prepared split and calls the task's ``predict``
(``hrnet_core/tasks/<task>.py``), so preprocessing, flip test, decoding and post-processing are the evaluation's.
Segmentation, whose ``predict`` also builds confusion matrices against labels, runs the same per-image function
:func:`hrnet_core.evaluation.seg_inference.image_scores` without labels. Outputs in ``--out DIR``:

=================  ==================================================================================================
task               files
=================  ==================================================================================================
pose_topdown       ``predictions.json`` (COCO keypoint results after rescoring + OKS-NMS, as evaluate writes),
                   ``vis/<image>.jpg`` skeletons; people from ``--boxes`` (COCO detection results / COCO json), from
                   ``--detector`` (a detection run's weights: its person boxes) or the whole image as one box
pose_bottomup      ``predictions.json`` (COCO keypoint results of the grouped people), ``vis/``
segmentation       ``labels/<image>.png`` (the dataset's own label ids, as evaluate writes), ``vis/`` colour overlay,
                   ``predictions.json`` (files and classes)
face_alignment     ``predictions.json`` (landmarks per face), ``vis/``; faces from ``--boxes`` (COCO-style json with
                   ``bbox`` or ``center`` + ``scale``) or the whole image
classification     ``predictions.json`` (top-k class index, id, name, probability), ``vis/``
detection          ``predictions.json`` (COCO detection results), ``vis/`` boxes / masks with class names
pose_tracking      a video or a folder of frames is one sequence: ``predictions.json`` (PoseTrack format),
                   ``vis/<input>.mp4`` (skeletons with track ids, OpenCV ``mp4v``)
=================  ==================================================================================================

A video (``.mp4``, ``.avi``, ...) is read with OpenCV; for tasks other than tracking each frame is an image
(``frame_000000.png``, ...) and the drawings are also written as ``vis/<video>.mp4``.

Bad input (a missing path, an unreadable image, an empty video, weights of another task than ``expect_task``) raises
before anything is left in ``--out``: the outputs are written into a temporary folder beside it and moved there at the
end. The official demo scripts (deep-high-resolution-net ``demo/inference.py``, HRNet-Semantic-Segmentation
``tools/test.py`` on a list) are the model; nothing of them is copied.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from hrnet_core.data.prepared import DataError, PreparedSplit
from hrnet_core.engine.evaluation import predict_items
from hrnet_core.tasks.base import Predictions

__all__ = ["PredictOptions", "Predictor", "load_predictor", "collect_inputs", "predict_files", "run_predict",
           "vocabulary", "image_ids", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
PERSON = 1  # COCO person category id


@dataclass(frozen=True)
class PredictOptions:
    """Options of a prediction run.

    Attributes:
        boxes: box file: COCO detection results (``[{image_id, bbox, score, category_id}]``) or a COCO-style json
            (``images`` + ``annotations`` with ``bbox``, faces also ``center`` + ``scale``); images are matched by
            ``file_name`` (COCO json) or by ``image_id`` (:func:`image_ids`).
        detector: weights (or run) of a ``detection`` network whose person boxes feed top-down pose / tracking.
        det_score_thr: detector person boxes below this score are dropped (``--boxes`` files use the recipe's
            ``test.det_score_thr``, as evaluation does).
        device: ``cpu`` / ``cuda``.
        progress: tqdm bars.
        num_vis: drawings written (``None``: every image).
        fps: frame rate of written videos (default: the input video's, else 10).
    """

    boxes: str | None = None
    detector: str | None = None
    det_score_thr: float = 0.5
    device: str = "cpu"
    progress: bool = True
    num_vis: int | None = None
    fps: float | None = None


@dataclass
class Predictor:
    """A network ready to predict.

    Attributes:
        model: the recipe's network (eval mode), or an :class:`~hrnet_core.models.onnx_export.OnnxNetwork` standing
            for it (detection: for its backbone).
        recipe: the recipe whose test procedure runs.
        vocab: the dataset vocabulary the task's functions read from a split manifest (``num_joints``,
            ``num_landmarks``, segmentation layout, class names, detection categories).
        source: how the weights were found (one line).
    """

    model: torch.nn.Module
    recipe: Any
    vocab: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def task(self) -> str:
        return str(self.recipe.task)


# ------------------------------------------------------------------------------------------------ loading


def _is_recipe(source: str) -> bool:
    from hrnet_core.recipes.config import list_extra_recipes, list_recipes

    return source in list_recipes() or source in list_extra_recipes() or \
        (source.endswith((".yaml", ".yml")) and Path(source).is_file())


def load_predictor(source: str | None, *, overrides: Mapping[str, Any] | None = None, profile: str | None = None,
                   checkpoint: str | None = None, onnx: str | None = None, expect_task: str | None = None,
                   labels: str | None = None, data: str | None = None,
                   resolve: Callable[[str], tuple[str, str]] | None = None) -> Predictor:
    """The network and recipe SOURCE names.

    Args:
        source: a recipe name / YAML (an untrained network of it, or ``checkpoint`` loaded into it), our weights
            file, or (with ``resolve``) whatever ``resolve`` turns into a weights file (:mod:`pipelines.predict` passes
            :func:`pipelines.runs.resolve_weights`: a Ray checkpoint / run folder, a run name or an MLflow run id);
            ``None`` with ``onnx``: the recipe stored in the ONNX file.
        resolve: ``source -> (weights path, how it was found)``; ``None``: SOURCE is a weights file.
        overrides, profile: applied to a recipe SOURCE (or to an ONNX file's recipe).
        checkpoint: an official checkpoint (plain state dict) loaded strictly into the recipe's network.
        onnx: an exported file (:mod:`hrnet_core.models.onnx_export`); the network runs on onnxruntime (detection:
            its backbone; the heads come from SOURCE's weights).
        expect_task: refuse weights / ONNX files of another task.
        labels: class names: an ImageNet ``synsets.txt`` (``<wnid> <name>`` lines), a ``classes.txt`` (one name a
            line) or a COCO json (``categories``).
        data: a prepared split whose manifest gives the vocabulary (class names, categories, layout).

    Raises:
        hrnet_core.weights.CheckpointError: weights not found / unreadable / of another task;
        hrnet_core.models.CheckpointMismatchError: weights of another network; ConfigError: bad recipe keys;
        OnnxExportError: a bad ONNX file.
    """
    from hrnet_core.weights import CheckpointError

    meta = None
    if onnx:
        from hrnet_core.models.onnx_export import read_metadata

        meta = read_metadata(onnx)
    recipe, model, how = _recipe_and_model(source, dict(overrides or {}), profile, checkpoint, onnx, meta, resolve)
    if expect_task and recipe.task != expect_task:
        raise CheckpointError(f"{source or onnx!r} is a {recipe.task} network, not {expect_task} (--task)")
    if meta is not None:
        model = _onnx_model(onnx, meta, recipe, model)
        how = f"{how}; network on onnxruntime ({onnx})"
    model.eval()
    return Predictor(model, recipe, vocabulary(recipe, labels=labels, data=data), how)


def _recipe_and_model(source: str | None, over: dict[str, Any], profile: str | None, checkpoint: str | None,
                      onnx: str | None, meta: Mapping[str, str] | None,
                      resolve: Callable[[str], tuple[str, str]] | None) -> tuple[Any, Any, str]:
    """``(recipe, torch network or None, how it was found)`` of :func:`load_predictor`'s SOURCE: the recipe an ONNX
    file stores (``meta``), a recipe (untrained, or ``checkpoint`` loaded), or weights found by ``resolve`` (a
    weights file without it). Raises as :func:`load_predictor`."""
    from hrnet_core.recipes import ConfigError, load_recipe, recipe_from_dict
    from hrnet_core.weights import CheckpointError, build_network, open_checkpoint

    recipe, model, how = None, None, ""
    if source is None:
        if meta is None:
            raise ConfigError("hrnet predict needs a recipe, weights file or run (or --onnx FILE)")
        stored = recipe_from_dict(json.loads(meta["hrnet.recipe"]))
        if meta["hrnet.part"] != "network":
            raise CheckpointError(f"ONNX file {onnx!r} holds the {meta['hrnet.part']} of a {stored.task} network; "
                                  f"name the weights of its heads too (hrnet predict WEIGHTS --onnx {onnx})")
        recipe = load_recipe(stored.to_dict(), over, profile=profile) if (over or profile) else stored
        how = f"ONNX file {onnx}"
    elif _is_recipe(source):
        recipe = load_recipe(source, over, profile=profile)
        if checkpoint:
            loaded = open_checkpoint(checkpoint, recipe)
            model, how = loaded.model, f"checkpoint {checkpoint} in recipe {recipe.name}"
        elif meta is None:
            torch.manual_seed(recipe.train.seed)
            model, how = build_network(recipe), f"recipe {recipe.name} (untrained: no weights given)"
    else:
        if over or profile:
            raise ConfigError("--set/--profile change a recipe: name the RECIPE and give the weights with "
                              "--checkpoint")
        path, found_how = resolve(source) if resolve is not None else (source, "weights file")
        loaded = open_checkpoint(path)
        recipe, model, how = loaded.recipe, loaded.model, f"{found_how} {path}"
    return recipe, model, how


def _onnx_model(onnx: str, meta: Mapping[str, str], recipe, model):
    from hrnet_core.models.onnx_export import OnnxNetwork
    from hrnet_core.weights import CheckpointError

    if meta["hrnet.task"] != recipe.task:
        raise CheckpointError(f"ONNX file {onnx!r} is a {meta['hrnet.task']} network, the recipe's task is "
                              f"{recipe.task}")
    net = OnnxNetwork(onnx)
    if meta["hrnet.part"] == "backbone":
        if model is None:
            raise CheckpointError(f"ONNX file {onnx!r} holds a detector's backbone only; name the detector's weights")
        model.backbone = net
        return model
    return net


def _read_names(path: str) -> tuple[list[str], list[str], list[dict[str, Any]] | None]:
    """``(ids, names, categories)`` of a labels file (see :func:`load_predictor`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"labels file {path!r} not found")
    if p.suffix == ".json":
        from hrnet_core.data.io import load_json

        cats = load_json(p, "labels file").get("categories") if isinstance(load_json(p, "labels file"), dict) else None
        if not cats:
            raise DataError(f"labels file {path!r}: a json needs COCO 'categories'")
        return [str(c["id"]) for c in cats], [str(c["name"]) for c in cats], list(cats)
    ids, names = [], []
    for line in p.read_text().splitlines():
        if line.strip():
            parts = line.strip().split(maxsplit=1)
            ids.append(parts[0])
            names.append(parts[1] if len(parts) > 1 else parts[0])
    return ids, names, None


def _coco_categories() -> list[dict[str, Any]]:
    """The 80 COCO object categories with their ids (1..90, gaps included; torchvision's COCO list)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(names) if i and n != "N/A"]


def vocabulary(recipe, labels: str | None = None, data: str | None = None) -> dict[str, Any]:
    """The manifest entries the task's test procedure and drawings read, for input files that are no prepared split.

    ``data``: a prepared split's ``manifest.json`` (the vocabulary it was trained on). Otherwise from the dataset
    name: ``num_joints`` (COCO 17, MPII 16, ...), ``num_landmarks``, the segmentation layout
    (:func:`hrnet_core.data.segmentation.seg_layout`; ``seg_list`` and a network of another class count get
    ``class <k>`` names and the VOC palette), classification class names (``labels`` or ``class <k>``), detection
    categories (``labels``, the COCO 80 when the network has 81 outputs, else ``class <k>`` ids 1..C-1).

    Raises:
        DataError: ``data`` is no prepared split of the recipe's task; unreadable ``labels``.
    """
    task = recipe.task
    meta: dict[str, Any] = {"task": task, "dataset": recipe.data.dataset}
    if data:
        from hrnet_core.data.prepared import open_split_dir

        return {**open_split_dir(data, task=task, need_images=False).manifest, "task": task}
    ids, names, cats = _read_names(labels) if labels else ([], [], None)
    if task in ("pose_topdown", "pose_tracking", "pose_bottomup"):
        from hrnet_core.data.keypoints import get_keypoint_spec

        ds = "posetrack" if task == "pose_tracking" else recipe.data.dataset
        meta["num_joints"] = int(recipe.model.num_joints or get_keypoint_spec(ds).num_joints)
    elif task == "face_alignment":
        from hrnet_core.data.faces import face_layout

        meta["num_landmarks"] = face_layout(recipe.data.dataset).num_landmarks
    elif task == "segmentation":
        from hrnet_core.data.segmentation import LAYOUTS, seg_layout

        n = int(recipe.model.num_classes)
        known = LAYOUTS.get(recipe.data.dataset)
        if known is not None and known.num_classes == n and not names:
            meta.update(known.to_meta())
        else:
            meta.update(seg_layout("seg_list", names[:n] if len(names) >= n else
                                   [f"class {k}" for k in range(n)]).to_meta())
    elif task == "classification":
        from hrnet_core.tasks.classification import num_classes

        n = num_classes(recipe)
        meta.update({"num_classes": n, "classes": ids or [str(k) for k in range(n)],
                     "class_names": names or [f"class {k}" for k in range(n)]})
    elif task == "detection":
        n = int(recipe.model.num_classes) - 1
        if cats is None:
            cats = _coco_categories() if n == 80 else [{"id": k + 1, "name": f"class {k + 1}"} for k in range(n)]
        meta["categories"] = cats
    return meta


def _split(predictor: Predictor, root: Path) -> PreparedSplit:
    """A split-like view of the input files: the task's functions read ``manifest`` and ``image_root`` from it."""
    return PreparedSplit(root, {**predictor.vocab, "image_root": "/", "split": "predict"})


# ------------------------------------------------------------------------------------------------ inputs


def collect_inputs(path: str | Path) -> tuple[str, list[Path]]:
    """``("video", [file])`` or ``("images", files)`` (a file, or a folder's images in name order, recursively).

    Raises:
        DataError: the path is missing, a folder without images, or a file of another type.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {str(p)!r} not found")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return "video", [p]
        if suffix in IMAGE_SUFFIXES:
            return "images", [p]
        raise DataError(f"input {str(p)!r} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                        f"({', '.join(VIDEO_SUFFIXES)})")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder {str(p)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return "images", files


def read_video(path: Path, frames_dir: Path, progress: bool = False) -> tuple[list[Path], float]:
    """Decode every frame of a video (OpenCV) into ``frames_dir/frame_<i>.png`` (lossless) -> ``(files, fps)``.

    Raises:
        DataError: the video cannot be opened or has no frames.
    """
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"video {str(path)!r} cannot be opened")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    frames_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with tqdm(total=total or None, desc="decode", unit="frame", disable=not progress) as bar:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            f = frames_dir / f"frame_{len(files):06d}.png"
            cv2.imwrite(str(f), frame)
            files.append(f)
            bar.update(1)
    cap.release()
    if not files:
        raise DataError(f"video {str(path)!r} has no frames")
    return files, fps if fps > 0 else 10.0


def image_ids(files: Sequence[Path], boxes: Any = None) -> list[int]:
    """Image ids of the input files: from a COCO json's ``images`` (matched by file name) when ``boxes`` holds one,
    else ``int(stem)`` when every stem is a number (COCO's ``000000397133.jpg``), else the position ``1..N``."""
    if isinstance(boxes, dict) and "images" in boxes:
        by_name = {Path(str(i["file_name"])).name: int(i["id"]) for i in boxes["images"]}
        by_name.update({str(i["file_name"]): int(i["id"]) for i in boxes["images"]})
        fallback = max(by_name.values(), default=0) + 1
        out = []
        for f in files:
            out.append(by_name.get(f.name, by_name.get(str(f), None)))
            if out[-1] is None:
                out[-1], fallback = fallback, fallback + 1
        return out
    if all(f.stem.isdigit() for f in files) and len({int(f.stem) for f in files}) == len(files):
        return [int(f.stem) for f in files]
    return list(range(1, len(files) + 1))


def _image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` px from the file header (PIL), EXIF orientation ignored as :func:`read_image` does."""
    from PIL import Image, UnidentifiedImageError

    from hrnet_core.data.io import ImageReadError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageReadError(path, "cannot be decoded (corrupt or not an image)") from None


def _load_boxes(path: str | None) -> Any:
    if not path:
        return None
    from hrnet_core.data.io import load_json

    return load_json(path, "box file")


def _box_entries(boxes: Any, path: str) -> list[dict[str, Any]]:
    from hrnet_core.data.io import AnnotationError

    entries = boxes.get("annotations", []) if isinstance(boxes, dict) else boxes
    if not isinstance(entries, list):
        raise AnnotationError(f"box file {path!r}: expected a list of detections or a COCO json with annotations")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "image_id" not in e or ("bbox" not in e and "center" not in e):
            raise AnnotationError(f"box file {path!r}: entry {i} needs image_id and bbox [x, y, w, h]")
    return entries


def person_boxes(predictor: Predictor, files: Sequence[Path], ids: Sequence[int], opts: PredictOptions,
                 boxes: Any, thr: float) -> dict[int, np.ndarray]:
    """People per image id: ``[N, 5]`` (x, y, w, h px, score) from the box file (person category, score >= ``thr``),
    the detector (person boxes with score >= ``opts.det_score_thr``) or the whole image (score 1)."""
    if boxes is not None:
        out: dict[int, list] = {}
        for e in _box_entries(boxes, str(opts.boxes)):
            if int(e.get("category_id", PERSON)) != PERSON or float(e.get("score", 1.0)) < thr:
                continue
            out.setdefault(int(e["image_id"]), []).append([*map(float, e["bbox"]), float(e.get("score", 1.0))])
        return {i: np.asarray(out.get(i, []), np.float64).reshape(-1, 5) for i in ids}
    if opts.detector:
        return _detector_people(opts, files, ids)
    return {i: np.asarray([[0.0, 0.0, *_image_size(f), 1.0]]) for f, i in zip(files, ids)}


def _detector_people(opts: PredictOptions, files: Sequence[Path], ids: Sequence[int]) -> dict[int, np.ndarray]:
    from hrnet_core.tasks import get_task

    det = load_predictor(opts.detector, expect_task="detection")
    task = get_task("detection")
    items = [{"image_id": i, "file_name": str(f), "image_file": str(f)} for f, i in zip(files, ids)]
    preds = predict_items(det.model.to(opts.device), task, det.recipe, _split(det, Path(".")), items,
                          device=opts.device, progress=opts.progress).values
    out = {}
    for i, p in zip(ids, preds):
        keep = (p["category_ids"] == PERSON) & (p["scores"] >= opts.det_score_thr)
        b = p["boxes"][keep].astype(np.float64)
        out[i] = np.concatenate([b[:, :2], b[:, 2:4] - b[:, :2], p["scores"][keep, None]], axis=1).reshape(-1, 5)
    return out


# ------------------------------------------------------------------------------------------------ per task


def _topdown_items(predictor: Predictor, files, ids, opts, boxes) -> list[dict[str, Any]]:
    """People records as :class:`hrnet_core.data.coco.CocoKeypoints` makes them from a detection file."""
    from hrnet_core.data.transforms import PIXEL_STD, box_to_center_scale

    r = predictor.recipe
    aspect = r.data.input_size[0] / r.data.input_size[1]
    people = person_boxes(predictor, files, ids, opts, boxes, r.test.det_score_thr)
    k = int(predictor.vocab["num_joints"])
    items = []
    for f, i in zip(files, ids):
        for b in people[i]:
            c, s = box_to_center_scale(list(b[:4]), aspect, PIXEL_STD, 1.25)
            items.append({"image_file": str(f), "image_id": i, "center": c, "scale": s,
                          "joints": np.zeros((k, 3)), "score": float(b[4]),
                          "area": float(s[0] * s[1] * PIXEL_STD ** 2), "bbox": np.asarray(b[:4]), "ann_id": -1})
    return items


def _face_items(predictor: Predictor, files, ids, opts, boxes) -> list[dict[str, Any]]:
    """Face rows as the face readers make them: ``center`` px and ``scale`` (box side / 200) from the box file
    (``center`` + ``scale``, or ``bbox``: its centre and longer side, as the official COFW json) or the whole
    image."""
    from hrnet_core.data.faces import PIXEL_STD

    k = int(predictor.vocab["num_landmarks"])
    rows = []
    by_id: dict[int, list] = {}
    if boxes is not None:
        for e in _box_entries(boxes, str(opts.boxes)):
            if "center" in e and "scale" in e:
                c, s = [float(v) for v in e["center"]][:2], float(np.ravel(e["scale"])[0])
            else:
                x, y, w, h = (float(v) for v in e["bbox"])
                c, s = [x + w / 2, y + h / 2], max(w, h) / PIXEL_STD
            by_id.setdefault(int(e["image_id"]), []).append((c, s))
    for f, i in zip(files, ids):
        if boxes is None:
            w, h = _image_size(f)
            by_id[i] = [([w / 2, h / 2], max(w, h) / PIXEL_STD)]
        for c, s in by_id.get(i, []):
            rows.append({"file_name": str(f), "image_file": str(f), "image_id": i, "center": c, "scale": s,
                         "landmarks": [0.0] * (2 * k)})
    return rows


def _image_items(files, ids) -> list[dict[str, Any]]:
    return [{"image_id": i, "file_name": str(f), "image_file": str(f), "label": -1} for f, i in zip(files, ids)]


def _predict_segmentation(predictor: Predictor, items, device, progress: bool) -> list[np.ndarray]:
    """Training-id maps ``uint8 [H, W]`` per image by the recipe's test procedure
    (:func:`hrnet_core.evaluation.seg_inference.image_scores`, what the task's ``predict`` runs per image)."""
    from tqdm import tqdm

    from hrnet_core.data.io import read_image
    from hrnet_core.data.segmentation import layout_from_meta
    from hrnet_core.evaluation.seg_inference import image_scores
    from hrnet_core.tasks.segmentation import inference_settings, model_align_corners

    recipe, model = predictor.recipe, predictor.model
    layout = layout_from_meta(predictor.vocab)
    perm = layout.flip_permutation() if layout.flip_pairs else None
    cfg = inference_settings(recipe, layout.num_classes, perm, model_align_corners(recipe.model.name))
    threads = torch.get_num_threads()
    if recipe.test.cpu_threads > 0 and str(device).startswith("cpu"):
        torch.set_num_threads(recipe.test.cpu_threads)
    out = []
    try:
        with torch.no_grad():
            for r in tqdm(items, desc="predict", unit="img", disable=not progress):
                scores = image_scores(model, read_image(r["image_file"]), cfg, device)
                out.append(scores.argmax(0).to(torch.uint8).cpu().numpy())
    finally:
        torch.set_num_threads(threads)
    return out


def _tracking_items(predictor: Predictor, files, ids, opts, boxes, name: str) -> list[dict[str, Any]]:
    people = person_boxes(predictor, files, ids, opts, boxes, predictor.recipe.test.det_score_thr)
    frames = [{"image_id": i, "image_file": str(f), "file_name": f.name, "frame_id": n, "is_labeled": True,
               "vid_id": name} for n, (f, i) in enumerate(zip(files, ids))]
    return [{"vid_id": name, "frames": frames, "boxes": {i: b for i, b in people.items() if len(b)}}]


def run_task(predictor: Predictor, files: Sequence[Path], opts: PredictOptions, name: str = "input"
             ) -> tuple[list[dict[str, Any]], Any]:
    """Eval items of the input files and the task's predictions of them -> ``(items, values)``.

    ``values`` are the task's ``Predictions.values`` (segmentation: training-id maps). ``name``: the sequence
    name of pose tracking.
    """
    from hrnet_core.tasks import get_task

    task = get_task(predictor.task)
    boxes = _load_boxes(opts.boxes)
    ids = image_ids(files, boxes)
    split = _split(predictor, Path(".").resolve())
    kind = predictor.task
    model = predictor.model.to(opts.device)
    if kind == "segmentation":
        items = _image_items(files, ids)
        return items, _predict_segmentation(replace(predictor, model=model), items, opts.device, opts.progress)
    if kind == "pose_topdown":
        items = _topdown_items(predictor, files, ids, opts, boxes)
    elif kind == "face_alignment":
        items = _face_items(predictor, files, ids, opts, boxes)
    elif kind == "pose_tracking":
        items = _tracking_items(predictor, files, ids, opts, boxes, name)
    else:
        items = _image_items(files, ids)
    if not items:
        return items, predict_items(model, task, predictor.recipe, split, items, device=opts.device).values
    return items, predict_items(model, task, predictor.recipe, split, items, device=opts.device,
                                progress=opts.progress).values


# ------------------------------------------------------------------------------------------------ outputs


def _save(img: np.ndarray, path: Path) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def _stem(f: Path, files: Sequence[Path]) -> str:
    return f.stem if len({x.stem for x in files}) == len(files) else f"{files.index(f):06d}_{f.stem}"


def _colour(k: int) -> tuple[int, int, int]:
    import cv2

    hsv = np.uint8([[[(k * 47) % 180, 230, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _draw_people(img: np.ndarray, people: Sequence[tuple[np.ndarray, float, int | None]], joint_thr: float) -> None:
    import cv2

    from hrnet_core.evaluation.pose_drawing import draw_pose

    for kp, _score, tid in people:
        kp = np.asarray(kp, np.float64).reshape(-1, 3)
        draw_pose(img, kp, joint_thr, color=None if tid is None else _colour(tid))
        if tid is not None and (kp[:, 2] > joint_thr).any():
            x, y = kp[kp[:, 2] > joint_thr, :2].min(0)
            cv2.putText(img, f"id {tid}", (int(x), max(int(y) - 6, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        _colour(tid), 2, cv2.LINE_AA)


def write_outputs(predictor: Predictor, files: Sequence[Path], items, values, out: Path,
                  opts: PredictOptions) -> dict[str, Any]:
    """The task's files (module docstring) for ``items`` / ``values`` of :func:`run_task` in ``out``: one writer
    per task (:data:`_WRITERS`).

    Returns:
        A summary: ``task``, ``images``, per-task counts (``people``, ``faces``, ``objects``, ...).
    """
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Outputs(predictor, list(files), items, values, out, opts,
                   len(files) if opts.num_vis is None else opts.num_vis,
                   dict(zip(map(str, files), image_ids(files, _load_boxes(opts.boxes)))))
    summary: dict[str, Any] = {"task": predictor.task, "images": len(files)}
    writer = _WRITERS.get("pose" if predictor.task in ("pose_topdown", "pose_bottomup") else predictor.task)
    if writer is not None:
        summary.update(writer(ctx))
    return summary


@dataclass
class _Outputs:
    """What a task's writer of :func:`write_outputs` reads: ``num_vis`` drawings, ``id_of`` image id per file."""

    predictor: Predictor
    files: list[Path]
    items: Any
    values: Any
    out: Path
    opts: PredictOptions
    num_vis: int
    id_of: dict[str, int]


def _write_pose(ctx: _Outputs) -> dict[str, Any]:
    """The pose tasks' COCO results (top-down or bottom-up) and drawn people. Returns the summary's counts."""
    from hrnet_core.data.io import read_image

    r, kind = ctx.predictor.recipe, ctx.predictor.task
    predictor, files, items, values, out = ctx.predictor, ctx.files, ctx.items, ctx.values, ctx.out
    n_vis, vis, id_of = ctx.num_vis, ctx.out / "vis", ctx.id_of
    summary: dict[str, Any] = {}
    from hrnet_core.evaluation.coco_keypoints import write_coco_results

    if kind == "pose_topdown":
        from hrnet_core.data.keypoints import keypoint_spec
        from hrnet_core.evaluation.topdown import coco_results

        k = int(predictor.vocab["num_joints"])
        results = coco_results(items, np.asarray(values), k, None if k == 17 else keypoint_spec("coco", k).sigmas,
                               in_vis_thr=r.test.joint_score_thr, oks_thr=r.test.oks_nms_thr) if items else []
    else:
        from hrnet_core.tasks.pose_bottomup import coco_results

        results = coco_results(items, Predictions(values))
    write_coco_results(results, out / "predictions.json")
    summary["people"] = len(results)
    by_image: dict[int, list] = {}
    for res in results:
        by_image.setdefault(int(res["image_id"]), []).append(res)
    for f in files[:n_vis]:
        img = read_image(f).copy()
        people = [(res["keypoints"], res["score"], None) for res in by_image.get(id_of[str(f)], [])]
        _draw_people(img, people, r.test.joint_score_thr if kind == "pose_topdown" else 0.1)
        _save(img, vis / f"{_stem(f, files)}.jpg")
    return summary


def _write_segmentation(ctx: _Outputs) -> dict[str, Any]:
    """``labels/*.png`` in the dataset's ids, ``predictions.json`` naming them, blended drawings. Returns the
    summary's counts."""
    import cv2

    from hrnet_core.data.io import read_image

    predictor, files, values, out = ctx.predictor, ctx.files, ctx.values, ctx.out
    n_vis, vis = ctx.num_vis, ctx.out / "vis"
    summary: dict[str, Any] = {}
    from hrnet_core.data.segmentation import layout_from_meta
    from hrnet_core.evaluation.seg_drawing import colourise

    layout = layout_from_meta(predictor.vocab)
    lut = layout.output_lut()
    (out / "labels").mkdir(exist_ok=True)
    records = []
    for n, (f, ids) in enumerate(zip(files, values)):
        name = f"{_stem(f, files)}.png"
        cv2.imwrite(str(out / "labels" / name), lut[ids])
        records.append({"file_name": str(f), "prediction": f"labels/{name}"})
        if n < n_vis:
            img = read_image(f)
            blend = (0.5 * img + 0.5 * colourise(ids, layout.palette)).astype(np.uint8)
            _save(blend, vis / f"{_stem(f, files)}.jpg")
    (out / "predictions.json").write_text(json.dumps(
        {"dataset": predictor.vocab.get("dataset"), "ids": "dataset label ids (output_ids)",
         "classes": list(layout.classes), "images": records}))
    return summary


def _write_face_alignment(ctx: _Outputs) -> dict[str, Any]:
    """Landmarks per face and drawn landmarks. Returns the summary's counts."""
    import cv2

    from hrnet_core.data.io import read_image

    files, items, values, out = ctx.files, ctx.items, ctx.values, ctx.out
    n_vis, vis = ctx.num_vis, ctx.out / "vis"
    summary: dict[str, Any] = {}
    preds = np.asarray(values)
    (out / "predictions.json").write_text(json.dumps(
        [{"file_name": it["file_name"], "image_id": int(it["image_id"]), "center": list(map(float, it["center"])),
          "scale": float(it["scale"]), "landmarks": np.round(p[:, :2], 3).tolist(),
          "score": np.round(p[:, 2], 4).tolist()} for it, p in zip(items, preds)]))
    summary["faces"] = len(items)
    for f in files[:n_vis]:
        img = read_image(f).copy()
        for it, p in zip(items, preds):
            if it["file_name"] == str(f):
                for x, y in p[:, :2]:
                    cv2.circle(img, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1, cv2.LINE_AA)
        _save(img, vis / f"{_stem(f, files)}.jpg")
    return summary


def _write_classification(ctx: _Outputs) -> dict[str, Any]:
    """Top-5 classes per image and their names drawn. Returns the summary's counts."""
    import cv2

    from hrnet_core.data.io import read_image

    predictor, files, values, out = ctx.predictor, ctx.files, ctx.values, ctx.out
    n_vis, vis = ctx.num_vis, ctx.out / "vis"
    summary: dict[str, Any] = {}
    classes = predictor.vocab.get("classes", [])
    names = predictor.vocab.get("class_names", [])
    rows = []
    for f, idx, sc in zip(files, values["index"], values["score"]):
        rows.append({"file_name": str(f), "top": [
            {"index": int(i), "id": classes[i] if i < len(classes) else str(i),
             "name": names[i] if i < len(names) else str(i), "probability": round(float(s), 6)}
            for i, s in zip(idx[:5], sc[:5])]})
    (out / "predictions.json").write_text(json.dumps(rows))
    for f, row in list(zip(files, rows))[:n_vis]:
        img = read_image(f).copy()
        scale = max(img.shape[1] / 400.0, 0.35)
        for j, t in enumerate(row["top"]):
            y = int((18 + 20 * j) * scale)
            text = f"{t['probability']:.2f} {t['name'][:40]}"
            cv2.putText(img, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 0), 1, cv2.LINE_AA)
        _save(img, vis / f"{_stem(f, files)}.jpg")
    return summary


def _write_detection(ctx: _Outputs) -> dict[str, Any]:
    """COCO detection results and drawn boxes (and masks). Returns the summary's counts."""
    import cv2

    from hrnet_core.data.io import read_image

    r = ctx.predictor.recipe
    predictor, files, values, out = ctx.predictor, ctx.files, ctx.values, ctx.out
    n_vis, vis = ctx.num_vis, ctx.out / "vis"
    summary: dict[str, Any] = {}
    from pycocotools import mask as mask_utils

    from hrnet_core.evaluation.coco_detection import results_json

    res = results_json(Predictions(values), r.data.box_convention)
    (out / "predictions.json").write_text(json.dumps(res))
    summary["objects"] = len(res)
    names = {int(c["id"]): c["name"] for c in predictor.vocab["categories"]}
    for f, p in list(zip(files, values))[:n_vis]:
        img = read_image(f).copy()
        keep = np.nonzero(p["scores"] >= r.test.vis_score_thresh)[0]
        for k in keep:
            c = _colour(int(p["category_ids"][k]))
            if "masks" in p:
                m = mask_utils.decode(p["masks"][k]).astype(bool)
                img[m] = (0.5 * img[m] + 0.5 * np.asarray(c)).astype(np.uint8)
            x0, y0, x1, y1 = (int(v) for v in p["boxes"][k])
            cv2.rectangle(img, (x0, y0), (x1, y1), c, 2)
            cv2.putText(img, f"{names.get(int(p['category_ids'][k]), '?')} {p['scores'][k]:.2f}",
                        (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
        _save(img, vis / f"{_stem(f, files)}.jpg")
    return summary


def _write_pose_tracking(ctx: _Outputs) -> dict[str, Any]:
    """The PoseTrack json of the sequence and an annotated video with track ids. Returns the summary's counts."""
    from hrnet_core.data.io import read_image

    r = ctx.predictor.recipe
    files, items, values, out, opts = ctx.files, ctx.items, ctx.values, ctx.out, ctx.opts
    vis = ctx.out / "vis"
    summary: dict[str, Any] = {}
    from hrnet_core.tasks.pose_tracking import results

    per_seq = results(items, Predictions(values), r.test.keypoint_thr)
    seq = items[0]["vid_id"]
    (out / "predictions.json").write_text(json.dumps(per_seq[seq]))
    frames = values[0]
    summary["tracks"] = len({int(t) for fr in frames for t in fr["track_ids"]})
    summary["people"] = int(sum(len(fr["track_ids"]) for fr in frames))
    drawn = []
    for f, fr in zip(files, frames):
        img = read_image(f).copy()
        _draw_people(img, [(p, s, int(t)) for p, s, t in zip(fr["poses"], fr["scores"], fr["track_ids"])],
                     r.test.keypoint_thr)
        drawn.append(img)
    write_video(drawn, vis / f"{seq}.mp4", opts.fps or 10.0)
    return summary


#: the writer of each task's outputs (both pose tasks: ``pose``)
_WRITERS = {"pose": _write_pose, "segmentation": _write_segmentation, "face_alignment": _write_face_alignment,
            "classification": _write_classification, "detection": _write_detection,
            "pose_tracking": _write_pose_tracking}


def write_video(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """RGB ``[H, W, 3]`` frames as an ``mp4v`` video (OpenCV ``VideoWriter``; frames of another size are resized to
    the first one's)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    try:
        for f in frames:
            f = f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h))
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def predict_files(predictor: Predictor, files: Sequence[Path], out: Path, opts: PredictOptions,
                  name: str = "input") -> dict[str, Any]:
    """Predict ``files`` (images, or the frames of one sequence) and write the task's outputs into ``out``."""
    items, values = run_task(predictor, files, opts, name)
    return write_outputs(predictor, files, items, values, out, opts)


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` whose files move into ``out`` when the block succeeds (nothing is left
    in ``out`` otherwise)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for p in sorted(tmp.iterdir()):
            dest = out / p.name
            if dest.is_dir() and p.is_dir():
                shutil.copytree(p, dest, dirs_exist_ok=True)
            else:
                if dest.is_dir():
                    shutil.rmtree(dest)
                shutil.move(str(p), str(dest))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_predict(predictor: Predictor, source: str | Path, out: str | Path, opts: PredictOptions) -> dict[str, Any]:
    """``hrnet predict``: predict an image, a folder of images or a video and write the outputs into ``out``
    (module docstring). Nothing is written when the input is bad.

    Returns:
        The summary of :func:`write_outputs` plus ``out`` and ``source``.

    Raises:
        DataError: missing input, empty folder, unreadable or empty video; ImageReadError: an undecodable image;
        AnnotationError: a bad box file.
    """
    kind, files = collect_inputs(source)
    out = Path(out)
    with _staged(out) as work, tempfile.TemporaryDirectory(prefix="hrnet-frames-") as frames_dir:
        fps = opts.fps
        name = Path(source).stem if Path(source).is_file() else Path(source).resolve().name
        if kind == "video":
            files, video_fps = read_video(files[0], Path(frames_dir), opts.progress)
            fps = fps or video_fps
        else:
            for f in files:  # header check of every image before any output (decoding errors name the file)
                _image_size(f)
        run_opts = replace(opts, fps=fps)
        summary = predict_files(predictor, files, work, run_opts, name=name)
        if kind == "video" and predictor.task != "pose_tracking":
            from hrnet_core.data.io import read_image

            drawn = [read_image(work / "vis" / f"{_stem(f, files)}.jpg") for f in files
                     if (work / "vis" / f"{_stem(f, files)}.jpg").is_file()]
            if drawn:
                write_video(drawn, work / "vis" / f"{name}.mp4", fps or 10.0)
    summary.update({"out": str(out.resolve()), "source": str(source), "weights": predictor.source})
    return summary
