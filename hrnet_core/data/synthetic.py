"""Synthetic COCO-format person-keypoint dataset: articulated figures with the 17 COCO keypoints.

The default data of the pipeline (``hrnet data generate``), so that ``dvc repro`` and the end-to-end tests run
offline. The output has the official COCO layout and reads with the same code as real COCO::

    <out>/annotations/person_keypoints_{train,val}2017.json
    <out>/{train,val}2017/<image_id:012d>.jpg
    <out>/person_detection_results/synthetic_val2017_detections_person.json   (simulated detector boxes)

What the generator draws (plain NumPy + OpenCV, deterministic for a seed):

- backgrounds: colour gradients, low-frequency noise textures and clutter (rectangles, discs, sticks);
- 1-3 figures per image: a skeleton with random limb angles, body proportions, lean, horizontal foreshortening,
  scale and position; drawn with limbs of human thickness (arms ~7%, legs ~9% of the height, so that the
  silhouette area -- the OKS scale -- is person-like), hands, shoes and a head. Front-facing figures show eyes and nose and
  have their left side on the image right (as a person facing the camera); back-facing figures show hair only,
  are mirrored, and leave nose and eyes unlabeled (v=0). Left/right is thus decided by the figure's facing, as in
  real photos, so horizontal flip augmentation stays consistent;
- visibility flags (COCO convention): v=2 visible, v=1 labeled but occluded by another figure or an occluder,
  v=0 outside the image / not labeled (then x = y = 0);
- crowd regions: clusters of small overlapping figures annotated once with ``iscrowd=1`` and an uncompressed RLE
  mask (ignored by training and by COCO evaluation, as in real COCO);
- far-away people too small to label: boxes with ``num_keypoints=0`` (also ignored by evaluation);
- per person: ``bbox`` (x, y, w, h) of the drawn silhouette, ``area`` (silhouette pixels), polygon ``segmentation``.

Units: pixels of the generated image; keypoint coordinates are the joint centres (floats, 2 decimals).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]
# 1-based joint pairs, as in the COCO person category
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10], [9, 11],
    [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
PERSON_CATEGORY = {
    "supercategory": "person", "id": 1, "name": "person", "keypoints": COCO_KEYPOINT_NAMES, "skeleton": COCO_SKELETON,
}
DETECTIONS_FILE = "person_detection_results/synthetic_{split}_detections_person.json"


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults give ~1.6 labeled people per image).

    Sizes in pixels: images are ``W x H`` with W, H uniform in the given ranges; figure heights are a fraction
    of the image height in ``person_height``.
    """

    width_range: tuple[int, int] = (176, 256)
    height_range: tuple[int, int] = (176, 256)
    max_people: int = 3
    person_height: tuple[float, float] = (0.45, 0.9)
    back_facing_prob: float = 0.2
    occluder_prob: float = 0.35
    crowd_prob: float = 0.15
    tiny_person_prob: float = 0.15
    jpeg_quality: int = 92


