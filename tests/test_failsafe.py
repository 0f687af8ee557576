"""Issue 24, points 4, 5, 9-15 without Ray: paper deltas on sweep trials, report links from the tracking server, the
environment tags, bad data refused in one line, non-finite losses, unsafe or unfinished "already complete" runs,
idempotent epoch logs and the umask of prepared splits. The Ray end-to-end part is tests/test_failsafe_ray.py.

Each test states the behaviour of the code before the fix (measured on 2026-12-07) and fails on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrnet_cli.main import main
from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
from hrnet_core.recipes import load_recipe
from tests.official import DATA_DIR, requires_shared

RECIPE = "pose_hrnet_w32_256x192_coco"
SMALL = {"model.width": 8, "train.global_batch_size": 8, "train.batch_size_per_device": 4, "train.epochs": 1,
         "train.val_every": 1}
PAPER_AP_W32_256 = 74.4  # hrnet_pose_cvpr2019 Table 1, "HRNet-W32 256x192 pretrain" (hrnet_core/paper_tables)


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _one_error_line(err: str) -> str:
    """Exactly one ``hrnet: error:`` line, last in stderr, and no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("hrnet: error:")]
    assert len(lines) == 1, err[-3000:]
    assert err.rstrip().endswith(lines[0])
    return lines[0]


def _strict_json(text: str):
    """``json.loads`` refusing ``NaN`` / ``Infinity``, as strict parsers (jq, JavaScript, Go) do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    """A tiny generated COCO keypoint dataset, prepared (train2017 + val2017 with detections)."""
    from pipelines.prepare import prepare_split

    tmp = tmp_path_factory.mktemp("failsafe_pose")
    generate_dataset(tmp / "raw", num_train=8, num_val=2, seed=5)
    prepare_split("coco", str(tmp / "raw"), "train2017", tmp / "prepared", progress=False, task="pose_topdown")
    prepare_split("coco", str(tmp / "raw"), "val2017", tmp / "prepared", progress=False, task="pose_topdown",
                  detections=DETECTIONS_FILE.format(split="val2017"))
    return tmp / "prepared"


# ------------------------------------------------------------------------------------------------ 4. delta/ on sweeps


def test_sweep_trial_record_logs_delta_next_to_paper(tmp_path):
    """A trial's child run gets ``delta/<m>`` = its own measured value - the paper's, beside ``paper/<m>``.

    Before: ``record_trial`` logged ``paper/AP`` = 74.4 only (no ``delta/AP``); now ``delta/AP`` = 10.0 - 74.4.
    """
    from pipelines import mlflow_runs as tracking
    from sweeps import mlflow_sweeps as sweep_tracking

    uri = _uri(tmp_path)
    paper_tags = {"paper.id": "hrnet_pose_cvpr2019", "paper.table": "1", "paper.row": "HRNet-W32 256x192 pretrain"}
    parent = tracking.create_run(uri, "hrnet", "sweep", {"sweep.kind": "sweep"})
    child = tracking.create_run(uri, "hrnet", "trial", {"recipe": RECIPE, "sweep.trial": "t0", **paper_tags},
                                parent_run_id=parent)
    tracking.log_metrics(uri, child, {"AP": 9.0}, step=1)
    tracking.log_metrics(uri, child, {"AP": 10.0}, step=2)
    rid = sweep_tracking.record_trial(uri, parent, "t0", {"variant": "W32", "paper_tags": paper_tags, "paper": {}},
                                      status="FINISHED", tune_status="TERMINATED", iterations=2,
                                      last_metrics={"AP": 10.0})
    assert rid == child
    m = tracking.client(uri).get_run(child).data.metrics
    assert m["paper/AP"] == pytest.approx(PAPER_AP_W32_256)
    assert m["delta/AP"] == pytest.approx(10.0 - PAPER_AP_W32_256)


def test_training_closes_its_run_with_the_paper_comparison(tmp_path):
    """The end of ``train`` (:func:`pipelines.mlflow_runs.close_training_run`) logs ``paper/`` and ``delta/`` as ``hrnet
    evaluate`` does, from the final metrics. Before: training never called ``log_paper_comparison`` (no delta/AP)."""
    from pipelines import mlflow_runs as tracking
    from pipelines.mlflow_runs import close_training_run

    uri = _uri(tmp_path)
    run = tracking.create_run(uri, "hrnet", "r", tracking.recipe_tags(load_recipe(RECIPE, profile="smoke")))
    close_training_run(uri, run, RECIPE, {"AP": 12.5, "loss": 0.1, "train_time_s": 3.0, "driver_setup_s": 1.0}, 1)
    r = tracking.client(uri).get_run(run)
    assert r.info.status == "FINISHED"
    assert r.data.metrics["delta/AP"] == pytest.approx(12.5 - PAPER_AP_W32_256)


# ------------------------------------------------------------------------------------------------ 5. report links


@pytest.mark.parametrize("uri, ui, expected", [
    ("http://host:5055", None, "http://host:5055"),
    ("https://user:secret@mlflow.example.org/prefix/", None, "https://mlflow.example.org/prefix"),
    ("http://host:5055", "http://ui.example:8080", "http://ui.example:8080"),
    ("sqlite:///mlflow.db", None, "http://127.0.0.1:5000"),
])
def test_report_link_base_comes_from_the_tracking_uri(monkeypatch, uri, ui, expected):
    """``hrnet report --mlflow-uri http://host:5055`` links runs to that server (credentials dropped); ``--mlflow-ui``
    still wins, and a file store keeps the local ``mlflow ui`` default. Before: every link went to
    ``http://127.0.0.1:5000`` unless ``--mlflow-ui`` was given."""
    from pipelines.report import cli

    seen = {}

    def fake_build(out_dir, **kw):
        seen.update(kw)
        return cli.ReportOutput(Path("r.md"), Path("r.html"), Path("r.json"), [], {}, None)

    monkeypatch.delenv("HRNET_MLFLOW_UI", raising=False)
    monkeypatch.setattr(cli, "build_report", fake_build)
    parser = argparse.ArgumentParser()
    cli.add_report_parser(parser.add_subparsers(dest="command"))
    argv = ["report", "--mlflow-uri", uri, "--no-mlflow-log"] + (["--mlflow-ui", ui] if ui else [])
    assert cli.cmd_report(parser.parse_args(argv)) == 0
    assert seen["ui"] == expected


