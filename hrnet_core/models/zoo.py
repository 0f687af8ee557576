"""Model zoo: names -> plain-data specs -> networks.

Every HRNet-based network of the zoo is a :class:`ModelSpec` (task, backbone config fields, head arguments, the input
shape at which the papers count complexity). ``build_model(name, **overrides)`` merges the overrides into the spec:
a key that is a field of :class:`~hrnet_core.models.hrnet.HRNetConfig` goes to the backbone (``width``, ``fusion``,
``stage_modules``, ``stage_blocks``, ``upsample``, ``align_corners``, ``multi_scale_output``, ``bn_momentum``, ...),
a key of the head's constructor goes to the head (``num_joints``, ``head``, ``num_classes``, ``num_landmarks``,
``num_deconvs``, ...); any other key raises ``ValueError`` naming it and the valid keys.

Layouts per family (verified against the official state dicts in ``../shared/reference/official_models``):

* HRNet-W{C}: stage 1 = 4 Bottlenecks (planes 64); stages 2-4 = 1 / 4 / 3 modules of 4 BasicBlocks per branch.
* ``w18_small_v1`` (official CLS/SEG ``small_v1``): width 16, stage 1 = 1 Bottleneck (planes 32), stages 2-4 = 1 / 1 / 1
  modules of 2 blocks.
* ``w18_small_v2``: width 18, stage 1 = 2 Bottlenecks (planes 64), stages 2-4 = 1 / 3 / 2 modules of 2 blocks.

Per-task backbone settings (FACTS.md section 0): pose / HigherHRNet single-scale last module + nearest upsampling;
SEG bilinear (``align_corners=False``, BN momentum 0.01); SEG-OCR bilinear with ``align_corners=True``; FACE bilinear
(BN momentum 0.01); CLS and DET nearest, multi-scale, He init.

HRFormer networks come from ``hrnet_core.models.hrformer.HRFORMER_MODELS`` (name -> builder) when that module exists.
:func:`model_family` (``"hrnet"`` / ``"hrformer"``) and :func:`model_overrides` (the accepted override keys) let
callers such as the recipe loader check overrides without building a network.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from torch import nn

from .cls import ClsHRNet
from .face import FaceHRNet
from .higher import HigherHRNet
from .hrfpn import HRNetV2p
from .hrnet import HRNetConfig
from .pose import PoseHRNet
from .seg import SegHRNet, SegHRNetOCR

NETWORKS: Mapping[str, type[nn.Module]] = MappingProxyType({
    "pose": PoseHRNet,
    "higher": HigherHRNet,
    "seg": SegHRNet,
    "seg_ocr": SegHRNetOCR,
    "face": FaceHRNet,
    "cls": ClsHRNet,
    "det": HRNetV2p,
})

# backbone layouts (HRNetConfig fields)
_SMALL_V1 = {"width": 16, "stage1_blocks": 1, "stage1_planes": 32,
             "stage_modules": (1, 1, 1), "stage_blocks": (2, 2, 2)}
_SMALL_V2 = {"width": 18, "stage1_blocks": 2, "stage1_planes": 64,
             "stage_modules": (1, 3, 2), "stage_blocks": (2, 2, 2)}

# per-task backbone settings (FACTS.md section 0)
_TASK_BACKBONE = {
    "pose": {"upsample": "nearest", "multi_scale_output": False, "bn_momentum": 0.1, "init": "normal"},
    "higher": {"upsample": "nearest", "multi_scale_output": False, "bn_momentum": 0.1, "init": "normal"},
    "seg": {"upsample": "bilinear", "align_corners": False, "bn_momentum": 0.01, "init": "normal"},
    "seg_ocr": {"upsample": "bilinear", "align_corners": True, "bn_momentum": 0.1, "init": "normal"},
    "face": {"upsample": "bilinear", "align_corners": False, "bn_momentum": 0.01, "init": "normal"},
    "cls": {"upsample": "nearest", "bn_momentum": 0.1, "init": "kaiming"},
    "det": {"upsample": "nearest", "bn_momentum": 0.1, "init": "kaiming"},
}

# input shapes ([N, 3, H, W]) at which the papers / official READMEs count complexity
_TASK_INPUT = {
    "pose": (1, 3, 256, 192),
    "higher": (1, 3, 512, 512),
    "seg": (1, 3, 1024, 2048),
    "seg_ocr": (1, 3, 1024, 2048),
    "face": (1, 3, 256, 256),
    "cls": (1, 3, 224, 224),
    "det": (1, 3, 800, 1333),
}


@dataclass(frozen=True)
class ModelSpec:
    """Plain-data description of one zoo entry.

    Attributes:
        name: zoo name.
        task: key of :data:`NETWORKS` (``pose``, ``higher``, ``seg``, ``seg_ocr``, ``face``, ``cls``, ``det``).
        backbone: :class:`HRNetConfig` fields.
        head: keyword arguments of the network's constructor other than ``config``.
        input_shape: ``[N, 3, H, W]`` used by :func:`hrnet_core.models.complexity_table`.
        source: the official release / paper the entry follows.
    """

    name: str
    task: str
    backbone: Mapping[str, object] = field(default_factory=dict)
    head: Mapping[str, object] = field(default_factory=dict)
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)
    source: str = ""


def _spec(name: str, task: str, layout: Mapping[str, object], source: str, **head: object) -> ModelSpec:
    return ModelSpec(name=name, task=task, backbone={**_TASK_BACKBONE[task], **layout}, head=dict(head),
                     input_shape=_TASK_INPUT[task], source=source)


def _make_specs() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    for w in (32, 48):
        specs.append(_spec(f"pose_hrnet_w{w}", "pose", {"width": w}, "DHRN (pose paper)", num_joints=17, head="v1"))
        specs.append(_spec(f"higher_hrnet_w{w}", "higher", {"width": w}, "HH (HigherHRNet paper)", num_joints=17))
    for w in (18, 40, 48):
        specs.append(_spec(f"seg_hrnetv2_w{w}", "seg", {"width": w}, "SEG (HRNetV2 paper)", num_classes=19))
    specs.append(_spec("seg_hrnetv2_w18_small_v1", "seg", _SMALL_V1, "SEG small_v1", num_classes=19))
    specs.append(_spec("seg_hrnetv2_w18_small_v2", "seg", _SMALL_V2, "SEG small_v2", num_classes=19))
    specs.append(_spec("seg_hrnetv2_ocr_w48", "seg_ocr", {"width": 48}, "SEG HRNet-OCR", num_classes=19))
    specs.append(_spec("face_hrnetv2_w18", "face", {"width": 18}, "FACE (HRNetV2 paper)", num_landmarks=98))
    specs.append(_spec("cls_hrnet_w18_small_v1", "cls", _SMALL_V1, "CLS small_v1", num_classes=1000))
    specs.append(_spec("cls_hrnet_w18_small_v2", "cls", _SMALL_V2, "CLS small_v2", num_classes=1000))
    for w in (18, 30, 32, 40, 44, 48, 64):
        specs.append(_spec(f"cls_hrnet_w{w}", "cls", {"width": w}, "CLS (HRNetV2 paper appendix)", num_classes=1000))
    for w in (18, 32, 40, 48):
        specs.append(_spec(f"det_hrnetv2p_w{w}", "det", {"width": w}, "DET HRNetV2p backbone + HRFPN"))
    return {s.name: s for s in specs}


MODEL_SPECS: Mapping[str, ModelSpec] = MappingProxyType(_make_specs())

_BACKBONE_KEYS = frozenset(f.name for f in fields(HRNetConfig))


def hrformer_models() -> dict[str, Callable[..., nn.Module]]:
    """HRFormer builders from ``hrnet_core.models.hrformer.HRFORMER_MODELS`` plus the segmentation networks of
    ``hrnet_core.models.seg_hrformer.SEG_HRFORMER_MODELS`` ({} while the modules do not exist).

    Only the absence of a module is tolerated; an error inside it propagates.
    """
    models: dict[str, Callable[..., nn.Module]] = {}
    for module, registry in (("hrformer", "HRFORMER_MODELS"), ("seg_hrformer", "SEG_HRFORMER_MODELS")):
        if importlib.util.find_spec(f"{__package__}.{module}") is not None:
            models.update(getattr(importlib.import_module(f"{__package__}.{module}"), registry))
    return models


def list_models() -> list[str]:
    """Sorted names accepted by :func:`build_model` (HRNet zoo + HRFormer models)."""
    return sorted(set(MODEL_SPECS) | set(hrformer_models()))


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of an HRNet zoo entry. Raises ``KeyError`` naming the valid names."""
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown HRNet model {name!r}; known: {', '.join(sorted(MODEL_SPECS))}")
    return MODEL_SPECS[name]


