"""The schema of ``sweeps/*.yaml``: the dataclasses a sweep file is built into (:mod:`hrnet_core.schema` reads their
annotations), those of a parsed sweep and of its trial plan.

:class:`SweepFile` is a file as written (the YAML layout of :mod:`sweeps.spec`); :func:`sweeps.spec.parse_sweep`
turns it into a :class:`SweepSpec`, and :func:`sweeps.spec.build_plan` expands that into a :class:`SweepPlan` of
:class:`TrialSpec`. Pure data: no Ray, no MLflow, no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hrnet_core.errors import BadInputError

SWEEPS_DIR = Path(__file__).resolve().parents[1]

REPORT_X = {"variant", "gflops", "gmacs", "params"}
AXIS_KINDS = {"grid", "choice", "uniform", "loguniform", "randint"}


class SweepConfigError(BadInputError, ValueError):
    """A sweep file is invalid; the message names the file and every offending key."""


@dataclass(frozen=True)
class PaperRef:
    """The paper table or figure a sweep reproduces (``id`` as in ``hrnet_core.paper_tables``).

    ``note`` / ``metric_note``: free text for the report (what the paper prints, how the metric compares).
    """

    id: str
    table: str
    row: str | None = None
    note: str = ""
    metric_note: str = ""

    @property
    def label(self) -> str:
        """``Table 6`` for a numbered table (``table: "6"``), else the name as written (``Figure 5``)."""
        return f"Table {self.table}" if self.table[:1].isdigit() else self.table


@dataclass(frozen=True)
class Variant:
    """One named row of the study: a bundle of recipe overrides and the paper's values for it.

    ``paper`` maps metric names (``AP``...) to the value the paper prints; empty when the paper has no number.
    ``paper_row`` = ``(table, row)`` names the same row in ``hrnet_core.paper_tables`` (``find_row(paper.id, table,
    row)``); :func:`sweeps.spec.build_plan` checks that the values agree, and the child run's ``paper.table`` /
    ``paper.row`` tags use it so that the project report can match the run to the row.
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

    type: Literal["fifo", "asha"] = "fifo"
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
    ``data_task_cpus`` is what one Ray Data decode task of a trial reserves (the per-node rule of
    :mod:`pipelines.cluster` keeps that much free on some node); ``placement`` spreads a trial's workers over the
    nodes (``spread``) or packs them (``pack``, Ray Train's default).
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    trainable_cpus: float = 0.01
    trainable_resources: dict[str, float] = field(default_factory=dict)
    max_concurrent_trials: int | None = None
    data_task_cpus: float = 1.0
    placement: str = "pack"

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
class SearchSpec:
    """``search:``: ``grid`` (every combination) or ``random`` (sampled axes, seeded), ``num_samples`` repeats."""

    algorithm: Literal["grid", "random"] = "grid"
    num_samples: int = 1
    seed: int = 0


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
class PaperRowRef:
    """A variant's ``paper_row`` written as ``{table, row}`` (a row of another table than the sweep's)."""

    table: str
    row: str


@dataclass(frozen=True)
class VariantEntry:
    """One entry of ``variants:`` as written; ``paper_row`` is a row id of the sweep's table or ``{table, row}``."""

    name: str
    overrides: dict[str, Any] | None = None
    paper: dict[str, float] | None = None
    paper_row: str | PaperRowRef | None = None
    note: str = ""


@dataclass(frozen=True)
class SweepFile:
    """A sweep file as written (the YAML layout of :mod:`sweeps.spec`), before the checks across keys."""

    name: str
    recipe: str
    metric: str
    paper: PaperRef
    description: str = ""
    overrides: dict[str, Any] | None = None
    mode: Literal["max", "min"] = "max"
    search: SearchSpec = SearchSpec()
    variants: list[VariantEntry] | None = None
    search_space: dict[str, Any] | None = None
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: Resources = Resources()
    report: ReportSpec = ReportSpec()
    smoke: SmokeSpec | None = None


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see :mod:`sweeps.spec` for the YAML layout)."""

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

    @property
    def search(self) -> SearchSpec:
        """``algorithm``, ``num_samples`` and ``seed`` as a :class:`SearchSpec`."""
        return SearchSpec(self.algorithm, self.num_samples, self.seed)


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


def _fingerprinted(res: Resources) -> dict[str, Any]:
    """The resources that count in a plan's fingerprint: ``data_task_cpus`` and ``placement`` only when they differ
    from their defaults, so that sweeps interrupted before these keys existed still resume."""
    out = dict(res.__dict__)
    for key, default in (("data_task_cpus", 1.0), ("placement", "pack")):
        if out.get(key) == default:
            out.pop(key)
    return out


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
            "scheduler": self.scheduler.__dict__, "resources": _fingerprinted(self.resources),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def trial(self, key: str) -> TrialSpec:
        """The trial named ``key``; ``KeyError`` when the plan has none."""
        for t in self.trials:
            if t.key == key:
                return t
        raise KeyError(f"sweep {self.spec.name!r} has no trial {key!r}")
