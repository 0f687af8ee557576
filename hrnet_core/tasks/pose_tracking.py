"""Video pose estimation and tracking on PoseTrack (HRNet pose paper, CVPR 2019, Sec. 4.3): the ``pose_tracking`` task.

Training is top-down pose training on the labelled frames, exactly the ``pose_topdown`` task's (its sample transform,
model, loss; PoseTrack fine-tuning from a COCO model in the paper): one sample per person, the box of the person's
labelled keypoints enlarged by 15% (Sec. 4.3). What this task adds:

- readers ``posetrack18`` and ``posetrack17``: the COCO-style video json (:mod:`hrnet_core.data.posetrack`), one file
  per sequence (a folder, the official layout ``annotations/<split>/``) or a combined file, plus an optional person
  detection file; ``samples.parquet`` has the ``pose_topdown`` columns (``image_id``, ``ann_id``, ``file_name``,
  ``bbox``, ``joints``) plus ``track_id`` and ``vid_id``;
- the test procedure: one eval item per sequence, tracked by :func:`hrnet_core.tracking.track_sequence` (detector
  boxes + boxes propagated by optical flow, box NMS, top-down pose with the recipe's flip test, greedy OKS /
  flow-warped OKS association); the recipe's ``test:`` section holds the tracking options;
- the metrics of :mod:`hrnet_core.evaluation.posetrack`, computed as the benchmark's kit poseval computes them
  (per-joint AP / mAP and MOTA / MOTP / precision / recall over poseval's 15 joints, PCKh 0.5 of the head size,
  ignore regions, the frames with ground-truth people, the last of them per sequence left out of the tracking
  metrics); the results are written in the PoseTrack format,
  one json per sequence (``<out_dir>/predictions/<sequence>.json``) and all together (``predictions.json``);
- drawings: tracked skeletons, one colour per track id;
- synthetic default: generated clips of moving figures with identities (:mod:`hrnet_core.data.synthetic_tracking`),
  in the COCO-style PoseTrack json with the ears unlabelled (as both PoseTrack releases in this format), prepared with
  the ``posetrack17`` reader so that the smoke run trains the paper's recipe.
"""

from __future__ import annotations

import atexit
import functools
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.recipes.config import ConfigError

from . import pose_topdown
from .base import (BatchPredictor, DatasetReader, MetricSpec, PreparedRows, Predictions, RecipeSections, SourceFiles,
                   SplitPrep, SyntheticData, Task)

# ------------------------------------------------------------------------------------------------ recipe sections


@dataclass
class TrackingTest(pose_topdown.TopDownTest):
    """``test:`` of a tracking recipe: the top-down test keys (flip test, ``joint_score_thr``, ``det_score_thr``,
    ``oks_nms_thr``: duplicate poses of a frame, ``use_gt_boxes``: the keypoint boxes of the labelled people instead
    of the detection file) plus the tracker
    options of :class:`hrnet_core.tracking.TrackerConfig` (``propagation``: ``dis`` / ``farneback`` / ``none``;
    ``association``: ``flow_oks`` / ``oks`` / ``order``; ``match_thr`` OKS; ``box_nms_thr`` IoU; ``box_extend``;
    ``flow``, ``flow_scale``) and ``keypoint_thr``: joints scored below it are left out of the results (the
    benchmark's AP / MOTA trade-off; 0 keeps every joint). ``cpu_threads``: torch intra-op threads while tracking on
    the CPU (0 leaves torch's setting): a frame's batch is a few crops, and on a busy machine one thread is several
    times faster than oversubscribed ones (restored afterwards)."""

    propagation: str = "dis"
    association: str = "flow_oks"
    flow: str = "dis"
    match_thr: float = 0.3
    box_nms_thr: float = 0.5
    box_extend: float = 0.15
    flow_scale: float = 1.0
    keypoint_thr: float = 0.2
    cpu_threads: int = 0


def tracker_config(recipe):
    """The :class:`~hrnet_core.tracking.TrackerConfig` of a recipe's ``test:`` section."""
    from hrnet_core.tracking import TrackerConfig

    t = recipe.test
    return TrackerConfig(**{f.name: getattr(t, f.name) for f in fields(TrackerConfig)})


