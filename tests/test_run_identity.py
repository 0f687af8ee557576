"""Correct by default (issue 11): a run is identified by its data, finished runs are not re-run, ad-hoc evaluation
has no side effects on the training run, and bad input in training fails once with its own error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
from hrnet_core.recipes import ConfigError, load_recipe

RECIPE = "pose_hrnet_w32_256x192_coco"
SMALL = {"model.width": 8, "train.global_batch_size": 8, "train.batch_size_per_device": 4, "train.epochs": 1,
         "train.val_every": 1}


def _prepare(root: Path, seed: int) -> Path:
    from pipelines.prepare import prepare_split

    generate_dataset(root / "raw", num_train=10, num_val=3, seed=seed)
    prepare_split("coco", str(root / "raw"), "train2017", root / "prepared", progress=False)
    prepare_split("coco", str(root / "raw"), "val2017", root / "prepared", progress=False,
                  detections=DETECTIONS_FILE.format(split="val2017"))
    return root / "prepared"


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    return _prepare(tmp / "a", seed=1), _prepare(tmp / "b", seed=2)


def _recipe(root, **over):
    return load_recipe(RECIPE, {**SMALL, "data.root": str(root), **over}, profile="smoke")


def test_default_run_name_depends_on_the_data_not_on_its_location(two_datasets, tmp_path):
    from pipelines.runs import run_identity

    a, b = two_datasets
    ida, idb = run_identity(_recipe(a)), run_identity(_recipe(b))
    assert ida["dataset_fingerprint"] != idb["dataset_fingerprint"]
    assert ida["run_name"] != idb["run_name"], "other data -> another run, never a resume of the old one"
    moved = tmp_path / "moved"
    shutil.copytree(a.parent, moved)  # the same data in another place: same run
    assert run_identity(_recipe(moved / "prepared"))["run_name"] == ida["run_name"]
    assert run_identity(_recipe(a, **{"train.epochs": 2}))["run_name"] != ida["run_name"]


def _fake_finished_run(storage: Path, run_name: str, identity: dict, epochs: int, recipe) -> None:
    from hrnet_core.weights import build_network, save_weights
    from pipelines.runs import RUN_IDENTITY

    ckpt = storage / run_name / "checkpoint_2026-01-01_00-00-00.000000"
    ckpt.mkdir(parents=True)
    (storage / run_name / RUN_IDENTITY).write_text(json.dumps(identity))
    history = [{"epoch": float(e + 1), "loss": 0.01, "AP": 12.5} for e in range(epochs)]
    (ckpt / "history.json").write_text(json.dumps(history))
    save_weights(ckpt / "model.pt", build_network(recipe).state_dict(), recipe, {"epoch": epochs})


def test_finished_run_is_reported_without_training(two_datasets, tmp_path, monkeypatch, capsys):
    import pipelines.train as T

    a, _ = two_datasets
    r = T.absolutize(_recipe(a))
    identity = T.run_identity(r)
    _fake_finished_run(tmp_path / "ray", identity["run_name"], identity, 1, r)

    def no_training():
        raise AssertionError("a finished run must not start Ray Train")

    monkeypatch.setattr(T, "trainer_class", no_training)
    monkeypatch.setattr(T, "init_ray", lambda address=None: no_training())
    result = T.train(_recipe(a), num_workers=2, use_gpu=False, run_name=None, storage_path=str(tmp_path / "ray"),
                     mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", export_weights=tmp_path / "w.pt")
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"already complete: run {identity['run_name']}") and "AP 12.50" in out[-1]
    assert result.history[-1]["AP"] == 12.5 and (tmp_path / "w.pt").is_file()


def test_a_run_of_other_data_is_never_resumed(two_datasets, tmp_path):
    import pipelines.train as T

    a, b = two_datasets
    ra = T.absolutize(_recipe(a))
    ida = T.run_identity(ra)
    _fake_finished_run(tmp_path / "ray", "mine", ida, 0, ra)  # checkpoints of data a, unfinished
    (tmp_path / "ray" / "mine" / "checkpoint_2026-01-01_00-00-00.000000" / "history.json").write_text("[]")
    with pytest.raises(ConfigError, match="was trained with dataset_fingerprint .* cannot be resumed"):
        T.train(_recipe(b), num_workers=1, use_gpu=False, run_name="mine", storage_path=str(tmp_path / "ray"),
                mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_adhoc_evaluation_is_its_own_run_and_folder(two_datasets, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from hrnet_cli import main
    from hrnet_core.weights import build_network, save_weights
    from pipelines import mlflow_runs as tracking

    a, _ = two_datasets
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = _recipe(a)
    training = tracking.create_run(uri, "hrnet", "trained", {"source": "training"})
    save_weights(tmp_path / "models" / "pose.pt", build_network(r).state_dict(), r,
                 {"epoch": 1, "mlflow_run_id": training})
    assert main(["evaluate", "--checkpoint", "models/pose.pt", "--mlflow-uri", uri]) == 0
    capsys.readouterr()
    assert (tmp_path / "outputs" / "evaluations" / "pose" / "metrics.json").is_file()
    assert not (tmp_path / "outputs" / "evaluation").exists(), "the DVC stage's folder is not touched"
    c = MlflowClient(uri)
    assert c.get_run(training).data.metrics == {}, "nothing logged into the training run"
    runs = c.search_runs([c.get_experiment_by_name("hrnet").experiment_id], "tags.source = 'evaluation'")
    assert len(runs) == 1 and runs[0].data.tags["eval.training_run_id"] == training and "AP" in runs[0].data.metrics
    for argv in (["--set", "model.width=32"], ["--profile", "smoke"]):
        assert main(["evaluate", "--checkpoint", "models/pose.pt", "--mlflow-uri", uri, *argv]) == 2
        assert "name the RECIPE" in capsys.readouterr().err


def test_data_errors_are_not_retried():
    """A worker failure caused by bad input is final; other worker failures keep Ray Train's retries."""
    from ray.train import FailureConfig
    from ray.train.v2.api.exceptions import WorkerGroupError

    from hrnet_core.data.io import ImageReadError
    from hrnet_core.errors import root_cause
    from pipelines.ray_adapter import final_failure_policy

    policy = final_failure_policy(FailureConfig(max_failures=2))
    try:
        try:
            raise ImageReadError("/x/bad.jpg", "cannot be decoded (corrupt or not an image)")
        except ImageReadError as inner:
            raise RuntimeError("UDF failed to process a data block") from inner
    except RuntimeError as wrapped:
        bad = WorkerGroupError("worker 0 failed", {0: wrapped})
    assert policy.make_decision(bad).name == "RAISE"
    assert isinstance(root_cause(bad), ImageReadError) and "/x/bad.jpg" in str(root_cause(bad))
    lost = WorkerGroupError("worker 1 died", {1: RuntimeError("actor died")})
    assert policy.make_decision(lost).name == "RETRY"


