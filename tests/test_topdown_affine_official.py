"""The top-down crop affine computed exactly as the official code does (issue item 10).

deep-high-resolution-net.pytorch ``lib/utils/transforms.py`` ``get_affine_transform`` builds three float32 point
pairs (centre, a point half a box width "up" turned by the rotation, a third point at a right angle) and solves them
with ``cv2.getAffineTransform``; ``JointsDataset.__getitem__`` mirrors the image first and crops it with the mirrored
centre. HigherHRNet's training augmentation instead builds a float64 closed form
(``RandomAffineTransform._get_affine_matrix``), which :func:`similarity_affine` keeps for the bottom-up training.

Figures measured on the inputs below with the code before this change (a float64 closed form for every caller,
the flip folded into the warp matrix):

- matrices: max |ours - official| 3.3e-3 (forward), 9.5e-5 (inverse); now 0 (bit-identical);
- crops of ``TopDownTransform``: 140 of 13.4 M values of 91 flipped crops one grey level off the official
  flip-then-crop; 0 now (unflipped crops differed only through the matrix).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hrnet_core.data.keypoints import COCO_KEYPOINTS
from hrnet_core.data.transforms import (
    TopDownTransform,
    box_to_center_scale,
    get_affine_transform,
    normalize_image,
    similarity_affine,
)


def official_rule_matrix(center, scale, rot_deg, out_size, inverse=False):
    """Our own transcription of the official three-point rule (not a copy of its code).

    The box width is ``scale[0] * 200``; the image points are the centre and the centre plus the vector
    ``(0, -width / 2)`` turned by the angle, the output points the output centre and the point half an output width
    above it; each third point is the second one plus (first - second) turned by +90 degrees. Points are float32.
    """
    width = np.asarray(scale)[0] * 200.0
    angle = np.pi * rot_deg / 180
    half = -0.5 * width
    a_img = np.float32(center)
    b_img = np.float32(np.asarray(center, np.float64) + [-half * np.sin(angle), half * np.cos(angle)])
    a_out = np.float32([out_size[0] / 2, out_size[1] / 2])
    b_out = np.float32([out_size[0] / 2, out_size[1] / 2 - out_size[0] / 2])

    def right_angle(p, q):
        v = np.float32(p - q)
        return np.float32(q + np.float32([-v[1], v[0]]))

    img_pts = np.stack([a_img, b_img, right_angle(a_img, b_img)])
    out_pts = np.stack([a_out, b_out, right_angle(a_out, b_out)])
    if inverse:
        return cv2.getAffineTransform(out_pts, img_pts)
    return cv2.getAffineTransform(img_pts, out_pts)


def _cases(n: int = 200):
    rng = np.random.default_rng(0)
    for _ in range(n):
        c = rng.uniform(0, 640, 2)
        sw = rng.uniform(0.2, 4)
        r = float(np.clip(rng.standard_normal() * 40, -80, 80))
        yield c, np.array([sw, sw / 0.75]), r


@pytest.mark.parametrize("out_size", [(192, 256), (288, 384), (256, 256)])
def test_matrix_equals_official_three_point_rule(out_size):
    """Bit-identical to the official rule, forward and inverse; the float64 closed form (the old behaviour, kept as
    ``similarity_affine``) differs on these inputs (old max |dM| 3.3e-3 forward at 192x256, now 0)."""
    old_gap = 0.0
    for c, s, r in _cases():
        want = official_rule_matrix(c, s, r, out_size)
        np.testing.assert_array_equal(get_affine_transform(c, s, r, out_size), want)
        np.testing.assert_array_equal(get_affine_transform(c, s, r, out_size, inverse=True),
                                      official_rule_matrix(c, s, r, out_size, inverse=True))
        old_gap = max(old_gap, float(np.abs(similarity_affine(c, s, r, out_size) - want).max()))
    assert old_gap > 1e-4  # the inputs discriminate: the closed form is not the official matrix


def test_float32_scale_rounds_the_box_width_as_officially():
    """The official COCO reader stores ``scale`` as float32, so ``scale * 200`` is a float32 product; a float32
    ``scale`` here gives the official float32 matrix, a float64 one the float64 matrix."""
    c, s = np.array([321.7, 143.3]), np.array([1.2345678, 1.6460904], np.float32)
    np.testing.assert_array_equal(get_affine_transform(c, s, 17.0, (192, 256)),
                                  official_rule_matrix(c, s, 17.0, (192, 256)))
    # the case is one where the dtype matters: the float64 product gives another matrix
    assert float(s[0] * np.float32(200.0)) != float(s[0]) * 200.0
    assert np.abs(get_affine_transform(c, s.astype(np.float64), 17.0, (192, 256))
                  - get_affine_transform(c, s, 17.0, (192, 256))).max() > 0


def test_topdown_crops_equal_the_official_flip_then_crop():
    """Every crop (flipped or not, rotated or not) equals the official procedure: mirror the image (``x' = w - 1 -
    x``) and the centre, then ``cv2.warpAffine`` with the official matrix. Old: flipped crops were warped with the
    matrix times the mirror and differed by one grey level on 140 of 13.4 M values (91 flipped of 200 samples)."""
    rng = np.random.default_rng(4)
    joints = np.c_[rng.uniform(200, 400, 17), rng.uniform(100, 400, 17), np.ones(17)]
    c, s = box_to_center_scale([200, 100, 200, 300], 0.75)
    rec = {"center": c, "scale": s, "joints": joints, "score": 1.0, "image_id": 1}
    img = cv2.GaussianBlur(np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2)
    t = TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=True)
    kinds = set()
    for seed in range(60):
        out = t(rec, img, np.random.default_rng(seed))
        center, scale, rot, flipped = t.sample_params(rec, 640, np.random.default_rng(seed))
        center = np.array(center, np.float64)
        src = img
        if flipped:
            src = np.ascontiguousarray(img[:, ::-1])
            center[0] = 640 - center[0] - 1
        want = cv2.warpAffine(src, official_rule_matrix(center, scale, rot, (192, 256)), (192, 256),
                              flags=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(out["image"], normalize_image(want))
        kinds.add((flipped, rot != 0))
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}


def higherhrnet_train_matrix(center, scale, res, rot_deg):
    """Our transcription of HigherHRNet's training matrix: zoom ``res / (200 scale)`` about the centre onto the
    output centre, then a turn by ``-rot`` about the output centre (float64, 2x3)."""
    k = res / (200.0 * scale)
    zoom = np.array([[k, 0, res / 2 - k * center[0]], [0, k, res / 2 - k * center[1]], [0, 0, 1]])
    a = np.deg2rad(-rot_deg)
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about = np.array([[1, 0, res / 2], [0, 1, res / 2], [0, 0, 1]]) @ turn @ np.array(
        [[1, 0, -res / 2], [0, 1, -res / 2], [0, 0, 1]])
    return (about @ zoom)[:2]


def test_bottomup_training_keeps_the_higherhrnet_closed_form():
    """The bottom-up training transform uses ``similarity_affine``: it matches HigherHRNet's float64 training matrix
    to 1e-9, where the official top-down (float32 three-point) matrix would be up to >1e-4 off."""
    rng = np.random.default_rng(7)
    worst_cv2 = 0.0
    for _ in range(100):
        c, sc, rot = rng.uniform(100, 600, 2), float(rng.uniform(1.5, 5)), float(rng.uniform(-30, 30))
        for res in (512, 128, 256):
            want = higherhrnet_train_matrix(c, sc, res, rot)
            np.testing.assert_allclose(similarity_affine(c, (sc, sc), rot, (res, res)), want, rtol=0, atol=1e-9)
            worst_cv2 = max(worst_cv2, float(np.abs(get_affine_transform(c, (sc, sc), rot, (res, res)) - want).max()))
    assert worst_cv2 > 1e-4


def test_bottomup_training_crop_is_warped_with_the_higherhrnet_matrix():
    """``BottomUpTransform`` crops the image with HigherHRNet's float64 training matrix (pixel-identical), not with
    the top-down float32 three-point one."""
    from hrnet_core.data.bottomup import BottomUpTransform

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 255, size=(160, 200, 3), dtype=np.uint8), (0, 0), 2)
    joints = np.zeros((1, 17, 3))
    joints[0, :, :2] = rng.uniform([30, 30], [170, 130], size=(17, 2))
    joints[0, :, 2] = 2
    record = {"joints": joints, "ignore": []}
    t = BottomUpTransform(num_joints=17, input_size=128, output_sizes=(32, 64), sigma=2.0,
                          flip_pairs=COCO_KEYPOINTS.flip_pairs, train=True, with_joints=(True, False))
    seen_rotation = False
    for seed in range(8):
        out = t(record, image, np.random.default_rng(seed))
        center, scale, rot, flip = t.params(160, 200, np.random.default_rng(seed))
        crop = cv2.warpAffine(image, higherhrnet_train_matrix(center, scale, 128, rot), (128, 128),
                              flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        np.testing.assert_array_equal(out["image"], normalize_image(np.ascontiguousarray(crop)))
        seen_rotation |= rot != 0
    assert seen_rotation
