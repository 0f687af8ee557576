"""``hrnet report``: build the report (read runs, compare, render, plot, log to MLflow) and its command line."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hrnet_core.paper_tables import METRICS, load_papers
from hrnet_core.paper_tables import complexity as cx

from .. import mlflow_runs
from .compare import compare, summary_counts
from .plots import make_plots
from .render import render_html, render_markdown, row_cells
from .runs import REPORT_EXPERIMENT, collect_runs

DEFAULT_OUT_DIR = "reports"
DEFAULT_UI = "http://127.0.0.1:5000"


def link_base(tracking_uri: str, ui: str | None = None) -> str:
    """Base URL of the run links: ``ui`` when given (``--mlflow-ui`` / ``$HRNET_MLFLOW_UI``), else the tracking
    server itself when ``tracking_uri`` is ``http(s)://`` (an MLflow server serves its UI at the same address;
    user and password are dropped, never written into a report), else :data:`DEFAULT_UI` (``mlflow ui`` beside a
    local store)."""
    import urllib.parse

    if ui:
        return ui.rstrip("/")
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return DEFAULT_UI


@dataclass
class ReportOutput:
    """What :func:`build_report` wrote: the three report files, the plots, the summary counts and the MLflow run
    the report was logged to (``None`` without logging)."""

    markdown: Path
    html: Path
    json: Path
    plots: list[Path]
    counts: dict[str, int]
    mlflow_run_id: str | None


def build_report(out_dir: str | Path = DEFAULT_OUT_DIR, *, tracking_uri: str | None = None,
                 experiments: Sequence[str] | None = None, ui: str | None = None,
                 tolerances: Mapping[str, float] | None = None, log_to_mlflow: bool = True,
                 compute_missing: bool = True, plots: bool = True) -> ReportOutput:
    """Compare every paper row with the MLflow runs and write ``paper_comparison.{md,html,json}`` + ``plots/*.png``.

    Args:
        out_dir: output folder (created). tracking_uri: default ``$MLFLOW_TRACKING_URI`` / ``sqlite:///mlflow.db``.
        experiments: experiment names to read (default: all but ``paper-comparison``).
        ui: MLflow UI base URL for run links (default :func:`link_base` of the tracking URI).
        tolerances: per-metric overrides of :data:`DEFAULT_TOLERANCES`.
        log_to_mlflow: log the report as a run of the ``paper-comparison`` experiment.
        compute_missing: count complexity entries missing from the cache on the fly (else: shown as missing).
        plots: write the PNG plots (``False``: tables only, e.g. for a quick look).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = mlflow_runs.resolve_tracking_uri(tracking_uri)
    ui = link_base(uri, ui)
    tolerances = dict(tolerances or {})
    papers = load_papers()
    runs = collect_runs(uri, experiments)
    lookup = cx.cache_lookup(cx.load_cache(), compute_missing=compute_missing)
    results = compare(papers, runs, lookup, tolerances)
    counts = summary_counts(results)
    meta = {"generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "tracking_uri": uri, "runs": len(runs)}
    plot_dir = out / "plots"
    png_by_table = make_plots(results, plot_dir) if plots else {}
    md = out / "paper_comparison.md"
    md.write_text(render_markdown(results, meta, counts, png_by_table, tolerances, ui, out), encoding="utf-8")
    page = out / "paper_comparison.html"
    page.write_text(render_html(results, meta, counts, png_by_table, tolerances, ui, out), encoding="utf-8")
    js = out / "paper_comparison.json"
    js.write_text(json.dumps({"meta": meta, "counts": counts, "rows": [
        {"paper": p.id, "table": t.table, **row_cells(r, ui)} for p, t, rs in results for r in rs]},
        indent=1) + "\n", encoding="utf-8")
    pngs = [Path(p) for ps in png_by_table.values() for p in ps]
    run_id = None
    if log_to_mlflow:
        run_id = mlflow_runs.create_run(uri, REPORT_EXPERIMENT, f"paper-comparison-{_dt.datetime.now():%Y%m%d-%H%M%S}",
                                     tags={"source": "report", "git_commit": mlflow_runs.git_commit()})
        mlflow_runs.log_metrics(uri, run_id, counts)
        mlflow_runs.log_artifacts(uri, run_id, [md, page, js])
        if pngs:
            mlflow_runs.log_artifacts(uri, run_id, [plot_dir], artifact_path="plots")
        mlflow_runs.end_run(uri, run_id)
    return ReportOutput(md, page, js, pngs, counts, run_id)


def _parse_tolerances(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or (name not in METRICS and name != "default"):
            raise ValueError(f"--tolerance {item!r}: expected METRIC=VALUE with a known metric (e.g. AP=0.3)")
        out[name] = float(value)
    return out


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to an ``argparse`` subparsers object (``hrnet report``); dispatch with
    :func:`cmd_report`."""
    p = subparsers.add_parser(
        "report", help="paper tables vs our MLflow runs (md + html + png, logged to MLflow)",
        description="Compare every row of the papers' tables with our best MLflow run and our models' complexity; "
                    "writes <out-dir>/paper_comparison.{md,html,json} and <out-dir>/plots/*.png and logs them as a "
                    "run of the 'paper-comparison' experiment.",
        epilog="examples:\n  hrnet report\n  hrnet report --out-dir reports --no-mlflow-log\n"
               "  hrnet report --recompute-complexity   # regenerate hrnet_core/paper_tables/complexity_cache.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="output folder (default %(default)s)")
    p.add_argument("--mlflow-uri", default=None, help="tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", action="append", default=None, dest="experiments",
                   help="only read runs of this experiment (repeatable; default: all but paper-comparison)")
    p.add_argument("--mlflow-ui", default=os.environ.get("HRNET_MLFLOW_UI") or None,
                   help="MLflow UI base URL used for run links (default $HRNET_MLFLOW_UI, else the tracking server "
                        f"of an http(s) --mlflow-uri, else {DEFAULT_UI})")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=VALUE",
                   help="override a reproduction tolerance in metric units, e.g. AP=0.3 (repeatable)")
    p.add_argument("--no-mlflow-log", action="store_true", help="do not log the report to MLflow")
    p.add_argument("--recompute-complexity", action="store_true",
                   help="recount every model's params/MACs and rewrite the committed complexity cache first")
    p.add_argument("--no-compute-missing", action="store_true",
                   help="do not count models missing from the complexity cache (show them as missing)")
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``hrnet report`` from parsed arguments; returns the exit status."""
    if args.recompute_complexity:
        recs = cx.write_cache(progress=lambda m: print(m, file=sys.stderr))
        print(f"wrote {cx.CACHE_FILE} ({len(recs)} entries)")
    ui = link_base(mlflow_runs.resolve_tracking_uri(args.mlflow_uri), args.mlflow_ui)
    res = build_report(args.out_dir, tracking_uri=args.mlflow_uri, experiments=args.experiments, ui=ui,
                       tolerances=_parse_tolerances(args.tolerance), log_to_mlflow=not args.no_mlflow_log,
                       compute_missing=not args.no_compute_missing)
    print(f"wrote {res.markdown}, {res.html}, {res.json} and {len(res.plots)} plots")
    print(", ".join(f"{k} {v}" for k, v in res.counts.items()))
    if res.mlflow_run_id:
        print(f"logged to MLflow experiment '{REPORT_EXPERIMENT}', run {res.mlflow_run_id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.report [options]`` (the same options as ``hrnet report``)."""
    parser = argparse.ArgumentParser(prog="hrnet")
    sub = parser.add_subparsers(dest="command")
    add_report_parser(sub)
    args = parser.parse_args(["report", *(argv if argv is not None else sys.argv[1:])])
    try:
        return cmd_report(args)
    except ValueError as exc:
        print(f"hrnet report: error: {exc}", file=sys.stderr)
        return 2
