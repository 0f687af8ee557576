"""``hrnet report`` (issue 5): paper rows vs MLflow runs as md + html + png, the ``paper/<m>`` / ``delta/<m>`` hook,
and a real-browser rendering check (headless Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hrnet_core.paper_tables import all_rows, find_row, load_tables
from pipelines import mlflow_runs as tracking, report

CHROMIUM = "/usr/bin/chromium"
W32_ROW = ("hrnet_pose_cvpr2019", "1", "HRNet-W32 256x192 pretrain")


def _json_rows(out: report.ReportOutput) -> list[dict]:
    return json.loads(out.json.read_text())["rows"]


# --------------------------------------------------------------------------------------------------- fresh clone

@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The report of a fresh clone: no MLflow database, no runs (plots off to keep it quick)."""
    tmp = tmp_path_factory.mktemp("fresh")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = report.build_report(tmp / "reports", tracking_uri=uri, log_to_mlflow=False, plots=False)
    return tmp, out


def test_fresh_report_lists_every_row_and_nothing_ran(fresh):
    tmp, out = fresh
    assert not (tmp / "mlflow.db").exists(), "reading runs must not create a database"
    rows = _json_rows(out)
    assert len(rows) == len(all_rows())
    assert {(r["paper"], r["table"], r["row"]) for r in rows} == {row.key for row in all_rows()}
    assert {r["status"] for r in rows} == {"not run"}
    md = out.markdown.read_text()
    html_text = out.html.read_text()
    for table in load_tables():
        assert f"### {table.paper_id} Table {table.table}" in md
        assert f"id='t-{table.paper_id}-{table.table}'" in html_text
    for row in all_rows():
        assert f"| {row.row.replace('|', chr(92) + '|')} |" in md, row.key
    assert out.counts["rows_total"] == len(rows) and out.counts["rows_with_runs"] == 0


def test_fresh_report_marks_complexity_rows(fresh):
    _, out = fresh
    by_key = {(r["paper"], r["table"], r["row"]): r for r in _json_rows(out)}
    for key in (W32_ROW, ("hrnetv2_2019", "1", "HRNetV2-W48"), ("hrnetv2_2019", "14", "HRNet-W18-C"),
                ("higherhrnet_cvpr2020", "1", "HigherHRNet-W48 640"), ("hrformer_neurips2021", "6", "HRNet-W32")):
        assert by_key[key]["complexity"] == "reproduced", (key, by_key[key]["complexity"])
    seg = by_key[("hrnetv2_2019", "1", "HRNetV2-W48")]
    assert seg["params"] == "65.9 / 65.86M" and seg["gflops"].startswith("747.3 / 747.51")
    # the face-model gap is shown, not hidden
    face = by_key[("hrnetv2_2019", "4.3-text", "HRNetV2-W18")]
    assert face["complexity"] == "params differ" and face["params"] == "9.3 / 9.66M"
    assert "9.3" in out.markdown.read_text() and "params differ" in out.markdown.read_text()
    assert by_key[("hrnetv2_2019", "5", "HRNetV2p-W48")]["complexity"].startswith("not comparable")
    assert out.counts["complexity_reproduced"] >= 25


# --------------------------------------------------------------------------------------------------- with runs

