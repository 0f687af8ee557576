"""Top-down geometry: box padding, affine crop / inverse, flip, half body, deterministic augmentation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hrnet_core.data.keypoints import COCO_KEYPOINTS, MPII_KEYPOINTS
from hrnet_core.data.transforms import (
    TopDownTransform,
    affine_transform_points,
    box_to_center_scale,
    fliplr_joints,
    get_affine_transform,
    half_body_box,
    normalize_image,
)


def three_point_affine(center, scale, rot, out_size, inverse=False):
    """The 3-point construction described in FACTS.md section 1 (independent of our closed form)."""
    src_w = scale[0] * 200.0
    r = math.radians(rot)
    # the direction (0, -src_w / 2) rotated by r
    src_dir = np.array([(src_w * 0.5) * math.sin(r), (src_w * -0.5) * math.cos(r)])
    dst_dir = np.array([0, out_size[0] * -0.5])
    third = lambda a, b: b + np.array([-(a - b)[1], (a - b)[0]])  # noqa: E731
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = center, np.asarray(center) + src_dir
    dst[0] = [out_size[0] * 0.5, out_size[1] * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def test_box_to_center_scale():
    c, s = box_to_center_scale([10, 20, 100, 100], 0.75)  # too wide -> grow height
    np.testing.assert_allclose(c, [60, 70])
    np.testing.assert_allclose(s, np.array([100, 100 / 0.75]) / 200 * 1.25)
    c, s = box_to_center_scale([0, 0, 30, 200], 0.75)  # too tall -> grow width
    np.testing.assert_allclose(s, np.array([150, 200]) / 200 * 1.25)
    _, s = box_to_center_scale([0, 0, 30, 200], 1.0, padding=1.0)
    np.testing.assert_allclose(s, [1.0, 1.0])


def test_affine_matches_three_point_construction():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = rng.uniform(0, 600, 2)
        sw = rng.uniform(0.2, 4)
        s = np.array([sw, sw / 0.75])
        r = rng.uniform(-90, 90)
        ours = get_affine_transform(c, s, r, (192, 256))
        np.testing.assert_allclose(ours, three_point_affine(c, s, r, (192, 256)), rtol=1e-4, atol=1e-3)
        inv = get_affine_transform(c, s, r, (192, 256), inverse=True)
        np.testing.assert_allclose(inv, three_point_affine(c, s, r, (192, 256), inverse=True), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("size", [(192, 256), (288, 384), (256, 256)])
def test_crop_then_inverse_maps_keypoints_back(size):
    rng = np.random.default_rng(1)
    for _ in range(100):
        c = rng.uniform(0, 800, 2)
        sw = rng.uniform(0.1, 5)
        s = np.array([sw, sw * size[1] / size[0]])
        r = float(np.clip(rng.standard_normal() * 45, -90, 90))
        pts = rng.uniform(-100, 900, (17, 2))
        fwd = get_affine_transform(c, s, r, size)
        inv = get_affine_transform(c, s, r, size, inverse=True)
        back = affine_transform_points(affine_transform_points(pts, fwd), inv)
        assert np.abs(back - pts).max() < 0.5
        assert np.abs(back - pts).max() < 1e-6  # in fact exact up to rounding
        # the center lands in the middle of the crop, up to its official float32 rounding (<= 3e-5 image px here,
        # times the zoom: 1.9e-4 output px seen)
        np.testing.assert_allclose(affine_transform_points(c, fwd), [size[0] / 2, size[1] / 2], atol=1e-3)


def test_warp_moves_pixels_with_the_keypoints():
    """A bright dot drawn at a keypoint lands, after cv2.warpAffine, where affine_transform_points puts it."""
    rng = np.random.default_rng(2)
    for _ in range(10):
        img = np.zeros((480, 640, 3), np.uint8)
        p = rng.uniform(200, 440, 2).round()
        img[int(p[1]) - 2 : int(p[1]) + 3, int(p[0]) - 2 : int(p[0]) + 3] = 255
        c = p + rng.uniform(-40, 40, 2)
        s = np.array([1.0, 1.0 / 0.75]) * rng.uniform(0.6, 1.2)
        r = rng.uniform(-60, 60)
        m = get_affine_transform(c, s, r, (192, 256))
        crop = cv2.warpAffine(img, m, (192, 256), flags=cv2.INTER_LINEAR)
        ys, xs = np.nonzero(crop[..., 0] > 0)
        wts = crop[ys, xs, 0].astype(float)
        centroid = np.array([(xs * wts).sum(), (ys * wts).sum()]) / wts.sum()
        np.testing.assert_allclose(centroid, affine_transform_points(p, m), atol=0.5)


def test_rotation_direction():
    """Positive angles turn the image content counter-clockwise on screen: a point right of the centre moves up."""
    m = get_affine_transform([100, 100], [1.0, 1.0], 90, (200, 200))
    np.testing.assert_allclose(affine_transform_points([150, 100], m), [100, 50], atol=1e-9)


def test_fliplr_joints_twice_is_identity_and_matches_image_flip():
    rng = np.random.default_rng(3)
    joints = np.c_[rng.uniform(0, 639, 17), rng.uniform(0, 479, 17), np.ones(17)]
    joints[4, 2] = 0
    once = fliplr_joints(joints, 640, COCO_KEYPOINTS.flip_pairs)
    assert np.all(once[3, :2] == 0) and once[3, 2] == 0  # invisible joint 4 moved to slot 3, zeroed
    twice = fliplr_joints(once, 640, COCO_KEYPOINTS.flip_pairs)
    vis = joints[:, 2] > 0
    np.testing.assert_allclose(twice[vis], joints[vis])
    # a pixel at (x, y) of joint 1 (left eye) is at (W - 1 - x, y) of the mirrored image, as joint 2 (right eye)
    img = np.zeros((480, 640), np.uint8)
    x, y = int(joints[1, 0]), int(joints[1, 1])
    img[y, x] = 1
    flipped = img[:, ::-1]
    j = fliplr_joints(np.array(joints).round(), 640, COCO_KEYPOINTS.flip_pairs)
    assert flipped[int(j[2, 1]), int(j[2, 0])] == 1


def test_half_body_box():
    joints = np.zeros((17, 3))
    joints[:, 2] = 1
    joints[:11, :2] = np.c_[np.linspace(100, 140, 11), np.linspace(50, 150, 11)]  # upper body
    joints[11:, :2] = np.c_[np.linspace(110, 130, 6), np.linspace(200, 400, 6)]  # lower body

    class Fixed:
        def __init__(self, v):
            self.v = v

        def standard_normal(self):
            return self.v

    c, s = half_body_box(joints, COCO_KEYPOINTS.upper_body_ids, 0.75, Fixed(0.0))
    np.testing.assert_allclose(c, joints[:11, :2].mean(0))
    np.testing.assert_allclose(s, np.array([100 * 0.75, 100]) / 200 * 1.5)
    c, s = half_body_box(joints, COCO_KEYPOINTS.upper_body_ids, 0.75, Fixed(1.0))  # randn >= 0.5 -> lower body
    np.testing.assert_allclose(c, joints[11:, :2].mean(0))
    np.testing.assert_allclose(s, np.array([200 * 0.75, 200]) / 200 * 1.5)
    joints[2:, 2] = 0
    assert half_body_box(joints, COCO_KEYPOINTS.upper_body_ids, 0.75, Fixed(0.0)) is not None  # 2 joints: a box
    joints[1:, 2] = 0
    assert half_body_box(joints, COCO_KEYPOINTS.upper_body_ids, 0.75, Fixed(0.0)) is None


def _record():
    rng = np.random.default_rng(4)
    joints = np.c_[rng.uniform(200, 400, 17), rng.uniform(100, 400, 17), np.ones(17)]
    joints[3, 2] = 0
    joints[3, :2] = 0
    c, s = box_to_center_scale([200, 100, 200, 300], 0.75)
    return {"image_file": "x.jpg", "image_id": 7, "center": c, "scale": s, "joints": joints, "score": 0.9, "area": 1.0}


def _image():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_transform_is_deterministic_given_seed():
    t = TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=True)
    rec, img = _record(), _image()
    a = t(rec, img, np.random.default_rng(123))
    b = t(rec, img, np.random.default_rng(123))
    for key in ("image", "target", "target_weight", "joints", "center", "scale"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["rotation"] == b["rotation"] and a["flipped"] == b["flipped"]
    outs = [t(rec, img, np.random.default_rng(s)) for s in range(40)]
    assert len({(o["rotation"], float(o["scale"][0])) for o in outs}) > 30
    flips = sum(o["flipped"] for o in outs)
    assert 8 <= flips <= 32
    rots = np.array([o["rotation"] for o in outs])
    assert 0.3 <= np.mean(rots != 0) <= 0.9 and np.abs(rots).max() <= 90
    ratio = np.array([o["scale"][1] for o in outs]) / rec["scale"][1]
    # half-body boxes change the scale beyond the jitter range; the others stay in [0.65, 1.35]
    assert np.mean((ratio >= 0.65 - 1e-9) & (ratio <= 1.35 + 1e-9)) > 0.5
    assert rec["center"].tolist() == _record()["center"].tolist()  # the record is not modified


def test_transform_eval_output_contract():
    t = TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=False)
    rec, img = _record(), _image()
    out = t(rec, img)
    assert out["image"].shape == (3, 256, 192) and out["image"].dtype == np.float32
    assert out["target"].shape == (17, 64, 48) and out["target_weight"].shape == (17, 1)
    assert out["rotation"] == 0 and not out["flipped"] and out["score"] == 0.9 and out["image_id"] == 7
    assert out["target_weight"][3, 0] == 0
    # keypoints in the crop are the affine image of the record's joints
    m = get_affine_transform(rec["center"], rec["scale"], 0, (192, 256))
    vis = rec["joints"][:, 2] > 0
    np.testing.assert_allclose(out["joints"][vis, :2], affine_transform_points(rec["joints"][vis, :2], m), atol=1e-3)
    crop = cv2.warpAffine(img, m, (192, 256), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out["image"], normalize_image(crop), atol=1e-6)
    # ImageNet normalisation
    np.testing.assert_allclose(
        normalize_image(np.full((2, 2, 3), 255, np.uint8))[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-6
    )


def test_flip_folded_into_affine_equals_flipping_the_image():
    t = TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=True, half_body_prob=0.0)
    rec, img = _record(), _image()
    for seed in range(30):
        out = t(rec, img, np.random.default_rng(seed))
        if not out["flipped"]:
            continue
        # explicit form: flip the image, flip the joints and the centre, then crop
        flipped_img = np.ascontiguousarray(img[:, ::-1])
        m = get_affine_transform(out["center"], out["scale"], out["rotation"], (192, 256))
        crop = cv2.warpAffine(flipped_img, m, (192, 256), flags=cv2.INTER_LINEAR)
        levels = np.abs(out["image"] - normalize_image(crop)) * np.array([0.229, 0.224, 0.225])[:, None, None] * 255
        assert levels.max() <= 1.0 + 1e-3 and levels.mean() < 0.01  # same pixels up to bilinear rounding
        j = fliplr_joints(rec["joints"], 640, COCO_KEYPOINTS.flip_pairs)
        vis = j[:, 2] > 0
        np.testing.assert_allclose(out["joints"][vis, :2], affine_transform_points(j[vis, :2], m), atol=1e-3)
        assert out["target_weight"][4, 0] == 0  # invisible joint 3 became joint 4
        return
    pytest.fail("no flipped sample in 30 seeds")


def test_mpii_style_transform_has_no_half_body():
    t = TopDownTransform(
        (256, 256), (64, 64), 2, MPII_KEYPOINTS.flip_pairs, train=True, scale_factor=0.25, rotation_factor=30,
        half_body_prob=0.0, upper_body_ids=MPII_KEYPOINTS.upper_body_ids,
    )
    rng = np.random.default_rng(0)
    joints = np.c_[rng.uniform(200, 400, 16), rng.uniform(100, 400, 16), np.ones(16)]
    rec = {"center": np.array([300.0, 250.0]), "scale": np.array([2.0, 2.0]), "joints": joints, "image_id": 1}
    for s in range(20):
        out = t(rec, _image(), np.random.default_rng(s))
        assert 0.75 - 1e-9 <= out["scale"][0] / 2.0 <= 1.25 + 1e-9 and abs(out["rotation"]) <= 60
        assert out["image"].shape == (3, 256, 256) and out["target"].shape == (16, 64, 64)


def test_transform_rejects_bad_image():
    t = TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=False)
    with pytest.raises(ValueError):
        t(_record(), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        TopDownTransform((192, 256), (48, 64), 2, COCO_KEYPOINTS.flip_pairs, train=True)(_record(), _image(), None)
