"""Generated street-like scenes: the offline default data of the ``segmentation`` task.

A scene (``width`` x ``height`` RGB, default 128x96) has a sky (vertical colour gradient with cloud blobs) above a
randomly tilted horizon, textured ground below it, and 2-6 objects of three shape classes drawn in random depth order
so that later objects occlude earlier ones:

* ``disc`` (ellipse) with a dotted texture,
* ``box`` (rotated rectangle) with a striped texture,
* ``triangle`` with a checker texture.

Colours are drawn per object, so the classes differ by shape and texture rather than by colour alone. Labels:
0 sky, 1 ground, 2 disc, 3 box, 4 triangle; a one-pixel band along every object outline is 255 (ignore), as the
void borders of Cityscapes / PASCAL annotations. Output is the generic ``seg_list`` layout
(:mod:`hrnet_core.data.segmentation`): ``images/<split>/<i>.png``, ``labels/<split>/<i>.png``, ``<split>.txt`` and
``classes.txt``. Same seed, same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

__all__ = ["SCENE_CLASSES", "render_scene", "generate_scenes"]

SCENE_CLASSES = ("sky", "ground", "disc", "box", "triangle")
_IGNORE = 255


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(30, 225, size=3).astype(np.float32)


def _texture(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``[H, W]`` float pattern in [0, 1]: 0 dots, 1 stripes, 2 checker (phase, period and angle random)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(5, 9))
    a = float(rng.uniform(0, math.pi))
    u = xx * math.cos(a) + yy * math.sin(a) + float(rng.uniform(0, period))
    v = -xx * math.sin(a) + yy * math.cos(a) + float(rng.uniform(0, period))
    if kind == 0:
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return (du * du + dv * dv < (period / 3.2) ** 2).astype(np.float32)
    if kind == 1:
        return ((u % period) < period / 2).astype(np.float32)
    return (((u // (period / 1.5)) + (v // (period / 1.5))) % 2).astype(np.float32)


def _shape_mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cx, cy = float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.3, 0.95) * h)
    size = float(rng.uniform(0.1, 0.25) * min(h, w) * 1.4)
    angle = float(rng.uniform(0, 180))
    if cls == 2:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(size), int(size * rng.uniform(0.6, 1.0))), angle, 0, 360, 1, -1)
    elif cls == 3:
        box = cv2.boxPoints(((cx, cy), (size * 2, size * float(rng.uniform(0.8, 1.6))), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    else:
        pts = [(cx + size * 1.3 * math.cos(math.radians(angle + k * 120)),
                cy + size * 1.3 * math.sin(math.radians(angle + k * 120))) for k in range(3)]
        cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 1)
    return mask.astype(bool)


def render_scene(rng: np.random.Generator, width: int = 128, height: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image uint8 [H, W, 3] RGB, label uint8 [H, W])`` (classes :data:`SCENE_CLASSES`, 255 ignore)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * float(rng.uniform(0.3, 0.55)) + (xx - width / 2) * float(rng.uniform(-0.25, 0.25))
    sky = yy < horizon
    top, bottom = np.array([rng.uniform(60, 140), rng.uniform(120, 190), rng.uniform(190, 255)], np.float32), \
        np.array([rng.uniform(160, 230), rng.uniform(190, 235), rng.uniform(215, 255)], np.float32)
    t = (yy / max(height - 1, 1))[..., None]
    img = top * (1 - t) + bottom * t
    clouds = cv2.GaussianBlur((rng.random((height // 8 + 1, width // 8 + 1)) > 0.7).astype(np.float32), (0, 0), 0.8)
    img += 40 * cv2.resize(clouds, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    ground_col = np.array([rng.uniform(60, 140), rng.uniform(50, 120), rng.uniform(30, 90)], np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.2)
    ground = ground_col + 35 * grain[..., None]
    img = np.where(sky[..., None], img, ground)
    label = np.where(sky, 0, 1).astype(np.uint8)
    border = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(2, 7))):
        cls = int(rng.integers(2, 5))
        mask = _shape_mask(cls, height, width, rng)
        if not mask.any():
            continue
        c0, c1 = _colour(rng), _colour(rng)
        pattern = _texture(cls - 2, height, width, rng)[..., None]
        img = np.where(mask[..., None], c0 * (1 - pattern) + c1 * pattern, img)
        label[mask] = cls
        border &= ~mask  # an occluder hides the outlines behind it
        m8 = mask.astype(np.uint8)
        border |= (cv2.dilate(m8, np.ones((3, 3), np.uint8)) - cv2.erode(m8, np.ones((3, 3), np.uint8))) > 0
    img = img + rng.normal(0, 4, img.shape).astype(np.float32)
    label[border] = _IGNORE
    return np.clip(img, 0, 255).astype(np.uint8), label


def generate_scenes(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0, width: int = 128,
                    height: int = 96, progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Write ``num_train`` / ``num_val`` scenes in the ``seg_list`` layout under ``out_dir`` (module docstring).

    Returns a summary ``{"out_dir", "train", "val", "classes"}``.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("val", num_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            img, label = render_scene(rng, width, height)
            cv2.imwrite(str(out / "images" / split / f"{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "labels" / split / f"{i:05d}.png"), label)
            lines.append(f"images/{split}/{i:05d}.png labels/{split}/{i:05d}.png")
            if progress:
                progress(1)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text("\n".join(SCENE_CLASSES) + "\n")
    return {"out_dir": str(out), "train": num_train, "val": num_val, "classes": list(SCENE_CLASSES)}