# canonical skeleton in body units (height 1, y down, origin between the hips); x > 0 is the image right
_JOINT = {name: i for i, name in enumerate(COCO_KEYPOINT_NAMES)}


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def sample_pose(rng: np.random.Generator) -> np.ndarray:
    """Random articulated pose: ``[17, 2]`` joint positions in body units (height ~1, y down, hips at y=0).

    Front-facing convention: the figure's left joints have x > 0 before any mirroring.
    """
    p = np.zeros((17, 2))
    shoulder_w = rng.uniform(0.09, 0.13)
    hip_w = rng.uniform(0.06, 0.09)
    torso = rng.uniform(0.27, 0.33)
    upper_arm, forearm = rng.uniform(0.15, 0.19), rng.uniform(0.13, 0.17)
    thigh, shin = rng.uniform(0.21, 0.26), rng.uniform(0.2, 0.25)
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        p[_JOINT[f"{side}_hip"]] = (sgn * hip_w, 0.0)
        p[_JOINT[f"{side}_shoulder"]] = (sgn * shoulder_w, -torso)
        # arm: angle from "hanging down", positive = away from the body
        a1 = rng.uniform(-30, 170) if rng.random() < 0.7 else rng.uniform(-60, 60)
        a2 = a1 + rng.uniform(-20, 140) * (1 if rng.random() < 0.8 else -1)
        d1 = _rot(np.array([0.0, upper_arm]), -sgn * a1)
        d2 = _rot(np.array([0.0, forearm]), -sgn * a2)
        p[_JOINT[f"{side}_elbow"]] = p[_JOINT[f"{side}_shoulder"]] + d1
        p[_JOINT[f"{side}_wrist"]] = p[_JOINT[f"{side}_elbow"]] + d2
        # leg: hip angle mostly small, knee bends backwards/outwards
        l1 = rng.uniform(-15, 45) if rng.random() < 0.85 else rng.uniform(-30, 90)
        l2 = l1 - rng.uniform(0, 70) if rng.random() < 0.5 else l1 + rng.uniform(0, 30)
        d3 = _rot(np.array([0.0, thigh]), -sgn * l1)
        d4 = _rot(np.array([0.0, shin]), -sgn * l2)
        p[_JOINT[f"{side}_knee"]] = p[_JOINT[f"{side}_hip"]] + d3
        p[_JOINT[f"{side}_ankle"]] = p[_JOINT[f"{side}_knee"]] + d4
    neck = np.array([0.0, -torso - 0.02])
    head_tilt = rng.uniform(-20, 20)
    head_c = neck + _rot(np.array([0.0, -0.085]), head_tilt)
    p[_JOINT["nose"]] = head_c + _rot(np.array([0.0, 0.012]), head_tilt)
    p[_JOINT["left_eye"]] = head_c + _rot(np.array([0.022, -0.012]), head_tilt)
    p[_JOINT["right_eye"]] = head_c + _rot(np.array([-0.022, -0.012]), head_tilt)
    p[_JOINT["left_ear"]] = head_c + _rot(np.array([0.05, -0.002]), head_tilt)
    p[_JOINT["right_ear"]] = head_c + _rot(np.array([-0.05, -0.002]), head_tilt)
    # head-to-ankle height is ~1: normalise
    top = head_c[1] - 0.06
    bottom = max(p[_JOINT["left_ankle"], 1], p[_JOINT["right_ankle"], 1])
    return p / max(bottom - top, 0.5)


def _random_color(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def _shade(color: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * f, 0, 255)) for c in color)


