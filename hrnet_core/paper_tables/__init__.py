"""The tables of the HRNet-family papers as data: one YAML file per paper, loaded into validated dataclasses.

Papers (ids used everywhere: MLflow tag ``paper.id``, recipes' ``paper.id``):

* ``hrnet_pose_cvpr2019`` - Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation",
  CVPR 2019 (Tables 1-9; the plain-text copy lost most table bodies, see that file's notes and each row's sources).
* ``hrnetv2_2019`` - Sun et al., "High-Resolution Representations for Labeling Pixels and Regions", arXiv 2019
  (Tables 1-15 plus the in-text face-model complexity of Sec. 4.3, table id ``"4.3-text"``).
* ``higherhrnet_cvpr2020`` - Cheng et al., "HigherHRNet", CVPR 2020 (Tables 1-7).
* ``hrformer_neurips2021`` - Yuan et al., "HRFormer", NeurIPS 2021 (Tables 2-11).
* ``hrnet_tpami`` - Wang et al., TPAMI (only the abstract is available: no tables).

Each row (:class:`PaperRow`) carries the method, backbone, dataset/split, input size, schedule and test options,
parameters and GFLOPs *with their counting convention* (``params_unit``, ``gflops_convention``; see
:data:`PARAMS_UNITS` and :data:`GFLOPS_CONVENTIONS`, and ``../shared/reference/FACTS.md`` "Counting conventions"),
the metrics under the MLflow metric names of :data:`METRICS` (values exactly as printed: percent for AP, PCKh, mIoU,
NME, top-1 ...), the zoo model that reproduces the row's network (``model``), the recipe that reproduces the row
(``recipe``; ``None`` with a ``recipe_status`` saying why), the sources of every value and a note for anything the
text garbled. ``role`` separates the paper's own models (``proposed``), HRNet-family rows quoted from another paper
(``hrnet_baseline``) and other methods kept as context (``competitor``).

Validation (the schema) runs on load: the dataclasses below are the schema of the files (:mod:`hrnet_core.schema`),
plus checks the types cannot express. An unknown key, a missing required key, a value of the wrong type, an unknown
metric name, a percentage outside [0, 100], duplicate ids or a recipe mapped as primary by two rows raise
:class:`PaperTableError` naming the key path and the file
(e.g. ``tables[0].rows[5].metrics.mIoU: ... (hrnetv2_2019.yaml)``).

Example::

    row = find_row("hrnetv2_2019", "1", "HRNetV2-W48")
    row.metrics["mIoU"], row.params, row.gflops, row.gflops_convention     # 81.1, 65.9, 747.3, 'gmacs_1e9'
    row_for_recipe("pose_hrnet_w32_256x192_coco").metrics["AP"]            # 74.4

This package is plain Python + PyYAML (no torch import); complexity counting lives in
:mod:`hrnet_core.paper_tables.complexity`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from hrnet_core.errors import BadInputError
from hrnet_core.schema import KEY, build_dataclass, check_keys, invalid
from hrnet_core.vocabulary import ERROR_EQUIVALENTS, METRICS, TASK_NAMES, MetricInfo, metric_info

__all__ = [
    "GFLOPS_CONVENTIONS", "METRICS", "MetricInfo", "PARAMS_UNITS", "PAPER_FILES", "ROLES", "TASKS", "ModelRef",
    "Paper", "PaperRow", "PaperTable", "PaperTableError", "all_rows", "find_row", "load_papers", "load_tables",
    "metric_info", "row_for_recipe", "rows_for_recipe", "validate_paper_file",
]

TABLE_DIR = Path(__file__).resolve().parent

#: The paper files of this package, in report order.
PAPER_FILES: tuple[str, ...] = (
    "hrnet_pose_cvpr2019.yaml",
    "hrnetv2_2019.yaml",
    "higherhrnet_cvpr2020.yaml",
    "hrformer_neurips2021.yaml",
    "hrnet_tpami.yaml",
)

ROLES: Mapping[str, str] = MappingProxyType({
    "proposed": "a model the paper proposes (incl. its ablation variants)",
    "hrnet_baseline": "an HRNet-family model quoted from another paper as a baseline",
    "competitor": "another method, kept as context; not reproduced",
})

#: the project's task vocabulary (hrnet_core.tasks.TASK_NAMES) plus "architecture" (complexity-only tables)
TASKS: tuple[str, ...] = (*TASK_NAMES, "architecture")

#: Units of the ``params`` column: value * factor = parameter count.
PARAMS_UNITS: Mapping[str, float] = MappingProxyType({
    "M": 1e6,          # millions (10^6): DHRN, SEG, HH, CLS, HRFormer tables
    "Mi": float(2**20),  # 2^20: the HRNetV2 detection tables (FACTS.md: W32 Faster R-CNN 47.28e6 -> "45.0M")
})

#: Counting conventions of the ``gflops`` column (FACTS.md "Counting conventions").
GFLOPS_CONVENTIONS: Mapping[str, str] = MappingProxyType({
    "gmacs_2p30": "conv + linear multiply-accumulates / 2^30, attention products not counted (DHRN / CLS / SEG "
                  "code bases; the pose paper; the HRNet rows of the HRFormer paper)",
    "gmacs_1e9": "multiply-accumulates / 1e9 (HRNetV2 paper Table 1: 747.3 for W48 at 1024x2048)",
    "gmacs_1e9_deconv_out": "multiply-accumulates / 1e9 with each transposed convolution counted per OUTPUT pixel "
                            "(k*k*Cin*Cout*Hout*Wout, i.e. stride^2 times the usual count): the HigherHRNet tables "
                            "(inferred: it reproduces 47.9 / 74.8 / 154.3 from the official models)",
    "unspecified": "the paper does not say; compared as multiply-accumulates / 1e9 (the report names the closest "
                   "known convention)",
})


class PaperTableError(BadInputError, ValueError):
    """A paper-table file breaks the schema; the message names the key path and the file (formats of
    :mod:`hrnet_core.schema`)."""


@dataclass(frozen=True)
class ModelRef:
    """The zoo network that reproduces a row's architecture (for the complexity check).

    Attributes:
        name: ``hrnet_core.models.build_model`` name.
        overrides: keyword overrides (e.g. ``{"num_joints": 16}``).
        scope: ``"full"`` (the row's whole network) or ``"backbone+neck"`` (the detection rows: our zoo has the
            HRNetV2p backbone + HRFPN neck, not the detector heads, so the figures are not comparable).
    """

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    scope: Literal["full", "backbone+neck"] = "full"


@dataclass(frozen=True)
class PaperRow:
    """One row of one paper table (see the module docstring for the meaning of the fields).

    ``params`` is in ``params_unit`` (``M`` = 1e6, ``Mi`` = 2^20); ``gflops`` in ``gflops_convention``;
    ``complexity_input`` is the ``[N, 3, H, W]`` input the row's complexity refers to. ``metrics`` maps
    :data:`METRICS` names to the printed values. ``primary`` marks the row a recipe reproduces first
    (``row_for_recipe``); other rows may name the same recipe (e.g. the HRNet rows the HRFormer paper quotes).
    """

    paper_id: str
    table: str
    row: str = field(metadata={KEY: "id"})
    method: str
    role: str
    task: str
    dataset: str
    split: str
    metrics: Mapping[str, float]
    sources: tuple[str, ...]
    backbone: str | None = None
    input_size: str | None = None
    pretrain: str | None = None
    train_data: str | None = None
    schedule: str | None = None
    test: str | None = None
    params: float | None = None
    params_unit: str | None = None
    gflops: float | None = None
    gflops_convention: str | None = None
    complexity_input: tuple[int, int, int, int] | None = None
    model: ModelRef | None = None
    model_status: str | None = None
    recipe: str | None = None
    recipe_status: str | None = None
    primary: bool = False
    architecture: Mapping[str, Any] | None = None
    note: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """``(paper_id, table, row)`` - the values of the MLflow tags ``paper.id``, ``paper.table``, ``paper.row``."""
        return (self.paper_id, self.table, self.row)

    @property
    def has_complexity(self) -> bool:
        """True when the paper prints params or GFLOPs for this row."""
        return self.params is not None or self.gflops is not None

    @property
    def reproducible(self) -> bool:
        """True for HRNet-family rows (``proposed`` / ``hrnet_baseline``); competitors are context only."""
        return self.role != "competitor"


@dataclass(frozen=True)
class PaperTable:
    """One table of one paper: caption, the task/dataset it reports, its metric columns and rows."""

    paper_id: str
    table: str
    caption: str
    task: str
    primary_metric: str | None
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    note: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.paper_id, self.table)


@dataclass(frozen=True)
class Paper:
    """One paper: id, bibliographic line, the plain-text file it was transcribed from, and its tables."""

    id: str
    title: str
    venue: str
    text_file: str
    tables: tuple[PaperTable, ...]
    note: str | None = None


# ----------------------------------------------------------------------------------------------------------- schema
# The dataclasses above are the schema of the YAML files (hrnet_core.schema): a row's keys are the fields of
# PaperRow (``id`` for ``row``; ``paper_id`` and ``table`` come from the file), a row's ``model`` those of ModelRef,
# a file's ``paper`` those of Paper (its ``tables`` come from the file's ``tables``). What the types cannot say
# (metric names, percent ranges, units, cross-field rules) is checked below.


@dataclass(frozen=True)
class _TableSpec:
    """One table as written in a paper file; ``defaults`` are merged into every row (the row wins)."""

    id: str
    caption: str
    task: str
    columns: list[str]
    rows: list[dict[str, Any]]
    primary_metric: str | None = None
    defaults: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class _PaperFile:
    """The top level of a paper file."""

    paper: dict[str, Any]
    tables: list[_TableSpec]


_INPUT_RE = re.compile(r"^\d+(x\d+)?$")


def _fail(source: str, key: str, reason: str) -> PaperTableError:
    return invalid(key, reason, source=source, error=PaperTableError)  # type: ignore[return-value]


def _row_metrics(raw: Any, columns: list[str], key: str, source: str) -> dict[str, float]:
    """A row's ``metrics``: known names, numbers (not numeric strings), percent within [0, 100], table columns."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(source, key, f"expected a mapping metric -> value, got {raw!r}")
    metrics: dict[str, float] = {}
    for name, value in raw.items():
        where = f"{key}.{name}"
        if name not in METRICS:
            raise _fail(source, where, f"unknown metric (known: {', '.join(METRICS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, where, f"expected a number, got {value!r}")
        if METRICS[name].unit == "%" and not 0.0 <= float(value) <= 100.0:
            raise _fail(source, where, f"{value} is outside [0, 100] (values are percent as printed)")
        if name not in columns:
            raise _fail(source, where, f"not a column of the table (columns: {columns})")
        metrics[name] = float(value)
    return metrics


def _build_row(paper_id: str, table: _TableSpec, raw: Any, key: str, source: str) -> PaperRow:
    """Merge the table's defaults into ``raw``, build the :class:`PaperRow` and check what the types cannot say."""
    if not isinstance(raw, Mapping):
        raise _fail(source, key, f"expected a mapping, got {raw!r}")
    defaults = table.defaults or {}
    given = {"paper_id": paper_id, "table": table.id}
    check_keys(PaperRow, defaults, source=source, prefix=f"{key.rsplit('.rows', 1)[0]}.defaults.",
               error=PaperTableError, exclude=given)
    merged = {"task": table.task, **defaults, **raw}
    merged["metrics"] = _row_metrics(merged.get("metrics"), table.columns, f"{key}.metrics", source)
    row = build_dataclass(PaperRow, merged, source=source, prefix=f"{key}.", error=PaperTableError, values=given)

    def need(cond: Any, field_key: str, reason: str) -> None:
        if not cond:
            raise _fail(source, f"{key}.{field_key}", reason)

    for field_key in ("id", "method", "dataset", "split"):
        need(merged[field_key] != "", field_key, "must not be empty")
    need(row.role in ROLES, "role", f"{row.role!r} is not one of {', '.join(ROLES)}")
    need(row.task in TASKS, "task", f"{row.task!r} is not one of {', '.join(TASKS)}")
    need(row.input_size is None or _INPUT_RE.match(row.input_size), "input_size",
         f"{row.input_size!r} is not 'HxW' or a single side length")
    need(row.sources and all(row.sources), "sources", "must be a non-empty list of strings")
    for field_key in ("params", "gflops"):
        value = getattr(row, field_key)
        need(value is None or value > 0, field_key, f"must be positive, got {value}")
    need(row.params is None or row.params_unit in PARAMS_UNITS, "params_unit",
         f"required with params; one of {', '.join(PARAMS_UNITS)}")
    need(row.params_unit is None or row.params_unit in PARAMS_UNITS, "params_unit",
         f"{row.params_unit!r} is not one of {', '.join(PARAMS_UNITS)}")
    need(row.gflops is None or row.gflops_convention in GFLOPS_CONVENTIONS, "gflops_convention",
         f"required with gflops; one of {', '.join(GFLOPS_CONVENTIONS)}")
    need(row.gflops_convention is None or row.gflops_convention in GFLOPS_CONVENTIONS, "gflops_convention",
         f"{row.gflops_convention!r} is not one of {', '.join(GFLOPS_CONVENTIONS)}")
    shape = row.complexity_input
    need(shape is None or (all(v > 0 for v in shape) and shape[1] == 3), "complexity_input",
         f"expected [N, 3, H, W] positive ints, got {list(shape or ())}")
    need(row.model is None or shape is not None, "complexity_input", "required when a model is given")
    need(row.model is not None or row.model_status or not row.has_complexity or not row.reproducible,
         "model_status", "an HRNet-family row with params/GFLOPs but no model must say why")
    need(row.recipe is not None or not row.reproducible or row.recipe_status, "recipe_status",
         "an HRNet-family row without a recipe must say why (e.g. 'no recipe yet')")
    need(not row.primary or row.recipe is not None, "primary", "primary is only meaningful with a recipe")
    need(row.metrics or row.has_complexity or row.note or row.architecture is not None, "note",
         "a row without metrics or complexity must carry a note saying why")
    return dataclasses.replace(
        row, metrics=MappingProxyType(row.metrics),
        model=None if row.model is None else dataclasses.replace(row.model,
                                                                 overrides=MappingProxyType(row.model.overrides)),
        architecture=None if row.architecture is None else MappingProxyType(row.architecture))


def _build_table(paper_id: str, table: _TableSpec, key: str, source: str) -> PaperTable:
    """Check a table's task and metric columns and build it with its rows (row ids unique within the table)."""
    if table.task not in TASKS:
        raise _fail(source, f"{key}.task", f"{table.task!r} is not one of {', '.join(TASKS)}")
    for col in table.columns:
        if col not in METRICS:
            raise _fail(source, f"{key}.columns", f"unknown metric {col!r}")
    pm = table.primary_metric
    if pm is not None and pm not in table.columns:
        raise _fail(source, f"{key}.primary_metric", f"{pm!r} is not a column")
    if pm is None and table.columns:
        raise _fail(source, f"{key}.primary_metric", "required when the table has metric columns")
    rows: dict[str, PaperRow] = {}
    for ri, raw in enumerate(table.rows):
        row = _build_row(paper_id, table, raw, f"{key}.rows[{ri}]", source)
        if row.row in rows:
            raise _fail(source, f"{key}.rows[{ri}].id", f"duplicate row id {row.row!r} in table {table.id}")
        rows[row.row] = row
    if not rows:
        raise _fail(source, f"{key}.rows", "a table needs at least one row")
    return PaperTable(paper_id=paper_id, table=table.id, caption=table.caption, task=table.task, primary_metric=pm,
                      columns=tuple(table.columns), rows=tuple(rows.values()), note=table.note)


def validate_paper_file(data: Any, name: str) -> Paper:
    """Validate the parsed YAML ``data`` of one paper file (``name`` is used in messages) and build the :class:`Paper`.

    Raises:
        PaperTableError: the first schema violation, naming the key path and ``name``
            (``tables[0].rows[5].metrics.mIoU: ... (hrnetv2_2019.yaml)``; formats of :mod:`hrnet_core.schema`).
    """
    spec = build_dataclass(_PaperFile, data, source=name, error=PaperTableError)
    paper = build_dataclass(Paper, spec.paper, source=name, prefix="paper.", error=PaperTableError,
                            values={"tables": ()})
    if not spec.tables and not paper.note:
        raise _fail(name, "paper.note", "a paper without tables must say why")
    tables: dict[str, PaperTable] = {}
    for ti, table in enumerate(spec.tables):
        if table.id in tables:
            raise _fail(name, f"tables[{ti}].id", f"duplicate table id {table.id!r}")
        tables[table.id] = _build_table(paper.id, table, f"tables[{ti}]", name)
    return dataclasses.replace(paper, tables=tuple(tables.values()))


def _check_recipes(papers: list[Paper]) -> None:
    primary: dict[str, PaperRow] = {}
    for paper in papers:
        for table in paper.tables:
            for row in table.rows:
                if row.primary:
                    if row.recipe in primary:
                        other = primary[row.recipe]
                        raise PaperTableError(f"recipe {row.recipe!r} is primary for two rows: {other.key} and "
                                              f"{row.key}")
                    primary[row.recipe] = row  # type: ignore[index]
    named = {r.recipe for p in papers for t in p.tables for r in t.rows if r.recipe}
    missing = sorted(named - set(primary))
    if missing:
        raise PaperTableError(f"recipes without a primary row: {missing} (mark exactly one row 'primary: true')")


@functools.lru_cache(maxsize=None)
def _load_papers_cached(directory: str) -> tuple[Paper, ...]:
    papers: list[Paper] = []
    ids: set[str] = set()
    for fname in PAPER_FILES:
        path = Path(directory) / fname
        if not path.is_file():
            raise PaperTableError(f"{path}: paper-table file is missing")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PaperTableError(f"{path}: invalid YAML: {exc}") from exc
        paper = validate_paper_file(data, fname)
        if paper.id in ids:
            raise PaperTableError(f"{fname}: duplicate paper id {paper.id!r}")
        ids.add(paper.id)
        papers.append(paper)
    _check_recipes(papers)
    return tuple(papers)


def load_papers(directory: str | Path | None = None) -> list[Paper]:
    """All papers of :data:`PAPER_FILES` (validated; cached per directory).

    Args:
        directory: folder holding the YAML files (default: this package).

    Raises:
        PaperTableError: a missing file, invalid YAML or a schema violation.
    """
    return list(_load_papers_cached(str(directory or TABLE_DIR)))


def load_tables(directory: str | Path | None = None) -> list[PaperTable]:
    """Every table of every paper, in paper order then table order."""
    return [t for p in load_papers(directory) for t in p.tables]


def all_rows(directory: str | Path | None = None) -> list[PaperRow]:
    """Every row of every table, in report order."""
    return [r for t in load_tables(directory) for r in t.rows]


def find_row(paper_id: str, table: str, row: str) -> PaperRow:
    """The row with MLflow tags ``paper.id`` / ``paper.table`` / ``paper.row`` = ``paper_id`` / ``table`` / ``row``.

    Raises:
        KeyError: unknown paper, table or row (the message lists the valid ids one level down).
    """
    papers = {p.id: p for p in load_papers()}
    if paper_id not in papers:
        raise KeyError(f"unknown paper id {paper_id!r}; known: {', '.join(papers)}")
    tables = {t.table: t for t in papers[paper_id].tables}
    if str(table) not in tables:
        raise KeyError(f"paper {paper_id!r} has no table {table!r}; tables: {', '.join(tables)}")
    rows = {r.row: r for r in tables[str(table)].rows}
    if row not in rows:
        raise KeyError(f"table {paper_id}/{table} has no row {row!r}; rows: {', '.join(rows)}")
    return rows[row]


def rows_for_recipe(recipe_name: str) -> list[PaperRow]:
    """All rows that name ``recipe_name`` (primary first)."""
    rows = [r for r in all_rows() if r.recipe == recipe_name]
    return sorted(rows, key=lambda r: not r.primary)


def row_for_recipe(recipe_name: str) -> PaperRow | None:
    """The primary row that recipe ``recipe_name`` reproduces, or ``None`` when no row maps to it."""
    for row in all_rows():
        if row.recipe == recipe_name and row.primary:
            return row
    return None
