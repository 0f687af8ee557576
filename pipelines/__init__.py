"""pipelines: the ``hrnet`` CLI and the DVC stage entry points around ``hrnet_core``.

``prepare`` (data preparation), ``ingest`` (Ray Data), ``train`` (Ray Train V2 driver + worker loop), ``evaluate``
(batch inference + metrics), ``tracking`` (MLflow), ``report`` (paper tables vs runs). The ``hrnet`` command line
that assembles them with ``sweeps`` lives above both, in ``hrnet_cli``.

Ray Train's V2 API is switched on here, before anything imports ``ray.train`` (``RAY_TRAIN_V2_ENABLED=1``).
"""

import os

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
