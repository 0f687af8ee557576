"""``hrnet_core.engine`` on CPU without Ray (issue 25, point 1): the epoch loop against a hand computation of SGD with
gradient accumulation, the non-finite-loss guard, and the error bases the CLI and Ray's failure policy read."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch

from hrnet_core.engine import NonFiniteLossError, amp_dtype, make_scaler, train_one_epoch


def _recipe(lr: float = 0.1, epochs: int = 2) -> SimpleNamespace:
    """The recipe fields the loop reads: a constant rate (``multistep`` without milestones, no warm-up)."""
    schedule = SimpleNamespace(name="multistep", milestones=[], gamma=0.1, epoch_offset=0, warmup_iters=0,
                               warmup_ratio=1.0, per_iteration=False)
    return SimpleNamespace(train=SimpleNamespace(epochs=epochs, schedule=schedule,
                                                 optimizer=SimpleNamespace(lr=lr)))


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(4, 3, generator=g), "y": torch.randn(4, 1, generator=g)} for _ in range(3)]


def _step_fn(model, batch):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return {"loss": loss, "mse": loss.detach()}


def _hand_sgd(w: torch.Tensor, b: torch.Tensor, batches, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD on ``mean((x w^T + b - y)^2)``: batches 1 + 2 one step on the mean of their gradients (accumulation 2),
    batch 3 alone one step with its full gradient (an incomplete group steps on what it has)."""
    def grads(w, b, batch):
        x, y = batch["x"], batch["y"]
        r = x @ w.T + b - y  # [4, 1]
        n = r.numel()
        return (2 / n) * r.T @ x, (2 / n) * r.sum(0)

    g1, g2 = grads(w, b, batches[0]), grads(w, b, batches[1])
    w, b = w - lr * (g1[0] + g2[0]) / 2, b - lr * (g1[1] + g2[1]) / 2
    g3 = grads(w, b, batches[2])
    return w - lr * g3[0], b - lr * g3[1]


def test_one_epoch_with_accumulation_matches_hand_sgd():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    batches = [{k: v.double() for k, v in b.items()} for b in _batches()]
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = train_one_epoch(model, iter(batches), step_fn=_step_fn, optimizer=opt, scaler=make_scaler(None),
                          recipe=_recipe(), epoch=0, step=0, total_steps=4, accumulation=2, num_batches=3,
                          device=torch.device("cpu"), batch_size=lambda b: len(b["x"]))
    w, b = _hand_sgd(w0, b0, batches, 0.1)
    assert torch.allclose(model.weight, w, atol=1e-12) and torch.allclose(model.bias, b, atol=1e-12)
    assert res.step == 2 and res.batches == 3 and res.seen == 12 and set(res.sums) == {"loss", "mse"}
    assert all(p.grad is None for p in model.parameters()), "gradients cleared after the last step"


def test_non_finite_loss_stops_before_its_backward():
    """torchvision ``references/detection/engine.py``: stop at the first non-finite loss, naming the terms; the
    batch's backward never runs (no gradient, no step)."""
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def bad(m, batch):
        calls.append(1)
        loss = m(batch["x"]).mean() * (float("nan") if len(calls) == 2 else 1.0)
        return {"loss": loss, "heatmap": loss.detach()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as exc:
        train_one_epoch(model, iter(_batches()), step_fn=bad, optimizer=opt, scaler=make_scaler(None),
                        recipe=_recipe(), epoch=1, step=5, total_steps=10, accumulation=2, num_batches=3,
                        device=torch.device("cpu"), batch_size=lambda b: len(b["x"]))
    assert str(exc.value).startswith("non-finite loss at epoch 2/2, step 5 (batch 2/3): loss nan, heatmap nan")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)), "no step was taken"


def test_autocast_only_on_gpu_and_loss_scaling_only_for_fp16():
    assert amp_dtype("auto", use_gpu=False) is None and amp_dtype("bf16", use_gpu=False) is None
    assert amp_dtype("fp32", use_gpu=True) is None and amp_dtype("fp16", use_gpu=True) is torch.float16
    assert amp_dtype("bf16", use_gpu=True) is torch.bfloat16
    assert not make_scaler(None).is_enabled() and not make_scaler(torch.bfloat16).is_enabled()


