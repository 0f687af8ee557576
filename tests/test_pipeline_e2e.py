"""End to end on generated data: prepare -> Ray Train (2 CPU workers, Ray Data ingest) -> resume -> evaluate -> MLflow.

One tiny run on the shared session Ray instance (``ray_session`` in conftest.py); about a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
from hrnet_core.models import build_model, load_checkpoint
from hrnet_core.recipes import load_recipe

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from pipelines.prepare import prepare_split

    tmp = tmp_path_factory.mktemp("e2e")
    generate_dataset(tmp / "raw", num_train=24, num_val=6, seed=1)
    prepare_split("coco", str(tmp / "raw"), "train2017", tmp / "prepared", progress=False)
    prepare_split("coco", str(tmp / "raw"), "val2017", tmp / "prepared", progress=False,
                  detections=DETECTIONS_FILE.format(split="val2017"))
    return tmp


def _recipe(workdir, epochs):
    return load_recipe("pose_hrnet_w32_256x192_coco", {
        "data.root": str(workdir / "prepared"), "train.epochs": epochs, "train.val_every": 1,
        "train.global_batch_size": 8, "train.batch_size_per_device": 4, "model.width": 8,
    }, profile="smoke")


def test_train_resume_evaluate(ray_session, workdir, monkeypatch):
    from mlflow import MlflowClient

    from pipelines.evaluate import evaluate, load_weights
    from pipelines.train import train

    monkeypatch.chdir(workdir)  # relative paths resolve against the caller's directory, never the workers'
    uri = "sqlite:///mlflow.db"
    common = dict(num_workers=2, use_gpu=False, run_name="e2e", storage_path="ray_results", mlflow_uri=uri)

    first = train(_recipe(workdir, 1), export_weights="models/pose.pt", **common)
    assert len(first.history) == 1 and first.history[0]["loss"] > 0
    assert "AP" in first.history[0], "in-training validation ran on rank 0"
    assert Path(first.checkpoint_path, "model.pt").is_file()
    assert (workdir / "models/pose.pt").is_file()

    # same run name: Ray Train restores the latest checkpoint and continues with epoch 2 in the same MLflow run
    second = train(_recipe(workdir, 2), export_weights="models/pose.pt", **common)
    assert second.run_id == first.run_id
    assert [h["epoch"] for h in second.history] == [1.0, 2.0]
    assert second.history[1]["optimizer_steps"] > second.history[0]["optimizer_steps"]

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(first.run_id)
    assert run.data.params["train.global_batch_size"] == "8" and run.data.params["model.width"] == "8"
    tags = run.data.tags
    assert tags["recipe"] == "pose_hrnet_w32_256x192_coco" and tags["profile"] == "smoke"
    assert tags["paper.id"] == "hrnet_pose_cvpr2019" and tags["source"] == "training"
    assert len(tags["dataset_fingerprint"]) == 16 and tags["ray.num_workers"] == "2" and tags["resumed"] == "true"
    losses = client.get_metric_history(first.run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2], "one loss value per epoch"
    assert {m.step for m in client.get_metric_history(first.run_id, "AP")} == {1, 2}
    assert tags["resumed.changed.train.epochs"] == "1 -> 2"

    # the exported weights load strictly into the recipe's model
    payload = load_weights(workdir / "models/pose.pt")
    assert payload["epoch"] == 2 and payload["mlflow_run_id"] == first.run_id
    model = build_model(payload["model"], **payload["model_kwargs"])
    load_checkpoint(model, payload["state_dict"])
    assert payload["recipe"]["data"]["root"] == str(workdir / "prepared")

    metrics = evaluate(None, "models/pose.pt", mlflow_uri=uri, run_id=None, out_dir="outputs/eval", progress=False)
    assert {"AP", "AP50", "AR"} <= set(metrics) and 0.0 <= metrics["AP"] <= 100.0
    assert json.loads((workdir / "outputs/eval/metrics.json").read_text())["AP"] == metrics["AP"]
    results = json.loads((workdir / "outputs/eval/predictions.json").read_text())
    assert results and len(results[0]["keypoints"]) == 51
    assert list((workdir / "outputs/eval/vis").glob("*.jpg"))
    run = client.get_run(first.run_id)
    assert run.data.metrics["AP"] == pytest.approx(metrics["AP"])
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/predictions.json", "evaluation/metrics.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.run_id, "weights")} == {"weights/pose.pt"}
    assert torch.load(workdir / "models/pose.pt", weights_only=False)["format"] == "hrnet-pipeline/weights-1"
