"""Convert the official HRNetV2p detection checkpoints (HRNet-Object-Detection, an mmdetection fork; also
mmdetection 2.x's HRNet configs) to the torchvision detectors of :mod:`hrnet_core.models.detectors`.

Key mapping (mmdetection -> ours; ``<i>`` a level / layer index, ``<t>`` a cascade stage):

=====================================================  ======================================================
``backbone.<HRNet key>``                               ``backbone.backbone.<HRNet key>`` (same names, FACTS 0)
``neck.reduction_conv.0.*`` / ``.conv.*`` (mmdet 2.x)  ``backbone.neck.reduction_conv.0.*``
``neck.fpn_conv.<i>.*`` / ``neck.fpn_convs.<i>.conv.*``  ``backbone.neck.fpn_conv.<i>.*``
``rpn_head.rpn_conv.*``                                ``rpn.head.conv.0.0.*``
``rpn_head.rpn_cls.*`` (sigmoid, 3 anchors)            ``rpn.head.cls_logits.*``
``rpn_head.rpn_reg.*``                                 ``rpn.head.bbox_pred.*``
``bbox_head.shared_fcs.0`` / ``.1``                    ``roi_heads.box_head.fc6`` / ``fc7``
``bbox_head.fc_cls`` / ``fc_reg``                      ``roi_heads.box_predictor.cls_score`` / ``bbox_pred``
``mask_head.convs.<i>.conv.*``                         ``roi_heads.mask_head.<i>.0.*``
``mask_head.upsample.*`` / ``conv_logits.*``           ``roi_heads.mask_predictor.conv5_mask`` / ``mask_fcn_logits``
``bbox_head.<t>.<as bbox_head>`` (cascade)             ``roi_heads.stages.<t>.box_head`` / ``.box_predictor``
=====================================================  ======================================================

The layouts agree beyond the names: anchors are ordered ratio-major (0.5, 1, 2) per location in both, the RPN
regression channels are anchor-major groups of (dx, dy, dw, dh), class 0 is background and classes 1..80 follow the
ascending COCO category ids (mmdetection's ``cat2label``), box regression is class-major groups of 4 (class-agnostic,
4 outputs, in the cascade), and RoI features are flattened channel-major in both 2-FC heads. What cannot be carried
over by a key mapping is numerical, not structural: mmdetection v1 measures box widths as ``x2 - x1 + 1`` and centres
anchors at ``(stride - 1) / 2``, so boxes predicted with the converted weights differ from the fork's by about a
pixel. Entries no key of ours takes (e.g. a Hybrid Task Cascade's semantic head) are refused by name.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch

from hrnet_core.errors import BadInputError

__all__ = ["convert_mmdet_state_dict", "UnmappedKeyError", "main"]


class UnmappedKeyError(BadInputError, KeyError):
    """Checkpoint keys that no rule maps (the message lists them)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_HEAD_RULES: list[tuple[str, str]] = [
    (r"^neck\.reduction_conv\.(?:0|conv)\.(weight|bias)$", r"backbone.neck.reduction_conv.0.\1"),
    (r"^neck\.fpn_conv\.(\d+)\.(weight|bias)$", r"backbone.neck.fpn_conv.\1.\2"),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$", r"backbone.neck.fpn_conv.\1.\2"),
    (r"^rpn_head\.rpn_conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),
    (r"^rpn_head\.rpn_cls\.(weight|bias)$", r"rpn.head.cls_logits.\1"),
    (r"^rpn_head\.rpn_reg\.(weight|bias)$", r"rpn.head.bbox_pred.\1"),
    (r"^bbox_head\.shared_fcs\.0\.(weight|bias)$", r"roi_heads.box_head.fc6.\1"),
    (r"^bbox_head\.shared_fcs\.1\.(weight|bias)$", r"roi_heads.box_head.fc7.\1"),
    (r"^bbox_head\.fc_cls\.(weight|bias)$", r"roi_heads.box_predictor.cls_score.\1"),
    (r"^bbox_head\.fc_reg\.(weight|bias)$", r"roi_heads.box_predictor.bbox_pred.\1"),
    (r"^bbox_head\.(\d)\.shared_fcs\.0\.(weight|bias)$", r"roi_heads.stages.\1.box_head.fc6.\2"),
    (r"^bbox_head\.(\d)\.shared_fcs\.1\.(weight|bias)$", r"roi_heads.stages.\1.box_head.fc7.\2"),
    (r"^bbox_head\.(\d)\.fc_cls\.(weight|bias)$", r"roi_heads.stages.\1.box_predictor.cls_score.\2"),
    (r"^bbox_head\.(\d)\.fc_reg\.(weight|bias)$", r"roi_heads.stages.\1.box_predictor.bbox_pred.\2"),
    (r"^mask_head\.convs\.(\d+)\.conv\.(weight|bias)$", r"roi_heads.mask_head.\1.0.\2"),
    (r"^mask_head\.upsample\.(weight|bias)$", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"^mask_head\.conv_logits\.(weight|bias)$", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
]
_COMPILED = [(re.compile(p), r) for p, r in _HEAD_RULES]


def _our_key(key: str) -> str | None:
    if key.startswith("backbone."):
        return "backbone." + key  # HRNet names are shared (FACTS.md section 0)
    for pattern, repl in _COMPILED:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def convert_mmdet_state_dict(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """mmdetection-named detector state dict (``checkpoint["state_dict"]``) -> our key names (module docstring).

    Returns a state dict to load with ``model.load_state_dict(..., strict=True)`` (or
    :func:`hrnet_core.models.load_checkpoint`, which reports missing / unexpected / mis-shaped keys by name).

    Raises:
        UnmappedKeyError: keys no rule maps (all of them listed), e.g. the semantic head of a Hybrid Task Cascade.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unmapped = []
    for key, value in state.items():
        ours = _our_key(key)
        if ours is None:
            unmapped.append(key)
        else:
            out[ours] = value
    if unmapped:
        raise UnmappedKeyError(f"{len(unmapped)} mmdetection keys have no counterpart in our detectors: "
                               f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hrnet_core.models.mmdet_convert IN.pth OUT.pth``: convert an official checkpoint; evaluate the
    result with ``hrnet evaluate <det recipe> --checkpoint OUT.pth`` (loaded strictly)."""
    import argparse

    from .checkpoint import unwrap_state_dict

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("src")
    p.add_argument("dst")
    a = p.parse_args(argv)
    obj = torch.load(a.src, map_location="cpu", weights_only=True)
    torch.save(convert_mmdet_state_dict(unwrap_state_dict(obj, a.src)), a.dst)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
