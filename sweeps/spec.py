"""Sweep definitions: the YAML schema of ``sweeps/*.yaml``, its validation, and the trial plan.

A sweep file describes one study (a paper table or figure) as plain data::

    name: pose_width_coco                 # must equal the file stem
    description: ...
    recipe: pose_hrnet_w32_256x192_coco   # base recipe (hrnet_core.recipes)
    overrides: {}                         # recipe overrides shared by every trial
    metric: AP                            # reported by the training run (MLflow / Tune metric name)
    mode: max                             # max | min
    paper: {id: hrnet_pose_cvpr2019, table: "1", note: ...}   # table id as in hrnet_core.paper_tables, or "Figure 5"
    search: {algorithm: grid, num_samples: 1, seed: 0}   # grid | random
    variants:                             # a grid axis of named override bundles (the study's rows)
      - {name: W32, overrides: {model.width: 32}, paper: {AP: 74.4}}
    search_space:                         # extra axes over single recipe keys
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2, max_t: 210}   # fifo | asha
    resources: {num_workers: 4, use_gpu: true, cpus_per_worker: 8}   # one GPU per worker with use_gpu
    report: {x: variant}                  # variant | gflops | gmacs | params | <override key>
    smoke:                                # what ``--smoke`` runs instead (tiny, CPU)
      profile: smoke
      variants: {W18: {model.width: 8}, W32: {model.width: 16}}
      resources: {num_workers: 1, use_gpu: false, cpus_per_worker: 0.5}

Every trial's recipe is resolved with :func:`hrnet_core.recipes.load_recipe` while the plan is built, so an unknown
recipe, an unknown override key or a bad value fails before anything is scheduled. All problems of one file are
collected into a single :class:`SweepConfigError` whose message names the file and the key at fault.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

SWEEPS_DIR = Path(__file__).resolve().parent

_TOP_KEYS = {
    "name", "description", "recipe", "overrides", "metric", "mode", "paper", "search", "variants",
    "search_space", "scheduler", "resources", "report", "smoke",
}
_PAPER_KEYS = {"id", "table", "row", "note", "metric_note"}
_SEARCH_KEYS = {"algorithm", "num_samples", "seed"}
_VARIANT_KEYS = {"name", "overrides", "paper", "paper_row", "note"}
_SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "max_t", "time_attr"}
_RESOURCE_KEYS = {"num_workers", "use_gpu", "cpus_per_worker", "trainable_cpus",
                  "trainable_resources", "max_concurrent_trials"}
_REPORT_KEYS = {"x", "title"}
_SMOKE_KEYS = {"profile", "overrides", "variants", "resources", "search", "scheduler"}
REPORT_X = {"variant", "gflops", "gmacs", "params"}
_AXIS_KINDS = {"grid", "choice", "uniform", "loguniform", "randint"}


class SweepConfigError(ValueError):
    """A sweep file is invalid; the message names the file and every offending key."""


@dataclass(frozen=True)
class PaperRef:
    """The paper table or figure a sweep reproduces (``id`` as in ``hrnet_core.paper_tables``)."""

    id: str
    table: str
    row: str | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """``Table 6`` for a numbered table (``table: "6"``), else the name as written (``Figure 5``)."""
        return f"Table {self.table}" if self.table[:1].isdigit() else self.table


@dataclass(frozen=True)
class Variant:
    """One named row of the study: a bundle of recipe overrides and the paper's values for it.

    ``paper`` maps metric names (``AP``...) to the value the paper prints; empty when the paper has no number.
    ``paper_row`` = ``(table, row)`` names the same row in ``hrnet_core.paper_tables`` (``find_row(paper.id, table,
    row)``); :func:`build_plan` checks that the values agree, and the child run's ``paper.table`` / ``paper.row`` tags
    use it so that the project report can match the run to the row.
    """

    name: str
    overrides: dict[str, Any]
    paper: dict[str, float] = field(default_factory=dict)
    note: str = ""
    paper_row: tuple[str, str] | None = None


@dataclass(frozen=True)
class Axis:
    """One search-space dimension over a single recipe key.

    ``kind`` is ``grid`` (every value, crossed with the other grid axes), ``choice`` (sampled),
    ``uniform`` / ``loguniform`` (float in ``[lo, hi]``) or ``randint`` (int in ``[lo, hi)``).
    """

    key: str
    kind: str
    values: tuple


@dataclass(frozen=True)
class SchedulerSpec:
    """Trial scheduler: ``fifo`` (run every trial to the end) or ``asha`` (asynchronous successive halving).

    ``max_t`` / ``grace_period`` are in units of ``time_attr`` (Tune's ``training_iteration`` = one report per epoch).
    """

    type: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int | None = None
    time_attr: str = "training_iteration"


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: a Ray Train run of ``num_workers`` workers, each with ``cpus_per_worker`` CPUs and,
    with ``use_gpu``, one GPU (``pipelines.train.train`` trains with one GPU per worker).

    ``trainable_cpus`` is what the Tune trial actor itself (the Train driver) reserves; it only launches and
    watches the workers, so it defaults to a token 0.01 CPU (Tune needs a non-empty resource bundle per trial);
    ``trainable_resources`` adds custom resources to it (e.g. ``{head: 0.01}`` keeps trial drivers on the head node,
    away from preemptible GPU workers).
    ``max_concurrent_trials`` caps concurrency below what the cluster fits.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    trainable_cpus: float = 0.01
    trainable_resources: dict[str, float] = field(default_factory=dict)
    max_concurrent_trials: int | None = None

    def trial_actor(self) -> dict[str, float]:
        """The Tune trial actor's bundle, e.g. ``{"CPU": 0.01}`` or ``{"CPU": 0.01, "head": 0.01}``."""
        return {"CPU": float(self.trainable_cpus), **{k: float(v) for k, v in self.trainable_resources.items()}}

    def per_worker(self) -> dict[str, float]:
        """Logical Ray resources of one training worker, e.g. ``{"CPU": 8, "GPU": 1}``."""
        out = {"CPU": float(self.cpus_per_worker)}
        if self.use_gpu:
            out["GPU"] = 1.0
        return out

    def per_trial(self) -> dict[str, float]:
        """Logical Ray resources one trial holds while it trains (workers + trial actor)."""
        out = {k: v * self.num_workers for k, v in self.per_worker().items()}
        for k, v in self.trial_actor().items():
            out[k] = out.get(k, 0.0) + v
        return out


@dataclass(frozen=True)
class ReportSpec:
    """How ``hrnet sweep report`` plots: x axis ``variant``, ``gflops`` (MACs / 2**30, the pose paper's "GFLOPs"),
    ``gmacs`` (MACs / 1e9), ``params``, or a recipe key that the variants / axes override (e.g. ``model.width``)."""

    x: str = "variant"
    title: str = ""


@dataclass(frozen=True)
class SmokeSpec:
    """What ``--smoke`` runs: recipe ``profile``, extra ``overrides``, the variants kept (with replacement
    overrides), and small CPU ``resources``. ``search`` / ``scheduler`` entries override the full sweep's."""

    profile: str | None = "smoke"
    overrides: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see the module docstring for the YAML layout)."""

    name: str
    recipe: str
    metric: str
    mode: str
    paper: PaperRef
    variants: tuple[Variant, ...]
    axes: tuple[Axis, ...]
    algorithm: str = "grid"
    num_samples: int = 1
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: Resources = Resources()
    report: ReportSpec = ReportSpec()
    smoke: SmokeSpec | None = None
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class TrialSpec:
    """One concrete trial: deterministic ``key`` (also the Tune trial name and MLflow child run name)."""

    key: str
    index: int
    variant: str
    overrides: dict[str, Any]
    params: dict[str, Any]
    paper: dict[str, float]
    paper_row: tuple[str, str] | None = None


@dataclass(frozen=True)
class SweepPlan:
    """A sweep resolved for one mode (full or ``--smoke``): every trial with its validated overrides."""

    spec: SweepSpec
    smoke: bool
    profile: str | None
    trials: tuple[TrialSpec, ...]
    resources: Resources
    scheduler: SchedulerSpec
    algorithm: str
    num_samples: int
    seed: int

    @property
    def experiment_name(self) -> str:
        """Tune experiment directory name (``<sweep>`` or ``<sweep>-smoke``)."""
        return f"{self.spec.name}-smoke" if self.smoke else self.spec.name

    def fingerprint(self) -> str:
        """Hash of everything that defines the trials; a restore refuses a changed plan."""
        payload = {
            "recipe": self.spec.recipe, "profile": self.profile, "metric": self.spec.metric, "mode": self.spec.mode,
            "trials": [[t.key, t.overrides] for t in self.trials],
            "scheduler": self.scheduler.__dict__, "resources": self.resources.__dict__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def trial(self, key: str) -> TrialSpec:
        for t in self.trials:
            if t.key == key:
                return t
        raise KeyError(f"sweep {self.spec.name!r} has no trial {key!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Loading


def list_sweeps(directory: str | Path = SWEEPS_DIR) -> list[str]:
    """Names of the sweep definitions shipped in ``sweeps/`` (file stems of ``*.yaml``)."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def sweep_path(name_or_path: str | Path) -> Path:
    """Resolve a sweep name (``pose_width_coco``) or a path to a YAML file.

    Raises:
        SweepConfigError: no such sweep; the message lists the available names.
    """
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if not p.is_file():
            raise SweepConfigError(f"sweep file {str(p)!r} does not exist")
        return p.resolve()
    candidate = SWEEPS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise SweepConfigError(
            f"unknown sweep {str(name_or_path)!r}; available: {', '.join(list_sweeps()) or '(none)'}")
    return candidate


