"""Resuming a sweep: the sidecar ``hrnet_sweep.json`` beside the Tune experiment (plan fingerprint, MLflow parent
run; :func:`read_state`, :func:`write_state`), the choice between ``Tuner.restore`` and a fresh start
(:func:`open_experiment`), and retiring the MLflow runs of interrupted attempts that a rerun cannot resume
(:func:`retire_attempts_without_checkpoints`; a trial's checkpoints are found with
:func:`pipelines.runs.has_checkpoints`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from pipelines.runs import has_checkpoints

from . import mlflow_sweeps
from .spec import SweepConfigError, SweepPlan
from .trial import train_storage
from .trial_outcomes import trial_statuses

logger = logging.getLogger(__name__)

STATE_FILE = "hrnet_sweep.json"


def read_state(experiment_path: str) -> dict[str, Any] | None:
    """The sidecar state :data:`STATE_FILE` of the experiment at ``experiment_path`` (``None``: none, or remote)."""
    p = Path(experiment_path) / STATE_FILE
    if "://" in experiment_path or not p.is_file():
        return None
    return json.loads(p.read_text())


def write_state(experiment_path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` to :data:`STATE_FILE` in ``experiment_path`` (created), atomically (temporary file, rename)."""
    p = Path(experiment_path)
    p.mkdir(parents=True, exist_ok=True)
    tmp = p / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(p / STATE_FILE)


def open_experiment(experiment_path: str, plan: SweepPlan, mlflow_uri: str, *,
                    fresh: bool) -> tuple[dict[str, Any] | None, bool]:
    """``(state, restored)``: the sidecar state of the Tune experiment at ``experiment_path`` (``None`` when there is
    none) and whether this run resumes it (``Tuner.restore``). With ``fresh`` an earlier experiment is moved aside to
    ``<experiment_path>.old-<time>`` and the run starts over.

    Raises:
        SweepConfigError: the experiment was not started by ``hrnet sweep run``, or its sweep definition changed
            (plan fingerprint); pass ``fresh=True``.
    """
    from ray import tune

    state = read_state(experiment_path)
    restorable = tune.Tuner.can_restore(experiment_path)
    if restorable and not fresh:
        if state is None:
            raise SweepConfigError(
                f"{experiment_path} holds a Tune experiment that was not started by `hrnet sweep run`; "
                "pass --fresh or another --storage-path")
        if state.get("fingerprint") != plan.fingerprint():
            raise SweepConfigError(
                f"{plan.spec.source}: the sweep definition changed since the run at {experiment_path} was started "
                f"(fingerprint {state.get('fingerprint')} -> {plan.fingerprint()}); pass --fresh to start over")
        if state.get("mlflow_uri") not in (None, mlflow_uri):
            logger.warning("resuming with MLflow URI %s; the interrupted run used %s", mlflow_uri, state["mlflow_uri"])
    elif (restorable or state is not None) and fresh:
        aside = f"{experiment_path}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(experiment_path, aside)
        logger.warning("moved the previous experiment %s aside to %s", experiment_path, aside)
        state, restorable = None, False
    return state, bool(restorable and not fresh)


def retire_attempts_without_checkpoints(experiment_path: str, plan: SweepPlan, payload: Mapping[str, Any],
                                        mlflow_uri: str, parent_run_id: str) -> None:
    """Before a restored sweep runs again: an unfinished trial without a checkpoint restarts from scratch in a new
    MLflow run, so its interrupted attempt's child run is retired (soft-deleted,
    :func:`sweeps.mlflow_sweeps.supersede_children`)."""
    for key, status in trial_statuses(experiment_path, plan).items():
        run_dir = os.path.join(train_storage(experiment_path), payload["trials"][key]["train_run_name"])
        if status != "TERMINATED" and not has_checkpoints(run_dir):
            mlflow_sweeps.supersede_children(mlflow_uri, parent_run_id, key)
