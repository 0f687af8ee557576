"""Drawn detections for a few evaluation images (OpenCV): predicted boxes, mask tints, class names and scores in a
colour per class, ground-truth boxes in white.

Used by the detection task (:mod:`hrnet_core.tasks.detection`) for the MLflow drawings of an evaluation; moved from
``hrnet_core/tasks/detection.py`` unchanged (issue 25).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from hrnet_core.data.coco_instances import read_instances
from hrnet_core.data.io import read_image

__all__ = ["save_detection_drawings"]


def save_detection_drawings(items: Sequence[Mapping[str, Any]], values: Sequence[Mapping[str, Any]],
                            ann_file: str | Path, out_dir: str | Path, num_images: int,
                            score_thr: float = 0.3) -> list[Path]:
    """Write ``<out_dir>/<image_id>.jpg`` for the first ``num_images`` items: ground-truth boxes of ``ann_file``
    (white) and the predictions scoring at least ``score_thr`` (box, mask tint, class name and score, one colour per
    class).

    Args:
        items: evaluation items (``image_id``, ``image_file``), in the order of ``values``.
        values: per item ``{"boxes" [D, 4] xyxy px, "scores" [D], "category_ids" [D], "masks" [D] RLEs (optional)}``
            (the detection task's ``Predictions.values``).
        ann_file: the COCO instances file (ground truth and category names).

    Returns:
        The written files.
    """
    from pycocotools import mask as mask_utils

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, cats = read_instances(ann_file)
    gt = {r.image_id: r for r in records}
    names = {c["id"]: c["name"] for c in cats}
    palette = np.random.default_rng(0).integers(60, 255, size=(max(names) + 2, 3))
    files = []
    for r, p in list(zip(items, values))[:num_images]:
        img = read_image(r["image_file"]).copy()
        keep = np.nonzero(p["scores"] >= score_thr)[0]
        for k in keep:
            if "masks" in p:
                m = mask_utils.decode(p["masks"][k]).astype(bool)
                img[m] = (0.5 * img[m] + 0.5 * palette[max(p["category_ids"][k], 0)]).astype(np.uint8)
        g = gt.get(int(r["image_id"]))
        if g is not None:
            for x, y, w, h in g.boxes:
                cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 255), 1)
        for k in keep:
            c = tuple(int(v) for v in palette[max(p["category_ids"][k], 0)])
            x0, y0, x1, y1 = (int(v) for v in p["boxes"][k])
            cv2.rectangle(img, (x0, y0), (x1, y1), c, 2)
            cv2.putText(img, f"{names.get(int(p['category_ids'][k]), '?')} {p['scores'][k]:.2f}", (x0, max(y0 - 3, 8)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, c, 1, cv2.LINE_AA)
        f = out / f"{int(r['image_id'])}.jpg"
        cv2.imwrite(str(f), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        files.append(f)
    return files
