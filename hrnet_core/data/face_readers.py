"""Facial landmark split readers: one split of WFLW / AFLW / COFW / 300W -> the image and sample tables that
``hrnet data prepare`` writes (the ``face_alignment`` task wraps them in its ``PreparedRows``).

Inputs: the official HRNet face lists (CSV, ``face_landmarks_<dataset>_<split>.csv`` + ``images/``), a COCO-style
json, or (COFW) the official ``.mat`` with its images extracted beside it; the annotation readers are
:mod:`hrnet_core.data.faces`. ``samples`` columns: ``image_id``, ``ann_id``, ``file_name``, ``center`` [2] px,
``scale`` (face size / 200 px), ``landmarks`` [K*2] px, ``box_size`` (AFLW normaliser px, else 0), ``subsets``
(comma-separated subset tags).

Moved from ``hrnet_core/tasks/face_alignment.py`` unchanged (issue 25).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .faces import face_layout, read_cofw_mat, read_face_coco, read_face_csv, tag_subsets
from .io import AnnotationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LIST_STEMS", "face_list_layout", "FaceSplitTables", "read_face_split"]

#: split name -> stem of the official list file (``face_landmarks_<dataset>_<stem>.csv``), per dataset
LIST_STEMS: dict[str, dict[str, str]] = {
    "300w": {"full": "valid", "common": "valid_common", "challenging": "valid_challenge"},
    "wflw": {"pose": "test_largepose", "expression": "test_expression", "illumination": "test_illumination",
             "makeup": "test_makeup", "occlusion": "test_occlusion", "blur": "test_blur"},
    "aflw": {"frontal": "test_frontal"},
    "cofw": {},
}


def face_list_layout(dataset: str, split: str) -> dict[str, str]:
    """The official layout of ``split`` of ``dataset``: ``{"annotations": "face_landmarks_<dataset>_<stem>.csv",
    "images": "images"}`` (paths relative to the source folder; the stem from :data:`LIST_STEMS`, else the split).

    Raises:
        KeyError: unknown ``dataset``.
    """
    stem = LIST_STEMS[dataset].get(split, split)
    return {"annotations": f"face_landmarks_{dataset}_{stem}.csv", "images": "images"}


@dataclass
class FaceSplitTables:
    """One face split as read: ``images`` (``image_id``, ``file_name``, ``width``, ``height``; 0 when unknown),
    ``samples`` (one row per face, module docstring), the absolute ``image_root``, the ``annotations`` file, the
    dataset's ``num_landmarks`` and the subset tags found (``subsets``, official CSV lists only)."""

    images: "pd.DataFrame"
    samples: "pd.DataFrame"
    image_root: Path
    annotations: Path
    num_landmarks: int
    subsets: list[str] = field(default_factory=list)


def read_face_split(dataset: str, annotations: str | Path, images: str | Path) -> FaceSplitTables:
    """A split of ``dataset`` (official CSV list or COCO-style json) -> rows (one per face).

    Raises:
        hrnet_core.data.io.AnnotationError: unknown annotation format, or AFLW faces without a box size.
    """
    import pandas as pd

    ann = Path(annotations)
    image_root = Path(images)
    subsets: list[str] = []
    if ann.suffix == ".json":
        records, image_table = read_face_coco(ann, dataset)
    elif ann.suffix == ".csv":
        records, image_table = read_face_csv(ann, dataset), None
        subsets = tag_subsets(records, ann, dataset)
    elif ann.suffix == ".mat" and dataset == "cofw":  # the official release: images inside, extracted once
        image_root = ann.with_name(f"{ann.stem}_images")
        records, image_table = read_cofw_mat(ann, image_root), None
    else:
        raise AnnotationError(f"{ann}: expected an official face list (.csv), a COCO-style json"
                              f"{' or (COFW) the official .mat' if dataset == 'cofw' else ''}; unknown format")
    if image_table is None:
        ids = {name: i for i, name in enumerate(dict.fromkeys(r.file_name for r in records))}
        images = pd.DataFrame([{"image_id": i, "file_name": f, "width": 0, "height": 0} for f, i in ids.items()],
                              columns=["image_id", "file_name", "width", "height"])
        for r in records:
            r.image_id = ids[r.file_name]
    else:
        images = pd.DataFrame([{"image_id": int(i["id"]), "file_name": str(i["file_name"]),
                                "width": int(i.get("width", 0)), "height": int(i.get("height", 0))}
                               for i in image_table], columns=["image_id", "file_name", "width", "height"])
    if dataset == "aflw":
        bad = [r.ann_id for r in records if not r.box_size > 0]
        if bad:
            raise AnnotationError(f"{ann}: AFLW faces without a box size (the NME normaliser): ann ids {bad[:5]}")
    samples = pd.DataFrame([{
        "image_id": int(r.image_id), "ann_id": int(r.ann_id), "file_name": r.file_name,
        "center": [float(v) for v in r.center], "scale": float(r.scale),
        "landmarks": [float(v) for v in r.landmarks.reshape(-1)], "box_size": float(r.box_size),
        "subsets": ",".join(r.subsets)} for r in records])
    return FaceSplitTables(images=images, samples=samples, image_root=image_root, annotations=ann,
                           num_landmarks=face_layout(dataset).num_landmarks, subsets=subsets)
