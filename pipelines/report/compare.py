"""Paper vs run: the comparison logic of ``hrnet report`` (best run per row and source, the report rows).

Pure functions over :mod:`hrnet_core.paper_tables` rows and plain run data (no MLflow). The per-run part (row of a
run, paper values, tolerances, judgement, ``paper/<m>`` / ``delta/<m>``) lives one floor down in
:mod:`pipelines.paper_values` (the MLflow adapter and the sweeps import it without the report); its names are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hrnet_core.paper_tables import METRICS, Paper, PaperRow, PaperTable
from hrnet_core.paper_tables import complexity as cx

from ..paper_values import (  # noqa: F401 - re-exported
    DEFAULT_TOLERANCES, PAPER_VALUES_TAG, SOURCES, PaperKey, comparison_metrics, judge, load_papers_by_id,
    paper_comparison, paper_values_from_tags, resolve_row, row_metric, run_value, tolerance_for,
)

if TYPE_CHECKING:  # annotations only: the runs module reads MLflow, this one does not
    from .runs import RunInfo


# ------------------------------------------------------------------------------------------------ report rows

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
    """One paper row with our best run per source (:data:`SOURCES`) and its complexity check."""

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


def summary_counts(results: Sequence[tuple[Paper, PaperTable, list[RowResult]]]) -> dict[str, int]:
    """Row counts of a comparison (rows, HRNet-family rows, rows with a recipe / runs / reproduced / below, and the
    complexity checks), logged as the report run's metrics."""
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
