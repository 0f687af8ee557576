"""Training ingest and the Ray Train spine vs plain PyTorch (issue 16, goals 1-2), on a task's generated data.

``--task`` (default ``pose_topdown``): a task of ``params.yaml``; its generated default data (``--samples`` training
items, default the task's ``num_train`` up to 256) is prepared in a temporary folder and its ``dvc repro`` recipe
(recipe, profile, overrides) is used, without validation.

Part ``ingest`` (default; ``--skip-ingest`` skips it): samples/s (crops for top-down pose) of the Ray Data ingest
(:func:`pipelines.ingest.build_train_dataset` over ``--ingest-epochs`` epochs in one dataset, as the training loop
streams them, iterated as it does: ``iter_torch_batches`` with the task's collate, prefetch 2) with 1 decode task
(``concurrency=1``) and with as many as the Ray instance has CPUs, vs a ``torch.utils.data.DataLoader`` with 1 and 2
worker processes over the same samples (the task's per-sample function with the same ``(seed, epoch, index)``
generators, same order, the task's collate, one loader for the same epochs), interleaved round by round. Printed:
rate of the whole measurement (dataset / loader start included), rate after the first batch (streaming), streaming
rate per decode CPU, the first batch's latency.

Part ``epoch`` (``--epoch``): the recipe trained for ``--epochs`` epochs through :func:`pipelines.train.train`
(1 Ray Train worker with 1 CPU, Ray Data ingest on the other; the epoch time from the run's history, with the time
the loop waited for data) between two runs of a plain PyTorch loop with the same model, per-sample transform,
optimiser, batch size and seed on ``DataLoader(num_workers=1)`` (plain, Ray, plain: the load drifts); the time
outside the epochs (Ray itself already running) printed separately, by part: driver, Ray Train worker group start,
worker setup, validation, checkpoint files, and the rest (reports, MLflow logging, Ray Train stop).
Target: Ray epoch <= 1.10x the plain one.

What the profiles said (py-spy of the consuming process): with one ``encode_batch`` call per 16 rows, a block's
arrays were several chunks that Ray Data's batcher concatenated in the training process before slicing batches
(``concat_tensor_arrays``, ~15 % of its samples), and 2 decode tasks streamed 0.70-0.78 of ``DataLoader(num_workers=
2)`` on the idle 2-core machine; one call per block (:func:`pipelines.ingest.build_train_dataset`) removed that copy
(1.02-1.51). Ray Data still pays a fixed cost per block (task launch, tensor columns to Arrow, object store put/get,
the executor's scheduling step in the consumer's own process) and a start per execution (first batch after ~0.2 s vs
~0.07 s for a ``DataLoader``); the training loop pays that once per run (one execution for all epochs, decode workers
warmed and the executor started while the model is built).

Usage::

    python benchmarks/bench_ingest.py [--task pose_topdown] [--samples N] [--rounds 2] [--ingest-epochs 2]
                                      [--epoch] [--epochs 2] [--skip-ingest]
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
    """The rank-0 rows of one or more epochs (:func:`pipelines.ingest.shard_rows`) as a map-style dataset: sample
    ``i`` = task transform of row ``i`` with ``sample_rng(seed, epoch, index)`` of that row (what the Ray Data
    ingest computes, in the same order)."""

    def __init__(self, rows, fn, seed: int, epoch: int) -> None:
        self.rows, self.fn, self.seed, self.epoch = rows, fn, seed, epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from hrnet_core.data.seeding import sample_rng

        row = dict(self.rows[i])
        epoch = row.pop("epoch", self.epoch)
        sample = self.fn(row, sample_rng(self.seed, epoch, row["index"]))
        sample["index"] = np.int64(row["index"])
        return sample


class Collate:
    """The task's ``collate_fn`` over stacked samples (what ``iter_torch_batches(collate_fn=task_collate(...))``
    gives the training loop)."""

    def __init__(self, task) -> None:
        self.fn = task.collate_fn

    def __call__(self, samples):
        from pipelines.ingest import stack_samples

        return self.fn(stack_samples(samples))


def task_params(task: str) -> dict:
    """The task's section of ``params.yaml`` (generate sizes, recipe, profile, recipe overrides)."""
    import yaml

    tasks = yaml.safe_load((ROOT / "params.yaml").read_text())["tasks"]
    if task not in tasks:
        sys.exit(f"unknown task {task!r}; params.yaml has {sorted(tasks)}")
    return tasks[task]


