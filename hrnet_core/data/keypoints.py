"""Keypoint definitions per dataset: joint names, left/right flip pairs, OKS sigmas, half-body groups.

One :class:`KeypointSpec` per dataset is shared by every task that uses it (top-down HRNet, bottom-up HigherHRNet,
evaluation), so flip pairs and OKS constants are written once.

Sources (facts, see ``FACTS.md`` sections 1 and 2):
- COCO: 17 joints in the order of the COCO ``person`` category; flip pairs [1,2],[3,4],...,[15,16]; OKS sigmas of the
  COCO keypoint evaluation (pycocotools ``kpt_oks_sigmas``); upper body = ids 0-10; official per-joint loss weights
  (only used when ``use_different_joints_weight`` is switched on, off in every published recipe).
- MPII: 16 joints in the order of the official HRNet MPII json; flip pairs [0,5],[1,4],[2,3],[10,15],[11,14],[12,13];
  upper body = ids 7-15. MPII has no OKS sigmas (its metric is PCKh).
- CrowdPose: 14 joints; flip index [1,0,3,2,5,4,7,6,9,8,11,10,12,13] (head top and neck map to themselves).
- PoseTrack 2017/2018: the 17 COCO slots with the eyes replaced by ``head_bottom`` (1) and ``head_top`` (2) (the
  ``person`` category of the PoseTrack json); those two are not a left/right pair, so the flip pairs are COCO's
  without [1,2]; the ears (3, 4) are never labelled in PoseTrack 2018. OKS constants by slot as COCO's (what the
  simple-baseline tracking uses for pose similarity); upper body = ids 0-10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs.flip import flip_permutation

__all__ = [
    "KeypointSpec",
    "COCO_KEYPOINTS",
    "MPII_KEYPOINTS",
    "CROWDPOSE_KEYPOINTS",
    "POSETRACK_KEYPOINTS",
    "get_keypoint_spec",
    "keypoint_spec",
    "flip_permutation",
]


@dataclass(frozen=True)
class KeypointSpec:
    """Static description of a keypoint layout.

    Attributes:
        name: dataset name (``"coco"``, ``"mpii"``, ``"crowdpose"``).
        joint_names: one name per joint, in channel order.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        sigmas: per-joint OKS constants ``k_i`` (``None`` when the dataset is not scored by OKS).
        upper_body_ids: joints used for the upper half-body box in half-body augmentation.
        joint_weights: per-joint loss weights of the official code (unused by the published recipes).
    """

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None
    upper_body_ids: tuple[int, ...]
    joint_weights: tuple[float, ...] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``p`` with ``flipped[:, j] = original[:, p[j]]`` (int64 ``[K]``)."""
        return flip_permutation(self.num_joints, self.flip_pairs)

    @property
    def lower_body_ids(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_joints) if i not in self.upper_body_ids)


COCO_KEYPOINTS = KeypointSpec(
    name="coco",
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    sigmas=tuple(
        v / 10.0
        for v in (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
    ),
    upper_body_ids=tuple(range(11)),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
)

MPII_KEYPOINTS = KeypointSpec(
    name="mpii",
    joint_names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    sigmas=None,
    upper_body_ids=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    joint_weights=(1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5),
)

CROWDPOSE_KEYPOINTS = KeypointSpec(
    name="crowdpose",
    joint_names=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    sigmas=tuple(v / 10.0 for v in (0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79)),
    upper_body_ids=(0, 1, 2, 3, 4, 5, 12, 13),
)

POSETRACK_KEYPOINTS = KeypointSpec(
    name="posetrack",
    joint_names=(
        "nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    sigmas=COCO_KEYPOINTS.sigmas,
    upper_body_ids=tuple(range(11)),
)


def get_keypoint_spec(name: str) -> KeypointSpec:
    """Look up a spec by dataset name (``coco``, ``mpii``, ``crowdpose``, ``posetrack``); raises ``KeyError`` naming
    the choices."""
    specs = {s.name: s for s in (COCO_KEYPOINTS, MPII_KEYPOINTS, CROWDPOSE_KEYPOINTS, POSETRACK_KEYPOINTS)}
    try:
        return specs[name.lower()]
    except KeyError:
        raise KeyError(f"unknown keypoint layout {name!r}; known: {sorted(specs)}") from None


def keypoint_spec(dataset: str, num_joints: int) -> KeypointSpec:
    """The :class:`KeypointSpec` of a top-down dataset (COCO / CrowdPose by joint count, MPII, PoseTrack for
    ``posetrack*`` datasets of the ``pose_tracking`` task).

    Raises:
        ValueError: no known layout has ``num_joints`` joints.
    """
    if dataset == "mpii":
        return MPII_KEYPOINTS
    if dataset.startswith("posetrack"):
        return POSETRACK_KEYPOINTS
    for spec in (COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS):
        if spec.num_joints == num_joints:
            return spec
    raise ValueError(f"no keypoint layout with {num_joints} joints for dataset {dataset!r}")
