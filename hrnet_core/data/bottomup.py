"""Bottom-up pose data (HigherHRNet paper Sec. 3.4 / 4; FACTS.md section 2): one sample is one image with all its
people.

Reading (COCO ``person_keypoints_*.json`` and CrowdPose ``crowdpose_*.json``, the same COCO format with 14 joints and
an image-level ``crowdIndex``), following the official HigherHRNet data code (HRNet/HigherHRNet-Human-Pose-Estimation
``lib/dataset/COCODataset.py``, ``COCOKeypoints.py``, ``CrowdPoseKeypoints.py``):

- training images are the images with at least one annotation (crowd regions included);
- people: annotations that are not crowd regions or that have labelled joints (``iscrowd == 0 or num_keypoints > 0``);
  their joints ``[K, 3]`` (x, y px, visibility 0/1/2) form the targets;
- ignore regions: crowd regions (``iscrowd``) and people without labelled joints (``num_keypoints == 0``), through
  their ``segmentation`` (polygons or RLE). Annotations without a segmentation (CrowdPose) ignore nothing, as the
  official CrowdPose code, whose mask is all valid.

Targets per output resolution ``r`` (``data.output_size``, 1/4 and 1/2 of the input), official ``HeatmapGenerator`` /
``JointsGenerator``:

- heatmaps float32 ``[K, r, r]``: per joint the maximum over people of a Gaussian (std ``sigma`` cells) on a
  ``6 sigma + 3`` window around the cell ``(int(x), int(y))`` holding the warped joint (cells are ``[i, i+1)``);
- joint indices int64 ``[M, K, 2]`` (``M = max_num_people``): ``(k * r * r + int(y) * r + int(x), 1)`` for each
  labelled joint inside the map, in people order (the tag loss gathers the tag map at these flat indices);
- mask float32 ``[r, r]``: 1 where the loss counts; the ignore mask warped with the image (``> 0.5`` after warping
  0/255 with bilinear interpolation; outside the image 0, as officially).

Augmentation (official ``RandomAffineTransform`` + ``RandomHorizontalFlip``): the square crop of side
``short side * U(min_scale, max_scale)`` around the image centre shifted by ``randint(+-max_translate * scale)`` px
(scale in units of 200 px), rotated by ``U(-max_rotation, max_rotation)`` degrees, warped to the input and to each
output resolution; then a horizontal flip with probability 0.5 (``x' = r - x - 1``, the dataset's flip pairs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from .io import AnnotationError, load_json
from .keypoints import COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS, KeypointSpec
from .transforms import PIXEL_STD, affine_transform_points, normalize_image, similarity_affine

__all__ = ["BottomUpAnnotations", "ignore_mask", "encode_heatmaps", "encode_joint_indices", "BottomUpTransform",
           "spec_for_joints"]


def spec_for_joints(num_joints: int) -> KeypointSpec:
    """COCO (17) or CrowdPose (14) layout by joint count. Raises ``ValueError`` for other counts."""
    for spec in (COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS):
        if spec.num_joints == num_joints:
            return spec
    raise ValueError(f"no bottom-up keypoint layout with {num_joints} joints (COCO 17, CrowdPose 14)")


class BottomUpAnnotations:
    """Per-image people of a COCO-format keypoint file (COCO or CrowdPose).

    Args:
        ann_file: ``person_keypoints_*.json`` / ``crowdpose_*.json``.
        image_dir: folder of the images (``file_name``); ``check_files`` verifies they exist.

    Attributes:
        spec: keypoint layout (from the person category's keypoint count).
        images: list of dicts ``image_id``, ``file_name``, ``width``, ``height``, ``crowd_index`` (CrowdPose
            ``crowdIndex``, else -1), ``joints`` float64 ``[N, K, 3]`` (x, y px, visibility), ``ignore`` (list of
            segmentations, polygons or RLE dicts, of crowd regions and unlabelled people), ``num_annotations``.

    Raises:
        AnnotationError: missing lists, malformed keypoints, a person (not a crowd region) without ``keypoints``,
            unknown joint count, missing image sizes or files (the message names the file).
    """

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike, check_files: bool = True) -> None:
        self.ann_file = str(ann_file)
        data = load_json(ann_file, "keypoint annotation file")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data, dict) or key not in data:
                raise AnnotationError(f"keypoint annotation file {self.ann_file!r} has no {key!r} list")
        person = [c for c in data["categories"] if c.get("id") == 1 and "keypoints" in c]
        if not person:
            raise AnnotationError(f"{self.ann_file!r}: no person category (id 1) with a 'keypoints' list")
        try:
            self.spec = spec_for_joints(len(person[0]["keypoints"]))
        except ValueError as exc:
            raise AnnotationError(f"{self.ann_file!r}: {exc}") from None
        k = self.spec.num_joints
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a.get("category_id", 1) == 1:
                by_image.setdefault(int(a["image_id"]), []).append(a)
        self.images: list[dict[str, Any]] = []
        for info in data["images"]:
            try:
                image_id, width, height = int(info["id"]), int(info["width"]), int(info["height"])
                file_name = str(info["file_name"])
            except (KeyError, TypeError, ValueError):
                raise AnnotationError(f"{self.ann_file!r}: image entry {info.get('id')} lacks id / file_name / "
                                      f"width / height") from None
            anns = by_image.get(image_id, [])
            people, ignore = [], []
            for a in anns:
                crowd = bool(a.get("iscrowd", 0))
                if "keypoints" not in a and (not crowd or int(a.get("num_keypoints", 0)) > 0):
                    # a person (HigherHRNet CocoKeypoints keeps iscrowd == 0 or num_keypoints > 0 and reads its
                    # 'keypoints'): without them it would train as a person with no joints and no ignore mask
                    raise AnnotationError(f"{self.ann_file!r}: annotation {a.get('id')} (image {image_id}) is a "
                                          f"person without 'keypoints' ({3 * k} values expected)")
                kp = np.asarray(a.get("keypoints", [0.0] * 3 * k), dtype=np.float64)
                if kp.shape != (3 * k,):
                    raise AnnotationError(f"{self.ann_file!r}: annotation {a.get('id')} has {kp.size} keypoint "
                                          f"values, expected {3 * k}")
                labelled = int(a.get("num_keypoints", int((kp[2::3] > 0).sum()))) > 0
                if not crowd or labelled:
                    people.append(kp.reshape(k, 3))
                if (crowd or not labelled) and a.get("segmentation"):
                    ignore.append(a["segmentation"])
            self.images.append({
                "image_id": image_id, "file_name": file_name, "width": width, "height": height,
                "crowd_index": float(info.get("crowdIndex", -1.0)),
                "joints": np.stack(people) if people else np.zeros((0, k, 3)),
                "ignore": ignore, "num_annotations": len(anns)})
        if check_files:
            from .io import check_files_exist

            check_files_exist((os.path.join(str(image_dir), r["file_name"]) for r in self.images), self.ann_file)


def ignore_mask(regions: Sequence[Any], height: int, width: int) -> np.ndarray:
    """float32 ``[H, W]``: 0 inside any ignore region (polygon list or RLE of the COCO format), 1 elsewhere (official
    ``get_mask``: ``m < 0.5`` with ``m`` the sum of the decoded regions)."""
    from pycocotools import mask as mask_utils

    m = np.zeros((height, width), dtype=np.float32)
    for seg in regions:
        rles = mask_utils.frPyObjects(seg, height, width)
        if isinstance(rles, list):
            for rle in rles:
                m += mask_utils.decode(rle)
        else:
            m += mask_utils.decode(rles)
    return (m < 0.5).astype(np.float32)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The official ``(6 sigma + 3)``-wide unnormalised Gaussian (peak 1 at ``3 sigma + 1``), float64."""
    size = int(6 * sigma + 3)
    x = np.arange(0, size, 1, dtype=np.float64)
    y = x[:, None]
    c = 3 * sigma + 1
    return np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))


