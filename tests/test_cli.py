"""The ``hrnet`` command line (in-process, no Ray): help, data generate/prepare, one-line errors, evaluation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrnet_cli import main
from tests.official import DATA_DIR, requires_shared

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "pose_hrnet_w32_256x192_coco"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    """The error report: exactly one ``hrnet: error:`` line and no traceback (progress bars may precede it)."""
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("hrnet: error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Tiny generated dataset, prepared into <tmp>/prepared/{train2017,val2017}."""
    tmp = tmp_path_factory.mktemp("cli")
    assert main(["data", "generate", "--out", str(tmp / "raw"), "--num-train", "12", "--num-val", "4"]) == 0
    assert main(["data", "prepare", "coco", "--source", str(tmp / "raw"), "--split", "train2017",
                 "--out", str(tmp / "prepared")]) == 0
    assert main(["data", "prepare", "coco", "--source", str(tmp / "raw"), "--split", "val2017",
                 "--detections", "person_detection_results/synthetic_val2017_detections_person.json",
                 "--out", str(tmp / "prepared")]) == 0
    return tmp


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "prepare"], ["train"], ["evaluate"], ["models"], ["recipes"]])
def test_help_is_available_for_every_command(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hrnet" in text and len(text.splitlines()) > 5


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'hrnet = "hrnet_cli:main"' in text


def test_prepared_split_layout_and_checksums(prepared):
    split = prepared / "prepared" / "train2017"
    manifest = json.loads((split / "manifest.json").read_text())
    assert manifest["format"] == "hrnet-prepared/2" and manifest["num_images"] == 12 and manifest["num_joints"] == 17
    assert manifest["task"] == "pose_topdown" and not Path(manifest["image_root"]).is_absolute(), \
        "paths relative to the split: the manifest (and its DVC hash) does not depend on the checkout location"
    images = pd.read_parquet(split / "images.parquet")
    samples = pd.read_parquet(split / "samples.parquet")
    assert len(images) == 12 and images["sha256"].str.len().eq(64).all()
    assert len(samples) == manifest["num_samples"] > 0
    assert len(samples["joints"].iloc[0]) == 51 and len(samples["bbox"].iloc[0]) == 4
    val = json.loads((prepared / "prepared" / "val2017" / "manifest.json").read_text())
    assert val["files"]["detections"] == "detections.json" and (prepared / "prepared" / "val2017" / "detections.json").is_file()


def test_fingerprint_changes_with_an_image(prepared, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(prepared / "raw", raw)
    args = ["data", "prepare", "coco", "--source", str(raw), "--split", "val2017", "--out", str(tmp_path / "p")]
    assert main(args) == 0
    before = json.loads((tmp_path / "p/val2017/manifest.json").read_text())["fingerprint"]
    img = sorted((raw / "val2017").glob("*.jpg"))[0]
    data = bytearray(img.read_bytes())
    data[100] ^= 0xFF
    img.write_bytes(bytes(data))
    assert main(args) == 0
    after = json.loads((tmp_path / "p/val2017/manifest.json").read_text())["fingerprint"]
    assert before != after
    capsys.readouterr()


def test_errors_are_one_line_naming_the_problem(prepared, tmp_path, capsys):
    code, _, err = run(capsys, "recipes", "show", RECIPE, "--set", "train.epoch=3")
    assert code == 2 and error_line(err) and "unknown key train.epoch" in err

    code, _, err = run(capsys, "evaluate", RECIPE, "--untrained", "--set", f"data.root={tmp_path / 'nothing'}")
    assert code == 2 and error_line(err) and "prepared split" in err and "not found" in err

    code, _, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "missing.pt"))
    assert code == 2 and error_line(err) and "missing.pt" in err and "not found" in err

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(bad))
    assert code == 2 and error_line(err) and "bad.pt" in err

    code, _, err = run(capsys, "data", "prepare", "coco", "--source", str(tmp_path / "nope"), "--split", "val2017",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and error_line(err) and "nope" in err

    raw = tmp_path / "raw"
    shutil.copytree(prepared / "raw", raw)
    img = sorted((raw / "val2017").glob("*.jpg"))[0]
    img.write_bytes(img.read_bytes()[:200])
    code, _, err = run(capsys, "data", "prepare", "coco", "--source", str(raw), "--split", "val2017",
                       "--out", str(tmp_path / "o"))
    assert code == 1 and error_line(err) and img.name in err and "truncated" in err  # bad data: status 1

    code, _, err = run(capsys, "models", "info", "no_such_model")
    assert code == 2 and "no_such_model" in err


def test_recipes_and_models_listing(capsys):
    code, out, _ = run(capsys, "recipes", "list")
    assert code == 0 and RECIPE in out and "smoke" in out
    code, out, _ = run(capsys, "recipes", "show", RECIPE, "--profile", "smoke", "--set", "train.epochs=3")
    assert code == 0 and "epochs: 3" in out and "profile: smoke" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "pose_hrnet_w32" in out.split()


def test_params_file_overrides(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("recipe_overrides:\n  train:\n    epochs: 5\n  data:\n    root: somewhere\n")
    code, out, _ = run(capsys, "recipes", "show", RECIPE, "--params", str(params), "--set", "train.epochs=6")
    assert code == 0 and "epochs: 6" in out and "root: somewhere" in out


def test_evaluate_untrained_baseline(prepared, capsys):
    out_dir = prepared / "eval"
    code, out, _ = run(capsys, "evaluate", RECIPE, "--profile", "smoke", "--untrained",
                       "--set", f"data.root={prepared / 'prepared'}", "--out-dir", str(out_dir),
                       "--metrics-out", str(prepared / "m.json"))
    assert code == 0
    metrics = json.loads((prepared / "m.json").read_text())
    assert 0.0 <= metrics["AP"] < 5.0, "an untrained network does not find keypoints"
    assert (out_dir / "predictions.json").is_file() and list((out_dir / "vis").glob("*.jpg"))


@requires_shared
def test_prepare_real_coco_mirrors(tmp_path, capsys):
    """The documented real-data commands: coco_mini (train) and the val2017 samples with the detection file."""
    code, _, _ = run(capsys, "data", "prepare", "coco", "--source", str(DATA_DIR / "coco_mini"), "--split",
                     "train2017", "--out", str(tmp_path))
    assert code == 0
    m = json.loads((tmp_path / "train2017/manifest.json").read_text())
    assert m["num_images"] == 80 and m["num_samples"] > 50
    code, _, _ = run(capsys, "data", "prepare", "coco", "--source", str(DATA_DIR / "samples/coco"), "--split",
                     "val2017", "--ann-file", "test_coco.json", "--image-dir", ".", "--detections",
                     "test_coco_det_AP_H_56.json", "--out", str(tmp_path))
    assert code == 0
    m = json.loads((tmp_path / "val2017/manifest.json").read_text())
    assert m["num_images"] == 4 and m["files"]["detections"] == "detections.json"


def test_dvc_pipeline_parses():
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists() or not (ROOT / ".dvc").is_dir():
        pytest.skip("dvc or .dvc/ not available")
    res = subprocess.run([str(dvc), "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for stage in ("generate", "prepare", "train", "evaluate", "report"):
        assert stage in res.stdout


def _official_style_checkpoint(path: Path, recipe, width: int | None = None) -> Path:
    """Weights of the recipe's model saved as the official releases do: a ``{"state_dict": ...}`` container whose
    keys carry DataParallel's ``module.`` prefix, with no recipe and no pipeline format marker."""
    import torch

    from hrnet_core.models import build_model

    kwargs = recipe.model.build_kwargs()
    if width is not None:
        kwargs["width"] = width
    torch.manual_seed(0)
    model = build_model(recipe.model.name, **kwargs)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 210}, path)
    return path


def test_evaluate_official_checkpoint_is_its_own_mlflow_run(prepared, capsys):
    """`hrnet evaluate RECIPE --checkpoint <official .pth>`: strict load, a new run tagged source=official-checkpoint
    with paper/ and delta/ metrics, shown in the report's "Official ckpt" column."""
    from hrnet_core.recipes import load_recipe
    from pipelines import mlflow_runs as tracking
    from pipelines.report import build_report

    recipe = load_recipe(RECIPE, profile="smoke")
    ckpt = _official_style_checkpoint(prepared / "official.pth", recipe)
    uri = f"sqlite:///{prepared / 'official.db'}"
    common = ["--profile", "smoke", "--set", f"data.root={prepared / 'prepared'}", "--mlflow-uri", uri]
    code, out, _ = run(capsys, "evaluate", RECIPE, "--checkpoint", str(ckpt), "--out-dir",
                       str(prepared / "official_eval"), *common)
    assert code == 0
    assert "AP" in json.loads(out)

    runs = tracking.client(uri).search_runs([tracking.experiment_id(uri, "hrnet")])
    assert len(runs) == 1
    run_ = runs[0]
    tags, metrics = run_.data.tags, run_.data.metrics
    assert run_.info.status == "FINISHED"
    assert tags["source"] == "official-checkpoint" and tags["recipe"] == RECIPE
    assert tags["checkpoint.sha256"] == __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()
    assert tags["paper.id"] == "hrnet_pose_cvpr2019" and tags["paper.comparable"] == "false"
    assert metrics["paper/AP"] == 74.4
    assert metrics["delta/AP"] == pytest.approx(metrics["AP"] - 74.4)
    assert run_.data.params["model.width"] == str(recipe.model.width)

    report = build_report(prepared / "report", tracking_uri=uri, log_to_mlflow=False, compute_missing=False,
                          plots=False)
    rows = json.loads(report.json.read_text())["rows"]
    official = {(r["paper"], r["table"], r["row"]): r for r in rows if r["official_run"] == run_.info.run_id}
    primary = official[(tags["paper.id"], tags["paper.table"], tags["paper.row"])]
    assert primary["ours_run"] == "" and primary["official_profile"] == "smoke"


def test_evaluate_official_checkpoint_errors_name_the_file(prepared, capsys):
    from hrnet_core.recipes import load_recipe

    recipe = load_recipe(RECIPE, profile="smoke")
    common = ["--set", f"data.root={prepared / 'prepared'}", "--no-mlflow", "--out-dir", str(prepared / "bad_eval")]
    wrong = _official_style_checkpoint(prepared / "wrong_width.pth", recipe, width=8)
    code, _, err = run(capsys, "evaluate", RECIPE, "--profile", "smoke", "--checkpoint", str(wrong), *common)
    assert code == 2
    line = error_line(err)
    assert str(wrong) in line and "does not match" in line and "wrong shape" in line

    code, _, err = run(capsys, "evaluate", "--checkpoint", str(wrong), *common[2:])
    assert code == 2 and "name its recipe" in error_line(err)
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(wrong), *common)  # --set without a recipe: refused
    assert code == 2 and "name the RECIPE" in error_line(err)

    corrupt = prepared / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "evaluate", RECIPE, "--profile", "smoke", "--checkpoint", str(corrupt), *common)
    assert code == 2 and str(corrupt) in error_line(err)


