"""The trial plan of a sweep: the deterministic expansion of variants x grid axes (x samples), each trial's recipe
resolved, and the check that one trial fits the Ray cluster."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .parse import Problems, merged_section
from .schema import (
    Axis, Resources, SchedulerSpec, SearchSpec, SweepConfigError, SweepPlan, SweepSpec, TrialSpec, Variant,
)


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
    problems = Problems(spec.source or spec.name)
    profile, shared, variants, resources, scheduler, search = _sections(spec, smoke, problems)
    shared.update(overrides or {})

    # The base recipe must exist on its own: report that once instead of once per trial.
    try:
        base = loader(spec.recipe, overrides=shared, profile=profile)
    except Exception as e:  # noqa: BLE001 - recipe errors come in several types; all mean "bad sweep file"
        raise SweepConfigError(
            f"{spec.source or spec.name}: recipe {spec.recipe!r}"
            f"{f' (profile {profile!r})' if profile else ''}: {type(e).__name__}: {e}") from None

    scheduler = _asha_max_t(scheduler, base, problems)
    trials = _expand_trials(spec, variants, shared, search)
    _check_trials(spec, trials, loader, profile, problems)
    problems.raise_if_any()
    return SweepPlan(spec=spec, smoke=smoke, profile=profile, trials=tuple(trials), resources=resources,
                     scheduler=scheduler, algorithm=search.algorithm, num_samples=search.num_samples,
                     seed=search.seed)


def _sections(spec: SweepSpec, smoke: bool, problems: Problems
              ) -> tuple[str | None, dict[str, Any], list[Variant], Resources, SchedulerSpec, SearchSpec]:
    """``(profile, shared overrides, variants, resources, scheduler, search)`` of the plan: the sweep's own, or with
    ``smoke`` its ``smoke:`` section applied (profile, overrides, kept variants with their smoke overrides, and the
    sections' replaced keys, checked like the full sweep's).

    Raises:
        SweepConfigError: ``smoke`` on a sweep without a ``smoke:`` section, or a bad smoke section.
    """
    profile: str | None = None
    shared = dict(spec.overrides)
    variants = list(spec.variants)
    resources, scheduler, search = spec.resources, spec.scheduler, spec.search
    if smoke:
        if spec.smoke is None:
            raise SweepConfigError(f"{spec.source or spec.name}: --smoke needs a `smoke:` section in the sweep file")
        profile = spec.smoke.profile
        shared.update(spec.smoke.overrides)
        if spec.smoke.variants is not None:
            variants = [Variant(v.name, {**v.overrides, **spec.smoke.variants[v.name]}, v.paper, v.note, v.paper_row)
                        for v in variants if v.name in spec.smoke.variants]
        resources = merged_section(problems, resources, spec.smoke.resources, "smoke.resources.")
        scheduler = merged_section(problems, scheduler, spec.smoke.scheduler, "smoke.scheduler.")
        search = merged_section(problems, search, spec.smoke.search, "smoke.search.")
        problems.raise_if_any()
    return profile, shared, variants, resources, scheduler, search


def _asha_max_t(scheduler: SchedulerSpec, base: Any, problems: Problems) -> SchedulerSpec:
    """``scheduler`` with an ASHA ``max_t`` left out set to the base recipe's ``train.epochs`` (recorded as a problem
    when the recipe has no integer ``train.epochs``, or when ``grace_period`` exceeds it)."""
    if scheduler.type == "asha" and scheduler.max_t is None:
        epochs = _get_dotted(_recipe_dict(base), "train.epochs")
        if not isinstance(epochs, int):
            problems.add("scheduler.max_t", "ASHA needs max_t (the recipe has no integer train.epochs)")
        else:
            scheduler = dataclasses.replace(scheduler, max_t=epochs)
        if scheduler.max_t is not None and scheduler.grace_period > scheduler.max_t:
            problems.add("scheduler.grace_period", f"grace_period {scheduler.grace_period} exceeds max_t {scheduler.max_t}")
    return scheduler


def _expand_trials(spec: SweepSpec, variants: Sequence[Variant], shared: Mapping[str, Any],
                   search: SearchSpec) -> list[TrialSpec]:
    """The trials: variants x ``grid`` axes, ``search.num_samples`` times, the sampled axes drawn from a generator
    seeded by ``search.seed``; keys ``t<index>-<variant>-<axis>=<value>...`` (``-rep<n>`` for repeats of a pure
    grid). Each trial's overrides: ``shared``, then the variant's, then its axis values."""
    grid_axes = [a for a in spec.axes if a.kind == "grid"]
    sampled_axes = [a for a in spec.axes if a.kind != "grid"]
    rng = np.random.default_rng(search.seed)
    rows = variants or [Variant(name="base", overrides={})]
    trials: list[TrialSpec] = []
    combos = list(itertools.product(rows, *[a.values for a in grid_axes]))
    for rep in range(search.num_samples):
        for combo in combos:
            variant, grid_values = combo[0], combo[1:]
            params = {a.key: copy.deepcopy(v) for a, v in zip(grid_axes, grid_values)}
            for a in sampled_axes:
                params[a.key] = _sample(a, rng)
            overrides = {**shared, **variant.overrides, **params}
            idx = len(trials)
            parts = [f"t{idx:02d}", variant.name]
            parts += [f"{a.key.split('.')[-1]}={_fmt_value(params[a.key])}" for a in spec.axes]
            if search.num_samples > 1 and not sampled_axes:
                parts.append(f"rep{rep}")
            key = _slug("-".join(parts))
            trials.append(TrialSpec(key=key, index=idx, variant=variant.name, overrides=overrides, params=params,
                                    paper=dict(variant.paper), paper_row=variant.paper_row))
    return trials


def _check_trials(spec: SweepSpec, trials: Sequence[TrialSpec], loader: Callable[..., Any], profile: str | None,
                  problems: Problems) -> None:
    """Record the problems of the expanded trials: variants' quoted paper values against their paper-table rows
    (:func:`check_paper_row`), overrides a trial's recipe rejects (one line per distinct error, naming every trial it
    hits), and an empty plan."""
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


def check_cluster_fit(plan: SweepPlan, cluster: Mapping[str, float],
                      nodes: Sequence[Mapping[str, float]] | None = None) -> int:
    """Check that one trial fits the cluster and return how many trials can run at once.

    Args:
        plan: the resolved sweep.
        cluster: total logical resources (``ray.cluster_resources()``), e.g. ``{"CPU": 2.0}``.
        nodes: per-node totals (``pipelines.cluster.node_resources(ray.nodes())``); when given, the per-node rule of
            :mod:`pipelines.cluster` applies: every bundle (trial actor, workers) on one node, and some node keeps
            ``resources.data_task_cpus`` CPUs free for the Ray Data decode tasks whatever node the bundles land on.
            Concurrency is then the largest number of trials whose bundles satisfy it together.

    Returns:
        ``max_concurrent_trials``: ``floor(cluster[r] / per_trial[r])`` over the requested resources (GPUs when the
        trial uses GPUs, else CPUs), with ``nodes`` also at most what the per-node rule allows, capped by
        ``resources.max_concurrent_trials`` and the number of trials.

    Raises:
        SweepConfigError: one trial needs more than the cluster has (names the resource and both amounts), or, with
            ``nodes``, breaks the per-node rule (one line naming the resource; ``pipelines.cluster.check_fit``).
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
    limiting = "GPU" if res.use_gpu else "CPU"
    per = res.per_worker()[limiting] * res.num_workers + (res.trainable_cpus if limiting == "CPU" else 0)
    fits = max(1, int(math.floor(float(cluster.get(limiting, 0.0)) / per + 1e-9))) if per > 0 else len(plan.trials)
    if res.max_concurrent_trials:
        fits = min(fits, res.max_concurrent_trials)
    fits = max(1, min(fits, len(plan.trials)))
    if nodes:
        fits = _per_node_concurrency(plan, nodes, fits, where)
    return fits


def trial_bundles(resources: Any) -> list[dict[str, float]]:
    """The bundles one trial holds while it trains: the Tune trial actor's and one per training worker."""
    return [resources.trial_actor()] + [resources.per_worker() for _ in range(resources.num_workers)]


def _per_node_concurrency(plan: SweepPlan, nodes: Sequence[Mapping[str, float]], most: int, where: str) -> int:
    """The largest ``k <= most`` whose ``k`` trials pass ``pipelines.cluster.check_fit`` together (at least one)."""
    from pipelines.cluster import ClusterError, check_fit

    res = plan.resources
    ok = 0
    for k in range(1, most + 1):
        try:
            check_fit(nodes, trial_bundles(res) * k, data_task_cpus=res.data_task_cpus,
                      what=f"{k} trial{'s' if k > 1 else ''} ({res.num_workers} workers x "
                           f"{res.per_worker()} + the trial actor {res.trial_actor()})")
        except ClusterError as e:
            if k == 1:
                raise SweepConfigError(f"{where}: resources{'(smoke)' if plan.smoke else ''}: {e}") from None
            break
        ok = k
    return ok
