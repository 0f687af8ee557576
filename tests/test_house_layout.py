"""Size rules of issue 25 ("a house a newcomer can read in an hour"), measured on the source with ``ast``: a task
file stays under ~500 lines (readers, transforms, losses, drawing live in the lower layers, docs/TASKS.md), no
function of the Ray / MLflow / CLI layers runs over ~60 lines, and ``pipelines/train.py`` stays a thin driver.
Before issue 25 (11549e9): detection 660, face_alignment 645, pose_topdown 636, segmentation 587 lines;
``sweeps.runner.run_sweep`` 149, ``hrnet_cli.main.build_parser`` 176 lines; ``pipelines/train.py`` 1,095 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_FILE_MAX = 500
FUNCTION_MAX = 60
TRAIN_DRIVER_MAX = 350


def _long_functions(folder: Path, limit: int) -> dict[str, int]:
    """``{"<file>::<function>": lines}`` of the functions of ``folder`` longer than ``limit`` lines."""
    out = {}
    for f in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out[f"{f.relative_to(ROOT)}::{node.name}"] = n
    return out


def test_task_files_stay_short():
    sizes = {f.name: len(f.read_text().splitlines()) for f in (ROOT / "hrnet_core" / "tasks").glob("*.py")}
    assert {k: v for k, v in sizes.items() if v > TASK_FILE_MAX} == {}


def test_no_long_functions_in_the_ray_mlflow_and_cli_layers():
    long = {}
    for pkg in ("pipelines", "sweeps", "hrnet_cli"):
        long.update(_long_functions(ROOT / pkg, FUNCTION_MAX))
    assert long == {}


def test_the_training_driver_stays_thin():
    assert len((ROOT / "pipelines" / "train.py").read_text().splitlines()) <= TRAIN_DRIVER_MAX
