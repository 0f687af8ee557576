"""Top-down pose evaluation throughput: ``pose_topdown.predict`` vs an official-style test loop (issue 16, goal 4).

Both sides predict the same people (COCO ground-truth boxes of ``../shared/data/coco_mini``) with the same weights,
the same crops (``TopDownTransform``, eval mode) and the flip test; they run interleaved round by round in one process
(best round of each printed; the machine may be shared). Printed: seconds and people/s of each, the speed-up, and the
largest keypoint difference between the two (acceptance: speed-up >= 1.5 with keypoints within 1e-3 px).

- official-style loop (the HRNet reference ``validate``): a ``DataLoader`` (``--workers`` processes, batch
  ``--batch``) decoding and warping each person's image, ``model.eval()`` under ``torch.no_grad``, one forward on the
  crops and one on the numpy-flipped crops, numpy ``flip_back`` + 1-cell shift, average, numpy argmax + quarter offset
  + inverse affine (``get_final_preds``);
- ours: :func:`hrnet_core.tasks.pose_topdown.predict` (BatchNorm folded, channels-last, original and flipped crops in
  one forward run in micro-batches of 8 crops on CPU, inference mode, decoding on device, image decoding in a
  background thread);
- ``--ablation`` adds rows with one ingredient of ours at a time, to show where the time goes.

Usage::

    python benchmarks/bench_eval.py [--model pose_hrnet_w32] [--rounds 3] [--threads 1] [--workers 1] [--ablation]
    python benchmarks/bench_eval.py --device cuda --batch 64 --ablation   # GPU (goal 5): people/s, + bf16 row
    python benchmarks/bench_eval.py --smoke                         # CI: a few people, tiny model

``--device cuda`` without a GPU exits 0 with a message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrnet_core.codecs.heatmap import (decode_on_device, flip_back, flip_test_one_forward,  # noqa: E402
                                       get_max_preds, heatmaps_to_image_coords, refine_quarter_offset)
from hrnet_core.data.coco import CocoKeypoints  # noqa: E402
from hrnet_core.data.io import read_image  # noqa: E402
from hrnet_core.data.keypoints import COCO_KEYPOINTS  # noqa: E402
from hrnet_core.data.transforms import TopDownTransform  # noqa: E402
from hrnet_core.evaluation.topdown import CropLoader  # noqa: E402
from hrnet_core.engine.evaluation import predict_items  # noqa: E402
from hrnet_core.models.fold import fold_batchnorm  # noqa: E402
from hrnet_core.models.microbatch import CPU_MICRO_BATCH, MicroBatched  # noqa: E402
from hrnet_core.models.zoo import build_model  # noqa: E402
from hrnet_core.tasks import pose_topdown  # noqa: E402

INPUT, HEATMAP, SIGMA = (192, 256), (48, 64), 2.0


class OfficialStyleDataset(torch.utils.data.Dataset):
    """One person per item: read its image (every time, as the reference ``JointsDataset``), warp the crop."""

    def __init__(self, records, transform) -> None:
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        s = self.transform(r, read_image(r["image_file"]))
        return s["image"].astype(np.float32), r["center"].astype(np.float64), r["scale"].astype(np.float64)


def official_style(model, records, transform, batch: int, workers: int, device) -> np.ndarray:
    """The reference test loop: two forwards, numpy flip-back and decoding. Returns ``[N, K, 3]``."""
    loader = torch.utils.data.DataLoader(OfficialStyleDataset(records, transform), batch_size=batch, shuffle=False,
                                         num_workers=workers)
    model.eval()
    out = []
    with torch.no_grad():
        for image, center, scale in loader:
            x = image.to(device)
            output = model(x)
            flipped = torch.from_numpy(np.flip(x.cpu().numpy(), 3).copy()).to(device)
            output_flipped = flip_back(model(flipped).cpu().numpy(), COCO_KEYPOINTS.flip_pairs, shift=True)
            output = (output + torch.from_numpy(output_flipped).to(device)) * 0.5
            hm = output.cpu().numpy()
            coords, maxvals = get_max_preds(hm)
            coords = refine_quarter_offset(hm, coords)
            coords = heatmaps_to_image_coords(coords, center.numpy(), scale.numpy(), HEATMAP)
            out.append(np.concatenate([coords, maxvals], axis=2))
    return np.concatenate(out)


def ablation(model, records, transform, batch: int, device, fold: bool, one_forward: bool,
             channels_last: bool, micro: int = 0, bf16: bool = False) -> np.ndarray:
    """Ours with ingredients switched individually (same background-thread batches as ``predict``); ``micro``:
    crops per network call (0: the whole batch); ``bf16``: autocast (GPU rows of goal 5; predictions then differ
    from fp32 by bf16 rounding)."""
    net = fold_batchnorm(model) if fold else model.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if micro:
        net = MicroBatched(net, micro)
    out = []
    with torch.inference_mode():
        load = CropLoader(transform)
        for b in (load(records[i:i + batch]) for i in range(0, len(records), batch)):
            x = torch.from_numpy(b["image"]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if one_forward:
                    hm = flip_test_one_forward(net, x, COCO_KEYPOINTS.flip_pairs)
                else:
                    hm = (net(x) + flip_back(net(x.flip(3)), COCO_KEYPOINTS.flip_pairs)) * 0.5
            hm = hm.float()
            coords, maxvals = (t.cpu().numpy() for t in decode_on_device(hm))
            coords = heatmaps_to_image_coords(coords, b["center"], b["scale"], HEATMAP)
            out.append(np.concatenate([coords, maxvals], axis=2))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "coco_mini"))
    ap.add_argument("--model", default="pose_hrnet_w32")
    ap.add_argument("--width", type=int, default=None, help="HRNet width override (e.g. 18)")
    ap.add_argument("--people", type=int, default=0, help="first N people only (0: all)")
    ap.add_argument("--batch", type=int, default=32, help="test batch (official TEST.BATCH_SIZE_PER_GPU 32)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of the official-style loop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ablation", action="store_true", help="also time ours with single ingredients")
    ap.add_argument("--smoke", action="store_true", help="8 people, width-8 model, 1 round (CI)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_eval: no CUDA device here; the GPU benchmark is skipped")
        return
    if args.smoke:
        args.people, args.width, args.rounds, args.batch = 8, 8, 1, 4
    ann = Path(args.data) / "annotations" / "person_keypoints_train2017.json"
    if not ann.is_file():
        sys.exit(f"no COCO keypoint annotations at {ann}")
    torch.set_num_threads(args.threads)
    reader = CocoKeypoints(ann, Path(args.data) / "train2017", use_gt_boxes=True, aspect_ratio=INPUT[0] / INPUT[1])
    records = reader.records[:args.people] if args.people else reader.records
    transform = TopDownTransform(INPUT, HEATMAP, SIGMA, COCO_KEYPOINTS.flip_pairs, train=False)
    torch.manual_seed(0)
    overrides = {"width": args.width} if args.width else {}
    if args.smoke:
        overrides["stage_modules"] = (1, 1, 1)
    model = build_model(args.model, **overrides).to(device).eval()
    recipe = SimpleNamespace(data=SimpleNamespace(input_size=list(INPUT), heatmap_size=list(HEATMAP), sigma=SIGMA,
                                                  dataset="coco"),
                             test=SimpleNamespace(flip=True, shift_heatmap=True, batch_size=args.batch))
    split = SimpleNamespace(manifest={"num_joints": 17})

    runs = {
        "official-style loop": lambda: official_style(model, records, transform, args.batch, args.workers, device),
        "ours (pose_topdown.predict)": lambda: predict_items(model, pose_topdown.TASK, recipe, split, records,
                                                             device=device).values,
    }
    if args.ablation:
        for name, opts in {"  plain, 2 forwards": (False, False, False), "  + one forward": (False, True, False),
                           "  + BN folded": (True, True, False), "  + channels-last": (True, True, True),
                           f"  + {CPU_MICRO_BATCH}-crop micro-batches": (True, True, True, CPU_MICRO_BATCH)}.items():
            runs[name] = (lambda o: lambda: ablation(model, records, transform, args.batch, device, *o))(opts)
        if device.type == "cuda":
            runs["  + bf16 autocast"] = lambda: ablation(model, records, transform, args.batch, device, True, True,
                                                         True, bf16=True)
    times = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    preds = {}
    for k, fn in runs.items():  # warm-up (the smoke run times its only pass)
        if not args.smoke:
            preds[k] = fn()
    for _ in range(args.rounds):
        for k, fn in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            preds[k] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)

    load = os.getloadavg()
    n = len(records)
    images = len({r["image_file"] for r in records})
    print(f"Top-down evaluation, {args.model}{f' width {args.width}' if args.width else ''} {INPUT[1]}x{INPUT[0]}, "
          f"flip test, {n} people in {images} images, batch {args.batch}, device {device}, threads "
          f"{torch.get_num_threads()}, official-style DataLoader workers {args.workers}, best of {args.rounds} "
          f"interleaved rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("  wall: best round; cpu: CPU time of this process in its best round (robust on a shared machine; with "
          "--workers > 0 the official-style loop's DataLoader processes are not counted, so compare CPU at --workers 0)")
    base = min(times["official-style loop"])
    base_cpu = min(cpu["official-style loop"])
    ref = preds["official-style loop"]
    for k in runs:
        best = min(times[k])
        diff = np.abs(preds[k][..., :2] - ref[..., :2])
        print(f"  {k:<30} {best:7.2f} s  {n / best:7.1f} people/s  speed-up {base / best:5.2f}x   "
              f"cpu {min(cpu[k]):7.2f} s  cpu speed-up {base_cpu / min(cpu[k]):5.2f}x   "
              f"max |dxy| vs official-style {diff.max():.2e} px ({int((diff > 1e-3).sum())} coords > 1e-3 px), "
              f"max |dscore| {np.abs(preds[k][..., 2] - ref[..., 2]).max():.1e}")


if __name__ == "__main__":
    main()
