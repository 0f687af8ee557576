"""Facial landmark datasets: landmark layouts (flip pairs, normaliser, named points) and annotation readers.

Facts (``FACTS.md`` section 4; official HRNet-Facial-Landmark-Detection code, ``lib/datasets`` and
``lib/utils/transforms.py`` ``MATCHED_PARTS``):

- WFLW: 98 points, normaliser ``||g60 - g72||`` (outer eye corners), sigma 1.5;
- AFLW: 19 points, normaliser = face box size (the list's ``box_size`` column), sigma 1.5;
- COFW: 29 points, normaliser ``||g8 - g9||`` (outer eye corners), sigma 1.5;
- 300W: 68 points (iBUG / Multi-PIE markup), normaliser ``||g36 - g45||`` (outer eye corners), sigma 1.0.

Indices are 0-based. "Left" in the names below means the image-left side of a frontal face (the subject's right).

Annotation formats read here (every coordinate in original-image pixels):

- official HRNet face lists (CSV, one face per row, optional header row): ``image_name, scale, center_w, center_h,
  x0, y0, x1, y1, ...``; AFLW lists have ``box_size`` after ``scale``. ``scale`` is the face size / 200 px; the crop
  is ``scale * 200 * 1.25`` px wide. COFW's official release is a ``.mat`` (:func:`read_cofw_mat`); a CSV in the
  300W column order is accepted too;
- the COCO-style json of MMPose (``../shared/data/samples/<dataset>``): ``images`` + ``annotations`` with
  ``keypoints`` ``[x, y, v] * K``, ``bbox``; ``center`` / ``scale`` (HRNet's) when present, else derived from the
  box (center = box centre, scale = max side / 200); AFLW also ``box_size``.

The "official geometry" section holds the official face code's crop, flip, heatmap target and decoding
(``official_*``, :func:`bytescale`, :func:`pil_imresize`, :func:`pil_imrotate`), used by the ``face_alignment`` task
with ``data.geometry: official`` (its default).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import AnnotationError, load_json

__all__ = ["FaceLayout", "FACE_LAYOUTS", "face_layout", "FaceRecord", "read_face_csv", "read_face_coco",
           "read_cofw_mat", "normalising_distance", "SUBSET_FILES", "official_crop_matrix", "official_transform_pixels",
           "bytescale", "pil_imresize", "pil_imrotate", "official_face_crop", "official_flip", "official_gaussian",
           "official_face_targets", "official_decode"]

PIXEL_STD = 200.0


@dataclass(frozen=True)
class FaceLayout:
    """The landmark layout of one face dataset.

    Attributes:
        name: dataset name (``wflw``, ``aflw``, ``cofw``, ``300w``).
        num_landmarks: K.
        flip_pairs: ``(a, b)`` index pairs swapped by a horizontal flip (official ``MATCHED_PARTS``).
        norm_pair: the two points whose distance normalises the NME; ``None``: the face box size (AFLW).
        sigma: Gaussian std of the heatmap targets in heatmap cells at 64x64 (FACTS.md section 4).
        points: named points used by tests and drawings (``left_eye_outer``, ``right_mouth_corner``, ``nose_tip``,
            ...); "left" = image-left on a frontal face.
    """

    name: str
    num_landmarks: int
    flip_pairs: tuple[tuple[int, int], ...]
    norm_pair: tuple[int, int] | None
    sigma: float
    points: Mapping[str, int] = field(default_factory=dict)


def _mirror_range(first: int, last: int) -> list[tuple[int, int]]:
    """Pairs ``(first + i, last - i)`` of a left-to-right contour ``first .. last`` (middle point unpaired)."""
    return [(first + i, last - i) for i in range((last - first + 1) // 2)]


_300W_PAIRS = tuple(
    _mirror_range(0, 16)                                        # jaw 0..16, chin 8
    + _mirror_range(17, 26)                                     # eyebrows 17-21 | 22-26
    + [(31, 35), (32, 34)]                                      # nostrils (nose bridge 27-30 and 33 central)
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes 36-41 | 42-47
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]        # outer lip 48-59 (51, 57 central)
    + [(60, 64), (61, 63), (65, 67)]                            # inner lip 60-67 (62, 66 central)
)

_WFLW_PAIRS = tuple(
    _mirror_range(0, 32)                                        # contour 0..32, chin 16
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]  # eyebrows
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]  # eyes 60-67 | 68-75
    + [(55, 59), (56, 58)]                                      # nose bottom (51-54 bridge, 57 central)
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84)]        # outer lip 76-87 (79, 85 central)
    + [(88, 92), (89, 91), (95, 93)]                            # inner lip 88-95 (90, 94 central)
    + [(96, 97)]                                                # pupils
)

_AFLW_PAIRS = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17))

_COFW_PAIRS = ((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17), (13, 15), (18, 19), (22, 23))

FACE_LAYOUTS: Mapping[str, FaceLayout] = {
    "wflw": FaceLayout("wflw", 98, _WFLW_PAIRS, (60, 72), 1.5,
                       {"left_eye_outer": 60, "right_eye_outer": 72, "left_eye_inner": 64, "right_eye_inner": 68,
                        "left_mouth_corner": 76, "right_mouth_corner": 82, "left_pupil": 96, "right_pupil": 97,
                        "nose_tip": 54, "chin": 16}),
    "aflw": FaceLayout("aflw", 19, _AFLW_PAIRS, None, 1.5,
                       {"left_eye_outer": 6, "right_eye_outer": 11, "left_eye_inner": 8, "right_eye_inner": 9,
                        "left_mouth_corner": 15, "right_mouth_corner": 17, "nose_tip": 13, "chin": 18}),
    "cofw": FaceLayout("cofw", 29, _COFW_PAIRS, (8, 9), 1.5,
                       {"left_eye_outer": 8, "right_eye_outer": 9, "left_eye_inner": 10, "right_eye_inner": 11,
                        "left_mouth_corner": 22, "right_mouth_corner": 23, "left_pupil": 16, "right_pupil": 17,
                        "chin": 28}),
    "300w": FaceLayout("300w", 68, _300W_PAIRS, (36, 45), 1.0,
                       {"left_eye_outer": 36, "right_eye_outer": 45, "left_eye_inner": 39, "right_eye_inner": 42,
                        "left_mouth_corner": 48, "right_mouth_corner": 54, "nose_tip": 30, "chin": 8}),
}

#: subset lists of the official HRNet face data, looked up next to a split's list file: ``{dataset: {split list
#: stem: {subset name: list file}}}``; a face of the split that appears in a subset list is tagged with the subset
#: (metric ``NME/<subset>``). 300W "full" is common + challenging; WFLW test has six attribute subsets.
SUBSET_FILES: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "300w": {"face_landmarks_300w_valid": {"common": "face_landmarks_300w_valid_common.csv",
                                           "challenging": "face_landmarks_300w_valid_challenge.csv"}},
    "wflw": {"face_landmarks_wflw_test": {
        "pose": "face_landmarks_wflw_test_largepose.csv", "expression": "face_landmarks_wflw_test_expression.csv",
        "illumination": "face_landmarks_wflw_test_illumination.csv", "makeup": "face_landmarks_wflw_test_makeup.csv",
        "occlusion": "face_landmarks_wflw_test_occlusion.csv", "blur": "face_landmarks_wflw_test_blur.csv"}},
    "aflw": {"face_landmarks_aflw_test": {"frontal": "face_landmarks_aflw_test_frontal.csv"}},
}


def face_layout(dataset: str) -> FaceLayout:
    """The :class:`FaceLayout` of ``dataset``.

    Raises:
        KeyError: unknown dataset (the message lists the known ones).
    """
    if dataset not in FACE_LAYOUTS:
        raise KeyError(f"no face landmark layout for dataset {dataset!r}; known: {', '.join(FACE_LAYOUTS)}")
    return FACE_LAYOUTS[dataset]


@dataclass
class FaceRecord:
    """One annotated face.

    Attributes:
        file_name: image path relative to the image folder.
        center: ``[2]`` px, the face centre. scale: face size / 200 px (the crop is ``scale * 200 * 1.25`` px).
        landmarks: float64 ``[K, 2]`` px.
        box_size: AFLW's normalising box size in px (0 when the annotation has none).
        ann_id: annotation id (row number for lists).
        image_id: image id (json) or -1 (assigned per file name by the caller).
        subsets: subset tags (``"challenging"``, ``"pose"``, ...).
    """

    file_name: str
    center: np.ndarray
    scale: float
    landmarks: np.ndarray
    box_size: float = 0.0
    ann_id: int = -1
    image_id: int = -1
    subsets: tuple[str, ...] = ()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def refuse_non_finite(where: str, names: Sequence[str], values: Sequence[float]) -> None:
    """Refuse an annotation whose numbers are not all finite (``nan`` / ``inf`` would become a NaN heatmap target).

    Args:
        where: the file (and line or annotation) to name. names: one name per value (``center_w``, ``x3``, ...).
        values: the parsed numbers.

    Raises:
        AnnotationError: one line naming ``where``, the first non-finite value's name and its text.
    """
    for name, v in zip(names, values):
        if not math.isfinite(float(v)):
            raise AnnotationError(f"{where}: {name} is {float(v)!r}, not a finite number")


def _value_names(dataset: str, num_landmarks: int) -> list[str]:
    """Names of the numeric columns of an official face list row (after the image name)."""
    head = ["scale"] + (["box_size"] if dataset == "aflw" else []) + ["center_w", "center_h"]
    return head + [f"{axis}{i}" for i in range(num_landmarks) for axis in ("x", "y")]


def read_face_csv(path: str | Path, dataset: str) -> list[FaceRecord]:
    """An official HRNet face list (module docstring) -> records, in file order.

    Args:
        path: the CSV file.
        dataset: layout name; AFLW lists carry ``box_size`` as their third column.

    Raises:
        AnnotationError: unreadable file, or a row with another number of values than the layout needs (names
            file and line).
    """
    layout = face_layout(dataset)
    first = 5 if dataset == "aflw" else 4
    need = first + 2 * layout.num_landmarks
    out: list[FaceRecord] = []
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from None
    for n, row in enumerate(lines, 1):
        if not row or (n == 1 and not _is_number(row[1] if len(row) > 1 else "")):
            continue  # blank line or header
        if len(row) < need:
            raise AnnotationError(f"{path}:{n}: {len(row)} values, a {dataset} row needs {need} (image, scale, "
                                  f"{'box_size, ' if dataset == 'aflw' else ''}center_w, center_h, "
                                  f"{layout.num_landmarks} x/y pairs)")
        try:
            vals = [float(v) for v in row[1:need]]
        except ValueError as exc:
            raise AnnotationError(f"{path}:{n}: non-numeric value ({exc})") from None
        refuse_non_finite(f"{path}:{n}", _value_names(dataset, layout.num_landmarks), vals)
        scale = vals[0]
        box = vals[1] if dataset == "aflw" else 0.0
        cw, ch = vals[first - 3], vals[first - 2]
        pts = np.asarray(vals[first - 1:], dtype=np.float64).reshape(layout.num_landmarks, 2)
        out.append(FaceRecord(file_name=row[0].strip(), center=np.array([cw, ch]), scale=scale, landmarks=pts,
                              box_size=box, ann_id=len(out)))
    return out


def read_face_coco(path: str | Path, dataset: str) -> tuple[list[FaceRecord], list[dict[str, Any]]]:
    """A COCO-style face json (module docstring) -> ``(records, images)``; ``images`` is the json's image table.

    Raises:
        AnnotationError: unreadable json, a face with another number of points than the layout, or an annotation
            of an image the json does not list (names the file and the annotation id).
    """
    layout = face_layout(dataset)
    data = load_json(path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise AnnotationError(f"{path}: expected a COCO-style json with 'images' and 'annotations'")
    images = {int(i["id"]): i for i in data["images"]}
    out: list[FaceRecord] = []
    for a in data["annotations"]:
        kp = np.asarray(a.get("keypoints", []), dtype=np.float64)
        if kp.size != 3 * layout.num_landmarks:
            raise AnnotationError(f"{path}: annotation {a.get('id')} has {kp.size // 3} points, {dataset} has "
                                  f"{layout.num_landmarks}")
        if int(a["image_id"]) not in images:
            raise AnnotationError(f"{path}: annotation {a.get('id')} refers to image {a['image_id']}, not listed")
        pts = kp.reshape(-1, 3)[:, :2]
        where = f"{path}: annotation {a.get('id')}"
        refuse_non_finite(where, [f"keypoints[{i}]" for i in range(kp.size)], kp)
        if "center" in a and "scale" in a:
            center, scale = np.asarray(a["center"], dtype=np.float64), float(np.ravel(a["scale"])[0])
            refuse_non_finite(where, ["center_w", "center_h", "scale"], [*np.ravel(center)[:2], scale])
        else:  # COFW json: box only (official COFW: the box of the points, max side / 200)
            x, y, w, h = (float(v) for v in a["bbox"])
            refuse_non_finite(where, ["bbox x", "bbox y", "bbox w", "bbox h"], [x, y, w, h])
            center, scale = np.array([x + w / 2, y + h / 2]), max(w, h) / PIXEL_STD
        out.append(FaceRecord(file_name=str(images[int(a["image_id"])]["file_name"]), center=center, scale=scale,
                              landmarks=pts, box_size=float(a.get("box_size", 0.0)), ann_id=int(a.get("id", len(out))),
                              image_id=int(a["image_id"])))
    return out, list(data["images"])


#: the two COFW releases: (images key, shapes key) of ``COFW_train_color.mat`` and ``COFW_test_color.mat``
COFW_MAT_KEYS = (("IsTr", "phisTr"), ("IsT", "phisT"))


def _load_mat(path: Path) -> tuple[str, list[np.ndarray], np.ndarray]:
    """``(images key, images, shapes [N, 87])`` of a COFW ``.mat``: MATLAB v7.3 (HDF5, h5py; arrays stored
    transposed, the image cell array as object references) or v5 (``scipy.io.loadmat``)."""
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            keys = next(((i, s) for i, s in COFW_MAT_KEYS if i in f and s in f), None)
            if keys is None:
                raise AnnotationError(f"{path}: no COFW arrays (expected IsTr/phisTr or IsT/phisT; found "
                                      f"{sorted(f.keys())[:8]})")
            refs = np.asarray(f[keys[0]]).reshape(-1)
            images = [np.asarray(f[r]).T for r in refs]
            shapes = np.asarray(f[keys[1]], dtype=np.float64).T
        return keys[0], images, shapes
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for a bad file
        raise AnnotationError(f"{path}: not a MATLAB file ({type(exc).__name__}: {exc})") from None
    keys = next(((i, s) for i, s in COFW_MAT_KEYS if i in mat and s in mat), None)
    if keys is None:
        raise AnnotationError(f"{path}: no COFW arrays (expected IsTr/phisTr or IsT/phisT; found "
                              f"{sorted(k for k in mat if not k.startswith('__'))[:8]})")
    images = [np.asarray(c) for c in np.asarray(mat[keys[0]], dtype=object).reshape(-1)]
    return keys[0], images, np.asarray(mat[keys[1]], dtype=np.float64)


def read_cofw_mat(path: str | Path, image_dir: str | Path) -> list[FaceRecord]:
    """The official COFW release (``COFW_train_color.mat`` / ``COFW_test_color.mat``: images ``IsTr`` / ``IsT``,
    shapes ``phisTr`` / ``phisT`` ``[N, 87]`` = 29 x, 29 y, 29 occlusion flags) -> records, in file order.

    The images are written once as PNG to ``image_dir/<index:04d>.png`` (grey images as three equal channels; an
    existing file of the same content is kept), so that the split is prepared like any image folder. Centre and
    scale follow the official COFW loader (HRNet-Facial-Landmark-Detection ``lib/datasets/cofw.py``): the box of the
    29 points with floor / ceil of its extremes, centre = its middle, scale = its longer side / 200 px (the 1.25
    crop padding is applied on top, as for every face set).

    Raises:
        AnnotationError: unreadable file, missing arrays, or shapes without 58 coordinates (names the file).
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"{p}: not found")
    key, images, shapes = _load_mat(p)
    k = face_layout("cofw").num_landmarks
    if shapes.ndim != 2 or shapes.shape[1] < 2 * k or shapes.shape[0] != len(images):
        raise AnnotationError(f"{p}: {key} has {len(images)} images but the shapes are {list(shapes.shape)} (expected "
                              f"[{len(images)}, 87]: 29 x, 29 y, 29 occlusion flags)")
    out_dir = Path(image_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out: list[FaceRecord] = []
    for i, (img, phi) in enumerate(zip(images, shapes)):
        img = np.asarray(img, dtype=np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3:
            raise AnnotationError(f"{p}: image {i} of {key} has shape {list(img.shape)} (expected H x W or H x W x 3)")
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
        name = f"{i + 1:04d}.png"
        target = out_dir / name
        if not (target.is_file() and target.read_bytes() == buf.tobytes()):
            target.write_bytes(buf.tobytes())
        pts = np.stack([phi[:k], phi[k:2 * k]], axis=1)
        refuse_non_finite(f"{p}: shape {i} of {key}", [f"{axis}{j}" for axis in ("x", "y") for j in range(k)],
                          phi[:2 * k])
        x0, x1 = math.floor(pts[:, 0].min()), math.ceil(pts[:, 0].max())
        y0, y1 = math.floor(pts[:, 1].min()), math.ceil(pts[:, 1].max())
        out.append(FaceRecord(file_name=name, center=np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]),
                              scale=max(x1 - x0, y1 - y0) / PIXEL_STD, landmarks=pts, ann_id=i))
    return out


