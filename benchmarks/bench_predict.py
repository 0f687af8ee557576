"""Predict throughput on the CPU, PyTorch vs onnxruntime (issue 26): images/s of the network forward the predictor
runs, for pose HRNet-W32 at 256x192 (batch of person crops) and segmentation HRNetV2-W18 (whole image), with the
onnxruntime / torch ratio, in one run.

    .venv/bin/python benchmarks/bench_predict.py [--threads 2] [--seg-input 512x1024] [--repeats 3]

Untrained networks (the speed does not depend on the weights); the same threads for both runtimes; the first call of
each is a warm-up. Prints the machine load (``/proc/loadavg``) beside the figures: on a shared machine they move.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _rate(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * x.shape[0] / (time.perf_counter() - t)


def bench(recipe_name: str, overrides: dict, hw: tuple[int, int], batch: int, repeats: int, threads: int,
          tmp: Path) -> dict:
    """``{"torch": images/s, "onnxruntime": images/s, "ratio": ort / torch}`` of one recipe's network."""
    from hrnet_core.models.onnx_export import OnnxNetwork, export_network
    from hrnet_core.recipes import load_recipe
    from hrnet_core.weights import build_network

    recipe = load_recipe(recipe_name, overrides)
    model = build_network(recipe).eval()
    path = export_network(model, recipe, tmp / f"{recipe_name}.onnx", hw, batch=batch).path
    ort_net = OnnxNetwork(path, threads=threads)
    x = torch.randn(batch, 3, *hw)
    with torch.inference_mode():
        t_rate = _rate(model, x, repeats)
    o_rate = _rate(ort_net, x, repeats)
    return {"torch": t_rate, "onnxruntime": o_rate, "ratio": o_rate / t_rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seg-input", default="512x1024", help="HxW of the segmentation image (default %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sh, sw = (int(v) for v in args.seg_input.split("x"))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print(f"threads {args.threads}, load before: {' '.join(load)}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("pose HRNet-W32 256x192, batch 8", bench("pose_hrnet_w32_256x192_coco", {}, (256, 192), 8,
                                                          args.repeats, args.threads, Path(tmp))),
                (f"seg HRNetV2-W18 {sh}x{sw}, batch 1", bench("seg_hrnetv2_w48_512x1024_cityscapes",
                                                               {"model.width": 18}, (sh, sw), 1, args.repeats,
                                                               args.threads, Path(tmp)))]
    for name, r in rows:
        print(f"{name}: torch {r['torch']:.2f} img/s, onnxruntime {r['onnxruntime']:.2f} img/s, "
              f"ratio ort/torch {r['ratio']:.2f}x")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print(f"load after: {' '.join(load)}")


if __name__ == "__main__":
    main()
