"""Sweep definitions, validation, planning, submission plumbing and the report (no Ray instance needed).

The Ray end-to-end tests (Tune runs, ASHA, the Jobs API) are in ``tests/test_sweeps_ray.py``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from sweeps import spec as sweep_spec
from sweeps.spec import (
    SweepConfigError,
    build_plan,
    check_cluster_fit,
    list_sweeps,
    load_sweep,
    parse_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cls_width_imagenet", "det_width_coco", "face_sigma_resolution_300w", "higherhrnet_ablation_coco",
           "higherhrnet_deconv_count_coco", "pose_fusion_ablation_coco", "pose_input_size_coco",
           "pose_representation_resolution_coco",
           "pose_tracking_thresholds_posetrack", "pose_width_coco", "seg_head_v1_v2_cityscapes", "seg_width_cityscapes"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(textwrap.dedent(text))
    return p


MINIMAL = """\
    name: {name}
    recipe: pose_hrnet_w32_256x192_coco
    metric: AP
    paper: {{id: hrnet_pose_cvpr2019, table: "1"}}
    variants:
      - {{name: a, overrides: {{model.width: 18}}}}
      - {{name: b, overrides: {{model.width: 32}}}}
    resources: {{num_workers: 1, cpus_per_worker: 1}}
"""


def test_shipped_sweeps_are_listed():
    assert list_sweeps() == SHIPPED


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name", [
    "pose_fusion_ablation_coco", "pose_input_size_coco", "pose_width_coco", "pose_representation_resolution_coco",
    "pose_tracking_thresholds_posetrack", "cls_width_imagenet", "face_sigma_resolution_300w",
    "seg_width_cityscapes", "seg_head_v1_v2_cityscapes", "higherhrnet_ablation_coco", "higherhrnet_deconv_count_coco",
    "det_width_coco",
])
def test_shipped_sweeps_validate(name, smoke):
    plan = build_plan(load_sweep(name), smoke=smoke)
    assert plan.trials
    assert len({t.key for t in plan.trials}) == len(plan.trials)
    if smoke:
        # smoke trials run offline from scratch: no variant may bring back an ImageNet file the profile dropped
        from hrnet_core.recipes import load_recipe
        from hrnet_core.tasks import get_task

        assert not plan.resources.use_gpu
        from hrnet_core.recipes.params import run_defaults

        assert plan.profile == run_defaults(load_recipe(plan.spec.recipe).task).profile  # the task's own (params.yaml)
        assert plan.experiment_name == f"{name}-smoke"

        for t in plan.trials:
            assert load_recipe(plan.spec.recipe, overrides=t.overrides, profile=plan.profile).model.pretrained is None, t.key


def test_width_sweep_is_the_paper_widths_and_smoke_maps_to_tiny_ones():
    full = build_plan(load_sweep("pose_width_coco"))
    assert [t.variant for t in full.trials] == ["W18", "W32", "W40", "W48"]
    assert [t.overrides["model.width"] for t in full.trials] == [18, 32, 40, 48]
    assert full.resources.per_trial() == {"CPU": 32.01, "GPU": 4.0}
    smoke = build_plan(load_sweep("pose_width_coco"), smoke=True)
    assert [(t.variant, t.overrides["model.width"]) for t in smoke.trials] == [("W18", 8), ("W32", 16)]
    # the paper values stay attached to the rows they stand for
    assert [t.paper.get("AP") for t in full.trials] == [None, 74.4, None, 75.1]


def test_fusion_ablation_matches_table6():
    plan = build_plan(load_sweep("pose_fusion_ablation_coco"))
    assert plan.spec.recipe == "pose_hrnet_w32_256x192_coco_scratch"  # Table 6 networks are trained from scratch
    assert [t.overrides["model.fusion"] for t in plan.trials] == ["final", "across_stage", "all"]
    assert [t.paper_row[1] for t in plan.trials] == [
        "(a) final exchange only", "(b) across-stage exchange", "(c) across + within-stage exchange"]
    assert plan.trials[2].paper == {"AP": 73.4}


def test_input_size_study_keeps_aspect_and_stride():
    plan = build_plan(load_sweep("pose_input_size_coco"))
    for t in plan.trials:
        (w, h), (hw, hh) = t.overrides["data.input_size"], t.overrides["data.heatmap_size"]
        assert t.variant == f"{h}x{w}" and w * 4 == h * 3 and (hw, hh) == (w // 4, h // 4)
        assert t.overrides["data.sigma"] == pytest.approx(2.0 * h / 256)


# ---------------------------------------------------------------------------------------------------- bad files


def test_unknown_recipe_fails_with_one_message(tmp_path):
    p = _write(tmp_path, "bad", MINIMAL.format(name="bad").replace("pose_hrnet_w32_256x192_coco", "pose_nope"))
    with pytest.raises(SweepConfigError) as e:
        build_plan(load_sweep(p))
    msg = str(e.value)
    assert str(p) in msg and "pose_nope" in msg and "unknown recipe" in msg
    assert msg.count("\n") == 0


def test_empty_search_space_fails(tmp_path):
    text = MINIMAL.format(name="empty").split("    variants:")[0] + "    resources: {num_workers: 1}\n"
    p = _write(tmp_path, "empty", text)
    with pytest.raises(SweepConfigError, match="empty search space"):
        load_sweep(p)


def test_unknown_override_key_names_the_key_and_trials(tmp_path):
    p = _write(tmp_path, "badkey", MINIMAL.format(name="badkey").replace("model.width: 32", "model.widht: 32"))
    with pytest.raises(SweepConfigError, match=r"trial t01-b: .*model\.widht"):
        build_plan(load_sweep(p))


def test_schema_problems_are_collected_in_one_error(tmp_path):
    text = MINIMAL.format(name="many") + "    colour: red\n    mode: up\n    scheduler: {type: hyperband}\n"
    p = _write(tmp_path, "many", text)
    with pytest.raises(SweepConfigError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert "3 problems" in msg and "colour: unknown key" in msg and "mode:" in msg and "scheduler.type" in msg


def test_name_must_match_file(tmp_path):
    p = _write(tmp_path, "file_name", MINIMAL.format(name="other_name"))
    with pytest.raises(SweepConfigError, match="must equal the file name"):
        load_sweep(p)


def test_unknown_sweep_name_lists_available():
    with pytest.raises(SweepConfigError, match="pose_width_coco"):
        load_sweep("no_such_sweep")


def test_resources_larger_than_cluster():
    plan = build_plan(load_sweep("pose_width_coco"))  # 4 workers x (8 CPU + 1 GPU) per trial
    with pytest.raises(SweepConfigError) as e:
        check_cluster_fit(plan, {"CPU": 2.0})
    assert "needs 4 GPU" in str(e.value) and "cluster has 0 GPU" in str(e.value)
    with pytest.raises(SweepConfigError, match="single node"):
        check_cluster_fit(plan, {"CPU": 64.0, "GPU": 8.0}, nodes=[{"CPU": 4.0, "GPU": 4.0}] * 2)


def test_concurrency_from_the_cluster():
    plan = build_plan(load_sweep("pose_width_coco"))
    assert check_cluster_fit(plan, {"CPU": 64.0, "GPU": 8.0}) == 2            # GPUs limit: 8 / 4
    assert check_cluster_fit(plan, {"CPU": 256.0, "GPU": 32.0}) == 4          # capped by the 4 trials
    smoke = build_plan(load_sweep("pose_width_coco"), smoke=True)
    assert smoke.resources.per_trial() == {"CPU": 0.51}
    assert check_cluster_fit(smoke, {"CPU": 2.0}) == 1                        # smoke caps at 1 (2-core CI)


def test_asha_max_t_defaults_to_recipe_epochs(tmp_path):
    p = _write(tmp_path, "asha", MINIMAL.format(name="asha") + "    scheduler: {type: asha, grace_period: 5}\n")
    plan = build_plan(load_sweep(p))
    assert plan.scheduler.max_t == 210 and plan.scheduler.grace_period == 5


def test_paper_values_agree_with_paper_tables(tmp_path):
    text = MINIMAL.format(name="paper").replace(
        "{name: b, overrides: {model.width: 32}}",
        "{name: b, overrides: {model.width: 32}, paper: {AP: 74.0}, paper_row: HRNet-W32 256x192 pretrain}")
    with pytest.raises(SweepConfigError, match="AP 74.0 differs from paper_tables.*74.4"):
        build_plan(load_sweep(_write(tmp_path, "paper", text)))


# ---------------------------------------------------------------------------------------------------- planning


def test_random_search_is_seeded_and_deterministic(tmp_path):
    text = MINIMAL.format(name="rnd") + """\
    search: {algorithm: random, num_samples: 3, seed: 7}
    search_space:
      train.optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
      train.seed: {randint: [0, 100]}
      augment.flip: {grid: [true, false]}