def tag_subsets(records: Sequence[FaceRecord], list_file: str | Path, dataset: str) -> list[str]:
    """Tag ``records`` (read from the official ``list_file``) with the subsets whose lists lie next to it
    (:data:`SUBSET_FILES`); a face belongs to a subset when its image name and centre appear in that list.

    Returns:
        The subset names whose list file was found (empty when none).
    """
    subsets = SUBSET_FILES.get(dataset, {}).get(Path(list_file).stem, {})
    found = []
    for name, fname in subsets.items():
        p = Path(list_file).with_name(fname)
        if not p.is_file():
            continue
        found.append(name)
        keys = {(r.file_name, round(float(r.center[0]), 2), round(float(r.center[1]), 2))
                for r in read_face_csv(p, dataset)}
        for r in records:
            if (r.file_name, round(float(r.center[0]), 2), round(float(r.center[1]), 2)) in keys:
                r.subsets = r.subsets + (name,)
    return found


def normalising_distance(dataset: str, landmarks: np.ndarray, box_size: float | None = None) -> float:
    """The NME normaliser of one face (FACTS.md section 4), in px.

    Args:
        dataset: layout name.
        landmarks: ground truth ``[K, 2]`` px.
        box_size: AFLW's face box size (px); required for AFLW.

    Raises:
        ValueError: AFLW without a positive ``box_size``, or a zero distance.
    """
    layout = face_layout(dataset)
    if layout.norm_pair is None:
        if not box_size or box_size <= 0 or math.isnan(box_size):
            raise ValueError(f"{dataset}: the NME normaliser is the face box size, none given")
        return float(box_size)
    a, b = layout.norm_pair
    d = float(np.linalg.norm(np.asarray(landmarks, dtype=np.float64)[a] - np.asarray(landmarks, dtype=np.float64)[b]))
    if d <= 0:
        raise ValueError(f"{dataset}: points {a} and {b} coincide (zero normaliser)")
    return d


