"""ONNX export of the zoo's networks and an ``nn.Module`` that runs an exported file on onnxruntime (issue 26).

What is exported is the network of a recipe as the task's test procedure calls it (image tensor ``[B, 3, H, W]``,
normalised as the task does, in; the network's raw outputs out): every task but detection exports the whole network
(pose HRNet / HRFormer heatmaps, HigherHRNet's list of heatmaps + tags, HRNetV2 / OCR / HRFormer-OCR segmentation
logits, face heatmaps, classification logits); a detector exports its backbone + neck (HRNet + HRFPN, five feature
maps), the part that holds nearly all of its compute, while the RPN and the RoI heads (data-dependent proposal counts,
torchvision's NMS) stay in PyTorch. The file carries the recipe in its metadata (``hrnet.recipe``), so
``hrnet predict --onnx model.onnx`` knows the task, the test procedure and the output structure.

The official repositories ship no ONNX exporter (their demo scripts run PyTorch); the exported graph is checked
against the PyTorch network on the same input (:func:`max_abs_difference`, <= 1e-4 in ``tests/test_export_onnx.py``).

``onnx`` / ``onnxruntime`` / ``onnxscript`` are the optional extra ``pip install -e '.[onnx]'``; they are imported
only here, when an export or an ONNX run is asked for.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from hrnet_core.weights import CheckpointError

__all__ = ["OnnxExportError", "ExportedNetwork", "export_network", "network_part", "OnnxNetwork", "read_metadata",
           "max_abs_difference", "flatten_outputs", "OPSET"]

#: ONNX opset of the exports (onnxruntime >= 1.18 runs it)
OPSET = 18


class OnnxExportError(CheckpointError):
    """The exporter failed, the extras are missing, or an ONNX file is not one of ours (the message says which; a
    :class:`~hrnet_core.weights.CheckpointError`, so ``hrnet`` prints it as one line, exit status 2)."""


def _require_extras() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise OnnxExportError(f"ONNX support needs the optional extra: pip install -e '.[onnx]' ({exc})") from None


class _Flat(nn.Module):
    """``net`` with its outputs flattened to a tuple of tensors (ONNX outputs ``out0, out1, ...``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.net(x))[0])


def flatten_outputs(out: Any) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """A network's outputs -> ``(tensors, structure)``; ``structure`` is ``{"kind": "tensor"}``, ``{"kind":
    "list", "n": N}`` (list or tuple) or ``{"kind": "dict", "keys": [...]}`` (torchvision feature maps).

    Raises:
        OnnxExportError: another output type.
    """
    if isinstance(out, torch.Tensor):
        return [out], {"kind": "tensor"}
    if isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out), {"kind": "list", "n": len(out)}
    if isinstance(out, dict) and all(isinstance(t, torch.Tensor) for t in out.values()):
        return list(out.values()), {"kind": "dict", "keys": [str(k) for k in out]}
    raise OnnxExportError(f"cannot export a network whose output is a {type(out).__name__}")


def _unflatten(tensors: Sequence[torch.Tensor], structure: dict[str, Any]) -> Any:
    kind = structure["kind"]
    if kind == "tensor":
        return tensors[0]
    if kind == "list":
        return list(tensors)
    return OrderedDict(zip(structure["keys"], tensors))


def network_part(model: nn.Module, task: str) -> tuple[nn.Module, str]:
    """What is exported of a task's network: ``(module, part)`` with ``part`` ``"network"`` (the whole network) or,
    for ``detection``, ``"backbone"`` (``model.backbone``: HRNet + HRFPN, ``[B, 3, H, W]`` normalised and padded
    image -> feature maps ``"0".."4"``)."""
    if task == "detection":
        return model.backbone, "backbone"
    return model, "network"


@dataclass(frozen=True)
class ExportedNetwork:
    """What :func:`export_network` wrote.

    Attributes:
        path: the ``.onnx`` file.
        part: ``network`` or ``backbone`` (:func:`network_part`).
        input_shape: ``(B, 3, H, W)`` of the example input (px).
        dynamic: the dynamic input axes (``batch``, ``height``, ``width``).
        outputs: the output structure (:func:`flatten_outputs`).
    """

    path: Path
    part: str
    input_shape: tuple[int, int, int, int]
    dynamic: tuple[str, ...]
    outputs: dict[str, Any]


