"""``hrnet export-backbone``: a training run's weights -> an ImageNet-style backbone file for ``model.pretrained``.

The pretraining hand-off of issue 18: a classification run of ours becomes the backbone file of every downstream
recipe (pose, segmentation, faces, detection), written in the official classification-release layout
(:mod:`hrnet_core.models.export`), the same layout as the released ``hrnet_w32-36af842e.pth`` and timm's
``hrnet_w*`` weights, so ``model.pretrained`` reads ours and theirs through one loader
(:func:`hrnet_core.models.load_pretrained_backbone`, strict on the backbone, the task head new).

SOURCE is, in this order:

1. a file: our weights file (``hrnet train --weights-out``, a Ray checkpoint's ``model.pt``) or any other state dict
   (an official or timm file, an mmpose / HRFormer container: re-written as a plain state dict);
2. a folder: a Ray Train checkpoint (``model.pt`` inside) or a run folder (its latest checkpoint);
3. a run name under ``--storage-path`` (``ray_results/<run name>``);
4. an MLflow run id or run name (``--mlflow-uri``): its ``ray.storage_path`` / ``ray.run_name`` tags give the run
   folder; without it, the ``weights/`` artifact the run logged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipelines.runs import ResolvedWeights, resolve_weights

__all__ = ["add_export_parser", "cmd_export_backbone", "resolve_weights", "export_backbone", "ResolvedWeights"]


def add_export_parser(sub) -> argparse.ArgumentParser:
    """The ``export-backbone`` sub-command."""
    p = sub.add_parser(
        "export-backbone", help="write a run's weights as an ImageNet-style backbone file (model.pretrained)",
        description="Write the backbone of a training run (a classification run: the whole HRNet-C network) in the "
                    "official classification-release layout (conv1 ... stage4, incre_modules ... classifier; the names "
                    "of hrnet_w32-36af842e.pth and timm's hrnet_w*), for any recipe's model.pretrained.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SOURCE: a weights file (ours, official, timm), a Ray checkpoint or run folder, a run name under "
               "--storage-path, or an MLflow run id / name.\n"
               "examples:\n"
               "  hrnet export-backbone models/classification.pt --out models/imagenet/ours_w18.pth\n"
               "  hrnet export-backbone 3f2c...e1 --mlflow-uri sqlite:///mlflow.db --out models/imagenet/ours_w18.pth\n"
               "  hrnet train pose_hrnet_w32_256x192_coco --set model.pretrained=models/imagenet/ours_w18.pth")
    p.add_argument("source", help="weights file, checkpoint / run folder, run name or MLflow run id")
    p.add_argument("--out", required=True, help="backbone file to write, e.g. models/imagenet/<name>.pth")
    p.add_argument("--backbone-only", action="store_true",
                   help="leave out the classification head (default: keep it, so the file is a full ImageNet "
                        "checkpoint that `hrnet evaluate <cls recipe> --checkpoint` also reads)")
    p.add_argument("--storage-path", default="ray_results", help="Ray Train storage of run names (default %(default)s)")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI of run ids (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default="hrnet", help="MLflow experiment of run names (default %(default)s)")
    return p


def export_backbone(source: str | Path, out: str | Path, head: bool = True) -> dict[str, Any]:
    """Write the weights file ``source`` in the classification-release layout to ``out`` (plain state dict,
    ``torch.save``, atomic) and check it: our classification weights reload strictly into their network, any
    backbone into its architecture's backbone (:func:`hrnet_core.models.load_pretrained_backbone`).

    Returns:
        summary: ``out``, ``model`` (the network of our weights, else None), ``entries``, ``head_entries``,
        ``dropped`` (input keys left out), ``sha256``.

    Raises:
        hrnet_core.weights.CheckpointError: unreadable / unsafe file, or no HRNet backbone in it.
    """
    import torch

    from hrnet_core.data.io import sha256_file
    from hrnet_core.models import build_model, load_checkpoint, load_pretrained_backbone
    from hrnet_core.models.checkpoint import unwrap_state_dict
    from hrnet_core.models.export import CLS_HEAD_ROOTS, classification_release_state
    from hrnet_core.weights import WEIGHTS_FORMAT, CheckpointError, safe_load

    src = Path(source)
    obj = safe_load(src)
    ours = isinstance(obj, dict) and obj.get("format") == WEIGHTS_FORMAT
    try:
        state = obj["state_dict"] if ours else unwrap_state_dict(obj, str(src))
        entries, dropped = classification_release_state(state, head=head, source=str(src))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if ours:  # the file must load back into the network it came from
        model = build_model(obj["model"], **dict(obj.get("model_kwargs") or {}))
        if any(k.startswith(CLS_HEAD_ROOTS) for k in entries) and obj["model"].startswith("cls_"):
            load_checkpoint(model, entries)
        else:
            load_pretrained_backbone(model, entries)
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    torch.save(entries, tmp)
    tmp.replace(dst)
    return {"out": str(dst), "model": obj["model"] if ours else None,
            "entries": len(entries), "head_entries": sum(k.startswith(CLS_HEAD_ROOTS) for k in entries),
            "dropped": len(dropped), "sha256": sha256_file(dst)}


def cmd_export_backbone(args: argparse.Namespace) -> int:
    found = resolve_weights(args.source, args.storage_path, args.mlflow_uri, args.experiment)
    summary = export_backbone(found.path, args.out, head=not args.backbone_only)
    print(json.dumps({"source": args.source, "read": str(found.path), "found_as": found.how, **summary}, indent=2))
    return 0