# ------------------------------------------------------------------------------------------------ official geometry
#
# The face crop, flip, heatmap target and decoding of HRNet-Facial-Landmark-Detection (lib/utils/transforms.py,
# lib/datasets/{face300w,wflw,aflw,cofw}.py, lib/core/evaluation.py), which the released checkpoints were trained and
# tested with. Its conventions: pixel coordinates are 1-based inside ``transform_pixel`` (subtract 1, map, truncate to
# an integer, add 1); the crop is an integer box copied from the image, rotated and resized with ``scipy.misc``'s
# ``imrotate`` / ``imresize`` (PIL bilinear after ``bytescale``, which stretches a float image's min..max to 0..255);
# a flip mirrors to ``width - x``. ``size`` below is the side of the square output (crop px or heatmap cells).


def official_crop_matrix(center: Sequence[float], scale: float, size: int, rotation: float = 0.0) -> np.ndarray:
    """The official ``get_transform`` (lib/utils/transforms.py): 3x3 float64 matrix, image px -> output px.

    ``x' = size / (200 scale) * (x - c_x) + size / 2`` (same in y), then, for ``rotation`` (degrees) != 0, a rotation
    by ``-rotation`` about the output centre (``[[cos, -sin], [sin, cos]]`` of ``-rotation``: the content turns
    counter-clockwise on screen for ``rotation > 0``, as PIL's ``Image.rotate``). Products are taken in the official
    order with ``np.dot`` so that truncated results agree.

    Args:
        center: ``[2]`` image px (the official code holds it as float32). scale: crop side / 200 px.
        size: output side (px or cells). rotation: degrees.
    """
    h = 200.0 * float(scale)
    m = np.zeros((3, 3))
    m[0, 0] = float(size) / h
    m[1, 1] = float(size) / h
    m[0, 2] = size * (-float(center[0]) / h + 0.5)
    m[1, 2] = size * (-float(center[1]) / h + 0.5)
    m[2, 2] = 1.0
    if rotation == 0:
        return m
    rad = -float(rotation) * np.pi / 180
    sn, cs = np.sin(rad), np.cos(rad)
    rot = np.array([[cs, -sn, 0.0], [sn, cs, 0.0], [0.0, 0.0, 1.0]])
    to_origin, back = np.eye(3), np.eye(3)
    to_origin[:2, 2] = -size / 2
    back[:2, 2] = size / 2
    return np.dot(back, np.dot(rot, np.dot(to_origin, m)))