# ------------------------------------------------------------------------------------------------ 9. environment


def _cpuinfo() -> tuple[str | None, set[str]]:
    model, flags = None, set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux /proc/cpuinfo")
def test_environment_tags_name_the_hardware_and_software_that_decide_the_numbers():
    """``env.*`` tags: the CPU model and its vector ISA levels, torch / oneDNN / CUDA / cuDNN versions, the GPU.
    Independent reading: ``/proc/cpuinfo`` and torch's own build information. Before: no such tags."""
    from pipelines.mlflow_runs import environment_tags

    tags = environment_tags()
    model, flags = _cpuinfo()
    assert tags["env.cpu_model"] == model
    isa = tags["env.cpu_isa"].split()
    for level in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma", "avx", "sse4_2"):
        assert (level in isa) == (level in flags), level
    assert tags["env.torch"] == torch.__version__
    found = re.search(r"oneDNN v(\S+)", torch.__config__.show())
    assert tags["env.onednn"] == (found.group(1) if found else "none")
    assert tags["env.cuda"] == str(torch.version.cuda or "none")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    assert tags["env.cudnn"] == str(cudnn or "none")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    assert tags["env.gpu"] == gpu
    assert tags["env.onednn_max_cpu_isa"] == os.environ.get("ONEDNN_MAX_CPU_ISA", "default")


def test_environment_tags_of_several_workers_name_each_differing_rank():
    """Ranks on different machines: a value they share is kept, a differing one lists every rank's."""
    from pipelines.mlflow_runs import merge_environment_tags

    merged = merge_environment_tags([{"env.torch": "2.1", "env.cpu_isa": "avx2"},
                                     {"env.torch": "2.1", "env.cpu_isa": "avx512f avx2"}])
    assert merged == {"env.torch": "2.1", "env.cpu_isa": "rank0: avx2; rank1: avx512f avx2"}


