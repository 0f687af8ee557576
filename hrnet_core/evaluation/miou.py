"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy, mean class accuracy.

The confusion matrix ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p`` over the non-ignored pixels
(label ``== ignore_index`` or ``>= num_classes`` never count); :func:`confusion_matrix` builds it with
``torch.bincount`` on the tensors' device (official ``lib/utils/utils.py get_confusion_matrix`` does the same on the
CPU).

Official rule (``lib/core/function.py testval``): ``IoU_c = cm[c, c] / max(1, sum_p cm[c, p] + sum_t cm[t, c] -
cm[c, c])`` and ``mIoU`` = mean over ALL classes (a class absent from labels and predictions counts 0);
``pixel_acc = trace / total``; ``mean_acc`` = mean over all classes of ``cm[c, c] / max(1, sum_p cm[c, p])`` (the LIP
table's "Mean Acc"). Beside them, under their own names, ``mIoU_present`` / ``mean_acc_present``: the means over the
classes with a non-empty union / present in the labels (mmsegmentation's ``nanmean``). All in percent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["confusion_matrix", "segmentation_metrics", "per_class_iou", "sparse_confusion", "dense_confusion"]


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


def sparse_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(flat indices int32, counts int64)`` of the non-zero cells of a confusion matrix ``[C, C]`` (what one
    image's prediction carries; :func:`dense_confusion` inverts it)."""
    flat = cm.reshape(-1)
    idx = np.flatnonzero(flat)
    return idx.astype(np.int32), flat[idx].astype(np.int64)


def dense_confusion(sparse: tuple[np.ndarray, np.ndarray], num_classes: int) -> np.ndarray:
    """The int64 confusion matrix ``[C, C]`` of :func:`sparse_confusion`'s ``(flat indices, counts)``."""
    cm = np.zeros(num_classes * num_classes, np.int64)
    cm[np.asarray(sparse[0], np.int64)] = np.asarray(sparse[1])
    return cm.reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class ``[C]`` as a fraction, ``tp / max(1, union)`` (official ``testval``: 0 for a class in neither
    labels nor predictions)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return tp / np.maximum(1.0, cm.sum(0) + cm.sum(1) - tp)


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``{"mIoU", "pixel_acc", "mean_acc", "mIoU_present", "mean_acc_present", "IoU/<class>"...}`` in percent from
    a confusion matrix ``[C, C]`` (rows: true class) by the official rule of the module docstring.

    ``IoU/<class>`` for every class (0 for an absent one, as the official ``IoU_array``). Empty matrix: every value
    0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp, gt = np.diag(cm), cm.sum(1)
    union = cm.sum(0) + gt - tp
    iou = per_class_iou(cm)
    acc = tp / np.maximum(1.0, gt)
    total = cm.sum()
    out = {"mIoU": 100.0 * float(iou.mean()) if len(iou) else 0.0,
           "pixel_acc": 100.0 * float(tp.sum() / total) if total else 0.0,
           "mean_acc": 100.0 * float(acc.mean()) if len(acc) else 0.0,
           "mIoU_present": 100.0 * float(iou[union > 0].mean()) if (union > 0).any() else 0.0,
           "mean_acc_present": 100.0 * float(acc[gt > 0].mean()) if (gt > 0).any() else 0.0}
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(cm))]
    for name, v in zip(names, iou):
        out[f"IoU/{name}"] = 100.0 * float(v)
    return out
