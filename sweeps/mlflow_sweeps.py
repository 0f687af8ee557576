"""MLflow bookkeeping of a sweep: one parent run per sweep, one nested child run per trial.

The sweep driver creates the parent run. Each trial's training driver (``pipelines.train.train`` in the Tune trial
actor) creates the trial's child run, nested under the parent (``mlflow.parentRunId``) and tagged with the trial key;
the training workers only log into that run. The sweep driver's Tune callback then records Tune's view of the trial
on it (``FINISHED`` / ``FAILED``, early stop, iterations, model size, paper values) and creates it itself when a
trial failed before its training run existed. Trial keys and training run names are deterministic, so a resumed
sweep reuses the parent run and -- for trials that had checkpoints -- the child run; an interrupted attempt that left
no checkpoint is soft-deleted before its trial reruns, so every trial keeps one active child run.

Tags written here: ``sweep.name`` (Tune experiment name, ``<sweep>`` or ``<sweep>-smoke``), ``sweep.definition``,
``sweep.smoke``, ``sweep.path`` (Tune experiment path), ``sweep.fingerprint``, ``source`` = ``sweep``; per child
``sweep.trial``, ``sweep.variant``, ``sweep.status``, ``sweep.early_stopped``, ``paper.values`` and the metrics
``paper/<m>`` and ``delta/<m>`` (ours - paper, from the trial's last measured value, also for an early-stopped
trial whose training never reached its own end-of-run comparison); plus the pipeline's
``recipe``, ``task``, ``paper.id``, ``paper.table``, ``paper.row`` and ``source`` tags.

Paper values of a trial are the trial's own, never the base recipe's: a child run's ``paper.*`` tags name the
variant's ``paper_row`` (or the sweep's table / figure and the variant name when the variant is no paper-table row),
tag ``paper.values`` holds the values the sweep file quotes for the variant (JSON), and ``paper/<m>`` metrics are
the row's values (plus the quoted ones) - none for a variant without either. ``pipelines.report.log_paper_comparison``
(called by ``hrnet evaluate`` on a trial's checkpoint) reads the same tags, so its ``paper/`` and ``delta/`` metrics
agree.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Mapping

from pipelines.paper_values import PAPER_VALUES_TAG, paper_values_from_tags

from .spec import SweepPlan, TrialSpec

logger = logging.getLogger(__name__)

PARENT_KIND = "sweep"
CHILD_KIND = "trial"


def _client(mlflow_uri: str):
    from pipelines.mlflow_runs import client

    return client(mlflow_uri)


def experiment_id(mlflow_uri: str, experiment: str) -> str:
    """Id of MLflow experiment ``experiment`` (created when missing, with the pipeline's artifact location)."""
    from pipelines.mlflow_runs import experiment_id as pipeline_experiment_id

    return pipeline_experiment_id(mlflow_uri, experiment)


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def find_parent_run(mlflow_uri: str, experiment: str, sweep_name: str, sweep_path: str | None = None):
    """The newest parent run of sweep ``sweep_name`` (optionally of one Tune experiment path), or ``None``."""
    client = _client(mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    flt = f"tags.`sweep.name` = '{_q(sweep_name)}' and tags.`sweep.kind` = '{PARENT_KIND}'"
    if sweep_path:
        flt += f" and tags.`sweep.path` = '{_q(sweep_path)}'"
    runs = client.search_runs([exp.experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


def child_runs(mlflow_uri: str, parent_run_id: str) -> list:
    """All child runs (``mlflow.parentRunId`` = parent) of a sweep parent run, in trial order."""
    client = _client(mlflow_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000)
    return sorted(runs, key=lambda r: (r.data.tags.get("sweep.trial", ""), r.info.start_time or 0))


def ensure_parent_run(plan: SweepPlan, *, mlflow_uri: str, experiment: str, sweep_path: str,
                      existing_run_id: str | None = None) -> str:
    """Create the sweep's parent run, or reopen ``existing_run_id`` when resuming.

    Returns:
        The parent run id (status ``RUNNING``).
    """
    client = _client(mlflow_uri)
    if existing_run_id:
        try:
            run = client.get_run(existing_run_id)
        except Exception:  # noqa: BLE001 - MlflowException for a run id of another tracking store
            logger.warning("parent run %s not found at %s; creating a new parent run", existing_run_id, mlflow_uri)
        else:
            client.update_run(run.info.run_id, status="RUNNING")
            client.set_tag(run.info.run_id, "sweep.resumed", "true")
            return run.info.run_id
    spec = plan.spec
    tags = {
        "mlflow.runName": plan.experiment_name,
        "sweep.kind": PARENT_KIND,
        "sweep.name": plan.experiment_name,
        "sweep.definition": spec.name,
        "sweep.smoke": str(plan.smoke).lower(),
        "sweep.path": sweep_path,
        "sweep.fingerprint": plan.fingerprint(),
        "sweep.metric": spec.metric,
        "sweep.mode": spec.mode,
        "recipe": spec.recipe,
        "paper.id": spec.paper.id,
        "paper.table": spec.paper.table,
        # not "training": the parent holds no model, and the paper report only counts training / official-checkpoint
        # runs (with source=training, its recipe tag would make it a candidate for the recipe's own rows)
        "source": "sweep",
    }
    if spec.description:
        tags["mlflow.note.content"] = spec.description
    run = client.create_run(experiment_id(mlflow_uri, experiment), run_name=plan.experiment_name, tags=tags)
    rid = run.info.run_id
    params = {
        "sweep.recipe": spec.recipe, "sweep.profile": str(plan.profile), "sweep.algorithm": plan.algorithm,
        "sweep.num_samples": plan.num_samples, "sweep.seed": plan.seed, "sweep.num_trials": len(plan.trials),
        "sweep.scheduler": plan.scheduler.type, "sweep.num_workers": plan.resources.num_workers,
        "sweep.use_gpu": plan.resources.use_gpu, "sweep.cpus_per_worker": plan.resources.cpus_per_worker,
    }
    if plan.scheduler.type == "asha":
        params.update({"sweep.asha.grace_period": plan.scheduler.grace_period,
                       "sweep.asha.reduction_factor": plan.scheduler.reduction_factor,
                       "sweep.asha.max_t": plan.scheduler.max_t})
    _log_params(client, rid, params)
    client.log_text(rid, json.dumps(_plan_summary(plan), indent=2, default=str), "sweep/plan.json")
    if spec.source:
        try:
            client.log_artifact(rid, spec.source, "sweep")
        except OSError as e:
            logger.warning("could not attach %s to the parent run: %s", spec.source, e)
    return rid


def find_child(mlflow_uri: str, parent_run_id: str, trial_key: str):
    """The newest active child run of ``parent_run_id`` for trial ``trial_key``, or ``None``."""
    client = _client(mlflow_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`sweep.trial` = '{_q(trial_key)}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def create_child(mlflow_uri: str, parent_run_id: str, trial_key: str, tags: Mapping[str, str]) -> str:
    """Create the child run of a trial that failed before its training run could create one (status ``FAILED``
    is set by :func:`record_trial`)."""
    client = _client(mlflow_uri)
    parent = client.get_run(parent_run_id)
    all_tags = {"mlflow.parentRunId": parent_run_id, "mlflow.runName": trial_key, "sweep.trial": trial_key,
                "sweep.kind": CHILD_KIND, **{k: str(v) for k, v in tags.items() if v is not None}}
    return client.create_run(parent.info.experiment_id, run_name=trial_key, tags=all_tags).info.run_id


def supersede_children(mlflow_uri: str, parent_run_id: str, trial_key: str) -> list[str]:
    """Soft-delete the child runs of an interrupted trial that left no checkpoint (its rerun starts a new run).

    Such an attempt logged nothing (metrics are logged with each epoch's checkpoint); deleting it keeps one active
    child run per trial. Deleted runs stay restorable in MLflow (``mlflow gc`` removes them for good).
    """
    client = _client(mlflow_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`sweep.trial` = '{_q(trial_key)}'",
        max_results=1000)
    for r in runs:
        client.set_tag(r.info.run_id, "sweep.superseded", "true")
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, status="KILLED")
        client.delete_run(r.info.run_id)
    return [r.info.run_id for r in runs]


def record_trial(mlflow_uri: str, parent_run_id: str, trial_key: str, info: Mapping[str, Any], *, status: str,
                 tune_status: str, early_stopped: bool | None = None, iterations: int | None = None,
                 last_metrics: Mapping[str, float] | None = None, error: str | None = None) -> str | None:
    """Record a trial's outcome on its child run: MLflow status, ``sweep.*`` tags, model size, paper values.

    Args:
        info: the trial's static facts (``variant``, ``paper`` values, ``paper_tags``, ``complexity``); the paper
            values logged (``paper/<m>``) are ``pipelines.report.paper_values_from_tags(paper_tags, paper)``.
        status: MLflow status to set (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``).
        tune_status: Tune's trial status, kept as tag ``sweep.status``.
        last_metrics: the last result Tune received, logged as ``sweep/<name>``.

    Returns:
        The child run id (created when the trial failed before its training run existed; ``None`` when
        ``status`` is ``RUNNING`` and the training run does not exist yet).
    """
    client = _client(mlflow_uri)
    child = find_child(mlflow_uri, parent_run_id, trial_key)
    if child is None:
        if status == "RUNNING":
            return None
        rid = create_child(mlflow_uri, parent_run_id, trial_key, {"sweep.variant": info.get("variant", ""),
                                                                   **info.get("paper_tags", {})})
    else:
        rid = child.info.run_id
    client.set_tag(rid, "sweep.status", tune_status)
    client.set_tag(rid, "sweep.variant", info.get("variant", ""))
    if early_stopped is not None:
        client.set_tag(rid, "sweep.early_stopped", str(early_stopped).lower())
    if iterations is not None:
        client.set_tag(rid, "sweep.iterations", str(iterations))
    if error:
        client.set_tag(rid, "sweep.error", error[:4000])
    paper = paper_values_from_tags(info.get("paper_tags") or {}, info.get("paper") or {})
    for metric, value in paper.items():
        client.log_metric(rid, f"paper/{metric}", float(value))
    for metric, value in trial_deltas(paper, {**client.get_run(rid).data.metrics, **(last_metrics or {})}).items():
        client.log_metric(rid, f"delta/{metric}", value)
    for k, v in (info.get("complexity") or {}).items():
        client.log_metric(rid, f"model/{k}", float(v))
    for k, v in (last_metrics or {}).items():
        client.log_metric(rid, f"sweep/{k}", float(v))
    if status in {"FINISHED", "FAILED", "KILLED"}:
        client.set_terminated(rid, status=status)
    return rid


def trial_deltas(paper: Mapping[str, float], measured: Mapping[str, float]) -> dict[str, float]:
    """``{metric: ours - paper}`` for every paper value the trial measured (its run's latest metrics; ``100 - top1``
    for ``top1_err``, :func:`pipelines.report.compare.run_value`), as ``delta/<m>`` of ``log_paper_comparison``."""
    from pipelines.paper_values import run_value

    out = {}
    for metric, value in paper.items():
        ours = run_value(metric, measured)
        if ours is not None:
            out[metric] = float(ours) - float(value)
    return out


def trial_paper_tags(plan: SweepPlan, trial: TrialSpec) -> dict[str, str]:
    """``paper.id`` / ``paper.table`` / ``paper.row`` of a trial: its ``paper_row`` in ``hrnet_core.paper_tables`` when
    the variant names one, else the sweep's table (or figure) and the variant name (a key that names no row, so
    that neither the report nor ``log_paper_comparison`` falls back to the base recipe's row). Plus ``paper.values``
    (JSON ``{metric: value}``) when the sweep file quotes values for the variant."""
    table, row = trial.paper_row if trial.paper_row else (plan.spec.paper.table, trial.variant)
    tags = {"paper.id": plan.spec.paper.id, "paper.table": table, "paper.row": row}
    if trial.paper:
        tags[PAPER_VALUES_TAG] = json.dumps({k: float(v) for k, v in trial.paper.items()})
    return tags


def finish_parent(mlflow_uri: str, run_id: str, *, status: str, summary: Mapping[str, Any]) -> None:
    """Close the parent run (``FINISHED`` / ``FAILED`` / ``KILLED``) and attach the trial summary."""
    client = _client(mlflow_uri)
    client.log_text(run_id, json.dumps(summary, indent=2, default=str), "sweep/summary.json")
    for k, v in summary.get("counts", {}).items():
        client.log_metric(run_id, f"sweep/{k}", float(v))
    client.set_terminated(run_id, status=status)


def _log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k)[:250], json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def _plan_summary(plan: SweepPlan) -> dict[str, Any]:
    return {
        "sweep": plan.spec.name, "experiment_name": plan.experiment_name, "smoke": plan.smoke,
        "recipe": plan.spec.recipe, "profile": plan.profile, "metric": plan.spec.metric, "mode": plan.spec.mode,
        "paper": plan.spec.paper.__dict__, "scheduler": plan.scheduler.__dict__, "resources": plan.resources.__dict__,
        "trials": [_trial_summary(t) for t in plan.trials],
    }


def _trial_summary(t: TrialSpec) -> dict[str, Any]:
    return {"key": t.key, "variant": t.variant, "overrides": t.overrides, "paper": t.paper}


def keys_of(runs: Iterable) -> list[str]:
    """``sweep.trial`` tags of MLflow runs (helper for reports and tests)."""
    return [r.data.tags.get("sweep.trial", "") for r in runs]
