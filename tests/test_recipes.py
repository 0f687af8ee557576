"""Recipes: paper values, profiles, overrides, and strict key checking."""

from __future__ import annotations

import pytest
import yaml

from hrnet_core.recipes import ConfigError, list_profiles, list_recipes, load_recipe, parse_overrides, recipe_from_dict
from hrnet_core.recipes.params import run_defaults

COCO_W32 = "pose_hrnet_w32_256x192_coco"


def test_every_recipe_loads_and_names_its_paper_row():
    names = list_recipes()
    assert {COCO_W32, "pose_hrnet_w48_384x288_coco", "pose_hrnet_w32_256x256_mpii"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.name == name, "the file name and the recipe name must agree"
        assert r.paper is not None and r.paper.id and r.paper.table and r.paper.row
        w, h = r.data.input_size
        assert f"{h}x{w}" in name or f"{w}x{h}" in name, "the name carries the input size as the paper prints it"
        if hasattr(r.data, "heatmap_size"):  # heatmap tasks (top-down pose, faces)
            assert r.data.heatmap_size == [w // 4, h // 4], "HRNet heatmaps have stride 4"


def test_paper_values_of_the_coco_recipes():
    """Pose paper Sec. 4.1 / FACTS.md section 1."""
    r = load_recipe(COCO_W32)
    assert r.model.name == "pose_hrnet_w32" and r.model.num_joints == 17
    assert (r.data.input_size, r.data.heatmap_size, r.data.sigma) == ([192, 256], [48, 64], 2.0)
    t = r.train
    assert (t.epochs, t.global_batch_size, t.batch_size_per_device) == (210, 128, 32)
    assert (t.optimizer.name, t.optimizer.lr, t.optimizer.weight_decay) == ("adam", 1e-3, 0.0)
    assert (t.schedule.name, t.schedule.milestones, t.schedule.gamma) == ("multistep", [170, 200], 0.1)
    a = r.augment
    assert (a.scale_factor, a.rotation_factor, a.rotation_prob, a.half_body_prob, a.flip) == (0.35, 45.0, 0.6, 0.3, True)
    assert r.test.flip and r.test.shift_heatmap and not r.test.use_gt_boxes
    assert (r.test.joint_score_thr, r.test.oks_nms_thr) == (0.2, 0.9)
    big = load_recipe("pose_hrnet_w48_384x288_coco")
    assert (big.data.input_size, big.data.heatmap_size, big.data.sigma) == ([288, 384], [72, 96], 3.0)
    assert (big.train.global_batch_size, big.train.batch_size_per_device) == (96, 24)
    assert load_recipe("pose_hrnet_w32_256x192_coco_scratch").model.pretrained is None
    assert r.model.pretrained and r.model.pretrained.endswith("hrnet_w32-36af842e.pth")


def test_hrformer_recipes_follow_the_paper():
    """HRFormer paper Sec. 4.1 / Table 3 and FACTS.md section 7."""
    from hrnet_core.models import list_models

    for v, gbs in (("t", 256), ("s", 256), ("b", 128)):
        r = load_recipe(f"pose_hrformer_{v}_256x192_coco")
        assert r.model.name in list_models() and r.paper.id == "hrformer_neurips2021" and r.paper.table == "3"
        o, s = r.train.optimizer, r.train.schedule
        assert (o.name, o.lr, o.weight_decay, o.no_decay) == ("adamw", 5e-4, 0.01, ["relative_position_bias_table"])
        assert (s.warmup_iters, s.warmup_ratio, s.milestones) == (500, 0.001, [170, 200])
        assert r.train.global_batch_size == gbs
        assert (r.augment.rotation_factor, r.augment.scale_factor, r.augment.half_body_prob) == (40.0, 0.5, 0.3)


def test_every_recipe_names_a_zoo_model():
    from hrnet_core.models import list_models

    for name in list_recipes():
        assert load_recipe(name).model.name in list_models(), name


def test_mpii_recipe_values():
    r = load_recipe("pose_hrnet_w32_256x256_mpii")
    assert r.data.dataset == "mpii" and r.model.num_joints == 16
    assert (r.augment.rotation_factor, r.augment.scale_factor, r.augment.half_body_prob) == (30.0, 0.25, 0.0)
    assert r.test.use_gt_boxes


def test_smoke_profile_shrinks_model_and_schedule_only():
    base = load_recipe(COCO_W32)
    smoke = load_recipe(COCO_W32, profile="smoke")
    assert "smoke" in list_profiles() and smoke.profile == "smoke"
    assert smoke.model.width < 32 and smoke.train.epochs < base.train.epochs and smoke.model.pretrained is None
    # the code path stays the paper's: same loss, augmentation and test procedure
    assert smoke.augment == base.augment and smoke.train.loss == base.train.loss
    assert (smoke.test.flip, smoke.test.use_gt_boxes, smoke.test.oks_nms_thr) == (True, False, 0.9)


def test_smoke_model_builds_and_runs():
    import torch

    from hrnet_core.models import build_model

    r = load_recipe(COCO_W32, profile="smoke")
    model = build_model(r.model.name, **r.model.build_kwargs()).eval()
    w, h = r.data.input_size
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w))
    assert tuple(out.shape) == (1, 17, r.data.heatmap_size[1], r.data.heatmap_size[0])