def validate(recipe) -> None:
    """The top-down checks plus the tracker options.

    Raises:
        ConfigError: naming the key.
    """
    pose_topdown.validate(recipe)
    try:
        tracker_config(recipe).check()
    except ValueError as exc:
        raise ConfigError(f"test.{exc}") from None
    if not 0.0 <= recipe.test.keypoint_thr <= 1.0:
        raise ConfigError("test.keypoint_thr: must be in [0, 1]")
    if recipe.test.cpu_threads < 0:
        raise ConfigError("test.cpu_threads: must be >= 0 (0 leaves torch's setting)")
    if recipe.model.num_joints not in (None, 17):
        raise ConfigError(f"model.num_joints: PoseTrack has 17 joints, got {recipe.model.num_joints}")


# ------------------------------------------------------------------------------------------------ readers


def _layout(split: str) -> dict[str, str]:
    return {"annotations": f"annotations/{split}", "images": "."}


def _combined_file(videos) -> Path:
    """A per-sequence folder as one combined json (a temporary file, removed when the process exits)."""
    import json

    fd, name = tempfile.mkstemp(prefix="posetrack-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(videos.to_json(), f)
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    return Path(name)


def _read_posetrack(src: SourceFiles) -> PreparedRows:
    """PoseTrack split -> rows: every frame (labelled or not) is an image; one sample per person of a labelled frame
    with at least two labelled joints, its box the keypoints' box enlarged by 15% (pose paper Sec. 4.3)."""
    import pandas as pd

    from hrnet_core.data.io import check_files_exist
    from hrnet_core.data.posetrack import keypoint_box, load_posetrack

    ann = Path(src.files["annotations"])
    videos = load_posetrack(ann)
    root = Path(src.files["images"])
    frames = [videos.frames[i] for ids in videos.sequences.values() for i in ids]
    check_files_exist([str(root / f.file_name) for f in frames], ann)
    images = pd.DataFrame([{"image_id": f.image_id, "file_name": f.file_name, "width": f.width, "height": f.height}
                           for f in frames], columns=["image_id", "file_name", "width", "height"])
    rows = []
    for f in frames:
        if not f.is_labeled:
            continue
        for p in videos.people[f.image_id]:
            box = keypoint_box(p.keypoints, 0.15)
            if box is None:
                continue
            rows.append({"image_id": f.image_id, "ann_id": p.ann_id, "file_name": f.file_name,
                         "bbox": [float(v) for v in box], "joints": [float(v) for v in p.keypoints.reshape(-1)],
                         "track_id": p.track_id, "vid_id": f.vid_id})
    samples = pd.DataFrame(rows, columns=["image_id", "ann_id", "file_name", "bbox", "joints", "track_id", "vid_id"])
    files = {"annotations": ann if ann.is_file() else _combined_file(videos)}
    if "detections" in src.files:
        files["detections"] = src.files["detections"]
    return PreparedRows(images=images, samples=samples, image_root=root, files=files,
                        meta={"num_joints": 17, "num_sequences": len(videos.sequences),
                              "num_labeled_frames": sum(1 for f in frames if f.is_labeled)})


_INPUTS = {"annotations": "PoseTrack json, or a folder of per-sequence jsons",
           "images": "dataset root (the json's file_name values are relative to it)",
           "detections": "person detection results json (COCO results list)"}

DATASETS: dict[str, DatasetReader] = {
    "posetrack18": DatasetReader(
        name="posetrack18", description="PoseTrack 2018 (annotations/<split>/*.json per sequence + images/<split>/...)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout, read=_read_posetrack),
    "posetrack17": DatasetReader(
        name="posetrack17", description="PoseTrack 2017 in the COCO-style video json (as PoseTrack 2018)",
        inputs=_INPUTS, required=("annotations", "images"), default_layout=_layout, read=_read_posetrack),
}


# ------------------------------------------------------------------------------------------------ model


def build_model(recipe):
    """The zoo network; ``model.pretrained`` is a whole top-down pose checkpoint (the COCO model PoseTrack training
    starts from, Sec. 4.3), loaded strictly.

    Raises:
        FileNotFoundError, hrnet_core.models.CheckpointMismatchError: as :func:`hrnet_core.models.load_checkpoint`.
    """
    from hrnet_core.models import build_model as zoo, load_checkpoint

    model = zoo(recipe.model.name, **recipe.model.build_kwargs())
    if recipe.model.pretrained:
        load_checkpoint(model, recipe.model.pretrained)
    return model


# ------------------------------------------------------------------------------------------------ evaluation


def _videos(split):
    from hrnet_core.data.posetrack import load_posetrack

    return load_posetrack(split.ann_file)


def eval_items(recipe, split) -> list[dict[str, Any]]:
    """One item per sequence: ``vid_id``, ``frames`` (``image_id``, ``image_file``, ``file_name``, ``frame_id``,
    ``is_labeled`` in frame order) and ``boxes`` (``image_id -> [N, 5]`` x, y, w, h, score): the split's detections,
    or with ``test.use_gt_boxes`` the keypoint boxes of the labelled people (score 1).

    Raises:
        hrnet_core.data.prepared.DataError: detector boxes requested but the split has no detection file.
    """
    from hrnet_core.data.posetrack import keypoint_box, load_detections
    from hrnet_core.data.prepared import DataError

    videos = _videos(split)
    if recipe.test.use_gt_boxes:
        boxes = {}
        for iid, people in videos.people.items():
            b = [keypoint_box(p.keypoints, 0.15) for p in people]
            boxes[iid] = np.asarray([[*x, 1.0] for x in b if x is not None], np.float64).reshape(-1, 5)
    else:
        if split.detections is None:
            raise DataError(f"recipe {recipe.name} tracks on detector boxes (test.use_gt_boxes=false) but "
                            f"{str(split.dir)!r} has no detections.json; prepare it with --detections or set "
                            f"test.use_gt_boxes=true")
        boxes = load_detections(split.detections, recipe.test.det_score_thr)
    items = []
    for vid, ids in videos.sequences.items():
        frames = [{"image_id": i, "image_file": str(split.image_root / videos.frames[i].file_name),
                   "file_name": videos.frames[i].file_name, "frame_id": videos.frames[i].frame_id,
                   "is_labeled": videos.frames[i].is_labeled, "vid_id": vid} for i in ids]
        items.append({"vid_id": vid, "frames": frames,
                      "boxes": {i: boxes[i] for i in ids if i in boxes and len(boxes[i])}})
    return items


class _PoseEstimator:
    """``(frame, boxes [N, 5]) -> poses [N, K, 3]``: the top-down test procedure of ``pose_topdown`` on boxes,
    batches of ``test.batch_size`` people (the network folded once, not per frame)."""

    def __init__(self, model, recipe, split, device) -> None:
        from hrnet_core.tasks.pose_topdown import inference_network

        self.aspect = recipe.data.input_size[0] / recipe.data.input_size[1]
        self.num_joints = int(split.manifest["num_joints"])
        self.predict = pose_topdown.predictor(model, recipe, split, device, folded=inference_network(model, device))

    def __call__(self, frame: Mapping[str, Any], boxes: np.ndarray) -> np.ndarray:
        from hrnet_core.data.transforms import box_to_center_scale

        records = []
        for b in boxes:
            c, s = box_to_center_scale(b[:4], self.aspect)
            records.append({"image_file": frame["image_file"], "image_id": frame["image_id"], "center": c,
                            "scale": s, "score": float(b[4]), "joints": np.zeros((17, 3))})
        if not records:
            return np.zeros((0, self.num_joints, 3), np.float32)
        size, p = self.predict.batch_size, self.predict
        return pose_topdown.concat([p.run(p.load(records[i:i + size])) for i in range(0, len(records), size)]).values


def predictor(model, recipe, split, device="cpu") -> BatchPredictor:
    """Track one sequence per batch (:func:`hrnet_core.tracking.track_sequence`; ``test.cpu_threads`` on a CPU):
    one entry per item, the list of its frames' ``{"image_id", "poses" [N, K, 3], "track_ids" [N], "scores" [N],
    "boxes" [N, 5]}`` (FlowTrack, Xiao et al. 2018: the top-down test procedure on the boxes, flow-propagated boxes,
    OKS association)."""
    limit = recipe.test.cpu_threads if str(device).startswith("cpu") else 0
    run = functools.partial(_track, _PoseEstimator(model, recipe, split, device), tracker_config(recipe))
    return BatchPredictor(run=run, batch_size=1, cpu_threads=int(limit), unit="sequence", desc="track")


def _track(estimate: _PoseEstimator, cfg, items: Sequence[dict[str, Any]]) -> Predictions:
    from hrnet_core.data.io import read_image
    from hrnet_core.data.keypoints import POSETRACK_KEYPOINTS
    from hrnet_core.tracking import track_sequence

    return Predictions([track_sequence(item["frames"], item["boxes"], estimate, read_image,
                                       POSETRACK_KEYPOINTS.sigmas, cfg) for item in items])


def concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions([v for p in parts for v in p.values])


def order_ids(predictions: Predictions) -> Predictions:
    """The same tracked poses with the ids of tracking by detection order alone: the i-th pose of a frame gets id i
    (what ``test.association=order`` gives, since the poses do not depend on the ids): the baseline that the ids of
    the tracker are compared with (``order/*`` metrics of :func:`score`)."""
    return Predictions([[{**fr, "track_ids": np.arange(len(fr["poses"]))} for fr in seq] for seq in predictions.values])


def results(items, predictions: Predictions, keypoint_thr: float) -> dict[str, dict]:
    """PoseTrack results json per sequence (``vid_id -> json``); joints scored below ``keypoint_thr`` are absent."""
    from hrnet_core.evaluation.posetrack import results_json

    out = {}
    for item, tracked in zip(items, predictions.values):
        people = {}
        for fr in tracked:
            lst = []
            for pose, tid, s in zip(fr["poses"], fr["track_ids"], fr["scores"]):
                k = np.asarray(pose, np.float64).copy()
                k[k[:, 2] < keypoint_thr] = 0.0
                if (k[:, 2] > 0).any():
                    lst.append({"track_id": int(tid), "keypoints": k, "score": float(s)})
            people[fr["image_id"]] = lst
        out[item["vid_id"]] = results_json(item["frames"], people)
    return out


def score(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split,
          out_dir: str | Path | None = None) -> dict[str, float]:
    """PoseTrack metrics (:func:`hrnet_core.evaluation.posetrack.evaluate_posetrack`) of the tracked sequences;
    with ``out_dir`` also ``predictions/<sequence>.json`` (one PoseTrack results json per sequence) and
    ``predictions.json`` (all sequences in one).

    Returns:
        ``mAP``, ``AP/<joint|group>``, ``MOTA``, ``MOTP``, ``precision``, ``recall``, ``MOTA/<joint>`` (percent), the
        CLEAR MOT counts, ``num_labeled_frames``, ``num_eval_frames``, ``num_tracking_frames``, ``eval_items``
        (sequences), and ``order/MOTA``,
        ``order/num_switches``: the same poses with the ids of tracking by detection order alone (:func:`order_ids`;
        only the ids differ, so MOTA differs by the switches alone).
    """
    import json

    from hrnet_core.evaluation.posetrack import evaluate_posetrack, read_results

    per_seq = results(items, predictions, recipe.test.keypoint_thr)
    if out_dir is not None:
        d = Path(out_dir) / "predictions"
        d.mkdir(parents=True, exist_ok=True)
        for item in items:
            name = Path(item["frames"][0]["file_name"]).parent.name if item["frames"] else item["vid_id"]
            (d / f"{name or item['vid_id']}.json").write_text(json.dumps(per_seq[item["vid_id"]]))
        merged = {"images": [i for r in per_seq.values() for i in r["images"]],
                  "annotations": [a for r in per_seq.values() for a in r["annotations"]],
                  "categories": next(iter(per_seq.values()))["categories"] if per_seq else []}
        (Path(out_dir) / "predictions.json").write_text(json.dumps(merged))
    videos = _videos(split)
    scored = {it["vid_id"] for it in items}
    videos.sequences = {v: ids for v, ids in videos.sequences.items() if v in scored}
    videos.frames = {i: videos.frames[i] for ids in videos.sequences.values() for i in ids}
    metrics = evaluate_posetrack(videos, read_results(per_seq.values()))
    order = evaluate_posetrack(videos, read_results(results(items, order_ids(predictions), recipe.test.keypoint_thr)
                                                    .values()))
    metrics["order/MOTA"], metrics["order/num_switches"] = order["MOTA"], order["num_switches"]
    metrics["eval_items"] = float(len(items))
    return metrics


_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw(items: Sequence[dict[str, Any]], predictions: Predictions, recipe, split, out_dir: str | Path,
         num_images: int) -> list[Path]:
    """Tracked skeletons (one colour per track id, the id written at the head) on the first frames of each sequence,
    ``num_images`` frames in all, as ``<out_dir>/<image_id>.jpg``."""
    import cv2

    from hrnet_core.data.io import read_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skeleton = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
                (8, 10), (1, 2), (0, 1), (1, 5), (1, 6)]
    thr = recipe.test.keypoint_thr
    files, per_seq = [], max(1, num_images // max(1, len(items)))
    for item, tracked in zip(items, predictions.values):
        for frame, fr in list(zip(item["frames"], tracked))[:per_seq]:
            if len(files) >= num_images:
                return files
            img = cv2.cvtColor(read_image(frame["image_file"]), cv2.COLOR_RGB2BGR)
            for pose, tid in zip(fr["poses"], fr["track_ids"]):
                color = _PALETTE[int(tid) % len(_PALETTE)][::-1]
                for a, b in skeleton:
                    if pose[a, 2] >= thr and pose[b, 2] >= thr:
                        cv2.line(img, tuple(int(v) for v in pose[a, :2]), tuple(int(v) for v in pose[b, :2]), color, 2)
                top = pose[2] if pose[2, 2] >= thr else pose[int(np.argmax(pose[:, 2]))]
                cv2.putText(img, str(int(tid)), (int(top[0]), int(top[1]) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
            path = out / f"{frame['image_id']}.jpg"
            cv2.imwrite(str(path), img)
            files.append(path)
    return files


# ------------------------------------------------------------------------------------------------ synthetic data


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None) -> dict[str, Any]:
    """Generated clips in the PoseTrack 2018 layout (:func:`hrnet_core.data.synthetic_tracking.generate_clips`);
    ``num_train`` / ``num_val`` are clips."""
    from hrnet_core.data.synthetic_tracking import generate_clips

    return generate_clips(out_dir, num_train, num_val, seed, progress=progress)


SYNTHETIC = SyntheticData(
    generate=generate,
    splits=(SplitPrep("posetrack17", "train"),
            SplitPrep("posetrack17", "val", {"detections": "person_detection_results/posetrack_val_detections.json"})),
)

TASK = Task(
    name="pose_tracking",
    description="video pose estimation and tracking: top-down pose + flow propagation + OKS association (PoseTrack "
                "mAP, MOTA)",
    datasets=DATASETS,
    sections=RecipeSections(data=pose_topdown.TopDownData, augment=pose_topdown.TopDownAugment, test=TrackingTest,
                            loss=pose_topdown.JointsMSELossConfig),
    metrics=MetricSpec(primary="MOTA", higher_is_better=True,
                       names=("MOTA", "mAP", "MOTP", "precision", "recall", "AP/Head", "AP/Shoulder", "AP/Elbow",
                              "AP/Wrist", "AP/Hip", "AP/Knee", "AP/Ankle"),
                       units="percent (PoseTrack: AP at PCKh 0.5, CLEAR MOT per joint averaged over joints)"),
    synthetic=SYNTHETIC,
    validate=validate,
    sample_transform=pose_topdown.sample_transform,
    train_step=pose_topdown.train_step,
    build_model=build_model,
    eval_items=eval_items,
    predictor=predictor,
    concat=concat,
    score=score,
    draw=draw,
)
