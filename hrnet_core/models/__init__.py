"""HRNet-family model zoo (issue 2): one multi-resolution backbone, task heads, checkpoint import, complexity counting.

Public API (see docs/INTERFACES.md):

* :func:`build_model` ``(name, **overrides) -> nn.Module`` and :func:`list_models` — HRNet networks from
  :mod:`.zoo` plus HRFormer networks from ``hrformer.HRFORMER_MODELS`` when that module exists;
* :func:`load_checkpoint` ``(model, path_or_state_dict)`` — strict import of official checkpoints, raising
  :class:`CheckpointMismatchError`; :func:`load_pretrained_backbone` for ImageNet initialisation;
* :func:`model_complexity` ``(model, input_shape) -> {"params", "gmacs"}`` and :func:`complexity_table` ``(names)``;
* :func:`model_family` ``(name) -> "hrnet" | "hrformer"`` and :func:`model_overrides` ``(name)`` (the keyword overrides
  :func:`build_model` accepts; recipes validate against them), :func:`inert_parameters` ``(model)`` (parameters
  the forward never uses: DDP needs ``find_unused_parameters``).
"""

from .checkpoint import CheckpointMismatchError, load_checkpoint, load_pretrained_backbone
from .complexity import complexity_table, count_macs, count_params, model_complexity
from .hrnet import HRNet, HRNetConfig
from .hrformer import inert_parameters
from .zoo import (MODEL_SPECS, ModelSpec, build_model, default_input_shape, get_spec, list_models, model_family,
                  model_overrides)

__all__ = [
    "build_model",
    "list_models",
    "load_checkpoint",
    "CheckpointMismatchError",
    "load_pretrained_backbone",
    "model_complexity",
    "complexity_table",
    "count_macs",
    "count_params",
    "default_input_shape",
    "get_spec",
    "HRNet",
    "HRNetConfig",
    "MODEL_SPECS",
    "ModelSpec",
    "model_family",
    "model_overrides",
    "inert_parameters",
]