def _smoke_cases():
    return [pytest.param(name, id=name) for name in list_recipes()]


@pytest.mark.parametrize("name", _smoke_cases())
def test_smoke_profile_fits_every_recipe_or_refuses_it(name):
    """Every packaged recipe + ``--profile smoke``: a tiny model of the recipe's family that maps a 128x96 crop to
    32x24 heatmaps, or (a non-COCO dataset: the generated data is COCO-format) a ConfigError at load time."""
    import torch

    from hrnet_core.models import build_model, count_params
    from hrnet_core.models.zoo import model_family

    base = load_recipe(name)
    if base.task != "pose_topdown":  # the smoke profile of another task (tested with that task)
        from hrnet_core.tasks import get_task

        with pytest.raises(ConfigError, match=rf"profile 'smoke' cannot be applied to recipe '{name}'.*the smoke "
                                              rf"profile of task {base.task}"):
            load_recipe(name, profile="smoke")
        own = run_defaults(base.task).profile
        r = load_recipe(name, profile=own, overrides={"data.root": "x"})
        assert r.profile == own and r.task == base.task
        return
    if base.data.dataset != "coco":
        with pytest.raises(ConfigError, match=rf"profile 'smoke' .*recipe '{name}'.*data\.dataset is "
                                              rf"'{base.data.dataset}'.*coco-format"):
            load_recipe(name, profile="smoke")
        return
    r = load_recipe(name, profile="smoke")
    assert (r.data.input_size, r.data.heatmap_size, r.model.pretrained) == ([96, 128], [24, 32], None)
    assert r.model.name == base.model.name and r.model.num_joints == base.model.num_joints
    # the recipe's optimiser, loss, augmentation and test procedure stay
    assert r.train.optimizer == base.train.optimizer and r.train.loss == base.train.loss and r.augment == base.augment
    model = build_model(r.model.name, **r.model.build_kwargs()).eval()
    assert count_params(model) < 1_000_000, "the smoke model must be tiny"
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 96))
    assert tuple(out.shape) == (1, r.model.num_joints, 32, 24)
    assert torch.isfinite(out).all()
    if model_family(r.model.name) == "hrformer":
        m = r.model
        assert (m.widths, m.num_heads, m.num_blocks, m.window_size) == ([16, 32, 64, 128], [1, 2, 4, 8], 1, [4, 4, 4, 4])
        assert m.drop_path_rate == 0.0 and m.width is None and m.stage_blocks is None
        assert 0 < r.train.schedule.warmup_iters < base.train.schedule.warmup_iters


def test_smoke_profile_keeps_the_hrnet_smoke_recipe():
    """The default `dvc repro` trains this resolved recipe; its committed metrics depend on every value."""
    r = load_recipe(COCO_W32, profile="smoke")
    m = r.model
    assert (m.width, m.stage1_blocks, m.stage1_planes, m.stage_modules, m.stage_blocks) == (16, 1, 32, [1, 1, 1], [1, 1, 1])
    assert (m.widths, m.num_heads, m.num_blocks, m.window_size, m.mlp_ratio, m.drop_path_rate) == (None,) * 6
    assert (r.data.root, r.data.sigma, r.train.epochs, r.train.global_batch_size, r.train.batch_size_per_device) == (
        "data/prepared/synthetic", 2.0, 8, 32, 16)
    s = r.train.schedule
    assert (s.name, s.milestones, s.gamma, s.warmup_iters) == ("multistep", [6], 0.1, 0)
    assert (r.train.val_every, r.train.sync_bn, r.test.batch_size) == (2, False, 32)
    assert r.model.build_kwargs() == {"num_joints": 17, "width": 16, "stage_modules": [1, 1, 1],
                                      "stage_blocks": [1, 1, 1], "stage1_blocks": 1, "stage1_planes": 32}