@requires_shared
def test_evaluate_mpii_logs_pckh_to_mlflow(tmp_path, capsys):
    """MPII evaluation end to end on the real samples: prepare (with gt_valid.mat head boxes), evaluate an
    official-style checkpoint, and every metric (PCKh, PCKh_0.1, PCKh/<joint>, paper/PCKh) reaches MLflow."""
    from scipy.io import savemat

    from hrnet_core.recipes import load_recipe
    from pipelines import mlflow_runs as tracking
    from tests.test_topdown_mpii import ANN, SAMPLES, make_headboxes

    entries = json.loads(ANN.read_text())
    savemat(tmp_path / "gt_valid.mat", {
        "headboxes_src": make_headboxes(entries).transpose(1, 2, 0),
        "pos_gt_src": np.asarray([e["joints"] for e in entries], np.float64).transpose(1, 2, 0),
        "jnt_missing": 1 - np.asarray([e["joints_vis"] for e in entries]).T})
    code, _, _ = run(capsys, "data", "prepare", "mpii", "--source", str(SAMPLES), "--split", "valid",
                     "--ann-file", ANN.name, "--image-dir", ".", "--headboxes", str(tmp_path / "gt_valid.mat"),
                     "--out", str(tmp_path / "prepared"))
    assert code == 0
    mpii = "pose_hrnet_w32_256x256_mpii"
    small = ["--set", "model.width=8", "--set", "model.pretrained=null", "--set", "model.stage_modules=[1,1,1]",
             "--set", f"data.root={tmp_path / 'prepared'}"]
    ckpt = _official_style_checkpoint(tmp_path / "mpii.pth", load_recipe(mpii, overrides=[s for s in small[1::2]]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = run(capsys, "evaluate", mpii, *small, "--checkpoint", str(ckpt), "--mlflow-uri", uri,
                         "--out-dir", str(tmp_path / "eval"))
    assert code == 0, err
    metrics = json.loads(out)
    assert {"PCKh", "PCKh_0.1", "PCKh/Head", "eval_items"} <= set(metrics)
    logged = tracking.client(uri).search_runs([tracking.experiment_id(uri, "hrnet")])[0].data.metrics
    assert logged["PCKh"] == pytest.approx(metrics["PCKh"]) and logged["PCKh_0.1"] == pytest.approx(metrics["PCKh_0.1"])
    assert logged["paper/PCKh"] == 90.3 and logged["delta/PCKh"] == pytest.approx(metrics["PCKh"] - 90.3)


def test_open_checkpoint_tells_our_weights_from_official_ones(tmp_path):
    """Our weights file carries recipe + run id (source training); the same state dict bare is an official-style file
    that needs a recipe and is tagged by its sha256."""
    import torch

    from hrnet_core.recipes import load_recipe
    from hrnet_core.weights import CheckpointError, build_network as build_pose_model, open_checkpoint, save_weights

    recipe = load_recipe(RECIPE, profile="smoke")
    state = build_pose_model(recipe).state_dict()
    ours = open_checkpoint(save_weights(tmp_path / "w.pt", state, recipe, {"epoch": 3, "mlflow_run_id": "abc"}))
    assert ours.source == "training" and ours.recipe.name == RECIPE
    assert ours.meta == {"epoch": 3, "mlflow_run_id": "abc"}
    torch.save(state, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="name its recipe"):
        open_checkpoint(tmp_path / "bare.pth")
    official = open_checkpoint(tmp_path / "bare.pth", recipe)
    assert official.source == "official-checkpoint" and len(official.meta["sha256"]) == 64
    for k, v in official.model.state_dict().items():
        assert torch.equal(v, state[k]), k