def official_transform_pixels(points, center: Sequence[float], scale: float, size: int, invert: bool = False,
                              rotation: float = 0.0) -> np.ndarray:
    """The official ``transform_pixel``: 1-based points -> 1-based integer points of the other frame.

    Each point ``p`` becomes ``trunc(M (p - 1)) + 1`` with ``M`` = :func:`official_crop_matrix` (its ``np.linalg.inv``
    with ``invert``): image px -> output px, or output px -> image px. Truncation is toward zero (``astype(int)``).

    Args:
        points: ``[..., 2]`` 1-based px (image or output). center, scale, size, rotation: the crop.

    Returns:
        int64 ``[..., 2]`` 1-based px.
    """
    m = official_crop_matrix(center, scale, size, rotation)
    if invert:
        m = np.linalg.inv(m)
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    out = np.empty(flat.shape, dtype=np.int64)
    for i, (x, y) in enumerate(flat):  # one matrix-vector product per point, as officially (same rounding)
        out[i] = np.dot(m, np.array([x - 1.0, y - 1.0, 1.0]))[:2].astype(np.int64) + 1
    return out.reshape(pts.shape)


def bytescale(image: np.ndarray) -> np.ndarray:
    """``scipy.misc.bytescale`` (scipy < 1.2) with its defaults: uint8 input is returned as is; otherwise
    ``(x - min) * 255 / (max - min)`` (range 1 when flat), clipped to [0, 255], ``+ 0.5`` and truncated to uint8,
    in float32 as scipy computed it on the official float32 images.

    Args:
        image: ``[H, W(, C)]`` any real dtype.

    Returns:
        uint8, same shape.
    """
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    x = np.asarray(image, dtype=np.float32)
    lo, hi = x.min(), x.max()
    span = hi - lo
    factor = np.float32(255.0 / float(span if span != 0 else 1.0))
    return (((x - lo) * factor).clip(0, 255) + np.float32(0.5)).astype(np.uint8)