def test_smoke_profile_on_mpii_with_its_own_data_root():
    """The dataset check guards the profile's data.root only: with a prepared MPII root the profile applies."""
    r = load_recipe("pose_hrnet_w32_256x256_mpii", ["data.root=/data/prepared/mpii"], profile="smoke")
    assert (r.data.dataset, r.data.root, r.model.width, r.model.num_joints) == ("mpii", "/data/prepared/mpii", 16, 16)


def test_smoke_profile_follows_an_overridden_model_name():
    """The family section is chosen by the model after overrides (an HRNet recipe trained with an HRFormer)."""
    r = load_recipe(COCO_W32, ["model.name=hrformer_s"], profile="smoke")
    assert r.model.widths == [16, 32, 64, 128] and r.model.width is None
    r = load_recipe("pose_hrformer_t_256x192_coco", ["model.name=pose_hrnet_w48"], profile="smoke")
    assert r.model.width == 16 and r.model.widths is None


@pytest.mark.parametrize(
    "recipe, overrides, keys, model",
    [
        ("pose_hrformer_t_256x192_coco", ["model.width=16"], ["model.width"], "hrformer_t"),
        ("pose_hrformer_b_384x288_coco", ["model.stage_blocks=[1, 1, 1]", "model.stage1_planes=32"],
         ["model.stage_blocks", "model.stage1_planes"], "hrformer_b"),
        ("pose_hrformer_s_256x192_coco", ["model.heatmap_branch=1", "data.heatmap_size=[24, 32]"],
         ["model.heatmap_branch"], "hrformer_s"),
        (COCO_W32, ["model.widths=[8, 16, 32, 64]"], ["model.widths"], "pose_hrnet_w32"),
        (COCO_W32, ["model.window_size=[7, 7, 7, 7]"], ["model.window_size"], "pose_hrnet_w32"),
    ],
)
def test_model_keys_the_model_does_not_accept_fail_at_load(recipe, overrides, keys, model):
    """Fail early: a model key the zoo model does not take is a ConfigError naming key(s), model and valid keys."""
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe, overrides)
    msg = str(info.value)
    assert msg.startswith(", ".join(keys) + ": not accepted by model " + repr(model)), msg
    valid = msg.split("valid model keys for it: ")[1].split(", ")
    assert "model.num_joints" in valid and not set(keys) & set(valid)
    assert ("model.widths" in valid) == model.startswith("hrformer") and ("model.width" in valid) != model.startswith("hrformer")


def test_every_valid_model_key_reaches_the_builder():
    """The keys validation lets through are the ones the builders take (no TypeError / ValueError at build)."""
    from hrnet_core.models import build_model
    from hrnet_core.models.zoo import model_overrides

    for name in ("pose_hrnet_w32", "hrformer_t", "cls_hrformer_t"):
        accepted = model_overrides(name)
        assert "num_joints" in accepted or "num_classes" in accepted
    assert {"widths", "num_heads", "num_blocks", "window_size", "mlp_ratio", "drop_path_rate"} <= model_overrides("hrformer_b")
    assert {"width", "stage_blocks", "stage1_planes", "heatmap_branch", "head", "fusion"} <= model_overrides("pose_hrnet_w48")
    r = load_recipe("pose_hrformer_t_256x192_coco", ["model.num_heads=[2, 2, 4, 8]", "model.mlp_ratio=[2, 2, 2, 2]",
                                                     "model.drop_path_rate=0.1", "model.stage1_blocks=1"], profile="smoke")
    assert r.model.build_kwargs()["num_heads"] == [2, 2, 4, 8] and r.model.build_kwargs()["drop_path_rate"] == 0.1
    model = build_model(r.model.name, **r.model.build_kwargs())
    assert model.cfg.num_heads == (2, 2, 4, 8) and model.cfg.mlp_ratio == (2, 2, 2, 2) and model.cfg.stage1_blocks == 1
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'pose_hrnet_w33'; known: .*hrformer_t"):
        load_recipe(COCO_W32, ["model.name=pose_hrnet_w33"])
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'pose_hrnet_w33'"):
        load_recipe(COCO_W32, ["model.name=pose_hrnet_w33"], profile="smoke")
    with pytest.raises(ConfigError, match=r"^model\.widths: expected 4 positive values"):
        load_recipe("pose_hrformer_t_256x192_coco", ["model.widths=[16, 32, 64]"])
    with pytest.raises(ConfigError, match=r"^model\.drop_path_rate: must be in \[0, 1\)"):
        load_recipe("pose_hrformer_t_256x192_coco", ["model.drop_path_rate=1.5"])


