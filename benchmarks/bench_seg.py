"""Segmentation ingest and evaluation throughput (issue 13, acceptance 7), on generated scenes.

Part ``ingest``: training crops/s of the Ray Data ingest (:func:`pipelines.ingest.build_train_dataset`, iterated as
the training loop does) vs ``torch.utils.data.DataLoader`` with 1 and 2 worker processes over the same samples (the
task's per-sample function: decode, LUT, random rescale, pad, crop, flip; same ``(seed, epoch, index)`` generators),
interleaved round by round (the loops of ``bench_ingest.py``).

Part ``eval``: images/s of the task's test procedure (:func:`hrnet_core.tasks.segmentation.predict`: decode,
sliding windows at stride 2/3 + flip, argmax, on-device confusion matrix, PNG-encoded prediction) vs a plain PyTorch
reference in the same run: a ``DataLoader(num_workers=2)`` decoding and normalising the images in worker processes,
the same windows + flip through :func:`hrnet_core.evaluation.seg_inference.predict_probs` and ``torch.bincount``;
both with the smoke profile's network, the same windows, and identical confusion matrices (checked).

Usage::

    python benchmarks/bench_seg.py [--samples 192] [--val 32] [--rounds 2] [--window 64]
    python benchmarks/bench_seg.py --smoke      # a few samples, one round
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def prepare(work: Path, num_train: int, num_val: int) -> Path:
    from hrnet_core.tasks.segmentation import generate
    from pipelines.prepare import prepare_split

    generate(work / "raw", num_train, num_val, seed=1)
    for split in ("train", "val"):
        prepare_split("seg_list", str(work / "raw"), split, work / "prepared", progress=False, task="segmentation")
    return work / "prepared"


def recipe_for(root: Path, window: int):
    from hrnet_core.recipes import load_recipe

    return load_recipe("seg_hrnetv2_w48_512x1024_cityscapes",
                       {"data.root": str(root), "data.input_size": [window, window], "test.mode": "slide",
                        "test.flip": True, "train.epochs": 1}, profile="smoke_segmentation")


def part_ingest(recipe, rounds: int) -> None:
    import ray
    from bench_ingest import loader_epoch, ray_epoch

    from hrnet_core.data.prepared import open_split
    from pipelines.ingest import samples_table
    from pipelines.cluster import init_ray

    split = open_split(recipe.data.root, "train")
    table = samples_table(split)
    if not ray.is_initialized():
        init_ray()
    cpus = float(ray.cluster_resources().get("CPU", 0))
    ref = ray.put(table)
    runs = {"Ray Data ingest": (lambda e: ray_epoch(recipe, split, ref, e), cpus),
            "DataLoader(num_workers=1)": (lambda e: loader_epoch(recipe, split, table, 1, e), 1.0),
            "DataLoader(num_workers=2)": (lambda e: loader_epoch(recipe, split, table, 2, e), 2.0)}
    best = {k: 0.0 for k in runs}
    for fn, _ in runs.values():  # warm-up
        fn(0)
    for r in range(rounds):
        for name, (fn, _) in runs.items():
            n, s = fn(r + 1)
            best[name] = max(best[name], n / s)
    load = os.getloadavg()
    w, h = recipe.data.input_size
    print(f"Segmentation training ingest ({w}x{h} crops of 128x96 scenes, rescale 0.5-2.0 + pad + crop + flip, batch "
          f"{recipe.train.batch_size_per_device}), {table.num_rows} samples, best of {rounds} interleaved epochs; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, (_, n_cpu) in runs.items():
        print(f"  {name:<28} {best[name]:8.1f} crops/s  {best[name] / n_cpu:7.1f} crops/s per CPU ({n_cpu:g} CPUs)  "
              f"ratio Ray / this {best['Ray Data ingest'] / best[name]:5.2f}")


class _Images:
    """Val images decoded and normalised in DataLoader workers, with their training-id labels."""

    def __init__(self, items, recipe, lut) -> None:
        self.items, self.recipe, self.lut = items, recipe, lut

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from hrnet_core.data.io import read_image
        from hrnet_core.data.segmentation import apply_lut, read_label
        from hrnet_core.data.seg_transforms import normalise

        r = self.items[i]
        d = self.recipe.data
        return normalise(read_image(r["image_file"]), d.mean, d.std), apply_lut(read_label(r["label_path"]), self.lut)


def plain_eval(model, items, recipe, layout) -> tuple[np.ndarray, float]:
    import torch

    from hrnet_core.evaluation.seg_inference import predict_probs

    n = layout.num_classes
    t = recipe.test
    loader = torch.utils.data.DataLoader(_Images(items, recipe, layout.lut_array()), batch_size=None, num_workers=2)
    cm = torch.zeros(n * n, dtype=torch.int64)
    t0 = time.perf_counter()
    model.eval()
    with torch.inference_mode():
        for img, label in loader:
            probs = predict_probs(model, torch.as_tensor(img), num_classes=n, mode=t.mode,
                                  crop=tuple(recipe.data.input_size), stride=t.stride, flip=t.flip,
                                  scales=t.scales, base_size=recipe.data.base_size)
            lab = torch.as_tensor(label).long().reshape(-1)
            keep = lab < n
            cm += torch.bincount(lab[keep] * n + probs.argmax(0).reshape(-1)[keep], minlength=n * n)
    return cm.reshape(n, n).numpy(), time.perf_counter() - t0


def part_eval(recipe, rounds: int) -> None:
    import torch

    from hrnet_core.data.prepared import open_split
    from hrnet_core.data.segmentation import layout_from_meta
    from hrnet_core.engine.evaluation import predict_items
    from hrnet_core.tasks import get_task
    from hrnet_core.evaluation.miou import dense_confusion

    task = get_task("segmentation")
    split = open_split(recipe.data.root, "val")
    layout = layout_from_meta(split.manifest)
    items = task.eval_items(recipe, split)
    torch.manual_seed(0)
    model = task.build_model(recipe).eval()
    ours, plain = 0.0, 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        preds = predict_items(model, task, recipe, split, items)
        ours = max(ours, len(items) / (time.perf_counter() - t0))
        cm_plain, s = plain_eval(model, items, recipe, layout)
        plain = max(plain, len(items) / s)
    cm_ours = np.sum([dense_confusion(v["confusion"], layout.num_classes) for v in preds.values], axis=0)
    same = bool(np.array_equal(cm_ours, cm_plain))
    load = os.getloadavg()
    w, h = recipe.data.input_size
    print(f"Segmentation evaluation ({len(items)} 128x96 images, sliding {w}x{h} windows at stride 2/3 + flip, "
          f"torch threads {torch.get_num_threads()}), best of {rounds}; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; confusion matrices identical: {same}")
    print(f"  task predict (decode in the loop)          {ours:8.2f} images/s")
    print(f"  plain PyTorch (DataLoader, 2 workers)      {plain:8.2f} images/s   ratio task / plain {ours / plain:5.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=192)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.samples, args.val, args.rounds = 32, 4, 1
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare(Path(tmp), args.samples, args.val)
        recipe = recipe_for(root, args.window)
        if not args.skip_ingest:
            part_ingest(recipe, args.rounds)
        part_eval(recipe, args.rounds)


if __name__ == "__main__":
    main()
