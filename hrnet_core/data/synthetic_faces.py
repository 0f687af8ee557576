"""Generated faces in the 300W layout (68 points): the offline default data of the ``face_alignment`` task.

A parametric cartoon face (skin-coloured head, jaw contour, eyebrows, eyes with pupils, nose, lips) is drawn on the
random backgrounds of :func:`hrnet_core.data.synthetic.render_background`. Its 68 landmarks follow the iBUG / 300W
markup (:data:`hrnet_core.data.faces.FACE_LAYOUTS` ``["300w"]``: jaw 0-16, eyebrows 17-26, nose 27-35, eyes 36-47,
lips 48-67), so the 300W flip pairs and normaliser (outer eye corners 36, 45) apply unchanged. Shape parameters
(eye size and spacing, brow height, mouth width and opening, jaw width), a yaw-like shift of the inner features,
in-plane rotation (+-25 degrees), size (face width 36-80 px) and colours vary per face.

Files (the official HRNet 300W layout, ``hrnet data prepare 300w`` reads them as they are):
``face_landmarks_300w_train.csv``, ``face_landmarks_300w_valid.csv`` (+ the ``_valid_common`` / ``_valid_challenge``
subset lists: "challenging" = rotation over 15 degrees or strong yaw) and ``images/<split>/<id>.jpg``
(128x128 RGB). Same seed, same bytes.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .synthetic import render_background

__all__ = ["SyntheticFaceConfig", "canonical_face", "render_face", "generate_faces"]

NUM_POINTS = 68


@dataclass(frozen=True)
class SyntheticFaceConfig:
    """Image geometry of the generated faces.

    Attributes:
        image_size: ``(W, H)`` px of every image.
        face_width: range of the face width in px (jaw 0 to jaw 16).
        max_rotation: in-plane rotation range in degrees.
        jpeg_quality: JPEG quality of the written images.
    """

    image_size: tuple[int, int] = (128, 128)
    face_width: tuple[float, float] = (36.0, 80.0)
    max_rotation: float = 25.0
    jpeg_quality: int = 92


def canonical_face(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """68 landmarks of a random face in a unit frame (face width ~1, y down, centre between the eyes ~ origin).

    Returns:
        ``(points float64 [68, 2], yaw)`` where ``yaw`` in ``[-1, 1]`` is the horizontal shift of the inner
        features (0 = frontal).
    """
    p = np.zeros((NUM_POINTS, 2))
    jaw_w = rng.uniform(0.46, 0.52)
    jaw_h = rng.uniform(0.55, 0.7)
    t = np.pi + 0.2 - (np.pi + 0.4) * np.arange(17) / 16  # left temple -> chin -> right temple
    p[0:17] = np.stack([jaw_w * np.cos(t), 0.05 + jaw_h * np.sin(t)], axis=1)
    brow_y = rng.uniform(-0.32, -0.24)
    arch = rng.uniform(0.02, 0.07)
    for side, idx in ((-1, range(17, 22)), (1, range(26, 21, -1))):  # outer -> inner on both sides
        for j, k in enumerate(idx):
            x = 0.40 - 0.075 * j
            p[k] = [side * x, brow_y - arch * math.sin(math.pi * (j + 0.5) / 5)]
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.14, 0.12, 4)], axis=1)
    nose_w = rng.uniform(0.08, 0.12)
    p[31:36] = np.stack([np.linspace(-nose_w, nose_w, 5), [0.19, 0.21, 0.22, 0.21, 0.19]], axis=1)
    eye_c = rng.uniform(0.19, 0.24)
    eye_w = rng.uniform(0.08, 0.11)
    eye_h = rng.uniform(0.025, 0.045)
    eye_y = rng.uniform(-0.12, -0.08)
    # left eye 36 outer, 37-38 upper, 39 inner, 40-41 lower; right eye mirrored (42 inner, 45 outer)
    unit = np.array([[-1.0, 0.0], [-0.4, -1.0], [0.4, -1.0], [1.0, 0.0], [0.4, 1.0], [-0.4, 1.0]])
    for cx, idx, mirror in ((-eye_c, range(36, 42), False), (eye_c, range(42, 48), True)):
        pts = unit.copy()
        if mirror:  # 42 inner(-1) 43 upper(-0.4) 44 upper(0.4) 45 outer(1) 46 lower(0.4) 47 lower(-0.4)
            pts = np.array([[-1.0, 0.0], [-0.4, -1.0], [0.4, -1.0], [1.0, 0.0], [0.4, 1.0], [-0.4, 1.0]])
        p[list(idx)] = np.stack([cx + eye_w * pts[:, 0], eye_y + eye_h * pts[:, 1]], axis=1)
    mw = rng.uniform(0.15, 0.23)
    my = rng.uniform(0.36, 0.42)
    opening = rng.uniform(0.0, 0.06) if rng.random() < 0.5 else 0.0
    up, lo = 0.035, 0.045
    xo = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6])
    yo = np.array([0.0, -up, -up * 1.2, -up, -up * 1.2, -up, 0.0, lo + opening, lo + opening, lo + opening,
                   lo + opening, lo + opening])
    p[48:60] = np.stack([mw * xo, my + yo], axis=1)
    xi = np.array([-0.8, -0.3, 0.0, 0.3, 0.8, 0.3, 0.0, -0.3])
    yi = np.array([0.0, -0.01, -0.01, -0.01, 0.0, 0.01 + opening, 0.01 + opening, 0.01 + opening])
    p[60:68] = np.stack([mw * xi, my + yi], axis=1)
    yaw = float(rng.uniform(-1.0, 1.0)) * (0.6 if rng.random() < 0.7 else 1.0)
    inner = np.arange(17, 68)
    p[inner, 0] += 0.08 * yaw * np.cos(p[inner, 0] * 2.0)  # features drift toward one side, centre most
    return p, yaw


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def render_face(rng: np.random.Generator, cfg: SyntheticFaceConfig = SyntheticFaceConfig()
                ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One image with one face.

    Returns:
        ``image`` uint8 RGB ``[H, W, 3]``, ``landmarks`` float64 ``[68, 2]`` px, ``info`` (``rotation`` degrees,
        ``yaw``, ``width`` px).
    """
    W, H = cfg.image_size
    img = render_background(rng, W, H)
    unit, yaw = canonical_face(rng)
    width = rng.uniform(*cfg.face_width)
    rot = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    r = math.radians(rot)
    R = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    margin = 0.45 * width
    centre = np.array([rng.uniform(margin, W - margin), rng.uniform(margin, H - margin)])
    pts = unit * width @ R.T + centre

    def to_px(q: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(q) * width @ R.T + centre) * 16).astype(np.int32)  # 4 fractional bits

    skin = np.array(_colour(rng, 60, 245), np.float64)
    dark = tuple(int(v) for v in np.clip(skin * rng.uniform(0.15, 0.45), 0, 255))
    # head: jaw contour closed by the forehead arc
    top = np.stack([0.5 * np.cos(np.linspace(0.2, np.pi - 0.2, 12)) * 1.0,
                    -0.05 - 0.55 * np.sin(np.linspace(0.2, np.pi - 0.2, 12))], axis=1)
    head = np.concatenate([unit[0:17], top])
    if rng.random() < 0.6:  # hair
        hair = np.concatenate([top * np.array([1.08, 1.12]), top[::-1] * np.array([0.9, 0.75])])
        cv2.fillPoly(img, [to_px(hair)], _colour(rng, 10, 120), cv2.LINE_AA, shift=4)
    cv2.fillPoly(img, [to_px(head)], tuple(int(v) for v in skin), cv2.LINE_AA, shift=4)
    cv2.polylines(img, [to_px(unit[0:17])], False, dark, max(1, int(width / 40)), cv2.LINE_AA, shift=4)
    t = max(1, int(round(width / 30)))
    cv2.polylines(img, [to_px(unit[17:22]), to_px(unit[22:27])], False, dark, t, cv2.LINE_AA, shift=4)
    white = _colour(rng, 200, 256)
    iris = _colour(rng, 0, 110)
    for eye in (unit[36:42], unit[42:48]):
        cv2.fillPoly(img, [to_px(eye)], white, cv2.LINE_AA, shift=4)
        c = eye.mean(axis=0)
        rad = int(round(16 * 0.8 * (eye[:, 1].max() - eye[:, 1].min()) / 2 * width))
        cv2.circle(img, tuple(int(v) for v in to_px(c)), max(rad, 16), iris, -1, cv2.LINE_AA, shift=4)
        cv2.polylines(img, [to_px(eye)], True, dark, 1, cv2.LINE_AA, shift=4)
    cv2.polylines(img, [to_px(unit[27:31]), to_px(unit[31:36])], False, dark, max(1, t - 1), cv2.LINE_AA, shift=4)
    lips = _colour(rng, 90, 230)
    lips = (lips[0], lips[1] // 3, lips[2] // 3)
    cv2.fillPoly(img, [to_px(unit[48:60])], lips, cv2.LINE_AA, shift=4)
    cv2.fillPoly(img, [to_px(unit[60:68])], (30, 10, 10), cv2.LINE_AA, shift=4)
    noise = rng.normal(0, rng.uniform(1, 6), size=img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, pts, {"rotation": float(rot), "yaw": float(yaw), "width": float(width)}


def _row(name: str, pts: np.ndarray) -> list[str]:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = (lo + hi) / 2
    scale = float((hi - lo).max()) / 200.0
    return [name, f"{scale:.4f}", f"{center[0]:.3f}", f"{center[1]:.3f}"] + [f"{v:.3f}" for v in pts.reshape(-1)]


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    header = ["image_name", "scale", "center_w", "center_h"] + [f"original_{i}_{a}" for i in range(NUM_POINTS)
                                                                  for a in "xy"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def generate_faces(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0,
                   cfg: SyntheticFaceConfig = SyntheticFaceConfig(),
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the train and valid splits (module docstring) under ``out_dir``.

    Returns:
        ``{"out_dir", "seed", "splits": {split: {"images", "challenging"}}}``.

    Raises:
        OSError: an image cannot be written.
    """
    out = Path(out_dir)
    summary: dict[str, Any] = {"out_dir": str(out.resolve()), "seed": seed, "splits": {}}
    for split, n, sub in (("train", num_train, 0), ("valid", num_val, 1)):
        if n <= 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        rows, common, challenging = [], [], []
        for i in range(n):
            rng = np.random.default_rng([seed, sub, i])
            img, pts, info = render_face(rng, cfg)
            name = f"{split}/{i:06d}.jpg"
            if not cv2.imwrite(str(out / "images" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
                raise OSError(f"cannot write {out / 'images' / name}")
            row = _row(name, pts)
            rows.append(row)
            (challenging if abs(info["rotation"]) > 15 or abs(info["yaw"]) > 0.6 else common).append(row)
            if progress is not None:
                progress(1)
        stem = f"face_landmarks_300w_{split}"
        _write_csv(out / f"{stem}.csv", rows)
        if split == "valid":
            _write_csv(out / f"{stem}_common.csv", common)
            _write_csv(out / f"{stem}_challenge.csv", challenging)
        summary["splits"][split] = {"images": n, "challenging": len(challenging)}
    return summary
