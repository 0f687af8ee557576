"""Drawn label maps for a few evaluation images (OpenCV): image | ground truth | prediction side by side,
colour-coded with the dataset palette (ignore black).

Used by the segmentation task (:mod:`hrnet_core.tasks.segmentation`) for the MLflow drawings of an evaluation and
by ``hrnet predict`` (:func:`colourise`). Moved from ``hrnet_core/tasks/segmentation.py`` unchanged (issue 25).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from hrnet_core.data.io import read_image
from hrnet_core.data.segmentation import SegLayout, apply_lut, read_label
from hrnet_core.evaluation.seg_inference import decode_prediction

__all__ = ["colourise", "save_drawings"]


def colourise(ids: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Training-id map ``[H, W]`` -> RGB ``[H, W, 3]`` (ignore and unknown ids black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut[ids]


def save_drawings(items: Sequence[dict[str, Any]], values: Sequence[dict[str, Any]], layout: SegLayout,
                  out_dir: str | Path, num_images: int) -> list[Path]:
    """``<out_dir>/<image stem>.jpg``: image | ground truth | prediction side by side, colour-coded with the dataset
    palette (ignore black), for the first ``num_images`` images.

    Args:
        items: the evaluation images (``file_name``, ``image_file``, ``label_path``).
        values: their predictions (:func:`hrnet_core.evaluation.seg_inference.predict_images` entries).
        layout: the split's label vocabulary (lookup table, palette).

    Returns:
        The written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for r, v in list(zip(items, values))[:num_images]:
        img = read_image(r["image_file"])
        gt = apply_lut(read_label(r["label_path"]), layout.lut_array())
        panel = np.concatenate([img, colourise(gt, layout.palette), colourise(decode_prediction(v), layout.palette)],
                               axis=1)
        f = out / f"{Path(r['file_name']).stem}.jpg"
        cv2.imwrite(str(f), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        files.append(f)
    return files
