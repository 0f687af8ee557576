"""HRFormer (hrnet_core/models/hrformer.py): official layouts, deterministic forward, complexity, switches."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrnet_core.models.hrformer import (
    HRFORMER_MODELS,
    DropPath,
    HRFormerBlock,
    LocalWindowSelfAttention,
    WindowMultiheadAttention,
)
from tests.official import deterministic_fill, deterministic_input, load_reference, requires_shared, torch_threads

CLS_REFERENCES = {
    "cls_hrformer_t": "hrformer_cls_tiny",
    "cls_hrformer_s": "hrformer_cls_small",
    "cls_hrformer_b": "hrformer_cls_base",
}
# Paper Table 3 (#param. of the pose networks).
PAPER_POSE_PARAMS = {"hrformer_t": 2.5e6, "hrformer_s": 7.8e6, "hrformer_b": 43.2e6}


def build(name: str, **overrides) -> torch.nn.Module:
    return HRFORMER_MODELS[name](**overrides)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: torch.nn.Module, shape: list[int]) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(shape))
    return counter.get_total_flops() // 2


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread (see tests.official.torch_threads: 2 threads on the shared 2-core machine spin-wait)."""
    with torch_threads():
        yield


@pytest.fixture(scope="module", autouse=True)
def _free_official():
    yield
    _OFFICIAL.clear()


class OfficialRun(NamedTuple):
    """One official classification model, built once per module and used by every test of its reference."""

    model: torch.nn.Module  # deterministically filled, eval mode (tests must not modify it)
    layout: list  # [(key, shape)] of the freshly built model's state dict
    params: int
    load_error: Exception | None  # strict load of the reference layout into the fresh model
    output: torch.Tensor  # forward of deterministic_input(det_input_shape)
    det_macs: int  # FlopCounterMode MACs of that forward


_OFFICIAL: dict[str, OfficialRun] = {}


def official_run(name: str) -> OfficialRun:
    """Build ``name`` once, strict-load the reference layout, fill it, and run the reference forward once (counted)."""
    if name not in _OFFICIAL:
        ref = load_reference(CLS_REFERENCES[name])
        model = build(name)
        layout = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        # the official layout loads strictly; into a meta-device twin (keys and shapes, no memory), because loading
        # into `model` would overwrite its integer buffers (relative_position_index)
        with torch.device("meta"):
            twin = build(name)
        official = {k: torch.empty(s, device="meta") for k, s in ref["state_dict"]}
        try:
            result = twin.load_state_dict(official, strict=True)
            load_error = None if not (result.missing_keys or result.unexpected_keys) else AssertionError(result)
        except RuntimeError as err:
            load_error = err
        del twin, official
        deterministic_fill(model)
        model.eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            output = model(deterministic_input(ref["det_input_shape"]))
        _OFFICIAL[name] = OfficialRun(model, layout, n_params(model), load_error, output,
                                      counter.get_total_flops() // 2)
    return _OFFICIAL[name]


def test_registry_names():
    assert sorted(HRFORMER_MODELS) == sorted(
        ["hrformer_t", "hrformer_s", "hrformer_b", "cls_hrformer_t", "cls_hrformer_s", "cls_hrformer_b"])


# ---------------------------------------------------------------------------------------------------------------------
# Official classification models
# ---------------------------------------------------------------------------------------------------------------------
@requires_shared
@pytest.mark.parametrize("name", sorted(CLS_REFERENCES))
def test_cls_official_layout_params_and_strict_load(name):
    ref = load_reference(CLS_REFERENCES[name])
    run = official_run(name)
    theirs = [(k, list(s)) for k, s in ref["state_dict"]]
    assert run.layout == theirs  # same keys, shapes and order
    assert run.params == ref["params"]
    assert run.load_error is None, run.load_error  # load_state_dict(official, strict=True)


@requires_shared
@pytest.mark.parametrize("name", sorted(CLS_REFERENCES))
def test_cls_official_macs(name):
    ref = load_reference(CLS_REFERENCES[name])
    run = official_run(name)
    if ref["input_shape"] == ref["det_input_shape"]:  # the reference forward was counted (counts ignore values)
        macs = run.det_macs
    else:
        macs = count_macs(run.model, ref["input_shape"])
    gmacs = macs / 1e9
    assert gmacs == pytest.approx(ref["gmacs"], rel=0.01)


def assert_matches_det_output(y: torch.Tensor, expected: dict) -> None:
    assert list(y.shape) == expected["shape"]
    flat = y.detach().double().flatten()
    assert flat.sum().item() == pytest.approx(expected["sum"], rel=1e-4)
    assert flat.abs().sum().item() == pytest.approx(expected["abs_sum"], rel=1e-4)
    scale = expected["abs_sum"] / flat.numel()  # guards samples that happen to be near zero
    for index, value in zip(expected["sample_index"], expected["samples"]):
        assert flat[index].item() == pytest.approx(value, rel=1e-4, abs=1e-4 * scale)


@requires_shared
@pytest.mark.parametrize("name", sorted(CLS_REFERENCES))
def test_cls_deterministic_forward_matches_official(name):
    ref = load_reference(CLS_REFERENCES[name])
    run = official_run(name)
    (expected,) = ref["det_output"]
    assert_matches_det_output(run.output, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Pose models
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAPER_POSE_PARAMS))
def test_pose_params_match_paper_table3(name):
    params = n_params(build(name))
    assert params == pytest.approx(PAPER_POSE_PARAMS[name], rel=0.02)


