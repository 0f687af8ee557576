"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy, mean class accuracy.

The confusion matrix ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p`` over the non-ignored pixels
(label ``== ignore_index`` or ``>= num_classes`` never count); :func:`confusion_matrix` builds it with
``torch.bincount`` on the tensors' device (the official SEG ``get_confusion_matrix`` does the same on the CPU).

``IoU_c = cm[c, c] / (sum_p cm[c, p] + sum_t cm[t, c] - cm[c, c])``; ``mIoU`` is the mean over the classes whose
union is non-empty (a class absent from both labels and predictions is left out, as mmsegmentation's ``nanmean``;
the official SEG code averages over every class, counting 0 for those, which differs only on tiny val sets);
``pixel_acc = trace / total``; ``mean_acc`` = mean over classes present in the labels of ``cm[c, c] / sum_p cm[c, p]``
(the LIP table's "Mean Acc"). All in percent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["confusion_matrix", "segmentation_metrics", "per_class_iou"]


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255
                     ) -> torch.Tensor:
    """int64 ``[C, C]`` (rows: true class, columns: predicted) of integer maps ``pred`` and ``label`` of one shape,
    on their device.

    Raises:
        ValueError: shapes differ.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {list(pred.shape)} and label {list(label.shape)} differ in shape")
    label = label.long().reshape(-1)
    pred = pred.long().reshape(-1)
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class as a fraction, NaN where a class is in neither labels nor predictions."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``{"mIoU", "pixel_acc", "mean_acc", "IoU/<class>"...}`` in percent from a confusion matrix ``[C, C]``.

    Per-class entries are left out for classes absent from labels and predictions. Empty matrix: every value 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    iou = per_class_iou(cm)
    total = cm.sum()
    gt = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(gt > 0, np.diag(cm) / np.where(gt > 0, gt, 1), np.nan)
    out = {"mIoU": 100.0 * float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
           "pixel_acc": 100.0 * float(np.trace(cm) / total) if total else 0.0,
           "mean_acc": 100.0 * float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0}
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(cm))]
    for name, v in zip(names, iou):
        if np.isfinite(v):
            out[f"IoU/{name}"] = 100.0 * float(v)
    return out
