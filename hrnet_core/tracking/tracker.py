"""The per-sequence tracker (the simple-baseline FlowTrack scheme followed by the HRNet pose paper, Sec. 4.3).

For every frame, in order:

1. person boxes: the detector's (score >= ``det_score_thr``) plus, with ``propagation``, the boxes of the previous
   frame's poses moved by the optical flow (joints scored above ``joint_score_thr`` warped, their box enlarged by
   ``box_extend``; score = the pose's score);
2. box non-maximum suppression at IoU ``box_nms_thr`` (:func:`box_nms`);
3. top-down pose on the kept boxes (the ``estimate`` callback: flip test etc. of the recipe); a pose's score is its
   box score times the mean of its joint scores above ``joint_score_thr`` (0 when none is); poses of score 0 are
   dropped, then OKS-NMS at ``oks_nms_thr`` removes duplicates (a propagated and a detected box on one person);
4. identities: ``flow_oks`` compares each pose with the previous frame's poses warped by the flow, ``oks`` with the
   previous poses as they are (OKS with the dataset's constants, joints above ``joint_score_thr``); greedy matching
   (most similar pair first, similarity >= ``match_thr``) carries the track id over, unmatched poses open new tracks.
   ``order`` ignores the previous frame: the i-th pose of a frame (detector / score order) gets id i (the baseline of
   "tracking by detection order alone").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hrnet_core.evaluation.oks_nms import oks_nms

from .association import greedy_match, pose_similarity
from .flow import FLOW_METHODS, optical_flow, to_gray, warp_points

__all__ = ["TrackerConfig", "track_sequence", "propagate_poses", "box_nms", "pose_scores", "ASSOCIATIONS",
           "PROPAGATIONS"]

ASSOCIATIONS = ("flow_oks", "oks", "order")
PROPAGATIONS = (*FLOW_METHODS, "none")


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker options (module docstring). Thresholds are scores in [0, 1], IoU (``box_nms_thr``) and OKS
    (``match_thr``, ``oks_nms_thr``); ``box_extend`` a fraction
    of the joints' box; ``flow`` the optical flow used by ``flow_oks`` when ``propagation`` is ``none``;
    ``flow_scale`` the resolution factor of the flow computation."""

    propagation: str = "dis"
    association: str = "flow_oks"
    flow: str = "dis"
    match_thr: float = 0.3
    box_nms_thr: float = 0.5
    oks_nms_thr: float = 0.9
    det_score_thr: float = 0.0
    joint_score_thr: float = 0.2
    box_extend: float = 0.15
    flow_scale: float = 1.0

    def check(self) -> None:
        """Raises ValueError naming the option that is out of range."""
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"propagation {self.propagation!r} is not one of {', '.join(PROPAGATIONS)}")
        if self.association not in ASSOCIATIONS:
            raise ValueError(f"association {self.association!r} is not one of {', '.join(ASSOCIATIONS)}")
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"flow {self.flow!r} is not one of {', '.join(FLOW_METHODS)}")
        for key in ("match_thr", "box_nms_thr", "oks_nms_thr", "det_score_thr", "joint_score_thr"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0.0 < self.flow_scale <= 1.0:
            raise ValueError(f"flow_scale must be in (0, 1], got {self.flow_scale}")


def propagate_poses(poses: np.ndarray, flow: np.ndarray, joint_thr: float) -> np.ndarray:
    """Poses ``[N, K, 3]`` moved by the flow (every joint; scores kept). Returns float64 ``[N, K, 3]``."""
    out = np.asarray(poses, np.float64).copy()
    for p in out:
        p[:, :2] = warp_points(p[:, :2], flow)
    return out


def _boxes_of(poses: np.ndarray, scores: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    from hrnet_core.data.posetrack import keypoint_box

    rows = []
    for p, s in zip(poses, scores):
        b = keypoint_box(p, cfg.box_extend, cfg.joint_score_thr)
        if b is not None:
            rows.append([*b, float(s)])
    return np.asarray(rows, np.float64).reshape(-1, 5)


def box_nms(boxes: np.ndarray, thr: float) -> np.ndarray:
    """Greedy IoU non-maximum suppression (torchvision ``nms`` semantics: by score, descending; a box is dropped when
    its IoU with a kept box exceeds ``thr``). ``boxes``: ``[N, 5]`` (x, y, w, h px, score); returns the kept rows
    ``[M, 5]`` by descending score (ties in input order)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5)
    order = np.argsort(-b[:, 4], kind="stable")
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
    area = np.maximum(b[:, 2], 0) * np.maximum(b[:, 3], 0)
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            iw = np.clip(np.minimum(x1[i], x1[k]) - np.maximum(x0[i], x0[k]), 0, None)
            ih = np.clip(np.minimum(y1[i], y1[k]) - np.maximum(y0[i], y0[k]), 0, None)
            inter = iw * ih
            iou = inter / np.maximum(area[i] + area[k] - inter, 1e-12)
            if (iou > thr).any():
                continue
        keep.append(int(i))
    return b[keep]


def pose_scores(poses: np.ndarray, box_scores: np.ndarray, joint_thr: float) -> np.ndarray:
    """``[N]``: box score x mean joint score over joints above ``joint_thr`` (0 when none)."""
    s = np.asarray(poses, np.float64)[..., 2]
    m = s > joint_thr
    mean = np.where(m.any(1), (s * m).sum(1) / np.maximum(m.sum(1), 1), 0.0)
    return np.asarray(box_scores, np.float64) * mean


def track_sequence(frames: Sequence[Mapping[str, Any]], detections: Mapping[int, np.ndarray],
                   estimate: Callable[[Mapping[str, Any], np.ndarray], np.ndarray],
                   read_image: Callable[[str], np.ndarray], sigmas, cfg: TrackerConfig) -> list[dict[str, Any]]:
    """Track people through one sequence (module docstring).

    Args:
        frames: ``[{"image_id", "image_file", ...}]`` in frame order.
        detections: ``image_id -> float [N, 5]`` (x, y, w, h px, score); frames without an entry have no boxes.
        estimate: ``(frame, boxes [N, 5]) -> poses [N, K, 3]`` (x, y px, score): the top-down pose estimator.
        read_image: path -> ``[H, W, 3]`` uint8 RGB (used for the flow).
        sigmas: ``[K]`` OKS constants.
        cfg: the options.
    Returns:
        one dict per frame: ``image_id``, ``poses`` float ``[N, K, 3]``, ``track_ids`` int ``[N]`` (unique per frame),
        ``scores`` float ``[N]``, ``boxes`` float ``[N, 5]`` (the boxes the poses came from).
    """
    cfg.check()
    need_flow = cfg.propagation != "none" or cfg.association == "flow_oks"
    method = cfg.propagation if cfg.propagation != "none" else cfg.flow
    out: list[dict[str, Any]] = []
    prev_gray, prev_poses, prev_ids, prev_scores = None, None, None, None
    next_id = 0
    for frame in frames:
        gray = to_gray(read_image(str(frame["image_file"]))) if need_flow else None
        det = np.asarray(detections.get(int(frame["image_id"]), np.zeros((0, 5))), np.float64).reshape(-1, 5)
        det = det[det[:, 4] >= cfg.det_score_thr]
        flow = None
        if need_flow and prev_gray is not None and prev_gray.shape == gray.shape and len(prev_poses):
            flow = optical_flow(prev_gray, gray, method, cfg.flow_scale)
        warped = propagate_poses(prev_poses, flow, cfg.joint_score_thr) if flow is not None else prev_poses
        boxes = det
        if cfg.propagation != "none" and flow is not None:
            boxes = np.concatenate([det, _boxes_of(warped, prev_scores, cfg)])
        boxes = box_nms(boxes, cfg.box_nms_thr)
        poses = np.asarray(estimate(frame, boxes), np.float64).reshape(len(boxes), -1, 3) if len(boxes) else None
        if poses is None:
            poses = np.zeros((0, len(sigmas), 3))
        scores = pose_scores(poses, boxes[:, 4], cfg.joint_score_thr)
        keep = np.flatnonzero(scores > 0)
        if len(keep):
            areas = boxes[keep, 2] * boxes[keep, 3]
            keep = keep[oks_nms(poses[keep], scores[keep], areas, cfg.oks_nms_thr, sigmas, cfg.joint_score_thr)]
        poses, scores, boxes = poses[keep], scores[keep], boxes[keep]
        ids = -np.ones(len(poses), int)
        if cfg.association == "order":
            ids = np.arange(len(poses))
        else:
            if prev_poses is not None and len(prev_poses) and len(poses):
                ref = warped if cfg.association == "flow_oks" else prev_poses
                for r, c in greedy_match(pose_similarity(poses, ref, sigmas, cfg.joint_score_thr), cfg.match_thr):
                    ids[r] = prev_ids[c]
            for i in np.flatnonzero(ids < 0):
                ids[i] = next_id
                next_id += 1
            next_id = max(next_id, int(ids.max(initial=-1)) + 1)
        out.append({"image_id": int(frame["image_id"]), "poses": poses, "track_ids": ids, "scores": scores,
                    "boxes": boxes})
        prev_gray, prev_poses, prev_ids, prev_scores = gray, poses, ids, scores
    return out