def encode_heatmaps(joints: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Heatmaps float32 ``[K, h, w]``: per joint the maximum over people of :func:`gaussian_kernel` at the cell
    ``(int(x), int(y))`` of each labelled joint (``joints`` ``[N, K, 3]`` in output cells; official
    ``HeatmapGenerator``). ``size`` is ``(w, h)``."""
    w, h = size
    k = joints.shape[1]
    hms = np.zeros((k, h, w), dtype=np.float32)
    g = gaussian_kernel(sigma)
    for person in joints:
        for j, (xf, yf, v) in enumerate(person):
            if v <= 0:
                continue
            x, y = int(xf), int(yf)
            if x < 0 or y < 0 or x >= w or y >= h:
                continue
            ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
            br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
            c, d = max(0, -ul[0]), min(br[0], w) - ul[0]
            a, b = max(0, -ul[1]), min(br[1], h) - ul[1]
            cc, dd = max(0, ul[0]), min(br[0], w)
            aa, bb = max(0, ul[1]), min(br[1], h)
            hms[j, aa:bb, cc:dd] = np.maximum(hms[j, aa:bb, cc:dd], g[a:b, c:d])
    return hms


def encode_joint_indices(joints: np.ndarray, size: tuple[int, int], max_num_people: int) -> np.ndarray:
    """int64 ``[M, K, 2]``: per person (first ``M``) and labelled joint inside the map, ``(flat index into the
    [K, h, w] tag map, 1)``, packed at the front of the person's row (official ``JointsGenerator``)."""
    w, h = size
    k = joints.shape[1]
    out = np.zeros((max_num_people, k, 2), dtype=np.int64)
    for i, person in enumerate(joints[:max_num_people]):
        n = 0
        for j, (xf, yf, v) in enumerate(person):
            x, y = int(xf), int(yf)
            if v > 0 and 0 <= x < w and 0 <= y < h:
                out[i, n] = (j * h * w + y * w + x, 1)
                n += 1
    return out


@dataclass
class BottomUpTransform:
    """Record + decoded image -> training sample of the bottom-up pipeline (module docstring).

    Args:
        num_joints: K.
        input_size: square network input side (px).
        output_sizes: side of each output map (1/4 and 1/2 of the input for HigherHRNet).
        sigma: Gaussian std in output cells (2 at every resolution).
        flip_pairs: the dataset's left/right pairs.
        max_num_people: M of the joint indices (30).
        train: draw augmentation (else: centre crop of the short side, no flip).
        min_scale, max_scale, max_rotation, max_translate, flip_prob, flip: the augmentation (module docstring).
        with_joints: per output, whether to emit the tag-loss joint indices.

    ``__call__(record, image, rng)`` with ``record`` holding ``joints`` ``[N, K, 3]`` px and ``ignore`` (regions);
    returns ``image`` float32 ``[3, S, S]`` and per output ``i``: ``heatmap_i`` float32 ``[K, r, r]``, ``mask_i``
    float32 ``[r, r]``, ``joints_i`` int64 ``[M, K, 2]`` (when ``with_joints[i]``).
    """

    num_joints: int
    input_size: int
    output_sizes: tuple[int, ...]
    sigma: float
    flip_pairs: tuple[tuple[int, int], ...]
    max_num_people: int = 30
    train: bool = True
    min_scale: float = 0.75
    max_scale: float = 1.5
    max_rotation: float = 30.0
    max_translate: float = 40.0
    flip_prob: float = 0.5
    flip: bool = True
    with_joints: tuple[bool, ...] = field(default_factory=tuple)

    def params(self, height: int, width: int, rng: np.random.Generator | None) -> tuple[np.ndarray, float, float, bool]:
        """``(center px, scale (x 200 px, square), rotation degrees, flip)``; five uniform draws per sample."""
        center = np.array([width / 2.0, height / 2.0])
        scale = min(height, width) / PIXEL_STD
        if not self.train or rng is None:
            return center, scale, 0.0, False
        u_scale, u_rot, u_dx, u_dy, u_flip = rng.random(5)
        scale *= self.min_scale + float(u_scale) * (self.max_scale - self.min_scale)
        rotation = (2.0 * float(u_rot) - 1.0) * self.max_rotation
        t = int(self.max_translate * scale)
        if t > 0:  # numpy randint(-t, t): integers in [-t, t)
            center = center + np.array([-t + int(u_dx * 2 * t), -t + int(u_dy * 2 * t)], dtype=np.float64)
        return center, scale, rotation, bool(self.flip and u_flip < self.flip_prob)

    def __call__(self, record: Mapping[str, Any], image: np.ndarray, rng: np.random.Generator | None = None
                 ) -> dict[str, np.ndarray]:
        from hrnet_core.codecs.flip import flip_permutation

        h, w = image.shape[:2]
        joints = np.asarray(record["joints"], dtype=np.float64).reshape(-1, self.num_joints, 3)
        mask = ignore_mask(record.get("ignore") or [], h, w)
        center, scale, rotation, flip = self.params(h, w, rng)
        s = self.input_size
        # closed-form float64 matrix, as HigherHRNet RandomAffineTransform._get_affine_matrix builds it
        m_in = similarity_affine(center, (scale, scale), rotation, (s, s))
        crop = cv2.warpAffine(image, m_in, (s, s), flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        out: dict[str, np.ndarray] = {"image": normalize_image(np.ascontiguousarray(crop))}
        perm = flip_permutation(joints.shape[1], self.flip_pairs)
        for i, r in enumerate(self.output_sizes):
            m = similarity_affine(center, (scale, scale), rotation, (r, r))
            mk = cv2.warpAffine((mask * 255).astype(np.uint8), m, (r, r), flags=cv2.INTER_LINEAR) / 255.0
            mk = (mk > 0.5).astype(np.float32)
            jt = joints.copy()
            jt[..., :2] = affine_transform_points(joints[..., :2], m)
            if flip:
                mk = mk[:, ::-1]
                jt = jt[:, perm]
                jt[..., 0] = r - jt[..., 0] - 1
            out[f"heatmap_{i}"] = encode_heatmaps(jt, (r, r), self.sigma)
            out[f"mask_{i}"] = np.ascontiguousarray(mk)
            if i < len(self.with_joints) and self.with_joints[i]:
                out[f"joints_{i}"] = encode_joint_indices(jt, (r, r), self.max_num_people)
        return out


def image_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A :class:`BottomUpAnnotations` image -> a ``samples.parquet`` row (joints flattened ``[N*K*3]``, ignore
    regions as a JSON string)."""
    return {"image_id": int(record["image_id"]), "file_name": record["file_name"], "width": int(record["width"]),
            "height": int(record["height"]), "crowd_index": float(record["crowd_index"]),
            "num_people": int(len(record["joints"])),
            "joints": [float(v) for v in np.asarray(record["joints"]).reshape(-1)],
            "ignore": json.dumps(record["ignore"])}
