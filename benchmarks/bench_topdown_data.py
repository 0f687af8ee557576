"""Throughput of the COCO top-down training data pipeline (decode -> augment -> affine crop -> heatmap targets).

Prints crops/s of the full training pipeline and, measured in the same run:
- the decode-only baseline (``read_image``: JPEG decode + BGR->RGB), i.e. what the augmentation costs on top of decoding;
- the pipeline on pre-decoded images (augmentation + crop + normalise + targets only);
- vectorised heatmap targets (``HeatmapCodec.encode``) vs a naive per-joint Python loop (the official form; the
  independent reference ``reference_target`` of ``tests/test_topdown_codec.py``, imported from there so that the test
  and the baseline are one piece of code), checked to give identical targets;
- optionally a ``torch.utils.data.DataLoader`` with worker processes.

Usage::

    python benchmarks/bench_topdown_data.py [--data ../shared/data/coco_mini] [--size 192x256] [--crops 400] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrnet_core.codecs.heatmap import HeatmapCodec  # noqa: E402
from hrnet_core.data.coco import CocoKeypoints  # noqa: E402
from hrnet_core.data.io import read_image  # noqa: E402
from hrnet_core.data.topdown import TopDownDataset, sample_rng  # noqa: E402
from hrnet_core.data.transforms import TopDownTransform  # noqa: E402
from tests.test_topdown_codec import reference_target  # noqa: E402  (the per-joint loop baseline)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


REPEAT = 3


def timed(fn, n: int) -> float:
    """Best of ``REPEAT`` runs of ``fn(0..n-1)`` in seconds (the machine may be shared; the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "coco_mini"))
    ap.add_argument("--size", default="192x256", help="input W x H (192x256 -> 48x64 sigma 2; 288x384 -> 72x96 sigma 3)")
    ap.add_argument("--crops", type=int, default=400, help="crops per measurement")
    ap.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per measurement")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)

    data = Path(args.data)
    ann = data / "annotations" / "person_keypoints_train2017.json"
    if not ann.is_file():
        sys.exit(f"no COCO keypoint annotations at {ann}")
    ds = CocoKeypoints(ann, data / "train2017")
    w_in, h_in = (int(v) for v in args.size.lower().split("x"))
    hm = (w_in // 4, h_in // 4)
    sigma = 2.0 if hm[1] <= 64 else 3.0
    transform = TopDownTransform((w_in, h_in), hm, sigma, ds.flip_pairs, train=True)
    records = ds.records
    n = args.crops
    pick = [records[i % len(records)] for i in range(n)]
    print(f"COCO top-down training pipeline: {len(records)} people in {len(ds.image_files())} images ({data}), "
          f"input {w_in}x{h_in}, heatmap {hm[0]}x{hm[1]}, sigma {sigma}, {n} crops per measurement (best of {REPEAT}), 1 process")

    read_image(pick[0]["image_file"])  # warm the page cache / decoder
    t_decode = timed(lambda i: read_image(pick[i]["image_file"]), n)
    t_full = timed(lambda i: transform(pick[i], read_image(pick[i]["image_file"]), sample_rng(args.seed, 0, i)), n)
    images = {f: read_image(f) for f in ds.image_files()}
    t_aug = timed(lambda i: transform(pick[i], images[pick[i]["image_file"]], sample_rng(args.seed, 0, i)), n)

    r_dec, r_full, r_aug = rate(n, t_decode), rate(n, t_full), rate(n, t_aug)
    print(f"  decode only (read_image)                 {r_dec:8.1f} images/s   (baseline)")
    print(f"  full pipeline (decode + augment + target) {r_full:8.1f} crops/s    ratio vs decode-only {r_full / r_dec:.2f}")
    print(f"  augment + crop + target (pre-decoded)    {r_aug:8.1f} crops/s    ratio vs decode-only {r_aug / r_dec:.2f}")

    # targets: vectorised vs per-joint loop, on the augmented crop joints
    joints = [transform(pick[i], images[pick[i]["image_file"]], sample_rng(args.seed, 0, i))["joints"] for i in range(n)]
    codec = transform.codec
    sizes = (codec.input_size, codec.heatmap_size, codec.sigma)

    def naive_target(j: np.ndarray):
        return reference_target(j.astype(np.float64), *sizes)

    for j in joints[:50]:
        a, b = codec.encode(j), naive_target(j)
        assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0], atol=1e-7), "vectorised != loop targets"
    reps = 2
    t_vec = timed(lambda i: codec.encode(joints[i % n]), n * reps)
    t_loop = timed(lambda i: naive_target(joints[i % n]), n * reps)
    r_vec, r_loop = rate(n * reps, t_vec), rate(n * reps, t_loop)
    print(f"  targets, per-joint loop (official form)  {r_loop:8.1f} instances/s (baseline)")
    print(f"  targets, vectorised HeatmapCodec.encode  {r_vec:8.1f} instances/s ratio vs loop {r_vec / r_loop:.2f} "
          f"(identical targets checked)")
    dark = HeatmapCodec((w_in, h_in), hm, sigma, dark=True)
    t_dark = timed(lambda i: dark.encode(joints[i % n]), n * reps)
    print(f"  targets, vectorised DARK encode          {rate(n * reps, t_dark):8.1f} instances/s")

    if args.workers > 0:
        import torch.utils.data

        loader = torch.utils.data.DataLoader(
            TopDownDataset(pick, transform, seed=args.seed), batch_size=32, num_workers=args.workers, shuffle=False
        )
        t0 = time.perf_counter()
        seen = sum(len(b["image"]) for b in loader)
        r_dl = rate(seen, time.perf_counter() - t0)
        print(f"  DataLoader, {args.workers} workers, batch 32        {r_dl:8.1f} crops/s    ratio vs 1 process {r_dl / r_full:.2f}")


if __name__ == "__main__":
    main()