def _head_keys(task: str) -> list[str]:
    params = inspect.signature(NETWORKS[task].__init__).parameters
    return [p for p in params if p not in ("self", "config")]


def resolve_config(name: str, **overrides: object) -> tuple[str, HRNetConfig, dict[str, object]]:
    """Split ``overrides`` of zoo entry ``name`` into ``(task, HRNetConfig, head kwargs)``.

    Raises:
        KeyError: unknown model name.
        ValueError: an override that is neither a backbone field nor a head argument (message lists the valid keys),
            or an invalid backbone value.
    """
    spec = get_spec(name)
    head_keys = _head_keys(spec.task)
    backbone = dict(spec.backbone)
    head = dict(spec.head)
    for key, value in overrides.items():
        if key in _BACKBONE_KEYS:
            backbone[key] = value
        elif key in head_keys:
            head[key] = value
        else:
            raise ValueError(f"unknown override {key!r} for model {name!r}; backbone keys: {sorted(_BACKBONE_KEYS)}, "
                             f"head keys: {head_keys}")
    return spec.task, HRNetConfig(**backbone), head


def build_model(name: str, **overrides: object) -> nn.Module:
    """Build a zoo network by name.

    Args:
        name: one of :func:`list_models` (e.g. ``pose_hrnet_w32``, ``seg_hrnetv2_ocr_w48``, ``cls_hrnet_w18_small_v2``).
        **overrides: backbone config fields and head arguments (see module docstring), e.g.
            ``build_model("pose_hrnet_w32", num_joints=16)``, ``build_model("pose_hrnet_w32", fusion="final")``,
            ``build_model("higher_hrnet_w32", num_deconvs=2, num_deconv_blocks=0)``.

    Returns:
        The freshly initialised network (train mode). Load official weights with
        :func:`hrnet_core.models.load_checkpoint`.

    Raises:
        KeyError: unknown name. ValueError: unknown or invalid override.
    """
    if name in MODEL_SPECS:
        task, config, head = resolve_config(name, **overrides)
        return NETWORKS[task](config, **head)
    hrformer = hrformer_models()
    if name in hrformer:
        return hrformer[name](**overrides)
    raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")


