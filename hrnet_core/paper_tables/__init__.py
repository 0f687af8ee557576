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

Validation (the schema) runs on load: an unknown key, a missing required key, a value of the wrong type, an unknown
metric name, a percentage outside [0, 100], duplicate ids or a recipe mapped as primary by two rows raise
:class:`PaperTableError` naming the file and the key path (e.g. ``hrnetv2_2019.yaml: tables[0].rows[5].metrics.mIoU``).

Example::

    row = find_row("hrnetv2_2019", "1", "HRNetV2-W48")
    row.metrics["mIoU"], row.params, row.gflops, row.gflops_convention     # 81.1, 65.9, 747.3, 'gmacs_1e9'
    row_for_recipe("pose_hrnet_w32_256x192_coco").metrics["AP"]            # 74.4

This package is plain Python + PyYAML (no torch import); complexity counting lives in
:mod:`hrnet_core.paper_tables.complexity`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

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

TASKS: tuple[str, ...] = (
    "pose_topdown", "pose_bottomup", "pose_tracking", "segmentation", "face_alignment", "detection",
    "instance_segmentation", "classification", "architecture",
)

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


@dataclass(frozen=True)
class MetricInfo:
    """One metric name shared by the paper tables, MLflow runs and the report.

    Attributes:
        name: the MLflow metric name (``paper/<name>`` and ``delta/<name>`` derive from it).
        higher_is_better: direction used by "best run" and by the reproduced/below status.
        unit: ``"%"`` (percent points, as the papers print them) or ``""``.
        description: what it measures, in the field's words.
    """

    name: str
    higher_is_better: bool
    unit: str
    description: str


def _metrics() -> dict[str, MetricInfo]:
    m: dict[str, MetricInfo] = {}

    def add(name: str, hib: bool, desc: str, unit: str = "%") -> None:
        m[name] = MetricInfo(name, hib, unit, desc)

    add("AP", True, "COCO AP, mean over OKS (keypoints) or IoU (boxes) thresholds 0.50:0.95")
    add("AP50", True, "AP at OKS / IoU 0.50")
    add("AP75", True, "AP at OKS / IoU 0.75")
    add("APS", True, "AP for small objects (boxes)")
    add("APM", True, "AP for medium objects (area 32^2..96^2)")
    add("APL", True, "AP for large objects (area > 96^2)")
    for k in ("AR", "AR50", "AR75", "ARM", "ARL"):
        add(k, True, f"COCO average recall ({k})")
    add("AP/easy", True, "CrowdPose AP on easy images (crowd index < 0.1)")
    add("AP/medium", True, "CrowdPose AP on medium images (crowd index 0.1..0.8)")
    add("AP/hard", True, "CrowdPose AP on hard images (crowd index > 0.8)")
    for k in ("mask_AP", "mask_APS", "mask_APM", "mask_APL"):
        add(k, True, f"COCO instance-mask {k[5:]}")
    add("PCKh", True, "MPII PCKh@0.5 mean (the official 'Mean'/'Total': pelvis and thorax excluded)")
    for joint in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        add(f"PCKh/{joint}", True, f"MPII PCKh@0.5 of the {joint.lower()} joints (mean of left and right)")
    add("mAP", True, "PoseTrack frame-wise multi-person pose mAP")
    add("MOTA", True, "PoseTrack multi-object tracking accuracy")
    add("mIoU", True, "mean class-wise intersection over union")
    add("iIoU_cla", True, "Cityscapes instance-level IoU, class average")
    add("IoU_cat", True, "Cityscapes IoU, category average")
    add("iIoU_cat", True, "Cityscapes instance-level IoU, category average")
    add("pixel_acc", True, "pixel accuracy")
    add("mean_acc", True, "class-average pixel accuracy")
    add("NME", False, "normalised mean error (percent of the normalising distance) on the full test set")
    for subset in ("pose", "expression", "illumination", "makeup", "occlusion", "blur", "frontal", "common",
                   "challenging"):
        add(f"NME/{subset}", False, f"NME on the {subset} subset of the test set")
    add("FR_0.08", False, "failure rate: share of images with NME > 0.08")
    add("FR_0.1", False, "failure rate: share of images with NME > 0.10")
    add("AUC_0.08", True, "area under the cumulative error curve up to NME 0.08 (divided by 0.08)")
    add("AUC_0.1", True, "area under the cumulative error curve up to NME 0.10 (divided by 0.10)")
    add("top1", True, "ImageNet top-1 accuracy (single 224 crop)")
    add("top5", True, "ImageNet top-5 accuracy")
    add("top1_err", False, "ImageNet top-1 error (= 100 - top1)")
    add("top5_err", False, "ImageNet top-5 error (= 100 - top5)")
    return m


