"""pipelines: the ``hrnet`` CLI and the DVC stage entry points around ``hrnet_core``.

``prepare`` (data preparation), ``ingest`` (Ray Data), ``train`` (Ray Train V2 driver + worker around
:mod:`hrnet_core.engine`), ``runs`` (run identity, resume, path pinning), ``evaluate`` (batch inference + metrics),
``mlflow_runs`` (MLflow), ``paper_values`` (paper row and values of a run), ``report`` (paper tables vs runs),
``cluster`` (Ray cluster glue), ``ray_adapter`` (every use of Ray's private API, isolated). The ``hrnet`` command line
that assembles them with ``sweeps`` lives above both, in ``hrnet_cli``.

Ray Train's V2 API is switched on here, before anything imports ``ray.train`` (``RAY_TRAIN_V2_ENABLED=1``).
"""

import os

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
