"""HRNet model zoo (hrnet_core/models, issue 2): official layouts, deterministic forwards, complexity, checkpoint
import, ablation switches, HRFPN in torchvision detectors.

The reference files in ``../shared/reference/official_models`` (all but ``hrformer_cls_*``, tested in
``test_hrformer.py``) were produced by the official code; every model here must reproduce their state-dict layout,
parameter count, MACs and deterministic forward outputs.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrnet_core.models import (
    CheckpointMismatchError,
    build_model,
    complexity_table,
    count_macs,
    list_models,
    load_checkpoint,
    load_pretrained_backbone,
    model_complexity,
)
from hrnet_core.models.hrnet import HRModule
from tests.official import (
    det_uniform,
    deterministic_fill,
    deterministic_input,
    load_reference,
    reference_names,
    requires_shared,
    torch_threads,
)

HRNET_REFERENCES = [n for n in reference_names() if not n.startswith("hrformer_")]

EXPECTED_NAMES = [
    "pose_hrnet_w32", "pose_hrnet_w48", "higher_hrnet_w32", "higher_hrnet_w48",
    "seg_hrnetv2_w18", "seg_hrnetv2_w40", "seg_hrnetv2_w48", "seg_hrnetv2_w18_small_v1", "seg_hrnetv2_w18_small_v2",
    "seg_hrnetv2_ocr_w48", "face_hrnetv2_w18",
    "cls_hrnet_w18_small_v1", "cls_hrnet_w18_small_v2", "cls_hrnet_w18", "cls_hrnet_w30", "cls_hrnet_w32",
    "cls_hrnet_w40", "cls_hrnet_w44", "cls_hrnet_w48", "cls_hrnet_w64",
    "det_hrnetv2p_w18", "det_hrnetv2p_w32", "det_hrnetv2p_w40", "det_hrnetv2p_w48",
]

# tiny backbone for fast functional tests (same structure, small widths / depths)
TINY = {"width": 8, "stage_blocks": (1, 1, 1), "stage_modules": (1, 2, 2)}


def zoo_entry(reference: str) -> tuple[str, dict]:
    """Zoo name and overrides that reproduce the official model of a reference file (reference/README.md table)."""
    if reference.startswith("pose_"):
        width = reference.split("_hrnet_w")[1][:2]
        return f"pose_hrnet_w{width}", ({"num_joints": 16} if "_mpii_" in reference else {})
    if reference.startswith("higher_"):
        return f"higher_hrnet_w{reference.split('_w')[1][:2]}", {}
    if reference.startswith("seg_"):
        classes = {"cityscapes": 19, "pascal_ctx": 59, "lip": 20}
        num_classes = next(v for k, v in classes.items() if f"_{k}_" in reference)
        return ("seg_hrnetv2_ocr_w48" if "_ocr_" in reference else "seg_hrnetv2_w48"), {"num_classes": num_classes}
    if reference.startswith("face_"):
        landmarks = {"wflw": 98, "aflw": 19, "cofw": 29, "300w": 68}
        return "face_hrnetv2_w18", {"num_landmarks": landmarks[reference.split("_")[1]]}
    if reference.startswith("cls_"):
        return reference, {}
    raise KeyError(reference)


def build_meta(name: str, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(name, **overrides)


def _entry_key(name: str, overrides: dict) -> tuple:
    return name, tuple(sorted(overrides.items()))


# Each full-size official model is built ONCE per module on the meta device (no memory, no initialisation):
# test_official_layout_params_and_macs checks layout / strict load / params / MACs on it, and
# test_official_deterministic_forward then materialises that same object (to_empty) and fills it.
_META: dict = {}
_FILLED: dict = {}


def official_model(name: str, overrides: dict) -> torch.nn.Module:
    """The meta-device model of a zoo entry, built once and shared by the tests of every reference that uses it."""
    key = _entry_key(name, overrides)
    if key not in _META:
        _META[key] = build_meta(name, **overrides)
    return _META[key]


def filled_model(name: str, overrides: dict) -> torch.nn.Module:
    """The model filled by the deterministic scheme, in eval mode; cached for one entry at a time (memory).

    Entries that the previously filled model has with the same key and shape (e.g. the backbone of the five W48
    segmentation models, which differ in their heads) are copied from it instead of being hashed again: a filled value
    depends only on the entry's key and shape (``tests.official.deterministic_fill``).
    """
    key = _entry_key(name, overrides)
    if key not in _FILLED:
        previous = next(iter(_FILLED.values()), None)
        reuse = previous.state_dict() if previous is not None else None
        _FILLED.clear()
        model = _META.pop(key, None)
        if model is None:
            model = build_meta(name, **overrides)
        model = model.to_empty(device="cpu")  # skip the (costly) random initialisation
        with torch.no_grad():
            for t in model.state_dict().values():
                if not t.is_floating_point():
                    t.zero_()
        deterministic_fill(model, reuse=reuse)
        del previous, reuse
        _FILLED[key] = model.eval()
    return _FILLED[key]


@pytest.fixture(scope="module", autouse=True)
def _free_cache():
    yield
    _FILLED.clear()
    _META.clear()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread (tests.official.torch_threads): 2 OpenMP threads on the shared 2-core CI machine spin
    against the other processes and made the full-size forwards 10-20x slower."""
    with torch_threads():
        yield