#: Every metric name a paper row may use (these are also the MLflow metric names of our runs).
METRICS: Mapping[str, MetricInfo] = MappingProxyType(_metrics())

#: Metrics the papers print as errors whose accuracy counterpart our evaluators log: paper name -> run metric name
#: (paper value = 100 - run value).
ERROR_EQUIVALENTS: Mapping[str, str] = MappingProxyType({"top1_err": "top1", "top5_err": "top5"})


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``. Raises ``KeyError`` listing the known names."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


class PaperTableError(ValueError):
    """A paper-table file breaks the schema; the message names the file and the key path."""


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
    scope: str = "full"


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
    row: str
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

_PAPER_KEYS = {"id": str, "title": str, "venue": str, "text_file": str, "note": str}
_PAPER_REQUIRED = ("id", "title", "venue", "text_file")
_TABLE_KEYS = {"id": str, "caption": str, "task": str, "primary_metric": str, "columns": list, "defaults": dict,
               "rows": list, "note": str}
_TABLE_REQUIRED = ("id", "caption", "task", "columns", "rows")
# row field -> accepted python types (after YAML parsing)
_ROW_KEYS: dict[str, tuple[type, ...]] = {
    "id": (str,), "method": (str,), "role": (str,), "task": (str,), "dataset": (str,), "split": (str,),
    "metrics": (dict,), "sources": (list,), "backbone": (str,), "input_size": (str, int), "pretrain": (str,),
    "train_data": (str,), "schedule": (str,), "test": (str,), "params": (int, float), "params_unit": (str,),
    "gflops": (int, float), "gflops_convention": (str,), "complexity_input": (list,), "model": (dict,),
    "model_status": (str,), "recipe": (str,), "recipe_status": (str,), "primary": (bool,), "architecture": (dict,),
    "note": (str,),
}
_ROW_REQUIRED = ("id", "method", "role", "dataset", "split", "sources")
_MODEL_KEYS = {"name": str, "overrides": dict, "scope": str}
_INPUT_RE = re.compile(r"^\d+(x\d+)?$")


def _fail(where: str, msg: str) -> PaperTableError:
    return PaperTableError(f"{where}: {msg}")


