"""Reading sweep files: YAML -> :class:`~sweeps.spec.schema.SweepFile` (typed, by :mod:`hrnet_core.schema`) ->
:class:`~sweeps.spec.schema.SweepSpec` (checked across keys).

Every problem of one file is collected into a single :class:`SweepConfigError` naming the file and each key at fault.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from hrnet_core.schema import build_dataclass

from .schema import (
    AXIS_KINDS, REPORT_X, SWEEPS_DIR, Axis, PaperRef, Resources, SchedulerSpec, SearchSpec, SmokeSpec,
    SweepConfigError, SweepFile, SweepSpec, Variant, VariantEntry,
)

T = TypeVar("T")

# lower bounds of numeric fields: (minimum, strict) - strict: the value must be above it
_MINIMUMS: dict[type, dict[str, tuple[float, bool]]] = {
    Resources: {"num_workers": (1, False), "cpus_per_worker": (0, True), "trainable_cpus": (0, True),
                "max_concurrent_trials": (1, False), "data_task_cpus": (0, True)},
    SchedulerSpec: {"grace_period": (1, False), "reduction_factor": (1, True), "max_t": (1, False)},
    SearchSpec: {"num_samples": (1, False), "seed": (0, False)},
}
_VARIANT_NAME = re.compile(r"[A-Za-z0-9_.+x-]+")


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


class Problems:
    """Collects the validation problems of one sweep so that one error names all of them."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        """Record ``key: message`` (``message`` alone for an empty key)."""
        self.items.append(f"{key}: {message}" if key else message)

    def build(self, cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T | None:
        """``cls`` built from ``data`` by :func:`hrnet_core.schema.build_dataclass`, recording its problems (bad
        values keep their defaults); ``None`` when a required key is missing or bad."""
        errors: list[Exception] = []
        out = build_dataclass(cls, data, source=self.source, prefix=prefix, error=SweepConfigError, problems=errors)
        for e in errors:
            self.add(e.key, e.reason)  # type: ignore[attr-defined]
        return out

    def raise_if_any(self) -> None:
        """Raise one :class:`SweepConfigError` listing every recorded problem (nothing when there is none)."""
        if not self.items:
            return
        if len(self.items) == 1:
            raise SweepConfigError(f"{self.source}: {self.items[0]}")
        body = "\n".join(f"  - {m}" for m in self.items)
        raise SweepConfigError(f"{self.source}: {len(self.items)} problems:\n{body}")


def check_section(problems: Problems, section: Any, prefix: str) -> None:
    """Record the values of a built ``resources`` / ``scheduler`` / ``search`` section that are out of range."""
    for key, (minimum, strict) in _MINIMUMS.get(type(section), {}).items():
        value = getattr(section, key)
        if value is not None and (value <= minimum if strict else value < minimum):
            problems.add(f"{prefix}{key}", f"must be {'>' if strict else '>='} {minimum}, got {value!r}")
    if isinstance(section, SchedulerSpec) and section.max_t is not None and section.grace_period > section.max_t:
        problems.add(f"{prefix}grace_period", f"grace_period {section.grace_period} exceeds max_t {section.max_t}")
    if isinstance(section, Resources):
        tr = section.trainable_resources
        if any(v <= 0 for v in tr.values()):
            problems.add(f"{prefix}trainable_resources", f"expected a mapping resource -> positive amount, got {tr!r}")
        elif {"CPU", "GPU", "cpu", "gpu"} & set(tr):
            problems.add(f"{prefix}trainable_resources", "CPUs go in trainable_cpus; the trial actor needs no GPU")
        if section.placement not in ("pack", "spread"):
            problems.add(f"{prefix}placement", f"expected pack or spread, got {section.placement!r}")


def merged_section(problems: Problems, base: T, update: Mapping[str, Any], prefix: str) -> T:
    """Section ``base`` with the keys of ``update`` (a smoke section) replaced, checked like the full sweep's
    (problems recorded under ``prefix``, e.g. ``smoke.resources.``); ``base`` itself when ``update`` is bad."""
    out = problems.build(type(base), {**dataclasses.asdict(base), **update}, prefix)  # type: ignore[arg-type]
    if out is None:
        return base
    check_section(problems, out, prefix)
    return out


def _parse_axis(problems: Problems, key: str, spec: Any) -> Axis | None:
    where = f"search_space.{key}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        problems.add(where, f"expected exactly one of {sorted(AXIS_KINDS)} (e.g. {{grid: [1, 2]}}), got {spec!r}")
        return None
    kind, values = next(iter(spec.items()))
    if kind not in AXIS_KINDS:
        problems.add(where, f"unknown axis kind {kind!r} (allowed: {', '.join(sorted(AXIS_KINDS))})")
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


def _variant(problems: Problems, where: str, entry: VariantEntry, paper: PaperRef) -> Variant | None:
    if not _VARIANT_NAME.fullmatch(entry.name):
        problems.add(f"{where}.name", f"expected a short name of [A-Za-z0-9_.+x-], got {entry.name!r}")
        return None
    row = entry.paper_row
    paper_row = None if row is None else (paper.table, row) if isinstance(row, str) else (row.table, row.row)
    return Variant(name=entry.name, overrides=dict(entry.overrides or {}), paper=dict(entry.paper or {}),
                   note=entry.note, paper_row=paper_row)


def _smoke(problems: Problems, smoke: SmokeSpec, variants: set[str], f: SweepFile) -> None:
    if smoke.variants is not None:
        if not smoke.variants:
            problems.add("smoke.variants", "expected a non-empty mapping variant name -> overrides")
        for name in smoke.variants:
            if name not in variants:
                problems.add(f"smoke.variants.{name}", f"not a variant of this sweep ({', '.join(sorted(variants))})")
    merged_section(problems, f.resources, smoke.resources, "smoke.resources.")
    merged_section(problems, f.search, smoke.search, "smoke.search.")
    merged_section(problems, f.scheduler, smoke.scheduler, "smoke.scheduler.")


def parse_sweep(data: Mapping[str, Any], source: str = "<sweep>") -> SweepSpec:
    """Parse and check the structure of a sweep mapping (no recipe resolution; see :func:`sweeps.spec.build_plan`).

    Raises:
        SweepConfigError: unknown keys, wrong types, empty search space, bad axis bounds, bad resources (every
            problem of the file in one message).
    """
    if not isinstance(data, Mapping):
        raise SweepConfigError(f"{source}: expected a YAML mapping at the top level")
    problems = Problems(source)
    f = problems.build(SweepFile, data)
    if f is None:  # a required key is missing or bad: report the structural problems only
        problems.raise_if_any()
    assert f is not None
    for key in ("name", "recipe", "metric"):
        if not getattr(f, key):
            problems.add(key, "required (a non-empty string)")
    stem = Path(source).stem if source.endswith((".yaml", ".yml")) else None
    if stem and f.name != stem:
        problems.add("name", f"{f.name!r} must equal the file name {stem!r}")
    if not f.paper.id or not f.paper.table:
        problems.add("paper", "needs `id` (paper id) and `table` (e.g. 'Table 6' or 'Figure 5')")

    variants: list[Variant] = []
    for i, entry in enumerate(f.variants or []):
        variant = _variant(problems, f"variants[{i}]", entry, f.paper)
        if variant is None:
            continue
        if any(v.name == variant.name for v in variants):
            problems.add(f"variants[{i}].name", f"duplicate variant {variant.name!r}")
        variants.append(variant)
    axes = [ax for key, spec in (f.search_space or {}).items() if (ax := _parse_axis(problems, key, spec))]
    if not f.variants and not f.search_space:
        problems.add("search_space", "empty search space: give `variants` and/or `search_space` axes")

    for section, prefix in ((f.search, "search."), (f.scheduler, "scheduler."), (f.resources, "resources.")):
        check_section(problems, section, prefix)
    if f.search.algorithm == "grid":
        for ax in axes:
            if ax.kind != "grid":
                problems.add(f"search_space.{ax.key}", f"{ax.kind} axes need search.algorithm: random")
    swept = {k for v in variants for k in v.overrides} | {a.key for a in axes}
    if f.report.x not in REPORT_X and f.report.x not in swept:
        problems.add("report.x", f"{f.report.x!r} is neither one of {sorted(REPORT_X)} nor a swept key {sorted(swept)}")
    if f.smoke is not None:
        _smoke(problems, f.smoke, {v.name for v in variants}, f)

    problems.raise_if_any()
    return SweepSpec(
        name=f.name, recipe=f.recipe, metric=f.metric, mode=f.mode, paper=f.paper, variants=tuple(variants),
        axes=tuple(axes), algorithm=f.search.algorithm, num_samples=f.search.num_samples, seed=f.search.seed,
        overrides=dict(f.overrides or {}), scheduler=f.scheduler, resources=f.resources, report=f.report,
        smoke=f.smoke, description=f.description, source=source,
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