def test_evaluation_run_records_the_environment(pose_root, tmp_path):
    """``hrnet evaluate`` of an official checkpoint creates a run carrying the ``env.*`` tags. Before: none."""
    from pipelines import mlflow_runs as tracking
    from pipelines.evaluate import evaluate
    from hrnet_core.weights import build_network

    recipe = load_recipe(RECIPE, {**SMALL, "data.root": str(pose_root)}, profile="smoke")
    torch.manual_seed(0)
    ckpt = tmp_path / "official.pth"
    torch.save(build_network(recipe).state_dict(), ckpt)
    evaluate(recipe, str(ckpt), mlflow_uri=_uri(tmp_path), run_id=None, out_dir=tmp_path / "eval", progress=False)
    c = tracking.client(_uri(tmp_path))
    (run,) = c.search_runs([c.get_experiment_by_name("hrnet").experiment_id])
    assert run.data.tags["env.torch"] == torch.__version__ and "env.cpu_isa" in run.data.tags


# ------------------------------------------------------------------------------------------------ 10. fingerprint


def _camvid_copy(dst: Path, n: int = 3) -> Path:
    """The first ``n`` CamVid train frames of the shared data, their labels and a ``train.txt``."""
    src = DATA_DIR / "camvid"
    pairs = [line.split() for line in (src / "train.txt").read_text().splitlines() if line.strip()][:n]
    for img, lab in pairs:
        for rel in (img, lab):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
    (dst / "train.txt").write_text("".join(f"{img} {lab}\n" for img, lab in pairs))
    return dst


def _edit_label(path: Path, value: int, where=(0, 0)) -> int:
    """Set one pixel of a label PNG to ``value``; returns the value it had."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    old = int(lab[where])
    lab[where] = value
    assert cv2.imwrite(str(path), lab)
    return old


@requires_shared
def test_an_edited_label_png_changes_the_split_fingerprint(tmp_path):
    """Every input that reaches a sample is in the fingerprint: one label pixel changed (a valid class to another)
    gives another fingerprint, hence another run identity. Before: the same fingerprint (labels were not hashed), so
    a finished run of the old labels was reused."""
    from pipelines.prepare import prepare_split

    src = _camvid_copy(tmp_path / "camvid")
    first = prepare_split("camvid", str(src), "train", tmp_path / "prepared", progress=False)["fingerprint"]
    label = src / "trainannot" / "0001TP_006690.png"
    old = _edit_label(label, 0, (5, 5))
    _edit_label(label, 3 if old != 3 else 4, (5, 5))
    second = prepare_split("camvid", str(src), "train", tmp_path / "prepared", progress=False)["fingerprint"]
    assert first != second
    again = prepare_split("camvid", str(src), "train", tmp_path / "prepared2", progress=False)["fingerprint"]
    assert again == second, "the fingerprint is a function of the inputs, not of the output folder"


# ------------------------------------------------------------------------------------------------ 11. bad input


@requires_shared
def test_a_label_value_outside_the_dataset_ids_is_refused_naming_file_and_value(tmp_path, capsys):
    """CamVid stores 0-10 (classes) and 11 (void); a 200 is no id of the dataset. Before: prepared, the 200 silently
    became "ignore" (1 pixel here). Now: exit 2, one line naming the file and the value, nothing written."""
    src = _camvid_copy(tmp_path / "camvid")
    label = src / "trainannot" / "0001TP_006720.png"
    _edit_label(label, 200, (10, 20))
    out = tmp_path / "prepared"
    code = main(["data", "prepare", "camvid", "--source", str(src), "--split", "train", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(label) in line and "200" in line, line
    assert not out.exists() or not any(out.iterdir()), "nothing written"


@requires_shared
def test_the_ignore_value_and_void_ids_stay_accepted(tmp_path):
    """255 (the ignore value) and CamVid's void id 11 are part of the vocabulary: prepared, mapped to ignore."""
    from pipelines.prepare import prepare_split

    src = _camvid_copy(tmp_path / "camvid", n=1)
    label = src / "trainannot" / "0001TP_006690.png"
    _edit_label(label, 255, (0, 0))
    _edit_label(label, 11, (0, 1))
    manifest = prepare_split("camvid", str(src), "train", tmp_path / "prepared", progress=False)
    assert manifest["num_samples"] == 1 and manifest["label_lut"][11] == 255 and manifest["label_lut"][255] == 255