# --------------------------------------------------------------------------------------------------------------------
# zoo


def test_list_models_has_every_hrnet_entry():
    names = list_models()
    assert names == sorted(names)
    missing = [n for n in EXPECTED_NAMES if n not in names]
    assert not missing, missing


def test_unknown_name_and_override_fail_with_their_name():
    with pytest.raises(KeyError, match="pose_hrnet_w31"):
        build_model("pose_hrnet_w31")
    with pytest.raises(ValueError, match="num_jionts"):
        build_model("pose_hrnet_w32", num_jionts=16)
    with pytest.raises(ValueError, match="fusion"):
        build_meta("pose_hrnet_w32", fusion="sometimes")
    with pytest.raises(ValueError, match="head"):
        build_meta("pose_hrnet_w32", head="v3")


# --------------------------------------------------------------------------------------------------------------------
# acceptance 1: official layouts, parameter counts, MACs


@requires_shared
@pytest.mark.parametrize("reference", HRNET_REFERENCES)
def test_official_layout_params_and_macs(reference):
    ref = load_reference(reference)
    name, overrides = zoo_entry(reference)
    model = official_model(name, overrides)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(k, list(s)) for k, s in ref["state_dict"]]
    assert dict(ours) == dict(theirs), (sorted(set(dict(ours)) ^ set(dict(theirs)))[:10])
    assert [k for k, _ in ours] == [k for k, _ in theirs], "same keys but a different registration order"
    # the official layout loads strictly (meta tensors: checks keys and shapes without materialising weights)
    official = OrderedDict(
        (k, torch.empty(s, device="meta", dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32))
        for k, s in theirs)
    load_checkpoint(model, official)
    cost = model_complexity(model, ref["input_shape"])
    assert cost["params"] == ref["params"]
    assert cost["gmacs"] == pytest.approx(ref["gmacs"], rel=0.01)
    assert round(cost["gmacs"], 3) == pytest.approx(ref["gmacs"], abs=1.5e-3)  # in fact identical to the reference


def test_meta_mac_count_equals_cpu_count():
    model = build_model("pose_hrnet_w32", **TINY).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 128, 96))
    assert count_macs(model, (1, 3, 128, 96)) == counter.get_total_flops() // 2 > 0
    assert model.training is False


def test_complexity_table_rows():
    rows = complexity_table(["pose_hrnet_w32", "seg_hrnetv2_w48", "det_hrnetv2p_w32"])
    assert [r["name"] for r in rows] == ["pose_hrnet_w32", "seg_hrnetv2_w48", "det_hrnetv2p_w32"]
    pose, seg, det = rows
    assert pose["input_shape"] == [1, 3, 256, 192] and seg["input_shape"] == [1, 3, 1024, 2048]
    # DHRN README: W32 256x192 = 28.5M params, 7.1 "GFLOPs" (MACs / 1024**3); SEG README: W48 65.9M, 696.2
    assert pose["params"] == 28536113 and round(pose["gmacs_gib"], 1) == 7.1
    assert round(seg["params_m"], 1) == 65.9 and round(seg["gmacs_gib"], 1) == 696.2
    assert det["params"] > 0 and det["gmacs"] > 0
    override = complexity_table(["pose_hrnet_w32"], input_shape=(1, 3, 384, 288))[0]
    assert override["gmacs"] == pytest.approx(17.201, abs=1e-3)


