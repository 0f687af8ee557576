"""MPII Human Pose reader (the official HRNet json layout) with the head boxes PCKh needs.

Annotation json (``annot/{train,valid,test}.json`` of leoxiaobin/deep-high-resolution-net.pytorch): a list of
``{"image", "center" [2], "scale" (float), "joints" [16][2], "joints_vis" [16]}`` in 1-based (MATLAB) pixels.
Conventions of the official reader (FACTS.md section 1): ``center[1] += 15 * scale``, ``scale *= 1.25`` (``scale`` is
a person height / 200 and becomes ``[s, s]``), then center and joints are converted to 0-based (minus 1).

Head boxes (PCKh normaliser; the official json does not carry them), in this order of precedence:

1. a ``headbox`` field per json entry: ``[[x1, y1], [x2, y2]]`` (1-based pixels, like the joints);
2. ``headbox_file``: the official ``annot/gt_valid.mat`` (``headboxes_src`` ``[2, 2, N]``, plus ``pos_gt_src``
   ``[16, 2, N]`` used to check that it lines up with the json) or a json list of ``[[x1, y1], [x2, y2]]``, one per
   entry in the same order.

Without either, records have ``headbox = None`` and :func:`~hrnet_core.evaluation.pckh.evaluate_mpii` refuses to score.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .io import AnnotationError, load_json
from .keypoints import MPII_KEYPOINTS
from .records import KeypointRecords
from .transforms import PIXEL_STD

__all__ = ["MpiiKeypoints", "load_headboxes"]


def load_headboxes(path: str | os.PathLike, num_records: int) -> dict[str, np.ndarray | None]:
    """Read head boxes from the official ``gt_valid.mat`` or a json list.

    Args:
        path: ``.mat`` (official) or ``.json`` file.
        num_records: expected number of boxes (entries of the annotation json).

    Returns:
        ``{"headboxes": float64 [N, 2, 2] ([[x1, y1], [x2, y2]], 1-based px as stored), "pos_gt": [N, 16, 2] 1-based
        joints or None, "jnt_missing": [N, 16] or None}`` (the last two only from an official ``.mat``).

    Raises:
        AnnotationError: the file is missing, unreadable, lacks ``headboxes_src`` or has a different count.
    """
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"head box file {str(p)!r} not found")
    pos_gt = missing = None
    if p.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            mat = loadmat(str(p))
        except Exception as exc:  # scipy raises several types for a bad file
            raise AnnotationError(f"head box file {str(p)!r} cannot be read as a .mat: {exc}") from None
        if "headboxes_src" not in mat:
            raise AnnotationError(f"head box file {str(p)!r} has no 'headboxes_src' (official gt_valid.mat layout)")
        hb = np.asarray(mat["headboxes_src"], dtype=np.float64)
        if hb.ndim != 3 or hb.shape[:2] != (2, 2):
            raise AnnotationError(f"head box file {str(p)!r}: headboxes_src has shape {hb.shape}, expected [2, 2, N]")
        headboxes = hb.transpose(2, 0, 1)
        if "pos_gt_src" in mat:
            pos_gt = np.asarray(mat["pos_gt_src"], dtype=np.float64).transpose(2, 0, 1)
        if "jnt_missing" in mat:
            missing = np.asarray(mat["jnt_missing"], dtype=np.float64).T
    else:
        data = load_json(p, "head box file")
        if isinstance(data, dict):
            data = data.get("headboxes")
        try:
            headboxes = np.asarray(data, dtype=np.float64).reshape(-1, 2, 2)
        except (TypeError, ValueError):
            raise AnnotationError(f"head box file {str(p)!r} must hold a list of [[x1, y1], [x2, y2]]") from None
    if len(headboxes) != num_records:
        raise AnnotationError(
            f"head box file {str(p)!r} has {len(headboxes)} boxes, the annotation file {num_records} entries"
        )
    return {"headboxes": headboxes, "pos_gt": pos_gt, "jnt_missing": missing}


class MpiiKeypoints(KeypointRecords):
    """Person records of an official HRNet MPII json (``ds[i]`` is ``ds.records[i]``).

    Args:
        ann_file: ``train.json`` / ``valid.json`` / ``test.json`` (``test.json`` has no joints: zeros).
        image_dir: folder with the MPII images.
        headbox_file: optional head boxes (see module docstring); json ``headbox`` fields take precedence.
        pixel_std: scale unit (200).
        check_files: verify at construction that every referenced image exists.

    Attributes:
        records: dicts as :class:`~hrnet_core.data.coco.CocoKeypoints` (``image_file``, ``image_id`` = the numeric image
            name (``'005808361.jpg'`` -> 5808361) or the entry index, ``center``, ``scale``, ``joints`` [16, 3] 0-based px,
            ``score`` 1, ``area``) plus ``image_name`` and ``headbox`` (float64 ``[2, 2]`` 0-based px, or ``None``);
            with an official ``gt_valid.mat`` also ``pckh_joints`` [16, 3] (its 0-based joints and labelled flags,
            which PCKh then uses as ground truth, as the official evaluation does).
        num_joints (16), flip_pairs, sigmas (``None``: MPII is scored by PCKh).

    Raises:
        AnnotationError: invalid json, malformed entry (the message gives the entry index), a head box file that
            does not match the json, or a missing image file.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        headbox_file: str | os.PathLike | None = None,
        pixel_std: float = PIXEL_STD,
        check_files: bool = True,
    ) -> None:
        self.ann_file = str(ann_file)
        self.image_dir = str(image_dir)
        self.pixel_std = float(pixel_std)
        self.spec = MPII_KEYPOINTS
        self.num_joints = self.spec.num_joints
        self.flip_pairs = self.spec.flip_pairs
        self.sigmas = None
        entries = load_json(ann_file, "MPII annotation file")
        if not isinstance(entries, list):
            raise AnnotationError(f"MPII annotation file {self.ann_file!r} must hold a list of people")
        self.records = [self._record(i, e) for i, e in enumerate(entries)]
        if headbox_file is not None:
            hb = load_headboxes(headbox_file, len(self.records))
            pos_gt, missing = hb["pos_gt"], hb["jnt_missing"]
            if pos_gt is not None:
                self._check_alignment(pos_gt, headbox_file)
            for i, r in enumerate(self.records):
                if r["headbox"] is None:
                    r["headbox"] = hb["headboxes"][i] - 1.0
                if pos_gt is not None and missing is not None and missing.shape == (len(self.records), self.num_joints):
                    # the official PCKh scores against the .mat's joints and labelled flags
                    r["pckh_joints"] = np.c_[pos_gt[i] - 1.0, 1.0 - missing[i]]
        if check_files:
            self._check_image_files()

    @property
    def has_headboxes(self) -> bool:
        return bool(self.records) and all(r["headbox"] is not None for r in self.records)

    def _record(self, index: int, e: Any) -> dict[str, Any]:
        k = self.num_joints
        where = f"MPII annotation file {self.ann_file!r}, entry {index}"
        try:
            name = str(e["image"])
            center = np.asarray(e["center"], dtype=np.float64).reshape(2)
            s = float(np.asarray(e["scale"], dtype=np.float64).reshape(-1)[0])
        except (KeyError, TypeError, ValueError, IndexError):
            raise AnnotationError(f"{where}: needs 'image', 'center' [2] and 'scale'") from None
        scale = np.array([s, s], dtype=np.float64)
        if center[0] != -1:
            center[1] = center[1] + 15 * scale[1]
            scale = scale * 1.25
        center = center - 1.0  # MATLAB 1-based -> 0-based
        joints = np.zeros((k, 3), dtype=np.float64)
        if "joints" in e:
            try:
                xy = np.asarray(e["joints"], dtype=np.float64)
                vis = np.asarray(e.get("joints_vis", np.ones(k)), dtype=np.float64)
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: 'joints' / 'joints_vis' are not numeric") from None
            if xy.shape != (k, 2) or vis.shape != (k,):
                raise AnnotationError(f"{where}: expected joints [{k}, 2] and joints_vis [{k}], got {xy.shape} / {vis.shape}")
            joints[:, :2] = xy - 1.0
            joints[:, 2] = np.minimum(vis, 1.0)
        headbox = None
        if e.get("headbox") is not None:
            try:
                headbox = np.asarray(e["headbox"], dtype=np.float64).reshape(2, 2) - 1.0
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: 'headbox' must be [[x1, y1], [x2, y2]]") from None
        stem = Path(name).stem
        return {
            "image_file": os.path.abspath(os.path.join(self.image_dir, name)),
            "image_id": int(stem) if stem.isdigit() else index,
            "image_name": name,
            "center": center,
            "scale": scale,
            "joints": joints,
            "score": 1.0,
            "area": float(scale[0] * scale[1] * self.pixel_std**2),
            "headbox": headbox,
        }

    def _check_alignment(self, pos_gt: np.ndarray, path) -> None:
        """Refuse a ``gt_valid.mat`` whose joints disagree with the json (> 1% of labelled joints off by > 1 px)."""
        if pos_gt.shape != (len(self.records), self.num_joints, 2):
            raise AnnotationError(f"head box file {str(path)!r}: pos_gt_src has shape {pos_gt.shape}")
        ours = np.stack([r["joints"][:, :2] for r in self.records]) + 1.0
        vis = np.stack([r["joints"][:, 2] for r in self.records]) > 0
        if vis.any():
            far = (np.abs(ours - pos_gt).max(axis=-1) > 1.0)[vis]
            if far.mean() > 0.01:
                raise AnnotationError(
                    f"head box file {str(path)!r} does not line up with {self.ann_file!r} "
                    f"({100 * far.mean():.1f}% of labelled joints differ by more than 1 px)"
                )
