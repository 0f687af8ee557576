"""The synthetic COCO-format keypoint generator (the pipeline's offline default data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrnet_core.data.synthetic import COCO_KEYPOINT_NAMES, DETECTIONS_FILE, generate_dataset, render_image, SyntheticConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate_dataset(out, num_train=40, num_val=10, seed=3)
    return out, summary


def _load(out, split):
    return json.loads((out / "annotations" / f"person_keypoints_{split}.json").read_text())


def test_layout_and_summary(dataset):
    out, summary = dataset
    for split, n in (("train2017", 40), ("val2017", 10)):
        coco = _load(out, split)
        assert len(coco["images"]) == n == summary["splits"][split]["images"]
        assert len(list((out / split).glob("*.jpg"))) == n
        assert coco["categories"][0]["keypoints"] == COCO_KEYPOINT_NAMES
    assert (out / DETECTIONS_FILE.format(split="val2017")).is_file()
    train = summary["splits"]["train2017"]
    assert train["labeled_people"] >= 40, "at least one labeled person per image"
    assert train["crowd"] >= 1, "crowd regions occur"


def test_same_seed_same_bytes(dataset, tmp_path):
    out, _ = dataset
    generate_dataset(tmp_path, num_train=3, num_val=0, seed=3)
    a = _load(tmp_path, "train2017")
    b = _load(out, "train2017")
    first3 = {i["id"] for i in a["images"]}
    assert a["images"] == [i for i in b["images"] if i["id"] in first3]
    assert a["annotations"] == [x for x in b["annotations"] if x["image_id"] in first3]
    for img in a["images"]:
        assert (tmp_path / "train2017" / img["file_name"]).read_bytes() == (out / "train2017" / img["file_name"]).read_bytes()


def test_annotations_follow_coco_conventions(dataset):
    out, _ = dataset
    coco = _load(out, "train2017")
    sizes = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
    vis_counts = np.zeros(3, int)
    for a in coco["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=float).reshape(17, 3)
        w, h = sizes[a["image_id"]]
        assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert (kp[kp[:, 2] == 0, :2] == 0).all(), "unlabeled joints are (0, 0, 0)"
        lab = kp[kp[:, 2] > 0]
        assert ((lab[:, 0] >= 0) & (lab[:, 0] < w) & (lab[:, 1] >= 0) & (lab[:, 1] < h)).all()
        x, y, bw, bh = a["bbox"]
        assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
        assert a["area"] > 0
        if a["iscrowd"]:
            assert a["num_keypoints"] == 0 and isinstance(a["segmentation"], dict)
            assert sum(a["segmentation"]["counts"]) == w * h, "uncompressed RLE covers the image"
        else:
            assert isinstance(a["segmentation"], list)
        vis_counts += np.bincount(kp[:, 2].astype(int), minlength=3)
    assert vis_counts[1] > 0 and vis_counts[2] > vis_counts[1], "occluded (v=1) and visible (v=2) joints both occur"
    assert vis_counts[0] > 0, "some joints are unlabeled (outside the image / back view)"


def test_readers_and_evaluator_accept_the_data(dataset):
    """pycocotools reads the files, and ground truth scored against itself gives AP = 1."""
    from hrnet_core.data.coco import CocoKeypoints
    from hrnet_core.evaluation.coco_keypoints import evaluate_coco_keypoints, write_coco_results

    out, _ = dataset
    ann = out / "annotations" / "person_keypoints_val2017.json"
    gt = CocoKeypoints(ann, out / "val2017")
    assert len(gt.records) > 0 and gt.num_joints == 17
    det = CocoKeypoints(ann, out / "val2017", detections=out / DETECTIONS_FILE.format(split="val2017"))
    assert len(det.records) > 0
    coco = json.loads(ann.read_text())
    results = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0}
               for a in coco["annotations"] if a["num_keypoints"] > 0]
    path = write_coco_results(results, out / "gt_as_results.json")
    stats = evaluate_coco_keypoints(ann, path)
    assert stats["AP"] == pytest.approx(1.0)


def test_render_image_is_rgb_uint8_with_people():
    rng = np.random.default_rng(0)
    img, anns = render_image(rng, SyntheticConfig(width_range=(120, 120), height_range=(100, 100)))
    assert img.shape == (100, 120, 3) and img.dtype == np.uint8
    assert any(a["num_keypoints"] > 0 for a in anns)
    assert img.std() > 10, "not a blank image"
