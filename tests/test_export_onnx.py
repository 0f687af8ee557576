"""``hrnet export onnx`` (issue 26): every family's network (detection: backbone + neck) exported at smoke sizes, run
on onnxruntime and compared with PyTorch on the same input (max abs difference <= 1e-4, printed); ``hrnet predict
--onnx`` gives the PyTorch predictor's results; the refusals are one line.

Needs the optional extra ``pip install -e '.[onnx]'`` (also in ``.[test]``); skipped without onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from official import DATA_DIR, requires_shared  # noqa: E402
from test_predict import lively  # noqa: E402

#: (recipe, profile, export H x W, dynamic size)
FAMILIES = [
    ("pose_hrnet_w32_256x192_coco", "smoke", (128, 96), False),
    ("pose_higher_hrnet_w32_512x512_coco", "smoke_bottomup", (64, 64), True),
    ("seg_hrnetv2_w48_512x1024_cityscapes", "smoke_segmentation", (64, 64), True),
    ("seg_hrnetv2_ocr_w48_512x1024_cityscapes", "smoke_segmentation", (64, 64), True),
    ("face_hrnetv2_w18_256x256_wflw", "smoke_face", (64, 64), False),
    ("cls_hrnet_w18_224x224_imagenet", "smoke_classification", (32, 32), False),
    ("det_faster_rcnn_hrnetv2p_w18_1333x800_1x_coco", "smoke_detection", (128, 160), True),
    ("pose_hrformer_t_256x192_coco", "smoke", (128, 96), False),
    ("cls_hrformer_t_224x224_imagenet", "smoke_classification", (32, 32), False),
    ("seg_hrformer_s_ocr_520x520_pascal_context", "smoke_segmentation", (64, 64), False),
]


def _recipe(name: str, profile: str):
    from hrnet_core.recipes import load_recipe

    return load_recipe(name, {"data.root": "/nonexistent"}, profile=profile)


@pytest.mark.parametrize("name,profile,hw,dynamic_size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_onnxruntime_equals_torch(name, profile, hw, dynamic_size, tmp_path):
    """Batch 3 on a graph exported with batch 2 (dynamic batch) and, for the dynamic-size exports, a 32 px larger
    input too. Measured on the smoke networks with unit-gain weights: max |ort - torch| 4e-7 .. 6e-6."""
    from hrnet_core.models.onnx_export import export_network, max_abs_difference
    from hrnet_core.weights import build_network

    recipe = _recipe(name, profile)
    torch.manual_seed(0)
    model = lively(build_network(recipe))
    exported = export_network(model, recipe, tmp_path / "m.onnx", hw, batch=2, dynamic_batch=True,
                              dynamic_size=dynamic_size)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, 3, *hw, generator=g)]
    if dynamic_size:
        inputs.append(torch.randn(1, 3, hw[0] + 32, hw[1] + 32, generator=g))
    for x in inputs:
        diff = max_abs_difference(model, exported.path, x, recipe.task)
        print(f"{name} ({exported.part}) input {tuple(x.shape)}: max |onnxruntime - torch| = {diff:.2e}")
        assert diff <= 1e-4


def test_hrformer_dynamic_size_is_refused(tmp_path):
    """HRFormer's window padding is traced at the export size (measured: a 64x64 export fails in onnxruntime at
    96x96); --dynamic-size is refused in one line instead of writing a graph that fails later."""
    from hrnet_core.models.onnx_export import OnnxExportError, export_network
    from hrnet_core.weights import build_network

    recipe = _recipe("seg_hrformer_s_ocr_520x520_pascal_context", "smoke_segmentation")
    with pytest.raises(OnnxExportError, match="without --dynamic-size"):
        export_network(build_network(recipe), recipe, tmp_path / "m.onnx", (64, 64), dynamic_size=True)
    assert not (tmp_path / "m.onnx").exists()


@requires_shared
def test_cli_export_then_predict_onnx_equals_torch(tmp_path, capsys):
    """``hrnet export onnx WEIGHTS`` then ``hrnet predict --onnx`` (the recipe comes from the file) gives the torch
    predictor's COCO results on the shared COCO samples (flip test, micro-batches: dynamic batch)."""
    from hrnet_cli.main import main
    from hrnet_core.recipes import load_recipe
    from hrnet_core.weights import build_network, save_weights

    recipe = load_recipe("pose_hrnet_w32_256x192_coco", {}, profile="smoke")
    torch.manual_seed(0)
    weights = save_weights(tmp_path / "pose.pt", lively(build_network(recipe)).state_dict(), recipe)
    onnx = tmp_path / "pose.onnx"
    assert main(["export", "onnx", str(weights), "--out", str(onnx), "--dynamic-batch"]) == 0
    summary = json.loads(capsys.readouterr().out)
    print(f"export: max |onnxruntime - torch| = {summary['max_abs_diff']:.2e}")
    assert summary["max_abs_diff"] <= 1e-4 and summary["input"] == [1, 3, 128, 96]
    boxes = str(DATA_DIR / "samples" / "coco" / "test_coco_det_AP_H_56.json")
    images = str(DATA_DIR / "samples" / "coco")
    assert main(["predict", str(weights), images, "--out", str(tmp_path / "t"), "--boxes", boxes, "--no-progress",
                 "--num-vis", "0"]) == 0
    assert main(["predict", images, "--onnx", str(onnx), "--out", str(tmp_path / "o"), "--boxes", boxes,
                 "--no-progress", "--num-vis", "0"]) == 0
    capsys.readouterr()
    t = json.loads((tmp_path / "t" / "predictions.json").read_text())
    o = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(t) > 10 and [r["image_id"] for r in t] == [r["image_id"] for r in o]
    np.testing.assert_allclose([r["keypoints"] for r in o], [r["keypoints"] for r in t], atol=1e-2)


@requires_shared
def test_onnx_of_another_task_is_one_line(tmp_path, capsys):
    from hrnet_cli.main import main
    from hrnet_core.models.onnx_export import export_network
    from hrnet_core.weights import build_network, save_weights

    seg = _recipe("seg_hrnetv2_w48_512x1024_cityscapes", "smoke_segmentation")
    export_network(build_network(seg), seg, tmp_path / "seg.onnx", (64, 64))
    pose = _recipe("pose_hrnet_w32_256x192_coco", "smoke")
    weights = save_weights(tmp_path / "pose.pt", build_network(pose).state_dict(), pose)
    img = str(DATA_DIR / "samples" / "coco" / "000000000785.jpg")
    code = main(["predict", str(weights), img, "--onnx", str(tmp_path / "seg.onnx"), "--out", str(tmp_path / "x"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "segmentation network" in err[0] and not (tmp_path / "x").exists()