@pytest.fixture(scope="module")
def with_runs(tmp_path_factory):
    """A tracking store with a smoke training run of the W32 recipe, an official-checkpoint evaluation of the same
    recipe and an MPII run; then the full report (plots, MLflow logging)."""
    tmp = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tags = {"recipe": "pose_hrnet_w32_256x192_coco", "task": "pose_topdown", "paper.id": W32_ROW[0],
            "paper.table": W32_ROW[1], "paper.row": W32_ROW[2]}
    train_id = tracking.create_run(uri, "hrnet", "w32-smoke", tags={**tags, "profile": "smoke", "source": "training"})
    train_metrics = {"AP": 70.0, "AP50": 88.0, "AR": 75.0, "loss": 0.001}
    tracking.log_metrics(uri, train_id, train_metrics)
    logged = tracking.log_paper_comparison(train_id, "pose_hrnet_w32_256x192_coco", train_metrics, tracking_uri=uri)
    official_id = tracking.create_run(uri, "hrnet", "w32-official", tags={**tags, "source": "official-checkpoint"})
    official_metrics = {"AP": 74.3, "AP50": 90.4}
    tracking.log_metrics(uri, official_id, official_metrics)
    tracking.log_paper_comparison(official_id, "pose_hrnet_w32_256x192_coco", official_metrics, tracking_uri=uri)
    mpii_id = tracking.create_run(uri, "hrnet", "mpii", tags={"recipe": "pose_hrnet_w32_256x256_mpii",
                                                               "source": "training"})
    mpii_metrics = {"PCKh": 89.0, "PCKh/Head": 96.0}
    tracking.log_metrics(uri, mpii_id, mpii_metrics)
    tracking.log_paper_comparison(mpii_id, "pose_hrnet_w32_256x256_mpii", mpii_metrics, tracking_uri=uri)
    # a sweep trial of the W32 recipe with width 48, tagged with the W48 row: it belongs to that row only
    trial_id = tracking.create_run(uri, "sweeps", "trial", tags={
        "recipe": "pose_hrnet_w32_256x192_coco", "source": "training", "paper.id": "hrnet_pose_cvpr2019",
        "paper.table": "1", "paper.row": "HRNet-W48 256x192 pretrain"})
    tracking.log_metrics(uri, trial_id, {"AP": 75.0})
    out = report.build_report(tmp / "reports", tracking_uri=uri, log_to_mlflow=True)
    return {"tmp": tmp, "uri": uri, "train": train_id, "official": official_id, "mpii": mpii_id, "trial": trial_id,
            "logged": logged, "out": out}


def test_hook_logs_paper_and_delta_metrics_and_tags(with_runs):
    client = tracking.client(with_runs["uri"])
    assert with_runs["logged"]["paper/AP"] == 74.4
    assert with_runs["logged"]["delta/AP"] == pytest.approx(-4.4)
    run = client.get_run(with_runs["train"])
    m, t = run.data.metrics, run.data.tags
    assert m["paper/AP"] == 74.4 and m["delta/AP"] == pytest.approx(-4.4)
    assert m["paper/AR"] == 79.8 and m["delta/AR"] == pytest.approx(75.0 - 79.8)
    assert m["paper/APM"] == 70.8 and "delta/APM" not in m  # paper value logged even when not measured
    assert (t["paper.id"], t["paper.table"], t["paper.row"]) == W32_ROW
    assert t["paper.metric"] == "AP" and t["paper.status"] == "below"
    official = client.get_run(with_runs["official"]).data
    assert official.tags["paper.status"] == "reproduced" and official.metrics["delta/AP"] == pytest.approx(-0.1)
    mpii = client.get_run(with_runs["mpii"]).data.metrics
    assert mpii["paper/PCKh"] == 90.3 and mpii["delta/PCKh/Head"] == pytest.approx(96.0 - 97.1)


def test_hook_for_a_recipe_without_a_row_logs_nothing(with_runs):
    assert tracking.log_paper_comparison(with_runs["train"], "no_such_recipe", {"AP": 1.0},
                                         tracking_uri=with_runs["uri"]) == {}


def test_error_metrics_line_up_with_accuracy_runs():
    row = find_row("hrnetv2_2019", "14", "HRNet-W18-C")
    out = report.comparison_metrics(row, {"top1": 77.0})
    assert out["paper/top1"] == pytest.approx(76.9) and out["delta/top1"] == pytest.approx(0.1)
    assert out["paper/top5_err"] == 6.5
    assert report.judge("NME", 4.60, 4.64) == "reproduced" and report.judge("NME", 4.60, 4.70) == "below"
    assert report.judge("AP", 74.4, 74.0) == "reproduced" and report.judge("AP", 74.4, 73.8) == "below"