class _Problems:
    """Collects validation problems so that one error names all of them."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}" if key else message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise SweepConfigError(f"{self.source}: {self.items[0]}")
        body = "\n".join(f"  - {m}" for m in self.items)
        raise SweepConfigError(f"{self.source}: {len(self.items)} problems:\n{body}")


def _check_keys(problems: _Problems, where: str, data: Any, allowed: set[str]) -> dict:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.add(where, f"expected a mapping, got {type(data).__name__}")
        return {}
    for k in data:
        if k not in allowed:
            problems.add(f"{where}.{k}" if where else str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return dict(data)


def _overrides(problems: _Problems, where: str, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.add(where, "expected a mapping of dotted recipe keys to values")
        return {}
    out = {}
    for k, v in data.items():
        if not isinstance(k, str) or not k:
            problems.add(where, f"override key {k!r} is not a dotted recipe key")
            continue
        out[k] = v
    return out


def _number(problems: _Problems, where: str, value: Any, kind: type, *, minimum: float | None = None,
            strict: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        problems.add(where, f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        return None
    if minimum is not None and (value <= minimum if strict else value < minimum):
        problems.add(where, f"must be {'>' if strict else '>='} {minimum}, got {value!r}")
        return None
    return kind(value)


def _parse_axis(problems: _Problems, key: str, spec: Any) -> Axis | None:
    where = f"search_space.{key}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        problems.add(where, f"expected exactly one of {sorted(_AXIS_KINDS)} (e.g. {{grid: [1, 2]}}), got {spec!r}")
        return None
    kind, values = next(iter(spec.items()))
    if kind not in _AXIS_KINDS:
        problems.add(where, f"unknown axis kind {kind!r} (allowed: {', '.join(sorted(_AXIS_KINDS))})")
        return None
    if not isinstance(values, (list, tuple)) or not values:
        problems.add(where, f"{kind} needs a non-empty list, got {values!r}")
        return None
    if kind in {"uniform", "loguniform", "randint"}:
        if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            problems.add(where, f"{kind} needs [low, high], got {values!r}")
            return None
        lo, hi = values
        if not lo < hi:
            problems.add(where, f"{kind} needs low < high, got {values!r}")
            return None
        if kind == "loguniform" and lo <= 0:
            problems.add(where, f"loguniform needs low > 0, got {values!r}")
            return None
        if kind == "randint" and not (isinstance(lo, int) and isinstance(hi, int)):
            problems.add(where, f"randint needs integer bounds, got {values!r}")
            return None
    return Axis(key=key, kind=kind, values=tuple(values))


def _parse_resources(problems: _Problems, where: str, data: Any, base: Resources | None = None) -> Resources:
    d = _check_keys(problems, where, data, _RESOURCE_KEYS)
    r = dict((base or Resources()).__dict__)
    if "use_gpu" in d:
        if not isinstance(d["use_gpu"], bool):
            problems.add(f"{where}.use_gpu", f"expected true/false, got {d['use_gpu']!r}")
        else:
            r["use_gpu"] = d["use_gpu"]
    for key, kind, minimum, strict in (("num_workers", int, 1, False), ("cpus_per_worker", float, 0, True),
                                       ("trainable_cpus", float, 0, True),
                                       ("max_concurrent_trials", int, 1, False)):
        if key in d and d[key] is not None:
            v = _number(problems, f"{where}.{key}", d[key], kind, minimum=minimum, strict=strict)
            if v is not None:
                r[key] = v
    if "trainable_resources" in d:
        tr = d["trainable_resources"]
        if not isinstance(tr, Mapping) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
                                              for v in tr.values()):
            problems.add(f"{where}.trainable_resources", f"expected a mapping resource -> positive amount, got {tr!r}")
        elif {"CPU", "GPU", "cpu", "gpu"} & set(tr):
            problems.add(f"{where}.trainable_resources", "CPUs go in trainable_cpus; the trial actor needs no GPU")
        else:
            r["trainable_resources"] = {str(k): float(v) for k, v in tr.items()}
    return Resources(**r)


def _parse_scheduler(problems: _Problems, where: str, data: Any, base: SchedulerSpec | None = None) -> SchedulerSpec:
    d = _check_keys(problems, where, data, _SCHEDULER_KEYS)
    s = dict((base or SchedulerSpec()).__dict__)
    if "type" in d:
        if d["type"] not in {"fifo", "asha"}:
            problems.add(f"{where}.type", f"expected fifo or asha, got {d['type']!r}")
        else:
            s["type"] = d["type"]
    for key, kind, minimum, strict in (("grace_period", int, 1, False), ("reduction_factor", float, 1, True),
                                       ("max_t", int, 1, False)):
        if key in d and d[key] is not None:
            v = _number(problems, f"{where}.{key}", d[key], kind, minimum=minimum, strict=strict)
            if v is not None:
                s[key] = v
    if "time_attr" in d:
        s["time_attr"] = str(d["time_attr"])
    if s["max_t"] is not None and s["grace_period"] > s["max_t"]:
        problems.add(f"{where}.grace_period", f"grace_period {s['grace_period']} exceeds max_t {s['max_t']}")
    return SchedulerSpec(**s)


def _parse_search(problems: _Problems, where: str, data: Any, base: dict | None = None) -> dict:
    d = _check_keys(problems, where, data, _SEARCH_KEYS)
    s = dict(base or {"algorithm": "grid", "num_samples": 1, "seed": 0})
    if "algorithm" in d:
        if d["algorithm"] not in {"grid", "random"}:
            problems.add(f"{where}.algorithm", f"expected grid or random, got {d['algorithm']!r}")
        else:
            s["algorithm"] = d["algorithm"]
    if "num_samples" in d:
        v = _number(problems, f"{where}.num_samples", d["num_samples"], int, minimum=1)
        if v is not None:
            s["num_samples"] = v
    if "seed" in d:
        v = _number(problems, f"{where}.seed", d["seed"], int, minimum=0)
        if v is not None:
            s["seed"] = v
    return s


def parse_sweep(data: Mapping[str, Any], source: str = "<sweep>") -> SweepSpec:
    """Parse and check the structure of a sweep mapping (no recipe resolution; see :func:`build_plan`).

    Raises:
        SweepConfigError: unknown keys, wrong types, empty search space, bad axis bounds, bad resources.
    """
    problems = _Problems(source)
    if not isinstance(data, Mapping):
        raise SweepConfigError(f"{source}: expected a YAML mapping at the top level")
    d = _check_keys(problems, "", data, _TOP_KEYS)
    for req in ("name", "recipe", "metric"):
        if not isinstance(d.get(req), str) or not d.get(req):
            problems.add(req, "required (a non-empty string)")
    mode = d.get("mode", "max")
    if mode not in {"max", "min"}:
        problems.add("mode", f"expected max or min, got {mode!r}")
    stem = Path(source).stem if source.endswith((".yaml", ".yml")) else None
    if stem and isinstance(d.get("name"), str) and d["name"] != stem:
        problems.add("name", f"{d['name']!r} must equal the file name {stem!r}")

    pd = _check_keys(problems, "paper", d.get("paper"), _PAPER_KEYS)
    if not pd.get("id") or not pd.get("table"):
        problems.add("paper", "needs `id` (paper id) and `table` (e.g. 'Table 6' or 'Figure 5')")
    paper = PaperRef(id=str(pd.get("id", "")), table=str(pd.get("table", "")),
                     row=None if pd.get("row") is None else str(pd["row"]), note=str(pd.get("note", "")))

    variants: list[Variant] = []
    raw_variants = d.get("variants") or []
    if not isinstance(raw_variants, list):
        problems.add("variants", "expected a list of {name, overrides, paper}")
        raw_variants = []
    seen: set[str] = set()
    for i, v in enumerate(raw_variants):
        vd = _check_keys(problems, f"variants[{i}]", v, _VARIANT_KEYS)
        name = vd.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+x-]+", name or ""):
            problems.add(f"variants[{i}].name", f"expected a short name of [A-Za-z0-9_.+x-], got {name!r}")
            continue
        if name in seen:
            problems.add(f"variants[{i}].name", f"duplicate variant {name!r}")
        seen.add(name)
        ov = _overrides(problems, f"variants[{i}].overrides", vd.get("overrides"))
        pv = vd.get("paper") or {}
        paper_vals: dict[str, float] = {}
        if not isinstance(pv, Mapping):
            problems.add(f"variants[{i}].paper", "expected a mapping metric -> value")
        else:
            for mk, mv in pv.items():
                if isinstance(mv, bool) or not isinstance(mv, (int, float)):
                    problems.add(f"variants[{i}].paper.{mk}", f"expected a number, got {mv!r}")
                else:
                    paper_vals[str(mk)] = float(mv)
        prow = vd.get("paper_row")
        paper_row = None
        if isinstance(prow, str):
            paper_row = (str(pd.get("table", "")), prow)
        elif isinstance(prow, Mapping) and set(prow) == {"table", "row"}:
            paper_row = (str(prow["table"]), str(prow["row"]))
        elif prow is not None:
            problems.add(f"variants[{i}].paper_row", f"expected a row id or {{table, row}}, got {prow!r}")
        variants.append(Variant(name=name, overrides=ov, paper=paper_vals, note=str(vd.get("note", "")),
                                paper_row=paper_row))

    axes: list[Axis] = []
    ss = d.get("search_space") or {}
    if not isinstance(ss, Mapping):
        problems.add("search_space", "expected a mapping of recipe key -> {grid|choice|uniform|loguniform|randint: ...}")
        ss = {}
    for key, spec in ss.items():
        ax = _parse_axis(problems, str(key), spec)
        if ax is not None:
            axes.append(ax)
    if not raw_variants and not ss:
        problems.add("search_space", "empty search space: give `variants` and/or `search_space` axes")

    search = _parse_search(problems, "search", d.get("search"))
    if search["algorithm"] == "grid":
        for ax in axes:
            if ax.kind != "grid":
                problems.add(f"search_space.{ax.key}", f"{ax.kind} axes need search.algorithm: random")
    scheduler = _parse_scheduler(problems, "scheduler", d.get("scheduler"))
    resources = _parse_resources(problems, "resources", d.get("resources"))
    rd = _check_keys(problems, "report", d.get("report"), _REPORT_KEYS)
    report = ReportSpec(x=str(rd.get("x", "variant")), title=str(rd.get("title", "")))
    swept = {k for v in variants for k in v.overrides} | {a.key for a in axes}
    if report.x not in REPORT_X and report.x not in swept:
        problems.add("report.x", f"{report.x!r} is neither one of {sorted(REPORT_X)} nor a swept key {sorted(swept)}")

    smoke = None
    if d.get("smoke") is not None:
        sd = _check_keys(problems, "smoke", d["smoke"], _SMOKE_KEYS)
        sv = sd.get("variants")
        smoke_variants = None
        if sv is not None:
            if not isinstance(sv, Mapping) or not sv:
                problems.add("smoke.variants", "expected a non-empty mapping variant name -> overrides")
            else:
                smoke_variants = {}
                for vn, vo in sv.items():
                    if vn not in seen:
                        problems.add(f"smoke.variants.{vn}", f"not a variant of this sweep ({', '.join(sorted(seen))})")
                    smoke_variants[str(vn)] = _overrides(problems, f"smoke.variants.{vn}", vo)
        smoke = SmokeSpec(
            profile=sd.get("profile", "smoke"),
            overrides=_overrides(problems, "smoke.overrides", sd.get("overrides")),
            variants=smoke_variants,
            resources=dict(sd.get("resources") or {}),
            search=dict(sd.get("search") or {}),
            scheduler=dict(sd.get("scheduler") or {}),
        )
        _parse_resources(problems, "smoke.resources", smoke.resources, resources)
        _parse_search(problems, "smoke.search", smoke.search, search)
        _parse_scheduler(problems, "smoke.scheduler", smoke.scheduler, scheduler)

    problems.raise_if_any()
    return SweepSpec(
        name=d["name"], recipe=d["recipe"], metric=d["metric"], mode=mode, paper=paper, variants=tuple(variants),
        axes=tuple(axes), algorithm=search["algorithm"], num_samples=search["num_samples"], seed=search["seed"],
        overrides=_overrides(problems, "overrides", d.get("overrides")), scheduler=scheduler, resources=resources,
        report=report, smoke=smoke, description=str(d.get("description", "")), source=source,
    )


def load_sweep(name_or_path: str | Path) -> SweepSpec:
    """Read and structurally validate a sweep by name (``sweeps/<name>.yaml``) or path.

    Raises:
        SweepConfigError: missing file, YAML syntax error, or schema problems (all listed in one message).
    """
    path = sweep_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_sweep(data, source=str(path))


# ----------------------------------------------------------------------------------------------------------------------
# Trial plan


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt_value(x) for x in v)
    return str(v)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def _sample(axis: Axis, rng: np.random.Generator) -> Any:
    if axis.kind == "choice":
        return copy.deepcopy(axis.values[int(rng.integers(len(axis.values)))])
    lo, hi = axis.values
    if axis.kind == "uniform":
        return float(rng.uniform(lo, hi))
    if axis.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return int(rng.integers(lo, hi))


def _default_recipe_loader() -> Callable[..., Any]:
    from hrnet_core.recipes import load_recipe  # imported lazily: parsing a sweep file needs no torch

    return load_recipe


def build_plan(spec: SweepSpec, *, smoke: bool = False, overrides: Mapping[str, Any] | None = None,
               recipe_loader: Callable[..., Any] | None = None) -> SweepPlan:
    """Expand a sweep into its concrete trials and resolve each trial's recipe.

    Trials are the product of the variants (the study's rows) and the ``grid`` axes, repeated ``num_samples`` times;
    with ``search.algorithm: random`` the ``choice/uniform/loguniform/randint`` axes are sampled with a NumPy
    generator seeded by ``search.seed``, so the plan (and every trial key) is the same on every call. That is what
    lets ``Tuner.restore`` and the MLflow child runs line up after an interruption.

    Args:
        spec: a parsed sweep.
        smoke: apply the sweep's ``smoke`` section (recipe profile, kept variants, small resources).
        overrides: extra recipe overrides for every trial (e.g. ``data.root`` on a cluster); the variants' own
            overrides still win for the keys they set.
        recipe_loader: ``load_recipe(name, overrides=..., profile=...)``; defaults to ``hrnet_core.recipes.load_recipe``.

    Raises:
        SweepConfigError: unknown recipe, override keys the recipe rejects, ``--smoke`` on a sweep without a smoke
            section, or an ASHA scheduler without ``max_t`` when the recipe has no ``train.epochs``.
    """
    loader = recipe_loader or _default_recipe_loader()
    problems = _Problems(spec.source or spec.name)
    profile: str | None = None
    shared = dict(spec.overrides)
    variants = list(spec.variants)
    resources, scheduler = spec.resources, spec.scheduler
    search = {"algorithm": spec.algorithm, "num_samples": spec.num_samples, "seed": spec.seed}
    if smoke:
        if spec.smoke is None:
            raise SweepConfigError(f"{spec.source or spec.name}: --smoke needs a `smoke:` section in the sweep file")
        profile = spec.smoke.profile
        shared.update(spec.smoke.overrides)
        if spec.smoke.variants is not None:
            variants = [Variant(v.name, {**v.overrides, **spec.smoke.variants[v.name]}, v.paper, v.note, v.paper_row)
                        for v in variants if v.name in spec.smoke.variants]
        resources = _parse_resources(problems, "smoke.resources", spec.smoke.resources, resources)
        scheduler = _parse_scheduler(problems, "smoke.scheduler", spec.smoke.scheduler, scheduler)
        search = _parse_search(problems, "smoke.search", spec.smoke.search, search)
        problems.raise_if_any()
    shared.update(overrides or {})

    # The base recipe must exist on its own: report that once instead of once per trial.
    try:
        base = loader(spec.recipe, overrides=shared, profile=profile)
    except Exception as e:  # noqa: BLE001 - recipe errors come in several types; all mean "bad sweep file"
        raise SweepConfigError(
            f"{spec.source or spec.name}: recipe {spec.recipe!r}"
            f"{f' (profile {profile!r})' if profile else ''}: {type(e).__name__}: {e}") from None

    if scheduler.type == "asha" and scheduler.max_t is None:
        epochs = _get_dotted(_recipe_dict(base), "train.epochs")
        if not isinstance(epochs, int):
            problems.add("scheduler.max_t", "ASHA needs max_t (the recipe has no integer train.epochs)")
        else:
            scheduler = SchedulerSpec(**{**scheduler.__dict__, "max_t": epochs})
        if scheduler.max_t is not None and scheduler.grace_period > scheduler.max_t:
            problems.add("scheduler.grace_period", f"grace_period {scheduler.grace_period} exceeds max_t {scheduler.max_t}")

    grid_axes = [a for a in spec.axes if a.kind == "grid"]
    sampled_axes = [a for a in spec.axes if a.kind != "grid"]
    rng = np.random.default_rng(search["seed"])
    rows = variants or [Variant(name="base", overrides={})]
    trials: list[TrialSpec] = []
    combos = list(itertools.product(rows, *[a.values for a in grid_axes]))
    for rep in range(search["num_samples"]):
        for combo in combos:
            variant, grid_values = combo[0], combo[1:]
            params = {a.key: copy.deepcopy(v) for a, v in zip(grid_axes, grid_values)}
            for a in sampled_axes:
                params[a.key] = _sample(a, rng)
            overrides = {**shared, **variant.overrides, **params}
            idx = len(trials)
            parts = [f"t{idx:02d}", variant.name]
            parts += [f"{a.key.split('.')[-1]}={_fmt_value(params[a.key])}" for a in spec.axes]
            if search["num_samples"] > 1 and not sampled_axes:
                parts.append(f"rep{rep}")
            key = _slug("-".join(parts))
            trials.append(TrialSpec(key=key, index=idx, variant=variant.name, overrides=overrides, params=params,
                                    paper=dict(variant.paper), paper_row=variant.paper_row))

    for v in spec.variants:
        problems.items.extend(f"variants.{v.name}.paper_row: {m}" for m in check_paper_row(spec.paper.id, spec.metric, v))
    rejected: dict[str, list[str]] = {}  # one line per distinct recipe error, naming every trial it hits
    for t in trials:
        try:
            loader(spec.recipe, overrides=t.overrides, profile=profile)
        except Exception as e:  # noqa: BLE001
            rejected.setdefault(f"{type(e).__name__}: {e}", []).append(t.key)
    for err, keys in rejected.items():
        problems.add(f"trial{'s' if len(keys) > 1 else ''} {', '.join(keys)}",
                     f"recipe {spec.recipe!r}{f' (profile {profile!r})' if profile else ''} rejects the overrides: {err}")
    if not trials:
        problems.add("variants", "no trial left (smoke.variants selects none?)")
    problems.raise_if_any()
    return SweepPlan(spec=spec, smoke=smoke, profile=profile, trials=tuple(trials), resources=resources,
                     scheduler=scheduler, algorithm=search["algorithm"], num_samples=search["num_samples"],
                     seed=search["seed"])


def check_paper_row(paper_id: str, metric: str, variant: Variant) -> list[str]:
    """Problems between a variant's quoted paper values and its row in ``hrnet_core.paper_tables`` (empty: agree).

    Every value the sweep quotes must equal the table's; when the table has the sweep's ``metric`` the sweep must
    quote it too, so that the sweep file stays a self-contained copy of the values it compares against.
    """
    if variant.paper_row is None:
        return []
    from hrnet_core.paper_tables import find_row

    table, row_id = variant.paper_row
    try:
        row = find_row(paper_id, table, row_id)
    except KeyError as e:
        return [str(e.args[0]) if e.args else str(e)]
    where = f"paper_tables {paper_id}/{table}/{row_id!r}"
    out = []
    for m, value in variant.paper.items():
        if m not in row.metrics:
            out.append(f"{m} {value} is quoted but {where} has no {m}")
        elif abs(row.metrics[m] - value) > 1e-9:
            out.append(f"{m} {value} differs from {where}: {row.metrics[m]}")
    if metric in row.metrics and metric not in variant.paper:
        out.append(f"{where} has {metric} {row.metrics[metric]}; quote it in the variant's `paper`")
    return out


def _recipe_dict(recipe: Any) -> dict:
    if hasattr(recipe, "to_dict"):
        return recipe.to_dict()
    if isinstance(recipe, Mapping):
        return dict(recipe)
    return {}


def _get_dotted(d: Mapping, key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


# ----------------------------------------------------------------------------------------------------------------------
# Cluster fit


def check_cluster_fit(plan: SweepPlan, cluster: Mapping[str, float],
                      nodes: Sequence[Mapping[str, float]] | None = None) -> int:
    """Check that one trial fits the cluster and return how many trials can run at once.

    Args:
        plan: the resolved sweep.
        cluster: total logical resources (``ray.cluster_resources()``), e.g. ``{"CPU": 2.0}``.
        nodes: per-node totals; when given, one worker's bundle must fit on a single node.

    Returns:
        ``max_concurrent_trials``: ``floor(cluster[r] / per_trial[r])`` over the requested resources (GPUs when the
        trial uses GPUs, else CPUs), capped by ``resources.max_concurrent_trials`` and the number of trials.

    Raises:
        SweepConfigError: one trial needs more than the cluster has (names the resource and both amounts).
    """
    res = plan.resources
    need = res.per_trial()
    where = plan.spec.source or plan.spec.name
    for r, amount in sorted(need.items(), key=lambda kv: (kv[0] != "GPU", kv[0] != "CPU", kv[0])):
        have = float(cluster.get(r, 0.0))
        if amount > have + 1e-9:
            raise SweepConfigError(
                f"{where}: resources{'(smoke)' if plan.smoke else ''}: one trial needs {amount:g} {r} "
                f"({res.num_workers} workers x {res.per_worker().get(r, 0):g} {r}"
                f"{f' + {res.trainable_cpus:g} for the trial driver' if r == 'CPU' and res.trainable_cpus else ''}) "
                f"but the cluster has {have:g} {r}")
    if nodes:
        bundle = res.per_worker()
        if not any(all(float(n.get(r, 0.0)) + 1e-9 >= a for r, a in bundle.items()) for n in nodes):
            biggest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
            raise SweepConfigError(
                f"{where}: resources: one training worker needs {bundle} on a single node; the largest node has "
                f"{ {k: biggest.get(k, 0) for k in bundle} }")
    limiting = "GPU" if res.use_gpu else "CPU"
    per = res.per_worker()[limiting] * res.num_workers + (res.trainable_cpus if limiting == "CPU" else 0)
    fits = max(1, int(math.floor(float(cluster.get(limiting, 0.0)) / per + 1e-9))) if per > 0 else len(plan.trials)
    if res.max_concurrent_trials:
        fits = min(fits, res.max_concurrent_trials)
    return max(1, min(fits, len(plan.trials)))
