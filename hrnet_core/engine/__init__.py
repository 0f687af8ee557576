"""The training engine: pure PyTorch pieces of a run (no Ray, MLflow or DVC), unit-tested on CPU.

* :mod:`~hrnet_core.engine.schedules`: ``lr_at`` (the official stepping rules), ``batches_per_epoch``,
  ``steps_per_epoch``;
* :mod:`~hrnet_core.engine.optim`: ``build_optimizer`` (parameter groups), ``amp_dtype`` / ``make_scaler`` (bf16 /
  fp16), ``optimizer_step``, ``sync_leftover_grads`` (gradient accumulation);
* :mod:`~hrnet_core.engine.loop`: ``train_one_epoch`` with the non-finite-loss guard (``check_finite_loss``,
  ``NonFiniteLossError``);
* ``hrnet_core.engine.evaluation`` is the one evaluation loop (optionally sharded over ranks) used by
  training-time validation and ``hrnet evaluate``.

``pipelines.train`` is the Ray Train driver and worker around these.
"""

from .loop import EpochResult, NonFiniteLossError, check_finite_loss, move_to, train_one_epoch
from .optim import amp_dtype, build_optimizer, make_scaler, optimizer_step, sync_leftover_grads
from .schedules import batches_per_epoch, lr_at, steps_per_epoch

__all__ = ["EpochResult", "NonFiniteLossError", "check_finite_loss", "move_to", "train_one_epoch", "amp_dtype",
           "build_optimizer", "make_scaler", "optimizer_step", "sync_leftover_grads", "batches_per_epoch", "lr_at",
           "steps_per_epoch"]