# --------------------------------------------------------------------------------------------------------------------
# acceptance 2: deterministic forward outputs


def test_det_uniform_is_the_reference_formula():
    """tests.official.det_uniform (chunked uint32) is bit-identical to the README's int64 formula."""
    def readme(i: np.ndarray, seed: int) -> np.ndarray:  # ../shared/reference/README.md, literally, in int64
        m = 2**32
        h = (i * 2654435761 + seed * 40503 + 12345) % m
        for _ in range(2):
            h = ((h ^ (h >> 16)) * 73244475) % m
        h = h ^ (h >> 16)
        return h / m * 2 - 1

    for n, seed in ((1, 0), (7, 3), (65535, 1), (65536, 2**32 - 1), (200_003, 0x9E3779B9)):
        out = det_uniform(n, seed)
        assert out.dtype == np.float64 and out.shape == (n,)
        np.testing.assert_array_equal(out, readme(np.arange(n, dtype=np.int64), seed))
    big = det_uniform(5_000_000, 12345)  # indices whose products overflow 32 bits many times over
    idx = np.array([0, 65535, 65536, 65537, 1_234_567, 4_999_999], dtype=np.int64)
    np.testing.assert_array_equal(big[idx], readme(idx, 12345))


def _assert_matches(out: torch.Tensor, ref: dict, label: str) -> None:
    assert list(out.shape) == ref["shape"], label
    out64 = out.detach().double()
    abs_sum = ref["abs_sum"]
    assert abs(out64.abs().sum().item() - abs_sum) <= 1e-4 * abs_sum, label
    assert abs(out64.sum().item() - ref["sum"]) <= 1e-4 * abs_sum, label
    samples = out64.flatten()[ref["sample_index"]].numpy()
    expected = np.asarray(ref["samples"])
    mean_abs = abs_sum / out.numel()
    np.testing.assert_allclose(samples, expected, rtol=1e-4, atol=1e-4 * mean_abs, err_msg=label)


# references of the same zoo entry run one after the other, so that filled_model fills each entry once and copies
# the shared backbone of the next one
FORWARD_ORDER = sorted(HRNET_REFERENCES, key=lambda r: (zoo_entry(r)[0], r))


@requires_shared
@pytest.mark.parametrize("reference", FORWARD_ORDER)
def test_official_deterministic_forward(reference):
    ref = load_reference(reference)
    name, overrides = zoo_entry(reference)
    model = filled_model(name, overrides)
    with torch.inference_mode():
        out = model(deterministic_input(ref["det_input_shape"]))
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    assert len(outs) == len(ref["det_output"])
    for i, (o, r) in enumerate(zip(outs, ref["det_output"])):
        _assert_matches(o, r, f"{reference} output {i}")


# --------------------------------------------------------------------------------------------------------------------
# checkpoint import


@pytest.fixture(scope="module")
def tiny_pose():
    torch.manual_seed(0)
    return build_model("pose_hrnet_w32", **TINY)


def _fresh() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("pose_hrnet_w32", **TINY)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _backbone_key(k: str) -> bool:
    return not k.startswith("final_layer")


class _NotATensor:  # pickled into a checkpoint to test the weights_only refusal
    pass


@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "dataparallel", "seg_fullmodel", "mmpose", "model"])
def test_load_checkpoint_wrapper_formats(tiny_pose, wrapper, tmp_path):
    sd = tiny_pose.state_dict()
    if wrapper == "plain":  # DHRN / HH / FACE / CLS / TIMM
        ckpt = dict(sd)
    elif wrapper == "state_dict":  # {'state_dict': ...} containers
        ckpt = {"epoch": 3, "state_dict": dict(sd)}
    elif wrapper == "dataparallel":  # DHRN checkpoint.pth: container + module. prefix
        ckpt = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "perf": torch.tensor(0.7)}
    elif wrapper == "seg_fullmodel":  # SEG: model. prefix + the loss' class weights
        ckpt = {f"model.{k}": v for k, v in sd.items()}
        ckpt["loss.criterion.weight"] = torch.ones(19)
    elif wrapper == "mmpose":  # mmpose / HRFormer pose: backbone. / keypoint_head. prefixes in a state_dict container
        ckpt = {"meta": {"epoch": 210},
                "state_dict": {(f"backbone.{k}" if _backbone_key(k) else f"keypoint_head.{k}"): v
                               for k, v in sd.items()}}
    else:  # HRFormer classification / Swin style {'model': ...}
        ckpt = {"model": dict(sd)}
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    target = _fresh()
    load_checkpoint(target, path)
    _assert_same_weights(target, tiny_pose)
    target = _fresh()
    load_checkpoint(target, ckpt)  # already loaded objects work too
    _assert_same_weights(target, tiny_pose)


