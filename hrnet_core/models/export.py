"""Backbone files for downstream recipes: any HRNet / HRFormer state dict -> the official classification-release
layout (issue 18, the pretraining hand-off; FACTS.md section 5).

The official ImageNet releases (CLS ``hrnet_w32-36af842e.pth``, ``hrnetv2_w18_imagenet_pretrained.pth``; timm's
``hrnet_w*``; HRFormer ``hrt_*.pth`` inside a ``{"model": ...}`` container) are state dicts of the classification
network with bare keys::

    conv1 bn1 conv2 bn2 layer1 transition1 stage2 transition2 stage3 transition3 stage4     (the backbone)
    incre_modules downsamp_modules final_layer classifier                                   (the classification head)

(``../shared/reference/official_models/cls_hrnet_w*.json`` lists them with their shapes; timm's ``hrnet_w*`` use the
same names). :func:`classification_release_state` turns one of our weights (a classification run: the whole network;
any other HRNet-family run: its backbone) into that layout, and :func:`hrnet_core.models.load_pretrained_backbone` --
what every recipe's ``model.pretrained`` goes through -- reads it back strictly on the backbone part.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

from .checkpoint import _BACKBONE_ROOTS, WRAPPER_PREFIXES

__all__ = ["BACKBONE_ROOTS", "CLS_HEAD_ROOTS", "classification_release_state", "is_classification_state"]

#: top-level modules of the HRNet / HRFormer backbone (stem, stage 1, transitions, stages 2-4)
BACKBONE_ROOTS = _BACKBONE_ROOTS
#: top-level modules of the classification head (HRNetV2 paper appendix, Fig. 5)
CLS_HEAD_ROOTS = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def _bare(key: str) -> str:
    """``key`` without wrapper prefixes (``module.``, ``model.``, ``backbone.``, ...) in front of a backbone or
    classification-head root."""
    while not key.startswith(BACKBONE_ROOTS + CLS_HEAD_ROOTS):
        p = next((p for p in WRAPPER_PREFIXES if key.startswith(p)), None)
        if p is None:
            return key
        key = key[len(p):]
    return key


def is_classification_state(state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` holds an HRNet-C / HRFormer classification head (``classifier.weight`` and
    ``incre_modules``), wrapper prefixes ignored."""
    bare = {_bare(k) for k in state}
    return "classifier.weight" in bare and any(k.startswith("incre_modules.") for k in bare)


def classification_release_state(state: Mapping[str, torch.Tensor], head: bool = True,
                                 source: str = "<state dict>") -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    """The entries of ``state`` in the official classification-release layout (module docstring).

    Args:
        state: a tensor state dict of an HRNet-family network (ours, an official or a timm file; wrapper prefixes
            ``module.`` / ``model.`` / ``backbone.`` are stripped).
        head: keep the classification head when ``state`` is a classification network (then the result is a full
            ImageNet checkpoint that ``hrnet evaluate <cls recipe> --checkpoint`` loads strictly); False keeps the
            backbone only. A network without a classification head (pose, segmentation, faces) gives its backbone.
        source: name of the file for messages.

    Returns:
        ``(entries, dropped)``: the state dict (CPU, contiguous tensors, backbone first, in the input order) and the
        input keys left out (another task's head, or the classification head with ``head=False``).

    Raises:
        ValueError: ``state`` has no HRNet backbone (no ``conv1.weight`` ... ``stage*`` entries), or two keys map to
            the same released name (named).
    """
    keep_head = head and is_classification_state(state)
    roots = BACKBONE_ROOTS + (CLS_HEAD_ROOTS if keep_head else ())
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    dropped: list[str] = []
    for key, value in state.items():
        name = _bare(key)
        if not name.startswith(roots):
            dropped.append(key)
            continue
        if name in out:
            raise ValueError(f"{source}: {key!r} and another entry both map to {name!r}")
        out[name] = value.detach() if value.is_meta else value.detach().cpu().contiguous()
    if "conv1.weight" not in out or not any(k.startswith("stage") for k in out):
        raise ValueError(f"{source} holds no HRNet backbone (no conv1.weight / stage* entries; first keys: "
                         f"{list(state)[:5]})")
    order = {k: i for i, k in enumerate(out)}
    backbone_first = sorted(out, key=lambda k: (k.startswith(CLS_HEAD_ROOTS), order[k]))
    return OrderedDict((k, out[k]) for k in backbone_first), dropped