def test_profile_families_and_datasets_are_checked(tmp_path):
    def write(text):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        return str(path)

    only_hrnet = write("families:\n  hrnet:\n    model: {width: 18}\n")
    assert load_recipe(COCO_W32, profile=only_hrnet).model.width == 18
    with pytest.raises(ConfigError, match=r"profile 'p' .*no section for the hrformer family of "
                                          r"model\.name='hrformer_t'.*families: hrnet"):
        load_recipe("pose_hrformer_t_256x192_coco", profile=only_hrnet)
    with pytest.raises(ConfigError, match=r"unknown key families\.hrnet\.model\.widht "):
        load_recipe(COCO_W32, profile=write("families:\n  hrnet:\n    model: {widht: 18}\n"))
    with pytest.raises(ConfigError, match=r"unknown key families\.transformer .*hrnet, hrformer"):
        load_recipe(COCO_W32, profile=write("families:\n  transformer: {}\n"))
    with pytest.raises(ConfigError, match=r"^datasets: expected a non-empty list"):
        load_recipe(COCO_W32, profile=write("datasets: [no_such_dataset]\n"))
    # a profile without `families` / `datasets` is a plain recipe layer, as before
    assert load_recipe("pose_hrnet_w32_256x256_mpii", profile=write("train: {epochs: 3}\n")).train.epochs == 3


def test_overrides_dotted_nested_and_typed():
    r = load_recipe(COCO_W32, ["train.epochs=3", "model.stage_modules=[1, 1, 1]", "train.optimizer.lr=2e-3"])
    assert r.train.epochs == 3 and r.model.stage_modules == [1, 1, 1] and r.train.optimizer.lr == 2e-3
    r2 = load_recipe(COCO_W32, {"train": {"epochs": 4}, "data.sigma": 3})
    assert r2.train.epochs == 4 and r2.data.sigma == 3.0
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.epoch=3"], "train.epoch"),
        (["train.optimizer.momentun=0.9"], "train.optimizer.momentun"),
        (["bogus=1"], "bogus"),
        ({"model": {"widht": 8}}, "model.widht"),
    ],
)
def test_unknown_override_keys_are_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"unknown key {key.replace('.', '[.]')} \(overrides\)"):
        load_recipe(COCO_W32, overrides)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("test.flip=maybe", "test.flip: expected true/false"),
        ("data.input_size=[192]", "data.input_size"),
        ("train.optimizer.name=lamb", "train.optimizer.name"),
        ("train.epochs=0", "train.epochs: must be > 0"),
        ("model.name=null", "model.name: must not be null"),
    ],
)
def test_bad_values_are_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_recipe(COCO_W32, [override])


def test_unknown_key_in_a_recipe_file_names_file_and_key(tmp_path):
    data = load_recipe(COCO_W32).to_dict()
    data["train"]["warmup"] = 5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"unknown key train\.warmup .*bad\.yaml"):
        load_recipe(str(path))


def test_missing_key_and_unknown_names():
    data = load_recipe(COCO_W32).to_dict()
    del data["data"]["sigma"]
    with pytest.raises(ConfigError, match=r"missing key data\.sigma"):
        recipe_from_dict(data)
    with pytest.raises(ConfigError, match="unknown recipe 'no_such_recipe'"):
        load_recipe("no_such_recipe")
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_recipe(COCO_W32, profile="nope")
    with pytest.raises(ConfigError, match="not of the form"):
        load_recipe(COCO_W32, ["train.epochs"])


