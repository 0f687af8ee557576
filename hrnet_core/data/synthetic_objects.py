"""Generated object scenes in the COCO instances layout: the offline default data of the detection task.

Each scene is a noisy textured background with 1-4 objects of three classes (``disc``, ``square``, ``triangle``),
each drawn in its class's colour family with random size, position and shade; objects may overlap (later ones on
top; the earlier object's mask is the visible part). Every object has a box (the visible mask's extent) and a
polygon segmentation of its visible region (OpenCV contours), so box and mask AP are both meaningful. A tiny network
learns the classes in about a minute on a CPU.

Layout (as COCO): ``annotations/instances_<split>.json``, images under ``<split>/`` (``train2017`` / ``val2017``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["OBJECT_CLASSES", "generate_objects"]

#: class name -> (category id, base RGB colour)
OBJECT_CLASSES: dict[str, tuple[int, tuple[int, int, int]]] = {
    "disc": (1, (220, 60, 50)),
    "square": (2, (50, 190, 70)),
    "triangle": (3, (60, 80, 220)),
}


def _draw_object(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    mask = np.zeros((h, w), np.uint8)
    size = int(rng.integers(max(12, min(h, w) // 6), max(14, min(h, w) // 2)))
    cx, cy = int(rng.integers(size // 2, w - size // 2)), int(rng.integers(size // 2, h - size // 2))
    if kind == "disc":
        cv2.circle(mask, (cx, cy), size // 2, 1, -1)
    elif kind == "square":
        aspect = rng.uniform(0.7, 1.4)
        hw, hh = size / 2 * np.sqrt(aspect), size / 2 / np.sqrt(aspect)
        cv2.rectangle(mask, (int(cx - hw), int(cy - hh)), (int(cx + hw), int(cy + hh)), 1, -1)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        pts = [(cx + size / 2 * np.cos(angle + k * 2 * np.pi / 3), cy + size / 2 * np.sin(angle + k * 2 * np.pi / 3))
               for k in range(3)]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _polygons(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    base = rng.integers(90, 170, size=3)
    img = np.clip(base + rng.normal(0, 18, size=(h, w, 3)), 0, 255)
    objects: list[tuple[str, np.ndarray]] = []
    names = list(OBJECT_CLASSES)
    for _ in range(int(rng.integers(1, 5))):
        kind = names[int(rng.integers(len(names)))]
        m = _draw_object(kind, h, w, rng)
        colour = np.asarray(OBJECT_CLASSES[kind][1]) + rng.integers(-30, 31, size=3)
        img[m > 0] = np.clip(colour + rng.normal(0, 10, size=(int(m.sum()), 3)), 0, 255)
        objects = [(k, o * (1 - m)) for k, o in objects]  # occluded parts disappear
        objects.append((kind, m))
    return img.astype(np.uint8), [(k, o) for k, o in objects if o.sum() >= 30]


def generate_objects(out_dir: str | Path, num_train: int, num_val: int, seed: int,
                     progress: Callable[[int], Any] | None = None, size: tuple[int, int] = (120, 160)) -> dict[str, Any]:
    """Write generated scenes (module docstring) to ``out_dir``; scene heights and widths vary in
    ``[0.8, 1] * size`` (H, W) so batches have images of different sizes. Same seed, same bytes.

    Returns:
        ``{"out_dir", "splits": {split: {"images", "objects"}}, "classes"}``.
    """
    import cv2

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    cats = [{"id": cid, "name": name, "supercategory": "shape"} for name, (cid, _) in OBJECT_CLASSES.items()]
    summary: dict[str, Any] = {"out_dir": str(out), "splits": {}, "classes": list(OBJECT_CLASSES)}
    ann_id = 1
    for split, n in (("train2017", num_train), ("val2017", num_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            h = int(size[0] * rng.uniform(0.8, 1.0))
            w = int(size[1] * rng.uniform(0.8, 1.0))
            img, objects = _scene(rng, h, w)
            name = f"{split}_{i:06d}.jpg"
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out / split / name).write_bytes(buf.tobytes())
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            for kind, m in objects:
                ys, xs = np.nonzero(m)
                x0, y0 = float(xs.min()), float(ys.min())
                anns.append({"id": ann_id, "image_id": i + 1, "category_id": OBJECT_CLASSES[kind][0],
                             "bbox": [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0],
                             "area": float(m.sum()), "iscrowd": 0, "segmentation": _polygons(m)})
                ann_id += 1
            if progress:
                progress(1)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {"description": "generated object scenes (hrnet data generate detection)"}, "licenses": [],
             "images": images, "annotations": anns, "categories": cats}))
        summary["splits"][split] = {"images": n, "objects": len(anns)}
    return summary
