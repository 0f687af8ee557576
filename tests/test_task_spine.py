"""The task spine: the contract of hrnet_core.tasks, generic pipelines, and a toy task trained through them.

The toy two-class segmentation task (tests/toy_task.py: poly LR per iteration, label-map targets, sliding-window
evaluation) is defined outside hrnet_core and pipelines; it trains through the real ``pipelines.train.train`` with 2
Ray workers and is evaluated through ``pipelines.evaluate``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrnet_core.recipes import ConfigError, load_recipe
from hrnet_core.recipes.params import run_defaults

ROOT = Path(__file__).resolve().parents[1]
TOY_RECIPE = str(ROOT / "tests" / "toy_seg.yaml")
TOY_TASK = "tests.toy_task:TASK"


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    from pipelines.prepare import prepare_split
    from tests.toy_task import generate

    tmp = tmp_path_factory.mktemp("toy")
    generate(tmp / "raw", num_train=48, num_val=8, seed=0)
    for split in ("train", "val"):
        prepare_split("toy_seg", str(tmp / "raw"), split, tmp / "prepared", task=TOY_TASK, progress=False)
    return tmp


def _toy_recipe(toy_data, **over):
    return load_recipe(TOY_RECIPE, {"data.root": str(toy_data / "prepared"), **over})


def test_pipelines_and_sweeps_know_no_task():
    """Acceptance 1 of the spine issue: no task vocabulary in the generic layers (comments pointing to a task module
    excepted)."""
    pattern = re.compile(r"joint|heatmap|keypoint|\boks\b", re.IGNORECASE)
    hits = []
    for folder in ("pipelines", "sweeps"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.lstrip().startswith("#"):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_landed_tasks_fulfil_the_contract():
    from hrnet_core.recipes import list_recipes
    from hrnet_core.tasks import TASK_NAMES, get_task, landed_tasks

    assert "pose_topdown" in landed_tasks() and set(landed_tasks()) <= set(TASK_NAMES)
    from hrnet_core.paper_tables import TASKS as PAPER_TASKS

    assert set(TASK_NAMES) <= set(PAPER_TASKS), "one task vocabulary: paper tables use the same names"
    for name in landed_tasks():
        task = get_task(name)
        assert task.name == name and task.metrics.primary in task.metrics.names
        run = run_defaults(name)  # the run defaults live in params.yaml alone
        assert run.recipe in list_recipes()
        r = load_recipe(run.recipe, profile=run.profile)
        assert r.task == name and r.data.dataset in task.datasets
        assert isinstance(r.augment, task.sections.augment) and isinstance(r.test, task.sections.test)
        assert isinstance(r.train.loss, task.sections.loss) and isinstance(r.data, task.sections.data)
        assert {s.dataset for s in task.synthetic.splits} <= set(task.datasets)


def test_unknown_task_dataset_or_task_key_is_one_line(tmp_path, capsys):
    from hrnet_cli import main

    cases = [
        (["data", "generate", "no_such_task", "--out", str(tmp_path / "g")], "unknown task 'no_such_task'"),
        (["data", "generate", "instance_segmentation", "--out", str(tmp_path / "g")], "not landed"),
        (["data", "prepare", "nope", "--source", str(tmp_path), "--split", "x", "--out", str(tmp_path / "p")],
         "unknown dataset 'nope'; valid datasets:"),
        (["recipes", "show", "pose_hrnet_w32_256x192_coco", "--set", "augment.colour=1"],
         "unknown key augment.colour"),
        (["recipes", "show", "pose_hrnet_w32_256x192_coco", "--set", "task=instance_segmentation"], "not landed"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (argv, err)
        if "valid datasets" in expected:
            assert "coco" in err and "mpii" in err
    assert not (tmp_path / "g").exists() and not (tmp_path / "p").exists(), "nothing written"
    assert main(["recipes", "show", "pose_hrnet_w32_256x192_coco", "--set", "test.foo=1"]) == 2
    assert "allowed under test: flip, shift_heatmap" in capsys.readouterr().err


def test_tasks_list_names_datasets_recipes_and_metrics(capsys):
    from hrnet_cli import main

    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "pose_topdown" in out and "dataset coco" in out and "dataset mpii" in out
    assert "pose_hrnet_w32_256x192_coco" in out and "primary AP" in out and "planned (not landed)" in out


def test_toy_task_recipe_sections_and_errors(toy_data):
    r = _toy_recipe(toy_data)
    assert type(r.test).__name__ == "ToyTest" and r.train.schedule.name == "poly"
    with pytest.raises(ConfigError, match=r"unknown key test\.flip .*allowed under test: stride"):
        _toy_recipe(toy_data, **{"test.flip": True})
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_recipe(TOY_RECIPE, {"task": "tests.no_such_module:TASK"})


def test_poly_schedule_is_per_iteration(toy_data):
    from hrnet_core.engine import lr_at, steps_per_epoch

    r = _toy_recipe(toy_data)
    total = r.train.epochs * steps_per_epoch(48, 2, 4, 1)
    assert steps_per_epoch(48, 2, 4, 1) == 6 and steps_per_epoch(50, 2, 4, 2) == 3
    lrs = [lr_at(r, s // 6, s, total) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.05 * (1 / total) ** 0.9)
    # step k runs at the rate set after step k - 1 (HRNet-Semantic-Segmentation adjust_learning_rate)
    assert lrs[9] == pytest.approx(0.05 * (1 - 8 / total) ** 0.9), "per step, not per epoch"
    assert lrs[1] == lrs[0] and all(a > b for a, b in zip(lrs[1:], lrs[2:]))


def test_sliding_window_equals_whole_image_when_the_window_covers_it():
    import torch

    from tests.toy_task import NUM_CLASSES, sliding_window_logits

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, NUM_CLASSES, 1).eval()  # pointwise: windows cannot change a pixel's logits
    x = torch.randn(3, 37, 45)
    with torch.no_grad():
        whole = model(x[None])[0]
        assert torch.allclose(sliding_window_logits(model, x, (45, 37), 2 / 3), whole, atol=1e-6)
        assert torch.allclose(sliding_window_logits(model, x, (16, 16), 2 / 3), whole, atol=1e-6)


@pytest.mark.ray
@pytest.mark.slow
def test_toy_task_trains_through_the_spine(ray_session, toy_data, monkeypatch):
    """Acceptance 3: 2 Ray workers train the toy task through pipelines.train.train; pipelines.evaluate scores the
    weights; trained mIoU is well above the untrained network's on the same data."""
    from pipelines.evaluate import evaluate, evaluate_untrained
    from pipelines.train import train

    monkeypatch.chdir(toy_data)
    r = _toy_recipe(toy_data)
    untrained = evaluate_untrained(r, progress=False)
    result = train(r, num_workers=2, use_gpu=False, run_name="toy", storage_path="ray_results",
                   mlflow_uri="sqlite:///mlflow.db", export_weights="models/toy.pt")
    hist = result.history
    assert [h["epoch"] for h in hist] == [1.0, 2.0, 3.0] and all("mIoU" in h and "ce" in h for h in hist)
    assert hist[-1]["lr"] < hist[0]["lr"] < 0.05, "poly LR decays within and across epochs"
    assert hist[-1]["optimizer_steps"] == 3 * 6, "48 samples / 2 ranks / batch 4 = 6 steps per epoch"
    assert hist[-1]["mIoU"] > untrained["mIoU"] + 30.0, (hist[-1]["mIoU"], untrained["mIoU"])
    metrics = evaluate(None, "models/toy.pt", mlflow_uri="sqlite:///mlflow.db", run_id="", out_dir="outputs/eval",
                       progress=False)
    assert metrics["mIoU"] == pytest.approx(hist[-1]["mIoU"], abs=1e-6), "sharded validation = single-process eval"
    assert (toy_data / "outputs/eval/predictions.json").is_file() and list((toy_data / "outputs/eval/vis").glob("*.png"))


