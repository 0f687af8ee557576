"""Heatmap codec: official targets, encode/decode round trips (official and DARK), flip utilities, loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrnet_core.codecs.heatmap import (
    HeatmapCodec,
    flip_back,
    flip_test,
    get_max_preds,
    heatmaps_to_image_coords,
)
from hrnet_core.data.keypoints import COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS, MPII_KEYPOINTS, flip_permutation
from hrnet_core.data.transforms import affine_transform_points, get_affine_transform
from hrnet_core.losses.joints_mse import JointsMSELoss


def reference_target(joints, image_size, heatmap_size, sigma):
    """Per-joint loop written from FACTS.md section 1 (the slow form of the official target)."""
    k = len(joints)
    w, h = heatmap_size
    target = np.zeros((k, h, w), dtype=np.float32)
    weight = (joints[:, 2] > 0).astype(np.float32)[:, None]
    tmp = sigma * 3
    stride = (image_size[0] / w, image_size[1] / h)
    for j in range(k):
        mu_x = int(joints[j, 0] / stride[0] + 0.5)
        mu_y = int(joints[j, 1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp), int(mu_y - tmp)]
        br = [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * tmp + 1
        x = np.arange(0, size, 1, np.float64)
        y = x[:, None]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
        img_x = max(0, ul[0]), min(br[0], w)
        img_y = max(0, ul[1]), min(br[1], h)
        if weight[j] > 0.5:
            target[j][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, weight


@pytest.mark.parametrize("size,hm,sigma", [((192, 256), (48, 64), 2), ((288, 384), (72, 96), 3)])
def test_vectorised_target_equals_per_joint_loop(size, hm, sigma):
    rng = np.random.default_rng(1)
    codec = HeatmapCodec(size, hm, sigma)
    for _ in range(20):
        k = 17
        joints = np.c_[
            rng.uniform(-40, size[0] + 40, k), rng.uniform(-40, size[1] + 40, k), rng.integers(0, 2, k)
        ].astype(np.float64)
        t, w = codec.encode(joints)
        rt, rw = reference_target(joints, size, hm, sigma)
        assert t.dtype == np.float32 and t.shape == (k, hm[1], hm[0]) and w.shape == (k, 1)
        np.testing.assert_array_equal(w, rw)
        np.testing.assert_allclose(t, rt, atol=1e-7)


def test_target_properties():
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    joints = np.array([[100.0, 120.0, 1], [50.0, 60.0, 0], [-100.0, 30.0, 1], [190.0, 5.0, 1]])
    t, w = codec.encode(joints)
    assert t[0].max() == 1.0 and np.unravel_index(t[0].argmax(), t[0].shape) == (30, 25)  # int(120/4+.5), int(100/4+.5)
    assert (t[0] > 0).sum() == 13 * 13  # radius 3 sigma = 6 cells
    assert w[:, 0].tolist() == [1, 0, 0, 1] and t[1].max() == 0 and t[2].max() == 0
    tw, ww = HeatmapCodec((192, 256), (48, 64), 2, joint_weights=np.arange(4) + 1.0).encode(joints)
    assert ww[:, 0].tolist() == [1, 0, 0, 4]


def _in_map(n, size, stride, rng, margin=0.0):
    """Random crop keypoints whose nearest heatmap cell is on the map (x / stride < w - 0.5)."""
    x = rng.uniform(margin, size[0] - stride / 2 - margin - 1e-6, n)
    y = rng.uniform(margin, size[1] - stride / 2 - margin - 1e-6, n)
    return np.c_[x, y, np.ones(n)]


@pytest.mark.parametrize("size,hm,sigma", [((192, 256), (48, 64), 2), ((288, 384), (72, 96), 3)])
def test_round_trip_official_within_half_cell(size, hm, sigma):
    rng = np.random.default_rng(0)
    codec = HeatmapCodec(size, hm, sigma)
    joints = _in_map(2040, size, 4, rng)
    batch = np.stack([codec.encode(joints[i : i + 17])[0] for i in range(0, 2040, 17)])
    coords, maxvals = codec.decode(batch)
    got = coords.reshape(-1, 2) * 4
    err = np.abs(got - joints[:, :2])
    assert err.max() <= 2.0 + 1e-6  # half a heatmap cell at stride 4
    assert np.all(maxvals == 1.0)
    # the decoded positions lie on the quarter-cell grid of the official refinement
    frac = np.mod(coords * 4, 1.0)
    assert np.all(np.isclose(frac, 0) | np.isclose(frac, 1))


@pytest.mark.parametrize("size,hm,sigma", [((192, 256), (48, 64), 2), ((288, 384), (72, 96), 3)])
def test_round_trip_dark_within_0p3_px(size, hm, sigma):
    """DARK: sub-pixel Gaussian centres + blur/log/Taylor decoding, for keypoints whose 3-sigma Gaussian lies on the map
    (the blur's zero padding biases peaks closer to the border, as in the DARK release)."""
    rng = np.random.default_rng(0)
    codec = HeatmapCodec(size, hm, sigma, dark=True)
    joints = _in_map(1700, size, 4, rng, margin=3 * sigma * 4)
    targets = np.stack([codec.encode(joints[i : i + 17])[0] for i in range(0, 1700, 17)])
    coords, _ = codec.decode(torch.from_numpy(targets))  # tensors are accepted too
    err = np.abs(coords.reshape(-1, 2) * 4 - joints[:, :2])
    assert err.max() < 0.3
    # without DARK decoding the same sub-pixel targets only reach the quarter-cell grid
    plain, _ = HeatmapCodec(size, hm, sigma).decode(targets)
    assert np.abs(plain.reshape(-1, 2) * 4 - joints[:, :2]).max() > 0.5


def test_decode_edge_cases():
    hm = np.zeros((1, 2, 64, 48), dtype=np.float32)
    hm[0, 0, 10, 20] = 1.0
    hm[0, 0, 10, 21] = 0.5  # right neighbour higher than left -> +0.25 in x
    hm[0, 1] = -1.0  # no positive response -> coordinate 0
    coords, maxvals = HeatmapCodec((192, 256), (48, 64), 2).decode(hm)
    np.testing.assert_allclose(coords[0], [[20.25, 10.0], [0.0, 0.0]])
    np.testing.assert_allclose(maxvals[0, :, 0], [1.0, -1.0])
    with pytest.raises(ValueError):
        get_max_preds(np.zeros((2, 64, 48)))


def test_heatmap_to_image_matches_inverse_affine():
    rng = np.random.default_rng(3)
    center = rng.uniform(100, 500, (5, 2))
    sw = rng.uniform(0.5, 3, 5)
    scale = np.c_[sw, sw / 0.75]
    coords = rng.uniform(0, 48, (5, 17, 2))
    got = heatmaps_to_image_coords(coords, center, scale, (48, 64))
    for i in range(5):
        inv = get_affine_transform(center[i], scale[i], 0, (48, 64), inverse=True)
        np.testing.assert_allclose(got[i], affine_transform_points(coords[i], inv), rtol=1e-5, atol=1e-3)
    # crop pixels (heatmap * stride) map to the same image points through the input-size transform
    inv_in = get_affine_transform(center[0], scale[0], 0, (192, 256), inverse=True)
    np.testing.assert_allclose(got[0], affine_transform_points(coords[0] * 4, inv_in), rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------- flip
def test_flip_pairs_match_facts():
    assert [list(p) for p in COCO_KEYPOINTS.flip_pairs] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
    assert [list(p) for p in MPII_KEYPOINTS.flip_pairs] == [[0, 5], [1, 4], [2, 3], [10, 15], [11, 14], [12, 13]]
    assert CROWDPOSE_KEYPOINTS.flip_index.tolist() == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13]
    # every pair joins a left and a right joint of the same part; unpaired joints are central
    for spec, (left, right) in ((COCO_KEYPOINTS, ("left_", "right_")), (MPII_KEYPOINTS, ("l_", "r_"))):
        names = spec.joint_names
        for a, b in spec.flip_pairs:
            na, nb = sorted([names[a], names[b]])
            assert na.startswith(left) and nb.startswith(right) and na[len(left):] == nb[len(right):]
        paired = {j for p in spec.flip_pairs for j in p}
        assert all(not (n.startswith(left) or n.startswith(right)) for i, n in enumerate(names) if i not in paired)
    perm = flip_permutation(17, COCO_KEYPOINTS.flip_pairs)
    assert np.array_equal(perm[perm], np.arange(17))
    with pytest.raises(ValueError):
        flip_permutation(4, [(0, 1), (1, 2)])


@pytest.mark.parametrize("spec", [COCO_KEYPOINTS, MPII_KEYPOINTS])
def test_flip_back_twice_is_identity(spec):
    rng = np.random.default_rng(0)
    hm = rng.random((2, spec.num_joints, 64, 48)).astype(np.float32)
    np.testing.assert_array_equal(flip_back(flip_back(hm, spec.flip_pairs, shift=False), spec.flip_pairs, shift=False), hm)
    t = torch.from_numpy(hm)
    assert torch.equal(flip_back(flip_back(t, spec.flip_pairs, shift=False), spec.flip_pairs, shift=False), t)
    np.testing.assert_array_equal(flip_back(t, spec.flip_pairs).numpy(), flip_back(hm, spec.flip_pairs))
    # shift: column j of the result is column j-1 of the unshifted flip (column 0 kept)
    a, b = flip_back(hm, spec.flip_pairs, shift=False), flip_back(hm, spec.flip_pairs, shift=True)
    np.testing.assert_array_equal(b[..., 1:], a[..., :-1])
    np.testing.assert_array_equal(b[..., 0], a[..., 0])


@pytest.mark.parametrize("spec", [COCO_KEYPOINTS, MPII_KEYPOINTS])
def test_flip_test_on_symmetric_input(spec):
    """A flip-equivariant model (``model(flip(x)) == flip_back(model(x))``) on a mirror-symmetric synthetic image:
    its heatmaps are their own flip (pairs swapped), the flip test reproduces the plain prediction (shift off),
    and flipping twice is the identity."""
    g = torch.Generator().manual_seed(0)
    k, pairs = spec.num_joints, spec.flip_pairs
    conv = torch.nn.Conv2d(3, k, 5, padding=2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.zero_()

    def base(x):  # arbitrary, not equivariant by itself
        return F.avg_pool2d(conv(x), 4)

    def model(x):  # symmetrised: equivariant by construction
        return base(x) + flip_back(base(x.flip(3)), pairs, shift=False)

    half = torch.rand(1, 3, 256, 96, generator=g)
    image = torch.cat([half, half.flip(3)], dim=3)  # [1, 3, 256, 192], mirror-symmetric
    assert torch.equal(image.flip(3), image) and torch.equal(image.flip(3).flip(3), image)
    with torch.no_grad():
        plain = model(image)
        assert plain.shape == (1, k, 64, 48)
        assert torch.allclose(flip_back(plain, pairs, shift=False), plain, atol=1e-5)
        assert torch.allclose(flip_test(model, image, pairs, shift=False), plain, atol=1e-5)
        assert torch.equal(flip_back(flip_back(plain, pairs, shift=False), pairs, shift=False), plain)
        # official shift: the flipped-back half of the average is the plain map moved one cell right
        shifted = flip_test(model, image, pairs, shift=True)
        assert torch.allclose(2 * shifted[..., 1:] - plain[..., 1:], plain[..., :-1], atol=1e-4)
        # a non-symmetric input: the equivariant model still passes the flip test unchanged
        other = torch.rand(1, 3, 256, 192, generator=g)
        assert torch.allclose(flip_test(model, other, pairs, shift=False), model(other), atol=1e-5)


def test_flip_test_shift_recovers_keypoints():
    """Official targets of a mirrored crop, flipped back with the 1-cell shift, decode near the original joints."""
    rng = np.random.default_rng(5)
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    pairs = COCO_KEYPOINTS.flip_pairs
    joints = _in_map(17, (192, 256), 4, rng, margin=16)
    mirrored = joints.copy()
    mirrored[:, 0] = 192 - joints[:, 0] - 1
    mirrored = mirrored[COCO_KEYPOINTS.flip_index]
    back = flip_back(codec.encode(mirrored)[0][None], pairs, shift=True)
    coords, _ = codec.decode(back)
    assert np.abs(coords[0] * 4 - joints[:, :2]).max() <= 4.0  # within one cell
    no_shift, _ = codec.decode(flip_back(codec.encode(mirrored)[0][None], pairs, shift=False))
    bias = lambda c: np.mean(c[0, :, 0] * 4 - joints[:, 0])  # noqa: E731
    assert abs(bias(coords)) < abs(bias(no_shift))  # the shift removes the systematic -x bias


# ----------------------------------------------------------------------------------------------------------- loss
def test_joints_mse_matches_official_definition():
    g = torch.Generator().manual_seed(0)
    out, gt = torch.rand(3, 17, 8, 6, generator=g), torch.rand(3, 17, 8, 6, generator=g)
    w = (torch.rand(3, 17, 1, generator=g) > 0.3).float()
    loss = JointsMSELoss(use_target_weight=True)(out, gt, w)
    ref = sum(
        0.5 * F.mse_loss(out[:, j].reshape(3, -1) * w[:, j], gt[:, j].reshape(3, -1) * w[:, j]) for j in range(17)
    ) / 17
    assert torch.allclose(loss, ref, atol=1e-7)
    unweighted = JointsMSELoss(use_target_weight=False)(out, gt, w)
    assert torch.allclose(unweighted, 0.5 * F.mse_loss(out, gt), atol=1e-7)
    # OHKM: per sample the mean of the k largest per-joint losses
    per = 0.5 * ((out - gt) * w[..., None]).pow(2).flatten(2).mean(2)
    ref_ohkm = torch.stack([per[b].sort(descending=True).values[:8].mean() for b in range(3)]).mean()
    assert torch.allclose(JointsMSELoss(topk=8)(out, gt, w), ref_ohkm, atol=1e-7)
    assert JointsMSELoss()(gt, gt, w).item() == 0.0
    with pytest.raises(ValueError):
        JointsMSELoss()(out, gt[:, :5], w)
    with pytest.raises(ValueError):
        JointsMSELoss(topk=20)(out, gt, w)
    # gradients flow only through labelled joints
    out.requires_grad_(True)
    JointsMSELoss()(out, gt, w).backward()
    assert torch.all(out.grad[w[..., 0] == 0] == 0) and out.grad.abs().sum() > 0


def test_codec_rejects_bad_input():
    with pytest.raises(ValueError):
        HeatmapCodec((192, 256), (48, 64), 0)
    with pytest.raises(ValueError):
        HeatmapCodec((192, 256), (48, 64), 2).encode(np.zeros((17, 4)))
    assert HeatmapCodec((192, 256), (48, 64), 2).blur_kernel == 11
    assert HeatmapCodec((288, 384), (72, 96), 3).blur_kernel == 17
    assert math.isclose(HeatmapCodec((192, 256), (48, 64), 2).stride[0], 4.0)
