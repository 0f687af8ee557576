"""Tune's view of each trial, on the sweep driver's side: the Tune callback that records a trial's outcome on its
MLflow child run (:func:`tune_status_callback`), the statuses read back from the experiment
(:func:`trial_statuses`), and the child runs of trials an interruption left unfinished (:func:`close_interrupted`).
"""

from __future__ import annotations

from typing import Any, Mapping

from . import mlflow_sweeps
from .spec import SweepPlan


def tune_status_callback(mlflow_uri: str, parent_run_id: str, trial_info: Mapping[str, Mapping[str, Any]],
                         metric: str, scheduler: Mapping[str, Any]):
    """Tune callback (runs in the driver) that records each trial's outcome on its MLflow child run."""
    from ray import tune

    class TrialRunStatus(tune.Callback):
        def __init__(self) -> None:
            self.mlflow_uri = mlflow_uri
            self.parent_run_id = parent_run_id
            self.trial_info = {k: dict(v) for k, v in trial_info.items()}
            self.metric = metric
            self.scheduler = dict(scheduler)

        def _record(self, trial, **kwargs) -> None:
            key = trial.config.get("trial")
            if key in self.trial_info:
                mlflow_sweeps.record_trial(self.mlflow_uri, self.parent_run_id, key, self.trial_info[key], **kwargs)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            iters = trial_iterations(last, self.scheduler["time_attr"])
            early = (self.scheduler["type"] == "asha" and iters is not None
                     and self.scheduler["max_t"] is not None and iters < self.scheduler["max_t"])
            values = {self.metric: last[self.metric]} if self.metric in last else {}
            self._record(trial, status="FINISHED", tune_status="TERMINATED", early_stopped=bool(early),
                         iterations=iters, last_metrics=values)

        def on_trial_error(self, iteration, trials, trial, **info):
            err = None
            try:
                err = trial.get_error()
            except Exception:  # noqa: BLE001 - the error file may be missing
                pass
            self._record(trial, status="FAILED", tune_status="ERROR", error=str(err) if err else "trial errored")

    return TrialRunStatus()


def trial_iterations(last_result: Mapping[str, Any], time_attr: str = "training_iteration") -> int | None:
    """Iterations a trial trained, counted across resumes: the training loop's ``epoch`` (absolute: a trial resumed
    from its epoch-2 checkpoint reports epoch 3 in Tune's first result of the rerun, whose ``training_iteration``
    starts again at 1), else Tune's ``time_attr``; ``None`` when the result has neither."""
    if time_attr == "training_iteration" and last_result.get("epoch") is not None:
        return int(last_result["epoch"])
    value = last_result.get(time_attr)
    return int(value) if value is not None else None


def trial_statuses(experiment_path: str, plan: SweepPlan) -> dict[str, str]:
    """``{trial_key: Tune status}`` read back from the experiment (trials never created count as ``PENDING``)."""
    from ray.tune import ExperimentAnalysis

    out = {t.key: "PENDING" for t in plan.trials}
    for trial in ExperimentAnalysis(experiment_path).trials:
        key = trial.config.get("trial")
        if key in out:
            out[key] = trial.status
    return out


def close_interrupted(mlflow_uri: str, parent_run_id: str, trial_info: Mapping[str, Mapping[str, Any]],
                      statuses: Mapping[str, str]) -> None:
    """After an interruption: the child runs of unfinished trials that are still RUNNING become KILLED (they rerun on
    resume). Tune's saved state calls a trial it interrupted mid-run ``PENDING`` (measured on the two-node cluster),
    not only ``RUNNING`` / ``PAUSED``, so every unfinished status counts."""
    for key, status in statuses.items():
        if status in {"TERMINATED", "ERROR"}:
            continue
        child = mlflow_sweeps.find_child(mlflow_uri, parent_run_id, key)
        if child is not None and child.info.status == "RUNNING":
            mlflow_sweeps.record_trial(mlflow_uri, parent_run_id, key, trial_info[key], status="KILLED", tune_status=status)