def prepare_data(work: Path, num_train: int, task: str = "pose_topdown") -> Path:
    """The task's generated default data (``num_train`` training items, a few validation ones), prepared."""
    from pipelines.prepare import prepare_generated

    prepare_generated(task, work / "prepared", work / "raw", num_train=num_train, num_val=8, seed=1, progress=False)
    return work / "prepared"


def smoke_recipe(root: Path, epochs: int, task: str = "pose_topdown"):
    """The recipe ``dvc repro`` trains for ``task`` (params.yaml: recipe, profile, overrides) on ``root``, for
    ``epochs`` epochs without validation."""
    import copy

    from hrnet_core.recipes import load_recipe

    params = task_params(task)
    overrides = copy.deepcopy(params.get("recipe_overrides") or {})
    overrides.setdefault("data", {})["root"] = str(root)
    overrides.setdefault("train", {}).update({"epochs": epochs, "val_every": 0})
    return load_recipe(params["recipe"], overrides, profile=params.get("profile") or None)


def loader_epoch(recipe, split, table, workers: int, epoch: int, step=None, epochs: int = 1
                 ) -> tuple[int, float, float]:
    """``epochs`` epochs from ``epoch`` of the rank-0 shard through one DataLoader (its workers live for all of
    them, as ``persistent_workers``); ``step(batch)`` per batch. Returns (crops, seconds, seconds to the first
    batch)."""
    import torch

    from hrnet_core.tasks import get_task
    from pipelines.ingest import shard_rows

    task = get_task(recipe.task)
    seed, bs = int(recipe.train.seed), int(recipe.train.batch_size_per_device)
    rows = shard_rows(table, seed, epoch, epochs=epochs, batch_size=bs).to_pylist()
    ds = ShardDataset(rows, task.sample_transform(recipe, split, True), seed, epoch)
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=workers, collate_fn=Collate(task),
                                         drop_last=True, prefetch_factor=2 if workers else None)
    seen, first = 0, None
    for batch in loader:
        first = time.perf_counter() - t0 if first is None else first
        if step is not None:
            step(batch)
        seen += len(batch["index"])
    return seen, time.perf_counter() - t0, first


def ray_epoch(recipe, split, table_ref, epoch: int, epochs: int = 1, concurrency: int | None = None
              ) -> tuple[int, float, float]:
    """``epochs`` epochs from ``epoch`` of the rank-0 shard through one Ray Data ingest dataset, iterated as the
    training loop does (dataset construction included in the time). Returns (crops, seconds, seconds to the first
    batch)."""
    import ray
    import ray.data

    from hrnet_core.tasks import get_task
    from pipelines.ingest import build_train_dataset, preserve_order, task_collate

    task = get_task(recipe.task)
    bs = recipe.train.batch_size_per_device
    preserve_order()
    t0 = time.perf_counter()
    ds = build_train_dataset(task, recipe, split, epoch=epoch, table=ray.get(table_ref), epochs=epochs, batch_size=bs,
                             concurrency=concurrency)
    seen, first = 0, None
    for batch in ds.iter_torch_batches(batch_size=bs, drop_last=True, collate_fn=task_collate(task.collate_fn),
                                       prefetch_batches=2):
        first = time.perf_counter() - t0 if first is None else first
        seen += len(batch["index"])
    return seen, time.perf_counter() - t0, first


