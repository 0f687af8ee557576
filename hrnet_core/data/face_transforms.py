"""Face sample transforms of the ``face_alignment`` task: the official face augmentation draw, the two crop / target
geometries (``data.geometry``: :class:`OfficialFaceTransform`, the official HRNet-Facial-Landmark-Detection datasets'
``__getitem__``; :class:`FaceTransform`, the top-down pose conventions) and the picklable per-sample function
:class:`FaceSample` (a ``samples.parquet`` row -> ``image``, ``target``, ``target_weight``).

Moved from ``hrnet_core/tasks/face_alignment.py`` unchanged (issue 25).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .faces import face_layout, official_face_crop, official_face_targets, official_flip
from .io import read_image
from .transforms import TopDownTransform

__all__ = ["GEOMETRIES", "draw_augmentation", "FaceTransform", "OfficialFaceTransform", "face_record",
           "build_face_transform", "FaceSample"]

#: values of ``data.geometry``
GEOMETRIES = ("official", "continuous")


def draw_augmentation(rng: np.random.Generator, scale_factor: float, rotation_factor: float, rotation_prob: float,
                      flip: bool) -> tuple[float, float, bool]:
    """The official face augmentation draw (``lib/datasets/face300w.py`` ``__getitem__``): scale multiplier
    ``U(1 - sf, 1 + sf)``, rotation ``U(-rf, rf)`` degrees with probability ``rotation_prob`` (else 0), flip with
    probability 0.5 (when ``flip``). Always four uniforms from ``rng``, so the draw count is fixed per sample.

    Returns:
        ``(scale multiplier, rotation degrees, flipped)``.
    """
    u_scale, u_rot_gate, u_rot, u_flip = rng.random(4)
    mult = 1.0 - scale_factor + 2.0 * scale_factor * float(u_scale)
    rotation = (2.0 * float(u_rot) - 1.0) * rotation_factor if u_rot_gate <= rotation_prob else 0.0
    return mult, rotation, bool(flip and u_flip <= 0.5)


class FaceTransform(TopDownTransform):
    """``data.geometry: continuous``: :class:`~hrnet_core.data.transforms.TopDownTransform` with the face augmentation
    draws (:func:`draw_augmentation`); no half body. Crop (``cv2.warpAffine``), flip (``x' = W - x - 1``, pairs
    swapped), heatmap encoding (rounded cell) and normalisation are the top-down ones.

    Records: ``center`` [2] px, ``scale`` [2] (x 200 px, padding included), ``joints`` [K, 3] px (visibility 1).
    """

    def sample_params(self, record: dict, image_width: int, rng: np.random.Generator):
        center = np.asarray(record["center"], dtype=np.float64).copy()
        scale = np.asarray(record["scale"], dtype=np.float64).copy()
        if not self.train:
            return center, scale, 0.0, False
        mult, rotation, flipped = draw_augmentation(rng, self.scale_factor, self.rotation_factor, self.rotation_prob,
                                                    self.flip)
        return center, scale * mult, rotation, flipped


_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class OfficialFaceTransform:
    """``data.geometry: official``: one face as the official face datasets build it (``lib/datasets/face300w.py``,
    ``wflw.py``, ``aflw.py``, ``cofw.py`` ``__getitem__``; the pieces in :mod:`hrnet_core.data.faces`).

    Train: :func:`draw_augmentation`; a flip mirrors image, points and centre to ``W - x``
    (:func:`~hrnet_core.data.faces.official_flip`). Crop :func:`~hrnet_core.data.faces.official_face_crop` (the image
    as float32, as PIL-loaded officially, except COFW whose ``.mat`` images are uint8: ``float_source``), targets
    :func:`~hrnet_core.data.faces.official_face_targets`, normalisation ``(x / 255 - mean) / std`` in float32.

    Args:
        input_size: crop side px (256). heatmap_size: side in cells (64). sigma: cells. flip_pairs: dataset pairs.
        train: draw the augmentation. float_source: byte-scale the image when it is pre-shrunk (not COFW).

    ``__call__(record, image, rng)``: a :func:`face_record` and its RGB uint8 image ``[H, W, 3]`` -> ``image`` float32
    ``[3, S, S]``, ``target`` float32 ``[K, s, s]``, ``target_weight`` float32 ``[K, 1]``, ``joints`` float32 ``[K, 3]``
    (Gaussian cell x, y, drawn 0/1), ``center`` float32 ``[2]`` and ``scale`` float64 (after augmentation; the centre
    mirrored when flipped), ``rotation``, ``flipped``.

    Raises (on call):
        ValueError: not an RGB uint8 image, or ``train`` without ``rng``.
    """

    input_size: int
    heatmap_size: int
    sigma: float
    flip_pairs: tuple[tuple[int, int], ...]
    train: bool
    float_source: bool = True
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    flip: bool = True

    def __call__(self, record: Mapping[str, Any], image: np.ndarray,
                 rng: np.random.Generator | None = None) -> dict[str, Any]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        if self.train and rng is None:
            raise ValueError("OfficialFaceTransform(train=True) needs a numpy.random.Generator")
        center = np.asarray(record["center"], dtype=np.float32)
        scale = float(np.ravel(record["scale"])[0])
        points = np.asarray(record["landmarks"], dtype=np.float64)
        mult, rotation, flipped = (draw_augmentation(rng, self.scale_factor, self.rotation_factor, self.rotation_prob,
                                                     self.flip) if self.train else (1.0, 0.0, False))
        scale = scale * mult
        src = image[:, ::-1] if flipped else image
        if flipped:
            points, center = official_flip(points, center, image.shape[1], self.flip_pairs)
        crop = official_face_crop(src, center, scale, self.input_size, rotation, float_source=self.float_source)
        target, weight, cells = official_face_targets(points, center, scale, rotation, self.heatmap_size, self.sigma)
        normed = (crop.astype(np.float32) / np.float32(255.0) - _MEAN) / _STD
        return {"image": np.ascontiguousarray(normed.transpose(2, 0, 1)), "target": target, "target_weight": weight,
                "joints": np.concatenate([np.nan_to_num(cells, nan=0.0), weight], axis=1).astype(np.float32),
                "center": center, "scale": scale, "rotation": float(rotation), "flipped": flipped}


def face_record(row: Mapping[str, Any], image_root: str | Path, num_landmarks: int, padding: float) -> dict[str, Any]:
    """A ``samples.parquet`` row -> a transform record: absolute ``image_file``, ``center`` [2] px, ``scale`` [2]
    (``row.scale * padding``, square crop), ``joints`` float64 [K, 3] (x, y px, visibility 1), ``landmarks`` [K, 2]."""
    pts = np.asarray(row["landmarks"], dtype=np.float64).reshape(num_landmarks, 2)
    s = float(row["scale"]) * padding
    return {"image_file": str(Path(image_root) / str(row["file_name"])), "image_id": int(row["image_id"]),
            "center": np.asarray(row["center"], dtype=np.float64), "scale": np.array([s, s]),
            "joints": np.concatenate([pts, np.ones((num_landmarks, 1))], axis=1), "landmarks": pts, "score": 1.0}


def build_face_transform(geometry: str, dataset: str, input_size: Sequence[int], heatmap_size: Sequence[int],
                         sigma: float, train: bool, flip: bool = True, scale_factor: float = 0.25,
                         rotation_factor: float = 30.0, rotation_prob: float = 0.6):
    """The sample transform of ``data.geometry`` (:class:`OfficialFaceTransform` or :class:`FaceTransform`) for
    ``dataset`` (its flip pairs; COFW's images are not byte-scaled when pre-shrunk, as its official uint8 ``.mat``
    images). Sizes are ``(W, H)`` px / cells.

    Raises:
        ValueError: unknown ``geometry``.
    """
    pairs = face_layout(dataset).flip_pairs
    if geometry == "official":
        return OfficialFaceTransform(int(input_size[0]), int(heatmap_size[0]), float(sigma), pairs, train,
                                     float_source=dataset != "cofw", scale_factor=scale_factor,
                                     rotation_factor=rotation_factor, rotation_prob=rotation_prob, flip=flip)
    if geometry == "continuous":
        return FaceTransform(input_size, heatmap_size, sigma, pairs, train=train, scale_factor=scale_factor,
                             rotation_factor=rotation_factor, rotation_prob=rotation_prob, flip=flip,
                             half_body_prob=0.0)
    raise ValueError(f"unknown face geometry {geometry!r}; known: {', '.join(GEOMETRIES)}")


@dataclass(frozen=True)
class FaceSample:
    """The per-sample function of a recipe and split (picklable; builds its transform, :func:`build_face_transform`,
    on first use).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image`` float32 ``[3, H, W]``, ``target`` float32
    ``[K, h, w]``, ``target_weight`` float32 ``[K, 1]``.

    Raises (on call):
        hrnet_core.data.io.ImageReadError: the image is missing or corrupt (names the file).
    """

    image_root: str
    dataset: str
    num_landmarks: int
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float
    padding: float
    flip: bool
    scale_factor: float
    rotation_factor: float
    rotation_prob: float
    train: bool = True
    geometry: str = "official"

    @functools.cached_property
    def transform(self):
        return build_face_transform(self.geometry, self.dataset, self.input_size, self.heatmap_size, self.sigma,
                                    self.train, flip=self.flip, scale_factor=self.scale_factor,
                                    rotation_factor=self.rotation_factor, rotation_prob=self.rotation_prob)

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        record = face_record(row, self.image_root, self.num_landmarks, self.padding)
        s = self.transform(record, read_image(record["image_file"]), rng)
        return {"image": s["image"], "target": s["target"].astype(np.float32, copy=False),
                "target_weight": s["target_weight"].astype(np.float32, copy=False)}
