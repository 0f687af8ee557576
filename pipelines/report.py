"""``hrnet report``: every paper-table row beside our best MLflow run, as Markdown + static HTML + PNG, logged to MLflow.

For each row of :mod:`hrnet_core.paper_tables` the report shows

* the paper's value of the table's primary metric (all printed metrics in a compact column),
* our best run of the row - one column for our training (``source=training``) and one for an officially released
  checkpoint run through our evaluator (``source=official-checkpoint``) - with the delta (ours - paper) and a link
  to the MLflow run,
* a status: ``reproduced`` (within the stated tolerance, or better), ``below``, ``not run``; a run made with a
  profile (e.g. ``smoke``: tiny model on synthetic data) says so (``below (profile smoke)``),
* the row's params / GFLOPs beside our model's, converted to the row's counting convention, with the complexity
  status of :func:`hrnet_core.paper_tables.complexity.check_row` (reproduced: params round to the printed value and
  GFLOPs within 2 %).

A run belongs to a row when its tags ``paper.id`` / ``paper.table`` / ``paper.row`` name the row, or when its
``recipe`` tag is the row's recipe and its paper tags name one of that recipe's rows (or none) - so the HRNet rows the
HRFormer paper quotes show the same run, while a sweep trial of the recipe tagged with another row does not.

Runs are read with ``MlflowClient`` from every experiment except ``paper-comparison`` (default tracking URI
``sqlite:///mlflow.db`` in the working directory, or ``$MLFLOW_TRACKING_URI`` / ``--mlflow-uri``). The report itself is
logged as a run of the ``paper-comparison`` experiment (artifacts: md, html, json, plots; metrics: row counts).

:func:`log_paper_comparison` is the hook the training / evaluation pipeline calls after an evaluation
(``pipelines.tracking.log_paper_comparison`` delegates here): it logs ``paper/<m>`` for every metric of the run's
paper row, ``delta/<m>`` = ours - paper for every metric the run measured, and the ``paper.*`` tags. The run's own
``paper.*`` tags (a sweep trial's row, or its ``paper.values``) take precedence over the recipe's row, so a W48 variant
of a W32 recipe is compared with the W48 row, and a variant that is no paper row with nothing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnet_core.paper_tables import (
    ERROR_EQUIVALENTS, GFLOPS_CONVENTIONS, METRICS, PARAMS_UNITS, Paper, PaperRow, PaperTable, find_row, load_papers,
    row_for_recipe,
)
from hrnet_core.paper_tables import complexity as cx

REPORT_EXPERIMENT = "paper-comparison"
DEFAULT_OUT_DIR = "reports"
DEFAULT_UI = "http://127.0.0.1:5000"
#: Absolute tolerance (metric units, i.e. percent points) within which a run counts as reproducing the paper.
#: Lower-is-better metrics (NME, FR, errors) use the same rule mirrored. Override per metric: ``--tolerance AP=0.3``.
DEFAULT_TOLERANCES: Mapping[str, float] = {"default": 0.5, "NME": 0.05, "FR_0.08": 0.1, "FR_0.1": 0.1,
                                           "top1": 0.3, "top5": 0.3, "top1_err": 0.3, "top5_err": 0.3}
SOURCES = ("training", "official-checkpoint")


# ------------------------------------------------------------------------------------------------ metric helpers

def tolerance_for(metric: str, tolerances: Mapping[str, float] | None = None) -> float:
    """Tolerance of ``metric`` (exact name, then its family before ``/``, then ``default``)."""
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    return float(tol.get(metric, tol.get(metric.split("/")[0], tol["default"])))


def run_value(metric: str, run_metrics: Mapping[str, float]) -> float | None:
    """The value of paper metric ``metric`` in a run: the same name, or ``100 - top1`` for ``top1_err`` etc."""
    if metric in run_metrics:
        return float(run_metrics[metric])
    twin = ERROR_EQUIVALENTS.get(metric)
    if twin is not None and twin in run_metrics:
        return 100.0 - float(run_metrics[twin])
    return None


def row_metric(row: PaperRow, table: PaperTable | None = None) -> str | None:
    """The metric a row is judged on: the table's primary metric if the row has it, else the row's first metric."""
    if table is not None and table.primary_metric in row.metrics:
        return table.primary_metric
    return next(iter(row.metrics), None)


def judge(metric: str, paper: float, ours: float, tolerances: Mapping[str, float] | None = None) -> str:
    """``reproduced`` when ours is at most the tolerance worse than the paper (or better), else ``below``."""
    tol = tolerance_for(metric, tolerances)
    hib = METRICS[metric].higher_is_better
    gap = (paper - ours) if hib else (ours - paper)
    return "reproduced" if gap <= tol + 1e-9 else "below"


# ------------------------------------------------------------------------------------------------ MLflow hook

def comparison_metrics(row: PaperRow, metrics: Mapping[str, float]) -> dict[str, float]:
    """``paper/<m>`` for every metric of ``row`` and ``delta/<m>`` (ours - paper) for those ``metrics`` measured.

    Error metrics (``top1_err``) are logged under their accuracy twin (``paper/top1 = 100 - err``) when the run logs
    the accuracy, so the names line up with the run's own metrics.
    """
    return _comparison_from_values(row.metrics, metrics)


def _comparison_from_values(paper_values: Mapping[str, float], metrics: Mapping[str, float]) -> dict[str, float]:
    """:func:`comparison_metrics` for a plain ``{metric: paper value}`` mapping (a row's or a sweep variant's)."""
    out: dict[str, float] = {}
    for name, paper_value in paper_values.items():
        twin = ERROR_EQUIVALENTS.get(name)
        if twin is not None and twin in metrics and name not in metrics:
            name, paper_value = twin, 100.0 - paper_value
        out[f"paper/{name}"] = float(paper_value)
        ours = metrics.get(name)
        if ours is not None and isinstance(ours, (int, float)) and math.isfinite(float(ours)):
            out[f"delta/{name}"] = float(ours) - float(paper_value)
    return out


def resolve_row(recipe_name: str, paper_ref: Mapping[str, str] | None = None) -> PaperRow | None:
    """The paper row of a recipe: ``paper_ref`` (``{id, table, row}``) if given, else the recipe's own ``paper``
    block (when ``hrnet_core.recipes`` loads it and the row exists), else the primary row of :func:`row_for_recipe`.
    ``None`` when nothing maps.

    Raises:
        KeyError: ``paper_ref`` names an unknown row.
    """
    if paper_ref:
        return find_row(paper_ref["id"], str(paper_ref["table"]), paper_ref["row"])
    try:
        from hrnet_core.recipes import load_recipe

        paper = load_recipe(recipe_name).paper
    except Exception:  # noqa: BLE001 - recipes package absent or not a recipe name: fall back to the mapping
        paper = None
    if paper is not None:
        try:
            return find_row(paper.id, str(paper.table), paper.row)
        except KeyError:
            pass
    return row_for_recipe(recipe_name)


#: A paper row as ``(paper_id, table, row)`` - the values of the MLflow tags ``paper.id`` / ``paper.table`` /
#: ``paper.row`` (a mapping ``{id, table, row}`` is accepted as well).
PaperKey = tuple[str, str, str]
#: MLflow tag with a sweep variant's own paper values (JSON ``{metric: value}``), see ``sweeps.tracking``.
PAPER_VALUES_TAG = "paper.values"


def log_paper_comparison(run_id: str, recipe_name: str, metrics: Mapping[str, float],
                         tracking_uri: str | None = None,
                         paper_key: PaperKey | Mapping[str, str] | None = None,
                         paper_values: Mapping[str, float] | None = None,
                         tolerances: Mapping[str, float] | None = None, *,
                         paper_ref: Mapping[str, str] | None = None) -> dict[str, float]:
    """Log the paper's values next to ours in MLflow run ``run_id``.

    Logs ``paper/<m>`` for every paper value, ``delta/<m>`` (ours - paper) for every one of them measured in
    ``metrics``, and tags ``paper.id``, ``paper.table``, ``paper.row`` (when the numbers come from a row),
    ``paper.metric`` (the judged metric) and ``paper.status`` (``reproduced`` / ``below`` within
    :data:`DEFAULT_TOLERANCES`).

    Where the paper's numbers come from, first match wins:

    1. ``paper_key`` / ``paper_values`` given explicitly: the key's row (its metrics updated with ``paper_values``),
       or ``paper_values`` alone (a key that names no row is then kept as the run's ``paper.*`` tags).
    2. The run's own tags, when its ``recipe`` tag is ``recipe_name`` (or absent) and it carries ``paper.id`` /
       ``paper.table`` / ``paper.row``: the row they name, else the values of tag ``paper.values`` (a sweep variant
       that quotes a figure), else **nothing**. This is how a sweep trial - a W48 or 2x-heatmap variant of a W32
       recipe, tagged by ``sweeps.tracking.trial_paper_tags`` - is compared with its own row, and a variant that
       is no paper row gets no ``paper/`` numbers instead of the base recipe's.
    3. The recipe's row (:func:`resolve_row`): its own ``paper`` block, else the primary row of ``row_for_recipe``.

    Args:
        run_id: the MLflow run. recipe_name: its recipe (``recipe`` tag). metrics: the run's evaluation metrics
            (paper metric names, percent). tracking_uri: default ``$MLFLOW_TRACKING_URI`` / ``sqlite:///mlflow.db``.
        paper_key: explicit row ``(id, table, row)`` or ``{id, table, row}``.
        paper_values: explicit paper values ``{metric: value}`` (percent, as printed).
        tolerances: per-metric tolerances for ``paper.status`` (see :func:`tolerance_for`).
        paper_ref: older spelling of ``paper_key`` (a ``{id, table, row}`` mapping).

    Returns:
        The logged metrics (``{}`` when there are no paper values for the run: nothing is logged then).

    Raises:
        KeyError: an explicit ``paper_key`` names an unknown row and no ``paper_values`` are given.
    """
    from . import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    key = paper_key if paper_key is not None else paper_ref
    if key is None and not paper_values:
        run_tags = tracking.client(uri).get_run(run_id).data.tags
        source = _paper_source_from_tags(run_tags, recipe_name)
    else:
        source = _explicit_paper_source(key, paper_values)
    if source is None:
        row = resolve_row(recipe_name)
        source = (row.key, row, {}) if row is not None else (None, None, {})
    key, row, values = source
    paper = {**(row.metrics if row is not None else {}), **values}
    if not paper:
        return {}
    out = _comparison_from_values(paper, metrics)
    tags: dict[str, Any] = {}
    if key is not None:
        tags.update({"paper.id": key[0], "paper.table": key[1], "paper.row": key[2]})
    m = _judged_metric(paper, row)
    ours = None if m is None else run_value(m, metrics)
    if m is not None and ours is not None:
        tags["paper.metric"] = m
        tags["paper.status"] = judge(m, paper[m], ours, tolerances)
    tracking.log_metrics(uri, run_id, out)
    if tags:
        tracking.set_tags(uri, run_id, tags)
    return out


#: (row key or None, row or None, extra paper values) - where :func:`log_paper_comparison` takes the paper's numbers.
_PaperSource = tuple[PaperKey | None, PaperRow | None, dict[str, float]]


def _as_paper_key(key: PaperKey | Mapping[str, str] | Sequence[str]) -> PaperKey:
    if isinstance(key, Mapping):
        return (str(key["id"]), str(key["table"]), str(key["row"]))
    paper_id, table, row = key
    return (str(paper_id), str(table), str(row))


def _find_row_or_none(key: PaperKey) -> PaperRow | None:
    try:
        return find_row(*key)
    except KeyError:
        return None


def _explicit_paper_source(key: PaperKey | Mapping[str, str] | None,
                           values: Mapping[str, float] | None) -> _PaperSource:
    """(key, row, extra values) from explicit arguments; a key naming no row needs values (else ``KeyError``)."""
    vals = {str(k): float(v) for k, v in (values or {}).items()}
    if key is None:
        return None, None, vals
    k = _as_paper_key(key)
    row = _find_row_or_none(k)
    if row is None and not vals:
        find_row(*k)  # raises the KeyError that lists the valid ids
    return k, row, vals


def _key_from_tags(tags: Mapping[str, str]) -> PaperKey | None:
    """``(paper.id, paper.table, paper.row)`` of a run's tags; ``None`` when one of them is missing."""
    parts = [tags.get(f"paper.{p}") for p in ("id", "table", "row")]
    if not all(p and p not in ("None", "none", "null") for p in parts):
        return None
    return (parts[0], parts[1], parts[2])  # type: ignore[return-value]


def _paper_source_from_tags(tags: Mapping[str, str], recipe_name: str) -> _PaperSource | None:
    """(key, row, values) from a run's ``paper.*`` tags; ``None`` when they do not describe this recipe's run."""
    if tags.get("recipe") not in (None, "", recipe_name):
        return None  # the caller evaluated another recipe into this run: its row decides
    key = _key_from_tags(tags)
    if key is None:
        return None
    return key, _find_row_or_none(key), _values_from_tag(tags.get(PAPER_VALUES_TAG))


def paper_values_from_tags(tags: Mapping[str, str], quoted: Mapping[str, float] | None = None) -> dict[str, float]:
    """The paper's values for a run tagged ``paper.id`` / ``paper.table`` / ``paper.row`` (e.g. a sweep trial).

    Every metric of the row the tags name (when ``hrnet_core.paper_tables`` has it), updated with ``quoted`` (else
    with the run's ``paper.values`` tag). Empty when the tags name no row and quote nothing - never the values of a
    recipe's default row. Percent, as printed in the paper.
    """
    key = _key_from_tags(tags)
    row = _find_row_or_none(key) if key is not None else None
    extra = _values_from_tag(tags.get(PAPER_VALUES_TAG)) if quoted is None else \
        {str(k): float(v) for k, v in quoted.items()}
    return {**(row.metrics if row is not None else {}), **extra}


def _values_from_tag(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        data = json.loads(text)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        import logging

        logging.getLogger(__name__).warning("ignoring malformed MLflow tag %s=%r", PAPER_VALUES_TAG, text)
        return {}


def _judged_metric(paper: Mapping[str, float], row: PaperRow | None) -> str | None:
    """The row's judged metric (:func:`row_metric`) when there is a row, else the first known metric quoted."""
    if row is not None:
        table = next(t for t in load_papers_by_id()[row.paper_id].tables if t.table == row.table)
        m = row_metric(row, table)
        if m is not None and m in paper:
            return m
    return next((m for m in paper if m in METRICS), None)


def load_papers_by_id() -> dict[str, Paper]:
    return {p.id: p for p in load_papers()}


# ------------------------------------------------------------------------------------------------ runs

@dataclass(frozen=True)
class RunInfo:
    """The parts of an MLflow run the report needs."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    source: str
    recipe: str | None
    profile: str | None
    paper_key: tuple[str, str, str] | None
    metrics: Mapping[str, float]
    start_time: int

    def link(self, ui: str) -> str:
        return f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def collect_runs(tracking_uri: str, experiments: Sequence[str] | None = None) -> list[RunInfo]:
    """Finished or running runs tagged with a recipe or a paper row, from ``experiments`` (default: all but
    ``paper-comparison``). An absent sqlite database means no runs (nothing is created)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        return []
    from . import tracking

    client = tracking.client(tracking_uri)
    exps = [e for e in client.search_experiments() if e.name != REPORT_EXPERIMENT
            and (experiments is None or e.name in experiments)]
    if not exps:
        return []
    runs: list[RunInfo] = []
    token = None
    while True:
        page = client.search_runs([e.experiment_id for e in exps], max_results=1000, page_token=token)
        for r in page:
            tags = r.data.tags
            key = None
            if tags.get("paper.id") and tags.get("paper.table") and tags.get("paper.row"):
                key = (tags["paper.id"], tags["paper.table"], tags["paper.row"])
            if key is None and not tags.get("recipe"):
                continue
            profile = tags.get("profile")
            runs.append(RunInfo(
                run_id=r.info.run_id, experiment_id=r.info.experiment_id, run_name=r.info.run_name or "",
                status=r.info.status, source=tags.get("source") or "training", recipe=tags.get("recipe"),
                profile=None if profile in (None, "", "None", "none", "null") else profile, paper_key=key,
                metrics=dict(r.data.metrics), start_time=int(r.info.start_time or 0)))
        token = page.token
        if not token:
            break
    return runs


@dataclass
class RunResult:
    """Our best run of one row for one source."""

    run: RunInfo
    metric: str | None
    ours: float | None
    delta: float | None
    status: str


@dataclass
class RowResult:
    row: PaperRow
    metric: str | None
    runs: dict[str, RunResult] = field(default_factory=dict)
    complexity: cx.ComplexityCheck | None = None

    @property
    def status(self) -> str:
        """Accuracy status: the training run's, else the official checkpoint's, else ``not run``."""
        for source in SOURCES:
            if source in self.runs:
                return self.runs[source].status
        return "not run"


def best_run(row: PaperRow, metric: str | None, candidates: Iterable[RunInfo],
             tolerances: Mapping[str, float] | None = None) -> RunResult | None:
    """Best of ``candidates`` on ``metric`` (paper-recipe runs before profile runs; then by value; then newest)."""
    cands = list(candidates)
    if not cands:
        return None
    hib = METRICS[metric].higher_is_better if metric else True

    def score(r: RunInfo) -> tuple:
        v = run_value(metric, r.metrics) if metric else None
        return (r.profile is None, v is not None, (v if hib else -v) if v is not None else 0.0, r.start_time)

    run = max(cands, key=score)
    ours = run_value(metric, run.metrics) if metric else None
    if metric is None or ours is None:
        status = "ran (no paper value)" if metric is None else f"ran (no {metric})"
        return RunResult(run, metric, ours, None, status)
    paper = row.metrics[metric]
    status = judge(metric, paper, ours, tolerances)
    if run.profile:
        status = f"{status} (profile {run.profile})"
    return RunResult(run, metric, ours, ours - paper, status)


def compare(papers: Sequence[Paper], runs: Sequence[RunInfo], lookup, tolerances: Mapping[str, float] | None = None
            ) -> list[tuple[Paper, PaperTable, list[RowResult]]]:
    """Row results for every table of every paper."""
    recipe_rows: dict[str, set[tuple[str, str, str]]] = {}
    for paper in papers:
        for table in paper.tables:
            for row in table.rows:
                if row.recipe:
                    recipe_rows.setdefault(row.recipe, set()).add(row.key)

    def belongs(run: RunInfo, row: PaperRow) -> bool:
        if run.paper_key == row.key:
            return True
        # by recipe only when the run reproduces the recipe's own rows (not, e.g., a sweep trial with other overrides
        # tagged with another row)
        return bool(row.recipe) and run.recipe == row.recipe and (
            run.paper_key is None or run.paper_key in recipe_rows.get(row.recipe, set()))

    out = []
    for paper in papers:
        for table in paper.tables:
            results = []
            for row in table.rows:
                metric = row_metric(row, table)
                res = RowResult(row, metric, complexity=cx.check_row(row, lookup))
                mine = [r for r in runs if belongs(r, row)]
                for source in SOURCES:
                    best = best_run(row, metric, [r for r in mine if r.source == source], tolerances)
                    if best is not None:
                        res.runs[source] = best
                results.append(res)
            out.append((paper, table, results))
    return out


# ------------------------------------------------------------------------------------------------ formatting

def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _fmt_signed(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def _nd(value: float) -> int:
    return max(1, len(repr(float(value)).split(".")[1].rstrip("0")))


def _paper_metrics_text(row: PaperRow) -> str:
    return ", ".join(f"{k} {v:.{_nd(v)}f}" for k, v in row.metrics.items()) or "-"


def _complexity_cells(res: RowResult) -> tuple[str, str, str]:
    c = res.complexity
    row = res.row
    if c is None or c.status == "none":
        return "-", "-", "-"
    unit = {"M": "M", "Mi": "Mi"}.get(row.params_unit or "M", "M")
    p = f"{_fmt(c.paper_params, _nd(c.paper_params) if c.paper_params else 1)} / " \
        f"{_fmt(c.ours_params, 2)}{unit if c.ours_params is not None else ''}"
    g = f"{_fmt(c.paper_gflops, _nd(c.paper_gflops) if c.paper_gflops else 1)} / {_fmt(c.ours_gflops, 2)}"
    if c.gflops_rel_diff is not None:
        g += f" ({c.gflops_rel_diff:+.1%})"
    if row.gflops_convention:
        g += f" [{row.gflops_convention}]"
    status = c.status + (f": {c.detail}" if c.detail else "")
    return p, g, status


def _rows_for_output(res: RowResult, ui: str) -> dict[str, str]:
    row = res.row
    d: dict[str, str] = {
        "row": row.row, "method": row.method, "backbone": row.backbone or "-", "role": row.role,
        "dataset": f"{row.dataset} {row.split}", "input": row.input_size or "-",
        "metric": res.metric or "-",
        "paper_value": "-" if res.metric is None else f"{row.metrics[res.metric]:.{_nd(row.metrics[res.metric])}f}",
        "paper_all": _paper_metrics_text(row),
        "recipe": row.recipe or (row.recipe_status or "-"),
    }
    for source, prefix in (("training", "ours"), ("official-checkpoint", "official")):
        rr = res.runs.get(source)
        d[prefix] = "-" if rr is None or rr.ours is None else f"{rr.ours:.2f}"
        d[f"{prefix}_delta"] = "-" if rr is None else _fmt_signed(rr.delta)
        d[f"{prefix}_run"] = "" if rr is None else rr.run.run_id
        d[f"{prefix}_link"] = "" if rr is None else rr.run.link(ui)
        d[f"{prefix}_profile"] = "" if rr is None or not rr.run.profile else rr.run.profile
    d["status"] = res.status
    d["params"], d["gflops"], d["complexity"] = _complexity_cells(res)
    notes = [row.note] if row.note else []
    if row.model_status and (res.complexity is None or res.complexity.status != "no model"):
        notes.append(row.model_status)
    d["note"] = " ".join(notes)
    d["sources"] = "; ".join(row.sources)
    return d


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_counts(results: Sequence[tuple[Paper, PaperTable, list[RowResult]]]) -> dict[str, int]:
    rows = [r for _, _, rs in results for r in rs]
    cstat = [r.complexity.status for r in rows if r.complexity is not None]
    return {
        "rows_total": len(rows),
        "rows_hrnet_family": sum(r.row.role != "competitor" for r in rows),
        "rows_with_recipe": sum(r.row.recipe is not None for r in rows),
        "rows_with_runs": sum(bool(r.runs) for r in rows),
        "rows_reproduced": sum(r.status == "reproduced" for r in rows),
        "rows_below": sum(r.status.startswith("below") for r in rows),
        "complexity_checked": sum(s not in ("none", "context") for s in cstat),
        "complexity_reproduced": sum(s == "reproduced" for s in cstat),
        "complexity_differs": sum("differ" in s for s in cstat),
    }


COLUMNS = [("row", "Row"), ("method", "Method"), ("backbone", "Backbone"), ("role", "Role"), ("dataset", "Data"),
           ("input", "Input"), ("metric", "Metric"), ("paper_value", "Paper"), ("ours", "Ours (training)"),
           ("ours_delta", "Δ"), ("official", "Official ckpt"), ("official_delta", "Δ official"),
           ("status", "Status"), ("run", "MLflow run"), ("params", "Params paper / ours"),
           ("gflops", "GFLOPs paper / ours [convention]"), ("complexity", "Complexity"),
           ("paper_all", "All paper metrics"), ("recipe", "Recipe"), ("note", "Notes")]


def _header_lines(meta: Mapping[str, Any], counts: Mapping[str, int], tolerances: Mapping[str, float]) -> list[str]:
    tol = ", ".join(f"{k} ±{v}" for k, v in {**DEFAULT_TOLERANCES, **tolerances}.items())
    return [
        f"Generated {meta['generated']} from MLflow `{meta['tracking_uri']}` "
        f"({meta['runs']} tagged runs); {counts['rows_total']} paper rows "
        f"({counts['rows_hrnet_family']} HRNet-family, {counts['rows_with_recipe']} with a recipe).",
        "",
        f"**Accuracy**: paper value of the table's primary metric vs our best run of the row (tags `paper.id/table/row` "
        f"or the row's `recipe`); Δ = ours - paper. *reproduced* = at most the tolerance worse than the paper "
        f"(or better); tolerances in metric units (percent points): {tol}. *not run* = no run yet. A run made with a "
        f"profile (e.g. `smoke`: tiny model on synthetic data) is marked as such and is not a reproduction.",
        "",
        "**Complexity**: our model's trainable parameters and MACs (FlopCounterMode / 2, cached in "
        "`hrnet_core/paper_tables/complexity_cache.yaml`) in each row's unit and convention; *reproduced* = params "
        f"round to the printed value and GFLOPs within {cx.GFLOPS_TOLERANCE:.0%}. Conventions: "
        + "; ".join(f"`{k}` = {v}" for k, v in GFLOPS_CONVENTIONS.items())
        + ". Params units: " + ", ".join(f"`{k}` = {v:g}" for k, v in PARAMS_UNITS.items()) + ".",
        "",
        "**Summary**: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + ".",
    ]


def render_markdown(results, meta: Mapping[str, Any], counts: Mapping[str, int], plots: Mapping[str, list[str]],
                    tolerances: Mapping[str, float], ui: str, base: Path) -> str:
    lines = ["# Paper vs reproduction", ""] + _header_lines(meta, counts, tolerances) + [""]
    current = None
    for paper, table, rows in results:
        if paper.id != current:
            current = paper.id
            lines += [f"## {paper.title} (`{paper.id}`)", "", f"{paper.venue}; transcribed from `{paper.text_file}`."]
            if paper.note:
                lines += ["", f"> {paper.note}"]
            lines.append("")
        lines += [f"### {paper.id} Table {table.table}", "", f"*{_md_escape(table.caption)}*", ""]
        if table.note:
            lines += [f"> {_md_escape(table.note)}", ""]
        lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for res in rows:
            d = _rows_for_output(res, ui)
            cells = []
            for key, _ in COLUMNS:
                if key == "run":
                    links = [f"[{d[p + '_run'][:8]}]({d[p + '_link']})" for p in ("ours", "official") if d[p + "_run"]]
                    cells.append(" ".join(links) or "-")
                elif key in ("ours", "official") and d[f"{key}_profile"]:
                    cells.append(f"{d[key]} ({d[key + '_profile']})")
                else:
                    cells.append(_md_escape(d[key]) or "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for png in plots.get(f"{paper.id}/{table.table}", []):
            lines += [f"![{paper.id} Table {table.table}]({Path(png).relative_to(base).as_posix()})", ""]
    if plots.get("overall"):
        lines += ["## Overall plots", ""]
        for png in plots["overall"]:
            lines += [f"![overall]({Path(png).relative_to(base).as_posix()})", ""]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:26px} h2{font-size:21px;margin-top:36px;border-bottom:2px solid #ddd} h3{font-size:17px;margin-top:26px}
table.paper-table{border-collapse:collapse;font-size:12px;margin:8px 0 14px 0}
table.paper-table th{background:#33475b;color:#fff;padding:4px 6px;text-align:left;position:sticky;top:0}
table.paper-table td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
tr.competitor td{color:#777;background:#fafafa}
td.st-reproduced{background:#c8efc8} td.st-below{background:#f8d0c8} td.st-not-run{background:#eee}
td.st-differ{background:#fbe3b5} td.st-ok{background:#c8efc8} td.st-nc{background:#e3e3f5}
.caption{font-style:italic} .note{color:#555;border-left:3px solid #ccc;padding-left:8px}
img.plot{max-width:900px;border:1px solid #ddd;margin:6px 0}
.summary{background:#f4f6f8;padding:10px;border-radius:4px}
nav ul{columns:4;font-size:13px} table.paper-table td:last-child{min-width:260px}
"""


def _status_class(status: str) -> str:
    if status.startswith("reproduced"):
        return "st-reproduced"
    if status.startswith("below"):
        return "st-below"
    if status == "not run":
        return "st-not-run"
    return ""


def _complexity_class(status: str) -> str:
    if status.startswith("reproduced"):
        return "st-ok"
    if "differ" in status or status.startswith("convention"):
        return "st-differ"
    if status.startswith(("not comparable", "no model", "no paper")):
        return "st-nc"
    return ""


def render_html(results, meta: Mapping[str, Any], counts: Mapping[str, int], plots: Mapping[str, list[str]],
                tolerances: Mapping[str, float], ui: str, base: Path) -> str:
    e = html.escape
    header = "".join(f"<p>{e(line)}</p>" for line in _header_lines(meta, counts, tolerances) if line)
    header = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", header)
    header = re.sub(r"`(.+?)`", r"<code>\1</code>", header)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Paper vs reproduction</title>",
             f"<style>{_CSS}</style></head><body>", "<h1>Paper vs reproduction</h1>",
             f"<div class='summary' id='summary'>{header}</div>", "<nav><ul>"]
    for paper, table, _ in results:
        parts.append(f"<li><a href='#t-{e(paper.id)}-{e(table.table)}'>{e(paper.id)} Table {e(table.table)}</a></li>")
    parts.append("</ul></nav>")
    current = None
    for paper, table, rows in results:
        if paper.id != current:
            current = paper.id
            parts.append(f"<h2 id='p-{e(paper.id)}'>{e(paper.title)} (<code>{e(paper.id)}</code>)</h2>"
                         f"<p>{e(paper.venue)}; transcribed from <code>{e(paper.text_file)}</code>.</p>")
            if paper.note:
                parts.append(f"<p class='note'>{e(paper.note)}</p>")
        tid = f"t-{paper.id}-{table.table}"
        parts.append(f"<h3>{e(paper.id)} Table {e(table.table)}</h3><p class='caption'>{e(table.caption)}</p>")
        if table.note:
            parts.append(f"<p class='note'>{e(table.note)}</p>")
        parts.append(f"<table class='paper-table' id='{e(tid)}' data-paper='{e(paper.id)}' "
                     f"data-table='{e(table.table)}'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for _, h in COLUMNS) + "</tr></thead><tbody>")
        for res in rows:
            d = _rows_for_output(res, ui)
            cls = "competitor" if res.row.role == "competitor" else "hrnet"
            cells = []
            for key, _ in COLUMNS:
                if key == "run":
                    links = [f"<a href='{e(d[p + '_link'])}'>{e(d[p + '_run'][:8])}</a>"
                             for p in ("ours", "official") if d[p + "_run"]]
                    cells.append(f"<td>{' '.join(links) or '-'}</td>")
                elif key == "status":
                    cells.append(f"<td class='{_status_class(d[key])}'>{e(d[key])}</td>")
                elif key == "complexity":
                    cells.append(f"<td class='{_complexity_class(d[key])}'>{e(d[key])}</td>")
                elif key in ("ours", "official") and d[f"{key}_profile"]:
                    cells.append(f"<td>{e(d[key])} ({e(d[key + '_profile'])})</td>")
                else:
                    cells.append(f"<td>{e(d[key]) or '-'}</td>")
            parts.append(f"<tr class='{cls}' data-row='{e(res.row.row)}'>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        for png in plots.get(f"{paper.id}/{table.table}", []):
            parts.append(f"<img class='plot' alt='{e(paper.id)} Table {e(table.table)}' "
                         f"src='{e(Path(png).relative_to(base).as_posix())}'>")
    if plots.get("overall"):
        parts.append("<h2>Overall plots</h2>")
        for png in plots["overall"]:
            parts.append(f"<img class='plot' alt='overall' src='{e(Path(png).relative_to(base).as_posix())}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ plots

_FAMILY_RE = re.compile(r"^(HRFormer|HRNetV2p|HRNetV2|HRNet|HigherHRNet)[-_ ]?(W?\d+|[TSB])?", re.I)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def make_plots(results, out_dir: Path) -> dict[str, list[str]]:
    """Write PNGs: per table with a recipe or a run, paper vs ours (primary metric); per table with >= 2 HRNet-family
    rows having GFLOPs and the metric, accuracy vs GFLOPs (one line per family and input size, like the papers'
    figures; competitors as grey squares; our runs as red stars); overall, paper vs our GFLOPs of every checked row.
    Returns ``{"<paper>/<table>": [paths], "overall": [paths]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):  # plots of an earlier report (rows or tables may have changed)
        stale.unlink()
    plots: dict[str, list[str]] = {}
    for paper, table, rows in results:
        key = f"{paper.id}/{table.table}"
        metric = table.primary_metric
        if metric is None:
            continue
        mine = [r for r in rows if r.row.role != "competitor" and metric in r.row.metrics]
        reproducible = any(r.row.recipe or r.runs for r in rows)
        if mine and reproducible:
            fig, ax = plt.subplots(figsize=(8, 0.45 * len(mine) + 1.6))
            labels = [r.row.row for r in mine]
            series = [("paper", "#7f8fa6", [r.row.metrics[metric] for r in mine])]
            for source, label, color in (("training", "ours (best run)", "#2e86de"),
                                         ("official-checkpoint", "official weights, our evaluator", "#10ac84")):
                vals = [r.runs[source].ours if source in r.runs and r.runs[source].metric == metric else None
                        for r in mine]
                if any(v is not None for v in vals):
                    series.append((label, color, vals))
            height = 0.8 / len(series)
            for i, (label, color, vals) in enumerate(series):
                offset = (i - (len(series) - 1) / 2) * height
                ax.barh([k + offset for k, v in enumerate(vals) if v is not None], [v for v in vals if v is not None],
                        height=height, label=label, color=color)
            ax.set_yticks(list(range(len(mine))))
            ax.set_yticklabels(labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(f"{metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)")
            lo = min(v for _, _, vals in series for v in vals if v is not None)
            ax.set_xlim(left=max(0.0, lo - 0.25 * max(abs(lo), 1.0)))
            ax.set_title(f"{paper.id} Table {table.table}: paper vs ours", fontsize=10)
            ax.legend(fontsize=8, loc="lower right")
            fig.tight_layout()
            path = out_dir / f"{_slug(paper.id)}_T{_slug(table.table)}_paper_vs_ours.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            plots.setdefault(key, []).append(str(path))
        pts = [r for r in rows if r.row.gflops is not None and metric in r.row.metrics]
        if sum(r.row.role != "competitor" for r in pts) >= 2:
            fig, ax = plt.subplots(figsize=(7, 4.6))
            groups: dict[tuple[str, str], list[RowResult]] = {}
            for r in pts:
                m = _FAMILY_RE.match(r.row.backbone or "")
                fam = m.group(1) if m and r.row.role != "competitor" else "other methods"
                groups.setdefault((fam, r.row.input_size or ""), []).append(r)
            for (fam, size), rs in sorted(groups.items()):
                rs = sorted(rs, key=lambda r: r.row.gflops)
                style = "o-" if fam != "other methods" else "s"
                ax.plot([r.row.gflops for r in rs], [r.row.metrics[metric] for r in rs], style, alpha=0.85,
                        label=f"{fam} {size}".strip() + " (paper)", color=None if fam != "other methods" else "#999")
                for r in rs:
                    ax.annotate(r.row.backbone or r.row.method, (r.row.gflops, r.row.metrics[metric]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
            ours = [(r.complexity.ours_gflops, r.runs["training"].ours) for r in pts
                    if "training" in r.runs and r.runs["training"].ours is not None and r.complexity is not None
                    and r.complexity.ours_gflops is not None and r.runs["training"].metric == metric]
            if ours:
                ax.plot([g for g, _ in ours], [v for _, v in ours], "r*", markersize=12, label="ours (best run)")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("GFLOPs (row's convention, log scale)")
            ax.set_ylabel(metric)
            ax.set_title(f"{paper.id} Table {table.table}: {metric} vs GFLOPs", fontsize=10)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = out_dir / f"{_slug(paper.id)}_T{_slug(table.table)}_accuracy_vs_gflops.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            plots.setdefault(key, []).append(str(path))
    checks = [r for _, _, rs in results for r in rs if r.complexity is not None and r.complexity.ours_gflops
              is not None and r.complexity.paper_gflops is not None]
    if checks:
        fig, ax = plt.subplots(figsize=(6.5, 6))
        colors = {"reproduced": "#10ac84", "not comparable": "#8395a7", "convention unknown": "#feca57",
                  "params differ": "#ff9f43", "GFLOPs differ": "#ee5253", "params and GFLOPs differ": "#b71540"}
        for status in sorted({r.complexity.status for r in checks}):
            sel = [r for r in checks if r.complexity.status == status]
            ax.scatter([r.complexity.paper_gflops for r in sel], [r.complexity.ours_gflops for r in sel],
                       label=status, color=colors.get(status, "#ee5253"), s=22)
        lim = [min(r.complexity.paper_gflops for r in checks) * 0.7, max(r.complexity.paper_gflops for r in checks) * 1.4]
        ax.plot(lim, lim, "k-", lw=0.8, label="ours = paper")
        ax.fill_between(lim, [v * (1 - cx.GFLOPS_TOLERANCE) for v in lim], [v * (1 + cx.GFLOPS_TOLERANCE) for v in lim],
                        color="k", alpha=0.1, label=f"±{cx.GFLOPS_TOLERANCE:.0%}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("paper GFLOPs")
        ax.set_ylabel("our GFLOPs (row's convention)")
        ax.set_title("Complexity: paper vs our models", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        path = out_dir / "complexity_paper_vs_ours.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        plots["overall"] = [str(path)]
    return plots


# ------------------------------------------------------------------------------------------------ driver

@dataclass
class ReportOutput:
    markdown: Path
    html: Path
    json: Path
    plots: list[Path]
    counts: dict[str, int]
    mlflow_run_id: str | None


def build_report(out_dir: str | Path = DEFAULT_OUT_DIR, *, tracking_uri: str | None = None,
                 experiments: Sequence[str] | None = None, ui: str = DEFAULT_UI,
                 tolerances: Mapping[str, float] | None = None, log_to_mlflow: bool = True,
                 compute_missing: bool = True, plots: bool = True) -> ReportOutput:
    """Compare every paper row with the MLflow runs and write ``paper_comparison.{md,html,json}`` + ``plots/*.png``.

    Args:
        out_dir: output folder (created). tracking_uri: default ``$MLFLOW_TRACKING_URI`` / ``sqlite:///mlflow.db``.
        experiments: experiment names to read (default: all but ``paper-comparison``).
        ui: MLflow UI base URL for run links. tolerances: per-metric overrides of :data:`DEFAULT_TOLERANCES`.
        log_to_mlflow: log the report as a run of the ``paper-comparison`` experiment.
        compute_missing: count complexity entries missing from the cache on the fly (else: shown as missing).
        plots: write the PNG plots (``False``: tables only, e.g. for a quick look).
    """
    from . import tracking

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking.resolve_tracking_uri(tracking_uri)
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
        {"paper": p.id, "table": t.table, **_rows_for_output(r, ui)} for p, t, rs in results for r in rs]},
        indent=1) + "\n", encoding="utf-8")
    pngs = [Path(p) for ps in png_by_table.values() for p in ps]
    run_id = None
    if log_to_mlflow:
        run_id = tracking.create_run(uri, REPORT_EXPERIMENT, f"paper-comparison-{_dt.datetime.now():%Y%m%d-%H%M%S}",
                                     tags={"source": "report", "git_commit": tracking.git_commit()})
        tracking.log_metrics(uri, run_id, counts)
        tracking.log_artifacts(uri, run_id, [md, page, js])
        if pngs:
            tracking.log_artifacts(uri, run_id, [plot_dir], artifact_path="plots")
        tracking.end_run(uri, run_id)
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
    p.add_argument("--mlflow-ui", default=os.environ.get("HRNET_MLFLOW_UI", DEFAULT_UI),
                   help="MLflow UI base URL used for run links (default %(default)s)")
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
    res = build_report(args.out_dir, tracking_uri=args.mlflow_uri, experiments=args.experiments, ui=args.mlflow_ui,
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


if __name__ == "__main__":
    sys.exit(main())