def test_round_trip_through_yaml_and_flat_params():
    r = load_recipe(COCO_W32, ["train.epochs=7"], profile="smoke")
    again = recipe_from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict())))
    assert again == r
    flat = r.flat()
    assert flat["train.epochs"] == 7 and flat["train.optimizer.lr"] == r.train.optimizer.lr and "paper.id" in flat


def test_gradient_accumulation_reaches_the_paper_batch():
    r = load_recipe(COCO_W32)
    assert r.accumulation_steps(4) == 1  # the paper: 32 x 4 GPUs
    assert r.accumulation_steps(2) == 2
    assert r.accumulation_steps(1) == 4
    with pytest.raises(ConfigError, match="global_batch_size=128 is not a multiple"):
        r.accumulation_steps(3)


def test_heatmap_branch_is_passed_to_the_model_and_checked_against_the_heatmap_size():
    """Pose paper Figure 5: heatmaps of branch b have stride 4 * 2**b; the recipe must say the matching size."""
    import torch

    from hrnet_core.models import build_model

    assert "heatmap_branch" not in load_recipe(COCO_W32).model.build_kwargs()  # unset: the zoo default (1/4)
    r = load_recipe(COCO_W32, ["model.heatmap_branch=1", "data.heatmap_size=[12, 16]", "data.sigma=1.0"],
                    profile="smoke")
    assert r.model.build_kwargs()["heatmap_branch"] == 1
    model = build_model(r.model.name, **r.model.build_kwargs()).eval()
    w, h = r.data.input_size
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w))
    assert tuple(out.shape) == (1, 17, r.data.heatmap_size[1], r.data.heatmap_size[0]) == (1, 17, 16, 12)
    assert load_recipe(COCO_W32, ["model.heatmap_branch=2", "data.heatmap_size=[12, 16]"]).model.heatmap_branch == 2
    assert load_recipe(COCO_W32, ["model.heatmap_branch=0"]).data.heatmap_size == [48, 64]

    with pytest.raises(ConfigError, match=r"^data\.heatmap_size: \[48, 64\] does not match model\.heatmap_branch=1: "
                                          r".*stride 8.*data\.input_size \[192, 256\].*\[24, 32\]"):
        load_recipe(COCO_W32, ["model.heatmap_branch=1"])
    with pytest.raises(ConfigError, match=r"not divisible by 16"):
        load_recipe(COCO_W32, ["model.heatmap_branch=2", "data.input_size=[200, 200]", "data.heatmap_size=[12, 12]"])
    for bad in ("-1", "4"):
        with pytest.raises(ConfigError, match=rf"^model\.heatmap_branch: {bad} is not a branch of the backbone"):
            load_recipe(COCO_W32, [f"model.heatmap_branch={bad}"])
    with pytest.raises(ConfigError, match=r"model\.heatmap_branch: 3 is not a branch .*\(0 \.\. 2\)"):
        load_recipe(COCO_W32, ["model.heatmap_branch=3", "model.stage_modules=[1, 1]", "model.stage_blocks=[4, 4]",
                               "data.heatmap_size=[6, 8]"])
    with pytest.raises(ConfigError, match=r"model\.heatmap_branch: expected an integer"):
        load_recipe(COCO_W32, ["model.heatmap_branch=high"])


def test_extra_recipes_load_by_name_and_are_listed_without_a_paper_row(capsys):
    """Recipes without a paper row (``recipes/extra``: CamVid) load by name and ``hrnet recipes list`` shows them
    apart; the paper-row list stays the paper rows only."""
    from hrnet_cli.main import main
    from hrnet_core.recipes import list_extra_recipes, list_recipes

    assert "seg_hrnetv2_w48_360x480_camvid" in list_extra_recipes()
    assert "seg_hrnetv2_w48_360x480_camvid" not in list_recipes()
    r = load_recipe("seg_hrnetv2_w48_360x480_camvid")
    assert r.task == "segmentation" and r.data.dataset == "camvid" and r.model.num_classes == 11
    assert main(["recipes", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("seg_hrnetv2_w48_360x480_camvid"))
    assert "no paper row" in line
    with pytest.raises(ConfigError, match="seg_hrnetv2_w48_360x480_camvid"):
        load_recipe("no_such_recipe")