"""
    p = _write(tmp_path, "rnd", text)
    a, b = build_plan(load_sweep(p)), build_plan(load_sweep(p))
    assert len(a.trials) == 2 * 2 * 3  # variants x grid x samples
    assert [t.key for t in a.trials] == [t.key for t in b.trials]
    assert [t.overrides for t in a.trials] == [t.overrides for t in b.trials]
    lrs = [t.overrides["train.optimizer.lr"] for t in a.trials]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == len(lrs)
    assert a.fingerprint() == b.fingerprint()
    other = build_plan(parse_sweep({**yaml.safe_load(p.read_text()), "search": {"algorithm": "random",
                                                                                "num_samples": 3, "seed": 8}},
                                   source=str(p)))
    assert [t.overrides for t in other.trials] != [t.overrides for t in a.trials]


def test_grid_search_rejects_sampled_axes(tmp_path):
    text = MINIMAL.format(name="g") + "    search_space: {train.optimizer.lr: {uniform: [0.001, 0.01]}}\n"
    with pytest.raises(SweepConfigError, match="need search.algorithm: random"):
        load_sweep(_write(tmp_path, "g", text))


def test_cli_overrides_reach_every_trial():
    plan = build_plan(load_sweep("pose_width_coco"), smoke=True, overrides={"data.root": "/data/x"})
    assert all(t.overrides["data.root"] == "/data/x" for t in plan.trials)
    assert plan.trials[0].overrides["model.width"] == 8  # the variant still wins for its own keys


# ---------------------------------------------------------------------------------------------------- CLI / submit


def test_cli_validate_reports_one_line_error(tmp_path, capsys):
    from sweeps.cli import main

    p = _write(tmp_path, "bad", MINIMAL.format(name="bad").replace("pose_hrnet_w32_256x192_coco", "pose_nope"))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "pose_nope" in err and err.count("\n") == 0
    assert main(["validate", "pose_width_coco", "--smoke"]) == 0
    assert "2 trials: t00-W18, t01-W32" in capsys.readouterr().out


def test_submit_entrypoint_and_runtime_env():
    from sweeps.submit import SubmitOptions, _sweep_arg, build_entrypoint, build_runtime_env

    opts = SubmitOptions(smoke=True, storage_path="/mnt/shared/ray_results", mlflow_uri="http://mlflow:5000",
                         overrides=["data.root=/mnt/shared/coco"], runtime_env={"env_vars": {"X": "1"}})
    assert _sweep_arg("pose_width_coco", ROOT) == "pose_width_coco"
    cmd = build_entrypoint("pose_width_coco", opts)
    assert cmd.startswith("python -m sweeps.cli run pose_width_coco --smoke --storage-path /mnt/shared/ray_results")
    assert "--override data.root=/mnt/shared/coco" in cmd and "--mlflow-uri http://mlflow:5000" in cmd
    env = build_runtime_env(opts)
    assert env["working_dir"] == str(ROOT)
    assert env["env_vars"] == {"RAY_TRAIN_V2_ENABLED": "1", "RAY_JOB_STOP_WAIT_TIME_S": "30",
                               "MLFLOW_TRACKING_URI": "http://mlflow:5000", "X": "1"}
    assert ".venv" in env["excludes"] and ".git" in env["excludes"]


def test_submit_validates_before_contacting_the_cluster(tmp_path):
    from sweeps.submit import SubmitOptions, submit_sweep

    p = _write(tmp_path, "bad", MINIMAL.format(name="bad").replace("pose_hrnet_w32_256x192_coco", "pose_nope"))
    # the address is never contacted: the file is rejected first
    with pytest.raises(SweepConfigError, match="pose_nope"):
        submit_sweep(str(p), "http://127.0.0.1:9", SubmitOptions(working_dir=str(tmp_path)))


def test_sweep_parser_wires_into_a_parent_cli():
    import argparse

    from sweeps.cli import add_sweep_parser, cmd_run, cmd_submit

    parser = argparse.ArgumentParser(prog="hrnet")
    add_sweep_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "run", "pose_width_coco", "--smoke", "-o", "train.epochs=1"])
    assert args.func is cmd_run and args.smoke and args.override == ["train.epochs=1"]
    args = parser.parse_args(["sweep", "submit", "pose_width_coco", "--address", "http://h:8265",
                              "--entrypoint-resources", '{"head": 0.01}'])
    assert args.func is cmd_submit and args.entrypoint_resources == {"head": 0.01}


# ---------------------------------------------------------------------------------------------------- report


def test_report_table_and_plot(tmp_path):
    from sweeps.report import markdown_table, write_report

    plan = build_plan(load_sweep("pose_width_coco"))
    rows = [
        {"variant": "W32", "trial": "t01-W32", "status": "TERMINATED", "early_stopped": False, "iterations": 210,
         "ours": 74.1, "paper": 74.4, "delta": -0.3, "params_m": 28.5, "gflops": 7.12, "gmacs": 7.65, "run_id": "r1"},
        {"variant": "W18", "trial": "t00-W18", "status": "TERMINATED", "early_stopped": True, "iterations": 20,
         "ours": 70.0, "paper": None, "delta": None, "params_m": 9.0, "gflops": 2.9, "gmacs": 3.1, "run_id": "r2"},
    ]
    md = markdown_table(plan.spec, rows)
    assert "| W32 | `t01-W32` | TERMINATED | 210 | 74.10 | 74.4 | -0.30 | 28.50 | 7.12 | 7.65 |" in md
    assert "TERMINATED (early-stopped)" in md and "hrnet_pose_cvpr2019 Table 1" in md
    paths = write_report(plan, rows, out_dir=tmp_path, stem="w")
    assert [Path(p).name for p in paths] == ["w.md", "w.csv", "w.png"]
    assert Path(paths[2]).stat().st_size > 1000
    assert Path(paths[1]).read_text().splitlines()[0].startswith("variant,trial,status")


def test_trial_complexity_follows_each_trials_recipe():
    from hrnet_core.models import build_model, count_macs, count_params
    from hrnet_core.recipes import load_recipe
    from sweeps.report import trial_complexity

    plan = build_plan(load_sweep("pose_input_size_coco"), smoke=True)  # the smoke net at 64x48 and 128x96
    c = trial_complexity(plan)
    model_cfg = load_recipe(plan.spec.recipe, profile="smoke").model
    net = build_model(model_cfg.name, **model_cfg.build_kwargs())
    for key, (h, w) in zip(["t00-128x96", "t01-256x192"], [(64, 48), (128, 96)]):
        macs = count_macs(net, [1, 3, h, w])
        assert c[key] == pytest.approx({"params": count_params(net), "gmacs": macs / 1e9, "gflops": macs / 2**30})
    assert c["t01-256x192"]["gflops"] == pytest.approx(4 * c["t00-128x96"]["gflops"], rel=0.02)


def test_tracking_parent_run_is_reused_on_resume(tmp_path):
    from sweeps import mlflow_sweeps as tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = build_plan(load_sweep("pose_width_coco"), smoke=True)
    pid = tracking.ensure_parent_run(plan, mlflow_uri=uri, experiment="t", sweep_path="/x/pose_width_coco-smoke")
    assert tracking.ensure_parent_run(plan, mlflow_uri=uri, experiment="t", sweep_path="/x",
                                      existing_run_id=pid) == pid
    found = tracking.find_parent_run(uri, "t", "pose_width_coco-smoke")
    assert found.info.run_id == pid and found.data.tags["sweep.fingerprint"] == plan.fingerprint()
    info = {"variant": "W18", "paper": {}, "paper_tags": {"paper.id": "p", "paper.table": "1", "paper.row": "W18"},
            "complexity": {"params": 1.0}}
    # a trial that failed before its training run existed still gets one child run, marked FAILED
    rid = tracking.record_trial(uri, pid, "t00-W18", info, status="FAILED", tune_status="ERROR", error="boom")
    child = tracking.find_child(uri, pid, "t00-W18")
    assert child.info.run_id == rid and child.info.status == "FAILED"
    assert child.data.tags["mlflow.parentRunId"] == pid and child.data.tags["sweep.error"] == "boom"
    assert tracking.supersede_children(uri, pid, "t00-W18") == [rid]
    assert tracking.find_child(uri, pid, "t00-W18") is None


# ---------------------------------------------------------------------------------------------------- cluster files


def test_cluster_launcher_yaml():
    cfg = yaml.safe_load((ROOT / "sweeps/cluster/ray-cluster-gpu.yaml").read_text())
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head = cfg["available_node_types"][cfg["head_node_type"]]["resources"]
    gpu = cfg["available_node_types"]["gpu_worker"]["resources"]
    full = build_plan(load_sweep("pose_width_coco"))
    # one trial's 4 GPU workers fit one GPU node, with CPUs to spare for Ray Data; 8 nodes run 8 trials at once
    check_cluster_fit(full, {"CPU": head["CPU"] + gpu["CPU"], "GPU": gpu["GPU"]}, nodes=[head, gpu])
    assert gpu["CPU"] > full.resources.per_trial()["CPU"]
    n = cfg["available_node_types"]["gpu_worker"]["max_workers"]
    assert check_cluster_fit(full, {"CPU": head["CPU"] + n * gpu["CPU"], "GPU": n * gpu["GPU"]}) == 4  # all 4 widths
    assert any("/mnt/shared" in c for c in cfg["initialization_commands"])
    assert any("MLFLOW_TRACKING_URI" in c for c in cfg["setup_commands"])


def test_rayjob_manifest():
    job = yaml.safe_load((ROOT / "sweeps/cluster/rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    entry = job["spec"]["entrypoint"].split()
    assert entry[:4] == ["python", "-m", "sweeps.cli", "run"] and entry[4] in list_sweeps()
    assert "--storage-path" in entry and entry[entry.index("--storage-path") + 1].startswith("/mnt/shared")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http") and env["RAY_TRAIN_V2_ENABLED"] == "1"
    mounts = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "shared", "mountPath": "/mnt/shared"} in mounts


def test_sweep_files_parse_without_ray_or_mlflow():
    modules = sorted(Path(sweep_spec.__file__).parent.glob("*.py"))  # the sweeps.spec package
    assert [p.name for p in modules] == ["__init__.py", "parse.py", "plan.py", "schema.py"]
    for path in modules:
        src = path.read_text()
        assert "import ray" not in src and "mlflow" not in src, path.name


# ---------------------------------------------------------------------------------------- paper values of sweep trials

W32_KEY = ("hrnet_pose_cvpr2019", "1", "HRNet-W32 256x192 pretrain")
W48_KEY = ("hrnet_pose_cvpr2019", "1", "HRNet-W48 256x192 pretrain")


def _sweep_trial_runs(uri: str, plan) -> dict[str, str]:
    """The MLflow runs of a sweep as the runner makes them, without Ray: the parent run, each trial's training run
    with the tags ``pipelines.train.train`` writes (the trial recipe's tags, then the trial's), and the Tune
    callback's :func:`sweeps.mlflow_sweeps.record_trial`. Returns ``{variant: child run id}``."""
    from hrnet_core.recipes import load_recipe
    from pipelines import mlflow_runs as pipeline_tracking
    from sweeps import mlflow_sweeps as tracking

    pid = tracking.ensure_parent_run(plan, mlflow_uri=uri, experiment="hrnet", sweep_path=f"/x/{plan.experiment_name}")
    out = {}
    for t in plan.trials:
        recipe = load_recipe(plan.spec.recipe, overrides=t.overrides, profile=plan.profile)
        paper_tags = tracking.trial_paper_tags(plan, t)
        tags = {**pipeline_tracking.recipe_tags(recipe), "source": "training", "sweep.name": plan.experiment_name,
                "sweep.kind": "trial", "sweep.trial": t.key, "sweep.variant": t.variant, **paper_tags}
        rid = pipeline_tracking.create_run(uri, "hrnet", t.key, tags, parent_run_id=pid)
        pipeline_tracking.log_metrics(uri, rid, {"AP": 70.0}, step=1)
        info = {"variant": t.variant, "paper": t.paper, "paper_tags": paper_tags, "complexity": {}}
        assert tracking.record_trial(uri, pid, t.key, info, status="FINISHED", tune_status="TERMINATED",
                                     last_metrics={"AP": 70.0}) == rid
        out[t.variant] = rid
    return out


