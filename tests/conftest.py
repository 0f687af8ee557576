"""Shared pytest setup: the repository root goes on ``sys.path`` (``import hrnet_core``, ``tests.official``)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# --- shared Ray instance (pipelines helper): ONE local Ray per test session -----------------------------------------
import os as _os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance (2 CPUs, no dashboard) shared by every Ray-based test of the session.

    Starting Ray costs ~25 s on the 2-core CI machine, so tests must not call ``ray.init`` themselves; they take this
    fixture. Ray Train's V2 API is enabled before ``ray.train`` is imported.
    """
    _os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}})
        started = True
    yield ray
    if started:
        ray.shutdown()
