"""OKS, OKS-NMS (vs a brute-force reference) and the official rescoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrnet_core.data.keypoints import COCO_KEYPOINTS, CROWDPOSE_KEYPOINTS
from hrnet_core.evaluation.coco_keypoints import coco_keypoint_results, rescore
from hrnet_core.evaluation.oks_nms import oks_iou, oks_matrix, oks_nms

SIGMAS = np.array(COCO_KEYPOINTS.sigmas)


def brute_oks(a, b, area_a, area_b, sigmas, in_vis_thr=None):
    """Scalar loops, straight from the OKS formula with the mean area of the two poses."""
    total, n = 0.0, 0
    for j in range(len(a)):
        if in_vis_thr is not None and not (a[j][2] > in_vis_thr and b[j][2] > in_vis_thr):
            continue
        d2 = (a[j][0] - b[j][0]) ** 2 + (a[j][1] - b[j][1]) ** 2
        var = (2 * sigmas[j]) ** 2
        s = (area_a + area_b) / 2 + np.spacing(1)
        total += math.exp(-d2 / var / s / 2)
        n += 1
    return total / n if n else 0.0


def brute_nms(kpts, scores, areas, thr, sigmas, in_vis_thr=None):
    remaining = sorted(range(len(kpts)), key=lambda i: (-scores[i], i))
    keep = []
    while remaining:
        i = remaining.pop(0)
        keep.append(i)
        remaining = [j for j in remaining if brute_oks(kpts[i], kpts[j], areas[i], areas[j], sigmas, in_vis_thr) <= thr]
    return keep


def random_poses(rng, n, k=17, spread=30.0):
    """Clusters of jittered poses (so that suppression actually happens)."""
    centers = rng.uniform(0, 500, (max(1, n // 4), 1, 2))
    base = centers + rng.uniform(-60, 60, (len(centers), k, 2))
    pick = rng.integers(0, len(base), n)
    xy = base[pick] + rng.normal(0, 1, (n, k, 2)) * rng.uniform(0.5, spread, (n, 1, 1))
    return np.concatenate([xy, rng.uniform(0, 1, (n, k, 1))], axis=2)


@pytest.mark.parametrize("seed", range(6))
def test_oks_nms_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    kpts = random_poses(rng, n)
    scores = rng.uniform(0, 1, n)
    areas = rng.uniform(500, 40000, n)
    for thr in (0.5, 0.9):
        keep = oks_nms(kpts, scores, areas, thr)
        assert keep.tolist() == brute_nms(kpts, scores, areas, thr, SIGMAS)
        assert 0 < len(keep) <= n
    keep = oks_nms(kpts, scores, areas, 0.9, in_vis_thr=0.2)
    assert keep.tolist() == brute_nms(kpts, scores, areas, 0.9, SIGMAS, in_vis_thr=0.2)
    if seed == 0:  # the clusters make NMS remove something
        assert len(oks_nms(kpts, scores, areas, 0.5)) < n


def test_oks_values():
    rng = np.random.default_rng(0)
    a, b = random_poses(rng, 5), random_poses(rng, 4)
    aa, ab = rng.uniform(1000, 9000, 5), rng.uniform(1000, 9000, 4)
    m = oks_matrix(a, b, aa, ab)
    for i in range(5):
        for j in range(4):
            assert math.isclose(m[i, j], brute_oks(a[i], b[j], aa[i], ab[j], SIGMAS), rel_tol=1e-12)
    np.testing.assert_allclose(oks_iou(a[0], b, aa[0], ab), m[0])
    np.testing.assert_allclose(np.diag(oks_matrix(a, a, aa, aa)), 1.0)
    # other layouts pass their sigmas
    c = random_poses(rng, 3, k=14)
    assert oks_matrix(c, c, np.ones(3) * 1e4, np.ones(3) * 1e4, CROWDPOSE_KEYPOINTS.sigmas).shape == (3, 3)
    with pytest.raises(ValueError):
        oks_matrix(c, c, np.ones(3), np.ones(3))  # COCO sigmas for 14 joints
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)).size == 0


def test_rescore_follows_facts():
    """Person score = box score x mean of the joint scores > 0.2 (0 when none passes)."""
    js = np.array([[0.9, 0.1, 0.5, 0.2], [0.1, 0.05, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0]])
    kp = np.concatenate([np.zeros((3, 4, 2)), js[..., None]], axis=2)
    box = np.array([0.8, 0.9, 0.5])
    np.testing.assert_allclose(rescore(kp, box), [0.8 * (0.9 + 0.5) / 2, 0.0, 0.5])
    np.testing.assert_allclose(rescore(js, box, in_vis_thr=0.0), [0.8 * 1.7 / 4, 0.9 * 0.35 / 3, 0.5])


def test_coco_keypoint_results_rescore_and_nms_per_image():
    rng = np.random.default_rng(1)
    base = random_poses(rng, 1)[0]
    kp = np.stack([base, base + 0.5, base + 200, base])  # 0 and 1 overlap, 2 is far, 3 is on another image
    kp[..., 2] = 0.9
    kp[1, :, 2] = 0.5
    out = coco_keypoint_results(kp, [5, 5, 5, 9], [1.0, 1.0, 0.5, 1.0], [1e4] * 4, centers=np.zeros((4, 2)))
    assert [(r["image_id"], round(r["score"], 6)) for r in out] == [(5, 0.9), (5, 0.45), (9, 0.9)]
    assert "center" in out[0] and out[0]["category_id"] == 1
    no_nms = coco_keypoint_results(kp, [5, 5, 5, 9], [1.0, 1.0, 0.5, 1.0], [1e4] * 4, oks_thr=None)
    assert len(no_nms) == 4
    with pytest.raises(ValueError):
        coco_keypoint_results(kp, [5, 5], [1.0] * 4, [1e4] * 4)