@pytest.mark.parametrize("size", [(256, 192), (250, 190)])
def test_pose_output_shape_with_window_padding(size):
    # 256x192 -> branch maps 64x48, 32x24, 16x12, 8x6: none of the widths is a multiple of the 7x7 window.
    # 250x190 -> 63x48 etc.: odd sizes also exercise the fuse resize fallback.
    h, w = size
    model = build("hrformer_t").eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, h, w))
    assert y.shape == (2, 17, math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
    assert torch.isfinite(y).all()


def test_pose_num_joints_override():
    model = build("hrformer_t", num_joints=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 16, 16, 16)
    assert model.final_layer.weight.shape == (16, 18, 1, 1)


def test_pose_keys_follow_official_pose_checkpoint_layout():
    pose = build("hrformer_s")
    cls = build("cls_hrformer_s")
    pose_keys = set(pose.state_dict())
    assert not any(k.startswith(("backbone.", "keypoint_head.")) for k in pose_keys)
    head = {"final_layer.weight", "final_layer.bias"}
    assert head <= pose_keys
    assert pose.state_dict()["final_layer.weight"].shape == (17, 32, 1, 1)
    # Backbone keys are the cls backbone keys, minus the multi-scale fusions of the last stage-4 module.
    cls_head_prefixes = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
    last = len(cls.stage4) - 1
    dropped = tuple(f"stage4.{last}.fuse_layers.{i}." for i in (1, 2, 3))
    expected = {k for k in cls.state_dict() if not k.startswith(cls_head_prefixes + dropped)}
    assert pose_keys - head == expected
    # An official pose checkpoint (mmpose TopDown: backbone.* + keypoint_head.final_layer.*) loads strictly once the
    # prefixes are stripped.
    official = {("keypoint_head." if k in head else "backbone.") + k: v.clone() for k, v in pose.state_dict().items()}
    stripped = {k.split(".", 1)[1]: v for k, v in official.items()}
    pose.load_state_dict(stripped, strict=True)


def test_pose_ignores_relative_position_bias_by_default():
    model = build("hrformer_t").eval()
    assert all(not m.use_rel_pos_bias for m in model.modules() if isinstance(m, WindowMultiheadAttention))
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        before = model(x)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.add_(5.0 * torch.randn_like(p))
        after = model(x)
    torch.testing.assert_close(before, after)


# ---------------------------------------------------------------------------------------------------------------------
# Switches and overrides
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hrformer_t", "cls_hrformer_t"])
def test_ffn_without_depthwise_conv_removes_its_parameters(name):
    full = build(name)
    ablated = build(name, ffn_dw_conv=False)
    full_sd, ablated_sd = full.state_dict(), ablated.state_dict()
    removed = set(full_sd) - set(ablated_sd)
    assert removed and all(".mlp.dw3x3." in k or ".mlp.norm2." in k for k in removed)
    assert set(ablated_sd) < set(full_sd)
    assert not any(".mlp.dw3x3." in k for k in ablated_sd)
    removed_params = sum(p.numel() for k, p in full.named_parameters() if k in removed)
    assert n_params(full) - n_params(ablated) == removed_params > 0
    with torch.no_grad():
        assert ablated.eval()(torch.randn(1, 3, 64, 64)).shape == full.eval()(torch.randn(1, 3, 64, 64)).shape


def test_ffn_ablation_param_delta_matches_paper_table7():
    # Table 7 (HRFormer-T, ImageNet): 8.0M with the depthwise conv, 7.9M without.
    assert n_params(build("cls_hrformer_t", ffn_dw_conv=False)) / 1e6 == pytest.approx(7.9, abs=0.05)


def test_rel_pos_bias_switch_keeps_table_and_changes_output():
    on = build("cls_hrformer_t").eval()
    off = build("cls_hrformer_t", rel_pos_bias=False).eval()
    assert [(k, v.shape) for k, v in on.state_dict().items()] == [(k, v.shape) for k, v in off.state_dict().items()]
    assert any(k.endswith("relative_position_bias_table") for k in off.state_dict())
    deterministic_fill(on)
    off.load_state_dict(on.state_dict(), strict=True)
    x = deterministic_input([1, 3, 112, 112])
    with torch.no_grad():
        y_on, y_off = on(x), off(x)
    assert not torch.allclose(y_on, y_off, rtol=1e-3, atol=1e-3)


def test_overrides_window_heads_mlp_ratio_drop_path():
    model = build("hrformer_t", window_size=8, num_heads=(2, 4, 8, 8), mlp_ratio=2, drop_path_rate=0.3)
    sd = model.state_dict()
    assert sd["stage2.0.branches.0.0.attn.attn.relative_position_bias_table"].shape == (15 * 15, 2)
    assert sd["stage4.0.branches.3.1.attn.attn.relative_position_bias_table"].shape == (15 * 15, 8)
    assert sd["stage2.0.branches.0.0.attn.attn.relative_position_index"].shape == (64, 64)
    assert sd["stage2.0.branches.0.0.mlp.fc1.weight"].shape == (36, 18, 1, 1)
    rates = [m.drop_path.drop_prob for m in model.modules() if isinstance(m, HRFormerBlock)]
    # Official schedule: linspace(0, rate, blocks x modules of stages 2-4), shared by the branches of a module.
    expected = torch.linspace(0, 0.3, 2 * (1 + 3 + 2)).tolist()
    assert sorted(set(rates)) == pytest.approx(expected)
    assert model.stage4[1].branches[2][1].drop_path.drop_prob == pytest.approx(0.3)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 48)).shape == (1, 17, 16, 12)


