"""The pretraining hand-off (issue 18, acceptance 4): classification weights -> ``hrnet export-backbone`` -> the
``model.pretrained`` of pose, face and segmentation models, strict on the backbone and with a new head; the official
classification-release layout (``../shared/reference/official_models/cls_hrnet_w*.json``) and timm's ``hrnet_w*``
weights load the same way; a backbone of the wrong width fails with one line naming the first mismatched tensor.
The 2-worker Ray run of a classification smoke recipe -> export by MLflow run id is in
``tests/test_classification.py::test_smoke_training_through_the_spine``."""

from __future__ import annotations

import json

import pytest
import torch

from hrnet_cli.main import main
from hrnet_core.models import CheckpointMismatchError, build_model, load_pretrained_backbone
from hrnet_core.recipes import load_recipe
from hrnet_core.tasks import get_task
from hrnet_core.weights import save_weights

from tests.official import load_reference, requires_shared

CLS_RECIPE = "cls_hrnet_w18_224x224_imagenet"
#: the smoke profiles' HRNet layout (smoke, smoke_face, smoke_classification)
TINY = {"width": 16, "stage1_blocks": 1, "stage1_planes": 32, "stage_modules": (1, 1, 1), "stage_blocks": (1, 1, 1)}
#: official CLS small_v1 = timm hrnet_w18_small
SMALL_V1 = {"width": 16, "stage1_blocks": 1, "stage1_planes": 32, "stage_modules": (1, 1, 1), "stage_blocks": (2, 2, 2)}


def _cls_weights(tmp_path, overrides=None, seed=0):
    """Our weights file of the smoke classification network (random, seeded) and its state dict."""
    torch.manual_seed(seed)
    r = load_recipe(CLS_RECIPE, overrides or {}, profile="smoke_classification")
    model = get_task("classification").build_model(r)
    f = save_weights(tmp_path / f"cls{seed}.pt", model.state_dict(), r, {"epoch": 1})
    return f, model.state_dict()


