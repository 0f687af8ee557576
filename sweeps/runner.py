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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipelines.runs import has_checkpoints, pinned_path_overrides

from . import mlflow_sweeps
from .spec import SweepConfigError, SweepPlan, SweepSpec, build_plan, check_cluster_fit, load_sweep

logger = logging.getLogger(__name__)

STATE_FILE = "hrnet_sweep.json"


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


# ----------------------------------------------------------------------------------------------------------------------
# Trial side (runs in the Tune trial actor)


def _make_report_callback(metric: str):
    """``TuneReportCallback`` that forwards only the reports carrying the sweep metric.

    Train reports every epoch; the validation metric (``AP``...) is only present on validation epochs
    (``train.val_every``). Tune requires the metric in every result it sees, and ASHA's rungs are then counted in
    validation reports (``training_iteration``).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class _SweepReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metric in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return _SweepReportCallback()


def run_trial(config: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Tune function trainable: resolve the trial's recipe and run one Ray Train training run.

    ``pipelines.train.train`` creates the trial's MLflow run nested under the sweep's parent run (tags
    ``sweep.trial`` / ``sweep.variant`` / ``paper.*``), and resumes it from the trial's last checkpoint when the
    trial is rerun after an interruption (same Train run name, same storage).

    Args:
        config: Tune's trial config, ``{"trial": <trial key>}``.
        payload: the plan as plain data (see :func:`_payload`).
    """
    from pipelines.ray_adapter import train_v2_enabled

    if not train_v2_enabled():
        raise RuntimeError("sweeps need Ray Train V2 (set RAY_TRAIN_V2_ENABLED=1 on the cluster)")
    from hrnet_core.recipes import load_recipe
    from pipelines.train import train

    key = config["trial"]
    trial = payload["trials"][key]
    recipe = load_recipe(payload["recipe"], overrides=trial["overrides"], profile=payload["profile"])
    train(
        recipe,
        num_workers=payload["num_workers"],
        use_gpu=payload["use_gpu"],
        cpus_per_worker=payload["cpus_per_worker"],
        data_task_cpus=payload.get("data_task_cpus"),
        placement=payload.get("placement", "pack"),
        run_name=trial["train_run_name"],
        storage_path=payload["train_storage_path"],
        mlflow_uri=payload["mlflow_uri"],
        experiment=payload["experiment"],
        parent_run_id=payload["parent_run_id"],
        tags={"sweep.name": payload["sweep_name"], "sweep.kind": "trial", "sweep.trial": key,
              "sweep.variant": trial["variant"], **trial["paper_tags"]},
        callbacks=[_make_report_callback(payload["metric"])],
    )


# ----------------------------------------------------------------------------------------------------------------------
# Driver side