def test_load_checkpoint_mismatch_is_loud(tiny_pose):
    sd = OrderedDict(tiny_pose.state_dict())
    sd.pop("stage3.0.branches.1.0.conv1.weight")
    sd["final_layer.weight"] = torch.zeros(16, 8, 1, 1)
    sd["model.extra_head.weight"] = torch.zeros(3)  # a wrapper prefix is stripped only when the result matches
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_fresh(), sd)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.missing == ["stage3.0.branches.1.0.conv1.weight"]
    assert err.unexpected == ["model.extra_head.weight"]
    assert err.mismatched == [("final_layer.weight", (16, 8, 1, 1), (17, 8, 1, 1))]
    text = str(err)
    for part in ("stage3.0.branches.1.0.conv1.weight", "model.extra_head.weight", "final_layer.weight", "1 missing"):
        assert part in text


def test_load_checkpoint_bad_files(tiny_pose, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tiny_pose, tmp_path / "nope.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": tiny_pose.state_dict(), "cfg": _NotATensor()}, unsafe)
    with pytest.raises(ValueError, match="unsafe.pth"):
        load_checkpoint(tiny_pose, unsafe)
    with pytest.raises(ValueError, match="no state dict"):
        load_checkpoint(tiny_pose, {"epoch": 1, "lr": 0.1})


def test_load_checkpoint_without_bn_counters(tiny_pose):
    """Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked; PyTorch fills them (not an error)."""
    sd = {k: v for k, v in tiny_pose.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = _fresh()
    load_checkpoint(target, sd)
    assert torch.equal(target.state_dict()["conv1.weight"], tiny_pose.state_dict()["conv1.weight"])


def test_load_pretrained_backbone_from_classification_checkpoint():
    """ImageNet (CLS) weights initialise the backbone of a single-scale pose model; unused entries are reported."""
    torch.manual_seed(0)
    cls = build_model("cls_hrnet_w18", **TINY)
    pose = build_model("pose_hrnet_w32", **TINY)
    head_before = pose.final_layer.weight.detach().clone()
    unused = load_pretrained_backbone(pose, {"state_dict": {f"module.{k}": v for k, v in cls.state_dict().items()}})
    assert torch.equal(pose.conv1.weight, cls.conv1.weight)
    assert torch.equal(pose.stage4[1].fuse_layers[0][3][0].weight, cls.stage4[1].fuse_layers[0][3][0].weight)
    assert torch.equal(pose.final_layer.weight, head_before)
    assert any(k.startswith("module.classifier") for k in unused)
    assert any(".stage4.1.fuse_layers.1." in f".{k}" for k in unused)  # pose's last module is single-scale
    det = build_model("det_hrnetv2p_w18", **TINY)
    load_pretrained_backbone(det, cls.state_dict())
    assert torch.equal(det.backbone.layer1[0].conv1.weight, cls.layer1[0].conv1.weight)
    wrong_width = build_model("cls_hrnet_w18", **{**TINY, "width": 16})
    with pytest.raises(CheckpointMismatchError, match="transition1"):
        load_pretrained_backbone(pose, wrong_width.state_dict())


# --------------------------------------------------------------------------------------------------------------------
# ablation switches


def _fusing_modules(model) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, HRModule) and m.fuses]


