"""Subprocess body of tests/test_task_spine.py::test_warm_up_covers_the_per_sample_imports (a fresh interpreter per
task: which heavy modules does a task's per-sample function import after the decode workers' warm-up?)."""

import importlib
import sys
import tempfile
from pathlib import Path

HEAVY = {"torch", "torchvision", "timm", "PIL", "scipy", "pycocotools", "sklearn", "matplotlib"}


def main(task_name: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_ingest  # the task's generated data and dvc recipe

    from hrnet_core.data.prepared import open_split
    from hrnet_core.tasks import get_task
    from pipelines.ingest import decode_warm_modules, encode_batch, samples_table

    with tempfile.TemporaryDirectory(prefix="decode_imports_") as tmp:
        root = bench_ingest.prepare_data(Path(tmp), 4, task_name)
        recipe = bench_ingest.smoke_recipe(root, 1, task_name)
        task = get_task(recipe.task)
        split = open_split(root, recipe.data.train_split)
        rows = samples_table(split).slice(0, 2).to_pandas()
        fn = task.sample_transform(recipe, split, True)
        for name in decode_warm_modules(task):  # what the decode workers import before their first block
            importlib.import_module(name)
        before = {m.split(".")[0] for m in sys.modules}
        encode_batch(rows, fn, 0, 0)
    print("NEW", sorted({m.split(".")[0] for m in sys.modules} - before & HEAVY))


if __name__ == "__main__":
    main(sys.argv[1])