# ------------------------------------------------------------------------------------------------ error bases


def test_every_bad_input_error_shares_one_base():
    from hrnet_core.data.io import AnnotationError, ImageReadError
    from hrnet_core.data.prepared import CorruptDataError, DataError
    from hrnet_core.errors import BadInputError, FinalError
    from hrnet_core.models import CheckpointMismatchError
    from hrnet_core.models.mmdet_convert import UnmappedKeyError
    from hrnet_core.models.onnx_export import OnnxExportError
    from hrnet_core.paper_tables import PaperTableError
    from hrnet_core.recipes import ConfigError
    from hrnet_core.schema import SchemaError
    from hrnet_core.tasks import UnknownTaskError
    from hrnet_core.weights import CheckpointError
    from pipelines.cluster import ClusterError
    from sweeps.spec import SweepConfigError

    for cls in (AnnotationError, ImageReadError, DataError, CorruptDataError, CheckpointMismatchError,
                UnmappedKeyError, OnnxExportError, PaperTableError, ConfigError, SchemaError, UnknownTaskError,
                CheckpointError, ClusterError, SweepConfigError):
        assert issubclass(cls, BadInputError), cls
    assert CorruptDataError.exit_status == 1 and ConfigError.exit_status == 2
    assert issubclass(NonFiniteLossError, FinalError) and not issubclass(NonFiniteLossError, BadInputError)
    # the old bases stay: callers catching ValueError / OSError / KeyError still catch them
    assert issubclass(ConfigError, ValueError) and issubclass(ImageReadError, OSError)
    assert issubclass(UnknownTaskError, KeyError) and issubclass(ClusterError, RuntimeError)


def test_a_worker_failure_survives_pickling_and_is_found_in_the_chain():
    """What a Ray Train worker re-raises (:class:`hrnet_core.errors.WorkerInputFailure`) keeps the original class
    name and message through pickling (Ray's transport); :func:`final_error` finds it behind Ray's wrappers
    (``worker_failures``, a task error's ``cause``) without reading any traceback text."""
    from hrnet_core.data.io import ImageReadError
    from hrnet_core.errors import WorkerInputFailure, final_error, root_cause

    failure = pickle.loads(pickle.dumps(WorkerInputFailure.of(ImageReadError("/x/bad.jpg", "truncated"))))
    assert failure.kind == "ImageReadError" and str(failure) == "image file '/x/bad.jpg': truncated"

    class TaskError(Exception):  # Ray's RayTaskError keeps the user exception as `.cause`
        def __init__(self, cause):
            super().__init__("task failed")
            self.cause = cause

    group = RuntimeError("worker group failed")
    group.worker_failures = {0: RuntimeError("actor died"), 1: TaskError(failure)}
    assert final_error(group) is failure and root_cause(group) is failure
    lost = RuntimeError("worker group failed")
    lost.worker_failures = {0: RuntimeError("actor died")}
    assert final_error(lost) is None and str(root_cause(lost)) == "actor died"


def test_cli_turns_any_bad_input_into_one_line_and_its_exit_status(monkeypatch, capsys):
    import importlib

    from hrnet_core.data.prepared import CorruptDataError
    from pipelines.cluster import ClusterError

    cli = importlib.import_module("hrnet_cli.main")  # the module (hrnet_cli.main is also the function)
    for exc, status in ((ClusterError("no Ray cluster answers at 1.2.3.4:6379\nmore"), 2),
                        (CorruptDataError("image file 'a.jpg': truncated\nb.jpg"), 1)):
        def boom(args, exc=exc):
            raise exc

        monkeypatch.setitem(cli.COMMANDS, "tasks", boom)
        assert cli.main(["tasks", "list"]) == status
        err = capsys.readouterr().err
        assert err == f"hrnet: error: {str(exc).splitlines()[0]}\n", err