def test_report_shows_runs_beside_their_rows(with_runs):
    out = with_runs["out"]
    by_key = {(r["paper"], r["table"], r["row"]): r for r in _json_rows(out)}
    row = by_key[W32_ROW]
    assert row["ours"] == "70.00" and row["ours_delta"] == "-4.40" and row["ours_profile"] == "smoke"
    assert row["official"] == "74.30" and row["official_delta"] == "-0.10"
    assert row["status"] == "below (profile smoke)"
    assert row["ours_run"] == with_runs["train"] and with_runs["train"] in row["ours_link"]
    # the HRFormer paper's HRNet-W32 row names the same recipe and shows the same run
    assert by_key[("hrformer_neurips2021", "3", "HRNet-W32 256x192")]["ours_run"] == with_runs["train"]
    w48 = by_key[("hrnet_pose_cvpr2019", "1", "HRNet-W48 256x192 pretrain")]
    assert w48["ours_run"] == with_runs["trial"] and w48["ours"] == "75.00" and w48["status"] == "reproduced"
    mpii = by_key[("hrnet_pose_cvpr2019", "7", "HRNet-W32 single-scale")]
    assert mpii["ours"] == "89.00" and mpii["status"] == "below"
    md = out.markdown.read_text()
    assert f"[{with_runs['train'][:8]}](" in md and "-4.40" in md
    html_text = out.html.read_text()
    assert f"href='http://127.0.0.1:5000/#/experiments/" in html_text and with_runs["official"] in html_text
    assert out.counts["rows_with_runs"] >= 3


def test_report_writes_plots_and_logs_itself_to_mlflow(with_runs):
    out = with_runs["out"]
    names = {p.name for p in out.plots}
    assert "hrnet_pose_cvpr2019_T1_paper_vs_ours.png" in names
    assert "hrnet_pose_cvpr2019_T1_accuracy_vs_gflops.png" in names
    assert "complexity_paper_vs_ours.png" in names
    for p in out.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert "plots/hrnet_pose_cvpr2019_T1_paper_vs_ours.png" in out.html.read_text()
    client = tracking.client(with_runs["uri"])
    exp = client.get_experiment_by_name(report.REPORT_EXPERIMENT)
    run = client.get_run(out.mlflow_run_id)
    assert run.info.experiment_id == exp.experiment_id and run.info.status == "FINISHED"
    assert run.data.metrics["rows_with_runs"] == out.counts["rows_with_runs"]
    artifacts = {a.path for a in client.list_artifacts(out.mlflow_run_id)}
    assert {"paper_comparison.md", "paper_comparison.html", "paper_comparison.json", "plots"} <= artifacts
    # the report's own run is not read back as a paper run
    assert all(r.run_id != out.mlflow_run_id for r in report.collect_runs(with_runs["uri"]))


def test_cli_main(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert report.main(["--out-dir", str(tmp_path / "r"), "--mlflow-uri", uri, "--no-mlflow-log",
                        "--tolerance", "AP=0.3"]) == 0
    assert (tmp_path / "r" / "paper_comparison.html").is_file()
    assert report.main(["--out-dir", str(tmp_path / "r"), "--mlflow-uri", uri, "--tolerance", "XYZ=1"]) == 2


# --------------------------------------------------------------------------------------------------- browser

@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium is not installed (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(with_runs, tmp_path):
    import numpy as np
    from PIL import Image

    page = with_runs["out"].html.resolve()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"]
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=180)
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape == (2000, 1400, 3)
    assert img.std() > 10.0, "blank screenshot"
    assert len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 20, "screenshot has almost no distinct colours"
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=180).stdout
    assert dom.count('class="paper-table"') == len(load_tables())
    assert 'data-row="HRNet-W32 256x192 pretrain"' in dom and "below (profile smoke)" in dom
    assert "<img" in dom and "complexity_paper_vs_ours.png" in dom
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