MODEL_FAMILIES = ("hrnet", "hrformer")


def model_family(name: str) -> str:
    """``"hrnet"`` for the HRNet zoo entries (:data:`MODEL_SPECS`), ``"hrformer"`` for the HRFormer builders.

    The families take different overrides (HRNet: ``width``, ``stage_blocks``, ...; HRFormer: ``widths``,
    ``num_heads``, ``window_size``, ...); recipe profiles hold one model section per family.

    Raises:
        KeyError: unknown name (message lists the known names).
    """
    if name in MODEL_SPECS:
        return "hrnet"
    if name in hrformer_models():
        return "hrformer"
    raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def model_overrides(name: str) -> frozenset[str]:
    """The keyword overrides :func:`build_model` accepts for ``name``, without building anything.

    HRNet entries: the :class:`HRNetConfig` fields plus the arguments of the task network's constructor (e.g.
    ``num_joints``, ``head``, ``heatmap_branch`` for pose). HRFormer entries:
    ``hrnet_core.models.hrformer.override_keys`` (the ``HRFormerConfig`` fields plus ``num_joints`` /
    ``num_classes``). Any other key makes :func:`build_model` raise.

    Raises:
        KeyError: unknown name (message lists the known names).
    """
    if name in MODEL_SPECS:
        return _BACKBONE_KEYS | frozenset(_head_keys(MODEL_SPECS[name].task))
    if name in hrformer_models():
        module = "seg_hrformer" if name.startswith("seg_") else "hrformer"
        return frozenset(importlib.import_module(f"{__package__}.{module}").override_keys(name))
    raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    """Input shape ``[1, 3, H, W]`` at which complexity is reported for ``name``.

    HRNet entries: from their spec. HRFormer entries: the builder's ``default_input_shape`` attribute if it has one,
    else 224x224 for ``*cls*`` names, 1024x2048 for ``*seg*`` names and 256x192 (top-down pose) otherwise.

    Raises:
        KeyError: unknown name.
    """
    if name in MODEL_SPECS:
        return MODEL_SPECS[name].input_shape
    hrformer = hrformer_models()
    if name not in hrformer:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    shape = getattr(hrformer[name], "default_input_shape", None)
    if shape is not None:
        return tuple(shape)  # type: ignore[return-value]
    if "cls" in name:
        return _TASK_INPUT["cls"]
    if "seg" in name:
        return _TASK_INPUT["seg"]
    return _TASK_INPUT["pose"]
