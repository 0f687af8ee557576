"""Ray Tune studies of the HRNet papers (``hrnet sweep ...``; see the README section "Sweeps").

* :mod:`sweeps.spec` - the sweep YAML schema (``sweeps/*.yaml``), validation and the deterministic trial plan;
* :mod:`sweeps.runner` - ``run_sweep``: Ray Tune ``Tuner`` whose trials each run a Ray Train V2 ``TorchTrainer``,
  ASHA, ``max_concurrent_trials`` from the cluster, resume with ``Tuner.restore``; it drives
  :mod:`sweeps.resolve` (the plan made ready to run: pinned paths, resources, data), :mod:`sweeps.connect` (the
  driver's Ray connection, SIGTERM, concurrency), :mod:`sweeps.resume` (sidecar state, restore or start over),
  :mod:`sweeps.trial` (the trial trainable and its payload), :mod:`sweeps.tuner` (the ``Tuner``) and
  :mod:`sweeps.trial_outcomes` (Tune's view of each trial, recorded on MLflow);
* :mod:`sweeps.mlflow_sweeps` - the MLflow parent run per sweep and one nested run per trial;
* :mod:`sweeps.submit` - submission to a Ray cluster through the Jobs API;
* :mod:`sweeps.report` - results table and plot with the paper's values beside ours;
* :mod:`sweeps.cli` - ``add_sweep_parser`` for the ``hrnet`` CLI, and ``python -m sweeps.cli``.
"""
