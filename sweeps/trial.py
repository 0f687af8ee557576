"""One Tune trial of a sweep: the plan as plain data that the trial receives (:func:`trial_payload`) and the
function trainable that runs in the Tune trial actor (:func:`run_trial`), launching one Ray Train training run.

The trial's Ray Train run lives at ``<experiment_path>/train/<run name>`` (:func:`train_storage`,
:func:`train_run_name`): unique per sweep run, stable on resume, so a rerun trial resumes from its checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from . import mlflow_sweeps
from .spec import SweepPlan


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
        payload: the plan as plain data (see :func:`trial_payload`).
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


def train_run_name(plan: SweepPlan, parent_run_id: str, key: str) -> str:
    """Ray Train run name of a trial (also its MLflow ``ray.run_name``): unique per sweep run, stable on resume."""
    return f"{plan.experiment_name}-{parent_run_id[:8]}.{key}"


def trial_payload(plan: SweepPlan, *, parent_run_id: str, experiment_path: str, mlflow_uri: str,
                  experiment: str) -> dict[str, Any]:
    """The plan as plain data for :func:`run_trial` (Tune ships it to every trial actor with ``tune.with_parameters``):
    recipe, profile, metric, resources, storage, MLflow parent run and, per trial key, its overrides, variant, Ray
    Train run name and paper tags."""
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
        "train_storage_path": train_storage(experiment_path),
        "mlflow_uri": mlflow_uri,
        "experiment": experiment,
        "parent_run_id": parent_run_id,
        "trials": {t.key: {"overrides": t.overrides, "variant": t.variant,
                           "train_run_name": train_run_name(plan, parent_run_id, t.key),
                           "paper_tags": mlflow_sweeps.trial_paper_tags(plan, t)} for t in plan.trials},
    }


def train_storage(experiment_path: str) -> str:
    """Ray Train storage of the trials' training runs: ``<experiment_path>/train``."""
    return os.path.join(experiment_path, "train")
