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

``pipelines.mlflow_runs.log_paper_comparison`` (re-exported here) is the hook the evaluation pipeline calls after an
evaluation: it logs ``paper/<m>`` for every metric of the run's paper row, ``delta/<m>`` = ours - paper for every
metric the run measured, and the ``paper.*`` tags, as computed by :func:`paper_comparison`. The run's own ``paper.*``
tags (a sweep trial's row, or its ``paper.values``) take precedence over the recipe's row, so a W48 variant of a W32
recipe is compared with the W48 row, and a variant that is no paper row with nothing.

Modules (imports point one way: ``pipelines.paper_values`` <- ``compare``; ``pipelines.mlflow_runs`` <- ``runs``,
``cli``; neither low module imports the report):

* :mod:`pipelines.report.compare` - the comparison logic (pure; imports nothing from ``pipelines``);
* :mod:`pipelines.report.runs` - reading the runs from MLflow (:func:`collect_runs`);
* :mod:`pipelines.report.render` - Markdown and HTML; :mod:`pipelines.report.plots` - the PNG plots;
* :mod:`pipelines.report.cli` - :func:`build_report` and ``hrnet report`` (``python -m pipelines.report``).

Every public name of these modules is importable from ``pipelines.report``. The attribute
``pipelines.report.compare`` is the function :func:`compare`, not the module: import from the module with
``from pipelines.report.compare import ...`` (``import pipelines.report.compare as m`` gives the function).
"""

from ..mlflow_runs import log_paper_comparison
from .cli import DEFAULT_OUT_DIR, DEFAULT_UI, ReportOutput, add_report_parser, build_report, cmd_report, main
from .compare import (
    DEFAULT_TOLERANCES, PAPER_VALUES_TAG, SOURCES, PaperKey, RowResult, RunResult, best_run, compare,
    comparison_metrics, judge, load_papers_by_id, paper_comparison, paper_values_from_tags, resolve_row, row_metric,
    run_value, summary_counts, tolerance_for,
)
from .plots import make_plots
from .render import COLUMNS, render_html, render_markdown, row_cells
from .runs import REPORT_EXPERIMENT, RunInfo, collect_runs

__all__ = [
    "COLUMNS", "DEFAULT_OUT_DIR", "DEFAULT_TOLERANCES", "DEFAULT_UI", "PAPER_VALUES_TAG", "REPORT_EXPERIMENT",
    "SOURCES", "PaperKey", "ReportOutput", "RowResult", "RunInfo", "RunResult", "add_report_parser", "best_run",
    "build_report", "cmd_report", "collect_runs", "compare", "comparison_metrics", "judge", "load_papers_by_id",
    "log_paper_comparison", "main", "make_plots", "paper_comparison", "paper_values_from_tags", "render_html",
    "render_markdown", "resolve_row", "row_cells", "row_metric", "run_value", "summary_counts", "tolerance_for",
]