def part_ingest(root: Path, rounds: int, epochs: int = 2, task_name: str = "pose_topdown") -> None:
    import ray
    import ray.data

    from hrnet_core.data.prepared import open_split
    from pipelines.ingest import samples_table, warm_decode_workers
    from pipelines.cluster import init_ray

    recipe = smoke_recipe(root, 1, task_name)
    split = open_split(root, recipe.data.train_split)
    table = samples_table(split)
    t0 = time.perf_counter()
    if not ray.is_initialized():
        init_ray()
    t_ray = time.perf_counter() - t0
    cpus = float(ray.cluster_resources().get("CPU", 0))
    ray.data.DataContext.get_current().enable_progress_bars = False
    from hrnet_core.tasks import get_task

    ray.get(warm_decode_workers(get_task(recipe.task), int(cpus)))
    ref = ray.put(table)
    runs = {"Ray Data, 1 decode task": (lambda e: ray_epoch(recipe, split, ref, e, epochs, concurrency=1), 1.0),
            "DataLoader(num_workers=1)": (lambda e: loader_epoch(recipe, split, table, 1, e, epochs=epochs), 1.0),
            f"Ray Data, {cpus:g} decode tasks": (lambda e: ray_epoch(recipe, split, ref, e, epochs), cpus),
            "DataLoader(num_workers=2)": (lambda e: loader_epoch(recipe, split, table, 2, e, epochs=epochs), 2.0)}
    rates: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    bs = recipe.train.batch_size_per_device
    for name, (fn, _) in runs.items():  # warm-up: worker start, imports
        fn(0)
    for r in range(rounds):
        for name, (fn, _) in runs.items():
            n, s, first = fn((r + 1) * epochs)
            rates[name].append((n / s, (n - bs) / max(s - first, 1e-9), first))
    load = os.getloadavg()
    size = getattr(recipe.data, "input_size", None)
    print(f"{task_name} training ingest, {recipe.name} ({f'{size[0]}x{size[1]} crops, ' if size else ''}"
          f"batch {bs}), {table.num_rows} samples, {epochs} epochs per measurement (one dataset / one DataLoader), "
          f"{rounds} interleaved rounds, best round; Ray start-up {t_ray:.1f} s; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("  crops/s: whole measurement (start included) | streaming (after the first batch) | per decode CPU "
          "(streaming); first batch after")
    pairs = {"Ray Data, 1 decode task": "DataLoader(num_workers=1)",
             f"Ray Data, {cpus:g} decode tasks": "DataLoader(num_workers=2)"}
    best = {k: (max(x[0] for x in v), max(x[1] for x in v), min(x[2] for x in v)) for k, v in rates.items()}
    for name, (_, n_cpu) in runs.items():
        whole, stream, first = best[name]
        cmp = (f"  ratio Ray / DataLoader: whole {whole / best[pairs[name]][0]:4.2f}, streaming "
               f"{stream / best[pairs[name]][1]:4.2f}") if name in pairs else ""
        print(f"  {name:<28} {whole:6.0f} | {stream:6.0f} | {stream / n_cpu:6.0f} ({n_cpu:g} CPU); "
              f"first batch {first:5.2f} s{cmp}")