def test_a_nan_face_coordinate_is_refused_naming_file_line_and_value(tmp_path, capsys):
    """``nan`` as a 300W landmark coordinate. Before: stored as NaN (a NaN heatmap target). Now: exit 2, one line
    naming the file, its line and the value, nothing written."""
    from hrnet_core.data.synthetic_faces import generate_faces

    raw = tmp_path / "raw"
    generate_faces(raw, 4, 2, seed=1)
    csv_file = raw / "face_landmarks_300w_train.csv"
    lines = csv_file.read_text().splitlines()
    cells = lines[2].split(",")
    cells[10] = "nan"
    lines[2] = ",".join(cells)
    csv_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    code = main(["data", "prepare", "300w", "--source", str(raw), "--split", "train", "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and f"{csv_file}:3" in line and "nan" in line, line
    assert not (out / "train").exists()


@requires_shared
def test_a_bottom_up_person_without_keypoints_is_refused(tmp_path):
    """HigherHRNet ``CocoKeypoints`` keeps every annotation with ``iscrowd == 0 or num_keypoints > 0`` and reads its
    ``keypoints`` (a KeyError without them), as our top-down reader refuses it. Before: the bottom-up reader kept such
    a person with no visible joints and no ignore mask. Now: AnnotationError naming the file and the annotation."""
    from hrnet_core.data.bottomup import BottomUpAnnotations
    from hrnet_core.data.io import AnnotationError

    src = DATA_DIR / "samples" / "coco"
    data = json.loads((src / "test_coco.json").read_text())
    person = next(a for a in data["annotations"] if not a.get("iscrowd", 0))
    del person["keypoints"]
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as exc:
        BottomUpAnnotations(bad, src)
    assert str(bad) in str(exc.value) and str(person["id"]) in str(exc.value)


def _imagenet_copy(dst: Path, empty: int) -> tuple[Path, str]:
    src = DATA_DIR / "imagenet_sample" / "val"
    shutil.copytree(src, dst)
    classes = sorted(p.name for p in dst.iterdir() if p.is_dir())
    for f in (dst / classes[empty]).iterdir():
        f.unlink()
    return dst, classes[empty]


@requires_shared
def test_an_empty_class_folder_without_synsets_is_refused(tmp_path):
    """torchvision ``ImageFolder`` (the official loader) indexes every class folder and refuses one without images.
    Before: the empty folder was dropped and 95 of the 99 labels shifted down by one. Now: DataError naming it."""
    from torchvision.datasets import ImageFolder

    from hrnet_core.data.imagenet import read_classification_split
    from hrnet_core.data.prepared import DataError

    root, empty = _imagenet_copy(tmp_path / "val", empty=4)
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(root))  # the reference refuses it too
    with pytest.raises(DataError) as exc:
        read_classification_split(root)
    assert str(root / empty) in str(exc.value)


@requires_shared
def test_an_empty_class_folder_with_synsets_keeps_every_index(tmp_path):
    """With ``--synsets`` the index comes from the file: an empty folder shifts nothing (kept as before)."""
    from hrnet_core.data.imagenet import read_classification_split

    root, empty = _imagenet_copy(tmp_path / "val", empty=4)
    cs = read_classification_split(root, synsets=DATA_DIR / "imagenet_sample" / "synsets.txt")
    wnids = [line.split()[0] for line in (DATA_DIR / "imagenet_sample" / "synsets.txt").read_text().splitlines()]
    assert len(cs.files) == 99
    assert all(cs.labels[k] == wnids.index(Path(f).parts[0]) for k, f in enumerate(cs.files))


# ------------------------------------------------------------------------------------------------ 12. non-finite


def test_metrics_json_is_strict(tmp_path):
    """``--metrics-out`` files hold standard JSON: a non-finite value is written as ``null``. Before: a bare ``NaN``
    (``json.dumps`` default), which jq and JavaScript refuse."""
    from hrnet_cli.main import _write_json

    p = tmp_path / "metrics" / "train.json"
    _write_json(str(p), {"loss": float("nan"), "AP": 12.5, "lr": float("inf")})
    assert _strict_json(p.read_text()) == {"AP": 12.5, "loss": None, "lr": None}


def test_non_finite_loss_names_epoch_step_and_terms():
    """The loop's check (torchvision ``references/detection`` ``train_one_epoch``: stop at the first non-finite
    loss, printing the loss terms): one line with the epoch, the optimiser step and every term."""
    from hrnet_core.engine import NonFiniteLossError, check_finite_loss
    from hrnet_core.errors import FinalError

    check_finite_loss({"loss": 0.5, "heatmap": 0.5}, epoch=0, epochs=3, step=4, batch=2, batches=8)
    with pytest.raises(NonFiniteLossError) as exc:
        check_finite_loss({"loss": float("nan"), "heatmap": float("inf")}, epoch=1, epochs=3, step=12, batch=3,
                          batches=8)
    assert str(exc.value).startswith("non-finite loss at epoch 2/3, step 12 (batch 4/8): loss nan, heatmap inf")
    assert "\n" not in str(exc.value)
    assert issubclass(NonFiniteLossError, FinalError), "not retried by Ray Train's failure policy"


# ------------------------------------------------------------------------------------------------ 13. unsafe inputs


class _Exploit:
    """Unpickling this touches ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _malicious(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": _Exploit(marker)}, path)
    return path


def test_cli_train_refuses_a_malicious_pretrained_file_in_one_line(pose_root, tmp_path, capsys):
    """Before: refused (nothing ran) but as a ValueError traceback out of ``hrnet train``. Now: one line, exit 2."""
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "imagenet.pth", marker)
    code = main(["train", RECIPE, "--profile", "smoke", "--set", f"data.root={pose_root}", "--set", "model.width=8",
                 "--set", f"model.pretrained={bad}", "--storage-path", str(tmp_path / "ray"),
                 "--mlflow-uri", _uri(tmp_path)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and str(bad) in line and "model.pretrained" in line, line
    assert not marker.exists()


def _finished_run(pose_root: Path, tmp_path: Path):
    """A run folder whose checkpoint has trained every epoch (as ``tests/test_run_identity.py`` builds it)."""
    from hrnet_core.weights import build_network, save_weights
    from pipelines import runs

    recipe = runs.absolutize(load_recipe(RECIPE, {**SMALL, "data.root": str(pose_root)}, profile="smoke"))
    identity = runs.run_identity(recipe)
    run_dir = tmp_path / "ray" / identity["run_name"]
    ckpt = run_dir / "checkpoint_2026-01-01_00-00-00.000000"
    ckpt.mkdir(parents=True)
    (run_dir / runs.RUN_IDENTITY).write_text(json.dumps(identity))
    (ckpt / "history.json").write_text(json.dumps([{"epoch": 1.0, "loss": 0.01, "AP": 12.5}]))
    save_weights(ckpt / "model.pt", build_network(recipe).state_dict(), recipe, {"epoch": 1})
    return recipe, identity["run_name"], ckpt


def _no_ray(monkeypatch):
    import pipelines.train as T

    def no_training(*a, **k):
        raise AssertionError("a finished run must not start Ray Train")

    monkeypatch.setattr(T, "trainer_class", no_training)
    monkeypatch.setattr(T, "init_ray", no_training)


def test_already_complete_run_reads_its_weights_safely_before_copying(pose_root, tmp_path, monkeypatch):
    """Before: the "already complete" path copied the checkpoint's ``model.pt`` to ``--weights-out`` unread (the
    normal path reads it with ``load_weights`` first). Now: refused, nothing copied, nothing run."""
    import pipelines.train as T
    from hrnet_core.weights import CheckpointError

    recipe, run_name, ckpt = _finished_run(pose_root, tmp_path)
    marker = tmp_path / "pwned"
    _malicious(ckpt / "model.pt", marker)
    _no_ray(monkeypatch)
    with pytest.raises(CheckpointError, match="refused"):
        T.train(recipe, num_workers=1, use_gpu=False, run_name=None, storage_path=str(tmp_path / "ray"),
                mlflow_uri=_uri(tmp_path), export_weights=tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists() and not marker.exists()


def test_already_complete_never_names_a_failed_run_as_complete(pose_root, tmp_path, monkeypatch, capsys):
    """The MLflow run of a run folder whose checkpoints hold every epoch ended FAILED (the driver died after the last
    epoch). Before: "already complete: run ... (MLflow <that id>)" and the run stayed FAILED. Now: the run is marked
    FINISHED (the checkpoints prove it trained every epoch), tagged ``completed_from_checkpoint``, and the line says
    that it had ended FAILED."""
    import pipelines.train as T
    from pipelines import mlflow_runs as tracking

    recipe, run_name, _ = _finished_run(pose_root, tmp_path)
    uri = _uri(tmp_path)
    rid = tracking.create_run(uri, "hrnet", run_name, {"source": "training"})
    tracking.end_run(uri, rid, "FAILED")
    _no_ray(monkeypatch)
    result = T.train(recipe, num_workers=1, use_gpu=False, run_name=None, storage_path=str(tmp_path / "ray"),
                     mlflow_uri=uri)
    out = capsys.readouterr().out
    run = tracking.client(uri).get_run(rid)
    assert result.run_id == rid and run.info.status == "FINISHED"
    assert run.data.tags.get("completed_from_checkpoint") == "true"
    assert "ended FAILED" in out, out


# ------------------------------------------------------------------------------------------------ 14. epoch logs


def test_an_epoch_logged_twice_is_recorded_once(tmp_path):
    """A worker killed between the epoch's MLflow log and its checkpoint report retrains that epoch after the restart
    and logs it again. Before (``tracking.log_metrics`` twice at step 1): 2 values of ``loss`` at step 1. Now
    (:func:`pipelines.mlflow_runs.log_epoch`): 1."""
    from pipelines import mlflow_runs as tracking
    from pipelines.mlflow_runs import log_epoch

    uri = _uri(tmp_path)
    rid = tracking.create_run(uri, "hrnet", "r")
    log_epoch(uri, rid, {"epoch": 1.0, "loss": 0.5, "lr": 1e-3}, epoch=1)
    log_epoch(uri, rid, {"epoch": 1.0, "loss": 0.5, "lr": 1e-3}, epoch=1)  # the rerun of the same epoch
    log_epoch(uri, rid, {"epoch": 2.0, "loss": 0.4, "lr": 1e-3}, epoch=2)
    history = tracking.client(uri).get_metric_history(rid, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.4)]


# ------------------------------------------------------------------------------------------------ 15. umask


def test_prepared_split_folder_follows_the_umask(tmp_path):
    """A prepared split on a shared cluster folder must be readable by the group / others the user's umask allows.
    Before: ``drwx------`` (``tempfile.mkdtemp``'s 0700 kept by the rename). Now, with umask 022: ``drwxr-xr-x``."""
    from pipelines.prepare import prepare_split

    generate_dataset(tmp_path / "raw", num_train=2, num_val=1, seed=1)
    old = os.umask(0o022)
    try:
        prepare_split("coco", str(tmp_path / "raw"), "train2017", tmp_path / "prepared", progress=False)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "prepared" / "train2017").stat().st_mode)
    assert mode == 0o755, oct(mode)
    for f in (tmp_path / "prepared" / "train2017").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, (f, oct(stat.S_IMODE(f.stat().st_mode)))