def render_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Random background ``[H, W, 3]`` uint8 RGB: gradient or noise texture plus clutter shapes."""
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:
        c0, c1 = np.array(_random_color(rng), np.float32), np.array(_random_color(rng), np.float32)
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    else:
        cells = int(rng.integers(3, 10))
        low = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
        img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        if kind == 2:  # muted texture around one colour
            base = np.array(_random_color(rng), np.float32)
            img = base + (img - 128.0) * 0.35
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):  # clutter
        color = _random_color(rng, 0, 256)
        shape = rng.integers(0, 3)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(6, max(8, width // 4)))
        if shape == 0:
            cv2.rectangle(img, (x, y), (x + s, y + int(rng.integers(6, s + 7))), color, -1)
        elif shape == 1:
            cv2.circle(img, (x, y), s // 2, color, -1, lineType=cv2.LINE_AA)
        else:
            a = rng.uniform(0, 2 * math.pi)
            cv2.line(img, (x, y), (int(x + s * math.cos(a)), int(y + s * math.sin(a))), color,
                     int(rng.integers(2, 7)), lineType=cv2.LINE_AA)
    noise = rng.normal(0, rng.uniform(2, 8), size=img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


class _Canvas:
    """Image plus an owner map (which figure/occluder is on top at each pixel)."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.owner = np.full(image.shape[:2], -1, np.int32)

    def line(self, a, b, color, thickness: int, owner: int, mask: np.ndarray | None = None) -> None:
        pa, pb = _ipt(a), _ipt(b)
        thickness = max(1, thickness)
        cv2.line(self.image, pa, pb, color, thickness, lineType=cv2.LINE_AA)
        cv2.line(self.owner, pa, pb, owner, thickness)
        r = max(1, thickness // 2)
        for p in (pa, pb):  # round caps
            cv2.circle(self.image, p, r, color, -1, lineType=cv2.LINE_AA)
            cv2.circle(self.owner, p, r, owner, -1)
        if mask is not None:
            cv2.line(mask, pa, pb, 1, thickness)
            for p in (pa, pb):
                cv2.circle(mask, p, r, 1, -1)

    def circle(self, c, r: float, color, owner: int, mask: np.ndarray | None = None) -> None:
        pc, ri = _ipt(c), max(1, int(round(r)))
        cv2.circle(self.image, pc, ri, color, -1, lineType=cv2.LINE_AA)
        cv2.circle(self.owner, pc, ri, owner, -1)
        if mask is not None:
            cv2.circle(mask, pc, ri, 1, -1)

    def poly(self, pts: np.ndarray, color, owner: int, mask: np.ndarray | None = None) -> None:
        ip = np.round(pts * 16).astype(np.int32)[None]
        cv2.fillPoly(self.image, ip, color, lineType=cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.owner, ip, owner, shift=4)
        if mask is not None:
            cv2.fillPoly(mask, ip, 1, shift=4)


def _ipt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_figure(canvas: _Canvas, joints: np.ndarray, height_px: float, back_facing: bool, owner: int,
                rng: np.random.Generator, simple: bool = False) -> np.ndarray:
    """Draw one figure whose joints are ``[17, 2]`` image pixels; returns its silhouette mask ``[H, W]`` uint8."""
    mask = np.zeros(canvas.owner.shape, np.uint8)
    skin = _random_color(rng, 60, 240)
    shirt, pants = _random_color(rng), _random_color(rng)
    shoe, hair = _random_color(rng, 0, 90), _random_color(rng, 0, 120)
    h = height_px
    j = {name: joints[i] for i, name in enumerate(COCO_KEYPOINT_NAMES)}
    # far side first: for a front-facing figure its right side (image left) is nearer? keep it simple: random order
    sides = ["left", "right"] if rng.random() < 0.5 else ["right", "left"]
    for side in sides[:1]:
        _draw_side(canvas, j, side, h, skin, shirt, pants, shoe, owner, mask, far=True)
    # torso
    torso = np.array([j["left_shoulder"], j["right_shoulder"], j["right_hip"], j["left_hip"]])
    center = torso.mean(0)
    torso = center + (torso - center) * np.array([1.3, 1.05])
    canvas.poly(torso, shirt, owner, mask)
    canvas.line((j["left_hip"] + j["right_hip"]) / 2 - 0.01, (j["left_hip"] + j["right_hip"]) / 2, pants,
                int(0.12 * h), owner, mask)
    for side in sides[1:]:
        _draw_side(canvas, j, side, h, skin, shirt, pants, shoe, owner, mask, far=False)
    # head
    eye_mid = (j["left_eye"] + j["right_eye"]) / 2
    head_c = eye_mid + (eye_mid - j["nose"]) * 0.1 + (eye_mid - (j["left_shoulder"] + j["right_shoulder"]) / 2) * 0.05
    r = 0.062 * h
    neck = (j["left_shoulder"] + j["right_shoulder"]) / 2
    canvas.line(neck, head_c, skin, int(0.055 * h), owner, mask)
    canvas.circle(j["left_ear"], 0.018 * h, _shade(skin, 0.8), owner, mask)
    canvas.circle(j["right_ear"], 0.018 * h, _shade(skin, 0.8), owner, mask)
    canvas.circle(head_c, r, skin, owner, mask)
    if back_facing:
        canvas.circle(head_c, r * 0.95, hair, owner, mask)
    else:
        top = head_c + (head_c - j["nose"]) / max(np.linalg.norm(head_c - j["nose"]), 1e-6) * r * 0.55
        canvas.circle(top, r * 0.6, hair, owner, mask)
        if not simple:
            for e in ("left_eye", "right_eye"):
                canvas.circle(j[e], max(1.0, 0.011 * h), (20, 20, 20), owner)
            canvas.circle(j["nose"], max(1.0, 0.009 * h), _shade(skin, 0.6), owner)
    return mask


def _draw_side(canvas, j, side, h, skin, shirt, pants, shoe, owner, mask, far: bool) -> None:
    f = 0.8 if far else 1.0
    # leg
    canvas.line(j[f"{side}_hip"], j[f"{side}_knee"], _shade(pants, f), int(0.1 * h), owner, mask)
    canvas.line(j[f"{side}_knee"], j[f"{side}_ankle"], _shade(pants, f * 0.92), int(0.08 * h), owner, mask)
    canvas.circle(j[f"{side}_knee"], 0.035 * h, _shade(pants, f * 0.75), owner, mask)
    foot_dir = np.array([1.0 if side == "left" else -1.0, 0.25])
    canvas.line(j[f"{side}_ankle"], j[f"{side}_ankle"] + foot_dir * 0.06 * h, shoe, int(0.045 * h), owner, mask)
    # arm
    canvas.line(j[f"{side}_shoulder"], j[f"{side}_elbow"], _shade(shirt, f), int(0.075 * h), owner, mask)
    canvas.line(j[f"{side}_elbow"], j[f"{side}_wrist"], _shade(skin, f), int(0.062 * h), owner, mask)
    canvas.circle(j[f"{side}_elbow"], 0.032 * h, _shade(shirt, f * 0.75), owner, mask)
    canvas.circle(j[f"{side}_wrist"], 0.03 * h, _shade(skin, f * 0.85), owner, mask)


def _place(pose: np.ndarray, rng: np.random.Generator, height_px: float, center: np.ndarray,
           back_facing: bool) -> np.ndarray:
    """Body units -> image pixels: foreshortening, mirroring (back view), lean, scale and translation."""
    p = pose.copy()
    p[:, 0] *= rng.uniform(0.55, 1.0)
    if back_facing:
        p[:, 0] *= -1.0
    lean = rng.normal(0, 12) if rng.random() < 0.9 else rng.uniform(-80, 80)
    a = math.radians(lean)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    p = p @ rot.T
    mid = (p.max(0) + p.min(0)) / 2
    return (p - mid) * height_px + center


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([round(float(v), 2) for v in c.reshape(-1)])
    return polys


def _rle_uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _bbox(mask: np.ndarray) -> list[float] | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def render_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image ``[H, W, 3]`` uint8 RGB and its person annotations (COCO fields, no ids).

    Each annotation has ``keypoints`` (51 floats), ``num_keypoints``, ``bbox``, ``area``, ``iscrowd`` and
    ``segmentation`` (polygons, or uncompressed RLE for crowd regions).
    """
    width = int(rng.integers(cfg.width_range[0], cfg.width_range[1] + 1))
    height = int(rng.integers(cfg.height_range[0], cfg.height_range[1] + 1))
    canvas = _Canvas(render_background(rng, width, height))
    anns: list[dict[str, Any]] = []

    # crowd region behind everything else
    if rng.random() < cfg.crowd_prob:
        crowd_mask = np.zeros((height, width), np.uint8)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.6) * height
        for _ in range(int(rng.integers(5, 10))):
            hpx = rng.uniform(0.12, 0.2) * height
            c = np.array([cx + rng.normal(0, 0.08 * width), cy + rng.normal(0, 0.03 * height)])
            pts = _place(sample_pose(rng), rng, hpx, c, back_facing=rng.random() < 0.5)
            crowd_mask |= draw_figure(canvas, pts, hpx, False, owner=-2, rng=rng, simple=True)
        box = _bbox(crowd_mask)
        if box is not None:
            anns.append({"iscrowd": 1, "keypoints": [0.0] * 51, "num_keypoints": 0, "bbox": box,
                         "area": float(crowd_mask.sum()), "segmentation": _rle_uncompressed(crowd_mask)})

    # tiny far-away people: boxes only, no keypoints
    if rng.random() < cfg.tiny_person_prob:
        hpx = rng.uniform(0.08, 0.12) * height
        c = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.5) * height])
        pts = _place(sample_pose(rng), rng, hpx, c, back_facing=False)
        m = draw_figure(canvas, pts, hpx, False, owner=-3, rng=rng, simple=True)
        box = _bbox(m)
        if box is not None:
            anns.append({"iscrowd": 0, "keypoints": [0.0] * 51, "num_keypoints": 0, "bbox": box,
                         "area": float(m.sum()), "segmentation": _polygons(m)})

    # labeled people
    figures = []
    n_people = int(rng.integers(1, cfg.max_people + 1))
    slots = np.sort(rng.uniform(0.15, 0.85, size=n_people)) if n_people > 1 else np.array([rng.uniform(0.3, 0.7)])
    for i in range(n_people):
        hpx = rng.uniform(*cfg.person_height) * height
        c = np.array([slots[i] * width + rng.normal(0, 0.05 * width), rng.uniform(0.4, 0.65) * height])
        back = rng.random() < cfg.back_facing_prob
        pts = _place(sample_pose(rng), rng, hpx, c, back)
        owner = 100 + i
        m = draw_figure(canvas, pts, hpx, back, owner=owner, rng=rng)
        figures.append((owner, pts, back, m))

    # occluders on top
    if rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            color = _random_color(rng)
            x, y = int(rng.integers(0, width)), int(rng.integers(height // 3, height))
            w, h = int(rng.integers(width // 8, width // 3)), int(rng.integers(height // 8, height // 3))
            cv2.rectangle(canvas.image, (x, y), (x + w, y + h), color, -1)
            cv2.rectangle(canvas.owner, (x, y), (x + w, y + h), -4, -1)

    for owner, pts, back, m in figures:
        visible_mask = (canvas.owner == owner).astype(np.uint8)
        m = m & (canvas.owner != -4).astype(np.uint8) | visible_mask
        kps = np.zeros((17, 3))
        for k, (x, y) in enumerate(pts):
            inside = 0 <= x < width - 0.5 and 0 <= y < height - 0.5
            if not inside or (back and k in (0, 1, 2)):
                continue
            xi, yi = min(int(round(x)), width - 1), min(int(round(y)), height - 1)
            v = 2 if canvas.owner[yi, xi] == owner else 1
            kps[k] = (round(float(x), 2), round(float(y), 2), v)
        n_kp = int((kps[:, 2] > 0).sum())
        box = _bbox(m)
        if box is None or n_kp == 0:
            continue
        anns.append({"iscrowd": 0, "keypoints": kps.reshape(-1).tolist(), "num_keypoints": n_kp, "bbox": box,
                     "area": float(m.sum()), "segmentation": _polygons(m)})
    return canvas.image, anns


def simulate_detections(rng: np.random.Generator, image: dict[str, Any], anns: list[dict[str, Any]]) -> list[dict]:
    """Detector-like person boxes for one image: jittered true boxes, duplicates, misses and false positives.

    Returns COCO detection results ``{"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}``.
    """
    W, H = image["width"], image["height"]
    dets = []
    for a in anns:
        if a["iscrowd"] or rng.random() < 0.04:
            continue
        x, y, w, h = a["bbox"]
        for dup in range(2 if rng.random() < 0.3 else 1):
            s = rng.normal(1.0, 0.06, size=2)
            cx, cy = x + w / 2 + rng.normal(0, 0.04) * w, y + h / 2 + rng.normal(0, 0.04) * h
            nw, nh = w * s[0], h * s[1]
            x0, y0 = max(0.0, cx - nw / 2), max(0.0, cy - nh / 2)
            x1, y1 = min(float(W), cx + nw / 2), min(float(H), cy + nh / 2)
            score = rng.uniform(0.7, 1.0) if dup == 0 else rng.uniform(0.1, 0.5)
            if a["num_keypoints"] == 0:
                score *= 0.5
            dets.append({"image_id": image["id"], "category_id": 1, "bbox": [round(x0, 2), round(y0, 2),
                         round(x1 - x0, 2), round(y1 - y0, 2)], "score": round(float(score), 4)})
    if rng.random() < 0.3:  # a false positive
        w, h = rng.uniform(0.1, 0.3) * W, rng.uniform(0.2, 0.5) * H
        x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
        dets.append({"image_id": image["id"], "category_id": 1, "bbox": [round(x, 2), round(y, 2), round(w, 2),
                     round(h, 2)], "score": round(float(rng.uniform(0.05, 0.4)), 4)})
    return dets


def generate_split(out_dir: str | Path, split: str, num_images: int, seed: int,
                   cfg: SyntheticConfig = SyntheticConfig(), first_image_id: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``<out_dir>/<split>/*.jpg`` and return the COCO keypoint dict (also written by the caller).

    Deterministic: the same ``seed`` gives byte-identical images and annotations.
    """
    out_dir = Path(out_dir)
    img_dir = out_dir / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, detections = [], [], []
    ann_id = 1
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        image_id = first_image_id + i
        img, anns = render_image(rng, cfg)
        file_name = f"{image_id:012d}.jpg"
        ok = cv2.imwrite(str(img_dir / file_name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise OSError(f"cannot write {img_dir / file_name}")
        info = {"id": image_id, "file_name": file_name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                "license": 1}
        images.append(info)
        for a in anns:
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, **a})
            ann_id += 1
        detections.extend(simulate_detections(rng, info, anns))
        if progress is not None:
            progress(1)
    coco = {
        "info": {"description": f"Synthetic COCO-format person keypoints ({split}), hrnet data generate",
                 "version": "1.0", "year": 2024, "seed": seed},
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [PERSON_CATEGORY],
    }
    coco["_detections"] = detections  # popped by generate_dataset
    return coco


def generate_dataset(out_dir: str | Path, num_train: int = 800, num_val: int = 100, seed: int = 0,
                     cfg: SyntheticConfig = SyntheticConfig(),
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate train2017 + val2017 in the official COCO layout under ``out_dir`` (see module docstring).

    Returns a summary ``{"splits": {split: {"images", "people", "labeled_people", "crowd"}}, "out_dir"}``.
    """
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"out_dir": str(out_dir.resolve()), "seed": seed, "splits": {}}
    for split, n, id0, sub_seed in (("train2017", num_train, 1, 0), ("val2017", num_val, 1_000_000, 1)):
        if n <= 0:
            continue
        coco = generate_split(out_dir, split, n, seed=seed * 1000 + sub_seed, cfg=cfg, first_image_id=id0,
                              progress=progress)
        dets = coco.pop("_detections")
        (out_dir / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(coco))
        det_path = out_dir / DETECTIONS_FILE.format(split=split)
        det_path.parent.mkdir(parents=True, exist_ok=True)
        det_path.write_text(json.dumps(dets))
        anns = coco["annotations"]
        summary["splits"][split] = {
            "images": len(coco["images"]),
            "people": sum(1 for a in anns if not a["iscrowd"]),
            "labeled_people": sum(1 for a in anns if a["num_keypoints"] > 0),
            "crowd": sum(1 for a in anns if a["iscrowd"]),
            "detections": len(dets),
        }
    return summary
