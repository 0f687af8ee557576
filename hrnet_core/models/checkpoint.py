"""Strict import of official checkpoints (FACTS.md sections 0-7 and pitfall 5: never a silent partial load).

Accepted formats:

* plain state dicts (DHRN, HH, FACE, CLS, TIMM, DET backbones) — keys as in the model;
* containers: ``{"state_dict": ...}`` (DHRN ``checkpoint.pth``, mmpose / mmdet), ``{"model": ...}`` (HRFormer
  classification, Swin-style) and ``{"module": ...}``; nested containers are unwrapped;
* wrapper prefixes stripped per key, only where the stripped key exists in the model: ``module.`` (DataParallel),
  ``model.`` (SEG ``FullModel``), ``backbone.`` and ``keypoint_head.`` (mmpose / HRFormer pose). A key that still
  matches nothing is reported as unexpected;
* SEG ``FullModel`` checkpoints also store the loss' class-weight buffer under ``loss.*``; those entries are not model
  weights and are dropped **only** when every other key carries the ``model.`` wrapper prefix.

Missing ``num_batches_tracked`` counters (checkpoints written before PyTorch 0.4.1) are filled by PyTorch itself and are
not an error; every other missing, unexpected or wrongly shaped entry raises one :class:`CheckpointMismatchError`
listing all of them. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from hrnet_core.errors import BadInputError

logger = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "keypoint_head.")
CONTAINER_KEYS = ("state_dict", "model", "module")
_LIST_LIMIT = 40


class CheckpointMismatchError(BadInputError, ValueError):
    """The checkpoint's entries do not match the model.

    Attributes:
        source: file path or ``"<state dict>"``.
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys (as stored) that match no model key.
        mismatched: ``(model key, checkpoint shape, model shape)`` for entries of the wrong shape.
    """

    def __init__(self, source: str, model_name: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        self.source, self.missing, self.unexpected, self.mismatched = source, missing, unexpected, mismatched

        def listing(title: str, items: list[str]) -> str:
            if not items:
                return ""
            shown = items[:_LIST_LIMIT]
            more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
            return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more

        first = [f"{k} {list(c)} in the checkpoint vs {list(m)} in the model" for k, c, m in mismatched[:3]]
        first += [f"{k} missing" for k in missing[:max(0, 3 - len(first))]]
        first += [f"{k} unexpected" for k in unexpected[:max(0, 3 - len(first))]]
        text = (f"checkpoint {source} does not match {model_name}: {len(missing)} missing, {len(unexpected)} "
                f"unexpected, {len(mismatched)} with a wrong shape" + (f"; first: {'; '.join(first)}" if first else ""))
        text += listing("missing keys", missing)
        text += listing("unexpected keys", unexpected)
        text += listing("shape mismatches (key: checkpoint vs model)",
                        [f"{k}: {list(c)} vs {list(m)}" for k, c, m in mismatched])
        super().__init__(text)


def _read(path_or_state_dict: str | os.PathLike | Mapping) -> tuple[Mapping, str]:
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict, "<state dict>"
    path = os.fspath(path_or_state_dict)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"cannot read checkpoint {path} with torch.load(weights_only=True): {e}") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj, path


def unwrap_state_dict(obj: Mapping, source: str = "<state dict>") -> "OrderedDict[str, torch.Tensor]":
    """The tensor state dict inside a checkpoint object (containers unwrapped; prefixes untouched).

    Raises:
        ValueError: no state dict found, or a non-tensor entry (named in the message).
    """
    for _ in range(4):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not obj or bad:
        raise ValueError(f"checkpoint {source} has no state dict of tensors (top-level keys {list(obj)[:10]}; "
                         f"non-tensor entries: {bad[:10]})")
    return OrderedDict((str(k), v) for k, v in obj.items())


def _drop_loss_entries(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """Drop ``loss.*`` buffers of a SEG ``FullModel`` wrapper (all other keys start with ``model.``)."""
    loss = [k for k in state if k.startswith("loss.")]
    rest = [k for k in state if not k.startswith("loss.")]
    if loss and rest and all(k.startswith("model.") for k in rest):
        logger.info("dropping %d loss entries of a SEG FullModel checkpoint: %s", len(loss), loss)
        return OrderedDict((k, state[k]) for k in rest)
    return state


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<state dict>"
                     ) -> "OrderedDict[str, torch.Tensor]":
    """Map checkpoint keys onto ``model``'s keys (stripping wrapper prefixes only where that yields a model key).

    Returns the state dict keyed like ``model.state_dict()``.

    Raises:
        CheckpointMismatchError: any missing (other than ``num_batches_tracked``), unexpected or wrongly shaped entry.
    """
    own = model.state_dict()
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        target = key if key in own else None
        cand = key
        while target is None:
            prefix = next((p for p in WRAPPER_PREFIXES if cand.startswith(p)), None)
            if prefix is None:
                break
            cand = cand[len(prefix):]
            if cand in own:
                target = cand
        if target is None:
            unexpected.append(key)
        elif target in mapped:
            unexpected.append(f"{key} (same model key {target!r} as {mapped[target][0]!r})")
        else:
            mapped[target] = (key, value)
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, (_, v) in mapped.items()
                  if tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, type(model).__name__, missing, unexpected, mismatched)
    renamed = sum(1 for k, (orig, _) in mapped.items() if k != orig)
    if renamed:
        logger.info("checkpoint %s: stripped wrapper prefixes from %d keys", source, renamed)
    return OrderedDict((k, mapped[k][1]) for k in own if k in mapped)


_BACKBONE_ROOTS = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")


def load_pretrained_backbone(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping) -> list[str]:
    """Initialise the HRNet backbone of ``model`` from an ImageNet (CLS / TIMM) or any other HRNet checkpoint.

    Strict on the model side: every backbone entry of ``model`` (stem, ``layer1``, ``transition*``, ``stage*``; under
    ``backbone.`` for :class:`~hrnet_core.models.hrfpn.HRNetV2p`) must be in the checkpoint with the same shape. The
    task head keeps its initialisation. Checkpoint entries the backbone does not use (the classification head, the
    extra ``fuse_layers`` of a multi-scale last module when ``model`` is single-scale, another task's head) are
    returned and logged, never silently matched. This replaces the official ``init_weights(pretrained)`` of DHRN / SEG /
    FACE, which drops non-matching keys without a word.

    Returns:
        The checkpoint keys that were not used.

    Raises:
        FileNotFoundError / ValueError: as :func:`load_checkpoint`.
        CheckpointMismatchError: a backbone entry is missing from the checkpoint or has the wrong shape.
    """
    obj, source = _read(path_or_state_dict)
    state = _drop_loss_entries(unwrap_state_dict(obj, source))
    own = model.state_dict()
    prefix = "backbone." if any(k.startswith("backbone.conv1.") for k in own) else ""
    wanted = [k for k in own if k.startswith(prefix) and k[len(prefix):].startswith(_BACKBONE_ROOTS)]
    if not wanted:
        raise ValueError(f"{type(model).__name__} has no HRNet backbone entries to initialise")
    # strip wrapper prefixes of the checkpoint (module., model., backbone.) to bare backbone keys
    bare: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        cand = key
        while not cand.startswith(_BACKBONE_ROOTS):
            p = next((p for p in WRAPPER_PREFIXES if cand.startswith(p)), None)
            if p is None:
                break
            cand = cand[len(p):]
        bare.setdefault(cand, (key, value))
    missing = [k for k in wanted if k[len(prefix):] not in bare and not k.endswith("num_batches_tracked")]
    mismatched = [(k, tuple(bare[k[len(prefix):]][1].shape), tuple(own[k].shape)) for k in wanted
                  if k[len(prefix):] in bare and tuple(bare[k[len(prefix):]][1].shape) != tuple(own[k].shape)]
    if missing or mismatched:
        raise CheckpointMismatchError(source, f"the backbone of {type(model).__name__}", missing, [], mismatched)
    used = {bare[k[len(prefix):]][0] for k in wanted if k[len(prefix):] in bare}
    unused = [k for k in state if k not in used]
    with torch.no_grad():
        for k in wanted:
            if k[len(prefix):] in bare:
                own[k].copy_(bare[k[len(prefix):]][1])
    if unused:
        logger.info("pretrained backbone %s: %d checkpoint entries not used (%s ...)", source, len(unused), unused[:5])
    return unused


def load_checkpoint(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping) -> None:
    """Load an official (or our own) checkpoint into ``model`` strictly, in place.

    Args:
        model: the network, e.g. from :func:`hrnet_core.models.build_model`.
        path_or_state_dict: a ``.pth`` file (read with ``torch.load(weights_only=True)`` on CPU) or an already loaded
            object: a state dict or a container (see module docstring).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read safely or holds no state dict of tensors.
        CheckpointMismatchError: the entries do not match the model (lists missing / unexpected / mis-shaped keys).
    """
    obj, source = _read(path_or_state_dict)
    state = _drop_loss_entries(unwrap_state_dict(obj, source))
    matched = match_state_dict(model, state, source)
    model.load_state_dict(matched, strict=True)