def part_epoch(root: Path, epochs: int, work: Path, task_name: str = "pose_topdown") -> None:
    import torch

    from hrnet_core.data.prepared import open_split
    from hrnet_core.tasks import get_task
    from pipelines.ingest import samples_table
    from hrnet_core.engine import build_optimizer
    from pipelines.train import train

    recipe = smoke_recipe(root, epochs, task_name)
    split = open_split(root, recipe.data.train_split)
    table = samples_table(split)
    task = get_task(recipe.task)

    # plain PyTorch: same model, transform, optimiser, batch, seed
    def plain_run() -> list[float]:
        torch.manual_seed(int(recipe.train.seed))
        model = task.build_model(recipe)
        optimizer = build_optimizer(recipe, model)
        train_step = task.train_step(recipe)

        def step(batch):
            optimizer.zero_grad(set_to_none=True)
            train_step(model, batch)["loss"].backward()
            optimizer.step()

        out = []
        for epoch in range(epochs):
            model.train()
            out.append(loader_epoch(recipe, split, table, 1, epoch, step)[1])
        return out

    # interleaved: plain, Ray Train, plain (the machine's load drifts); Ray itself started outside the timing
    import ray

    from pipelines.cluster import init_ray

    if not ray.is_initialized():
        init_ray()
    plain = plain_run()
    t0 = time.perf_counter()
    result = train(recipe, num_workers=1, use_gpu=False, run_name="bench", storage_path=str(work / "ray_results"),
                   mlflow_uri=f"sqlite:///{work / 'mlflow.db'}", cpus_per_worker=1.0)
    t_ray = time.perf_counter() - t0
    plain_after = plain_run()
    ray_epochs = [h["epoch_time_s"] for h in result.history]
    waits = [h.get("data_wait_s", float("nan")) for h in result.history]
    load = os.getloadavg()
    print(f"{task_name} training epoch, {recipe.name}, {table.num_rows} samples, batch "
          f"{recipe.train.batch_size_per_device}, {epochs} epochs; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"  plain PyTorch loop, DataLoader(num_workers=1): epochs {', '.join(f'{s:.1f}' for s in plain)} s before, "
          f"{', '.join(f'{s:.1f}' for s in plain_after)} s after the Ray run; outside the epochs 0.0 s")
    print(f"  Ray Train (1 worker) + Ray Data ingest:        epochs {', '.join(f'{s:.1f}' for s in ray_epochs)} s "
          f"(waiting for data {', '.join(f'{s:.2f}' for s in waits)} s); outside the epochs "
          f"{t_ray - sum(ray_epochs):.1f} s (Ray already running)")
    hist = result.history
    parts = {"driver (checks, MLflow run)": result.metrics.get("driver_setup_s", 0.0),
             "Ray Train worker group start": sum(h.get("worker_start_s", 0.0) for h in hist),
             "worker setup (imports, model, first blocks)": sum(h.get("worker_setup_s", 0.0) for h in hist),
             "validation": sum(h.get("val_time_s", 0.0) for h in hist),
             "checkpoint files": sum(h.get("checkpoint_write_s", 0.0) for h in hist)}
    parts["reports, MLflow logging, Ray Train stop"] = t_ray - sum(ray_epochs) - sum(parts.values())
    print("    outside the epochs: " + "; ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    both = plain + plain_after
    print(f"  epoch time ratio Ray / plain: best epochs {min(ray_epochs) / min(both):.2f}x, mean epochs "
          f"{sum(ray_epochs) / len(ray_epochs) / (sum(both) / len(both)):.2f}x (target <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pose_topdown", help="a task of params.yaml (its dvc repro recipe and data)")
    ap.add_argument("--samples", type=int, default=None,
                    help="generated training items (default: the task's params.yaml num_train, at most 256)")
    ap.add_argument("--skip-ingest", action="store_true", help="part 'epoch' only")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epoch", action="store_true", help="also run part 'epoch' (Ray Train vs plain loop)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ingest-epochs", type=int, default=2, help="epochs per ingest measurement")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.samples, args.rounds, args.epoch, args.ingest_epochs = 32, 1, False, 1
    if args.samples is None:
        args.samples = min(256, int(task_params(args.task)["generate"]["num_train"]))
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        root = prepare_data(Path(tmp), args.samples, args.task)
        if not args.skip_ingest:
            part_ingest(root, args.rounds, args.ingest_epochs, args.task)
        if args.epoch:
            part_epoch(root, args.epochs, Path(tmp), args.task)


if __name__ == "__main__":
    main()
