"""Paper values of a run: which paper row a run belongs to, its paper values (``paper.*`` tags), the tolerance and
the reproduced / below judgement, and :func:`paper_comparison`, the ``paper/<m>`` / ``delta/<m>`` metrics and tags
that :func:`pipelines.mlflow_runs.log_paper_comparison` writes and the sweeps read back.

A low-floor module: pure functions over :mod:`hrnet_core.paper_tables` rows and plain run data (no MLflow), imported
by the MLflow adapter (:mod:`pipelines.mlflow_runs`), the report (:mod:`pipelines.report.compare`) and the sweeps
(:mod:`sweeps.mlflow_sweeps`); it imports nothing from :mod:`pipelines` or :mod:`sweeps`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence

from hrnet_core.paper_tables import (
    ERROR_EQUIVALENTS, METRICS, Paper, PaperRow, PaperTable, find_row, load_papers, row_for_recipe,
)

#: Absolute tolerance (metric units, i.e. percent points) within which a run counts as reproducing the paper.
#: Lower-is-better metrics (NME, FR, errors) use the same rule mirrored. Override per metric: ``--tolerance AP=0.3``.
DEFAULT_TOLERANCES: Mapping[str, float] = {"default": 0.5, "NME": 0.05, "FR_0.08": 0.1, "FR_0.1": 0.1,
                                           "top1": 0.3, "top5": 0.3, "top1_err": 0.3, "top5_err": 0.3}
#: Run sources with a column in the report (tag ``source``; a sweep's parent run, ``source=sweep``, is none).
SOURCES = ("training", "official-checkpoint")
#: A paper row as ``(paper_id, table, row)`` - the values of the MLflow tags ``paper.id`` / ``paper.table`` /
#: ``paper.row`` (a mapping ``{id, table, row}`` is accepted as well).
PaperKey = tuple[str, str, str]
#: MLflow tag with a sweep variant's own paper values (JSON ``{metric: value}``), see ``sweeps.mlflow_sweeps``.
PAPER_VALUES_TAG = "paper.values"


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


# ------------------------------------------------------------------------------------------------ paper values of a run

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


def paper_comparison(recipe_name: str, metrics: Mapping[str, float], *, run_tags: Mapping[str, str] | None = None,
                     paper_key: PaperKey | Mapping[str, str] | None = None,
                     paper_values: Mapping[str, float] | None = None,
                     tolerances: Mapping[str, float] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The paper's values next to ours for one run: what :func:`pipelines.mlflow_runs.log_paper_comparison` logs.

    Where the paper's numbers come from, first match wins:

    1. ``paper_key`` / ``paper_values`` given explicitly: the key's row (its metrics updated with ``paper_values``),
       or ``paper_values`` alone (a key that names no row is then kept as the run's ``paper.*`` tags).
    2. The run's own tags ``run_tags``, when its ``recipe`` tag is ``recipe_name`` (or absent) and it carries
       ``paper.id`` / ``paper.table`` / ``paper.row``: the row they name, else the values of tag ``paper.values`` (a
       sweep variant that quotes a figure), else **nothing**. This is how a sweep trial - a W48 or 2x-resolution variant
       of a W32 recipe, tagged by ``sweeps.mlflow_sweeps.trial_paper_tags`` - is compared with its own row, and a variant
       that is no paper row gets no ``paper/`` numbers instead of the base recipe's.
    3. The recipe's row (:func:`resolve_row`): its own ``paper`` block, else the primary row of ``row_for_recipe``.

    Args:
        recipe_name: the run's recipe (``recipe`` tag). metrics: the run's evaluation metrics (paper metric names,
            percent). run_tags: the run's MLflow tags (used only without ``paper_key`` / ``paper_values``).
        paper_key: explicit row ``(id, table, row)`` or ``{id, table, row}``.
        paper_values: explicit paper values ``{metric: value}`` (percent, as printed).
        tolerances: per-metric tolerances for ``paper.status`` (see :func:`tolerance_for`).

    Returns:
        ``(metrics, tags)``: ``paper/<m>`` for every paper value and ``delta/<m>`` (ours - paper) for every one of
        them measured in ``metrics``; tags ``paper.id``, ``paper.table``, ``paper.row`` (when the numbers come from a
        row), ``paper.metric`` (the judged metric) and ``paper.status`` (``reproduced`` / ``below`` within
        :data:`DEFAULT_TOLERANCES`). ``({}, {})`` when there are no paper values for the run.

    Raises:
        KeyError: an explicit ``paper_key`` names an unknown row and no ``paper_values`` are given.
    """
    if paper_key is None and not paper_values:
        source = _paper_source_from_tags(run_tags or {}, recipe_name)
    else:
        source = _explicit_paper_source(paper_key, paper_values)
    if source is None:
        row = resolve_row(recipe_name)
        source = (row.key, row, {}) if row is not None else (None, None, {})
    key, row, values = source
    paper = {**(row.metrics if row is not None else {}), **values}
    if not paper:
        return {}, {}
    tags: dict[str, str] = {}
    if key is not None:
        tags.update({"paper.id": key[0], "paper.table": key[1], "paper.row": key[2]})
    m = _judged_metric(paper, row)
    ours = None if m is None else run_value(m, metrics)
    if m is not None and ours is not None:
        tags["paper.metric"] = m
        tags["paper.status"] = judge(m, paper[m], ours, tolerances)
    return _comparison_from_values(paper, metrics), tags


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
    """Every paper of :mod:`hrnet_core.paper_tables` by id."""
    return {p.id: p for p in load_papers()}
