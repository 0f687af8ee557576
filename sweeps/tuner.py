"""The Ray Tune ``Tuner`` of a sweep (:func:`build_tuner`): the trainable (:func:`sweeps.trial.run_trial` with the
plan's payload, in the trial actor's placement group, :func:`trial_placement`), the scheduler (ASHA or FIFO), one
trial per plan key named by that key; a new ``Tuner``, or ``Tuner.restore`` of an interrupted experiment."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from .spec import SweepPlan
from .trial import run_trial

logger = logging.getLogger(__name__)


def build_tuner(plan: SweepPlan, payload: Mapping[str, Any], *, experiment_path: str, storage_path: str,
                restored: bool, max_concurrent_trials: int, verbose: int, callbacks: Sequence[Any]):
    """``Tuner.restore(experiment_path)`` when ``restored`` (unfinished and errored trials run again; Tune keeps the
    callbacks pickled with the experiment), else a new ``Tuner`` over the plan's trial keys (grid search), with
    ``callbacks`` (run in the driver) and no retry of a failed trial (``max_failures=0``).

    Args:
        plan: the resolved sweep.
        payload: the plan as plain data for every trial (:func:`sweeps.trial.trial_payload`).
        experiment_path: ``<storage_path>/<plan.experiment_name>``, the Tune experiment directory.
        storage_path: Tune/Train storage root (absolute, or a URI).
        restored: resume the interrupted experiment at ``experiment_path``.
        max_concurrent_trials: trials in flight at once.
        verbose: Tune verbosity (0-3).
        callbacks: Tune callbacks of a new experiment.
    """
    from ray import tune

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
                max_concurrent_trials=max_concurrent_trials,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=plan.experiment_name, storage_path=storage_path, verbose=verbose,
                callbacks=list(callbacks),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    return tuner


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
