"""Optimiser, parameter groups, mixed precision and the gradient-accumulation helpers of the training loop.

Pure PyTorch (``torch.distributed`` only when a process group is initialised). Official sources: the pose / face /
classification ``tools/train.py`` (``get_optimizer``: Adam or SGD on every parameter), HRFormer ``cls/optim_factory``
(AdamW, no weight decay on 1-d parameters), HRNet-Semantic-Segmentation (SGD, nesterov off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hrnet_core.recipes import Recipe

__all__ = ["build_optimizer", "amp_dtype", "make_scaler", "optimizer_step", "sync_leftover_grads"]


def _param_groups(model: "torch.nn.Module", no_decay: list[str]) -> list[dict[str, Any]]:
    """``[{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]`` (the second only when some parameter is
    exempt): a parameter is exempt when its name contains an entry of ``no_decay``, or with the entry ``<1d>`` when
    it has at most one dimension (biases, normalisation weights: DeiT / Swin)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def exempt_from_decay(name: str, p) -> bool:
        return any(k in name for k in no_decay) or ("<1d>" in no_decay and p.ndim <= 1)

    exempt = [p for n, p in named if exempt_from_decay(n, p)]
    rest = [p for n, p in named if not exempt_from_decay(n, p)]
    return [{"params": rest}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])


def build_optimizer(recipe: "Recipe", model: Any) -> "torch.optim.Optimizer":
    """Adam / AdamW / SGD from ``train.optimizer`` (the official pose recipes: Adam, no weight decay).

    Args:
        recipe: the resolved recipe (``train.optimizer``: ``name``, ``lr``, ``betas``, ``momentum``, ``nesterov``,
            ``weight_decay``, ``no_decay``).
        model: the module (parameters named in ``train.optimizer.no_decay`` get weight decay 0; the entry ``<1d>``
            exempts every parameter of at most one dimension -- biases and normalisation weights, as DeiT / Swin do)
            or an iterable of parameters.

    Returns:
        ``torch.optim.Adam`` / ``AdamW`` / ``SGD`` (any other name is SGD; the recipe schema allows these three).
    """
    import torch

    o = recipe.train.optimizer
    params = _param_groups(model, o.no_decay) if isinstance(model, torch.nn.Module) else model
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def amp_dtype(precision: str, use_gpu: bool) -> "torch.dtype | None":
    """Autocast dtype of ``train.precision`` (``auto`` | ``bf16`` | ``fp16`` | ``fp32``): ``None`` (no autocast) on
    CPU or with ``fp32``; ``bf16``, or ``auto`` on a GPU that supports it: ``torch.bfloat16``; else ``torch.float16``
    (with loss scaling, :func:`make_scaler`)."""
    import torch

    if not use_gpu or precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def make_scaler(dtype: "torch.dtype | None") -> "torch.amp.GradScaler":
    """``torch.amp.GradScaler("cuda")``, enabled only for fp16 autocast (bf16 and fp32 need no loss scaling)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


def optimizer_step(optimizer: "torch.optim.Optimizer", scaler: "torch.amp.GradScaler") -> None:
    """One optimiser step through the loss scaler, then the gradients cleared (``set_to_none``)."""
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def sync_leftover_grads(model: "torch.nn.Module", n_micro: int, accum: int) -> None:
    """Scale and all-reduce gradients of an incomplete accumulation group at the end of an epoch.

    The last micro-batch ran under ``no_sync`` (it was not the end of a group), so DDP did not average the
    gradients: average them here (only in a process group with a DDP model) and rescale from ``1/accum`` to
    ``1/n_micro`` per micro-batch, in place.
    """
    import torch.distributed as dist

    factor = accum / n_micro
    distributed = dist.is_available() and dist.is_initialized() and hasattr(model, "no_sync")
    world = dist.get_world_size() if distributed else 1
    for p in model.parameters():
        if p.grad is None:
            continue
        if distributed:
            dist.all_reduce(p.grad)
            p.grad /= world
        p.grad *= factor
