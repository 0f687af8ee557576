"""A sweep made ready to run on the driver: the plan with relative recipe paths pinned to the driver's working
directory (:func:`resolve_plan`; trial actors run in other directories), the command line's resources
(:func:`with_resources`), and every trial's prepared splits present before anything is scheduled
(:func:`ensure_trial_data`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from pipelines.runs import pinned_path_overrides

from .spec import SweepConfigError, SweepPlan, SweepSpec, build_plan, load_sweep


def _absolute_path_overrides(spec: SweepSpec, smoke: bool, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Pin relative recipe paths (data root, pretrained weights) to the driver's working directory.

    Tune trial actors run in their own directories, so a relative ``data.root`` would point elsewhere there.
    """
    from hrnet_core.recipes import load_recipe

    profile = spec.smoke.profile if smoke and spec.smoke else None
    shared = {**spec.overrides, **((spec.smoke.overrides if smoke and spec.smoke else {}) or {}), **overrides}
    try:
        flat = load_recipe(spec.recipe, overrides=shared, profile=profile).flat()
    except Exception as e:  # noqa: BLE001 - reported with the file name by build_plan below
        raise SweepConfigError(f"{spec.source or spec.name}: recipe {spec.recipe!r}: {type(e).__name__}: {e}") from None
    return pinned_path_overrides(flat)


def resolve_plan(sweep: str | SweepSpec, *, smoke: bool = False, overrides: Mapping[str, Any] | None = None,
                 check_data: bool = False, resources: Mapping[str, Any] | None = None) -> SweepPlan:
    """Load (by name/path) and plan a sweep, pinning relative recipe paths (also those given as overrides) to the
    driver's working directory; with ``check_data`` the prepared splits must exist. ``resources``: command-line
    values of the plan's resources (``placement``, ``data_task_cpus``). Raises :class:`SweepConfigError`."""
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    overrides = dict(overrides or {})
    pinned = _absolute_path_overrides(spec, smoke, overrides)
    plan = build_plan(spec, smoke=smoke, overrides={**overrides, **pinned})
    given = {k: v for k, v in (resources or {}).items() if v is not None}
    if given:
        plan = with_resources(plan, given)
    if check_data:
        ensure_trial_data(plan, user_overrides=overrides)
    return plan


def with_resources(plan: SweepPlan, values: Mapping[str, Any]) -> SweepPlan:
    """``plan`` with some ``resources`` replaced (``--placement``, ``--data-task-cpus``).

    Raises:
        SweepConfigError: a placement other than pack / spread, or a non-positive ``data_task_cpus``.
    """
    if "placement" in values and values["placement"] not in ("pack", "spread"):
        raise SweepConfigError(f"--placement: expected pack or spread, got {values['placement']!r}")
    if "data_task_cpus" in values and not float(values["data_task_cpus"]) > 0:
        raise SweepConfigError(f"--data-task-cpus: must be > 0, got {values['data_task_cpus']!r}")
    return dataclasses.replace(plan, resources=dataclasses.replace(plan.resources, **values))


def ensure_trial_data(plan: SweepPlan, user_overrides: Mapping[str, Any]) -> None:
    """Every trial's prepared splits must exist; a smoke sweep without ``data.root`` prepares its generated data.

    Raises:
        SweepConfigError: naming the missing splits.
    """
    if plan.smoke and "data.root" not in user_overrides:
        _prepare_smoke_data(plan)
    _check_trial_data(plan)


def _prepare_smoke_data(plan: SweepPlan) -> None:
    """A smoke sweep without ``data.root`` trains on the profile's generated data: generate and prepare it when it is
    missing (``pipelines.prepare.prepare_generated``)."""
    from hrnet_core.data.prepared import DataError, open_split
    from hrnet_core.recipes import load_recipe
    from pipelines.prepare import prepare_generated

    r = load_recipe(plan.spec.recipe, overrides=plan.trials[0].overrides if plan.trials else {}, profile=plan.profile)
    try:
        for split in (r.data.train_split, r.data.val_split):
            open_split(r.data.root, split)
    except DataError:
        print(f"preparing the generated smoke data in {r.data.root}", flush=True)
        prepare_generated(r.task, r.data.root, progress=False)


def _check_trial_data(plan: SweepPlan) -> None:
    """Every trial's prepared splits must exist before anything is scheduled (one error naming the missing ones)."""
    from hrnet_core.data.prepared import DataError, open_split
    from hrnet_core.recipes import load_recipe

    missing, checked = {}, set()
    for trial in plan.trials:
        r = load_recipe(plan.spec.recipe, overrides=trial.overrides, profile=plan.profile)
        for split in (r.data.train_split, r.data.val_split):
            where = str(Path(r.data.root) / split)
            if where in checked:  # trials of a width sweep share their data: each split is opened once
                continue
            checked.add(where)
            try:
                open_split(r.data.root, split)
            except DataError as exc:
                missing[where] = str(exc)
    if missing:
        first = next(iter(missing.values()))
        raise SweepConfigError(f"{plan.spec.name}: {len(missing)} prepared split(s) missing before any trial runs: "
                               f"{first}" +
                               ("; `hrnet sweep run --smoke` without data.root prepares the generated data itself"
                                if plan.smoke else ""))
