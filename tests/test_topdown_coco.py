"""COCO top-down data and evaluation on the real samples in ``../shared/data`` (skipped without them)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnet_core.codecs.heatmap import HeatmapCodec, flip_back
from hrnet_core.data.coco import CocoKeypoints
from hrnet_core.data.io import AnnotationError, ImageReadError, read_image
from hrnet_core.data.topdown import TopDownDataset
from hrnet_core.data.transforms import TopDownTransform, fliplr_joints
from hrnet_core.evaluation.coco_keypoints import (
    COCO_METRIC_NAMES,
    coco_keypoint_results,
    evaluate_coco_keypoints,
    write_coco_results,
)
from tests.official import DATA_DIR

SAMPLES = DATA_DIR / "samples" / "coco"
SAMPLE_ANN = SAMPLES / "test_coco.json"
SAMPLE_DET = SAMPLES / "test_coco_det_AP_H_56.json"
MINI = DATA_DIR / "coco_mini"
MINI_ANN = MINI / "annotations" / "person_keypoints_train2017.json"

needs_samples = pytest.mark.skipif(not SAMPLE_ANN.is_file(), reason="../shared/data/samples/coco is absent")
needs_mini = pytest.mark.skipif(not MINI_ANN.is_file(), reason="../shared/data/coco_mini is absent")


def pycocotools_stats(ann_file, res_file):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def gt_results(ds, shift=(0.0, 0.0)):
    return [
        {
            "image_id": r["image_id"],
            "keypoints": np.c_[r["joints"][:, :2] + np.asarray(shift), np.ones(ds.num_joints)],
            "score": 1.0,
        }
        for r in ds.records
    ]


# ---------------------------------------------------------------------------------------------- acceptance 1
@needs_samples
def test_ground_truth_scores_ap_1_and_shift_matches_pycocotools(tmp_path):
    ds = CocoKeypoints(SAMPLE_ANN, SAMPLES)
    assert {r["image_id"] for r in ds.records} == {785, 40083, 196141, 197388}
    path = write_coco_results(gt_results(ds), tmp_path / "gt.json")
    stats = evaluate_coco_keypoints(SAMPLE_ANN, path)
    assert set(stats) == set(COCO_METRIC_NAMES)
    assert stats["AP"] == 1.0 and stats["AP50"] == 1.0 and stats["AR"] == 1.0
    # the official results format
    entry = json.loads(path.read_text())[0]
    assert set(entry) == {"image_id", "category_id", "keypoints", "score"} and len(entry["keypoints"]) == 51

    moved = write_coco_results(gt_results(ds, shift=(8.0, 0.0)), tmp_path / "moved.json")
    ours = evaluate_coco_keypoints(SAMPLE_ANN, moved)
    ref = pycocotools_stats(SAMPLE_ANN, moved)
    print("AP with every keypoint moved 8 px:", ours["AP"], "pycocotools:", ref[0])
    assert ours["AP"] < 1.0
    np.testing.assert_allclose([ours[k] for k in COCO_METRIC_NAMES], ref, rtol=0, atol=1e-12)
    # a COCO object works as well as a path
    assert evaluate_coco_keypoints(ds.coco, moved)["AP"] == ours["AP"]


@needs_samples
def test_evaluator_errors(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(AnnotationError, match="empty.json"):
        evaluate_coco_keypoints(SAMPLE_ANN, empty)
    bad = write_coco_results([{"image_id": 123456789, "keypoints": np.zeros((17, 3)), "score": 1}], tmp_path / "b.json")
    with pytest.raises(AnnotationError, match="123456789"):
        evaluate_coco_keypoints(SAMPLE_ANN, bad)
    with pytest.raises(ValueError, match="score"):
        write_coco_results([{"image_id": 1, "keypoints": np.zeros((17, 3))}], tmp_path / "c.json")


@needs_samples
def test_end_to_end_encode_decode_postprocess_scores_high(tmp_path):
    """Records -> crop + official targets -> (flip test) -> decode -> image coords -> rescoring + OKS-NMS -> AP.
    The targets stand in for a perfect network; the only errors left are the heatmap quantisation."""
    ds = CocoKeypoints(SAMPLE_ANN, SAMPLES)
    t = TopDownTransform((192, 256), (48, 64), 2, ds.flip_pairs, train=False)
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    samples = [t(r, read_image(r["image_file"])) for r in ds.records]
    heatmaps = np.stack([s["target"] for s in samples])
    center = np.stack([s["center"] for s in samples])
    scale = np.stack([s["scale"] for s in samples])
    # a perfect network's heatmaps for the mirrored crops (input.flip(3)): targets of the mirrored crop joints
    mirrored = np.stack([codec.encode(fliplr_joints(s["joints"], 192, ds.flip_pairs))[0] for s in samples])
    flip_avg = 0.5 * (heatmaps + flip_back(mirrored, ds.flip_pairs, shift=True))
    aps = {}
    for name, hm in (("plain", heatmaps), ("flip", flip_avg)):
        coords, maxvals = codec.decode_to_image(hm, center, scale)
        kp = np.concatenate([coords, maxvals], axis=2)
        results = coco_keypoint_results(
            kp, [s["image_id"] for s in samples], [s["score"] for s in samples], [s["area"] for s in samples],
            centers=center, scales=scale,
        )
        assert len(results) == len(samples)  # distinct people are not suppressed
        aps[name] = evaluate_coco_keypoints(ds.coco, write_coco_results(results, tmp_path / f"{name}.json"))["AP"]
    print("end-to-end AP", aps)
    assert aps["plain"] > 0.9 and aps["flip"] > 0.9, aps


# ---------------------------------------------------------------------------------------------- acceptance 7
def expected_people(ann_file):
    """Independent count of the people the official reader keeps (non-crowd persons with a labelled keypoint)."""
    d = json.loads(ann_file.read_text())
    return [
        a["id"] for a in d["annotations"]
        if not a["iscrowd"] and a["category_id"] == 1 and max(a["keypoints"]) > 0 and a["area"] > 0
    ]


@needs_mini
@pytest.mark.parametrize("size,hm", [((192, 256), (48, 64)), ((288, 384), (72, 96))])
def test_coco_mini_records_and_crops(size, hm):
    ds = CocoKeypoints(MINI_ANN, MINI / "train2017")
    raw = json.loads(MINI_ANN.read_text())
    assert len(raw["images"]) == 80
    keep = expected_people(MINI_ANN)
    assert sorted(r["ann_id"] for r in ds.records) == sorted(keep)
    assert any(a["iscrowd"] for a in raw["annotations"]) and any(max(a["keypoints"]) == 0 for a in raw["annotations"])
    r = ds.records[0]
    assert r["joints"].shape == (17, 3) and set(np.unique(r["joints"][:, 2])) <= {0.0, 1.0}
    assert np.isclose(r["scale"][0] / r["scale"][1], 0.75) and r["score"] == 1.0
    t = TopDownTransform(size, hm, 2 if hm[0] == 48 else 3, ds.flip_pairs, train=True)
    data = TopDownDataset(ds.records, t, seed=0)
    for i in (0, len(data) - 1):
        s = data[i]
        assert s["image"].shape == (3, size[1], size[0]) and s["target"].shape == (17, hm[1], hm[0])
        assert s["target_weight"].shape == (17, 1) and np.isfinite(s["image"]).all()
    a, b = data[3], data[3]
    np.testing.assert_array_equal(a["image"], b["image"])
    data.set_epoch(1)
    assert not np.array_equal(data[3]["image"], a["image"])


@needs_samples
def test_detection_boxes(tmp_path):
    ds = CocoKeypoints(SAMPLE_ANN, SAMPLES, detections=SAMPLE_DET)
    dets = json.loads(SAMPLE_DET.read_text())
    assert ds.box_source == "detections" and len(ds.records) == len(dets) == 118
    assert all(r["joints"].sum() == 0 for r in ds.records)
    thr = CocoKeypoints(SAMPLE_ANN, SAMPLES, detections=SAMPLE_DET, det_score_thr=0.5)
    assert len(thr.records) == sum(d["score"] >= 0.5 for d in dets)
    assert {round(r["score"], 6) for r in thr.records} == {round(d["score"], 6) for d in dets if d["score"] >= 0.5}
    t = TopDownTransform((288, 384), (72, 96), 3, ds.flip_pairs, train=False)
    s = t(thr.records[0], read_image(thr.records[0]["image_file"]))
    assert s["image"].shape == (3, 384, 288) and s["score"] == thr.records[0]["score"]
    # ground truth vs detections must be chosen explicitly
    with pytest.raises(ValueError, match="choose one"):
        CocoKeypoints(SAMPLE_ANN, SAMPLES, detections=SAMPLE_DET, use_gt_boxes=True)
    with pytest.raises(ValueError):
        CocoKeypoints(SAMPLE_ANN, SAMPLES, use_gt_boxes=False)
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}]))
    with pytest.raises(AnnotationError, match="image_id 1"):
        CocoKeypoints(SAMPLE_ANN, SAMPLES, detections=bad)


@pytest.fixture()
def sample_copy(tmp_path):
    if not SAMPLE_ANN.is_file():
        pytest.skip("../shared/data/samples/coco is absent")
    dst = tmp_path / "coco"
    shutil.copytree(SAMPLES, dst)
    return dst


def test_corrupt_image_raises_one_clear_error(sample_copy):
    ds = CocoKeypoints(sample_copy / "test_coco.json", sample_copy)
    victim = sample_copy / "000000040083.jpg"
    data = TopDownDataset(ds.records, TopDownTransform((192, 256), (48, 64), 2, ds.flip_pairs, train=False))
    idx = next(i for i, r in enumerate(ds.records) if r["image_file"] == str(victim))
    blob = victim.read_bytes()
    victim.write_bytes(blob[: len(blob) // 2])  # truncated download
    with pytest.raises(ImageReadError, match="000000040083.jpg") as err:
        data[idx]
    assert err.value.path == str(victim) and "truncated" in str(err.value)
    victim.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError, match="000000040083.jpg"):
        read_image(victim)
    victim.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(victim)


def test_missing_image_raises_one_clear_error(sample_copy):
    (sample_copy / "000000196141.jpg").unlink()
    with pytest.raises(AnnotationError, match="000000196141.jpg") as err:
        CocoKeypoints(sample_copy / "test_coco.json", sample_copy)
    assert "test_coco.json" in str(err.value)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(sample_copy / "000000196141.jpg")


def test_malformed_annotation_raises(sample_copy):
    ann = sample_copy / "test_coco.json"
    d = json.loads(ann.read_text())
    d["annotations"][2]["keypoints"] = d["annotations"][2]["keypoints"][:-3]
    ann.write_text(json.dumps(d))
    with pytest.raises(AnnotationError, match=str(d["annotations"][2]["id"])):
        CocoKeypoints(ann, sample_copy)
    ann.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid json"):
        CocoKeypoints(ann, sample_copy)
    with pytest.raises(AnnotationError, match="not found"):
        CocoKeypoints(sample_copy / "nope.json", sample_copy)