def export_network(model: nn.Module, recipe, out: str | Path, input_hw: tuple[int, int], *, batch: int = 1,
                   dynamic_batch: bool = False, dynamic_size: bool = False) -> ExportedNetwork:
    """Export the recipe's network (eval mode, fp32, CPU) to ``out`` with the recipe in its metadata.

    Args:
        model: the recipe's network (:func:`hrnet_core.weights.build_network` / a loaded checkpoint); not modified.
        recipe: its recipe (stored as ``hrnet.recipe`` JSON; ``hrnet.task``, ``hrnet.part``, ``hrnet.outputs``).
        input_hw: ``(H, W)`` px of the example input (and of the graph when not ``dynamic_size``).
        batch: batch of the example input.
        dynamic_batch: the batch axis is dynamic (``batch``).
        dynamic_size: height and width are dynamic too (segmentation whole-image / sliding windows of other sizes,
            bottom-up and detection inputs of varying size).

    Raises:
        OnnxExportError: the extras are missing or the exporter failed (its first line).
    """
    import copy

    _require_extras()
    from hrnet_core.models.zoo import model_family

    if dynamic_size and model_family(recipe.model.name) == "hrformer":
        # measured: the traced window padding of a 64x64 export fails in onnxruntime at 96x96 (Reshape 6x6 -> 8x8)
        raise OnnxExportError(f"{recipe.model.name}: HRFormer's window padding is traced for the export size; "
                              f"export at the size you run (--input HxW) without --dynamic-size")
    net, part = network_part(model, recipe.task)
    net = copy.deepcopy(net).float().cpu().eval()
    x = torch.randn(batch, 3, int(input_hw[0]), int(input_hw[1]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tensors, structure = flatten_outputs(net(x))
    names = [f"out{i}" for i in range(len(tensors))]
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({2: "height", 3: "width"})
    dyn = {"image": axes, **{n: {0: "batch"} for n in names if dynamic_batch}} if axes else None
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # TorchScript-based exporter: 5x faster than the dynamo one here and equal outputs (both checked to 1e-4)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(_Flat(net), (x,), str(path), input_names=["image"], output_names=names,
                              opset_version=OPSET, dynamic_axes=dyn, dynamo=False, do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxExportError(f"ONNX export of {recipe.model.name} ({part}) failed: {type(exc).__name__}: "
                              f"{first}") from None
    _write_metadata(path, {"hrnet.task": recipe.task, "hrnet.part": part, "hrnet.outputs": json.dumps(structure),
                           "hrnet.recipe": json.dumps(recipe.to_dict()), "hrnet.model": recipe.model.name})
    return ExportedNetwork(path, part, tuple(int(v) for v in x.shape), tuple(axes.values()), structure)


def _write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``hrnet.*`` metadata of an exported file.

    Raises:
        OnnxExportError: the file is missing, unreadable, or not exported by :func:`export_network`.
    """
    _require_extras()
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxExportError(f"ONNX file {str(p)!r} not found")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise OnnxExportError(f"ONNX file {str(p)!r} cannot be read: {type(exc).__name__}") from None
    meta = {e.key: e.value for e in m.metadata_props}
    if "hrnet.task" not in meta or "hrnet.recipe" not in meta:
        raise OnnxExportError(f"ONNX file {str(p)!r} was not written by `hrnet export onnx` (no hrnet.recipe "
                              f"metadata)")
    return meta


class OnnxNetwork(nn.Module):
    """An exported file as a module: ``forward(x [B, 3, H, W])`` runs onnxruntime on ``x`` (as float32 on the CPU)
    and returns the outputs in the PyTorch network's structure (tensor / list / feature dict), on ``x``'s device.
    It holds no parameters; ``fold_batchnorm``, ``.to()``, ``.eval()`` work on it as on the network it stands for.

    Args:
        path: the ``.onnx`` file of :func:`export_network`.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        providers: onnxruntime execution providers (default: CUDA when onnxruntime has it, else CPU).

    Raises:
        OnnxExportError: see :func:`read_metadata`.
    """

    def __init__(self, path: str | Path, threads: int = 0, providers: Sequence[str] | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = str(path)
        self.meta = read_metadata(path)
        self.structure = json.loads(self.meta["hrnet.outputs"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        avail = ort.get_available_providers()
        chosen = list(providers) if providers else [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                                     if p in avail]
        self._session = ort.InferenceSession(self.path, opts, providers=chosen)
        self._input = self._session.get_inputs()[0].name

    def __deepcopy__(self, memo):  # sessions do not copy; the file is the state
        return self

    def __getstate__(self):
        raise TypeError("OnnxNetwork does not pickle; open the file where it runs")

    def forward(self, x: torch.Tensor) -> Any:
        arrays = self._session.run(None, {self._input: x.detach().float().contiguous().cpu().numpy()})
        return _unflatten([torch.from_numpy(a).to(x.device) for a in arrays], self.structure)

    def extra_repr(self) -> str:
        return f"path={self.path!r}, part={self.meta.get('hrnet.part')}"


def max_abs_difference(model: nn.Module, path: str | Path, x: torch.Tensor, task: str) -> float:
    """Largest ``|onnxruntime - torch|`` over every output of the exported part of ``model`` on input ``x``
    ``[B, 3, H, W]`` (fp32, CPU)."""
    net, _ = network_part(model, task)
    net = net.float().cpu().eval()
    with torch.no_grad():
        ref, _ = flatten_outputs(net(x))
    got, _ = flatten_outputs(OnnxNetwork(path)(x))
    return max(float((a - b).abs().max()) for a, b in zip(ref, got))
