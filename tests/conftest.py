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
    """A local Ray instance (2 CPUs, dashboard on loopback) shared by every Ray-based test of the session.

    Starting Ray costs ~25 s on the 2-core CI machine, so tests must not call ``ray.init`` themselves; they take this
    fixture. Ray Train's V2 API is enabled before ``ray.train`` is imported. The dashboard runs on a free loopback
    port with ``RAY_API_SERVER_ADDRESS`` pointing at it, because Ray Train's cleanup of a stopped run's placement
    groups goes through the State API; without it a killed trial's bundle would starve the rest of the session.
    """
    _os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        _os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}})
        started = True
    yield ray
    if started:
        ray.shutdown()
