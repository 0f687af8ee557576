"""Top-down geometry and augmentation: person box -> (center, scale), affine crop, flip, half body.

Follows the top-down recipe of the HRNet pose paper (Sun et al., CVPR 2019, Sec. 4.1) as implemented in
leoxiaobin/deep-high-resolution-net.pytorch (facts in ``FACTS.md`` section 1):

- a box is padded to the input aspect ratio (w/h), ``scale = (w, h) / pixel_std`` with ``pixel_std = 200``, then x1.25;
- training samples ``s * clip(N(0,1) * sf + 1, 1 - sf, 1 + sf)``, rotation ``clip(N(0,1) * rf, -2 rf, 2 rf)`` with
  probability 0.6, a horizontal flip with probability 0.5 (``x' = width - x - 1``, left/right joints swapped) and, when
  more than 8 joints are visible, a half-body box (probability 0.3, upper body when ``N(0,1) < 0.5``, x1.5);
- the crop is a 3-point (similarity) affine warp (``cv2.getAffineTransform`` on float32 points) with bilinear
  interpolation; RGB normalised with ImageNet mean/std.

Coordinates are pixels; "image" means the original image, "crop" the network input of size ``input_size = (W, H)``.
Every random draw comes from the ``numpy.random.Generator`` passed in, so a sample is a pure function of its seed.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

from ..codecs.heatmap import HeatmapCodec
from .keypoints import flip_permutation

__all__ = [
    "PIXEL_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "box_to_center_scale",
    "get_affine_transform",
    "similarity_affine",
    "affine_transform_points",
    "fliplr_joints",
    "half_body_box",
    "normalize_image",
    "TopDownTransform",
]

PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_to_center_scale(
    box_xywh: Sequence[float], aspect_ratio: float, pixel_std: float = PIXEL_STD, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Person box -> (center, scale) of the official top-down code.

    Args:
        box_xywh: ``(x, y, w, h)`` in image pixels.
        aspect_ratio: target ``w / h`` (input width / input height, 0.75 for 256x192).
        pixel_std: scale unit in pixels (200).
        padding: enlargement of the box (1.25).

    Returns:
        ``center`` float64 ``[2]`` (pixels), ``scale`` float64 ``[2]`` (units of ``pixel_std``): the box grown in width or
        height to ``aspect_ratio``, times ``padding``.
    """
    x, y, w, h = (float(v) for v in box_xywh[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float64) * padding
    return center, scale


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus ``a - b`` turned by 90 degrees, in float32 (the official ``get_3rd_point``)."""
    d = (a - b).astype(np.float32)
    return (b + np.array([-d[1], d[0]], dtype=np.float32)).astype(np.float32)


def _crop_points(
    center: Sequence[float], scale: Sequence[float], rotation: float, output_size: Sequence[float], pixel_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """The three float32 image points and their three output points of the official top-down crop.

    Point 0 is the centre (-> output centre), point 1 lies half the box width "up" from it, turned by ``rotation``
    degrees (-> half the output width above the output centre), point 2 completes a right angle. ``scale * pixel_std``
    keeps the caller's dtype (a float32 ``scale`` rounds the box width to float32, as officially); the points are
    summed in float64 and stored as float32.
    """
    src_w = (np.atleast_1d(np.asarray(scale)) * pixel_std)[0]
    out_w, out_h = float(output_size[0]), float(output_size[1])
    r = np.pi * float(rotation) / 180.0
    up = src_w * -0.5  # the vector (0, up) turned by r
    turned = np.array([-up * np.sin(r), up * np.cos(r)], dtype=np.float64)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = np.asarray(center, dtype=np.float64)
    src[1] = np.asarray(center, dtype=np.float64) + turned
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0.0, out_w * -0.5], dtype=np.float32)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return src, dst


def get_affine_transform(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[float],
    inverse: bool = False,
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """The 2x3 affine matrix mapping image pixels to output pixels (or back with ``inverse=True``), exactly as
    deep-high-resolution-net.pytorch ``lib/utils/transforms.py`` ``get_affine_transform`` (with ``get_dir`` and
    ``get_3rd_point``; HigherHRNet's test-time resize and ``transform_preds`` use the same function).

    Three float32 point pairs (:func:`_crop_points`) go to ``cv2.getAffineTransform``: the box of width
    ``scale[0] * pixel_std`` centred at ``center`` and rotated by ``rotation`` degrees maps onto the output
    (``output_size = (W, H)``), the centre onto ``(W/2, H/2)``; a similarity ``x' = k R (x - center) + (W/2, H/2)``
    with ``k = W / (scale[0] * pixel_std)`` and ``R = [[cos r, sin r], [-sin r, cos r]]`` up to the float32
    rounding of the points (image content turns counter-clockwise on screen for ``r > 0``). Only ``scale[0]`` sets
    the zoom (boxes already have the output aspect ratio). The inverse solves the same points the other way round.

    Args:
        center: ``(x, y)`` image pixels.
        scale: ``(w, h)`` in units of ``pixel_std`` pixels.
        rotation: degrees.
        output_size: ``(W, H)`` output pixels.

    Returns:
        float64 ``[2, 3]`` usable by ``cv2.warpAffine`` and :func:`affine_transform_points`.
    """
    src, dst = _crop_points(center, scale, rotation, output_size, pixel_std)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def similarity_affine(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[float],
    inverse: bool = False,
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """The same mapping as :func:`get_affine_transform` in closed form, float64 throughout.

    HigherHRNet's training augmentation (``lib/dataset/transforms/transforms.py``,
    ``RandomAffineTransform._get_affine_matrix``) builds its matrix this way (scale and shift, then a rotation about
    the output centre), not from float32 points; the bottom-up training transform uses this function.

    Returns:
        float64 ``[2, 3]``: ``x' = k R (x - center) + (W/2, H/2)``, ``k = W / (scale[0] * pixel_std)``,
        ``R = [[cos r, sin r], [-sin r, cos r]]`` (or its inverse).
    """
    cx, cy = float(center[0]), float(center[1])
    src_w = float(scale[0]) * pixel_std
    out_w, out_h = float(output_size[0]), float(output_size[1])
    r = math.radians(float(rotation))
    cs, sn = math.cos(r), math.sin(r)
    if not inverse:
        k = out_w / src_w
        a, b = k * cs, k * sn
        return np.array(
            [[a, b, out_w * 0.5 - a * cx - b * cy], [-b, a, out_h * 0.5 + b * cx - a * cy]], dtype=np.float64
        )
    k = src_w / out_w
    a, b = k * cs, k * sn
    return np.array(
        [[a, -b, cx - a * out_w * 0.5 + b * out_h * 0.5], [b, a, cy - b * out_w * 0.5 - a * out_h * 0.5]],
        dtype=np.float64,
    )


def affine_transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points ``[..., 2]`` (pixels); returns float64 ``[..., 2]``."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def fliplr_joints(joints: np.ndarray, width: float, flip_pairs) -> np.ndarray:
    """Mirror joints of an image of ``width`` pixels: ``x' = width - x - 1``, left/right joints swapped.

    Args:
        joints: ``[K, 3]`` (x, y, visibility) or ``[K, 2]``, image pixels.
        width: image width in pixels.
        flip_pairs: ``(left, right)`` index pairs.

    Returns:
        A new array like ``joints``; with a visibility column, invisible joints get coordinates 0 (as officially).
    """
    j = np.array(joints, dtype=np.float64, copy=True)
    j[:, 0] = width - j[:, 0] - 1
    j = j[flip_permutation(j.shape[0], flip_pairs)]
    if j.shape[1] > 2:
        j[:, :2] *= (j[:, 2:3] > 0)
    return j


def half_body_box(
    joints: np.ndarray,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
    rng: np.random.Generator,
    pixel_std: float = PIXEL_STD,
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Half-body box of the official code (from Simple Baselines / HRNet).

    Visible joints are split into upper (``upper_body_ids``) and lower body; the upper set is used when
    ``rng.standard_normal() < 0.5`` and it has more than 2 joints, else the lower set if it has more than 2, else the upper.
    The tight box of the chosen joints (centre = their mean) is padded to ``aspect_ratio`` and scaled by ``padding``.

    Returns:
        ``(center [2] px, scale [2] pixel_std units)``, or ``None`` when fewer than 2 joints were chosen.
    """
    vis = joints[:, 2] > 0
    upper_mask = np.zeros(len(joints), dtype=bool)
    upper_mask[list(upper_body_ids)] = True
    upper = joints[vis & upper_mask, :2]
    lower = joints[vis & ~upper_mask, :2]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    center = selected.mean(axis=0)
    w, h = selected.max(axis=0) - selected.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float64) * padding
    return center.astype(np.float64), scale


