"""Drawn skeletons for a few evaluation images (OpenCV): predictions in colour, optional ground truth in white.

Used by the pose tasks (:mod:`hrnet_core.tasks.pose_topdown`, :mod:`hrnet_core.tasks.pose_bottomup`) for the MLflow
drawings of an evaluation; the ground truth comes from a COCO annotation file (:func:`coco_ground_truth`) or from the
reader records (:func:`record_ground_truth`, MPII).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from hrnet_core.data.io import load_json, read_image

# 1-based COCO person skeleton; MPII pairs are 0-based in the official joint order
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10], [9, 11],
    [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
MPII_SKELETON = [[0, 1], [1, 2], [2, 6], [3, 6], [3, 4], [4, 5], [6, 7], [7, 8], [8, 9], [10, 11], [11, 12], [12, 7],
                 [7, 13], [13, 14], [14, 15]]


def skeleton_pairs(num_joints: int) -> list[tuple[int, int]]:
    """0-based limb pairs for COCO (17 joints) or MPII (16 joints); empty for other layouts."""
    if num_joints == 17:
        return [(a - 1, b - 1) for a, b in COCO_SKELETON]
    if num_joints == 16:
        return [tuple(p) for p in MPII_SKELETON]
    return []


def draw_pose(image: np.ndarray, keypoints: np.ndarray, score_thr: float = 0.2,
              color: tuple[int, int, int] | None = None, thickness: int = 2) -> np.ndarray:
    """Draw one pose in place on an RGB uint8 image.

    Args:
        image: ``[H, W, 3]`` RGB uint8 (modified and returned).
        keypoints: ``[K, 3]`` (x, y original-image px, score or visibility); joints with score <= ``score_thr``
            are not drawn.
        color: limb colour; default a colour per limb.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    pairs = skeleton_pairs(len(kp))
    for i, (a, b) in enumerate(pairs):
        if kp[a, 2] > score_thr and kp[b, 2] > score_thr:
            c = color or _palette(i, len(pairs))
            cv2.line(image, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), c, thickness,
                     lineType=cv2.LINE_AA)
    for x, y, s in kp:
        if s > score_thr:
            cv2.circle(image, (int(x), int(y)), thickness + 1, color or (255, 255, 255), -1, lineType=cv2.LINE_AA)
    return image


def _palette(i: int, n: int) -> tuple[int, int, int]:
    hsv = np.uint8([[[int(180 * i / max(n, 1)), 220, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def save_visualisations(results: Sequence[dict[str, Any]], image_files: dict[int, str], out_dir: str | Path,
                        num_images: int = 6, score_thr: float = 0.3, joint_thr: float = 0.2,
                        ground_truth: dict[int, list[np.ndarray]] | None = None) -> list[Path]:
    """Write ``<out_dir>/<image_id>.jpg`` with the predicted poses of the first ``num_images`` images.

    Args:
        results: COCO-style results (``image_id``, ``keypoints`` [K, 3] or flat, ``score``).
        image_files: image id -> absolute image path.
        num_images: how many images (in ascending id order).
        score_thr: person score below which a pose is not drawn.
        ground_truth: optional image id -> list of ``[K, 3]`` ground-truth joints, drawn thin in white first.

    Returns:
        The written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    written = []
    for image_id in sorted(by_image)[:num_images]:
        img = read_image(image_files[image_id]).copy()
        for gt in (ground_truth or {}).get(image_id, []):
            draw_pose(img, gt, score_thr=0.0, color=(255, 255, 255), thickness=1)
        for r in by_image[image_id]:
            if r["score"] >= score_thr:
                draw_pose(img, np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3), joint_thr)
        path = out / f"{image_id}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def coco_ground_truth(ann_file: str | Path) -> dict[int, list[np.ndarray]]:
    """Image id -> ground-truth joints ``[K, 3]`` (x, y px, visibility 0/1/2) of the non-crowd people with labelled
    joints of a COCO keypoint annotation file (the ``ground_truth`` of :func:`save_visualisations`).

    Raises:
        hrnet_core.data.io.AnnotationError: the file is missing or not valid json.
    """
    gt_by_image: dict[int, list[np.ndarray]] = {}
    for a in load_json(ann_file)["annotations"]:
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0:
            gt_by_image.setdefault(int(a["image_id"]), []).append(np.asarray(a["keypoints"], float).reshape(-1, 3))
    return gt_by_image


def record_ground_truth(records: Sequence[dict[str, Any]]) -> dict[int, list[np.ndarray]]:
    """Image id -> ground-truth joints ``[K, 3]`` of reader records (``joints`` ``[K, 3]`` with 0/1 weights, drawn
    as COCO visibility 0/2)."""
    gt_by_image: dict[int, list[np.ndarray]] = {}
    for r in records:
        gt_by_image.setdefault(int(r["image_id"]), []).append(
            np.concatenate([r["joints"][:, :2], r["joints"][:, 2:] * 2], axis=1))
    return gt_by_image
