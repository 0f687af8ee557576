"""Run a sweep with Ray Tune: one Tune trial per configuration, each launching a Ray Train ``TorchTrainer``.

The pattern is Ray's "Train V2 inside Tune" (Ray docs, *Hyperparameter Tuning with Ray Tune*): the Tune trial is a
light driver process (a token 0.01 CPU) that calls :func:`pipelines.train.train`, which builds the ``TorchTrainer``
whose workers hold the real resources. Per-epoch results reach Tune through
``ray.tune.integration.ray_train.TuneReportCallback`` so that ASHA can stop a poor trial early; when it does, Tune
ends the trial actor, Train's controller dies with it and Train's placement-group cleaner releases the workers'
bundles, so the next trial can start. ``max_concurrent_trials`` is computed from the cluster (GPUs, or CPUs on a
CPU-only cluster) so that no more Train runs are in flight than the cluster can place at once.

Resuming: trial names are the plan's deterministic keys, the Tune experiment lives at
``<storage_path>/<sweep>[-smoke]``, and a sidecar ``hrnet_sweep.json`` there records the plan fingerprint and the MLflow
parent run. Running the same command again after an interruption (Ctrl+C, ``hrnet sweep stop``, a killed driver, a
lost head node with shared storage) calls ``Tuner.restore``: finished trials are kept, unfinished ones run again, and
the parent run is reused. A rerun trial that had a checkpoint resumes from it in its own MLflow run (same Train run
name); one that had none starts over in a new run, and its interrupted attempt is retired (soft-deleted).

Modules: :mod:`sweeps.resolve` (the plan made ready to run), :mod:`sweeps.connect` (the driver's Ray connection),
:mod:`sweeps.resume` (the sidecar state, restore or start over), :mod:`sweeps.trial` (what one trial runs),
:mod:`sweeps.tuner` (the ``Tuner``), :mod:`sweeps.trial_outcomes` (each trial's outcome on MLflow); this module
drives them (:func:`run_sweep`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipelines.runs import pinned_storage_path

from . import mlflow_sweeps
from .connect import cluster_concurrency, connect_driver
from .resolve import ensure_trial_data, resolve_plan
from .resume import open_experiment, retire_attempts_without_checkpoints, write_state
from .spec import SweepPlan, SweepSpec
from .trial import trial_payload
from .trial_outcomes import close_interrupted, trial_statuses, tune_status_callback
from .tuner import build_tuner

logger = logging.getLogger(__name__)


def default_storage_path() -> str:
    """``$HRNET_STORAGE_PATH`` or ``./ray_results`` (absolute). Use a shared path or bucket on a multi-node cluster."""
    return os.environ.get("HRNET_STORAGE_PATH") or str(Path("ray_results").resolve())


def default_mlflow_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite store ``./mlflow.db``; local paths made absolute
    (trial actors and workers run in other directories). Same rules as ``pipelines.mlflow_runs.resolve_tracking_uri``."""
    from pipelines.mlflow_runs import resolve_tracking_uri

    return resolve_tracking_uri(uri)


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` returns.

    Attributes:
        plan: the resolved sweep.
        experiment_path: Tune experiment directory (``Tuner.restore`` path).
        parent_run_id / child_run_ids: the MLflow run tree (``{trial_key: run_id}``).
        statuses: ``{trial_key: Tune status}`` (``TERMINATED``, ``ERROR``, or ``PENDING`` / ``RUNNING`` when interrupted).
        rows: the results table (see :func:`sweeps.report.build_rows`).
        table_path: the Markdown table written next to the experiment (``<experiment_path>/results.md``).
        restored: whether this call resumed an earlier, interrupted run.
    """

    plan: SweepPlan
    experiment_path: str
    parent_run_id: str
    child_run_ids: dict[str, str]
    statuses: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_path: str | None = None
    restored: bool = False

    @property
    def finished(self) -> bool:
        """True when every trial ended (terminated, early-stopped or errored); False after an interruption."""
        return all(s in {"TERMINATED", "ERROR"} for s in self.statuses.values())


def run_sweep(
    sweep: str | SweepSpec,
    *,
    smoke: bool = False,
    address: str | None = None,
    storage_path: str | None = None,
    mlflow_uri: str | None = None,
    experiment: str = "hrnet",
    overrides: Mapping[str, Any] | None = None,
    max_concurrent_trials: int | None = None,
    fresh: bool = False,
    callbacks: Sequence[Any] = (),
    verbose: int = 1,
    report_dir: str | None = None,
    resources: Mapping[str, Any] | None = None,
    sigterm_interrupts: bool = False,
) -> SweepOutcome:
    """Run (or resume) a sweep on the Ray cluster at ``address`` and return its outcome and results table.

    Args:
        sweep: sweep name (``sweeps/<name>.yaml``), path, or parsed spec.
        smoke: run the sweep's ``smoke`` section (tiny, CPU).
        address: Ray cluster address (``None``: ``RAY_ADDRESS`` or a new local instance; an already-initialised Ray
            connection is reused).
        storage_path: Tune/Train storage root (default :func:`default_storage_path`); must be shared across nodes.
        mlflow_uri: MLflow tracking URI (default :func:`default_mlflow_uri`); must be reachable from every node.
        experiment: MLflow experiment name.
        overrides: extra recipe overrides for every trial (dotted keys).
        max_concurrent_trials: override the value computed from the cluster's GPUs / CPUs.
        fresh: start over even if an interrupted run of this sweep exists (the old experiment dir is moved aside).
        callbacks: extra Tune callbacks (run in this process). Tune pickles them with the experiment and reuses the
            originals when resuming.
        verbose: Tune verbosity (0-3).
        report_dir: also write ``<sweep>.md/.csv/.png`` there (``hrnet sweep report`` output).
        resources: command-line values of the plan's resources (``placement``, ``data_task_cpus``).
        sigterm_interrupts: once Ray is connected, SIGTERM interrupts Tune gracefully
            (:func:`sweeps.connect.sigterm_interrupts_tune`; the CLI sets it).

    Raises:
        SweepConfigError: invalid sweep file, a trial larger than the cluster, or a changed sweep definition while an
            interrupted run exists (pass ``fresh=True``). Raised before any trial is scheduled.
    """
    import ray.tune  # noqa: F401 - Ray Tune is required: without it, fail before anything is resolved or connected

    plan = resolve_plan(sweep, smoke=smoke, overrides=overrides, resources=resources)
    storage_path = pinned_storage_path(storage_path or default_storage_path())
    mlflow_uri = default_mlflow_uri(mlflow_uri)
    experiment_path = os.path.join(storage_path, plan.experiment_name)

    connect_driver(address, sigterm_interrupts=sigterm_interrupts)
    concurrency = max_concurrent_trials or cluster_concurrency(plan)
    ensure_trial_data(plan, user_overrides=overrides or {})  # after the fit check, before anything is scheduled
    return _run_experiment(plan, experiment_path=experiment_path, storage_path=storage_path, mlflow_uri=mlflow_uri,
                           experiment=experiment, fresh=fresh, concurrency=concurrency, callbacks=callbacks,
                           verbose=verbose, report_dir=report_dir)


def _run_experiment(plan: SweepPlan, *, experiment_path: str, storage_path: str, mlflow_uri: str, experiment: str,
                    fresh: bool, concurrency: int, callbacks: Sequence[Any], verbose: int,
                    report_dir: str | None) -> SweepOutcome:
    """The part of :func:`run_sweep` after the checks: restore or start the experiment and its MLflow parent run,
    fit the ``Tuner``, then record the outcome (child runs, results table, parent run)."""
    from . import report as report_mod

    state, restored = open_experiment(experiment_path, plan, mlflow_uri, fresh=fresh)
    parent_run_id = _start_parent_run(plan, mlflow_uri=mlflow_uri, experiment=experiment,
                                      experiment_path=experiment_path,
                                      existing_run_id=state.get("parent_run_id") if restored and state else None)
    complexity = report_mod.trial_complexity(plan)
    trial_info = {t.key: {"variant": t.variant, "paper": t.paper, "paper_tags": mlflow_sweeps.trial_paper_tags(plan, t),
                          "complexity": complexity[t.key]} for t in plan.trials}
    write_state(experiment_path, {
        "sweep": plan.spec.name, "experiment_name": plan.experiment_name, "smoke": plan.smoke,
        "fingerprint": plan.fingerprint(), "mlflow_uri": mlflow_uri, "experiment": experiment,
        "parent_run_id": parent_run_id, "source": sweep_source(plan),
    })
    payload = trial_payload(plan, parent_run_id=parent_run_id, experiment_path=experiment_path, mlflow_uri=mlflow_uri,
                            experiment=experiment)
    if restored:
        retire_attempts_without_checkpoints(experiment_path, plan, payload, mlflow_uri, parent_run_id)
    status_callback = tune_status_callback(mlflow_uri, parent_run_id, trial_info, plan.spec.metric,
                                           plan.scheduler.__dict__)
    tuner = build_tuner(plan, payload, experiment_path=experiment_path, storage_path=storage_path, restored=restored,
                        max_concurrent_trials=concurrency, verbose=verbose, callbacks=[status_callback, *callbacks])
    results = tuner.fit()

    del results  # statuses are read back from the experiment state (covers restored runs too)
    statuses = trial_statuses(experiment_path, plan)
    close_interrupted(mlflow_uri, parent_run_id, trial_info, statuses)
    rows = report_mod.build_rows(plan, mlflow_uri=mlflow_uri, parent_run_id=parent_run_id, complexity=complexity,
                                 statuses=statuses)
    table_path = os.path.join(experiment_path, "results.md")
    written = report_mod.write_report(plan, rows, out_dir=experiment_path, stem="results", plot=False)
    if report_dir:
        report_mod.write_report(plan, rows, out_dir=report_dir, stem=plan.experiment_name, plot=True)
    _finish_parent_run(plan, mlflow_uri, parent_run_id, statuses, written)
    return SweepOutcome(plan=plan, experiment_path=experiment_path, parent_run_id=parent_run_id,
                        child_run_ids={r["trial"]: r["run_id"] for r in rows if r.get("run_id")}, statuses=statuses,
                        rows=rows, table_path=table_path, restored=restored)


def _start_parent_run(plan: SweepPlan, *, mlflow_uri: str, experiment: str, experiment_path: str,
                      existing_run_id: str | None) -> str:
    """The sweep's MLflow parent run (``existing_run_id``, the interrupted run's, when resuming), tagged with the
    sweep file it runs (:func:`sweep_source`); returns its id."""
    parent_run_id = mlflow_sweeps.ensure_parent_run(
        plan, mlflow_uri=mlflow_uri, experiment=experiment, sweep_path=experiment_path,
        existing_run_id=existing_run_id)
    from pipelines.mlflow_runs import set_tags

    set_tags(mlflow_uri, parent_run_id, {"sweep.source": sweep_source(plan)})  # the submitting checkout's file
    return parent_run_id


def _finish_parent_run(plan: SweepPlan, mlflow_uri: str, parent_run_id: str, statuses: Mapping[str, str],
                       written: Sequence[str]) -> None:
    """Close the parent run: FINISHED (FAILED when a trial errored) with the results table as artifacts once every
    trial ended, else KILLED (the sweep was interrupted; the same command resumes it)."""
    done = all(s in {"TERMINATED", "ERROR"} for s in statuses.values())
    counts = {s.lower(): sum(1 for v in statuses.values() if v == s) for s in sorted(set(statuses.values()))}
    if done:
        mlflow_sweeps.finish_parent(mlflow_uri, parent_run_id,
                                    status="FAILED" if "ERROR" in statuses.values() else "FINISHED",
                                    summary={"statuses": statuses, "counts": counts})
        from mlflow.tracking import MlflowClient

        for p in written:
            MlflowClient(mlflow_uri).log_artifact(parent_run_id, p, "sweep")
    else:
        mlflow_sweeps.finish_parent(mlflow_uri, parent_run_id, status="KILLED",
                                    summary={"statuses": statuses, "counts": counts, "interrupted": True})
        logger.warning("sweep %s interrupted (%s); run the same command again to resume the unfinished trials",
                       plan.experiment_name, counts)


def sweep_source(plan: SweepPlan) -> str | None:
    """Where the sweep file came from: ``$HRNET_SWEEP_SOURCE`` (set by ``hrnet sweep submit`` to the file in the
    submitting checkout, since a job reads it from a temporary runtime-env copy), else the file's path."""
    return os.environ.get("HRNET_SWEEP_SOURCE") or plan.spec.source


def trial_keys(outcome: SweepOutcome, status: str) -> list[str]:
    """Keys of the trials with Tune status ``status`` (helper for callers and tests)."""
    return [k for k, s in outcome.statuses.items() if s == status]
