"""The pose_tracking task (issue 17): PoseTrack reader, results writer + metrics against hand computations, optical
flow propagation, greedy association, the tracker, generated clips and the task through the spine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrnet_core.data.posetrack import keypoint_box, load_detections, load_posetrack
from hrnet_core.evaluation.posetrack import average_precision, evaluate_posetrack, read_results, results_json

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE = SHARED / "data" / "samples" / "posetrack18"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/data/samples/posetrack18 not available")


def _gt_results(gt, change=None):
    """GT poses + track ids through our writer (one results json per sequence), read back."""
    out = []
    for vid, ids in gt.sequences.items():
        people = {}
        for i in ids:
            people[i] = [{"track_id": p.track_id, "keypoints": p.keypoints.copy(), "score": 1.0}
                         for p in gt.people[i] if gt.frames[i].is_labeled]
            if change is not None:
                change(i, people[i])
        out.append(results_json([{"image_id": i, "file_name": gt.frames[i].file_name} for i in ids], people))
    return read_results(json.loads(json.dumps(out)))


# ------------------------------------------------------------------------------------------------ constructed data


def _person(cx, cy, h=100.0, ears=False):
    """A PoseTrack-layout person [17, 3] (v=1) roughly of height h around (cx, cy) and its head box."""
    offs = np.array([[0, -40], [0, -30], [0, -50], [-5, -42], [5, -42], [-12, -25], [12, -25], [-18, -8], [18, -8],
                     [-20, 8], [20, 8], [-8, 5], [8, 5], [-9, 25], [9, 25], [-9, 48], [9, 48]], np.float64) * h / 100
    k = np.concatenate([offs + [cx, cy], np.ones((17, 1))], 1)
    if not ears:
        k[3:5] = 0
    return k, np.array([cx - 10 * h / 100, cy - 52 * h / 100, 20 * h / 100, 24 * h / 100])


def _write_seq(tmp: Path, frames: int = 3, n: int = 2, regions=None) -> Path:
    """Per-sequence json: ``n`` people walking right, ``frames`` frames, all labelled."""
    images, anns = [], []
    for t in range(frames):
        iid = 1000 + t
        img = {"id": iid, "file_name": f"images/val/seq/{t:06d}.jpg", "vid_id": "000001", "frame_id": iid,
               "is_labeled": True, "width": 640, "height": 480}
        if regions and t in regions:
            img["ignore_regions_x"] = [list(regions[t][:, 0])]
            img["ignore_regions_y"] = [list(regions[t][:, 1])]
        images.append(img)
        for p in range(n):
            k, head = _person(100 + 150 * p + 5 * t, 200)
            anns.append({"id": iid * 10 + p, "image_id": iid, "track_id": p, "keypoints": k.reshape(-1).tolist(),
                         "bbox_head": head.tolist(), "bbox": [0, 0, 1, 1]})
    path = tmp / "annotations" / "val" / "000001_mpii_test.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    return path.parent


def test_constructed_gt_scores_100(tmp_path):
    gt = load_posetrack(_write_seq(tmp_path))
    m = evaluate_posetrack(gt, _gt_results(gt))
    assert m["mAP"] == pytest.approx(100.0) and m["MOTA"] == pytest.approx(100.0)
    assert m["precision"] == pytest.approx(100.0) and m["recall"] == pytest.approx(100.0)
    assert "AP/left_ear" not in m and "MOTA/left_ear" not in m  # poseval's 15 joints have no ears
    assert m["num_objects"] == 2 * 2 * 15  # poseval leaves the last frame out of the tracking metrics (old 3 * 2 * 15)


def test_identity_swap_lowers_mota_by_hand_count(tmp_path):
    """Swap the two ids in the middle frame of 3: poseval tracks frames 0 and 1 only (the last frame is left out), so
    per joint 2 switches entering it over 4 objects -> MOTA = 50 (old, with the last frame: 4 switches over 6
    objects, 33.33); AP does not look at ids."""
    gt = load_posetrack(_write_seq(tmp_path, frames=3))

    def swap(iid, people):
        if iid == 1001:
            people[0]["track_id"], people[1]["track_id"] = people[1]["track_id"], people[0]["track_id"]

    m = evaluate_posetrack(gt, _gt_results(gt, swap))
    assert m["num_switches"] == 2 * 15
    assert m["MOTA"] == pytest.approx(100.0 * (1 - 2 / 4))
    assert m["mAP"] == pytest.approx(100.0)
    # swapping in the last frame: not seen by the tracking metrics (old: 2 switches per joint, MOTA 66.67)
    m = evaluate_posetrack(gt, _gt_results(gt, lambda i, p: swap(1001, p) if i == 1002 else None))
    assert m["MOTA"] == pytest.approx(100.0)


def test_moved_joints_lower_ap_by_hand(tmp_path):
    """Move the left wrist of person 1 in frame 0 beyond half the head size. Scores: that person's joints 0.5 in that
    frame, every other joint 1.0. For the left wrist (6 GT): 5 TPs ranked first, then the FP -> AP = 5/6; AP = 100
    elsewhere, and the tracking (frames 0 and 1: the last is left out) counts one miss and one false positive for that
    joint over 4 objects (MOTA_j = 1 - 2/4; old, with the last frame, 1 - 2/6)."""
    gt = load_posetrack(_write_seq(tmp_path, frames=3))
    head = gt.people[1000][1].bbox_head
    move = 0.6 * 0.6 * np.hypot(head[2], head[3])  # 0.6 head sizes > the 0.5 threshold

    def change(iid, people):
        if iid == 1000:
            people[1]["keypoints"][:, 2] = 0.5
            people[1]["keypoints"][9, 0] += move

    m = evaluate_posetrack(gt, _gt_results(gt, change))
    assert m["AP/left_wrist"] == pytest.approx(100.0 * 5 / 6)
    assert m["mAP"] == pytest.approx((14 * 100.0 + 100.0 * 5 / 6) / 15)
    assert m["MOTA/left_wrist"] == pytest.approx(100.0 * (1 - 2 / 4))
    # ranked first instead (score 1.0 for the moved person, 0.5 for the others): precisions 0, 1/2, 2/3, ..., 5/6;
    # interpolated (the best precision at this or a higher recall) every one of the 5 recall steps of 1/6 gets 5/6
    def first(iid, people):
        for p in people:
            p["keypoints"][:, 2] = 0.5
        if iid == 1000:
            people[1]["keypoints"][:, 2] = 1.0
            people[1]["keypoints"][9, 0] += move

    m = evaluate_posetrack(gt, _gt_results(gt, first))
    assert m["AP/left_wrist"] == pytest.approx(100.0 * (5 / 6) * (5 / 6))


def test_ignore_regions_remove_joints(tmp_path):
    """A false-positive person inside an ignore region costs nothing; the same person outside costs AP and MOTA."""
    region = np.array([[500, 100], [639, 100], [639, 400], [500, 400]], np.float64)
    gt = load_posetrack(_write_seq(tmp_path, frames=2, regions={0: region}))

    def add(at):
        def change(iid, people):
            if iid == 1000:
                people.append({"track_id": 9, "keypoints": _person(at, 200)[0], "score": 1.0})
        return change

    assert evaluate_posetrack(gt, _gt_results(gt, add(560)))["MOTA"] == pytest.approx(100.0)
    m = evaluate_posetrack(gt, _gt_results(gt, add(430)))
    assert m["MOTA"] < 100.0 and m["mAP"] < 100.0 and m["num_false_positives"] == 15


def test_average_precision_hand_values():
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 2) == pytest.approx(
        100.0 * (0.5 * 1.0 + 0.5 * 2 / 3))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 0) == 0.0  # poseval: no detections -> 0 (old NaN)
    assert average_precision(np.array([0.5]), np.array([0], bool), 3) == 0.0


def test_results_writer_refuses_duplicate_track_ids():
    k = _person(100, 100)[0]
    with pytest.raises(ValueError, match="track id 3 twice in image 7"):
        results_json([{"image_id": 7, "file_name": "a.jpg"}],
                      {7: [{"track_id": 3, "keypoints": k}, {"track_id": 3, "keypoints": k}]})


# ------------------------------------------------------------------------------------------------ real sample


@needs_sample
@pytest.mark.parametrize("source", ["annotations/val", "annotations/test_posetrack18_val.json"])
def test_sample_gt_through_writer_scores_100(source):
    """Acceptance 1: GT poses + track ids of the real sample sequences through our writer: mAP 100, MOTA 100."""
    gt = load_posetrack(SAMPLE / source)
    assert sorted(gt.sequences) == ["003418", "009473", "012834"]
    assert sum(len(v) for v in gt.people.values()) == 14
    assert any(f.ignore_regions for f in gt.frames.values())
    m = evaluate_posetrack(gt, _gt_results(gt))
    assert m["mAP"] == pytest.approx(100.0) and "AP/left_ear" not in m  # poseval's 15 joints
    # one labelled frame per sequence: poseval leaves each sequence's last frame out of the tracking metrics
    assert m["num_eval_frames"] == 3 and m["num_tracking_frames"] == 0
    gt.sequences = {"all": [i for ids in gt.sequences.values() for i in ids]}  # the three frames as one sequence
    m = evaluate_posetrack(gt, _gt_results(gt))
    assert m["MOTA"] == pytest.approx(100.0) and m["recall"] == pytest.approx(100.0) and m["num_objects"] == 39


@needs_sample
def test_sample_detections():
    dets = load_detections(SAMPLE / "annotations" / "test_posetrack18_human_detections.json")
    assert set(dets) == {10034180000, 10094730000, 10128340000}
    assert sum(len(v) for v in dets.values()) == 278
    for v in dets.values():
        assert v.shape[1] == 5 and np.all(np.diff(v[:, 4]) <= 0)


def test_reader_errors_name_the_file(tmp_path):
    from hrnet_core.data.io import AnnotationError

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(AnnotationError, match="bad.json.*vid_id"):
        load_posetrack(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="no PoseTrack"):
        load_posetrack(tmp_path / "empty")


def test_keypoint_box_extends_15_percent():
    k = np.array([[10, 20, 1], [110, 220, 1], [50, 50, 0]], np.float64)
    np.testing.assert_allclose(keypoint_box(k, 0.15), [10 - 7.5, 20 - 15, 115, 230])
    assert keypoint_box(k[:1], 0.15) is None


# ------------------------------------------------------------------------------------------------ flow + association


def _texture(h=240, w=320, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (0, 0), 2)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_propagation_moves_box_by_translation(method):
    """Acceptance 2: a box propagated (through its pose) with a translating image moves by the translation, <= 1 px."""
    import cv2

    from hrnet_core.tracking import optical_flow
    from hrnet_core.tracking.tracker import TrackerConfig, _boxes_of, propagate_poses

    img = _texture()
    dx, dy = 6.0, -3.0
    moved = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (img.shape[1], img.shape[0]),
                           borderMode=cv2.BORDER_REFLECT)
    pose = np.concatenate([_person(150, 120, h=140, ears=True)[0][:, :2], np.full((17, 1), 0.9)], 1)
    cfg = TrackerConfig(propagation=method)
    box0 = _boxes_of(pose[None], np.ones(1), cfg)[0]
    box1 = _boxes_of(propagate_poses(pose[None], optical_flow(img, moved, method), 0.2), np.ones(1), cfg)[0]
    np.testing.assert_allclose(box1[:4] - box0[:4], [dx, dy, 0, 0], atol=1.0)
    # at half resolution (the PoseTrack recipes' flow_scale) the flow is rescaled to full-resolution pixels
    box_half = _boxes_of(propagate_poses(pose[None], optical_flow(img, moved, method, scale=0.5), 0.2),
                         np.ones(1), cfg)[0]
    np.testing.assert_allclose(box_half[:4] - box0[:4], [dx, dy, 0, 0], atol=1.0)


def test_greedy_match_and_nms():
    from hrnet_core.tracking import greedy_match
    from hrnet_core.tracking.tracker import box_nms

    s = np.array([[0.9, 0.8], [0.85, 0.1], [0.2, 0.25]])
    assert greedy_match(s, 0.3) == [(0, 0)]  # row 1 wants column 0 (taken), column 1 is below the threshold
    assert greedy_match(s, 0.05) == [(0, 0), (2, 1)]  # 0.25 > 0.1: row 2 takes column 1 before row 1
    boxes = np.array([[0, 0, 10, 10, 0.5], [1, 1, 10, 10, 0.9], [50, 50, 10, 10, 0.1]])
    np.testing.assert_allclose(box_nms(boxes, 0.5), boxes[[1, 2]])


def test_tracker_keeps_identities_where_order_swaps(tmp_path):
    """Two people; the detector lists them in alternating order. flow_oks keeps their ids (0 switches);
    ``order`` swaps them every other frame."""
    import cv2

    from hrnet_core.tracking import TrackerConfig, track_sequence

    img = _texture()
    frames, dets, truth = [], {}, {}
    for t in range(4):
        shift = np.float32([[1, 0, 3 * t], [0, 1, 0]])
        path = tmp_path / f"{t}.png"
        cv2.imwrite(str(path), cv2.warpAffine(img, shift, (320, 240), borderMode=cv2.BORDER_REFLECT))
        frames.append({"image_id": t, "image_file": str(path)})
        poses = [np.concatenate([_person(80 + 3 * t, 120, 120, ears=True)[0][:, :2], np.full((17, 1), 0.9)], 1),
                 np.concatenate([_person(230 + 3 * t, 120, 120, ears=True)[0][:, :2], np.full((17, 1), 0.9)], 1)]
        truth[t] = poses
        boxes = [np.r_[keypoint_box(p, 0.15), 0.9 - 0.1 * i] for i, p in enumerate(poses)]
        dets[t] = np.asarray(boxes if t % 2 == 0 else boxes[::-1])
        if t % 2:
            dets[t][:, 4] = dets[t][::-1, 4]  # the second person scores higher in odd frames

    def estimate(frame, boxes):  # the pose of the person whose true box is nearest
        out = []
        for b in boxes:
            c = b[:2] + b[2:4] / 2
            out.append(min(truth[frame["image_id"]], key=lambda p: np.linalg.norm(p[:, :2].mean(0) - c)))
        return np.asarray(out)

    read = lambda p: cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)  # noqa: E731
    outs = {}
    for assoc, expect_switch in (("flow_oks", False), ("oks", False), ("order", True)):
        cfg = TrackerConfig(association=assoc)
        out = outs[assoc] = track_sequence(frames, dets, estimate, read, np.full(17, 0.07), cfg)
        left = [int(fr["track_ids"][np.argmin(fr["poses"][:, 0, 0])]) for fr in out]
        assert (len(set(left)) > 1) == expect_switch, (assoc, left)
        assert all(len(fr["poses"]) == 2 for fr in out)  # propagated duplicates are suppressed by box NMS
    # the order baseline of the task's metrics: the tracker's poses with ids by detection order = association order
    from hrnet_core.tasks.pose_tracking import Predictions, order_ids

    (relabelled,) = order_ids(Predictions([outs["flow_oks"]])).values
    for a, b in zip(relabelled, outs["order"]):
        np.testing.assert_array_equal(a["poses"], b["poses"])
        np.testing.assert_array_equal(a["track_ids"], b["track_ids"])


# ------------------------------------------------------------------------------------------------ the task


TINY = {"model.pretrained": None, "model.width": 16, "model.stage1_blocks": 1, "model.stage1_planes": 32,
        "model.stage_modules": [1, 1, 1], "model.stage_blocks": [1, 1, 1], "data.input_size": [48, 64],
        "data.heatmap_size": [12, 16], "data.sigma": 2.0}
RECIPE = "pose_hrnet_w48_384x288_posetrack17"


def test_recipe_follows_the_paper():
    from hrnet_core.recipes import ConfigError, load_recipe

    r = load_recipe(RECIPE)
    assert (r.task, r.model.name, r.data.dataset, r.data.val_split) == ("pose_tracking", "pose_hrnet_w48", "posetrack17",
                                                                         "val")
    assert r.data.input_size == [288, 384] and r.data.heatmap_size == [72, 96]
    assert (r.train.epochs, r.train.optimizer.lr, r.train.schedule.milestones) == (20, 1e-4, [10, 15])
    assert r.model.pretrained.endswith("pose_hrnet_w48_384x288.pth")  # the COCO model (Sec. 4.3)
    assert r.test.flip and not r.test.use_gt_boxes and r.test.propagation == "dis" and r.test.association == "flow_oks"
    with pytest.raises(ConfigError, match="test.propagation"):
        load_recipe(RECIPE, {"test.propagation": "flownet2"})
    with pytest.raises(ConfigError, match="test.match_thr"):
        load_recipe(RECIPE, {"test.match_thr": 1.5})


@pytest.fixture(scope="module")
def prepared_sample(tmp_path_factory):
    """The real sample (three one-frame sequences, per-sequence files + detections) prepared with posetrack18."""
    from pipelines.prepare import prepare_split

    out = tmp_path_factory.mktemp("posetrack_sample")
    prepare_split("posetrack18", str(SAMPLE), "val", out,
                  {"detections": "annotations/test_posetrack18_human_detections.json"}, task="pose_tracking",
                  progress=False)
    return out


@needs_sample
def test_sample_reader_rows(prepared_sample):
    import pandas as pd

    from hrnet_core.data.prepared import open_split

    split = open_split(prepared_sample, "val")
    assert split.manifest["num_sequences"] == 3 and split.manifest["num_images"] == 3
    rows = pd.read_parquet(split.samples_file)
    gt = load_posetrack(SAMPLE / "annotations" / "val")
    with_box = [p for ps in gt.people.values() for p in ps if keypoint_box(p.keypoints) is not None]
    assert len(rows) == len(with_box) and {"track_id", "vid_id", "bbox", "joints"} <= set(rows.columns)
    # the training box is the keypoints' box enlarged by 15% (pose paper Sec. 4.3)
    p = with_box[0]
    r = rows[(rows.image_id == p.image_id) & (rows.ann_id == p.ann_id)].iloc[0]
    np.testing.assert_allclose(r["bbox"], keypoint_box(p.keypoints, 0.15))


@needs_sample
@pytest.mark.parametrize("gt_boxes", [False, True])
def test_sample_sequences_run_end_to_end(prepared_sample, tmp_path, gt_boxes):
    """The real sample through the task's test procedure (tiny untrained network; thresholds 0 so that every box
    yields a pose): one PoseTrack results json per sequence, unique track ids, metrics and drawings."""
    import torch

    from hrnet_core.data.prepared import open_split
    from hrnet_core.recipes import load_recipe
    from hrnet_core.tasks import get_task
    from pipelines.evaluate import run_evaluation

    r = load_recipe(RECIPE, {**TINY, "data.root": str(prepared_sample), "data.dataset": "posetrack18",
                             "data.val_split": "val", "test.joint_score_thr": 0.0, "test.keypoint_thr": 0.0,
                             "test.use_gt_boxes": gt_boxes})
    torch.manual_seed(0)
    t = get_task("pose_tracking")
    m = run_evaluation(t.build_model(r), r, open_split(prepared_sample, "val"), out_dir=tmp_path, progress=False,
                       num_vis=3)
    files = sorted(p.name for p in (tmp_path / "predictions").glob("*.json"))
    assert files == ["003418_mpii_test.json", "009473_mpii_test.json", "012834_mpii_test.json"]
    res = [json.loads((tmp_path / "predictions" / f).read_text()) for f in files]
    n = sum(len(x["annotations"]) for x in res)
    dets = load_detections(SAMPLE / "annotations" / "test_posetrack18_human_detections.json")
    assert 0 < n <= (14 if gt_boxes else sum(len(v) for v in dets.values()))
    for x in res:
        ids = [a["track_id"] for a in x["annotations"]]
        assert len(ids) == len(set(ids)) and all(len(a["keypoints"]) == 51 for a in x["annotations"])
    assert m["eval_items"] == 3 and m["num_labeled_frames"] == 3 and 0 <= m["recall"] <= 100
    assert {"mAP", "MOTA", "MOTP", "precision"} <= set(m)


def test_generated_clips(tmp_path):
    """Generated clips: PoseTrack json per sequence, identities persist and move, detections sorted by score."""
    from hrnet_core.data.synthetic_tracking import ClipConfig, generate_clips

    s = generate_clips(tmp_path, num_train=2, num_val=1, seed=3, cfg=ClipConfig(frames=4, train_frames=2))
    assert s["splits"]["val"]["frames"] == 4 and s["splits"]["val"]["labeled_frames"] == 3
    gt = load_posetrack(tmp_path / "annotations" / "val")
    (ids,) = gt.sequences.values()
    first = {p.track_id: p.keypoints for p in gt.people[ids[0]]}
    second = {p.track_id: p.keypoints for p in gt.people[ids[1]]}
    assert set(first) & set(second)
    for tid in set(first) & set(second):
        both = (first[tid][:, 2] > 0) & (second[tid][:, 2] > 0) & (np.arange(17) < 7)  # head + shoulders
        moved = np.abs(second[tid][both, 0] - first[tid][both, 0]).mean()
        assert 1.0 < moved < 10.0, moved  # walking speed 2-7 px per frame
    assert all(p.keypoints[3:5, 2].max() == 0 and p.bbox_head is not None for ps in gt.people.values() for p in ps)
    dets = json.loads((tmp_path / "person_detection_results" / "posetrack_val_detections.json").read_text())
    for iid in ids:
        scores = [d["score"] for d in dets if d["image_id"] == iid]
        assert scores == sorted(scores, reverse=True)
    again = tmp_path / "again"
    generate_clips(again, num_train=0, num_val=1, seed=3, cfg=ClipConfig(frames=4, train_frames=2))
    a = sorted((tmp_path / "images" / "val").rglob("*.jpg"))
    b = sorted((again / "images" / "val").rglob("*.jpg"))
    assert [x.read_bytes() for x in a] == [x.read_bytes() for x in b]


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_training_through_the_spine(ray_session, tmp_path, monkeypatch):
    """2 Ray workers train the smoke profile on generated clip frames through pipelines.train.train; the validation
    inside training tracks the val clips and reports the PoseTrack metrics; the loss falls."""
    from pipelines.prepare import prepare_generated
    from pipelines.train import train
    from hrnet_core.recipes import load_recipe

    monkeypatch.chdir(tmp_path)
    prepare_generated("pose_tracking", "prepared", "raw", num_train=32, num_val=2, seed=0, progress=False)
    r = load_recipe(RECIPE, {"data.root": "prepared", "train.epochs": 2, "train.schedule.milestones": [1],
                             "train.val_every": 2, **{k: v for k, v in TINY.items() if k.startswith("data.")}},
                    profile="smoke_tracking")
    result = train(r, num_workers=2, use_gpu=False, run_name="tracking", storage_path="ray_results",
                   mlflow_uri="sqlite:///mlflow.db", export_weights="models/tracking.pt")
    hist = result.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert {"MOTA", "mAP", "MOTP", "num_objects"} <= set(hist[-1])
    assert hist[-1]["num_labeled_frames"] == 2 * 7  # two val clips of 8 frames, the last one unlabelled
    assert hist[-1]["num_objects"] > 0
    print(f"tracking smoke (2 epochs): MOTA {hist[-1]['MOTA']:.1f} mAP {hist[-1]['mAP']:.1f}")