def _export(capsys, *args) -> dict:
    assert main(["export-backbone", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def _backbone_equal(model, ref, prefix=""):
    own = model.state_dict()
    keys = [k for k in ref if k.startswith(("conv1.", "layer1.", "transition", "stage")) and prefix + k in own]
    assert keys and all(torch.equal(own[prefix + k], ref[k]) for k in keys)
    return len(keys)


def _fit(model, loss_of, steps=6):
    """Adam steps (lr 3e-4; 5e-3 oscillates on these heatmap losses) on one fixed batch: the first and last loss."""
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(steps):
        loss = loss_of(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


def _heatmap_batch(n, k, size, hm):
    g = torch.Generator().manual_seed(1)
    target = torch.zeros(n, k, hm[1], hm[0])
    ys, xs = torch.randint(0, hm[1], (n, k), generator=g), torch.randint(0, hm[0], (n, k), generator=g)
    yy, xx = torch.meshgrid(torch.arange(hm[1]), torch.arange(hm[0]), indexing="ij")
    target = torch.exp(-((yy - ys[..., None, None]) ** 2 + (xx - xs[..., None, None]) ** 2) / 2.0)
    return {"image": torch.randn(n, 3, size[1], size[0], generator=g), "target": target.float(),
            "target_weight": torch.ones(n, k, 1), "index": torch.arange(n)}


def test_export_and_pose_face_seg_start_from_it(tmp_path, capsys):
    """A classification network of ours -> export-backbone -> pose / face recipes (model.pretrained, built by their
    task) and a zoo segmentation model start with exactly its backbone, keep a new head, and train."""
    src, ref = _cls_weights(tmp_path)
    out = tmp_path / "models/imagenet/ours_tiny.pth"
    s = _export(capsys, src, "--out", out)
    assert s["model"] == "cls_hrnet_w18" and s["entries"] == len(ref) and s["head_entries"] > 0 and s["dropped"] == 0
    released = torch.load(out, weights_only=True)
    assert list(released) == list(ref) and all(torch.equal(released[k], ref[k]) for k in ref)
    bb = tmp_path / "bb.pth"
    s2 = _export(capsys, src, "--out", bb, "--backbone-only")
    assert s2["head_entries"] == 0 and s2["dropped"] == s["head_entries"]

    for recipe, profile in (("pose_hrnet_w32_256x192_coco", "smoke"), ("face_hrnetv2_w18_256x256_300w", "smoke_face")):
        r = load_recipe(recipe, {"model.pretrained": str(out)}, profile=profile)
        task = get_task(r.task)
        torch.manual_seed(5)
        model = task.build_model(r)
        torch.manual_seed(5)
        scratch = task.build_model(load_recipe(recipe, profile=profile))
        n = _backbone_equal(model, ref)
        assert torch.equal(model.state_dict()["final_layer.weight" if r.task == "pose_topdown" else "head.3.weight"],
                           scratch.state_dict()["final_layer.weight" if r.task == "pose_topdown" else "head.3.weight"])
        batch = _heatmap_batch(4, 17 if r.task == "pose_topdown" else 68, r.data.input_size, r.data.heatmap_size)
        train_step = task.train_step(r)
        first, last = _fit(model, lambda m: train_step(m, batch)["loss"])
        print(f"{recipe}: {n} backbone tensors from the export; loss {first:.6f} -> {last:.6f} in 6 steps")
        assert last < 0.9 * first
    seg = build_model("seg_hrnetv2_w18", num_classes=3, **TINY)
    unused = load_pretrained_backbone(seg, bb)
    n = _backbone_equal(seg, ref)
    assert unused == []
    g = torch.Generator().manual_seed(2)  # 3 classes on 16x16 blocks, each class its own colour (learnable)
    y = torch.randint(0, 3, (2, 4, 4), generator=g).repeat_interleave(16, 1).repeat_interleave(16, 2)
    x = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() + 0.5 * torch.randn(2, 3, 64, 64, generator=g)

    def seg_loss(m):
        logits = torch.nn.functional.interpolate(m(x), size=(64, 64), mode="bilinear", align_corners=False)
        return torch.nn.functional.cross_entropy(logits, y)

    first, last = _fit(seg, seg_loss)
    print(f"seg_hrnetv2_w18: {n} backbone tensors from the export; loss {first:.4f} -> {last:.4f} in 6 steps")
    assert last < 0.9 * first


def test_wrong_width_fails_with_one_line_naming_the_first_tensor(tmp_path, capsys, monkeypatch):
    src, _ = _cls_weights(tmp_path, {"model.width": 18})
    out = tmp_path / "w18.pth"
    _export(capsys, src, "--out", out)
    r = load_recipe("pose_hrnet_w32_256x192_coco", {"model.pretrained": str(out)}, profile="smoke")
    with pytest.raises(CheckpointMismatchError) as e:
        get_task(r.task).build_model(r)
    first = str(e.value).splitlines()[0]
    own = build_model("pose_hrnet_w32", **TINY).state_dict()
    theirs = torch.load(out, weights_only=True)
    key = next(k for k in own if k in theirs and theirs[k].shape != own[k].shape)
    assert key == "layer1.0.downsample.0.weight" or key.startswith(("layer1", "transition1"))
    assert f"first: {key} {list(theirs[key].shape)} in the checkpoint vs {list(own[key].shape)} in the model" in first
    assert str(out) in first
    # hrnet train: one line, exit 2, before Ray starts (a width-16 classification smoke run on generated data)
    from hrnet_core.tasks.classification import generate
    from pipelines.prepare import prepare_split

    generate(tmp_path / "raw", num_train=12, num_val=6, seed=0)
    for split in ("train", "val"):
        prepare_split("imagenet", str(tmp_path / "raw"), split, tmp_path / "prepared", {"synsets": "synsets.txt"},
                      task="classification", progress=False)
    monkeypatch.chdir(tmp_path)
    rc = main(["train", CLS_RECIPE, "--profile", "smoke_classification", "--set", f"model.pretrained={out}",
               "--set", f"data.root={tmp_path / 'prepared'}", "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("hrnet: error: checkpoint ") and f"first: {key} " in err[0]
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_export_refuses_weights_without_a_backbone(tmp_path, capsys):
    f = tmp_path / "head.pth"
    torch.save({"classifier.weight": torch.zeros(3, 4)}, f)
    assert main(["export-backbone", str(f), "--out", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no HRNet backbone" in err[0] and str(f) in err[0]
    assert main(["export-backbone", "no-such-run", "--out", str(tmp_path / "x.pth"),
                 "--storage-path", str(tmp_path), "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    assert "'no-such-run' is no weights file" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "x.pth").exists()


@requires_shared
@pytest.mark.parametrize("ref", ["cls_hrnet_w18", "cls_hrnet_w32", "cls_hrnet_w48", "cls_hrnet_w18_small_v1",
                                 "cls_hrnet_w18_small_v2", "hrformer_cls_tiny"])
def test_official_release_layout(ref):
    """The export of our classification network has the released names and shapes, in the released order; every
    downstream zoo model of that width takes the released file as its backbone (meta tensors: layout only)."""
    from hrnet_core.models.export import classification_release_state

    spec = load_reference(ref)
    name = {"hrformer_cls_tiny": "cls_hrformer_t"}.get(ref, ref)
    with torch.device("meta"):
        ours = build_model(name)
    entries, dropped = classification_release_state(ours.state_dict())
    assert dropped == [] and [[k, list(v.shape)] for k, v in entries.items()] == spec["state_dict"]
    released = {k: torch.empty(s, device="meta") for k, s in spec["state_dict"]}
    downstream = {"cls_hrnet_w18": ["seg_hrnetv2_w18", "face_hrnetv2_w18", "det_hrnetv2p_w18"],
                  "cls_hrnet_w32": ["pose_hrnet_w32", "higher_hrnet_w32", "det_hrnetv2p_w32"],
                  "cls_hrnet_w48": ["pose_hrnet_w48", "seg_hrnetv2_w48", "seg_hrnetv2_ocr_w48"],
                  "cls_hrnet_w18_small_v1": ["seg_hrnetv2_w18_small_v1"],
                  "cls_hrnet_w18_small_v2": ["seg_hrnetv2_w18_small_v2"],
                  "hrformer_cls_tiny": ["hrformer_t"]}[ref]
    for model_name in downstream:
        with torch.device("meta"):
            model = build_model(model_name)
        unused = load_pretrained_backbone(model, released)
        assert all(k.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier", "stage4"))
                   for k in unused), (model_name, unused[:5])


def test_timm_hrnet_weights_load_the_same_way(tmp_path, capsys):
    """timm's ``hrnet_w18_small`` (= official small_v1) state dict, saved as its hub files are (a plain state
    dict), is a pose recipe's model.pretrained as it is and after export-backbone."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18_small", pretrained=False).state_dict()
    f = tmp_path / "hrnet_w18_small_timm.pth"
    torch.save(ref, f)
    over = {"model.stage_blocks": [2, 2, 2]}
    for pretrained in (f, tmp_path / "exported.pth"):
        if pretrained != f:
            s = _export(capsys, f, "--out", pretrained)
            assert s["model"] is None and s["entries"] == len(ref)
        r = load_recipe("pose_hrnet_w32_256x192_coco", {**over, "model.pretrained": str(pretrained)}, profile="smoke")
        _backbone_equal(get_task(r.task).build_model(r), ref)
