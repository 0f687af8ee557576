"""Dataset readers of the official layouts, keypoint layouts, image IO and top-down transforms.

Submodules: ``io`` (read_image, ImageReadError, AnnotationError), ``keypoints`` (KeypointSpec per dataset),
``records`` (KeypointRecords, the readers' base), ``coco`` (CocoKeypoints), ``mpii`` (MpiiKeypoints),
``transforms`` (TopDownTransform and geometry), ``topdown`` (TopDownDataset, TopDownSample, per-sample seeding),
``topdown_rows`` (the prepared tables of top-down keypoint splits). Imports point one way: ``hrnet_core.data`` uses ``hrnet_core.codecs``, never the reverse.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_image": "io",
    "ImageReadError": "io",
    "AnnotationError": "io",
    "KeypointSpec": "keypoints",
    "COCO_KEYPOINTS": "keypoints",
    "MPII_KEYPOINTS": "keypoints",
    "CROWDPOSE_KEYPOINTS": "keypoints",
    "get_keypoint_spec": "keypoints",
    "keypoint_spec": "keypoints",
    "KeypointRecords": "records",
    "CocoKeypoints": "coco",
    "MpiiKeypoints": "mpii",
    "TopDownTransform": "transforms",
    "box_to_center_scale": "transforms",
    "get_affine_transform": "transforms",
    "TopDownDataset": "topdown",
    "TopDownSample": "topdown",
    "sample_rng": "topdown",
    "epoch_permutation": "topdown",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