def _check_keys(obj: Any, allowed: Mapping[str, Any], required: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(where, f"expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise _fail(f"{where}.{key}", f"unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if obj.get(key) in (None, ""):
            raise _fail(f"{where}.{key}", "missing required key")


def _row_from_mapping(paper_id: str, table: dict, raw: dict, where: str) -> PaperRow:
    """Merge table defaults into ``raw``, validate every field and build the :class:`PaperRow`."""
    defaults = table.get("defaults") or {}
    _check_keys(defaults, _ROW_KEYS, (), f"{where.rsplit('.rows', 1)[0]}.defaults")
    _check_keys(raw, _ROW_KEYS, (), where)
    merged = {**defaults, **raw}
    merged.setdefault("task", table["task"])
    _check_keys(merged, _ROW_KEYS, _ROW_REQUIRED, where)
    for key, value in merged.items():
        if value is None:
            continue
        types_ = _ROW_KEYS[key]
        if isinstance(value, bool) and bool not in types_:
            raise _fail(f"{where}.{key}", f"expected {'/'.join(t.__name__ for t in types_)}, got bool")
        if not isinstance(value, types_):
            raise _fail(f"{where}.{key}", f"expected {'/'.join(t.__name__ for t in types_)}, "
                                          f"got {type(value).__name__} ({value!r})")
    if merged["role"] not in ROLES:
        raise _fail(f"{where}.role", f"{merged['role']!r} is not one of {', '.join(ROLES)}")
    if merged["task"] not in TASKS:
        raise _fail(f"{where}.task", f"{merged['task']!r} is not one of {', '.join(TASKS)}")
    if merged.get("input_size") is not None:
        merged["input_size"] = str(merged["input_size"])
        if not _INPUT_RE.match(merged["input_size"]):
            raise _fail(f"{where}.input_size", f"{merged['input_size']!r} is not 'HxW' or a single side length")

    metrics: dict[str, float] = {}
    for name, value in (merged.get("metrics") or {}).items():
        if name not in METRICS:
            raise _fail(f"{where}.metrics.{name}", f"unknown metric (known: {', '.join(METRICS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(f"{where}.metrics.{name}", f"expected a number, got {value!r}")
        if METRICS[name].unit == "%" and not 0.0 <= float(value) <= 100.0:
            raise _fail(f"{where}.metrics.{name}", f"{value} is outside [0, 100] (values are percent as printed)")
        metrics[name] = float(value)
    cols = table["columns"]
    for name in metrics:
        if name not in cols:
            raise _fail(f"{where}.metrics.{name}", f"not a column of the table (columns: {cols})")

    sources = merged["sources"]
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise _fail(f"{where}.sources", "must be a non-empty list of strings")

    for key in ("params", "gflops"):
        v = merged.get(key)
        if v is not None and not v > 0:
            raise _fail(f"{where}.{key}", f"must be positive, got {v}")
    if merged.get("params") is not None and merged.get("params_unit") not in PARAMS_UNITS:
        raise _fail(f"{where}.params_unit", f"required with params; one of {', '.join(PARAMS_UNITS)}")
    if merged.get("params_unit") is not None and merged["params_unit"] not in PARAMS_UNITS:
        raise _fail(f"{where}.params_unit", f"{merged['params_unit']!r} is not one of {', '.join(PARAMS_UNITS)}")
    if merged.get("gflops") is not None and merged.get("gflops_convention") not in GFLOPS_CONVENTIONS:
        raise _fail(f"{where}.gflops_convention", f"required with gflops; one of {', '.join(GFLOPS_CONVENTIONS)}")
    if merged.get("gflops_convention") is not None and merged["gflops_convention"] not in GFLOPS_CONVENTIONS:
        raise _fail(f"{where}.gflops_convention",
                    f"{merged['gflops_convention']!r} is not one of {', '.join(GFLOPS_CONVENTIONS)}")

    complexity_input = merged.get("complexity_input")
    if complexity_input is not None:
        if (len(complexity_input) != 4 or not all(isinstance(v, int) and v > 0 for v in complexity_input)
                or complexity_input[1] != 3):
            raise _fail(f"{where}.complexity_input", f"expected [N, 3, H, W] positive ints, got {complexity_input}")
        complexity_input = tuple(complexity_input)

    model = None
    if merged.get("model") is not None:
        _check_keys(merged["model"], _MODEL_KEYS, ("name",), f"{where}.model")
        scope = merged["model"].get("scope", "full")
        if scope not in ("full", "backbone+neck"):
            raise _fail(f"{where}.model.scope", f"{scope!r} is not 'full' or 'backbone+neck'")
        model = ModelRef(name=merged["model"]["name"],
                         overrides=MappingProxyType(dict(merged["model"].get("overrides") or {})), scope=scope)
        if complexity_input is None:
            raise _fail(f"{where}.complexity_input", "required when a model is given")
    elif not merged.get("model_status") and (merged.get("params") is not None or merged.get("gflops") is not None) \
            and merged["role"] != "competitor":
        raise _fail(f"{where}.model_status", "an HRNet-family row with params/GFLOPs but no model must say why")

    recipe = merged.get("recipe")
    if recipe is None and merged["role"] != "competitor" and not merged.get("recipe_status"):
        raise _fail(f"{where}.recipe_status", "an HRNet-family row without a recipe must say why (e.g. 'no recipe yet')")
    if merged.get("primary") and recipe is None:
        raise _fail(f"{where}.primary", "primary is only meaningful with a recipe")
    if not metrics and merged.get("params") is None and merged.get("gflops") is None and not merged.get("note") \
            and merged.get("architecture") is None:
        raise _fail(f"{where}.note", "a row without metrics or complexity must carry a note saying why")

    return PaperRow(
        paper_id=paper_id, table=str(table["id"]), row=merged["id"], method=merged["method"], role=merged["role"],
        task=merged["task"], dataset=merged["dataset"], split=merged["split"], metrics=MappingProxyType(metrics),
        sources=tuple(sources), backbone=merged.get("backbone"), input_size=merged.get("input_size"),
        pretrain=merged.get("pretrain"), train_data=merged.get("train_data"), schedule=merged.get("schedule"),
        test=merged.get("test"),
        params=None if merged.get("params") is None else float(merged["params"]),
        params_unit=merged.get("params_unit"),
        gflops=None if merged.get("gflops") is None else float(merged["gflops"]),
        gflops_convention=merged.get("gflops_convention"), complexity_input=complexity_input, model=model,
        model_status=merged.get("model_status"), recipe=recipe, recipe_status=merged.get("recipe_status"),
        primary=bool(merged.get("primary", False)),
        architecture=None if merged.get("architecture") is None else MappingProxyType(dict(merged["architecture"])),
        note=merged.get("note"),
    )


def validate_paper_file(data: Any, name: str) -> Paper:
    """Validate the parsed YAML ``data`` of one paper file (``name`` is used in messages) and build the :class:`Paper`.

    Raises:
        PaperTableError: the first schema violation, naming ``name`` and the key path.
    """
    if not isinstance(data, dict):
        raise _fail(name, "expected a mapping with keys 'paper' and 'tables'")
    for key in data:
        if key not in ("paper", "tables"):
            raise _fail(f"{name}: {key}", "unknown top-level key (allowed: paper, tables)")
    paper = data.get("paper")
    _check_keys(paper, _PAPER_KEYS, _PAPER_REQUIRED, f"{name}: paper")
    tables_raw = data.get("tables")
    if not isinstance(tables_raw, list):
        raise _fail(f"{name}: tables", "expected a list (may be empty)")
    if not tables_raw and not paper.get("note"):
        raise _fail(f"{name}: paper.note", "a paper without tables must say why")
    tables: list[PaperTable] = []
    seen_tables: set[str] = set()
    for ti, table in enumerate(tables_raw):
        where_t = f"{name}: tables[{ti}]"
        _check_keys(table, _TABLE_KEYS, _TABLE_REQUIRED, where_t)
        table["id"] = str(table["id"])
        if table["id"] in seen_tables:
            raise _fail(f"{where_t}.id", f"duplicate table id {table['id']!r}")
        seen_tables.add(table["id"])
        if table["task"] not in TASKS:
            raise _fail(f"{where_t}.task", f"{table['task']!r} is not one of {', '.join(TASKS)}")
        for col in table["columns"]:
            if col not in METRICS:
                raise _fail(f"{where_t}.columns", f"unknown metric {col!r}")
        pm = table.get("primary_metric")
        if pm is not None and pm not in table["columns"]:
            raise _fail(f"{where_t}.primary_metric", f"{pm!r} is not a column")
        if pm is None and table["columns"]:
            raise _fail(f"{where_t}.primary_metric", "required when the table has metric columns")
        rows: list[PaperRow] = []
        seen_rows: set[str] = set()
        for ri, raw in enumerate(table["rows"]):
            row = _row_from_mapping(str(paper["id"]), table, raw, f"{where_t}.rows[{ri}]")
            if row.row in seen_rows:
                raise _fail(f"{where_t}.rows[{ri}].id", f"duplicate row id {row.row!r} in table {table['id']}")
            seen_rows.add(row.row)
            rows.append(row)
        if not rows:
            raise _fail(f"{where_t}.rows", "a table needs at least one row")
        tables.append(PaperTable(paper_id=str(paper["id"]), table=table["id"], caption=table["caption"],
                                 task=table["task"], primary_metric=pm, columns=tuple(table["columns"]),
                                 rows=tuple(rows), note=table.get("note")))
    return Paper(id=paper["id"], title=paper["title"], venue=paper["venue"], text_file=paper["text_file"],
                 tables=tuple(tables), note=paper.get("note"))


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
