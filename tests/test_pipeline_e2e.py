"""End to end on generated data: prepare -> Ray Train (2 CPU workers, Ray Data ingest) -> resume -> evaluate -> MLflow.

One tiny run on the shared session Ray instance (``ray_session`` in conftest.py); about a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
from hrnet_core.models import build_model, load_checkpoint
from hrnet_core.recipes import load_recipe
from tests.official import torch_threads



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from pipelines.prepare import prepare_split

    tmp = tmp_path_factory.mktemp("e2e")
    generate_dataset(tmp / "raw", num_train=24, num_val=6, seed=1)
    prepare_split("coco", str(tmp / "raw"), "train2017", tmp / "prepared", progress=False, task="pose_topdown")
    prepare_split("coco", str(tmp / "raw"), "val2017", tmp / "prepared", progress=False, task="pose_topdown",
                  detections=DETECTIONS_FILE.format(split="val2017"))
    return tmp


def _recipe(workdir, epochs):
    return load_recipe("pose_hrnet_w32_256x192_coco", {
        "data.root": str(workdir / "prepared"), "train.epochs": epochs, "train.val_every": 1,
        "train.global_batch_size": 8, "train.batch_size_per_device": 4, "model.width": 8,
    }, profile="smoke")


@pytest.mark.ray
@pytest.mark.slow
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
    # time outside the epochs, per part (issue 16): each process's first epoch has its start-up; the resumed run's
    # workers started again, so epoch 2 has its own
    for h in second.history:
        assert h["worker_start_s"] > 0 and h["worker_setup_s"] > 0 and h["val_time_s"] > 0
        assert h["checkpoint_write_s"] > 0
    assert 0 < second.metrics["driver_setup_s"] < second.metrics["train_time_s"]
    assert 0 < second.metrics["fit_s"] < second.metrics["train_time_s"]

    # a finished run started again (e.g. `dvc repro --force`) trains no further and returns the same weights
    third = train(_recipe(workdir, 2), **common)
    assert third.run_id == first.run_id and third.history == second.history

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

    metrics = evaluate(None, "models/pose.pt", mlflow_uri=uri, run_id=None, out_dir="outputs/eval", progress=False,
                       into_training_run=True)  # the DVC evaluate stage
    assert {"AP", "AP50", "AR"} <= set(metrics)
    assert metrics["AP"] == pytest.approx(second.history[-1]["AP"], abs=1e-9), \
        "validation sharded over 2 ranks scores what the single-process evaluation scores"
    assert json.loads((workdir / "outputs/eval/metrics.json").read_text())["AP"] == metrics["AP"]
    results = json.loads((workdir / "outputs/eval/predictions.json").read_text())
    assert results and len(results[0]["keypoints"]) == 51
    assert list((workdir / "outputs/eval/vis").glob("*.jpg"))
    run = client.get_run(first.run_id)
    assert run.data.metrics["AP"] == pytest.approx(metrics["AP"])
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/predictions.json", "evaluation/metrics.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.run_id, "weights")} == {"weights/pose.pt"}
    assert torch.load(workdir / "models/pose.pt", weights_only=True)["format"] == "hrnet-pipeline/weights-1"

    # trained vs untrained on the same batches: the task's loss on a fixed, unaugmented batch of the training split
    from hrnet_core.tasks import get_task
    from hrnet_core.weights import build_network
    from pipelines.ingest import encode_batch, samples_table
    from hrnet_core.data.prepared import open_split

    r = _recipe(workdir, 2)
    task = get_task(r.task)
    split = open_split(workdir / "prepared", "train2017")
    batch = task.collate_fn(encode_batch(samples_table(split).to_pandas().head(16),
                                         task.sample_transform(r, split, False), 0, 0, train=False))

    def loss_of(net):
        net.eval()
        with torch.no_grad():
            return float(task.train_step(r)(net, batch)["loss"])

    torch.manual_seed(r.train.seed)
    untrained = loss_of(build_network(r))
    trained = loss_of(build_network(r, payload["state_dict"]))
    assert trained < 0.98 * untrained, (trained, untrained)  # measured: 0.00733 vs 0.00757 after 12 steps

    # bit-reproducible with 2 workers: a fresh 2-epoch run equals the 1 + 1 epoch run resumed above
    again = train(_recipe(workdir, 2), **{**common, "run_name": "e2e-again"})
    assert [h["loss"] for h in again.history] == [h["loss"] for h in second.history]
    assert again.history[-1]["AP"] == second.history[-1]["AP"]


# ---------------------------------------------------------------------------------------------- pieces, no Ray


def test_learning_rate_schedule():
    from hrnet_core.engine import lr_at

    r = load_recipe("pose_hrnet_w32_256x192_coco")
    assert lr_at(r, 0, 0) == 1e-3 and lr_at(r, 169, 10**6) == 1e-3
    assert lr_at(r, 170, 0) == pytest.approx(1e-4) and lr_at(r, 209, 0) == pytest.approx(1e-5)
    h = load_recipe("pose_hrformer_s_256x192_coco")
    assert lr_at(h, 0, 0) == pytest.approx(5e-4 * 0.001)
    assert lr_at(h, 0, 250) == pytest.approx(5e-4 * (0.001 + 0.999 * 0.5))
    assert lr_at(h, 0, 500) == pytest.approx(5e-4)


def test_optimizer_exempts_named_parameters_from_weight_decay():
    from hrnet_core.engine import build_optimizer

    r = load_recipe("pose_hrformer_t_256x192_coco")
    model = build_model(r.model.name, **r.model.build_kwargs())
    opt = build_optimizer(r, model)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2
    exempt = opt.param_groups[1]
    assert exempt["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.01
    n_tables = sum(1 for n, _ in model.named_parameters() if "relative_position_bias_table" in n)
    assert len(exempt["params"]) == n_tables > 0
    adam = build_optimizer(load_recipe("pose_hrnet_w32_256x192_coco"), torch.nn.Linear(2, 2))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 0.0


def test_pretrained_backbone_loads_all_but_the_head(tmp_path):
    """The task builds its zoo model and initialises the backbone from model.pretrained (hrnet_core.models loader)."""
    from hrnet_core.models import CheckpointMismatchError
    from hrnet_core.tasks import get_task

    kw = dict(width=8, stage_modules=[1, 1, 1], stage_blocks=[1, 1, 1], stage1_blocks=1, stage1_planes=16)
    source = build_model("pose_hrnet_w32", num_joints=17, **kw)
    cls_like = {k: v for k, v in source.state_dict().items() if not k.startswith("final_layer")}
    cls_like["classifier.weight"] = torch.zeros(3, 3)  # classification-only tensors are ignored
    torch.save(cls_like, tmp_path / "imagenet.pth")
    over = {f"model.{k}": v for k, v in kw.items()}
    task = get_task("pose_topdown")
    torch.manual_seed(1)
    target = task.build_model(load_recipe("pose_hrnet_w32_256x256_mpii", {**over, "model.pretrained": str(tmp_path / "imagenet.pth")}))
    torch.manual_seed(1)
    fresh = task.build_model(load_recipe("pose_hrnet_w32_256x256_mpii", {**over, "model.pretrained": None}))
    assert torch.equal(target.conv1.weight, source.conv1.weight) and not torch.equal(fresh.conv1.weight, source.conv1.weight)
    assert torch.equal(target.final_layer.weight, fresh.final_layer.weight), "the head keeps its initialisation"
    del cls_like["conv1.weight"]
    torch.save(cls_like, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match="conv1.weight"):
        task.build_model(load_recipe("pose_hrnet_w32_256x256_mpii", {**over, "model.pretrained": str(tmp_path / "broken.pth")}))
    with pytest.raises(FileNotFoundError):
        task.build_model(load_recipe("pose_hrnet_w32_256x256_mpii", {**over, "model.pretrained": str(tmp_path / "no.pth")}))


def test_cpu_budget_leaves_room_for_ingest():
    from pipelines.train import default_cpus_per_worker

    assert default_cpus_per_worker(2, False, 2.0) == 0.5
    assert default_cpus_per_worker(1, False, 2.0) == 1.0
    assert default_cpus_per_worker(8, False, 4.0) == 0.375
    assert default_cpus_per_worker(4, True, 64.0) == 1.0


def _sample_fn(r, split):
    from hrnet_core.tasks import get_task

    return get_task(r.task).sample_transform(r, split, True)


def test_ingest_batch_matches_the_recipe_geometry(workdir):
    from hrnet_core.data.prepared import open_split
    from pipelines.ingest import encode_batch, samples_table

    r = _recipe(workdir, 1)
    split = open_split(workdir / "prepared", "train2017")
    fn = _sample_fn(r, split)
    rows = samples_table(split).to_pandas().head(6)
    out = encode_batch(rows, fn, r.train.seed, 0)
    (w, h), (hw, hh) = r.data.input_size, r.data.heatmap_size
    assert out["image"].shape == (6, 3, h, w) and out["target"].shape == (6, 17, hh, hw)
    assert out["target_weight"].shape == (6, 17, 1) and out["target"].max() == pytest.approx(1.0)
    rec = fn.record(rows.iloc[0].to_dict())
    assert Path(rec["image_file"]).is_absolute() and rec["scale"][0] / rec["scale"][1] == pytest.approx(w / h)


def _same_batch(a, b):
    return all(np.array_equal(a[k], b[k]) for k in ("image", "target", "target_weight", "index"))


def test_ingest_augmentation_is_seeded_by_seed_epoch_and_index(workdir):
    from hrnet_core.data.prepared import open_split
    from pipelines.ingest import encode_batch, samples_table

    r = _recipe(workdir, 1)
    split = open_split(workdir / "prepared", "train2017")
    fn = _sample_fn(r, split)
    rows = samples_table(split).to_pandas().head(6)
    first = encode_batch(rows, fn, 0, 2)
    assert _same_batch(first, encode_batch(rows, fn, 0, 2)), "same (seed, epoch) -> identical arrays"
    assert list(first["index"]) == list(range(6))
    # a sample's crop depends on its index, not on the batch it lands in or its position there
    part = encode_batch(rows.iloc[[4, 1]], fn, 0, 2)
    assert np.array_equal(part["image"], first["image"][[4, 1]]) and np.array_equal(part["target"], first["target"][[4, 1]])
    other_epoch = encode_batch(rows, fn, 0, 3)
    assert not np.array_equal(other_epoch["image"], first["image"]), "a new epoch draws new augmentations"
    other_seed = encode_batch(rows, fn, 1, 2)
    assert not np.array_equal(other_seed["image"], first["image"])
    with pytest.raises(ValueError, match="'index' column"):
        encode_batch(rows.drop(columns="index"), fn, 0, 0)


@pytest.mark.ray
def test_ray_ingest_shards_are_reproducible_per_rank_and_epoch(ray_session, workdir):
    from hrnet_core.data.prepared import open_split
    from hrnet_core.data.seeding import epoch_shard
    from hrnet_core.tasks import get_task
    from pipelines.ingest import build_train_dataset, encode_batch, preserve_order, samples_table

    r = _recipe(workdir, 1)
    task = get_task(r.task)
    split = open_split(workdir / "prepared", "train2017")
    n = split.num_samples
    rows = samples_table(split).to_pandas()
    preserve_order()

    def run(epoch, rank, world):
        ds = build_train_dataset(task, r, split, epoch=epoch, rank=rank, world_size=world, task_batch_size=4,
                                 rows_per_block=8)
        out = ds.take_all()
        return {k: np.stack([row[k] for row in out]) for k in ("image", "target", "target_weight", "index")}

    def reference(epoch, rank, world):  # the same samples, computed in this process in one batch, in shard order
        return encode_batch(rows.iloc[epoch_shard(r.train.seed, epoch, n, rank, world)], _sample_fn(r, split),
                            r.train.seed, epoch)

    a0, a1 = run(0, 0, 2), run(0, 1, 2)
    assert _same_batch(a0, reference(0, 0, 2)) and _same_batch(a1, reference(0, 1, 2)), \
        "Ray Data tasks give the arrays of (seed, epoch, index) in the shard's order, whatever the batching"
    assert len(a0["index"]) == len(a1["index"]) == n // 2 and not set(a0["index"]) & set(a1["index"])
    assert _same_batch(run(0, 0, 2), a0), "run to run identical"
    b0 = run(1, 0, 2)
    assert list(b0["index"]) != list(a0["index"]), "a new epoch has a new order"


@pytest.mark.ray
def test_streamed_ingest_trains_with_the_losses_of_the_per_epoch_and_plain_paths(ray_session, workdir):
    """Issue 16: the streaming ingest of the training loop (one dataset for all epochs, each epoch cut to whole
    batches) gives, for the first steps across an epoch boundary, the losses of the per-epoch datasets
    (``epochs=1``, ``drop_last``: the ingest before issue 16) and of a plain in-process loop over the per-sample
    reference (``fn(row, sample_rng(seed, epoch, index))`` in ``epoch_shard`` order), same model seed."""
    from hrnet_core.data.prepared import open_split
    from hrnet_core.data.seeding import epoch_shard, sample_rng
    from hrnet_core.tasks import get_task
    from pipelines.ingest import build_train_dataset, preserve_order, samples_table, stack_samples, task_collate
    from hrnet_core.engine import build_optimizer

    r = _recipe(workdir, 2)
    task = get_task(r.task)
    split = open_split(workdir / "prepared", "train2017")
    table = samples_table(split)
    bs, seed = r.train.batch_size_per_device, r.train.seed
    per_epoch = table.num_rows // bs
    steps = per_epoch + 2  # into the second epoch
    assert table.num_rows % bs, "the split leaves a partial batch per epoch (what each epoch must drop)"
    preserve_order()

    def losses(batches) -> list[float]:
        torch.manual_seed(seed)
        model = task.build_model(r).train()
        opt, train_step, out = build_optimizer(r, model), task.train_step(r), []
        for _, batch in zip(range(steps), batches):
            opt.zero_grad(set_to_none=True)
            loss = train_step(model, batch)["loss"]
            loss.backward()
            opt.step()
            out.append(float(loss.detach()))
        return out

    def ray_batches(ds):
        return ds.iter_torch_batches(batch_size=bs, drop_last=True, collate_fn=task_collate(task.collate_fn))

    def streamed():
        yield from ray_batches(build_train_dataset(task, r, split, epoch=0, epochs=2, batch_size=bs, table=table))

    def per_epoch_datasets():
        for epoch in range(2):
            yield from ray_batches(build_train_dataset(task, r, split, epoch=epoch, table=table, rows_per_block=8))

    rows, fn = table.to_pylist(), task.sample_transform(r, split, True)

    def plain(epochs=(0, 1)):
        for epoch in epochs:
            order = epoch_shard(seed, epoch, len(rows), 0, 1)
            for k in range(0, len(order) // bs * bs, bs):
                samples = [fn(rows[i], sample_rng(seed, epoch, i)) for i in order[k:k + bs]]
                yield task.collate_fn({**stack_samples(samples), "index": order[k:k + bs]})

    with torch_threads():
        ref = losses(plain())
        assert len(ref) == steps
        assert losses(streamed()) == ref, "streamed ingest = per-sample reference, bit for bit"
        assert losses(per_epoch_datasets()) == ref, "per-epoch datasets (the ingest before issue 16) = reference"
        assert losses(plain((0, 2)))[per_epoch:] != ref[per_epoch:], "the losses see the second epoch's samples"


def test_ddp_options_let_hrformer_pose_train(tmp_path):
    """HRFormer pose keeps unused relative-position tables (official layout): plain DDP fails on the second
    iteration, the options of `ddp_kwargs` train; HRNet gets plain DDP. Single-process gloo group, CPU."""
    import torch
    import torch.distributed as dist

    from hrnet_core.recipes import load_recipe
    from hrnet_core.weights import build_network as build_pose_model
    from pipelines.train_worker import ddp_kwargs

    assert ddp_kwargs(build_pose_model(load_recipe("pose_hrnet_w32_256x192_coco", profile="smoke"))) == {}
    model = build_pose_model(load_recipe("pose_hrformer_t_256x192_coco", profile="smoke"))
    assert ddp_kwargs(model) == {"find_unused_parameters": True}
    x = torch.randn(2, 3, 128, 96)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        plain = torch.nn.parallel.DistributedDataParallel(model)
        plain(x).mean().backward()
        with pytest.raises(RuntimeError, match="finished reduction"):
            plain(x).mean().backward()
        ddp = torch.nn.parallel.DistributedDataParallel(
            build_pose_model(load_recipe("pose_hrformer_t_256x192_coco", profile="smoke")), **ddp_kwargs(model))
        for _ in range(3):
            ddp(x).mean().backward()
    finally:
        dist.destroy_process_group()