def normalize_image(
    image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]``, ``(x / 255 - mean) / std`` (torchvision ``ToTensor`` + ``Normalize``)."""
    m = np.asarray(mean, dtype=np.float32) * 255.0
    inv = 1.0 / (np.asarray(std, dtype=np.float32) * 255.0)
    out = np.empty((image.shape[2],) + image.shape[:2], dtype=np.float32)
    # per-plane in-place ops (broadcasting over a trailing axis of 3 is ~20x slower in NumPy)
    for c, plane in enumerate(cv2.split(image)):
        out[c] = plane
        out[c] -= m[c]
        out[c] *= inv[c]
    return out


class TopDownTransform:
    """Record + decoded image -> network sample (crop, heatmap target, weights) for top-down pose.

    Args:
        input_size: crop size ``(W, H)`` in pixels (``(192, 256)`` or ``(288, 384)``).
        heatmap_size: ``(w, h)`` in heatmap cells (``(48, 64)`` / ``(72, 96)``).
        sigma: Gaussian std in heatmap cells (2 at 64x48, 3 at 96x72).
        flip_pairs: left/right joint pairs (``KeypointSpec.flip_pairs``).
        train: apply the random augmentation (otherwise the crop is the record's box, unrotated).
        scale_factor: ``sf`` of the scale jitter (COCO 0.35, MPII 0.25).
        rotation_factor: ``rf`` in degrees (COCO 45, MPII 30).
        rotation_prob: probability of rotating (0.6).
        flip: enable horizontal flip; ``flip_prob`` its probability (0.5).
        half_body_prob: probability of the half-body box (COCO 0.3, MPII 0: not used).
        num_joints_half_body: half body needs strictly more visible joints than this (8).
        upper_body_ids: joints of the upper half body (COCO 0-10).
        pixel_std: box unit (200).
        mean, std: image normalisation (ImageNet).
        joint_weights: optional per-joint loss weights multiplied into ``target_weight``.
        dark: distribution-aware (sub-pixel, DARK) targets instead of the official rounded ones.

    ``__call__(record, image, rng)`` takes a record of :class:`~hrnet_core.data.coco.CocoKeypoints` or
    :class:`~hrnet_core.data.mpii.MpiiKeypoints` (``center``, ``scale``, ``joints [K,3]`` in image px, ``score``,
    ``image_id``), the RGB uint8 image ``[H_img, W_img, 3]`` and a ``numpy.random.Generator``, and returns:

    - ``image`` float32 ``[3, H, W]`` (normalised crop), ``target`` float32 ``[K, h, w]``, ``target_weight`` float32 ``[K, 1]``,
    - ``joints`` float32 ``[K, 3]`` (crop pixels, visibility), ``center`` / ``scale`` float32 ``[2]`` (after augmentation),
      ``rotation`` (degrees), ``flipped`` (bool), ``score``, ``image_id``, ``area`` (when the record has one).

    As officially (``JointsDataset.__getitem__``), a flipped sample mirrors the image first and crops it with the
    mirrored centre; folding the mirror into the warp matrix instead changed one grey level on about 1e-5 of
    the values of flipped crops (bilinear rounding of a different matrix).
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        sigma: float,
        flip_pairs,
        train: bool,
        scale_factor: float = 0.35,
        rotation_factor: float = 45.0,
        rotation_prob: float = 0.6,
        flip: bool = True,
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        num_joints_half_body: int = 8,
        upper_body_ids: Sequence[int] = tuple(range(11)),
        pixel_std: float = PIXEL_STD,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        joint_weights: Sequence[float] | None = None,
        dark: bool = False,
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.flip_pairs = tuple((int(a), int(b)) for a, b in flip_pairs)
        self.train = bool(train)
        self.scale_factor = float(scale_factor)
        self.rotation_factor = float(rotation_factor)
        self.rotation_prob = float(rotation_prob)
        self.flip = bool(flip)
        self.flip_prob = float(flip_prob)
        self.half_body_prob = float(half_body_prob)
        self.num_joints_half_body = int(num_joints_half_body)
        self.upper_body_ids = tuple(int(i) for i in upper_body_ids)
        self.pixel_std = float(pixel_std)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.codec = HeatmapCodec(self.input_size, self.heatmap_size, sigma, dark=dark, joint_weights=joint_weights)

    def sample_params(
        self, record: dict, image_width: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """Draw the augmentation: returns ``(center [2], scale [2], rotation deg, flipped)`` in original-image pixels.

        The center is that of the unflipped image (the flip is applied by :meth:`__call__`).
        """
        center = np.asarray(record["center"], dtype=np.float64).copy()
        scale = np.asarray(record["scale"], dtype=np.float64).copy()
        if not self.train:
            return center, scale, 0.0, False
        joints = np.asarray(record["joints"], dtype=np.float64)
        # fixed number of draws per sample: half-body gate, scale, rotation, rotation gate, flip gate
        u_half, n_scale, n_rot, u_rot, u_flip = rng.random(), rng.standard_normal(), rng.standard_normal(), rng.random(), rng.random()
        if (
            self.half_body_prob > 0
            and int((joints[:, 2] > 0).sum()) > self.num_joints_half_body
            and u_half < self.half_body_prob
        ):
            hb = half_body_box(joints, self.upper_body_ids, self.aspect_ratio, rng, self.pixel_std)
            if hb is not None:
                center, scale = hb
        sf, rf = self.scale_factor, self.rotation_factor
        scale = scale * float(np.clip(n_scale * sf + 1.0, 1.0 - sf, 1.0 + sf))
        rotation = float(np.clip(n_rot * rf, -2.0 * rf, 2.0 * rf)) if u_rot <= self.rotation_prob else 0.0
        flipped = bool(self.flip and u_flip <= self.flip_prob)
        return center, scale, rotation, flipped

    def __call__(self, record: dict, image: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, Any]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        if self.train and rng is None:
            raise ValueError("TopDownTransform(train=True) needs a numpy.random.Generator")
        width = image.shape[1]
        center, scale, rotation, flipped = self.sample_params(record, width, rng)
        joints = np.array(record["joints"], dtype=np.float64, copy=True)
        if flipped:
            image = np.ascontiguousarray(image[:, ::-1])
            joints = fliplr_joints(joints, width, self.flip_pairs)
            center[0] = width - center[0] - 1
        trans = get_affine_transform(center, scale, rotation, self.input_size, pixel_std=self.pixel_std)
        crop = cv2.warpAffine(image, trans, self.input_size, flags=cv2.INTER_LINEAR)
        vis = joints[:, 2] > 0
        joints[:, :2] = np.where(vis[:, None], affine_transform_points(joints[:, :2], trans), 0.0)
        target, target_weight = self.codec.encode(joints)
        out = {
            "image": normalize_image(crop, self.mean, self.std),
            "target": target,
            "target_weight": target_weight,
            "joints": joints.astype(np.float32),
            "center": center.astype(np.float32),
            "scale": scale.astype(np.float32),
            "rotation": float(rotation),
            "flipped": flipped,
            "score": float(record.get("score", 1.0)),
            "image_id": record.get("image_id", -1),
        }
        if "area" in record:
            out["area"] = float(record["area"])
        return out