@pytest.mark.parametrize("fusion,count,where", [
    ("all", 8, None),
    ("across_stage", 3, ["stage2.0", "stage3.3", "stage4.2"]),
    ("final", 1, ["stage4.2"]),
])
def test_fusion_schemes_of_pose_paper_table6(fusion, count, where):
    """Pose paper Sec. 4.4 / Table 6: (a) final exchange only = 1 fusion, (b) across-stage exchange units only = 3,
    (c) across- and within-stage exchange units = 8 (1 + 4 + 3 modules)."""
    model = build_meta("pose_hrnet_w32", fusion=fusion)
    assert model.num_fusions == count
    assert len(_fusing_modules(model)) == count
    if where is not None:
        assert _fusing_modules(model) == where
    fuse_modules = {k.split(".fuse_layers")[0] for k in model.state_dict() if ".fuse_layers." in k}
    assert len(fuse_modules) == count
    assert model.final_layer.weight.shape == (17, 32, 1, 1)


def test_fusion_scheme_changes_the_forward():
    x = torch.randn(1, 3, 64, 48)
    outs = {}
    for fusion in ("all", "across_stage", "final"):
        torch.manual_seed(0)
        model = build_model("pose_hrnet_w32", fusion=fusion, **TINY).eval()
        with torch.no_grad():
            outs[fusion] = model(x)
        assert outs[fusion].shape == (1, 17, 16, 12)
    scale = outs["all"].abs().max()
    assert (outs["all"] - outs["final"]).abs().max() > 1e-3 * scale
    assert (outs["all"] - outs["across_stage"]).abs().max() > 1e-3 * scale


def test_upsample_modes_share_the_layout_but_differ():
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    nearest = build_model("face_hrnetv2_w18", upsample="nearest", **TINY).eval()
    bilinear = build_model("face_hrnetv2_w18", **TINY).eval()
    bilinear.load_state_dict(nearest.state_dict())
    with torch.no_grad():
        a, b = nearest(x), bilinear(x)
    assert a.shape == b.shape == (1, 98, 16, 16)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_odd_input_sizes_run():
    """Nearest upsampling is computed to the target size, so inputs that are not multiples of 32 work."""
    model = build_model("pose_hrnet_w32", **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 70)).shape == (1, 17, 25, 18)


def test_pose_head_variants():
    x = torch.randn(2, 3, 64, 48)
    v1 = build_model("pose_hrnet_w32", **TINY)
    v1h = build_model("pose_hrnet_w32", head="v1h", **TINY)
    v2 = build_model("pose_hrnet_w32", head="v2", num_joints=16, **TINY)
    c = TINY["width"]
    assert v1h.head_conv[0].weight.shape == (15 * c, c, 1, 1) and v1h.final_layer.weight.shape == (17, 15 * c, 1, 1)
    assert v2.head_conv[0].weight.shape == (15 * c, 15 * c, 1, 1)
    assert "stage4.1.fuse_layers.3.0.0.0.weight" in v2.state_dict()  # V2 needs the multi-scale last module
    assert "stage4.1.fuse_layers.3.0.0.0.weight" not in v1.state_dict()
    for model, k in ((v1, 17), (v1h, 17), (v2, 16)):
        assert model.eval()(x).shape == (2, k, 16, 12)


def test_higher_hrnet_official_and_ablation_heads():
    official = build_meta("higher_hrnet_w32")
    assert official.deconv_layers[0][0][0].weight.shape == (32 + 34, 32, 4, 4)  # concat(features, 1/4 output)
    assert len(official.deconv_layers[0]) == 1 + 4

    x = torch.randn(1, 3, 64, 64)
    baseline = build_model("higher_hrnet_w32", num_deconvs=0, **TINY).eval()  # Table 3 / 4 (a): HRNet at 1/4
    outs = baseline(x)
    assert [tuple(o.shape) for o in outs] == [(1, 34, 16, 16)]
    assert not any(k.startswith("deconv_layers") for k in baseline.state_dict())

    no_cat = build_model("higher_hrnet_w32", cat_output=False, num_deconv_blocks=0, **TINY).eval()  # Table 4 (b)
    assert no_cat.deconv_layers[0][0][0].weight.shape == (8, 8, 4, 4) and len(no_cat.deconv_layers[0]) == 1
    assert [tuple(o.shape) for o in no_cat(x)] == [(1, 34, 16, 16), (1, 17, 32, 32)]

    two = build_model("higher_hrnet_w32", num_deconvs=2, num_deconv_blocks=2, **TINY).eval()  # Table 3: stride 1
    assert [tuple(o.shape) for o in two(x)] == [(1, 34, 16, 16), (1, 17, 32, 32), (1, 17, 64, 64)]
    assert two.deconv_layers[1][0][0].weight.shape == (8 + 17, 8, 4, 4) and len(two.deconv_layers[1]) == 3

    with pytest.raises(ValueError, match="ae_outputs"):
        build_meta("higher_hrnet_w32", ae_outputs=(True,))
    with pytest.raises(ValueError, match="cat_output"):
        build_meta("higher_hrnet_w32", num_deconvs=2, cat_output=(True,))


