"""Generated classification data (smoke runs, tests): textures of six classes written as an ImageFolder tree.

Moved from ``hrnet_core/tasks/classification.py`` unchanged (issue 25); the task module still exports the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


#: the generated classes (folder names; the class index is their sorted order)
SYNTHETIC_CLASSES = ("checker", "diagonal", "dots", "hstripes", "plain", "vstripes")


def _synthetic_image(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 ``[size, size, 3]`` image of class ``cls``: a texture of two random colours over the whole
    image (so that every random crop and flip keeps the class) plus Gaussian noise (std 12):

    - ``checker``: checkerboard, random period and orientation; ``dots``: a grid of discs;
    - ``hstripes`` / ``vstripes`` / ``diagonal``: stripes within 15 degrees of horizontal / vertical / 45 degrees
      (either diagonal; a horizontal flip turns one into the other);
    - ``plain``: the background colour only.

    Periods are 10-20 % of ``size``; phases random.
    """
    bg = rng.integers(0, 256, 3)
    fg = (bg + rng.integers(80, 176, 3)) % 256
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(0.1, 0.2) * size)
    jitter = float(np.deg2rad(rng.uniform(-15, 15)))
    theta = {"hstripes": np.pi / 2, "vstripes": 0.0, "diagonal": float(rng.choice([np.pi / 4, 3 * np.pi / 4]))}.get(
        cls, float(rng.uniform(0, np.pi / 2))) + jitter
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)
    v = -xx * np.sin(theta) + yy * np.cos(theta) + rng.uniform(0, period)
    if cls in ("hstripes", "vstripes", "diagonal"):
        mask = np.floor(u / period) % 2 == 0
    elif cls == "checker":
        mask = (np.floor(u / period) % 2 == 0) ^ (np.floor(v / period) % 2 == 0)
    elif cls == "dots":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        mask = du ** 2 + dv ** 2 <= (0.3 * period) ** 2
    elif cls == "plain":
        mask = np.zeros((size, size), bool)
    else:  # pragma: no cover
        raise ValueError(f"unknown synthetic class {cls!r}")
    img[mask] = fg
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int, progress=None,
             size: int = 40) -> dict[str, Any]:
    """Generated ImageFolder data: ``<out>/train/<class>/<class>_<n>.JPEG`` and ``<out>/val/...`` of the
    :data:`SYNTHETIC_CLASSES` (``num_train`` / ``num_val`` images in all, classes in turn), ``size`` px squares,
    JPEG quality 95, plus ``synsets.txt``. Same seed, same bytes.

    Returns:
        ``{"out_dir", "train", "val", "classes"}``.
    """
    import cv2

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("val", num_val)):
        for c in SYNTHETIC_CLASSES:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            c = SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)]
            img = _synthetic_image(c, size, rng)
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out / split / c / f"{c}_{i:05d}.JPEG").write_bytes(buf.tobytes())
            if progress:
                progress(1)
    (out / "synsets.txt").write_text("".join(f"{c} {c}\n" for c in SYNTHETIC_CLASSES))
    return {"out_dir": str(out), "train": num_train, "val": num_val, "classes": len(SYNTHETIC_CLASSES)}
