"""Generated video clips in the PoseTrack 2018 layout: moving articulated figures with identities.

The default data of the ``pose_tracking`` task (``hrnet data generate pose_tracking``), so that training, tracking and
the PoseTrack metrics run offline. The figures are drawn by :mod:`hrnet_core.data.synthetic` (same bodies, limbs and
heads as the top-down data); here each figure keeps its colours and body through a clip, walks across the image at
its own speed (figures cross and occlude each other), upright (:func:`walking_pose`), and swings its arms and legs.
Output::

    <out>/annotations/{train,val}/<vid>_synthetic_<split>.json    one PoseTrack json per sequence
    <out>/images/{train,val}/<vid>_synthetic_<split>/<frame:06d>.jpg
    <out>/person_detection_results/posetrack_{train,val}_detections.json   simulated detector boxes, sorted by score

Annotations (PoseTrack 2018 conventions): 17 joints in the PoseTrack order (nose, head bottom, head top, ears, ...),
visibility 0/1 (1 = inside the image; the nose of a figure seen from the back is 0), the ears never labelled,
``bbox`` of the drawn silhouette, ``bbox_head`` a square around the head (the PCKh normaliser), ``track_id`` per figure.
Every frame is labelled except the last frame of each validation clip (``is_labeled: false``, as the unlabelled
frames of PoseTrack validation videos). Deterministic for a seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .synthetic import (_JOINT, _Canvas, _bbox, _place, _rot, draw_figure, render_background, sample_pose,
                        simulate_detections)

__all__ = ["ClipConfig", "render_clip", "generate_clips", "walking_pose", "DETECTIONS_FILE"]

DETECTIONS_FILE = "person_detection_results/posetrack_{split}_detections.json"
_SWING = ("left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_knee", "right_knee", "left_ankle",
          "right_ankle")


@dataclass(frozen=True)
class ClipConfig:
    """Knobs of the clip generator: ``frames`` per validation clip and ``train_frames`` per training clip (training
    uses single labelled frames, so short clips give more distinct figures per sample), image size ranges (px),
    people per clip, figure height (fraction of the image height), walking speed (px per frame), limb swing (fraction
    of the height)."""

    frames: int = 8
    train_frames: int = 2
    width_range: tuple[int, int] = (224, 288)
    height_range: tuple[int, int] = (176, 224)
    people: tuple[int, int] = (2, 3)
    person_height: tuple[float, float] = (0.55, 0.85)
    speed: tuple[float, float] = (2.0, 7.0)
    swing: float = 0.04
    back_facing_prob: float = 0.2
    jpeg_quality: int = 92


def walking_pose(rng: np.random.Generator) -> np.ndarray:
    """An upright walking pose ``[17, 2]`` in the body units of :func:`hrnet_core.data.synthetic.sample_pose` (height
    ~1, y down, hips at y=0, the figure's left at x > 0): arms hang or swing (up to 45 degrees), elbows bend up to 60,
    legs stride up to 25 degrees. Narrower than ``sample_pose`` (which draws any arm and leg angle): the clips test
    tracking, and a smoke-sized network learns these bodies within the ``dvc repro`` budget."""
    p = sample_pose(rng)  # proportions, head and shoulders of a random body; limbs re-drawn below
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        sh, hip = p[_JOINT[f"{side}_shoulder"]], p[_JOINT[f"{side}_hip"]]
        upper = np.linalg.norm(p[_JOINT[f"{side}_elbow"]] - sh)
        fore = np.linalg.norm(p[_JOINT[f"{side}_wrist"]] - p[_JOINT[f"{side}_elbow"]])
        thigh = np.linalg.norm(p[_JOINT[f"{side}_knee"]] - hip)
        shin = np.linalg.norm(p[_JOINT[f"{side}_ankle"]] - p[_JOINT[f"{side}_knee"]])
        a1 = rng.uniform(-15, 45)
        a2 = a1 + rng.uniform(0, 60)
        l1 = rng.uniform(-20, 25)
        l2 = l1 - rng.uniform(0, 25)
        elbow = sh + _rot(np.array([0.0, upper]), -sgn * a1)
        knee = hip + _rot(np.array([0.0, thigh]), -sgn * l1)
        p[_JOINT[f"{side}_elbow"]] = elbow
        p[_JOINT[f"{side}_wrist"]] = elbow + _rot(np.array([0.0, fore]), -sgn * a2)
        p[_JOINT[f"{side}_knee"]] = knee
        p[_JOINT[f"{side}_ankle"]] = knee + _rot(np.array([0.0, shin]), -sgn * l2)
    return p


def _posetrack_joints(coco: np.ndarray, h: float) -> np.ndarray:
    """COCO-layout joints ``[17, 2]`` of a drawn figure -> PoseTrack-layout ``[17, 2]`` (head bottom / top where the
    drawing puts the neck and the crown) and the head centre ``[2]``, head radius."""
    j = {n: coco[i] for n, i in _JOINT.items()}
    eye_mid = (j["left_eye"] + j["right_eye"]) / 2
    shoulders = (j["left_shoulder"] + j["right_shoulder"]) / 2
    head_c = eye_mid + (eye_mid - j["nose"]) * 0.1 + (eye_mid - shoulders) * 0.05  # as draw_figure
    r = 0.062 * h
    up = head_c - shoulders
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    out = coco.copy()
    out[1] = head_c - up * r * 1.1  # head bottom (chin / upper neck)
    out[2] = head_c + up * r * 1.1  # head top
    return out, head_c, r


def render_clip(rng: np.random.Generator, cfg: ClipConfig, appearance_seed) -> list[tuple[np.ndarray, list[dict]]]:
    """One clip: ``cfg.frames`` images ``[H, W, 3]`` uint8 RGB, each with its people (``track_id``, ``keypoints``
    [51], ``bbox``, ``bbox_head``, ``num_keypoints``, ``iscrowd`` 0)."""
    width = int(rng.integers(cfg.width_range[0], cfg.width_range[1] + 1))
    height = int(rng.integers(cfg.height_range[0], cfg.height_range[1] + 1))
    background = render_background(rng, width, height)
    n = int(rng.integers(cfg.people[0], cfg.people[1] + 1))
    people = []
    for i in range(n):
        h = rng.uniform(*cfg.person_height) * height
        back = bool(rng.random() < cfg.back_facing_prob)
        start = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.45, 0.6) * height])
        speed = rng.uniform(*cfg.speed) * (1 if rng.random() < 0.5 else -1)
        vel = np.array([speed, rng.normal(0, 0.5)])
        pts = _place(walking_pose(rng), rng, h, np.zeros(2), back)
        phase = rng.uniform(0, 2 * math.pi, size=len(_SWING))
        people.append({"h": h, "back": back, "start": start, "vel": vel, "pts": pts, "phase": phase})
    clip = []
    for t in range(cfg.frames):
        canvas = _Canvas(background.copy())
        placed = []
        for i, p in enumerate(people):
            pts = p["pts"] + p["start"] + p["vel"] * t
            for k, name in enumerate(_SWING):
                pts[_JOINT[name], 0] += cfg.swing * p["h"] * math.sin(0.9 * t + p["phase"][k])
            owner = 100 + i
            m = draw_figure(canvas, pts, p["h"], p["back"], owner=owner,
                            rng=np.random.default_rng([*appearance_seed, i]))
            placed.append((owner, pts, m))
        anns = []
        for i, (owner, pts, m) in enumerate(placed):
            joints, head_c, r = _posetrack_joints(pts, people[i]["h"])
            kps = np.zeros((17, 3))
            for k, (x, y) in enumerate(joints):
                if k in (3, 4) or (people[i]["back"] and k == 0):
                    continue  # ears unlabelled (PoseTrack 2018); nose hidden from behind
                if 0 <= x < width - 0.5 and 0 <= y < height - 0.5:
                    kps[k] = (round(float(x), 2), round(float(y), 2), 1)
            box = _bbox(m)
            n_kp = int((kps[:, 2] > 0).sum())
            if box is None or n_kp < 2:
                continue
            side = 2.2 * r
            anns.append({"track_id": i, "keypoints": kps.reshape(-1).tolist(), "num_keypoints": n_kp, "bbox": box,
                         "bbox_head": [round(float(head_c[0] - side / 2), 2), round(float(head_c[1] - side / 2), 2),
                                       round(side, 2), round(side, 2)],
                         "iscrowd": 0, "area": float(m.sum())})
        clip.append((canvas.image, anns))
    return clip


def generate_clips(out_dir: str | Path, num_train: int = 120, num_val: int = 6, seed: int = 0,
                   cfg: ClipConfig = ClipConfig(), progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``num_train`` / ``num_val`` clips of the train / val split (module docstring) under ``out_dir``.

    Returns a summary ``{"out_dir", "seed", "splits": {split: {"sequences", "frames", "labeled_frames", "people",
    "detections"}}}``. Raises OSError when an image cannot be written.
    """
    from .keypoints import POSETRACK_KEYPOINTS

    out = Path(out_dir)
    summary: dict[str, Any] = {"out_dir": str(out.resolve()), "seed": seed, "splits": {}}
    category = {"supercategory": "person", "id": 1, "name": "person",
                "keypoints": list(POSETRACK_KEYPOINTS.joint_names)}
    for split, n, sub in (("train", num_train, 0), ("val", num_val, 1)):
        if n <= 0:
            continue
        ann_dir = out / "annotations" / split
        ann_dir.mkdir(parents=True, exist_ok=True)
        dets, frames_total, labeled, people = [], 0, 0, 0
        for c in range(n):
            vid = f"{(sub + 1) * 100000 + c:06d}"
            name = f"{vid}_synthetic_{split}"
            rng = np.random.default_rng([seed, sub, c])
            frames = cfg.train_frames if split == "train" else cfg.frames
            clip = render_clip(rng, replace(cfg, frames=frames), appearance_seed=(seed, sub, c, 7))
            images, anns = [], []
            for t, (img, people_t) in enumerate(clip):
                image_id = int(f"1{vid}{t:04d}")
                file_name = f"images/{split}/{name}/{t:06d}.jpg"
                path = out / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
                    raise OSError(f"cannot write {path}")
                is_labeled = not (split == "val" and t == len(clip) - 1)
                info = {"id": image_id, "file_name": file_name, "vid_id": vid, "frame_id": image_id,
                        "nframes": len(clip), "is_labeled": is_labeled, "width": int(img.shape[1]),
                        "height": int(img.shape[0]), "ignore_regions_x": [], "ignore_regions_y": []}
                images.append(info)
                for k, a in enumerate(people_t):
                    anns.append({"id": image_id * 100 + k, "image_id": image_id, "category_id": 1,
                                 **{key: v for key, v in a.items() if key != "area"}})
                d = simulate_detections(rng, info, people_t)
                dets.extend(sorted(d, key=lambda r: -r["score"]))  # a detector lists its boxes by score
                frames_total += 1
                labeled += int(is_labeled)
                people += len(people_t)
            (ann_dir / f"{name}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                               "categories": [category]}))
            if progress is not None:
                progress(1)
        det_path = out / DETECTIONS_FILE.format(split=split)
        det_path.parent.mkdir(parents=True, exist_ok=True)
        det_path.write_text(json.dumps(dets))
        summary["splits"][split] = {"sequences": n, "frames": frames_total, "labeled_frames": labeled,
                                    "people": people, "detections": len(dets)}
    return summary
