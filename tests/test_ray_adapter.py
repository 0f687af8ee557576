"""The private Ray API that ``pipelines.ray_adapter`` relies on (issue 25, point 6), asserted as Ray 2.60 has it.

Ray offers no public API for a failure policy of a ``TorchTrainer``, a SIGINT handler chained after Ray Train's, the
worker's report logger, the per-node available CPUs or the GCS probe with the client's token. Each adapter falls back
to Ray's default behaviour where the private piece is gone (a silent change of behaviour: bad input retried
``max_failures`` times, Ctrl+C leaving the MLflow run RUNNING, a wrong token hanging for minutes); these tests make
an upgrade that moves or reshapes any of them fail loudly instead. No Ray instance is started.
"""

from __future__ import annotations

import inspect
import signal

import pytest

pytest.importorskip("ray.train")


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_failure_policy_hook_exists_with_its_signature():
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.execution.controller.controller import TrainController
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

    assert _params(DefaultFailurePolicy.__init__) == ["self", "failure_config"]
    assert _params(DefaultFailurePolicy._is_retryable_error) == ["self", "training_failed_error"]
    assert _params(DefaultFailurePolicy.make_decision)[:2] == ["self", "training_failed_error"]
    assert _params(TorchTrainer._initialize_and_run_controller) == ["self", "controller_init_kwargs"]
    assert "failure_policy" in _params(TrainController.__init__), "the controller no longer takes a failure policy"
    assert _params(TorchTrainer._register_sigint_handler) == ["self", "controller"]


def test_the_adapters_trainer_overrides_both_hooks():
    """``trainer_class`` did not fall back to the plain ``TorchTrainer`` (its fallback when a hook is missing)."""
    from ray.train.torch import TorchTrainer

    from pipelines.ray_adapter import trainer_class

    cls = trainer_class(on_sigint=lambda: None)
    assert cls is not TorchTrainer and issubclass(cls, TorchTrainer)
    assert "_initialize_and_run_controller" in vars(cls) and "_register_sigint_handler" in vars(cls)


def test_final_errors_are_not_retried_other_failures_are():
    """The policy :func:`pipelines.ray_adapter.final_failure_policy` builds: a worker failure carrying a
    :class:`hrnet_core.errors.FinalError` -> RAISE at once, any other -> RETRY (within ``max_failures``)."""
    from ray.train import FailureConfig
    from ray.train.v2.api.exceptions import WorkerGroupError

    from hrnet_core.errors import WorkerInputFailure
    from pipelines.ray_adapter import final_failure_policy

    policy = final_failure_policy(FailureConfig(max_failures=2))
    bad = WorkerGroupError("worker 0 failed", {0: WorkerInputFailure("ImageReadError", "image file 'x.jpg': bad")})
    assert policy.make_decision(bad).name == "RAISE"
    assert policy.make_decision(WorkerGroupError("worker 1 died", {1: RuntimeError("actor died")})).name == "RETRY"


def test_ray_trains_sigint_handler_is_the_one_we_chain():
    """``fit`` registers Ray Train's own handler (a closure named ``sigint_handler``) that our chained handler calls
    after recording the interrupt."""
    from pipelines.ray_adapter import trainer_class

    cls = trainer_class(on_sigint=lambda: None)
    before = signal.getsignal(signal.SIGINT)
    try:
        cls._register_sigint_handler(object.__new__(cls), controller=None)
        handler = signal.getsignal(signal.SIGINT)
        assert handler.previous.__qualname__.endswith("_register_sigint_handler.<locals>.sigint_handler")
    finally:
        signal.signal(signal.SIGINT, before)


def test_worker_report_logger_v2_switch_per_node_cpus_and_gcs_probe_exist():
    import ray._private.state as state
    from ray._private.authentication import grpc_authentication_client_interceptor as auth
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from ray.train.v2._internal import constants
    from ray.train.v2._internal.execution import context

    assert context.__file__.endswith("context.py")
    assert _params(constants.is_v2_enabled) == [] and constants.V2_ENABLED_ENV_VAR == "RAY_TRAIN_V2_ENABLED"
    assert _params(state.available_resources_per_node) == []
    assert _params(auth._get_authentication_metadata_tuple) == []
    assert hasattr(gcs_service_pb2, "GetClusterIdRequest") and hasattr(gcs_service_pb2_grpc, "NodeInfoGcsServiceStub")


def test_gcs_probe_reports_an_unreachable_gcs_by_its_grpc_code():
    """Nothing listens on the port: the probe returns gRPC's code instead of raising (``UNAVAILABLE`` or
    ``DEADLINE_EXCEEDED``)."""
    import socket

    from pipelines.ray_adapter import gcs_probe

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, _ = gcs_probe(f"127.0.0.1:{port}", 2.0)
    assert code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