@pytest.mark.ray
@pytest.mark.slow
def test_corrupt_image_after_preparation_fails_training_once(ray_session, tmp_path, monkeypatch, capsys):
    from hrnet_cli import main

    root = _prepare(tmp_path, seed=3)
    bad = sorted((tmp_path / "raw" / "train2017").glob("*.jpg"))[0]
    bad.write_text("not an image")
    monkeypatch.chdir(tmp_path)
    argv = ["train", RECIPE, "--profile", "smoke", "--num-workers", "1", "--mlflow-uri", "sqlite:///mlflow.db",
            *[f"--set={k}={v}" for k, v in {**SMALL, "data.root": str(root), "train.max_failures": 2}.items()]]
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("hrnet: error: training failed: ImageReadError") and bad.name in last


def _readme_commands() -> list[str]:
    """The `hrnet` command list of the README (section "The `hrnet` command"), continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## The `hrnet` command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in joined.splitlines() if line.strip().startswith("hrnet ")]


@pytest.mark.ray
@pytest.mark.slow
def test_readme_command_list_runs_as_written(ray_session, tmp_path, monkeypatch, capsys):
    """The README's `hrnet` commands, in order, on an empty folder (1-epoch smoke training; fewer generated images).
    The official-checkpoint line needs a downloaded release file and is skipped."""
    import shlex

    from hrnet_cli import main

    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert any(c.startswith("hrnet train") for c in commands) and any(c.startswith("hrnet evaluate") for c in commands)
    for command in commands:
        argv = shlex.split(command)[1:]
        if any(a.endswith(".pth") for a in argv):
            continue
        if argv[:2] == ["data", "generate"]:
            argv += ["--num-train", "40", "--num-val", "4"]
        if argv[0] == "train":
            argv += ["--set", "train.epochs=1", "--set", "train.val_every=1", "--set", "model.width=8"]
        if argv == ["--help"]:
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            assert exit_.value.code == 0
            continue
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, (command, err[-2000:])
    assert (tmp_path / "models" / "pose.pt").is_file() and (tmp_path / "reports" / "paper_comparison.md").is_file()


def test_sweep_overrides_with_relative_paths_are_pinned_and_checked(tmp_path, monkeypatch):
    """`hrnet sweep run ... -o data.root=<relative>`: trials run in other directories, so the driver pins the path;
    missing data fails before anything is scheduled."""
    from sweeps.resolve import resolve_plan
    from sweeps.spec import SweepConfigError

    monkeypatch.chdir(tmp_path)
    plan = resolve_plan("pose_width_coco", smoke=True, overrides={"data.root": "data/prepared/synthetic"})
    roots = {t.overrides.get("data.root") for t in plan.trials}
    assert roots == {str(tmp_path / "data/prepared/synthetic")}, roots
    with pytest.raises(SweepConfigError, match="prepared split"):
        resolve_plan("pose_width_coco", smoke=True, overrides={"data.root": "data/prepared/synthetic"},
                     check_data=True)


def test_local_ray_is_opt_in_for_clusters(monkeypatch):
    """`hrnet train` without --address starts a local Ray without the dashboard; a cluster is opt-in."""
    import pipelines.train as T

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray.init", lambda **kw: calls.append(kw))
    T.init_ray(None)
    T.init_ray("ray://head:10001")
    assert calls == [{"include_dashboard": False}, {"address": "ray://head:10001"}]


def test_a_training_run_reads_each_manifest_once_and_workers_not_at_all(two_datasets, tmp_path, monkeypatch):
    """Issue 25: the splits were opened six times on the way (identity, sample table, each worker). Now the driver
    opens train and val once and hands the ``PreparedSplit`` pair to the workers in the loop config."""
    import ast

    import ray

    import hrnet_core.data.prepared as prepared
    from pipelines import train as T

    opened = []
    real = prepared.open_split_dir
    monkeypatch.setattr(prepared, "open_split_dir",
                        lambda path, **kw: opened.append(Path(path).name) or real(path, **kw))
    was_up = ray.is_initialized()
    with pytest.raises(ConfigError, match="placement 'nowhere'"):  # refused after the splits, before Ray starts
        T.train(_recipe(two_datasets[0]), num_workers=1, use_gpu=False, run_name=None,
                storage_path=str(tmp_path / "runs"), mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                placement="nowhere")
    assert sorted(opened) == ["train2017", "val2017"]
    assert ray.is_initialized() == was_up
    worker = ast.parse(Path(T.__file__).with_name("train_worker.py").read_text())
    calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
             for n in ast.walk(worker) if isinstance(n, ast.Call)}
    assert not calls & {"open_split", "open_split_dir", "open_training_splits"}
