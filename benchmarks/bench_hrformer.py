"""HRFormer vs HRNet: training-step time per MAC at the same input (issue 16, goal 3; GPU path of goal 5).

For each pair (HRFormer-T vs HRNet-W18, HRFormer-S vs HRNet-W32 by default) one training step (forward, joints-MSE
style loss, backward, AdamW step) is timed on random inputs, both models interleaved round by round in the same run
(the machine may be shared; the best round of each is the least disturbed). Printed per model: ms/step, img/s,
GMACs per image (``hrnet_core.models.complexity.count_macs``: FlopCounterMode, attention products included) and
ms per GMAC; per pair: the HRFormer / HRNet ratio of the time per MAC (target <= 1.3).

Variants (each an independent row, same weights):
- ``eager``: the models as built (NCHW input);
- ``channels_last``: model and input in ``torch.channels_last`` (``--channels-last``);
- ``compiled``: ``torch.compile`` of the model (``--compile``; compile time printed separately, not in the step);
- ``bf16``: ``torch.autocast`` bf16 (``--bf16``; on CUDA only, where it pays).

Usage::

    python benchmarks/bench_hrformer.py [--batch 8] [--threads 1] [--rounds 4] [--channels-last] [--compile]
    python benchmarks/bench_hrformer.py --device cuda --batch 64 --channels-last --compile --bf16   # GPU (goal 5)
    python benchmarks/bench_hrformer.py --smoke    # CI: tiny input, one round, checks the script runs

``--device cuda`` without a GPU exits 0 with a message (CI skips the GPU path cleanly).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrnet_core.models.complexity import count_macs  # noqa: E402
from hrnet_core.models.zoo import build_model  # noqa: E402

# (HRFormer, HRNet baseline): zoo name and overrides (HRNet-W18 pose = the W32 pose layout at width 18)
PAIRS = {
    "T/W18": (("hrformer_t", {}), ("pose_hrnet_w32", {"width": 18})),
    "S/W32": (("hrformer_s", {}), ("pose_hrnet_w32", {})),
}


@dataclass
class Row:
    """One timed configuration: a model, its variant, its step function and the times of its rounds (s)."""

    label: str
    variant: str
    gmacs: float  # per image
    step: object
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU time of this process per round (s)
    compile_s: float = 0.0


def make_step(model: torch.nn.Module, batch: int, size: tuple[int, int], device: torch.device, channels_last: bool,
              compiled: bool, bf16: bool):
    """A closure running one training step (forward, MSE to a random heatmap, backward, AdamW) on fixed inputs."""
    h, w = size
    model = model.to(device).train()
    x = torch.randn(batch, 3, h, w, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        target = torch.zeros_like(model(x[:1]).float()).expand(batch, -1, -1, -1).contiguous()
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = (out.float() - target).square().mean()
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="T/W18,S/W32", help=f"comma-separated, of {sorted(PAIRS)}")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="256x192", help="input H x W")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds per row (after one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true", help="also time channels-last rows")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile rows")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in every row (GPU)")
    ap.add_argument("--eager-only-hrnet", action="store_true", help="time HRNet in its eager NCHW form only")
    ap.add_argument("--smoke", action="store_true", help="tiny input, 1 round: checks the benchmark runs (CI)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_hrformer: no CUDA device here; the GPU benchmark is skipped")
        return
    smoke = {"stage_modules": (1, 1, 1)} if args.smoke else {}  # one module per stage: a quick run
    if args.smoke:
        args.batch, args.size, args.rounds = 1, "64x48", 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    h, w = (int(v) for v in args.size.lower().split("x"))

    variants = [("eager", False, False)]
    if args.channels_last:
        variants.append(("channels_last", True, False))
    if args.compile:
        variants.append(("compiled", args.channels_last, True))

    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    rows: dict[str, list[Row]] = {}
    for pair in pairs:
        if pair not in PAIRS:
            sys.exit(f"unknown pair {pair!r}; known: {sorted(PAIRS)}")
        rows[pair] = []
        for name, overrides in PAIRS[pair]:
            overrides = {**overrides, **smoke}
            gmacs = count_macs(build_model(name, **overrides), (1, 3, h, w)) / 1e9
            hrnet = name.startswith("pose_hrnet")
            for variant, cl, comp in variants:
                if hrnet and args.eager_only_hrnet and variant != "eager":
                    continue
                torch.manual_seed(0)
                step = make_step(build_model(name, **overrides), args.batch, (h, w), device, cl, comp, args.bf16)
                label = f"{name}{'-w' + str(overrides['width']) if 'width' in overrides else ''}"
                row = Row(label, variant, gmacs, step)
                t0 = time.perf_counter()
                step()  # warm-up (and compilation)
                sync(device)
                row.compile_s = time.perf_counter() - t0 if comp else 0.0
                rows[pair].append(row)

    for _ in range(args.rounds):  # interleaved: every row once per round
        for pair in pairs:
            for row in rows[pair]:
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                row.step()
                sync(device)
                row.times.append(time.perf_counter() - t0)
                row.cpu.append(time.process_time() - c0)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"HRFormer vs HRNet training step, input {h}x{w}, batch {args.batch}, device {device}, "
          f"threads {torch.get_num_threads()}, bf16 {args.bf16}, torch {torch.__version__}, best of {args.rounds} "
          f"interleaved rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("  wall: best and median round; cpu: CPU time of this process in its best round (on a shared machine the "
          "CPU-time ratios are the robust ones; CPU rows only)")
    print(f"  {'model':<20}{'variant':<15}{'ms/step':>9}{'median':>9}{'cpu ms':>9}{'img/s':>8}{'GMACs/img':>11}"
          f"{'ms/GMAC':>9}{'cpu ms/GMAC':>12}{'compile s':>11}")
    for pair in pairs:
        for row in rows[pair]:
            best = min(row.times)
            ms_per_gmac = best * 1e3 / (row.gmacs * args.batch)
            compile_s = f"{row.compile_s:11.1f}" if row.compile_s else ""
            cpu = min(row.cpu)
            print(f"  {row.label:<20}{row.variant:<15}{best * 1e3:9.1f}{statistics.median(row.times) * 1e3:9.1f}"
                  f"{cpu * 1e3:9.1f}{args.batch / best:8.1f}{row.gmacs:11.3f}{ms_per_gmac:9.2f}"
                  f"{cpu * 1e3 / (row.gmacs * args.batch):12.2f}{compile_s}")
        for clock, attr in (("wall", "times"), ("cpu", "cpu")):
            per_mac = {(r.label.startswith("pose_hrnet"), r.variant): min(getattr(r, attr)) / r.gmacs
                       for r in rows[pair]}
            base = per_mac[(True, "eager")]
            best_hrnet = min(v for (hr, _), v in per_mac.items() if hr)
            for (hr, variant), v in per_mac.items():
                if not hr:
                    print(f"  {pair} {clock:>4} time per MAC, HRFormer {variant:<14} / HRNet eager {v / base:5.2f}x   "
                          f"/ HRNet's best variant {v / best_hrnet:5.2f}x   (target <= 1.30)")


if __name__ == "__main__":
    main()