def _paper_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("paper/", "delta/"))}


def test_sweep_trials_get_their_own_paper_row_not_the_recipes(tmp_path):
    """W48 trial of the W32 recipe: the W48 row's numbers; W18 / W40 (no paper row, no values): no paper numbers --
    both from the Tune callback and from the evaluation hook (``hrnet evaluate`` on the trial's checkpoint)."""
    from hrnet_core.paper_tables import find_row, row_for_recipe
    from pipelines import mlflow_runs as pipeline_tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = build_plan(load_sweep("pose_width_coco"))
    assert row_for_recipe(plan.spec.recipe).key == W32_KEY  # the base recipe is the W32 row
    runs = _sweep_trial_runs(uri, plan)
    client = pipeline_tracking.client(uri)
    w48_row, w32_row = find_row(*W48_KEY), find_row(*W32_KEY)

    # the Tune callback: paper/<m> of the trial's own row and delta/<m> of the measured AP (issue 24 point 4),
    # nothing for a variant without one
    w48 = client.get_run(runs["W48"])
    assert _paper_metrics(w48) == {**{f"paper/{m}": v for m, v in w48_row.metrics.items()},
                                   "delta/AP": pytest.approx(70.0 - w48_row.metrics["AP"])}
    assert (w48.data.tags["paper.table"], w48.data.tags["paper.row"]) == W48_KEY[1:]
    assert client.get_run(runs["W32"]).data.metrics["paper/AP"] == 74.4
    for variant in ("W18", "W40"):
        run = client.get_run(runs[variant])
        assert _paper_metrics(run) == {}, variant
        assert run.data.tags["paper.row"] == variant and "paper.values" not in run.data.tags

    # the evaluation hook, called as pipelines.evaluate calls it (the trial recipe keeps the base recipe's name)
    ours = {"AP": 70.0, "AR": 76.0}
    logged = pipeline_tracking.log_paper_comparison(runs["W48"], plan.spec.recipe, ours, tracking_uri=uri)
    assert logged["paper/AP"] == 75.1 and logged["paper/AR"] == 80.4
    assert logged["delta/AP"] == pytest.approx(70.0 - 75.1) and logged["delta/AR"] == pytest.approx(76.0 - 80.4)
    assert logged["paper/AP"] != w32_row.metrics["AP"]
    w48 = client.get_run(runs["W48"])
    assert _paper_metrics(w48) == logged
    assert (w48.data.tags["paper.row"], w48.data.tags["paper.metric"], w48.data.tags["paper.status"]) == (
        W48_KEY[2], "AP", "below")
    assert pipeline_tracking.log_paper_comparison(runs["W32"], plan.spec.recipe, ours,
                                                  tracking_uri=uri)["paper/AP"] == 74.4
    for variant in ("W18", "W40"):
        assert pipeline_tracking.log_paper_comparison(runs[variant], plan.spec.recipe, ours, tracking_uri=uri) == {}
        run = client.get_run(runs[variant])
        assert _paper_metrics(run) == {} and "paper.status" not in run.data.tags, variant
        assert run.data.tags["paper.row"] == variant  # not rewritten to the recipe's row


