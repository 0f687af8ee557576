"""Metrics and post-processing: COCO keypoints (pycocotools), OKS-NMS, MPII PCKh."""

from .coco_keypoints import coco_keypoint_results, evaluate_coco_keypoints, rescore, write_coco_results
from .oks_nms import oks_iou, oks_matrix, oks_nms
from .pckh import evaluate_mpii, pckh

__all__ = [
    "coco_keypoint_results",
    "evaluate_coco_keypoints",
    "rescore",
    "write_coco_results",
    "oks_iou",
    "oks_matrix",
    "oks_nms",
    "evaluate_mpii",
    "pckh",
]