def test_non_finite_metrics_are_logged_and_flagged_never_dropped(tmp_path, capsys):
    """Issue 25: ``log_metrics`` used to skip NaN / inf values without a word (a NaN NME vanished from the run).
    Now the value reaches MLflow (NaN kept as NaN), the run carries ``nonfinite_metrics`` and stderr says so."""
    from pipelines import mlflow_runs

    uri = _uri(tmp_path)
    c = mlflow_runs.client(uri)
    run_id = c.create_run(c.create_experiment("nonfinite")).info.run_id
    mlflow_runs.log_metrics(uri, run_id, {"NME": float("nan"), "AP": 12.5, "dataset": "300w"}, step=3)
    mlflow_runs.log_metrics(uri, run_id, {"loss": float("inf")}, step=4)
    run = c.get_run(run_id)
    assert math.isnan(run.data.metrics["NME"]) and run.data.metrics["AP"] == 12.5
    assert "dataset" not in run.data.metrics  # not a number: not a metric
    assert run.data.metrics["loss"] > 1e300  # MLflow's sqlite store keeps +inf as the largest float
    assert run.data.tags["nonfinite_metrics"] == "NME@3=nan, loss@4=inf"
    err = capsys.readouterr().err
    assert "NME@3=nan" in err and "loss@4=inf" in err