def pil_imresize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``scipy.misc.imresize(image, (height, width))`` with its default ``interp='bilinear'``: :func:`bytescale`,
    then PIL ``Image.resize`` with ``Image.BILINEAR``.

    Args:
        image: ``[H, W, 3]`` (float or uint8).

    Returns:
        uint8 ``[height, width, 3]``.
    """
    from PIL import Image

    return np.array(Image.fromarray(bytescale(image)).resize((int(width), int(height)), Image.BILINEAR))


def pil_imrotate(image: np.ndarray, angle: float) -> np.ndarray:
    """``scipy.misc.imrotate(image, angle)`` with its default ``interp='bilinear'``: :func:`bytescale`, then PIL
    ``Image.rotate(angle, resample=Image.BILINEAR)`` (counter-clockwise in degrees about the image centre, same size,
    black outside).

    Returns:
        uint8 ``[H, W, 3]``.
    """
    from PIL import Image

    return np.array(Image.fromarray(bytescale(image)).rotate(float(angle), resample=Image.BILINEAR))


def official_face_crop(image: np.ndarray, center: Sequence[float], scale: float, size: int,
                       rotation: float = 0.0, float_source: bool | None = None) -> np.ndarray:
    """The official face ``crop`` (lib/utils/transforms.py): the network input of one face.

    1. When the crop is at least twice the output (``sf = 200 scale / size >= 2``), the whole image is first resized to
       ``floor(H / sf) x floor(W / sf)`` (:func:`pil_imresize`: a float image is byte-scaled), centre and scale
       divided by ``sf`` (the centre in float32); an image shrunk below 2 px gives a black crop;
    2. the integer box ``ul = transform_pixel((0, 0))``, ``br = transform_pixel((size, size))`` (inverse,
       :func:`official_transform_pixels`), grown by ``pad = int(|br - ul| / 2 - (br_y - ul_y) / 2)`` on every side when
       rotating, is copied into a zero float32 canvas (parts outside the image stay 0);
    3. with ``rotation`` the canvas is rotated (:func:`pil_imrotate`, byte-scaled) and the padding removed;
    4. the result is resized to ``size x size`` (:func:`pil_imresize`; a float canvas, i.e. unrotated, is byte-scaled:
       its min..max stretched to 0..255).

    Args:
        image: ``[H, W, 3]``: float32 for the official PIL-loaded sets (300W, WFLW, AFLW), uint8 for COFW (its
            ``.mat`` images), which is not byte-scaled in step 1.
        center: ``[2]`` image px. scale: crop side / 200 px (padding included). size: output side px.
        rotation: degrees (counter-clockwise on screen).
        float_source: treat ``image`` as the official float32 image in step 1 (default: ``image.dtype != uint8``);
            ``True`` with a uint8 image gives the float32 result without converting the whole image (the canvas of
            step 2 is float32 either way).

    Returns:
        uint8 ``[size, size, 3]``.

    Raises:
        ValueError: ``image`` is not ``[H, W, 3]``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image [H, W, 3], got shape {image.shape}")
    c = np.asarray(center, dtype=np.float32).copy()
    s = float(scale)
    ht, wd = image.shape[:2]
    sf = s * 200.0 / size
    if float_source is None:
        float_source = image.dtype != np.uint8
    if sf >= 2:
        if math.floor(max(ht, wd) / sf) < 2:
            return np.zeros((size, size, 3), dtype=np.uint8)
        src = image.astype(np.float32) if float_source else image
        image = pil_imresize(src, math.floor(wd / sf), math.floor(ht / sf))
        c = c / np.float32(sf)
        s = s / sf
    ul = official_transform_pixels([0.0, 0.0], c, s, size, invert=True)
    br = official_transform_pixels([float(size), float(size)], c, s, size, invert=True)
    pad = int(np.linalg.norm(br - ul) / 2 - float(br[1] - ul[1]) / 2)
    if rotation != 0:
        ul, br = ul - pad, br + pad
    canvas = np.zeros((br[1] - ul[1], br[0] - ul[0], 3), dtype=np.float32)
    h, w = image.shape[:2]
    x0, x1 = max(0, ul[0]), min(w, br[0])
    y0, y1 = max(0, ul[1]), min(h, br[1])
    if x1 > x0 and y1 > y0:
        canvas[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]] = image[y0:y1, x0:x1]
    if rotation != 0:
        rotated = pil_imrotate(canvas, rotation)
        canvas = rotated[pad:rotated.shape[0] - pad, pad:rotated.shape[1] - pad]
    return pil_imresize(canvas, size, size)


