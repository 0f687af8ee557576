"""Weights files: our self-describing format, and opening ours or an official checkpoint into a recipe's model.

Our weights file (written by training, :func:`save_weights`) is a plain ``torch.save`` of
``{"format", "model", "model_kwargs", "state_dict", "recipe", ...meta}`` holding only tensors and plain Python data,
so every file is read with ``torch.load(weights_only=True)``: a file that needs anything else to unpickle (code
objects, arbitrary classes) is refused with one line naming the file and the first global it asked for, and nothing
in it runs.

An officially released checkpoint (e.g. ``pose_hrnet_w32_256x192.pth``: a plain state dict, or a
``{"state_dict": ...}`` container) carries no recipe: :func:`open_checkpoint` loads it strictly into the recipe's
model (:func:`hrnet_core.models.load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrnet_core.data.io import sha256_file
from hrnet_core.errors import BadInputError

__all__ = ["WEIGHTS_FORMAT", "CheckpointError", "LoadedCheckpoint", "safe_load", "save_weights", "load_weights",
           "build_network", "open_checkpoint", "SOURCE_TRAINING", "SOURCE_OFFICIAL"]

WEIGHTS_FORMAT = "hrnet-pipeline/weights-1"
SOURCE_TRAINING = "training"
SOURCE_OFFICIAL = "official-checkpoint"


class CheckpointError(BadInputError, ValueError):
    """A weights / checkpoint file is missing, unreadable, unsafe or not of this pipeline (the message names the file)."""


def safe_load(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises:
        CheckpointError: the file is missing, is not a torch file, or needs more than tensors and plain data to be
            read (the message names the file and the global it asked for; nothing of it was executed).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling / zip errors come in many types
        text = str(exc)
        # torch: "Unsupported global: GLOBAL x.y" or, for a blocked module, "unsupported GLOBAL x.y whose module ..."
        m = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE) or \
            re.search(r"Unsupported operand (\d+)", text)
        if m or "Weights only load failed" in text:
            what = f"it needs {m.group(1)!r}" if m else "it holds objects other than tensors and plain data"
            raise CheckpointError(f"checkpoint {str(p)!r} refused: {what} to be unpickled, which could run code; "
                                  f"only tensors and plain data are loaded (torch.load weights_only=True)") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {type(exc).__name__}: {first}") from None


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor], recipe, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing weights file (module docstring) atomically (temporary file + rename).

    ``state_dict`` is the bare model's (no ``module.`` prefix); ``meta`` holds plain data only (epoch, run id,
    metrics).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "model": recipe.model.name,
        "model_kwargs": recipe.model.build_kwargs(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "recipe": recipe.to_dict(),
        **(dict(meta) if meta else {}),
    }
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(p)
    return p


def load_weights(path: str | Path) -> dict[str, Any]:
    """Read a weights file of :func:`save_weights`, or a Ray Train checkpoint directory holding ``model.pt``.

    Raises:
        CheckpointError: missing, unreadable or unsafe file, or not a weights file of this pipeline.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    payload = safe_load(p)
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a weights file of this pipeline (format "
                              f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    return payload


def build_network(recipe, state_dict: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The recipe's network (its task's ``build_model``, without the ImageNet backbone file), loading ``state_dict``
    strictly when given.

    Raises:
        hrnet_core.models.CheckpointMismatchError: ``state_dict`` does not fit the network (lists the keys).
    """
    from hrnet_core.models import load_checkpoint
    from hrnet_core.tasks import get_task

    bare = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, pretrained=None))
    model = get_task(recipe.task).build_model(bare)
    if state_dict is not None:
        load_checkpoint(model, state_dict)
    return model


@dataclass
class LoadedCheckpoint:
    """A checkpoint loaded into its model.

    Attributes:
        model: the recipe's network with the checkpoint's weights (CPU).
        recipe: the recipe it is evaluated with (the stored one for our weights files unless overridden).
        source: :data:`SOURCE_TRAINING` (ours) or :data:`SOURCE_OFFICIAL` (any other state dict).
        path: the file read.
        meta: for our weights files the stored extras (``epoch``, ``mlflow_run_id``, ...); for official checkpoints
            ``{"sha256": ...}``.
    """

    model: torch.nn.Module
    recipe: Any
    source: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def open_checkpoint(checkpoint: str | Path, recipe=None) -> LoadedCheckpoint:
    """Load our weights file or an official checkpoint into the recipe's model, strictly.

    A file whose ``format`` is :data:`WEIGHTS_FORMAT` (or a Ray checkpoint directory) is ours: its stored recipe is
    used unless ``recipe`` is given. Any other mapping is an official checkpoint (plain state dict or
    ``state_dict`` / ``model`` / ``module`` container, wrapper prefixes stripped) and needs ``recipe``.

    Raises:
        CheckpointError: missing, unreadable or unsafe file; an official checkpoint without a recipe.
        hrnet_core.models.CheckpointMismatchError: the weights do not fit the recipe's model (names the file and
            the first mismatched keys with both shapes).
    """
    from hrnet_core.recipes import recipe_from_dict

    p = Path(checkpoint)
    obj = safe_load(p / "model.pt" if p.is_dir() else p)
    if isinstance(obj, Mapping) and obj.get("format") == WEIGHTS_FORMAT:
        r = recipe if recipe is not None else recipe_from_dict(obj["recipe"])
        model = _load_into(build_network(r), obj["state_dict"], p, r)
        meta = {k: v for k, v in obj.items() if k not in ("format", "state_dict", "recipe", "model", "model_kwargs")}
        return LoadedCheckpoint(model, r, SOURCE_TRAINING, p, meta)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {str(p)!r} holds a {type(obj).__name__}, not a state dict")
    if recipe is None:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a weights file of this pipeline (an official "
                              f"checkpoint?): name its recipe, e.g. `hrnet evaluate pose_hrnet_w32_256x192_coco "
                              f"--checkpoint {p}`")
    model = _load_into(build_network(recipe), obj, p, recipe)
    return LoadedCheckpoint(model, recipe, SOURCE_OFFICIAL, p, {"sha256": sha256_file(p)})


def _load_into(model: torch.nn.Module, state: Mapping, path: Path, recipe) -> torch.nn.Module:
    from hrnet_core.models import CheckpointMismatchError, load_checkpoint

    try:
        load_checkpoint(model, state)
    except CheckpointMismatchError as exc:  # names "<state dict>": name the file instead
        raise CheckpointMismatchError(str(path), f"{recipe.model.name} (recipe {recipe.name})", exc.missing,
                                      exc.unexpected, exc.mismatched) from None
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from None
    return model
