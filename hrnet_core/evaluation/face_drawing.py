"""Drawn landmarks for a few evaluation faces (OpenCV) and the CED plot (matplotlib): predictions in colour (outer
eye corners red) over ground truth in white.

Used by the face alignment task (:mod:`hrnet_core.tasks.face_alignment`) for the MLflow drawings of an evaluation.
Moved from ``hrnet_core/tasks/face_alignment.py`` unchanged (issue 25).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..data.faces import face_layout
from ..data.io import read_image
from .nme import auc, ced_curve, item_errors

__all__ = ["save_face_visualisations"]


def save_face_visualisations(items: Sequence[dict[str, Any]], preds: np.ndarray, dataset: str, crop_padding: float,
                             out_dir: str | Path, num_images: int) -> list[Path]:
    """Predicted landmarks (colour; outer eye corners red) over ground truth (white) on the face crop of the first
    ``num_images`` faces as ``<out_dir>/<ann_id>.jpg``, and the CED plot ``<out_dir>/ced.png``.

    Args:
        items: evaluation items (``samples.parquet`` rows plus absolute ``image_file``).
        preds: ``[N, K, >=2]`` predicted landmarks, original-image px, in item order.
        dataset: face dataset name (its layout and NME normaliser).
        crop_padding: the crop is ``scale * 200 * crop_padding`` px wide (``data.crop_padding``).

    Returns:
        The written files (the drawings, then ``ced.png``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = face_layout(dataset)
    marked = set(layout.norm_pair or ())
    files: list[Path] = []
    for r, p in list(zip(items, preds))[:num_images]:
        img = read_image(r["image_file"])
        c = np.asarray(r["center"], dtype=np.float64)
        half = float(r["scale"]) * 200.0 * crop_padding / 2
        x0, y0 = c - half
        k = 256.0 / (2 * half)
        m = np.array([[k, 0, -k * x0], [0, k, -k * y0]])
        crop = cv2.warpAffine(img, m, (256, 256), flags=cv2.INTER_LINEAR)
        gt = np.asarray(r["landmarks"], dtype=np.float64).reshape(-1, 2)
        for i, (q, g) in enumerate(zip(p[:, :2], gt)):
            cv2.circle(crop, (int(k * (g[0] - x0)), int(k * (g[1] - y0))), 2, (255, 255, 255), -1, cv2.LINE_AA)
            col = (255, 0, 0) if i in marked else (0, 255, 0)
            cv2.circle(crop, (int(k * (q[0] - x0)), int(k * (q[1] - y0))), 2, col, -1, cv2.LINE_AA)
        f = out / f"{int(r['ann_id'])}.jpg"
        cv2.imwrite(str(f), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        files.append(f)
    files.append(_ced_plot(item_errors(items, preds, dataset), out / "ced.png", dataset))
    return files


def _ced_plot(errors: np.ndarray, path: Path, dataset: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, f = ced_curve(errors, 0.1)
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot(xs, f)
    ax.set_xlabel("NME (fraction of the normaliser)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(f"CED {dataset}: AUC@0.1 {100 * auc(errors, 0.1):.1f}%")
    ax.set_xlim(0, 0.1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
