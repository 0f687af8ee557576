"""The project's vocabulary of task and metric names, on the lowest floor: this module imports nothing of the
project.

``TASK_NAMES`` are the recipe ``task:`` values, the paper-table ``task`` column values and the DVC ``tasks``
parameter keys. :data:`METRICS` are the metric names (with direction, unit and meaning) shared by the tasks'
evaluators (``Task.metrics``), the paper tables, MLflow runs and the report. :mod:`hrnet_core.task_registry`,
:mod:`hrnet_core.tasks` and :mod:`hrnet_core.paper_tables` (which re-exports the metric names) import them from
here, so that none of them has to import another for a name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ERROR_EQUIVALENTS", "METRICS", "MetricInfo", "TASK_NAMES", "metric_info"]

#: every task of the papers, in the order the CLI and the reports list them; the landed ones are
#: :func:`hrnet_core.task_registry.landed_tasks`
TASK_NAMES: tuple[str, ...] = (
    "pose_topdown", "pose_bottomup", "pose_tracking", "segmentation", "face_alignment", "detection",
    "instance_segmentation", "classification",
)


@dataclass(frozen=True)
class MetricInfo:
    """One metric name shared by the paper tables, MLflow runs and the report.

    Attributes:
        name: the MLflow metric name (``paper/<name>`` and ``delta/<name>`` derive from it).
        higher_is_better: direction used by "best run" and by the reproduced/below status.
        unit: ``"%"`` (percent points, as the papers print them) or ``""``.
        description: what it measures, in the field's words.
    """

    name: str
    higher_is_better: bool
    unit: str
    description: str


def _metrics() -> dict[str, MetricInfo]:
    m: dict[str, MetricInfo] = {}

    def add(name: str, hib: bool, desc: str, unit: str = "%") -> None:
        m[name] = MetricInfo(name, hib, unit, desc)

    add("AP", True, "COCO AP, mean over OKS (keypoints) or IoU (boxes) thresholds 0.50:0.95")
    add("AP50", True, "AP at OKS / IoU 0.50")
    add("AP75", True, "AP at OKS / IoU 0.75")
    add("APS", True, "AP for small objects (boxes)")
    add("APM", True, "AP for medium objects (area 32^2..96^2)")
    add("APL", True, "AP for large objects (area > 96^2)")
    for k in ("AR", "AR50", "AR75", "ARM", "ARL"):
        add(k, True, f"COCO average recall ({k})")
    add("AP/easy", True, "CrowdPose AP on easy images (crowd index < 0.1)")
    add("AP/medium", True, "CrowdPose AP on medium images (crowd index 0.1..0.8)")
    add("AP/hard", True, "CrowdPose AP on hard images (crowd index > 0.8)")
    for k in ("mask_AP", "mask_APS", "mask_APM", "mask_APL"):
        add(k, True, f"COCO instance-mask {k[5:]}")
    add("PCKh", True, "MPII PCKh@0.5 mean (the official 'Mean'/'Total': pelvis and thorax excluded)")
    for joint in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        add(f"PCKh/{joint}", True, f"MPII PCKh@0.5 of the {joint.lower()} joints (mean of left and right)")
    add("mAP", True, "PoseTrack frame-wise multi-person pose mAP")
    add("MOTA", True, "PoseTrack multi-object tracking accuracy")
    add("mIoU", True, "mean class-wise intersection over union")
    add("iIoU_cla", True, "Cityscapes instance-level IoU, class average")
    add("IoU_cat", True, "Cityscapes IoU, category average")
    add("iIoU_cat", True, "Cityscapes instance-level IoU, category average")
    add("pixel_acc", True, "pixel accuracy")
    add("mean_acc", True, "class-average pixel accuracy")
    add("NME", False, "normalised mean error (percent of the normalising distance) on the full test set")
    for subset in ("pose", "expression", "illumination", "makeup", "occlusion", "blur", "frontal", "common",
                   "challenging"):
        add(f"NME/{subset}", False, f"NME on the {subset} subset of the test set")
    add("FR_0.08", False, "failure rate: share of images with NME > 0.08")
    add("FR_0.1", False, "failure rate: share of images with NME > 0.10")
    add("AUC_0.08", True, "area under the cumulative error curve up to NME 0.08 (divided by 0.08)")
    add("AUC_0.1", True, "area under the cumulative error curve up to NME 0.10 (divided by 0.10)")
    add("top1", True, "ImageNet top-1 accuracy (single 224 crop)")
    add("top5", True, "ImageNet top-5 accuracy")
    add("top1_err", False, "ImageNet top-1 error (= 100 - top1)")
    add("top5_err", False, "ImageNet top-5 error (= 100 - top5)")
    return m


#: Every metric name a paper row may use (these are also the MLflow metric names of our runs).
METRICS: Mapping[str, MetricInfo] = MappingProxyType(_metrics())

#: Metrics the papers print as errors whose accuracy counterpart our evaluators log: paper name -> run metric name
#: (paper value = 100 - run value).
ERROR_EQUIVALENTS: Mapping[str, str] = MappingProxyType({"top1_err": "top1", "top5_err": "top5"})


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``. Raises ``KeyError`` listing the known names."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]