def official_flip(points: np.ndarray, center: Sequence[float], width: int,
                  flip_pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The official face flip (``fliplr_joints`` and the datasets' ``center[0] = width - center[0]``): points and centre
    mirror to ``width - x`` (not ``width - 1 - x``), the pairs swap; the image itself is ``image[:, ::-1]``.

    Args:
        points: ``[K, 2]`` image px. center: ``[2]`` px (float32 as officially). width: image width px.

    Returns:
        ``(points [K, 2] float64, center [2] float32)``.
    """
    from .keypoints import flip_permutation

    p = np.array(points, dtype=np.float64, copy=True)
    p[:, 0] = width - p[:, 0]
    c = np.asarray(center, dtype=np.float32).copy()
    c[0] = np.float32(width) - c[0]
    return p[flip_permutation(len(p), flip_pairs)], c


def official_gaussian(heatmap: np.ndarray, point: Sequence[float], sigma: float) -> bool:
    """The official ``generate_target`` (Gaussian): writes into ``heatmap`` ``[h, w]`` (in place) the
    ``(2 * 3 sigma + 1)``-wide float32 patch ``exp(-((x - x0)^2 + (y - y0)^2) / (2 sigma^2))``, ``x0 = y0 =
    size // 2``, placed at ``ul = int(point - 3 sigma)`` (truncation toward zero, so for a non-integer ``3 sigma`` the
    peak sits at ``ul + size // 2``, which near the top/left border is not ``point``), cut to the map.

    Args:
        heatmap: float ``[h, w]``. point: ``(x, y)`` heatmap cells (the official integer cell). sigma: cells.

    Returns:
        False (map untouched) when the patch lies entirely off the map, else True.
    """
    radius = sigma * 3
    ul = [int(point[0] - radius), int(point[1] - radius)]
    br = [int(point[0] + radius + 1), int(point[1] + radius + 1)]
    h, w = heatmap.shape
    if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
        return False
    size = 2 * radius + 1
    g1 = np.arange(0, size, 1, np.float32)
    mid = size // 2
    patch = np.exp(-((g1[None, :] - mid) ** 2 + (g1[:, None] - mid) ** 2) / np.float32(2 * sigma ** 2))
    gx0, gx1 = max(0, -ul[0]), min(br[0], w) - ul[0]
    gy0, gy1 = max(0, -ul[1]), min(br[1], h) - ul[1]
    heatmap[max(0, ul[1]):min(br[1], h), max(0, ul[0]):min(br[0], w)] = patch[gy0:gy1, gx0:gx1]
    return True


def official_face_targets(points: np.ndarray, center: Sequence[float], scale: float, rotation: float,
                          heatmap_size: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap targets of one face as the official datasets build them (face300w.py / wflw.py / aflw.py / cofw.py).

    A landmark with image ``y <= 0`` is skipped (zero map); otherwise its cell is ``transform_pixel(p + 1) - 1`` =
    ``trunc(M p)`` (:func:`official_transform_pixels` at heatmap scale with the sample's rotation, i.e. the FLOOR of
    the heatmap coordinate for points on the map) and :func:`official_gaussian` draws it.

    Args:
        points: ``[K, 2]`` image px (after the flip). center: ``[2]`` px. scale: crop side / 200 px (augmented).
        rotation: degrees. heatmap_size: side in cells. sigma: Gaussian std in cells.

    Returns:
        ``target`` float32 ``[K, size, size]``, ``weight`` float32 ``[K, 1]`` (1 where a Gaussian was drawn),
        ``cells`` float64 ``[K, 2]`` (the Gaussian cells, 0-based; NaN where skipped).
    """
    pts = np.asarray(points, dtype=np.float64)
    k = len(pts)
    target = np.zeros((k, heatmap_size, heatmap_size), dtype=np.float32)
    weight = np.zeros((k, 1), dtype=np.float32)
    cells = np.full((k, 2), np.nan)
    keep = pts[:, 1] > 0
    if keep.any():
        cells[keep] = official_transform_pixels(pts[keep] + 1, center, scale, heatmap_size, rotation=rotation) - 1
    for i in np.flatnonzero(keep):
        weight[i, 0] = float(official_gaussian(target[i], cells[i], sigma))
    return target, weight, cells


def official_decode(heatmaps, centers, scales) -> tuple[np.ndarray, np.ndarray]:
    """The official ``decode_preds`` (lib/core/evaluation.py): heatmaps -> integer landmarks in image px.

    Per map: the argmax as 1-based ``(px, py)`` (0 when the maximum is <= 0); a quarter-cell step toward the higher
    neighbour per axis when ``1 < px < w`` and ``1 < py < h`` (1-based: every cell but the outer ring, so also 0-based
    row / column 1 and w - 2); ``+ 0.5``; then ``transform_preds``: :func:`official_transform_pixels` inverse at
    heatmap scale (subtract 1, map back, truncate, add 1). The official code passes ``res = [64, 64]``; here ``w, h``
    are the maps' own size.

    Args:
        heatmaps: ``[N, K, h, w]`` numpy array or tensor (square maps). centers: ``[N, 2]`` image px.
        scales: ``[N]`` crop side / 200 px.

    Returns:
        ``coords`` float32 ``[N, K, 2]`` image px (integers), ``maxvals`` float32 ``[N, K, 1]``.

    Raises:
        ValueError: ``heatmaps`` is not 4-D with square maps.
    """
    try:
        import torch

        if isinstance(heatmaps, torch.Tensor):
            heatmaps = heatmaps.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4 or hm.shape[2] != hm.shape[3]:
        raise ValueError(f"heatmaps must be [N, K, h, w] with h == w, got shape {hm.shape}")
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)
    positive = maxvals[..., 0] > 0
    px = np.where(positive, idx % w + 1, 0)
    py = np.where(positive, idx // w + 1, 0)
    inner = (px > 1) & (px < w) & (py > 1) & (py < h)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    xs, ys = np.clip(px - 1, 1, w - 2), np.clip(py - 1, 1, h - 2)  # 0-based, clipped for the masked-out maps
    dx = hm[ni, ki, ys, xs + 1] - hm[ni, ki, ys, xs - 1]
    dy = hm[ni, ki, ys + 1, xs] - hm[ni, ki, ys - 1, xs]
    coords = np.stack([px, py], axis=-1).astype(np.float32)
    coords += np.stack([np.sign(dx), np.sign(dy)], axis=-1).astype(np.float32) * np.float32(0.25) * inner[..., None]
    coords += np.float32(0.5)
    ctr = np.asarray(centers, dtype=np.float32).reshape(n, 2)
    scl = np.asarray(scales, dtype=np.float64).reshape(n)
    out = np.stack([official_transform_pixels(coords[i], ctr[i], scl[i], w, invert=True) for i in range(n)]) \
        if n else np.zeros((0, k, 2))
    return out.astype(np.float32), maxvals.astype(np.float32)
