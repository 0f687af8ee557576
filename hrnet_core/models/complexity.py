"""Parameter and MAC counting with the convention of ``../shared/reference`` (FACTS.md, "Counting conventions").

* ``params``: number of trainable parameters (``requires_grad``), in units of 1 (not 2**20).
* ``gmacs``: multiply-accumulates / 1e9 = ``torch.utils.flop_counter.FlopCounterMode`` total FLOPs / 2 for one forward
  pass in eval mode at batch size 1 (or the given batch). FlopCounterMode counts only matrix products and
  convolutions: ``aten.mm``, ``addmm``, ``bmm``, ``baddbmm`` (Linear, attention ``matmul``), ``aten.convolution``
  (Conv2d and ConvTranspose2d, bias not counted) and scaled-dot-product attention kernels. BatchNorm, activations,
  pooling, interpolation, softmax and element-wise additions are **not** counted.
* The HRNet / HRNetV2 / CLS / SEG papers print "GFLOPs" = MACs / 1024**3 (``gmacs_gib``); HigherHRNet prints MACs / 1e9.

The forward pass runs on the ``meta`` device (shapes only, no arithmetic), so counting the 1024x2048 segmentation
models takes well under a second; the count is identical to a CPU run (``tests/test_models.py`` checks this).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .zoo import build_model, default_input_shape


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared parameters count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one eval-mode forward at ``input_shape`` ``[N, 3, H, W]`` (FlopCounterMode total / 2).

    The model's parameters and buffers are replaced by ``meta`` tensors of the same shapes for the duration of the
    call (``torch.func.functional_call``), so the model itself is untouched (its mode is restored afterwards).
    """
    was_training = model.training
    model.eval()
    try:
        tensors = {name: torch.empty_like(t, device="meta")
                   for name, t in itertools.chain(model.named_parameters(), model.named_buffers())}
        x = torch.empty(tuple(int(s) for s in input_shape), device="meta")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            torch.func.functional_call(model, tensors, (x,))
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)


def model_complexity(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """``{"params": trainable parameter count (int), "gmacs": MACs / 1e9 (float)}`` at ``input_shape`` ``[N, 3, H, W]``.

    See the module docstring for which operations are counted.
    """
    return {"params": count_params(model), "gmacs": count_macs(model, input_shape) / 1e9}


def complexity_table(names: Iterable[str], input_shape: Sequence[int] | None = None) -> list[dict[str, object]]:
    """One row per model name, ready for a CLI table.

    Each model is built on the ``meta`` device (no memory, no initialisation cost); a builder that needs tensor
    values while building (``NotImplementedError`` on meta) is built on the CPU instead.

    Args:
        names: zoo names (see :func:`hrnet_core.models.list_models`).
        input_shape: ``[N, 3, H, W]`` for every row; default: each model's own (:func:`default_input_shape`:
            pose 256x192, HigherHRNet 512x512, segmentation 1024x2048, face 256x256, classification 224x224,
            detection backbone 800x1333).

    Returns:
        ``[{"name", "params", "params_m" (params / 1e6), "gmacs" (MACs / 1e9), "gmacs_gib" (MACs / 1024**3, the
        "GFLOPs" of the HRNet/HRNetV2 tables), "input_shape" (list)}]``.
    """
    rows = []
    for name in names:
        shape = list(input_shape) if input_shape is not None else list(default_input_shape(name))
        try:
            with torch.device("meta"):
                model = build_model(name)
        except NotImplementedError:  # a builder that reads tensor values ("Cannot copy out of meta tensor")
            model = build_model(name)
        macs = count_macs(model, shape)
        params = count_params(model)
        rows.append({"name": name, "params": params, "params_m": params / 1e6, "gmacs": macs / 1e9,
                     "gmacs_gib": macs / 1024**3, "input_shape": shape})
    return rows
