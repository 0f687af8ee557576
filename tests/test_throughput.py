"""Issue 16: the faster paths give the same results as the plain ones.

- ``decode_on_device`` is bit-identical to ``get_max_preds`` + ``refine_quarter_offset`` (ties, border peaks,
  non-positive maps);
- ``flip_test_one_forward`` equals the two-forward ``flip_test``;
- ``fold_batchnorm`` removes every BatchNorm of HRNet / HRFormer pose networks and keeps their outputs;
- ``pose_topdown.predict`` (folded BN, one forward, device decoding) gives the keypoints of an official-style loop
  (two forwards, numpy decoding) within 1e-3 px on real COCO images;
- the HRFormer fast paths (fused q/k/v GEMM, 1x1 convs as GEMMs, channels-last blocks) match a block written in the
  official form, in training mode, forward and gradients; channels-last input gives the NCHW output;
- the benchmarks run (smoke mode, no timing asserted).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrnet_core.codecs.heatmap import (decode_on_device, flip_back, flip_test, flip_test_one_forward, get_max_preds,
                                       heatmaps_to_image_coords, refine_quarter_offset)
from hrnet_core.data.keypoints import COCO_KEYPOINTS
from hrnet_core.models.fold import fold_batchnorm
from hrnet_core.models.hrformer import HRFormerBlock
from hrnet_core.models.zoo import build_model
from tests.official import DATA_DIR, torch_threads

MINI = DATA_DIR / "coco_mini"
MINI_ANN = MINI / "annotations" / "person_keypoints_train2017.json"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads():
        yield


def test_decode_on_device_is_the_numpy_decoder():
    g = torch.Generator().manual_seed(0)
    hm = torch.rand(6, 17, 64, 48, generator=g)
    hm[0, 0] = 0.5  # constant map: first maximum wins
    hm[0, 1] = -1.0  # non-positive map: coordinates 0
    hm[0, 2, 0, 5] = 9.0  # peak on the border: no quarter offset
    hm[0, 3, 10, 47] = 9.0
    hm[0, 4, 30, 20] = 9.0  # interior peak with equal neighbours in x (sign 0)
    hm[0, 4, 30, 19] = hm[0, 4, 30, 21] = 2.0
    hm[1] = hm[1].round(decimals=1)  # many ties
    coords, maxvals = decode_on_device(hm)
    ref_coords, ref_max = get_max_preds(hm.numpy())
    ref_coords = refine_quarter_offset(hm.numpy(), ref_coords)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_array_equal(maxvals.numpy(), ref_max)
    assert coords.dtype == maxvals.dtype == torch.float32
    with pytest.raises(ValueError, match="N, K, h, w"):
        decode_on_device(hm[0])


def test_flip_test_one_forward_equals_two_forwards():
    torch.manual_seed(0)
    model = build_model("pose_hrnet_w32", width=8, stage_modules=(1, 1, 1)).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        two = flip_test(model, x, COCO_KEYPOINTS.flip_pairs)
        one = flip_test_one_forward(model, x, COCO_KEYPOINTS.flip_pairs)
        manual = (model(x) + flip_back(model(x.flip(3)), COCO_KEYPOINTS.flip_pairs)) * 0.5
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two, manual, rtol=0, atol=0)


def _trained_like_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name,overrides", [
    ("pose_hrnet_w32", {"width": 8, "stage_modules": (1, 1, 1)}),
    ("hrformer_t", {"stage_modules": (1, 1, 1)}),
    ("cls_hrformer_t", {"stage_modules": (1, 1, 1), "num_classes": 10}),
])
def test_fold_batchnorm_keeps_outputs(name, overrides):
    torch.manual_seed(0)
    model = build_model(name, **overrides)
    _trained_like_bn(model)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    folded = fold_batchnorm(model)
    assert model.training  # the input model is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    model.eval()
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_micro_batched_equals_one_call():
    from hrnet_core.models.microbatch import MicroBatched

    torch.manual_seed(0)
    model = build_model("pose_hrnet_w32", width=8, stage_modules=(1, 1, 1))
    _trained_like_bn(model)
    model.eval()
    x = torch.randn(11, 3, 64, 48)
    with torch.inference_mode():
        ref = model(x)
        out = MicroBatched(model, size=4)(x)  # 4 + 4 + 3
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    listed = MicroBatched(_TwoOutputs(), size=3)(x)
    assert isinstance(listed, list) and [t.shape[0] for t in listed] == [11, 11]
    torch.testing.assert_close(listed[1], x.mean((1, 2, 3)))
    with pytest.raises(ValueError, match="micro-batch size"):
        MicroBatched(model, size=0)


class _TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, 0], x.mean((1, 2, 3))]


# ---------------------------------------------------------------------------------------------- predictions
def official_style_predictions(model, records, transform) -> np.ndarray:
    """The reference test loop: two forwards under no_grad, numpy flip-back, numpy decoding (independent of predict)."""
    from hrnet_core.data.io import read_image

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(records), 4):
            batch = records[start:start + 4]
            x = torch.from_numpy(np.stack([transform(r, read_image(r["image_file"]))["image"] for r in batch]))
            flipped = flip_back(model(torch.from_numpy(np.flip(x.numpy(), 3).copy())).numpy(),
                                COCO_KEYPOINTS.flip_pairs, shift=True)
            hm = ((model(x) + torch.from_numpy(flipped)) * 0.5).numpy()
            coords = refine_quarter_offset(hm, get_max_preds(hm)[0])
            coords = heatmaps_to_image_coords(coords, np.stack([r["center"] for r in batch]),
                                              np.stack([r["scale"] for r in batch]), (12, 16))
            out.append(np.concatenate([coords, get_max_preds(hm)[1]], axis=2))
    return np.concatenate(out)


@pytest.mark.skipif(not MINI_ANN.is_file(), reason="../shared/data/coco_mini is absent")
def test_predict_matches_official_style_loop():
    from types import SimpleNamespace

    from hrnet_core.data.coco import CocoKeypoints
    from hrnet_core.data.transforms import TopDownTransform
    from hrnet_core.tasks import pose_topdown

    records = CocoKeypoints(MINI_ANN, MINI / "train2017", use_gt_boxes=True, aspect_ratio=0.75).records[:10]
    torch.manual_seed(0)
    model = build_model("pose_hrnet_w32", width=8, stage_modules=(1, 1, 1))
    _trained_like_bn(model)
    model.train()
    recipe = SimpleNamespace(data=SimpleNamespace(input_size=[48, 64], heatmap_size=[12, 16], sigma=2.0,
                                                  dataset="coco"),
                             test=SimpleNamespace(flip=True, shift_heatmap=True, batch_size=5))
    # batch 5 -> 10 crops per flip-tested forward: the CPU micro-batches (8 + 2) are exercised
    from hrnet_core.engine.evaluation import run_batches

    predictor = pose_topdown.predictor(model, recipe, SimpleNamespace(manifest={"num_joints": 17}))
    preds = pose_topdown.concat(run_batches(predictor, records)).values
    assert model.training  # predict works on a folded copy
    transform = TopDownTransform((48, 64), (12, 16), 2.0, COCO_KEYPOINTS.flip_pairs, train=False)
    ref = official_style_predictions(model, records, transform)
    assert preds.shape == ref.shape == (10, 17, 3)
    np.testing.assert_allclose(preds[..., :2], ref[..., :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(preds[..., 2], ref[..., 2], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- HRFormer fast paths
def official_form_block(block: HRFormerBlock, x: torch.Tensor) -> torch.Tensor:
    """The HRFormer block as the official code writes it: NCHW, separate q/k/v projections, explicit scaling,
    F.pad + window permutes, 1x1 convs through nn.Conv2d. x ``[N, C, H, W]``."""
    attn = block.attn.attn
    ws, heads = block.attn.window_size, attn.num_heads
    n, c, h, w = x.shape
    t = x.permute(0, 2, 3, 1)
    y = block.norm1(t)
    ph, pw = -h % ws, -w % ws
    y = F.pad(y, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    hp, wp = h + ph, w + pw
    win = y.view(n, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    d = c // heads

    def split(z):
        return z.view(z.shape[0], ws * ws, heads, d).transpose(1, 2)

    q, k, v = split(attn.q_proj(win)), split(attn.k_proj(win)), split(attn.v_proj(win))
    o = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
    o = attn.out_proj(o.transpose(1, 2).reshape(-1, ws * ws, c))
    o = o.view(n, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
    t = t + o[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
    mlp = block.mlp
    z = block.norm2(t).permute(0, 3, 1, 2).contiguous()
    z = mlp.act1(mlp.norm1(mlp.fc1(z)))
    z = mlp.act2(mlp.norm2(mlp.dw3x3(z)))
    z = mlp.act3(mlp.norm3(mlp.fc2(z)))
    return (t + z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("size", [(16, 12), (14, 7)])  # padded to the 7x7 window / already a multiple
def test_hrformer_block_matches_official_form_in_training(size):
    torch.manual_seed(0)
    block = HRFormerBlock(dim=16, num_heads=2, window_size=7, rel_pos_bias=False).train()
    x = torch.randn(2, 16, *size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = block(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *block.parameters()], allow_unused=True)
    ref = official_form_block(block, x_ref)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x_ref, *block.parameters()], allow_unused=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # absolute tolerance on the scale of all gradients: conv biases before a training-mode BatchNorm have a gradient
    # that is zero up to rounding
    scale = max(r.abs().max().item() for r in ref_grads if r is not None)
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None
        else:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * scale)


def test_hrformer_channels_last_input_gives_the_same_output():
    torch.manual_seed(0)
    model = build_model("hrformer_t", stage_modules=(1, 1, 1)).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- benchmarks run
@pytest.mark.parametrize("script,args,expected", [
    ("bench_hrformer", ["--smoke", "--pairs", "T/W18"], "T/W18  cpu time per MAC, HRFormer eager"),
    pytest.param("bench_hrformer", ["--device", "cuda"], "no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: not a smoke")),
    pytest.param("bench_eval", ["--smoke", "--workers", "0", "--ablation"], "+ BN folded",
                 marks=pytest.mark.skipif(not MINI_ANN.is_file(), reason="../shared/data/coco_mini is absent")),
])
def test_benchmark_smoke(script, args, expected, monkeypatch, capsys):
    import importlib

    module = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(sys, "argv", [script, *args])
    module.main()
    assert expected in capsys.readouterr().out


@pytest.mark.ray
def test_bench_ingest_smoke_on_another_task(ray_session, monkeypatch, capsys):
    """bench_ingest runs on any task of params.yaml (here segmentation: its data, recipe and collate)."""
    from benchmarks import bench_ingest

    monkeypatch.setattr(sys, "argv", ["bench_ingest", "--smoke", "--task", "segmentation"])
    bench_ingest.main()
    out = capsys.readouterr().out
    assert "segmentation training ingest" in out and "DataLoader(num_workers=2)" in out
    assert "ratio Ray / DataLoader" in out