def test_sweep_trials_in_the_paper_report_belong_to_their_own_rows(tmp_path):
    """``pipelines.report`` keys runs by their paper tags: the W48 trial counts for the W48 row, no trial (and not the
    sweep's parent run) for the W32 recipe's own row."""
    from hrnet_core.paper_tables import load_papers
    from pipelines import report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = build_plan(load_sweep("pose_width_coco"))
    runs = _sweep_trial_runs(uri, plan)
    collected = report.collect_runs(uri)
    assert {r.run_id: r.paper_key for r in collected if r.run_id in runs.values()} == {
        runs["W18"]: ("hrnet_pose_cvpr2019", "1", "W18"), runs["W32"]: W32_KEY,
        runs["W40"]: ("hrnet_pose_cvpr2019", "1", "W40"), runs["W48"]: W48_KEY}
    results = {row.row.key: row for _, _, rows in report.compare(load_papers(), collected, lambda ref, shape: None)
               for row in rows}
    assert results[W48_KEY].runs["training"].run.run_id == runs["W48"]
    assert results[W32_KEY].runs["training"].run.run_id == runs["W32"]
    # the sweep's parent run carries the recipe tag but no row: it is no training run of the recipe's rows
    parent = [r for r in collected if r.run_id not in runs.values()]
    assert [(r.source, r.recipe, r.paper_key) for r in parent] == [("sweep", plan.spec.recipe, None)]
    assert "sweep" not in report.SOURCES