def test_segmentation_variants_share_the_imagenet_backbone_layout():
    """SEG initialises from CLS ImageNet models: backbone keys and shapes of each SEG entry equal its CLS entry's."""
    for seg, cls in (("seg_hrnetv2_w18_small_v1", "cls_hrnet_w18_small_v1"),
                     ("seg_hrnetv2_w18_small_v2", "cls_hrnet_w18_small_v2"),
                     ("seg_hrnetv2_w18", "cls_hrnet_w18"), ("seg_hrnetv2_w40", "cls_hrnet_w40")):
        s, c = build_meta(seg).state_dict(), build_meta(cls).state_dict()
        head = ("incre", "downsamp", "final", "classifier")
        backbone = [(k, v.shape) for k, v in c.items() if not k.startswith(head)]
        assert backbone == [(k, v.shape) for k, v in s.items() if not k.startswith("last_layer")], seg
    small_v1 = build_model("seg_hrnetv2_w18_small_v1", num_classes=5).eval()
    with torch.no_grad():
        assert small_v1(torch.randn(1, 3, 64, 128)).shape == (1, 5, 16, 32)
    ocr = build_model("seg_hrnetv2_ocr_w48", num_classes=7, **TINY).eval()
    with torch.no_grad():
        aux, main = ocr(torch.randn(1, 3, 64, 96))
    assert aux.shape == main.shape == (1, 7, 16, 24)


# --------------------------------------------------------------------------------------------------------------------
# HRNetV2p (HRFPN) in torchvision detectors


