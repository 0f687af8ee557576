"""The files a segmentation evaluation writes (HRNet-Semantic-Segmentation ``lib/core/function.py`` ``testval`` /
``test``: predictions saved in the dataset's own label ids): ``predictions.json`` (per image: file, prediction PNG,
pixel accuracy), ``labels/<image stem>.png`` and ``confusion_matrix.csv``.

Used by the segmentation task's ``score`` (:mod:`hrnet_core.tasks.segmentation`). Moved from
``hrnet_core/tasks/segmentation.py`` unchanged (issue 25).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from hrnet_core.data.segmentation import SegLayout
from hrnet_core.evaluation.seg_inference import decode_prediction

__all__ = ["write_outputs"]


def write_outputs(out_dir: str | Path, items: Sequence[dict[str, Any]], values: Sequence[dict[str, Any]],
                  cms: Sequence[np.ndarray], total: np.ndarray, layout: SegLayout, dataset: str,
                  save_label_pngs: bool = True) -> None:
    """Write ``predictions.json``, ``confusion_matrix.csv`` and (``save_label_pngs``) ``labels/<image stem>.png``
    under ``out_dir``.

    Args:
        items: the evaluation images (``file_name``, ``image_id``).
        values: their predictions (:func:`hrnet_core.evaluation.seg_inference.predict_images` entries); the label
            PNGs hold the predicted training ids mapped to the dataset's own ids (``layout.output_lut()``:
            Cityscapes labelIds, PASCAL-Context-59 ids + 1).
        cms: each image's confusion matrix ``[C, C]`` (its pixel accuracy in percent, 4 decimals).
        total: the summed confusion matrix ``[C, C]`` (rows: true class) written as CSV.
        dataset: the split's dataset name, recorded in ``predictions.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    if save_label_pngs:
        (out / "labels").mkdir(exist_ok=True)
    lut = layout.output_lut()
    for r, v, cm in zip(items, values, cms):
        rec = {"file_name": r["file_name"], "image_id": int(r["image_id"]),
               "pixel_acc": round(100.0 * float(np.trace(cm) / max(cm.sum(), 1)), 4)}
        if save_label_pngs:
            name = f"{Path(r['file_name']).stem}.png"
            cv2.imwrite(str(out / "labels" / name), lut[decode_prediction(v)])
            rec["prediction"] = f"labels/{name}"
        records.append(rec)
    (out / "predictions.json").write_text(json.dumps(
        {"dataset": dataset, "ids": "dataset label ids (output_ids)", "classes": list(layout.classes),
         "images": records}))
    header = "true\\pred," + ",".join(layout.classes)
    rows = [f"{c}," + ",".join(str(int(x)) for x in total[k]) for k, c in enumerate(layout.classes)]
    (out / "confusion_matrix.csv").write_text("\n".join([header, *rows]) + "\n")