def test_a_variant_quoting_values_without_a_row_gets_those_values(tmp_path):
    """A figure the tables do not encode: the values the sweep file quotes, carried by tag ``paper.values``."""
    from pipelines import mlflow_runs as pipeline_tracking

    text = MINIMAL.format(name="fig").replace('table: "1"', "table: Figure 6").replace(
        "{name: b, overrides: {model.width: 32}}", "{name: b, overrides: {model.width: 32}, paper: {AP: 70.3}}")
    plan = build_plan(load_sweep(_write(tmp_path, "fig", text)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = _sweep_trial_runs(uri, plan)
    client = pipeline_tracking.client(uri)
    b = client.get_run(runs["b"])
    assert b.data.tags["paper.table"] == "Figure 6" and b.data.tags["paper.values"] == '{"AP": 70.3}'
    assert _paper_metrics(b) == {"paper/AP": 70.3, "delta/AP": pytest.approx(-0.3)}
    logged = pipeline_tracking.log_paper_comparison(runs["b"], plan.spec.recipe, {"AP": 70.0}, tracking_uri=uri)
    assert logged == {"paper/AP": 70.3, "delta/AP": pytest.approx(-0.3)}
    assert client.get_run(runs["b"]).data.tags["paper.status"] == "reproduced"
    assert pipeline_tracking.log_paper_comparison(runs["a"], plan.spec.recipe, {"AP": 70.0}, tracking_uri=uri) == {}
    assert _paper_metrics(client.get_run(runs["a"])) == {}


def test_explicit_paper_key_and_values_override_the_recipes_row(tmp_path):
    from pipelines import report
    from pipelines import mlflow_runs as pipeline_tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = "pose_hrnet_w32_256x192_coco"
    rid = pipeline_tracking.create_run(uri, "hrnet", "r", {"recipe": recipe})
    # no paper tags on the run: the recipe's row
    assert report.log_paper_comparison(rid, recipe, {"AP": 70.0}, tracking_uri=uri)["paper/AP"] == 74.4
    assert report.log_paper_comparison(rid, recipe, {"AP": 70.0}, tracking_uri=uri,
                                       paper_key=W48_KEY)["paper/AP"] == 75.1
    assert report.log_paper_comparison(rid, recipe, {"AP": 70.0}, tracking_uri=uri,
                                       paper_key={"id": W48_KEY[0], "table": "1", "row": W48_KEY[2]},
                                       paper_values={"AP": 75.0})["paper/AP"] == 75.0
    assert report.log_paper_comparison(rid, recipe, {"AP": 70.0}, tracking_uri=uri,
                                       paper_values={"AP": 71.0}) == {"paper/AP": 71.0, "delta/AP": -1.0}
    with pytest.raises(KeyError, match="no such row"):
        report.log_paper_comparison(rid, recipe, {"AP": 70.0}, tracking_uri=uri,
                                    paper_key=("hrnet_pose_cvpr2019", "1", "no such row"))