def test_default_drop_path_rates():
    def last_rate(name):
        return [m.drop_path.drop_prob for m in build(name).modules() if isinstance(m, HRFormerBlock)][-1]

    assert last_rate("hrformer_t") == 0.0
    assert last_rate("hrformer_s") == pytest.approx(0.1)
    assert last_rate("cls_hrformer_t") == 0.0


def test_bad_overrides_fail_early():
    with pytest.raises(TypeError, match="windw_size"):
        build("hrformer_t", windw_size=7)
    with pytest.raises(TypeError, match="num_classes"):
        build("hrformer_t", num_classes=10)
    with pytest.raises(ValueError, match="num_heads"):
        build("hrformer_t", num_heads=(5, 2, 4, 8))
    with pytest.raises(ValueError, match="window_size"):
        build("cls_hrformer_t", window_size=(7, 7))


def test_cls_num_classes_override():
    model = build("cls_hrformer_t", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------------------------------
# Attention details
# ---------------------------------------------------------------------------------------------------------------------
def naive_local_attention(module: LocalWindowSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Per-window, per-head loop over a zero-padded (centred) map; independent of the module's reshapes."""
    attn = module.attn
    ws, heads = module.window_size, attn.num_heads
    n, h, w, c = x.shape
    ph, pw = -h % ws, -w % ws
    top, left = ph // 2, pw // 2
    padded = torch.zeros(n, h + ph, w + pw, c)
    padded[:, top:top + h, left:left + w] = x
    out = torch.zeros_like(padded)
    d = c // heads
    for b in range(n):
        for wy in range(0, h + ph, ws):
            for wx in range(0, w + pw, ws):
                tokens = padded[b, wy:wy + ws, wx:wx + ws].reshape(ws * ws, c)
                q, k, v = attn.q_proj(tokens), attn.k_proj(tokens), attn.v_proj(tokens)
                heads_out = []
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    logits = q[:, sl] @ k[:, sl].T / math.sqrt(d)
                    if attn.use_rel_pos_bias:
                        for i in range(ws * ws):
                            for j in range(ws * ws):
                                dy = i // ws - j // ws
                                dx = i % ws - j % ws
                                row = (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
                                logits[i, j] += attn.relative_position_bias_table[row, hd]
                    heads_out.append(logits.softmax(-1) @ v[:, sl])
                y = attn.out_proj(torch.cat(heads_out, dim=1))
                out[b, wy:wy + ws, wx:wx + ws] = y.reshape(ws, ws, c)
    return out[:, top:top + h, left:left + w]


@pytest.mark.parametrize("rel_pos_bias", [True, False])
@pytest.mark.parametrize("size", [(7, 14), (10, 9)])
def test_local_window_attention_matches_naive_reference(rel_pos_bias, size):
    torch.manual_seed(0)
    module = LocalWindowSelfAttention(dim=8, num_heads=2, window_size=7, rel_pos_bias=rel_pos_bias).eval()
    with torch.no_grad():
        module.attn.relative_position_bias_table.normal_(std=1.0)
        x = torch.randn(2, *size, 8)
        torch.testing.assert_close(module(x), naive_local_attention(module, x), rtol=1e-5, atol=1e-5)


def test_fused_attention_matches_explicit():
    explicit = build("cls_hrformer_t").eval()
    fused = build("cls_hrformer_t", fused_attention=True).eval()
    deterministic_fill(explicit)
    fused.load_state_dict(explicit.state_dict(), strict=True)
    x = deterministic_input([1, 3, 112, 112])
    with torch.no_grad():
        torch.testing.assert_close(fused(x), explicit(x), rtol=1e-4, atol=1e-4)


def test_training_step_gradients():
    cls = build("cls_hrformer_t", drop_path_rate=0.2).train()
    cls(torch.randn(2, 3, 64, 64)).logsumexp(dim=1).mean().backward()
    table = cls.stage2[0].branches[0][0].attn.attn.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in cls.named_parameters())

    pose = build("hrformer_t").train()
    pose(torch.randn(2, 3, 64, 48)).square().mean().backward()
    assert pose.final_layer.weight.grad is not None
    assert pose.stage2[0].branches[0][0].attn.attn.relative_position_bias_table.grad is None  # unused in pose


def test_drop_path_train_vs_eval():
    layer = DropPath(0.5)
    x = torch.ones(1000, 4)
    layer.train()
    y = layer(x)
    kept = (y[:, 0] != 0).float().mean().item()
    assert 0.4 < kept < 0.6
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0))
    layer.eval()
    assert torch.equal(layer(x), x)