def test_hrfpn_levels():
    model = build_model("det_hrnetv2p_w18", **TINY).eval()
    assert model.out_channels == 256
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 192))
    assert isinstance(feats, OrderedDict) and list(feats) == ["0", "1", "2", "3", "4"]
    assert [tuple(f.shape) for f in feats.values()] == [(1, 256, 128 // s, 192 // s) for s in (4, 8, 16, 32, 64)]
    keys = model.state_dict().keys()
    assert "neck.reduction_conv.0.weight" in keys and "neck.fpn_conv.4.bias" in keys and "backbone.conv1.weight" in keys
    assert model.state_dict()["neck.reduction_conv.0.weight"].shape == (256, 15 * TINY["width"], 1, 1)


def test_hrfpn_plugs_into_torchvision_faster_and_mask_rcnn():
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    torch.manual_seed(0)
    detector = FasterRCNN(build_model("det_hrnetv2p_w18"), num_classes=3, min_size=128, max_size=160).eval()
    with torch.no_grad():
        out = detector([torch.rand(3, 120, 150)])
    assert set(out[0]) == {"boxes", "labels", "scores"} and out[0]["boxes"].shape[1] == 4

    masker = MaskRCNN(build_model("det_hrnetv2p_w18", **TINY), num_classes=3, min_size=96, max_size=128).eval()
    with torch.no_grad():
        out = masker([torch.rand(3, 90, 120)])
    assert {"boxes", "labels", "scores", "masks"} <= set(out[0])


def test_faster_rcnn_w32_parameter_count_matches_det_release():
    """FACTS.md: the official Faster R-CNN HRNetV2p-W32 (81 classes) has 47.28e6 parameters ("45.0M" in 2**20 units)."""
    from torchvision.models.detection import FasterRCNN

    with torch.device("meta"):
        detector = FasterRCNN(build_model("det_hrnetv2p_w32"), num_classes=81)
    params = sum(p.numel() for p in detector.parameters())
    assert round(params / 1e6, 2) == 47.28
    assert math.isclose(params / 2**20, 45.0, abs_tol=0.1)


# --------------------------------------------------------------------------------------------------------------------
# heatmaps from a lower-resolution branch (pose paper Sec. 4.1, "Resolution of representation", Figure 5)


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_heatmap_branch_output_shape_and_head_width(branch):
    torch.manual_seed(0)
    model = build_model("pose_hrnet_w32", heatmap_branch=branch, **TINY).eval()
    c = TINY["width"] * 2**branch
    assert model.final_layer.weight.shape == (17, c, 1, 1)
    assert model.heatmap_stride == 4 * 2**branch
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 96))
    s = 4 * 2**branch
    assert out.shape == (2, 17, 128 // s, 96 // s)
    # the last module fuses every branch into branch b only; no other fuse row exists
    rows = {k.split(".")[3] for k in model.state_dict() if k.startswith("stage4.1.fuse_layers.")}
    assert rows == {str(branch)}
    assert {k.split(".")[4] for k in model.state_dict() if k.startswith(f"stage4.1.fuse_layers.{branch}.")} == {
        str(j) for j in range(4) if j != branch}


def test_heatmap_branch_zero_is_the_official_layout():
    default, explicit = build_meta("pose_hrnet_w32"), build_meta("pose_hrnet_w32", heatmap_branch=0)
    assert [(k, v.shape) for k, v in default.state_dict().items()] == \
        [(k, v.shape) for k, v in explicit.state_dict().items()]
    assert sum(p.numel() for p in explicit.parameters()) == 28536113  # DHRN W32 (test_complexity_table_rows)


def test_heatmap_branch_trains_every_parameter():
    """No parameter of a branch-b model is left without gradient (DDP without find_unused_parameters needs that)."""
    x = torch.randn(2, 3, 64, 48)
    for branch in (1, 2, 3):
        torch.manual_seed(0)
        model = build_model("pose_hrnet_w32", heatmap_branch=branch, **TINY)
        model(x).square().mean().backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_heatmap_branch_matches_branch_b_of_a_multi_scale_last_module():
    """The single-output last module computes exactly row b of the full exchange unit (pose paper Sec. 3)."""
    x = torch.randn(1, 3, 64, 48)
    for branch in (1, 2):
        torch.manual_seed(0)
        full = build_model("pose_hrnet_w32", heatmap_branch=branch, multi_scale_output=True, **TINY).eval()
        lean = build_model("pose_hrnet_w32", heatmap_branch=branch, **TINY).eval()
        sd = full.state_dict()
        missing, unexpected = lean.load_state_dict(sd, strict=False)
        assert missing == []
        assert unexpected and all(".fuse_layers." in k and f".fuse_layers.{branch}." not in k for k in unexpected)
        with torch.no_grad():
            torch.testing.assert_close(lean(x), full(x))
        assert full(x).shape == (1, 17, 16 // 2**branch, 12 // 2**branch)


def test_heatmap_branch_loads_imagenet_backbone():
    """The fuse row of branch b has the keys of a multi-scale (ImageNet classification) last module."""
    torch.manual_seed(0)
    cls = build_model("cls_hrnet_w18", **TINY)
    pose = build_model("pose_hrnet_w32", heatmap_branch=2, **TINY)
    unused = load_pretrained_backbone(pose, cls.state_dict())
    assert torch.equal(pose.stage4[1].fuse_layers["2"][0][1][0].weight, cls.stage4[1].fuse_layers[2][0][1][0].weight)
    assert any(k.startswith("stage4.1.fuse_layers.0.") for k in unused)


@pytest.mark.parametrize("branch", [-1, 4, 7, 1.0, True])
def test_invalid_heatmap_branch_names_the_value(branch):
    with pytest.raises(ValueError, match=rf"heatmap_branch .*got {branch!r}"):
        build_meta("pose_hrnet_w32", heatmap_branch=branch)
    with pytest.raises(ValueError, match=r"\[0, 2\].*got 3"):  # three branches when there are two stages
        build_meta("pose_hrnet_w32", heatmap_branch=3, stage_modules=(1, 1), stage_blocks=(1, 1))


@pytest.mark.parametrize("head", ["v1h", "v2"])
def test_heatmap_branch_needs_the_v1_head(head):
    with pytest.raises(ValueError, match=rf"heatmap_branch=1 needs head 'v1'.*{head}"):
        build_meta("pose_hrnet_w32", head=head, heatmap_branch=1)
    assert build_meta("pose_hrnet_w32", head=head, heatmap_branch=0).head == head