def test_generic_layers_import_without_task_modules():
    """pipelines.train / ingest / evaluate import no task module at import time (tasks are looked up from recipes)."""
    code = ("import sys, pipelines.train, pipelines.ingest, pipelines.evaluate, pipelines.prepare; "
            "print(sorted(m for m in sys.modules if m.startswith('hrnet_core.tasks.') and m != 'hrnet_core.tasks.base'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_epoch_shards_are_equal_disjoint_and_deterministic():
    from hrnet_core.data.seeding import epoch_permutation, epoch_shard

    shards = [epoch_shard(0, 3, 101, r, 4) for r in range(4)]
    assert all(len(s) == 25 for s in shards)
    flat = np.concatenate(shards)
    assert len(set(flat.tolist())) == 100 and set(flat.tolist()) <= set(range(101))
    assert np.array_equal(epoch_shard(0, 3, 101, 2, 4), shards[2])
    assert np.array_equal(epoch_shard(0, 3, 101, 0, 1), epoch_permutation(0, 3, 101))
    assert not np.array_equal(epoch_shard(0, 4, 101, 2, 4), shards[2])
    with pytest.raises(ValueError):
        epoch_shard(0, 0, 10, 2, 2)


def test_pose_gt_box_evaluation_reads_the_prepared_rows(tmp_path):
    """COCO evaluation with ground-truth boxes takes its people from samples.parquet: the same records (files,
    center/scale, joints, area) as the annotation reader gives."""
    from hrnet_core.data.coco import CocoKeypoints
    from hrnet_core.data.prepared import open_split
    from hrnet_core.data.synthetic import generate_dataset
    from hrnet_core.tasks import get_task
    from pipelines.prepare import prepare_split

    generate_dataset(tmp_path / "raw", num_train=2, num_val=6, seed=4)
    prepare_split("coco", str(tmp_path / "raw"), "val2017", tmp_path / "prep", progress=False)
    r = load_recipe("pose_hrnet_w32_256x192_coco", {"data.root": str(tmp_path / "prep"), "test.use_gt_boxes": True},
                    profile="smoke")
    split = open_split(tmp_path / "prep", "val2017")
    items = get_task("pose_topdown").eval_items(r, split)
    ref = CocoKeypoints(split.ann_file, split.image_root, use_gt_boxes=True, aspect_ratio=96 / 128).records
    assert len(items) == len(ref) > 5
    for a, b in zip(items, ref):
        assert a["image_file"] == b["image_file"] and a["image_id"] == b["image_id"] and a["ann_id"] == b["ann_id"]
        for key in ("center", "scale", "joints", "bbox"):
            assert np.allclose(a[key], b[key], atol=1e-9), key
        assert a["area"] == pytest.approx(b["area"]) and a["score"] == b["score"] == 1.0


def test_controller_poll_interval_is_scoped_and_yields_to_the_user(monkeypatch):
    import os

    from pipelines.ray_adapter import controller_poll_interval

    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    monkeypatch.delenv(key, raising=False)
    with controller_poll_interval(0.25):
        assert os.environ[key] == "0.25"
    assert key not in os.environ
    monkeypatch.setenv(key, "5")
    with controller_poll_interval(0.25):
        assert os.environ[key] == "5"
    assert os.environ[key] == "5"


def test_default_rows_per_block_by_cpus_and_bytes():
    from pipelines.ingest import MAX_BLOCK_BYTES, default_rows_per_block, sample_nbytes

    assert default_rows_per_block(518, 2) == 128  # 518 // (2 * 2) = 129 rows, at most 128
    assert default_rows_per_block(256, 2) == 64  # two blocks per decode CPU
    assert default_rows_per_block(10, 16) == 1
    big = 3 * 512 * 1024 * 4 + 512 * 1024 * 8  # a 512x1024 float crop and its int64 label map
    assert default_rows_per_block(2975, 16, big) == MAX_BLOCK_BYTES // big == 12
    assert sample_nbytes({"image": np.zeros((2, 3, 4), np.float32), "index": np.zeros(2, np.int64)}) == 96 + 16


@pytest.mark.parametrize("rows, per", [(518, 128), (5, 8), (0, 8), (10, 1), (1036, 64)])
def test_block_bounds_ramp_up_then_cover_every_row_once(rows, per):
    from pipelines.ingest import block_bounds

    bounds = block_bounds(rows, per)
    assert [a for a, _ in bounds[1:]] == [b for _, b in bounds[:-1]]  # contiguous
    assert (bounds[0][0], bounds[-1][1]) == (0, rows) if rows else bounds == []
    sizes = [b - a for a, b in bounds]
    assert all(0 < n <= per for n in sizes)
    if rows >= per * 2:
        assert sizes[:3] == [max(1, per // 4), max(1, per // 2), per]


@pytest.mark.parametrize("task_name", ["pose_topdown", "classification", "face_alignment", "segmentation",
                                       "pose_bottomup", "detection", "pose_tracking"])
def test_warm_up_covers_the_per_sample_imports(task_name):
    """After the modules ``warm_decode_workers`` imports (the task's ``decode_modules`` included), the per-sample
    function imports no heavy module in a fresh process: the first epoch does not pay them (bench_ingest
    --task classification waited 2.7 s for its first block before torch/torchvision/PIL were warmed)."""
    probe = Path(__file__).with_name("_decode_imports_probe.py")
    out = subprocess.run([sys.executable, str(probe), task_name], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "NEW []" in out.stdout, out.stdout
