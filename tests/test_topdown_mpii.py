"""MPII reader and PCKh on ``../shared/data/samples/mpii`` (skipped without it).

The sample json (official HRNet layout) carries no head boxes, and the official ``gt_valid.mat`` is not part of the
samples; the tests therefore write a ``gt_valid.mat`` in the official layout (``headboxes_src [2, 2, N]``,
``pos_gt_src [16, 2, N]``, 1-based) with a test head box per person: the square spanned by upper neck and head top.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import savemat

from hrnet_core.data.io import AnnotationError, read_image
from hrnet_core.data.mpii import MpiiKeypoints
from hrnet_core.data.transforms import TopDownTransform
from hrnet_core.evaluation.pckh import evaluate_mpii, pckh
from tests.official import DATA_DIR

SAMPLES = DATA_DIR / "samples" / "mpii"
ANN = SAMPLES / "test_mpii.json"
pytestmark = pytest.mark.skipif(not ANN.is_file(), reason="../shared/data/samples/mpii is absent")


def make_headboxes(entries):
    """[N, 2, 2] 1-based test head boxes: a square centred between upper neck (8) and head top (9)."""
    boxes = []
    for e in entries:
        neck, top = np.asarray(e["joints"][8]), np.asarray(e["joints"][9])
        mid, half = (neck + top) / 2, np.linalg.norm(top - neck) / 2
        boxes.append([mid - half, mid + half])
    return np.asarray(boxes)



@pytest.fixture()
def gt_valid(tmp_path):
    entries = json.loads(ANN.read_text())
    hb = make_headboxes(entries)
    pos = np.asarray([e["joints"] for e in entries], dtype=np.float64)
    path = tmp_path / "gt_valid.mat"
    savemat(
        path,
        {
            "headboxes_src": hb.transpose(1, 2, 0),
            "pos_gt_src": pos.transpose(1, 2, 0),
            "jnt_missing": 1 - np.asarray([e["joints_vis"] for e in entries]).T,
        },
    )
    return path, hb


def test_records_follow_official_conventions(gt_valid):
    ds = MpiiKeypoints(ANN, SAMPLES, headbox_file=gt_valid[0])
    entries = json.loads(ANN.read_text())
    assert len(ds) == 5 and ds.num_joints == 16 and ds.sigmas is None and ds.has_headboxes
    for r, e in zip(ds.records, entries):
        s = e["scale"]
        np.testing.assert_allclose(r["scale"], [s * 1.25, s * 1.25])
        np.testing.assert_allclose(r["center"], [e["center"][0] - 1, e["center"][1] + 15 * s - 1])
        np.testing.assert_allclose(r["joints"][:, :2], np.asarray(e["joints"]) - 1)
        np.testing.assert_array_equal(r["joints"][:, 2], e["joints_vis"])
    assert ds.records[0]["image_id"] == 5808361 and ds.records[0]["image_name"] == "005808361.jpg"
    t = TopDownTransform((256, 256), (64, 64), 2, ds.flip_pairs, train=False)
    s = t(ds.records[2], read_image(ds.records[2]["image_file"]))
    assert s["image"].shape == (3, 256, 256) and s["target"].shape == (16, 64, 64)
    assert s["target_weight"][:, 0].tolist() == [float(v) for v in entries[2]["joints_vis"]]


def test_ground_truth_scores_100(gt_valid):
    ds = MpiiKeypoints(ANN, SAMPLES, headbox_file=gt_valid[0])
    pred = np.stack([r["joints"][:, :2] for r in ds.records])
    res = evaluate_mpii(pred, ds.records)
    assert res["PCKh"] == 100.0 and res["PCKh@0.1"] == 100.0 and res["PCKh@0.1_official"] == 100.0
    table = res["table"]
    assert [table[k] for k in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")] == [100.0] * 8
    assert len(table["per_joint"]) == 16 and table["count"]["r_ankle"] == 3 and table["count"]["head_top"] == 5


def test_known_displacement_matches_hand_computation(gt_valid):
    ds = MpiiKeypoints(ANN, SAMPLES, headbox_file=gt_valid[0])
    gt = np.stack([r["joints"][:, :2] for r in ds.records])
    hb = gt_valid[1]
    head = np.linalg.norm(hb[:, 1] - hb[:, 0], axis=1) * 0.6  # px
    # people 0, 1 moved by 0.4 head sizes (correct at 0.5), people 2-4 by 0.6 (wrong); along a 3-4-5 direction
    factor = np.array([0.4, 0.4, 0.6, 0.6, 0.6])
    pred = gt + (factor * head)[:, None, None] * np.array([0.6, 0.8])
    res = evaluate_mpii(pred, ds.records)
    t = res["table"]
    # people 2 and 3 lack r_ankle (0) and l_ankle (5): those joints are labelled on people 0, 1, 4 -> 2/3 correct;
    # every other joint is labelled on all 5 people -> 2/5 correct
    assert t["Ankle"] == pytest.approx(200 / 3)
    for name in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee"):
        assert t[name] == pytest.approx(40.0)
    assert t["per_joint"]["pelvis"] == pytest.approx(40.0) and t["per_joint"]["r_ankle"] == pytest.approx(200 / 3)
    # Mean: pelvis and thorax excluded; 14 joints, counts 2 x 3 + 12 x 5 = 66, correct 2 x 2 + 12 x 2 = 28
    assert res["PCKh"] == pytest.approx(100 * 28 / 66)
    assert res["PCKh@0.1"] == 0.0
    # at 0.11 (the official "Mean@0.1") and 0.1, a 0.105 head-size error separates the two definitions
    near = gt + (0.105 * head)[:, None, None] * np.array([1.0, 0.0])
    res2 = evaluate_mpii(near, ds.records)
    assert res2["PCKh@0.1"] == 0.0 and res2["PCKh@0.1_official"] == 100.0
    # just inside the threshold counts as correct
    edge = gt + (0.5 * head)[:, None, None] * np.array([1.0, 0.0]) * (1 - 1e-12)
    assert evaluate_mpii(edge, ds.records)["PCKh"] == 100.0


def test_pckh_function_contract():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (4, 16, 2))
    vis = np.ones((4, 16), bool)
    vis[:, 9] = False  # head top never labelled
    hb = np.tile(np.array([[0.0, 0.0], [10.0, 10.0]]), (4, 1, 1))
    out = pckh(gt, gt, vis, hb, 0.5)
    assert np.isnan(out["per_joint"]["head_top"]) and np.isnan(out["Head"]) and out["Mean"] == 100.0
    with pytest.raises(ValueError):
        pckh(gt[:, :15], gt, vis, hb)


def test_headbox_sources_and_errors(tmp_path, gt_valid):
    entries = json.loads(ANN.read_text())
    hb = make_headboxes(entries)
    # 1. a headbox field in the json
    with_field = [dict(e, headbox=b.tolist()) for e, b in zip(entries, hb)]
    p = tmp_path / "valid_hb.json"
    p.write_text(json.dumps(with_field))
    a = MpiiKeypoints(p, SAMPLES)
    # 2. a json list beside the annotation file
    q = tmp_path / "headboxes.json"
    q.write_text(json.dumps(hb.tolist()))
    b = MpiiKeypoints(ANN, SAMPLES, headbox_file=q)
    c = MpiiKeypoints(ANN, SAMPLES, headbox_file=gt_valid[0])
    for ra, rb, rc in zip(a.records, b.records, c.records):
        np.testing.assert_allclose(ra["headbox"], rb["headbox"])
        np.testing.assert_allclose(ra["headbox"], rc["headbox"])
    # no head boxes: reading works, scoring refuses
    plain = MpiiKeypoints(ANN, SAMPLES)
    assert not plain.has_headboxes
    with pytest.raises(ValueError, match="head box"):
        evaluate_mpii(np.zeros((5, 16, 2)), plain.records)
    # wrong count / misaligned gt_valid.mat
    q.write_text(json.dumps(hb[:3].tolist()))
    with pytest.raises(AnnotationError, match="3 boxes"):
        MpiiKeypoints(ANN, SAMPLES, headbox_file=q)
    pos = np.asarray([e["joints"] for e in entries], dtype=np.float64)[::-1]
    bad = tmp_path / "bad_gt_valid.mat"
    savemat(bad, {"headboxes_src": hb.transpose(1, 2, 0), "pos_gt_src": pos.transpose(1, 2, 0)})
    with pytest.raises(AnnotationError, match="does not line up"):
        MpiiKeypoints(ANN, SAMPLES, headbox_file=bad)
    # a missing image
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([dict(entries[0], image="nope.jpg")]))
    with pytest.raises(AnnotationError, match="nope.jpg"):
        MpiiKeypoints(missing, SAMPLES)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([dict(entries[0], joints=entries[0]["joints"][:15])]))
    with pytest.raises(AnnotationError, match="entry 0"):
        MpiiKeypoints(broken, SAMPLES)


def test_official_mat_ground_truth_is_used_for_pckh(tmp_path):
    """With gt_valid.mat, PCKh scores against its joints and ``jnt_missing`` flags (as the official script does)."""
    entries = json.loads(ANN.read_text())
    hb = make_headboxes(entries)
    pos = np.asarray([e["joints"] for e in entries], dtype=np.float64)
    missing = 1 - np.asarray([e["joints_vis"] for e in entries], dtype=np.float64)
    missing[0, 9] = 1  # the .mat marks person 0's head top as missing
    path = tmp_path / "gt_valid.mat"
    savemat(path, {"headboxes_src": hb.transpose(1, 2, 0), "pos_gt_src": pos.transpose(1, 2, 0), "jnt_missing": missing.T})
    ds = MpiiKeypoints(ANN, SAMPLES, headbox_file=path)
    pred = np.stack([r["joints"][:, :2] for r in ds.records])
    pred[0, 9] += 1000  # wrong, but not labelled in the .mat
    res = evaluate_mpii(pred, ds.records)
    assert res["table"]["count"]["head_top"] == 4 and res["table"]["Head"] == 100.0 and res["PCKh"] == 100.0
