"""The prepared tables of a top-down keypoint split (``hrnet data prepare`` for the ``pose_topdown`` task): reader
records (:class:`~hrnet_core.data.coco.CocoKeypoints`, :class:`~hrnet_core.data.mpii.MpiiKeypoints`) -> the rows of
``images.parquet`` and ``samples.parquet``.

``samples.parquet`` columns: ``image_id``, ``ann_id``, ``file_name``, ``bbox`` [4] px (x, y, w, h), ``joints`` [K*3]
(x, y px of the original image, visibility 0/1), MPII also ``center`` [2] px, ``scale`` [2] (x 200 px) and
``headbox`` [4]; :meth:`hrnet_core.data.topdown.TopDownSample.record` reads a row back into a record.

Moved from ``hrnet_core/tasks/pose_topdown.py`` (issue 25); the task's readers wrap these tables in its
``PreparedRows``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .records import KeypointRecords

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KeypointTables", "coco_keypoint_tables", "mpii_keypoint_tables", "samples_table"]


class KeypointTables(NamedTuple):
    """The tables of one keypoint split: ``images`` (``image_id``, ``file_name``, ``width``, ``height``; 0 when
    unknown), ``samples`` (one row per person with labelled joints, :func:`samples_table`) and the reader's
    ``num_joints``."""

    images: pd.DataFrame
    samples: pd.DataFrame
    num_joints: int


def coco_keypoint_tables(annotations: str | os.PathLike, img_root: Path) -> KeypointTables:
    """COCO keypoints split -> tables (one sample per person with labelled joints; crowd regions dropped).

    Raises:
        hrnet_core.data.io.AnnotationError: invalid annotation file or a missing image (named).
    """
    import pandas as pd

    from .coco import CocoKeypoints

    reader = CocoKeypoints(annotations, img_root, use_gt_boxes=True, check_files=True)
    imgs = reader.coco.dataset["images"]
    images = pd.DataFrame([{"image_id": int(i["id"]), "file_name": str(i["file_name"]),
                            "width": int(i.get("width", 0)), "height": int(i.get("height", 0))} for i in imgs],
                          columns=["image_id", "file_name", "width", "height"])
    return KeypointTables(images, samples_table(reader, img_root), int(reader.num_joints))


def mpii_keypoint_tables(annotations: str | os.PathLike, img_root: Path,
                         headboxes: str | os.PathLike | None = None) -> KeypointTables:
    """MPII (HRNet json) split -> tables (one sample per person with labelled joints, provided center/scale).

    Raises:
        hrnet_core.data.io.AnnotationError: invalid annotation or head box file, or a missing image (named).
    """
    import pandas as pd

    from .mpii import MpiiKeypoints

    reader = MpiiKeypoints(annotations, img_root, headbox_file=headboxes)
    # the MPII json has no image table: one row per referenced file (sizes unknown without decoding: 0)
    names = {os.path.relpath(r["image_file"], img_root): int(r["image_id"]) for r in reader.records}
    images = pd.DataFrame([{"image_id": i, "file_name": f, "width": 0, "height": 0} for f, i in sorted(names.items())],
                          columns=["image_id", "file_name", "width", "height"])
    return KeypointTables(images, samples_table(reader, img_root), int(reader.num_joints))


def samples_table(reader: KeypointRecords, img_root: Path) -> pd.DataFrame:
    """The ``samples.parquet`` rows of a reader's records (module docstring): people without a labelled joint are
    skipped; MPII records (no ``bbox``) keep their provided center/scale, with the crop box for reference."""
    import pandas as pd

    rows = []
    for r in reader.records:
        if float(r["joints"][:, 2].max(initial=0.0)) <= 0:
            continue
        bbox = r.get("bbox")
        fixed_crop = bbox is None
        if fixed_crop:  # MPII: the provided person center/scale define the crop; bbox for reference only
            c, s = r["center"], r["scale"]
            w, h = float(s[0]) * 200.0, float(s[1]) * 200.0
            bbox = [float(c[0]) - w / 2, float(c[1]) - h / 2, w, h]
        row = {
            "image_id": int(r["image_id"]),
            "ann_id": int(r.get("ann_id", -1)),
            "file_name": os.path.relpath(r["image_file"], img_root),
            "bbox": [float(v) for v in bbox],
            "joints": [float(v) for v in r["joints"].reshape(-1)],
        }
        if fixed_crop:
            row["center"] = [float(v) for v in r["center"]]
            row["scale"] = [float(v) for v in r["scale"]]
        if r.get("headbox") is not None:
            row["headbox"] = [float(v) for v in r["headbox"].reshape(-1)]
        rows.append(row)
    return pd.DataFrame(rows)