def _tune_status_callback(mlflow_uri: str, parent_run_id: str, trial_info: Mapping[str, Mapping[str, Any]],
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


def _train_run_name(plan: SweepPlan, parent_run_id: str, key: str) -> str:
    """Ray Train run name of a trial (also its MLflow ``ray.run_name``): unique per sweep run, stable on resume."""
    return f"{plan.experiment_name}-{parent_run_id[:8]}.{key}"


def _payload(plan: SweepPlan, *, parent_run_id: str, experiment_path: str, mlflow_uri: str,
             experiment: str) -> dict[str, Any]:
    res = plan.resources
    return {
        "sweep_name": plan.experiment_name,
        "recipe": plan.spec.recipe,
        "profile": plan.profile,
        "metric": plan.spec.metric,
        "num_workers": res.num_workers,
        "use_gpu": res.use_gpu,
        "cpus_per_worker": res.cpus_per_worker,
        "data_task_cpus": res.data_task_cpus,
        "placement": res.placement,
        "train_storage_path": _train_storage(experiment_path),
        "mlflow_uri": mlflow_uri,
        "experiment": experiment,
        "parent_run_id": parent_run_id,
        "trials": {t.key: {"overrides": t.overrides, "variant": t.variant,
                           "train_run_name": _train_run_name(plan, parent_run_id, t.key),
                           "paper_tags": mlflow_sweeps.trial_paper_tags(plan, t)} for t in plan.trials},
    }


def _train_storage(experiment_path: str) -> str:
    return os.path.join(experiment_path, "train")


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

    missing = {}
    for trial in plan.trials:
        r = load_recipe(plan.spec.recipe, overrides=trial.overrides, profile=plan.profile)
        for split in (r.data.train_split, r.data.val_split):
            try:
                open_split(r.data.root, split)
            except DataError as exc:
                missing.setdefault(str(Path(r.data.root) / split), str(exc))
    if missing:
        first = next(iter(missing.values()))
        raise SweepConfigError(f"{plan.spec.name}: {len(missing)} prepared split(s) missing before any trial runs: "
                               f"{first}" + ("" if plan.smoke else "") +
                               ("; `hrnet sweep run --smoke` without data.root prepares the generated data itself"
                                if plan.smoke else ""))


def _connect(address: str | None) -> None:
    """Connect to (or start) Ray. An existing connection is reused.

    The job's runtime env (``hrnet sweep submit``) or the cluster image provides the code on a remote cluster; for a
    local instance started here the checkout is put on the workers' ``PYTHONPATH`` so that trial actors and
    training workers import this source tree.

    Raises:
        pipelines.cluster.ClusterError: nothing answers at ``address`` or the cluster wants a token (one line).
    """
    import ray

    from pipelines.cluster import connect, probe_address

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        if address is not None:
            # an explicit --address is checked even when this process is already connected (e.g. to a local
            # instance): a wrong one must fail in one line, not run on whatever Ray is connected
            probe_address(address)
        return
    if address is not None or os.environ.get("RAY_ADDRESS"):
        # an existing cluster (a submitted job has RAY_ADDRESS and its runtime env, which must not be overridden)
        connect(address)
        return
    root = str(Path(__file__).resolve().parents[1])
    env_vars = {"RAY_TRAIN_V2_ENABLED": "1",
                "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    kwargs: dict[str, Any] = {}
    if not os.environ.get("RAY_API_SERVER_ADDRESS"):
        # Ray Train's placement-group cleaner (which frees the workers of a trial that ASHA stopped) asks the
        # dashboard's State API whether the Train controller died; point it at this instance's dashboard even
        # when other Ray instances run on the machine. Processes started by the raylet inherit the variable.
        port = _free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
    ray.init(runtime_env={"env_vars": env_vars}, **kwargs)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_concurrency(plan: SweepPlan) -> int:
    """``max_concurrent_trials`` for the connected cluster, by the per-node rule (``check_cluster_fit`` with the
    alive nodes); raises :class:`SweepConfigError` when a trial can't fit."""
    import ray

    from pipelines.cluster import node_resources

    return check_cluster_fit(plan, ray.cluster_resources(), node_resources(ray.nodes()))


def connect_driver(address: str | None, *, sigterm_interrupts: bool = False) -> None:
    """Connect the sweep driver to Ray (:func:`_connect`), then, with ``sigterm_interrupts``, make SIGTERM Tune's
    interrupt (:func:`sigterm_interrupts_tune`): in this order, because ``ray.init`` replaces any SIGTERM handler
    installed before it by one that exits at once (the sweep then died with ``*** SIGTERM received ***``, its parent
    MLflow run left RUNNING)."""
    _connect(address)
    if sigterm_interrupts:
        sigterm_interrupts_tune()


def sigterm_interrupts_tune() -> bool:
    """Make SIGTERM (``hrnet sweep stop``, ``ray job stop``) Tune's own interrupt: the handler sends SIGUSR1, which
    ``Tuner.fit`` turns into a graceful stop (experiment state saved; the sweep resumes later). ``ray.init`` installs
    its own SIGTERM handler (exit at once), so this must run after Ray is connected: :func:`run_sweep` calls it
    right after connecting. Returns False where signals cannot be set (not the main thread, no SIGUSR1)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        return False
    signal.signal(signal.SIGTERM, _sigterm_to_sigusr1)
    return True


def _sigterm_to_sigusr1(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    logger.warning("SIGTERM received: interrupting the sweep (Tune saves its state; run the same command to resume)")
    os.kill(os.getpid(), signal.SIGUSR1)


def _read_state(experiment_path: str) -> dict[str, Any] | None:
    p = Path(experiment_path) / STATE_FILE
    if "://" in experiment_path or not p.is_file():
        return None
    return json.loads(p.read_text())


def _write_state(experiment_path: str, state: Mapping[str, Any]) -> None:
    p = Path(experiment_path)
    p.mkdir(parents=True, exist_ok=True)
    tmp = p / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(p / STATE_FILE)


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
        sigterm_interrupts: once Ray is connected, SIGTERM interrupts Tune gracefully (:func:`sigterm_interrupts_tune`;
            the CLI sets it).

    Raises:
        SweepConfigError: invalid sweep file, a trial larger than the cluster, or a changed sweep definition while an
            interrupted run exists (pass ``fresh=True``). Raised before any trial is scheduled.
    """
    from ray import tune

    from . import report as report_mod

    plan = resolve_plan(sweep, smoke=smoke, overrides=overrides, resources=resources)
    storage_path = storage_path or default_storage_path()
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).resolve())
    mlflow_uri = default_mlflow_uri(mlflow_uri)
    experiment_path = os.path.join(storage_path, plan.experiment_name)

    connect_driver(address, sigterm_interrupts=sigterm_interrupts)
    concurrency = max_concurrent_trials or cluster_concurrency(plan)
    ensure_trial_data(plan, user_overrides=overrides or {})  # after the fit check, before anything is scheduled

    state = _read_state(experiment_path)
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
    restored = bool(restorable and not fresh)

    parent_run_id = mlflow_sweeps.ensure_parent_run(
        plan, mlflow_uri=mlflow_uri, experiment=experiment, sweep_path=experiment_path,
        existing_run_id=state.get("parent_run_id") if restored and state else None)
    from pipelines.mlflow_runs import set_tags

    set_tags(mlflow_uri, parent_run_id, {"sweep.source": sweep_source(plan)})  # the submitting checkout's file
    complexity = report_mod.trial_complexity(plan)
    trial_info = {t.key: {"variant": t.variant, "paper": t.paper, "paper_tags": mlflow_sweeps.trial_paper_tags(plan, t),
                          "complexity": complexity[t.key]} for t in plan.trials}
    _write_state(experiment_path, {
        "sweep": plan.spec.name, "experiment_name": plan.experiment_name, "smoke": plan.smoke,
        "fingerprint": plan.fingerprint(), "mlflow_uri": mlflow_uri, "experiment": experiment,
        "parent_run_id": parent_run_id, "source": sweep_source(plan),
    })
    payload = _payload(plan, parent_run_id=parent_run_id, experiment_path=experiment_path, mlflow_uri=mlflow_uri,
                       experiment=experiment)
    if restored:
        # An unfinished trial without a checkpoint restarts from scratch in a new MLflow run: retire the old one.
        for key, status in _statuses(experiment_path, plan).items():
            run_dir = os.path.join(_train_storage(experiment_path), payload["trials"][key]["train_run_name"])
            if status != "TERMINATED" and not has_checkpoints(run_dir):
                mlflow_sweeps.supersede_children(mlflow_uri, parent_run_id, key)
    trainable = tune.with_resources(tune.with_parameters(run_trial, payload=payload), trial_placement(plan))
    if restored:
        logger.info("resuming sweep %s from %s", plan.experiment_name, experiment_path)
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.key for t in plan.trials])},
            tune_config=tune.TuneConfig(
                metric=plan.spec.metric, mode=plan.spec.mode, scheduler=_scheduler(plan),
                max_concurrent_trials=concurrency,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=plan.experiment_name, storage_path=storage_path, verbose=verbose,
                callbacks=[_tune_status_callback(mlflow_uri, parent_run_id, trial_info, plan.spec.metric,
                                                 plan.scheduler.__dict__), *callbacks],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    results = tuner.fit()

    del results  # statuses are read back from the experiment state (covers restored runs too)
    statuses = _statuses(experiment_path, plan)
    _close_interrupted(mlflow_uri, parent_run_id, trial_info, statuses)
    rows = report_mod.build_rows(plan, mlflow_uri=mlflow_uri, parent_run_id=parent_run_id, complexity=complexity,
                                 statuses=statuses)
    table_path = os.path.join(experiment_path, "results.md")
    written = report_mod.write_report(plan, rows, out_dir=experiment_path, stem="results", plot=False)
    if report_dir:
        report_mod.write_report(plan, rows, out_dir=report_dir, stem=plan.experiment_name, plot=True)
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
    return SweepOutcome(plan=plan, experiment_path=experiment_path, parent_run_id=parent_run_id,
                        child_run_ids={r["trial"]: r["run_id"] for r in rows if r.get("run_id")}, statuses=statuses,
                        rows=rows, table_path=table_path, restored=restored)


def sweep_source(plan: SweepPlan) -> str | None:
    """Where the sweep file came from: ``$HRNET_SWEEP_SOURCE`` (set by ``hrnet sweep submit`` to the file in the
    submitting checkout, since a job reads it from a temporary runtime-env copy), else the file's path."""
    return os.environ.get("HRNET_SWEEP_SOURCE") or plan.spec.source


def trial_placement(plan: SweepPlan):
    """The Tune trial actor's placement group: its one bundle (:meth:`Resources.trial_actor`), with Ray's ``SPREAD``
    strategy when ``resources.placement`` is ``spread`` (Ray's spread policy then puts the trials' actors, and with
    them their Train controllers, on different nodes, as ``ScalingConfig(placement_strategy="SPREAD")`` does for the
    workers of each trial), else ``PACK``."""
    from ray import tune

    strategy = "SPREAD" if plan.resources.placement == "spread" else "PACK"
    return tune.PlacementGroupFactory([plan.resources.trial_actor()], strategy=strategy)


def _trial_name(trial) -> str:
    return str(trial.config["trial"])


def _scheduler(plan: SweepPlan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = plan.scheduler
    if s.type == "asha":
        # max_t + 1: ASHA stops a trial whose time_attr reaches max_t, i.e. at its last report, which would end the
        # Train run before it finishes on its own (final checkpoint, MLflow run closed). With one more, only the
        # rungs below max_t stop trials; a trial that reaches its last epoch completes normally.
        return ASHAScheduler(time_attr=s.time_attr, max_t=s.max_t + 1, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    return FIFOScheduler()


def _statuses(experiment_path: str, plan: SweepPlan) -> dict[str, str]:
    """``{trial_key: Tune status}`` read back from the experiment (trials never created count as ``PENDING``)."""
    from ray.tune import ExperimentAnalysis

    out = {t.key: "PENDING" for t in plan.trials}
    for trial in ExperimentAnalysis(experiment_path).trials:
        key = trial.config.get("trial")
        if key in out:
            out[key] = trial.status
    return out


def _close_interrupted(mlflow_uri: str, parent_run_id: str, trial_info: Mapping[str, Mapping[str, Any]],
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


def trial_keys(outcome: SweepOutcome, status: str) -> list[str]:
    """Keys of the trials with Tune status ``status`` (helper for callers and tests)."""
    return [k for k, s in outcome.statuses.items() if s == status]
