"""The run defaults of a task, read from ``params.yaml`` (issue 25: they live there alone).

``params.yaml`` ``tasks.<task>`` holds what ``dvc repro`` runs for a task: the recipe and profile it trains and the
size of the generated data (``generate: {num_train, num_val, seed}``). ``hrnet tasks list``, ``hrnet data
generate`` and :func:`pipelines.prepare.prepare_generated` take their defaults from here instead of a copy in the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError

__all__ = ["RunDefaults", "PARAMS_FILE", "run_defaults"]

#: the DVC parameter file, relative to the repository root (the folder ``dvc repro`` and ``hrnet`` run in)
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class RunDefaults:
    """``params.yaml`` ``tasks.<task>``: ``recipe`` and ``profile`` (``None`` for the paper recipe) of the smoke run,
    and the generated data's ``num_train`` / ``num_val`` (images, people's images or clips, as the task's generator
    counts them) and ``seed``."""

    recipe: str
    profile: str | None
    num_train: int
    num_val: int
    seed: int


def run_defaults(task: str, params: str | Path = PARAMS_FILE) -> RunDefaults:
    """The run defaults of ``task`` in ``params``.

    Raises:
        ConfigError: the file is missing, or has no ``tasks.<task>`` entry with ``recipe`` and ``generate`` (the
            message names the file and the key; pass explicit values instead).
    """
    path = Path(params)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found: the run defaults of task {task!r} live in its "
                          f"tasks.{task} section (run from the repository root, or pass the values explicitly)")
    entry = ((yaml.safe_load(path.read_text()) or {}).get("tasks") or {}).get(task)
    if not isinstance(entry, dict) or "recipe" not in entry or not isinstance(entry.get("generate"), dict):
        raise ConfigError(f"{path}: no tasks.{task} entry with recipe and generate (the task's run defaults); pass "
                          f"the values explicitly")
    gen = entry["generate"]
    return RunDefaults(recipe=str(entry["recipe"]), profile=entry.get("profile") or None,
                       num_train=int(gen["num_train"]), num_val=int(gen["num_val"]), seed=int(gen.get("seed", 0)))
