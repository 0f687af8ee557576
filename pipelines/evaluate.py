"""Evaluation stage: batched inference on the val split -> metrics, predictions file, drawn skeletons, MLflow.

Follows the paper's test procedure (HRNet pose paper Sec. 4.1 "Testing"; FACTS.md section 1):

1. person boxes from the prepared split's detection file (``test.use_gt_boxes: false``, the paper's numbers) or
   from the ground truth (``true``; MPII always uses the provided boxes);
2. crop at the recipe's input size, forward, and with ``test.flip`` average with the flipped-back heatmaps of the
   mirrored crop (shifted one heatmap cell right when ``test.shift_heatmap``);
3. argmax + quarter offset toward the higher neighbour, inverse affine to original-image pixels;
4. COCO: person score = box score x mean of joint maxima above ``test.joint_score_thr``, OKS-NMS at
   ``test.oks_nms_thr`` per image, ``COCOeval`` keypoints (AP, AP50, ... in percent, as the papers print them);
   MPII: PCKh@0.5 ("Mean" without pelvis and thorax) and per-joint groups.

Outputs in ``out_dir``: ``predictions.json`` (official COCO results format; MPII: per-record joints),
``metrics.json`` and ``vis/<image_id>.jpg``. Weights files written by training (:func:`save_weights`) carry the
recipe and the MLflow run id, so ``hrnet evaluate --checkpoint models/pose.pt`` needs nothing else.

An officially released checkpoint (e.g. the DHRN ``pose_hrnet_w32_256x192.pth``: a plain state dict, or a
``{"state_dict": ...}`` container) carries no recipe: ``hrnet evaluate RECIPE --checkpoint FILE`` loads it strictly
into the recipe's model (:func:`hrnet_core.models.load_checkpoint`) and records the evaluation as its own MLflow run
tagged ``source=official-checkpoint`` (plus ``checkpoint.sha256``), so "their weights in our evaluator" sits beside
"our training" in the paper report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from hrnet_core.recipes import Recipe, recipe_from_dict

from .prepare import PreparedSplit, open_split

WEIGHTS_FORMAT = "hrnet-pipeline/weights-1"


class CheckpointError(ValueError):
    """A weights / checkpoint file is missing, unreadable or not of this pipeline (the message names the file)."""


# ------------------------------------------------------------------------------------------------ weights files


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], recipe: Recipe,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write a self-describing weights file: ``{"format", "model", "model_kwargs", "state_dict", "recipe", ...meta}``.

    ``state_dict`` is the bare model's (no ``module.`` prefix); it loads strictly with
    ``hrnet_core.models.load_checkpoint(build_model(model, **model_kwargs), payload["state_dict"])``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "model": recipe.model.name,
        "model_kwargs": recipe.model.build_kwargs(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "recipe": recipe.to_dict(),
        **(meta or {}),
    }
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(p)
    return p


def load_weights(path: str | Path) -> dict[str, Any]:
    """Read a weights file of :func:`save_weights`, or a Ray Train checkpoint directory holding ``model.pt``.

    Raises:
        CheckpointError: missing file, unreadable file, or not a weights file of this pipeline.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a bad file
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a weights file of this pipeline (format "
                              f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    return payload


def build_pose_model(recipe: Recipe, state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """``build_model(recipe.model.name, **recipe.model.build_kwargs())``, loading ``state_dict`` strictly if given."""
    from hrnet_core.models import build_model, load_checkpoint

    model = build_model(recipe.model.name, **recipe.model.build_kwargs())
    if state_dict is not None:
        load_checkpoint(model, state_dict)
    return model


SOURCE_TRAINING = "training"
SOURCE_OFFICIAL = "official-checkpoint"


@dataclass
class LoadedCheckpoint:
    """A checkpoint loaded into its model.

    Attributes:
        model: the recipe's network with the checkpoint's weights (CPU, train mode as built).
        recipe: the recipe it is evaluated with (the stored one for our weights files unless overridden).
        source: ``"training"`` (a weights file of :func:`save_weights` / a Ray checkpoint) or
            ``"official-checkpoint"`` (any other state dict, e.g. an officially released ``.pth``).
        path: the file read.
        meta: for our weights files the stored extras (``epoch``, ``mlflow_run_id``, ...); for official checkpoints
            ``{"sha256": ...}``.
    """

    model: torch.nn.Module
    recipe: Recipe
    source: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies a released checkpoint across renames)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def open_checkpoint(checkpoint: str | Path, recipe: Recipe | None = None) -> LoadedCheckpoint:
    """Load our weights file or an official checkpoint into the recipe's model, strictly.

    A file whose ``format`` is :data:`WEIGHTS_FORMAT` (or a Ray checkpoint directory) is ours: its stored recipe is
    used unless ``recipe`` is given. Any other file that ``torch.load(weights_only=True)`` reads as a mapping is treated
    as an official checkpoint (plain state dict or ``state_dict`` / ``model`` / ``module`` container, wrapper
    prefixes such as ``module.`` stripped; :func:`hrnet_core.models.load_checkpoint`) and needs ``recipe``.

    Raises:
        CheckpointError: missing or unreadable file; an official checkpoint without a recipe.
        hrnet_core.models.CheckpointMismatchError: the weights do not fit the recipe's model (lists the keys).
    """
    from hrnet_core.models import load_checkpoint

    p = Path(checkpoint)
    if p.is_dir() or not p.is_file():
        payload = load_weights(p)  # Ray checkpoint directory, or raises "not found"
        return _ours(payload, p, recipe)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - our own files may hold objects weights_only refuses; load_weights decides
        obj = None
    if isinstance(obj, Mapping) and obj.get("format") == WEIGHTS_FORMAT:
        return _ours(dict(obj), p, recipe)
    if obj is None:  # not readable safely: our own file with extra objects, or a bad file (load_weights says which)
        return _ours(load_weights(p), p, recipe)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {str(p)!r} holds a {type(obj).__name__}, not a state dict")
    if recipe is None:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a weights file of this pipeline (an official "
                              f"checkpoint?): name its recipe, e.g. `hrnet evaluate pose_hrnet_w32_256x192_coco "
                              f"--checkpoint {p}`")
    model = build_pose_model(recipe)
    try:
        load_checkpoint(model, obj)
    except ValueError as exc:  # CheckpointMismatchError (a ValueError) names "<state dict>": name the file instead
        from hrnet_core.models import CheckpointMismatchError

        if isinstance(exc, CheckpointMismatchError):
            raise CheckpointMismatchError(str(p), f"{recipe.model.name} (recipe {recipe.name})", exc.missing,
                                          exc.unexpected, exc.mismatched) from None
        raise CheckpointError(f"checkpoint {str(p)!r}: {exc}") from None
    return LoadedCheckpoint(model, recipe, SOURCE_OFFICIAL, p, {"sha256": sha256_file(p)})


def _ours(payload: dict[str, Any], path: Path, recipe: Recipe | None) -> LoadedCheckpoint:
    recipe = recipe if recipe is not None else recipe_from_dict(payload["recipe"])
    model = build_pose_model(recipe, payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k not in ("format", "state_dict", "recipe", "model", "model_kwargs")}
    return LoadedCheckpoint(model, recipe, SOURCE_TRAINING, path, meta)


# ------------------------------------------------------------------------------------------------ inference


def eval_dataset(recipe: Recipe, split: PreparedSplit):
    """The reader with the records to predict, per the recipe's test settings.

    COCO: :class:`~hrnet_core.data.coco.CocoKeypoints` on the split's annotations, with the split's detection file
    unless ``test.use_gt_boxes``; MPII: :class:`~hrnet_core.data.mpii.MpiiKeypoints` with head boxes.

    Raises:
        pipelines.prepare.DataError: detector boxes requested but the split has no detection file.
    """
    from .prepare import DataError

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


def _batches(records: Sequence[dict[str, Any]], transform, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Preprocessed batches (a background thread decodes and warps the next batch while the model runs)."""
    from hrnet_core.data.io import read_image

    cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def image(path: str) -> np.ndarray:
        if path in cache:
            cache.move_to_end(path)
            return cache[path]
        img = read_image(path)
        cache[path] = img
        if len(cache) > 16:
            cache.popitem(last=False)
        return img

    def make(start: int) -> dict[str, np.ndarray]:
        samples = [transform(r, image(r["image_file"])) for r in records[start:start + batch_size]]
        return {
            "image": np.stack([s["image"] for s in samples]),
            "center": np.stack([s["center"] for s in samples]),
            "scale": np.stack([s["scale"] for s in samples]),
        }

    starts = list(range(0, len(records), batch_size))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, starts[0]) if starts else None
        for i in range(len(starts)):
            batch = pending.result()
            pending = pool.submit(make, starts[i + 1]) if i + 1 < len(starts) else None
            yield batch


@torch.no_grad()
def predict(model: torch.nn.Module, records: Sequence[dict[str, Any]], recipe: Recipe, flip_pairs,
            device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """Keypoints ``[N, K, 3]`` (x, y original-image px, heatmap maximum) for the records, in record order.

    The model runs in eval mode (restored afterwards); autocast is not used (fp32 inference).
    """
    from hrnet_core.codecs.heatmap import HeatmapCodec, flip_test
    from hrnet_core.data.transforms import TopDownTransform

    d = recipe.data
    transform = TopDownTransform(d.input_size, d.heatmap_size, d.sigma, flip_pairs, train=False)
    codec = HeatmapCodec(d.input_size, d.heatmap_size, d.sigma)
    was_training = model.training
    model.eval()
    out = []
    try:
        bar = tqdm(total=len(records), desc="evaluate", unit="person", disable=not progress)
        for batch in _batches(records, transform, recipe.test.batch_size):
            x = torch.from_numpy(batch["image"]).to(device)
            if recipe.test.flip:
                hm = flip_test(model, x, flip_pairs, shift=recipe.test.shift_heatmap)
            else:
                hm = model(x)
            coords, maxvals = codec.decode_to_image(hm.float().cpu().numpy(), batch["center"], batch["scale"])
            out.append(np.concatenate([coords, maxvals], axis=2))
            bar.update(len(x))
        bar.close()
    finally:
        model.train(was_training)
    k = recipe.model.num_joints
    return np.concatenate(out) if out else np.zeros((0, k, 3), np.float32)


def run_evaluation(model: torch.nn.Module, recipe: Recipe, split: PreparedSplit, *, device: torch.device | str = "cpu",
                   out_dir: str | Path | None = None, progress: bool = True,
                   num_vis: int | None = None) -> dict[str, float]:
    """Predict the val split and score it; with ``out_dir`` also write predictions, metrics and visualisations.

    Returns:
        COCO: ``AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL`` in percent (areas without ground truth
        omitted); MPII: ``PCKh`` (Mean@0.5), ``PCKh_0.1`` (Mean@0.1) and per-joint-group ``PCKh/<group>``; plus
        ``eval_persons`` and ``eval_time_s``.
    """
    from hrnet_core.evaluation.coco_keypoints import coco_keypoint_results, evaluate_coco_keypoints, write_coco_results

    t0 = time.time()
    reader = eval_dataset(recipe, split)
    records = reader.records
    preds = predict(model, records, recipe, reader.flip_pairs, device=device, progress=progress)
    work = Path(out_dir) if out_dir is not None else None
    if work is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        pred_dir = Path(tmp.name)
    else:
        work.mkdir(parents=True, exist_ok=True)
        pred_dir = work
    metrics: dict[str, float] = {}
    if recipe.data.dataset == "coco":
        results = coco_keypoint_results(
            preds, [r["image_id"] for r in records], [r["score"] for r in records], [r["area"] for r in records],
            centers=np.stack([r["center"] for r in records]) if records else None,
            scales=np.stack([r["scale"] for r in records]) if records else None,
            in_vis_thr=recipe.test.joint_score_thr, oks_thr=recipe.test.oks_nms_thr,
            sigmas=None if reader.num_joints == 17 else reader.sigmas,
        )
        pred_file = write_coco_results(results, pred_dir / "predictions.json")
        stats = evaluate_coco_keypoints(reader.coco, pred_file, sigmas=None if reader.num_joints == 17 else reader.sigmas)
        metrics.update({k: 100.0 * v for k, v in stats.items() if v >= 0})
        vis_results = results
        gt_by_image: dict[int, list[np.ndarray]] = {}
        for a in reader.coco.dataset["annotations"]:
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0:
                gt_by_image.setdefault(int(a["image_id"]), []).append(np.asarray(a["keypoints"], float).reshape(-1, 3))
        image_files = {int(r["image_id"]): r["image_file"] for r in records}
    else:
        from hrnet_core.evaluation.pckh import evaluate_mpii

        res = evaluate_mpii(preds, records)
        metrics["PCKh"] = float(res["PCKh"])
        metrics["PCKh_0.1"] = float(res["PCKh@0.1"])  # MLflow metric names allow no "@"
        for group, value in res["table"].items():
            if isinstance(value, (int, float)) and group not in ("Mean", "threshold"):
                metrics[f"PCKh/{group}"] = float(value)
        vis_results = [{"image_id": int(r["image_id"]), "keypoints": p, "score": 1.0} for r, p in zip(records, preds)]
        (pred_dir / "predictions.json").write_text(json.dumps(
            [{"image": r.get("image_name", r["image_file"]), "image_id": int(r["image_id"]),
              "keypoints": p.reshape(-1).round(3).tolist()} for r, p in zip(records, preds)]))
        gt_by_image = {}
        for r in records:
            gt_by_image.setdefault(int(r["image_id"]), []).append(
                np.concatenate([r["joints"][:, :2], r["joints"][:, 2:] * 2], axis=1))
        image_files = {int(r["image_id"]): r["image_file"] for r in records}
    metrics["eval_persons"] = float(len(records))
    metrics["eval_time_s"] = time.time() - t0
    if work is not None:
        from .visualize import save_visualisations

        n = recipe.test.num_vis_images if num_vis is None else num_vis
        if n > 0:
            save_visualisations(vis_results, image_files, work / "vis", num_images=n, ground_truth=gt_by_image,
                                joint_thr=recipe.test.joint_score_thr)
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    else:
        tmp.cleanup()
    return metrics


def evaluate_untrained(recipe: Recipe, *, out_dir: str | Path | None = None, device: str | None = None,
                       progress: bool = True) -> dict[str, float]:
    """Metrics of a freshly initialised model of the recipe (seed ``train.seed``): the no-learning baseline."""
    torch.manual_seed(recipe.train.seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_pose_model(recipe).to(dev)
    split = open_split(recipe.data.root, recipe.data.val_split)
    return run_evaluation(model, recipe, split, device=dev, out_dir=out_dir, progress=progress,
                          num_vis=None if out_dir is not None else 0)


def evaluate(recipe: Recipe | None, checkpoint: str, *, mlflow_uri: str | None, run_id: str | None,
             out_dir: str | Path, device: str | None = None, progress: bool = True,
             baseline: bool = False, experiment: str = "hrnet") -> dict[str, float]:
    """Evaluate a checkpoint on the recipe's val split and log the results to MLflow.

    Args:
        recipe: resolved recipe; ``None`` uses the recipe stored in our weights file (an official checkpoint needs
            one).
        checkpoint: weights file of :func:`save_weights`, a Ray Train checkpoint directory, or an official ``.pth``
            (:func:`open_checkpoint`).
        mlflow_uri: tracking URI (``None``: default ``sqlite:///mlflow.db``).
        run_id: MLflow run to log into. ``None``: our weights log into the training run recorded in the file;
            an official checkpoint gets a new run in ``experiment`` tagged ``source=official-checkpoint``. ``""``
            skips MLflow.
        out_dir: where ``predictions.json``, ``metrics.json`` and ``vis/`` go.
        device: ``cuda`` / ``cpu``; default CUDA when available.
        baseline: also score a freshly initialised model (:func:`evaluate_untrained`), reported as
            ``untrained/<metric>``.
        experiment: MLflow experiment of a new official-checkpoint run.

    Returns:
        The metrics of :func:`run_evaluation` (plus ``untrained/*`` with ``baseline``).

    Raises:
        CheckpointError: bad checkpoint; pipelines.prepare.DataError: missing prepared data;
        hrnet_core.models.CheckpointMismatchError: weights of another architecture than the recipe's model.
    """
    loaded = open_checkpoint(checkpoint, recipe)
    recipe = loaded.recipe
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = loaded.model.to(dev)
    split = open_split(recipe.data.root, recipe.data.val_split)
    out = Path(out_dir).resolve()
    metrics = run_evaluation(model, recipe, split, device=dev, out_dir=out, progress=progress)
    if baseline:
        base = evaluate_untrained(recipe, device=str(dev), progress=progress)
        metrics.update({f"untrained/{k}": v for k, v in base.items() if k not in ("eval_persons", "eval_time_s")})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if run_id == "":
        return metrics
    if run_id is None and loaded.source == SOURCE_TRAINING:
        run_id = loaded.meta.get("mlflow_run_id")
    if loaded.source == SOURCE_TRAINING and not run_id:
        return metrics
    log_evaluation(loaded, split, metrics, out, mlflow_uri=mlflow_uri, run_id=run_id, experiment=experiment)
    return metrics


def log_evaluation(loaded: LoadedCheckpoint, split: PreparedSplit, metrics: dict[str, float], out: Path, *,
                   mlflow_uri: str | None, run_id: str | None, experiment: str = "hrnet") -> str:
    """Log an evaluation to MLflow: metrics, ``eval.*`` tags, predictions/metrics/vis artifacts, and the paper
    comparison (``paper/<m>``, ``delta/<m>``). ``run_id=None`` creates a run (official checkpoints: tags ``recipe``,
    ``paper.*``, ``source=official-checkpoint``, ``checkpoint.sha256``; params: the recipe) and finishes it.

    Returns:
        The run id logged into.
    """
    from . import tracking

    recipe = loaded.recipe
    uri = tracking.resolve_tracking_uri(mlflow_uri)
    created = run_id is None
    if created:
        tags = {**tracking.recipe_tags(recipe), "source": loaded.source, "git_commit": tracking.git_commit(),
                "dataset_fingerprint": split.fingerprint, "checkpoint.sha256": loaded.meta.get("sha256")}
        run_id = tracking.create_run(uri, experiment, f"{loaded.source}-{recipe.name}-{loaded.path.stem}", tags)
        tracking.log_params(uri, run_id, recipe.flat(), on_change="tag")
    step = int(loaded.meta.get("epoch", 0))
    tracking.log_metrics(uri, run_id, metrics, step=step)
    tracking.set_tags(uri, run_id, {"eval.checkpoint": str(loaded.path.resolve()),
                                    "eval.boxes": "gt" if recipe.test.use_gt_boxes or recipe.data.dataset == "mpii"
                                    else "detections", "eval.flip": recipe.test.flip,
                                    "eval.dataset_fingerprint": split.fingerprint[:16],
                                    # a profile (e.g. smoke) changes the recipe: paper/ and delta/ are context only
                                    "paper.comparable": str(recipe.profile is None).lower()})
    tracking.log_artifacts(uri, run_id, [out / "predictions.json", out / "metrics.json"], artifact_path="evaluation")
    if (out / "vis").is_dir():
        tracking.log_artifacts(uri, run_id, [out / "vis"], artifact_path="evaluation/vis")
    tracking.log_paper_comparison(run_id, recipe.name, metrics, tracking_uri=uri)
    if created:
        tracking.end_run(uri, run_id)
    return run_id
