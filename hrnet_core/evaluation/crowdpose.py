"""CrowdPose keypoint evaluation (CrowdPose paper, Li et al. 2019; HigherHRNet paper Sec. 4.2 / Table 7): a small
subclass of pycocotools' ``COCOeval`` with the rules of the official CrowdPose evaluator (``crowdposetools``, the same
as ``xtcocotools``' ``keypoints_crowd`` mode with ``use_area=False``):

- the 14 CrowdPose OKS sigmas; the OKS scale of a ground-truth person is ``0.53 * box width * box height`` (the
  annotations have no ``area``), which is also the area the range test sees (one range, ``all``);
- a ground-truth person is ignored when ``num_keypoints == 0`` (CrowdPose counts visible joints only) or crowd;
- at most 20 people per image; AP, AP50, AP75, AR, AR50, AR75 over OKS 0.50:0.95;
- AP easy / medium / hard: the same evaluation on the images with ``crowdIndex < 0.2``, ``0.2 .. 0.8``, ``>= 0.8``
  (``get_type_result(0.2, 0.8)``), the mean precision rounded to 4 decimals as the official evaluator does (-1:
  no image of that kind).

``xtcocotools`` (pip) installs here but its compiled mask module does not load against NumPy 2 (binary ABI
mismatch: "numpy.dtype size changed"), hence the subclass and no dependency on it; the tests check it against hand
OKS computations and AP 1.0 of ground truth.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from ..data.io import AnnotationError, load_json
from ..data.keypoints import CROWDPOSE_KEYPOINTS

__all__ = ["CROWDPOSE_METRIC_NAMES", "CrowdPoseEval", "evaluate_crowdpose"]

CROWDPOSE_METRIC_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP/easy", "AP/medium", "AP/hard")


class CrowdPoseEval(COCOeval):
    """``COCOeval(gt, dt, "keypoints")`` with the CrowdPose rules (module docstring).

    Args:
        gt, dt: pycocotools ``COCO`` objects (ground truth with ``crowdIndex`` per image; results).
        sigmas: OKS constants (default the CrowdPose ones).
    """

    OKS_AREA_FACTOR = 0.53

    def __init__(self, gt, dt, sigmas: Sequence[float] | None = None) -> None:
        super().__init__(gt, dt, "keypoints")
        self.params.kpt_oks_sigmas = np.asarray(sigmas if sigmas is not None else CROWDPOSE_KEYPOINTS.sigmas,
                                                dtype=np.float64)
        self.params.maxDets = [20]
        self.params.areaRng = [[0.0, 1e10]]
        self.params.areaRngLbl = ["all"]

    def _prepare(self) -> None:
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                x, y, w, h = g["bbox"]
                g["area"] = float(w) * float(h) * self.OKS_AREA_FACTOR

    def _stat(self, ap: bool, iou: float | None = None) -> float:
        p = self.params
        s = self.eval["precision"][..., 0, 0] if ap else self.eval["recall"][..., 0, 0]
        if iou is not None:
            s = s[np.flatnonzero(np.isclose(p.iouThrs, iou))]
        s = s[s > -1]
        return float(s.mean()) if s.size else -1.0

    def crowd_summary(self) -> dict[str, float]:
        """Evaluate (all images, then easy / medium / hard) and return ``{name: value}`` in [0, 1]."""
        images = self.cocoGt.dataset["images"]
        all_ids = sorted(int(i["id"]) for i in images)
        index = {int(i["id"]): float(i.get("crowdIndex", -1.0)) for i in images}
        groups = {"AP/easy": [i for i in all_ids if index[i] < 0.2],
                  "AP/medium": [i for i in all_ids if 0.2 <= index[i] < 0.8],
                  "AP/hard": [i for i in all_ids if index[i] >= 0.8]}
        out = {}
        for name, ids in groups.items():
            self.params.imgIds = ids
            self.evaluate()
            self.accumulate()
            out[name] = round(float(np.mean(self.eval["precision"][:, :, :, 0, :])), 4)
        self.params.imgIds = all_ids  # last, so that ious / evalImgs / eval describe every image
        self.evaluate()
        self.accumulate()
        out.update({"AP": self._stat(True), "AP50": self._stat(True, 0.5), "AP75": self._stat(True, 0.75),
                    "AR": self._stat(False), "AR50": self._stat(False, 0.5), "AR75": self._stat(False, 0.75)})
        return out


def evaluate_crowdpose(ann_file: str | os.PathLike, results_file: str | os.PathLike,
                       sigmas: Sequence[float] | None = None, verbose: bool = False) -> dict[str, float]:
    """CrowdPose AP / AR and AP easy / medium / hard.

    Args:
        ann_file: ``crowdpose_test.json`` (images carry ``crowdIndex``).
        results_file: COCO keypoint results json (:func:`hrnet_core.evaluation.coco_keypoints.write_coco_results`).
        sigmas: OKS constants (default the CrowdPose ones).
        verbose: print the evaluator's table.

    Returns:
        ``{name: value}`` in [0, 1] for :data:`CROWDPOSE_METRIC_NAMES`.

    Raises:
        AnnotationError: empty results, or results for images not in the ground truth.
    """
    from pycocotools.coco import COCO

    dets = load_json(results_file, "keypoint results file")
    if not isinstance(dets, list) or not dets:
        raise AnnotationError(f"keypoint results file {str(results_file)!r} holds no results")
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        gt = COCO(str(ann_file))
        unknown = {int(d.get("image_id", -1)) for d in dets} - set(gt.getImgIds())
        if unknown:
            raise AnnotationError(f"keypoint results file {str(results_file)!r} refers to image ids not in "
                                  f"{str(ann_file)!r}: {sorted(unknown)[:5]}")
        dt = gt.loadRes(dets)
        stats = CrowdPoseEval(gt, dt, sigmas).crowd_summary()
    return {name: stats[name] for name in CROWDPOSE_METRIC_NAMES}
