"""``hrnet export onnx``: a network as an ONNX file (:mod:`hrnet_core.models.onnx_export`), checked against PyTorch."""

from __future__ import annotations

import argparse

__all__ = ["add_export_onnx_parser", "cmd_export", "parse_hw"]


def add_export_onnx_parser(sub) -> argparse.ArgumentParser:
    """The ``export`` sub-command (``export onnx``)."""
    p = sub.add_parser("export", help="export a network (onnx)",
                       description="Export networks for other runtimes.")
    esub = p.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    o = esub.add_parser("onnx", help="the network of a recipe / weights / run as ONNX",
                        description="Write the network (detection: its backbone + neck) as ONNX with the recipe in its "
                                    "metadata, then run onnxruntime and PyTorch on the same input and print the "
                                    "largest absolute difference. Needs pip install -e '.[onnx]'.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  hrnet export onnx models/pose_topdown.pt --out pose.onnx --dynamic-batch\n"
                               "  hrnet export onnx seg_hrnetv2_w48_512x1024_cityscapes --checkpoint official.pth "
                               "--out seg.onnx --input 1024x2048\n"
                               "  hrnet predict --onnx pose.onnx photo.jpg --out outputs/predict/pose")
    o.add_argument("source", help="weights file, Ray checkpoint / run folder, run name, MLflow run id or recipe")
    o.add_argument("--out", required=True, help="the .onnx file to write")
    o.add_argument("--input", default=None, metavar="HxW",
                   help="input size in px (default: the recipe's data.input_size)")
    o.add_argument("--batch", type=int, default=1, help="batch of the example input (default %(default)s)")
    o.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis")
    o.add_argument("--dynamic-size", action="store_true",
                   help="dynamic height and width (segmentation / bottom-up / detection inputs of any size; not "
                        "HRFormer)")
    o.add_argument("--checkpoint", default=None, help="official weights (state dict) for a RECIPE source")
    o.add_argument("--profile", default=None, help="profile of a RECIPE source, e.g. smoke")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    o.add_argument("--storage-path", default="ray_results", help="Ray Train storage of run names")
    o.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI of run ids")
    return p


def parse_hw(text: str) -> tuple[int, int]:
    """``"256x192"`` -> ``(256, 192)`` (height, width px).

    Raises:
        ConfigError: not two positive integers joined by ``x``.
    """
    from hrnet_core.recipes import ConfigError

    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input {text!r}: expected HxW in px, e.g. 256x192")
    return int(parts[0]), int(parts[1])


def cmd_export(args: argparse.Namespace) -> int:
    """``hrnet export onnx``: prints a JSON summary with ``max_abs_diff`` (onnxruntime vs PyTorch)."""
    import torch

    from hrnet_core.models.onnx_export import export_network, max_abs_difference
    from hrnet_core.recipes import parse_overrides
    from .output import strict_json
    from pipelines.predict import load_predictor

    pred = load_predictor(args.source, overrides=parse_overrides(args.set) if args.set else None,
                          profile=args.profile, checkpoint=args.checkpoint, storage_path=args.storage_path,
                          mlflow_uri=args.mlflow_uri)
    r = pred.recipe
    hw = parse_hw(args.input) if args.input else (int(r.data.input_size[1]), int(r.data.input_size[0]))
    exported = export_network(pred.model, r, args.out, hw, batch=args.batch, dynamic_batch=args.dynamic_batch,
                              dynamic_size=args.dynamic_size)  # OnnxExportError: one line, exit 2
    summary = {"onnx": str(exported.path), "task": r.task, "model": r.model.name, "part": exported.part,
               "input": list(exported.input_shape), "dynamic": list(exported.dynamic), "weights": pred.source}
    if not args.no_check:
        x = torch.randn(*exported.input_shape, generator=torch.Generator().manual_seed(1))
        summary["max_abs_diff"] = max_abs_difference(pred.model, exported.path, x, r.task)
    print(strict_json(summary))
    return 0
