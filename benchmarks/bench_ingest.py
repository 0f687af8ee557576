"""Training ingest and the Ray Train spine vs plain PyTorch (issue 16, goals 1-2), on generated top-down data.

Part ``ingest`` (default): crops/s of the Ray Data ingest (:func:`pipelines.ingest.build_train_dataset`, iterated
as the training loop does: ``iter_torch_batches`` with the task's collate, prefetch 2) vs a
``torch.utils.data.DataLoader`` with 1 and 2 worker processes over the same samples (the task's per-sample function
with the same ``(seed, epoch, index)`` generators, same order), interleaved round by round; also crops/s per CPU
(Ray: the CPUs of the Ray instance, which Ray Data may use; DataLoader: its worker processes).

Part ``epoch`` (``--epoch``): the smoke recipe trained for ``--epochs`` epochs through :func:`pipelines.train.train`
(1 Ray Train worker, Ray Data ingest; the epoch time from the run's history) vs a plain PyTorch loop with the same
model, per-sample transform, optimiser, batch size and seed on ``DataLoader(num_workers=1)``; the time outside the
epochs (start-up, checkpoints, MLflow) printed separately. Target: Ray epoch <= 1.10x the plain one.

Usage::

    python benchmarks/bench_ingest.py [--samples 256] [--rounds 2] [--epoch] [--epochs 2]
    python benchmarks/bench_ingest.py --smoke       # CI: a few samples, one round, ingest part only
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


class ShardDataset:
    """The rank-0 shard of one epoch as a map-style dataset: sample ``i`` = task transform of row ``order[i]`` with
    ``sample_rng(seed, epoch, index)`` (what the Ray Data ingest computes)."""

    def __init__(self, rows, order, fn, seed: int, epoch: int) -> None:
        self.rows, self.order, self.fn, self.seed, self.epoch = rows, order, fn, seed, epoch

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        from hrnet_core.data.seeding import sample_rng

        index = int(self.order[i])
        sample = self.fn(self.rows[index], sample_rng(self.seed, self.epoch, index))
        sample["index"] = np.int64(index)
        return sample


def collate(samples):
    from hrnet_core.tasks.base import tensor_collate
    from pipelines.ingest import stack_samples

    return tensor_collate(stack_samples(samples))


def prepare_data(work: Path, num_train: int) -> Path:
    from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
    from pipelines.prepare import prepare_split

    generate_dataset(work / "raw", num_train=num_train, num_val=8, seed=1)
    prepare_split("coco", str(work / "raw"), "train2017", work / "prepared", progress=False, task="pose_topdown")
    prepare_split("coco", str(work / "raw"), "val2017", work / "prepared", progress=False, task="pose_topdown",
                  detections=DETECTIONS_FILE.format(split="val2017"))
    return work / "prepared"


def smoke_recipe(root: Path, epochs: int):
    from hrnet_core.recipes import load_recipe

    return load_recipe("pose_hrnet_w32_256x192_coco", {"data.root": str(root), "train.epochs": epochs,
                                                       "train.val_every": 0}, profile="smoke")


def loader_epoch(recipe, split, table, workers: int, epoch: int, step=None) -> tuple[int, float]:
    """One epoch of the rank-0 shard through a DataLoader; ``step(batch)`` per batch. Returns (crops, seconds)."""
    import torch

    from hrnet_core.data.seeding import epoch_shard
    from hrnet_core.tasks import get_task

    task = get_task(recipe.task)
    seed = int(recipe.train.seed)
    order = epoch_shard(seed, epoch, table.num_rows, 0, 1)
    ds = ShardDataset(table.to_pylist(), order, task.sample_transform(recipe, split, True), seed, epoch)
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(ds, batch_size=recipe.train.batch_size_per_device, num_workers=workers,
                                         collate_fn=collate, drop_last=True, prefetch_factor=2 if workers else None)
    seen = 0
    for batch in loader:
        if step is not None:
            step(batch)
        seen += len(batch["image"])
    return seen, time.perf_counter() - t0


def ray_epoch(recipe, split, table_ref, epoch: int) -> tuple[int, float]:
    """One epoch of the rank-0 shard through the Ray Data ingest, iterated as the training loop does."""
    import ray

    from hrnet_core.tasks import get_task
    from pipelines.ingest import build_train_dataset, preserve_order, task_collate

    task = get_task(recipe.task)
    preserve_order()
    t0 = time.perf_counter()
    ds = build_train_dataset(task, recipe, split, epoch=epoch, table=ray.get(table_ref))
    seen = 0
    for batch in ds.iter_torch_batches(batch_size=recipe.train.batch_size_per_device, drop_last=True,
                                       collate_fn=task_collate(task.collate_fn), prefetch_batches=2):
        seen += len(batch["image"])
    return seen, time.perf_counter() - t0


def part_ingest(root: Path, rounds: int) -> None:
    import ray

    from hrnet_core.data.prepared import open_split
    from pipelines.ingest import samples_table
    from pipelines.train import init_ray

    recipe = smoke_recipe(root, 1)
    split = open_split(root, "train2017")
    table = samples_table(split)
    t0 = time.perf_counter()
    if not ray.is_initialized():
        init_ray()
    t_ray = time.perf_counter() - t0
    cpus = float(ray.cluster_resources().get("CPU", 0))
    ref = ray.put(table)
    runs = {"Ray Data ingest": (lambda e: ray_epoch(recipe, split, ref, e), cpus),
            "DataLoader(num_workers=1)": (lambda e: loader_epoch(recipe, split, table, 1, e), 1.0),
            "DataLoader(num_workers=2)": (lambda e: loader_epoch(recipe, split, table, 2, e), 2.0)}
    best = {k: 0.0 for k in runs}
    for name, (fn, _) in runs.items():  # warm-up: worker start, imports
        fn(0)
    for r in range(rounds):
        for name, (fn, _) in runs.items():
            n, s = fn(r + 1)
            best[name] = max(best[name], n / s)
    load = os.getloadavg()
    print(f"Top-down training ingest, smoke recipe ({recipe.data.input_size[0]}x{recipe.data.input_size[1]} crops, "
          f"batch {recipe.train.batch_size_per_device}), {table.num_rows} samples, best of {rounds} interleaved "
          f"epochs; Ray start-up {t_ray:.1f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, (_, n_cpu) in runs.items():
        print(f"  {name:<28} {best[name]:8.1f} crops/s  {best[name] / n_cpu:7.1f} crops/s per CPU ({n_cpu:g} CPUs)  "
              f"ratio Ray / this {best['Ray Data ingest'] / best[name]:5.2f}")


def part_epoch(root: Path, epochs: int, work: Path) -> None:
    import torch

    from hrnet_core.data.prepared import open_split
    from hrnet_core.tasks import get_task
    from pipelines.ingest import samples_table
    from pipelines.train import build_optimizer, train

    recipe = smoke_recipe(root, epochs)
    split = open_split(root, "train2017")
    table = samples_table(split)
    task = get_task(recipe.task)

    # plain PyTorch: same model, transform, optimiser, batch, seed
    torch.manual_seed(int(recipe.train.seed))
    model = task.build_model(recipe)
    optimizer = build_optimizer(recipe, model)
    loss_fn = task.build_loss(recipe)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        task.train_step(model, batch, loss_fn)["loss"].backward()
        optimizer.step()

    t0 = time.perf_counter()
    plain = []
    for epoch in range(epochs):
        model.train()
        plain.append(loader_epoch(recipe, split, table, 1, epoch, step)[1])
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train(recipe, num_workers=1, use_gpu=False, run_name="bench", storage_path=str(work / "ray_results"),
                   mlflow_uri=f"sqlite:///{work / 'mlflow.db'}", cpus_per_worker=1.0)
    t_ray = time.perf_counter() - t0
    ray_epochs = [h["epoch_time_s"] for h in result.history]
    load = os.getloadavg()
    print(f"Training epoch, smoke recipe, {table.num_rows} samples, batch {recipe.train.batch_size_per_device}, "
          f"{epochs} epochs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"  plain PyTorch loop, DataLoader(num_workers=1): epochs {', '.join(f'{s:.1f}' for s in plain)} s; "
          f"outside the epochs {t_plain - sum(plain):.1f} s")
    print(f"  Ray Train (1 worker) + Ray Data ingest:        epochs {', '.join(f'{s:.1f}' for s in ray_epochs)} s; "
          f"outside the epochs {t_ray - sum(ray_epochs):.1f} s")
    print(f"  epoch time ratio Ray / plain (best epochs): {min(ray_epochs) / min(plain):.2f}x (target <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=256, help="generated training images")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epoch", action="store_true", help="also run part 'epoch' (Ray Train vs plain loop)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.samples, args.rounds, args.epoch = 32, 1, False
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        root = prepare_data(Path(tmp), args.samples)
        part_ingest(root, args.rounds)
        if args.epoch:
            part_epoch(root, args.epochs, Path(tmp))


if __name__ == "__main__":
    main()
