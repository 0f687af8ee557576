"""Every use of Ray's private API in the project, in one module (Ray 2.60; ``tests/test_ray_adapter.py`` fails
loudly when an upgrade moves or reshapes one of them).

Ray offers no public API for these:

* the failure policy of a ``TorchTrainer`` (``FailureConfig(max_failures)`` retries every worker failure; bad input
  must not be retried): ``TorchTrainer._initialize_and_run_controller(failure_policy=...)`` with a subclass of
  ``ray.train.v2._internal.execution.failure_handling.DefaultFailurePolicy`` (:func:`trainer_class`);
* a SIGINT handler chained after Ray Train's own, which ``fit`` installs (``TorchTrainer._register_sigint_handler``)
  and which ends ``fit`` by ``sys.exit(0)`` (:func:`trainer_class`, :func:`chain_sigint`);
* silencing the worker's per-report INFO dump (the logger of ``ray.train.v2._internal.execution.context``);
* whether Ray Train V2 is on (``ray.train.v2._internal.constants.is_v2_enabled``);
* CPUs available per node (``ray._private.state.available_resources_per_node``);
* the GCS probe of ``pipelines.cluster.probe_address`` with this client's auth token
  (``ray._private.authentication`` metadata, ``ray.core.generated`` GCS stubs).

Each function degrades to Ray's default behaviour where the private piece is missing (another Ray version); the
test makes that visible instead of silent.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from hrnet_core.errors import final_error

__all__ = ["trainer_class", "final_failure_policy", "chain_sigint", "quiet_train_reports", "train_v2_enabled",
           "available_cpus_per_node", "gcs_probe", "controller_poll_interval", "CONTROLLER_POLL_INTERVAL_S"]

#: seconds between the Ray Train controller's polls of the worker group (Ray's default 2.0 s: the run's end is noticed
#: up to 2 s later). ``$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` wins when set.
CONTROLLER_POLL_INTERVAL_S = 0.25


@contextmanager
def controller_poll_interval(seconds: float) -> Iterator[None]:
    """Within the block, a Ray Train controller started by ``fit`` polls its workers every ``seconds`` (Ray propagates
    the documented ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` from the driver to the controller), unless the variable is
    already set."""
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(key, None)


def chain_sigint(on_sigint: Callable[[], None]) -> Any:
    """Install a SIGINT handler that calls ``on_sigint()`` and then the handler installed before it (Ray Train's,
    which aborts the run); returns the new handler (its ``previous`` attribute is the chained one)."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        on_sigint()
        chained = handler.previous  # type: ignore[attr-defined]
        if callable(chained):
            chained(signum, frame)
        else:  # SIG_DFL / SIG_IGN / unknown: Python's default behaviour
            raise KeyboardInterrupt

    handler.previous = previous  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, handler)
    return handler


def final_failure_policy(failure_config: Any) -> Any:
    """Ray Train's ``DefaultFailurePolicy`` for ``failure_config``, except that a failure caused by a
    :class:`hrnet_core.errors.FinalError` (bad input, a non-finite loss; :func:`hrnet_core.errors.final_error`) is
    raised at once instead of retried.

    Raises:
        ImportError: this Ray has no ``DefaultFailurePolicy`` where Ray 2.60 keeps it.
    """
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

    class FinalErrorsAreFinal(DefaultFailurePolicy):
        def _is_retryable_error(self, training_failed_error) -> bool:
            if final_error(training_failed_error) is not None:
                return False
            return super()._is_retryable_error(training_failed_error)

    return FinalErrorsAreFinal(failure_config)


def trainer_class(on_sigint: Callable[[], None] | None = None) -> type:
    """``TorchTrainer`` whose failure policy never retries a final error (:func:`final_failure_policy`): Ray Train's
    ``FailureConfig(max_failures)`` retries are for lost or crashed workers, and a corrupt image fails the same way on
    every attempt. ``on_sigint``: called on Ctrl+C before Ray Train's own SIGINT handler (:func:`chain_sigint`,
    installed right after Ray's, which ``fit`` registers in the main thread), so that the caller knows the run was
    interrupted when ``fit`` ends by Ray's ``sys.exit(0)``. Without the private hooks: plain ``TorchTrainer``."""
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy
    except ImportError:  # pragma: no cover - other Ray versions
        return TorchTrainer
    if not hasattr(DefaultFailurePolicy, "_is_retryable_error") or \
            not hasattr(TorchTrainer, "_initialize_and_run_controller"):
        return TorchTrainer  # pragma: no cover

    class Trainer(TorchTrainer):
        def _initialize_and_run_controller(self, **kwargs):
            kwargs["failure_policy"] = final_failure_policy(self.run_config.failure_config)
            return super()._initialize_and_run_controller(**kwargs)

        def _register_sigint_handler(self, controller):
            super()._register_sigint_handler(controller)
            if on_sigint is not None:
                chain_sigint(on_sigint)

    return Trainer


def quiet_train_reports() -> None:
    """Silence Ray Train's per-report INFO dump (``Reporting training result ...: TrainingReport(...)``) in this
    worker (its logger is named after the file of ``ray.train.v2._internal.execution.context``)."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # pragma: no cover - other Ray versions
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_v2_enabled() -> bool:
    """Whether Ray Train's V2 API is on in this process (``RAY_TRAIN_V2_ENABLED``, Ray's own reading of it)."""
    from ray.train.v2._internal.constants import is_v2_enabled

    return bool(is_v2_enabled())


def available_cpus_per_node() -> list[float]:
    """CPUs available now on each alive node of the connected Ray cluster (Ray's per-node state; the cluster's
    total as one entry where this Ray version lacks it)."""
    import ray

    try:
        from ray._private.state import available_resources_per_node

        per = available_resources_per_node()
        return [float(r.get("CPU", 0.0)) for r in per.values()]
    except Exception:  # noqa: BLE001 - private API: fall back to the total
        return [float(ray.available_resources().get("CPU", 0.0))]


def _auth_metadata() -> tuple:
    """gRPC metadata Ray's own client would send (``RAY_AUTH_MODE=token``: the token of ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); empty without token authentication."""
    try:
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            _get_authentication_metadata_tuple,
        )

        return tuple(_get_authentication_metadata_tuple())
    except Exception:  # noqa: BLE001 - private API of Ray >= 2.52; no probe of the token otherwise
        return ()


def gcs_probe(address: str, timeout_s: float) -> tuple[str | None, str, bool]:
    """Ask the GCS at ``address`` (``host:port``) for its cluster id with this client's auth token, within
    ``timeout_s`` seconds.

    Returns:
        ``(code, details, had_token)``: ``code`` None when it answered (or the gRPC stubs are missing), else the gRPC
        status name (``UNAUTHENTICATED``, ``UNAVAILABLE`` ...); ``details`` the first line of gRPC's text;
        ``had_token`` whether a token was sent.
    """
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover
        return None, "", False
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        metadata = _auth_metadata()
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata or None)
        except grpc.RpcError as e:
            details = (e.details() or "").splitlines()[0] if e.details() else ""
            return e.code().name, details, bool(metadata)
    return None, "", bool(metadata)
