"""The sweep driver's Ray connection: connect to (or start) Ray (:func:`connect_ray`), then make SIGTERM Tune's
graceful interrupt (:func:`connect_driver`, :func:`sigterm_interrupts_tune`), and how many trials the connected
cluster runs at once (:func:`cluster_concurrency`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from .spec import SweepPlan, check_cluster_fit

logger = logging.getLogger(__name__)


def connect_ray(address: str | None) -> None:
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
    """Connect the sweep driver to Ray (:func:`connect_ray`), then, with ``sigterm_interrupts``, make SIGTERM Tune's
    interrupt (:func:`sigterm_interrupts_tune`): in this order, because ``ray.init`` replaces any SIGTERM handler
    installed before it by one that exits at once (the sweep then died with ``*** SIGTERM received ***``, its parent
    MLflow run left RUNNING)."""
    connect_ray(address)
    if sigterm_interrupts:
        sigterm_interrupts_tune()


def sigterm_interrupts_tune() -> bool:
    """Make SIGTERM (``hrnet sweep stop``, ``ray job stop``) Tune's own interrupt: the handler sends SIGUSR1, which
    ``Tuner.fit`` turns into a graceful stop (experiment state saved; the sweep resumes later). ``ray.init`` installs
    its own SIGTERM handler (exit at once), so this must run after Ray is connected: :func:`sweeps.runner.run_sweep`
    calls it right after connecting. Returns False where signals cannot be set (not the main thread, no SIGUSR1)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        return False
    signal.signal(signal.SIGTERM, _sigterm_to_sigusr1)
    return True


def _sigterm_to_sigusr1(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    logger.warning("SIGTERM received: interrupting the sweep (Tune saves its state; run the same command to resume)")
    os.kill(os.getpid(), signal.SIGUSR1)
