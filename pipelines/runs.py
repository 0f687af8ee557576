"""Run identity, resume and path pinning, shared by ``hrnet train`` (:mod:`pipelines.train`) and the sweeps
(:mod:`sweeps.runner`, :mod:`sweeps.resolve`, :mod:`sweeps.resume`, :mod:`sweeps.report`).

A training run lives in ``<storage_path>/<run_name>`` (Ray Train's checkpoints ``checkpoint_*/`` with ``model.pt``,
``train_state.pt``, ``history.json``) beside ``hrnet_run.json``, the identity it was trained with: the dataset
fingerprint and the backbone's sha256. The default run name hashes the resolved recipe with that identity
(:func:`config_hash`), so the same command finds its run again (resume, or "already complete") from any checkout,
and other data or another backbone never resumes a run of the old ones (:func:`check_same_run`). Relative recipe
paths are pinned to the driver's working directory before anything runs elsewhere (:func:`absolutize`,
:func:`pinned_path_overrides`, and a sweep's storage root :func:`pinned_storage_path`): Ray workers and Tune trials
run in other directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hrnet_core.data.prepared import PreparedSplit, dataset_fingerprint, open_split
from hrnet_core.recipes import ConfigError, recipe_from_dict

if TYPE_CHECKING:  # pragma: no cover
    from hrnet_core.recipes import Recipe

__all__ = ["TrainResult", "RUN_IDENTITY", "PATH_KEYS", "config_hash", "default_run_name", "open_training_splits",
           "run_identity", "latest_checkpoint", "has_checkpoints", "absolutize", "pinned_path_overrides",
           "pinned_storage_path", "check_same_run",
           "write_identity", "finished_run", "already_complete", "write_history_csv", "copy_weights", "ResolvedWeights", "resolve_weights"]

RUN_IDENTITY = "hrnet_run.json"
#: recipe keys holding paths that Ray workers and Tune trials (other processes and directories) must see absolute
PATH_KEYS = ("data.root", "model.pretrained")


@dataclass
class TrainResult:
    """What :func:`pipelines.train.train` returns.

    Attributes:
        run_id: MLflow run id.
        metrics: final metrics (last epoch's ``loss``, ``lr``, validation metrics if any, ``train_time_s``,
            ``driver_setup_s``: seconds before the trainer is built, ``fit_s``: from then until ``fit`` returned);
            per epoch the history also holds ``epoch_time_s``, ``data_wait_s``, ``val_time_s`` (validated epochs),
            ``checkpoint_write_s`` and, in the first epoch a worker runs, ``worker_start_s`` (trainer built to the
            worker's loop) and ``worker_setup_s`` (loop entry to its first epoch).
        checkpoint_path: directory of the latest Ray Train checkpoint (holds ``model.pt``, ``train_state.pt``).
        run_name: Ray Train run name (``<storage_path>/<run_name>``).
        history: one dict per epoch.
        weights_path: exported weights file, when ``export_weights`` was given.
    """

    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_name: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    weights_path: str | None = None


def config_hash(recipe: "Recipe", dataset_fingerprint: str | None = None, pretrained_sha256: str | None = None) -> str:
    """8 hex digits identifying a training run: the resolved recipe, the data it reads and the backbone it starts from.

    File locations do not count (``data.root``, ``model.pretrained`` are replaced by the contents they point to:
    the prepared splits' ``dataset_fingerprint`` and the backbone file's sha256), so the same run is found again from
    another checkout, and other data or another backbone never resumes (or re-reports) a run of the old ones.
    """
    d = recipe.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k != "root"}
    d["model"] = {k: v for k, v in d["model"].items() if k != "pretrained"}
    ident = {"recipe": d, "data": dataset_fingerprint, "pretrained": pretrained_sha256 or d.get("pretrained")}
    blob = json.dumps(ident, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def default_run_name(recipe: "Recipe", dataset_fingerprint: str | None = None,
                     pretrained_sha256: str | None = None) -> str:
    """``<recipe>[-<profile>]-<config hash>`` (:func:`config_hash`)."""
    parts = [recipe.name] + ([recipe.profile] if recipe.profile else [])
    return "-".join(parts + [config_hash(recipe, dataset_fingerprint, pretrained_sha256)])


def open_training_splits(recipe: "Recipe") -> tuple[PreparedSplit, PreparedSplit]:
    """The prepared ``(train, val)`` splits of ``recipe`` (``data.root`` / ``data.train_split``, ``data.val_split``),
    opened once per run by the driver and handed to :func:`run_identity`, the sample table and the workers.

    Raises:
        DataError: a split is missing, unreadable or lost its image folder
            (:func:`hrnet_core.data.prepared.open_split`).
    """
    return (open_split(recipe.data.root, recipe.data.train_split),
            open_split(recipe.data.root, recipe.data.val_split))


def run_identity(recipe: "Recipe", splits: tuple[PreparedSplit, PreparedSplit] | None = None) -> dict[str, Any]:
    """What identifies a run of ``recipe`` (absolute paths): ``{"dataset_fingerprint", "pretrained_sha256",
    "run_name"}``, read from the prepared ``(train, val)`` splits (opened here when not given) and the backbone file.

    Raises:
        DataError: prepared splits missing. FileNotFoundError: ``model.pretrained`` missing.
    """
    from hrnet_core.data.io import sha256_file

    train_split, val_split = splits if splits is not None else open_training_splits(recipe)
    if recipe.model.pretrained and not Path(recipe.model.pretrained).is_file():
        raise FileNotFoundError(f"pretrained backbone weights {recipe.model.pretrained!r} not found (model.pretrained);"
                                f" download the ImageNet checkpoint or set model.pretrained=null")
    fingerprint = dataset_fingerprint(train_split, val_split)
    pre = sha256_file(recipe.model.pretrained) if recipe.model.pretrained else None
    return {"dataset_fingerprint": fingerprint, "pretrained_sha256": pre,
            "run_name": default_run_name(recipe, fingerprint, pre)}


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a Ray Train checkpoint folder (``checkpoint*``)."""
    d = Path(run_dir)
    return d.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint") for p in d.iterdir())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The Ray Train checkpoint folder of ``run_dir`` with the longest ``history.json`` (None when there is none)."""
    best, best_len = None, -1
    d = Path(run_dir)
    if not d.is_dir():
        return None
    for c in d.iterdir():
        h = c / "history.json"
        if c.is_dir() and c.name.startswith("checkpoint") and h.is_file():
            try:
                n = len(json.loads(h.read_text()))
            except (OSError, ValueError):
                continue
            if n > best_len:
                best, best_len = c, n
    return best


def _pin(value: str, base: Path) -> str:
    """``value`` resolved against ``base`` (an absolute path stays itself, resolved)."""
    return str((base / value).resolve())


def absolutize(recipe: "Recipe", base: str | Path | None = None) -> "Recipe":
    """A copy of ``recipe`` whose file paths (``data.root``, ``model.pretrained``) are absolute, resolved against
    ``base`` (default: the working directory)."""
    base_dir = Path(base) if base is not None else Path.cwd()
    d = recipe.to_dict()
    d["data"]["root"] = _pin(d["data"]["root"], base_dir)
    if d["model"]["pretrained"]:
        d["model"]["pretrained"] = _pin(d["model"]["pretrained"], base_dir)
    return recipe_from_dict(d)


def pinned_path_overrides(flat: Mapping[str, Any], base: str | Path | None = None) -> dict[str, str]:
    """Overrides ``{key: absolute path}`` for the relative local paths among ``flat``'s :data:`PATH_KEYS` (a flat
    recipe, :meth:`Recipe.flat`); URLs (``://``), absolute paths and empty values are left alone."""
    base_dir = Path(base) if base is not None else Path.cwd()
    out = {}
    for key in PATH_KEYS:
        value = flat.get(key)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            out[key] = _pin(value, base_dir)
    return out


def pinned_storage_path(path: str) -> str:
    """A Tune / Train storage root as every process must see it: a local path made absolute against the working
    directory, a URI (``s3://``, ``gs://``, anything with ``://``) as given."""
    return path if "://" in path else str(Path(path).resolve())


def check_same_run(run_dir: Path, identity: Mapping[str, Any]) -> None:
    """A run folder with checkpoints may only be continued with the data (and backbone) it was trained on.

    Raises:
        ConfigError: ``hrnet_run.json`` of ``run_dir`` names another dataset fingerprint or backbone sha256.
    """
    f = run_dir / RUN_IDENTITY
    if not f.is_file() or not has_checkpoints(run_dir):
        return
    stored = json.loads(f.read_text())
    for key in ("dataset_fingerprint", "pretrained_sha256"):
        if stored.get(key) != identity.get(key):
            raise ConfigError(f"run {run_dir.name!r} ({run_dir}) was trained with {key} {stored.get(key)}, this "
                              f"recipe has {identity.get(key)}: it cannot be resumed; drop --run-name (a new run) or "
                              f"name another run")


def write_identity(run_dir: Path, identity: Mapping[str, Any]) -> None:
    """Create ``run_dir`` and write ``hrnet_run.json`` (:data:`RUN_IDENTITY`) there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_IDENTITY).write_text(json.dumps(identity, indent=2) + "\n")


def finished_run(run_dir: Path, epochs: int) -> tuple[Path, list[dict[str, float]]] | None:
    """``(checkpoint, history)`` of a run folder whose latest checkpoint holds all ``epochs`` (its ``model.pt``
    read safely first, :func:`hrnet_core.weights.load_weights`), else None.

    Raises:
        hrnet_core.weights.CheckpointError: the checkpoint's weights file is refused.
    """
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    history = json.loads((ckpt / "history.json").read_text())
    if len(history) < epochs:
        return None
    from hrnet_core.weights import load_weights

    load_weights(ckpt)  # a weights file of ours, read safely before it is copied anywhere
    return ckpt, history


def copy_weights(ckpt_dir: str | Path, out: str | Path) -> str:
    """Copy the checkpoint's ``model.pt`` to ``out`` (parents created); returns the absolute path written."""
    path = str(Path(out).resolve())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(ckpt_dir) / "model.pt", path)
    return path


def already_complete(run_dir: Path, recipe: "Recipe", uri: str, experiment: str, run_name: str,
              export_weights, history_out) -> TrainResult | None:
    """The result of a run that has already trained all ``train.epochs`` (read from its last checkpoint; no Ray),
    else None: prints ``already complete: run ...``, copies the weights to ``export_weights`` and the history to
    ``history_out``, and closes its MLflow run FINISHED when it had ended otherwise (:func:`_complete_run`).

    Raises:
        hrnet_core.weights.CheckpointError: the checkpoint's weights file is refused (nothing copied).
    """
    from hrnet_core.tasks import get_task

    from . import mlflow_runs

    found = finished_run(run_dir, recipe.train.epochs)
    if found is None:
        return None
    ckpt, history = found
    run_id = mlflow_runs.find_run(uri, experiment, run_name) or ""
    metrics = dict(history[-1])
    note = _complete_run(uri, run_id, recipe, metrics, len(history)) if run_id else ""
    primary = get_task(recipe.task).metrics.primary_for(recipe.data.dataset)
    value = f", {primary} {metrics[primary]:.2f}" if primary in metrics else ""
    print(f"already complete: run {run_name} (MLflow {run_id or '?'}{note}), {len(history)} epochs{value}", flush=True)
    weights_path = copy_weights(ckpt, export_weights) if export_weights is not None else None
    if history_out is not None:
        write_history_csv(history, history_out)
    return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=str(ckpt), run_name=run_name, history=history,
                       weights_path=weights_path)


def _complete_run(uri: str, run_id: str, recipe: "Recipe", metrics: dict[str, float], epochs: int) -> str:
    """The MLflow run of a run folder whose checkpoints hold every epoch: FINISHED as it is; one that ended otherwise
    (the driver died after the last epoch) is closed now (:func:`pipelines.mlflow_runs.close_training_run`, tag
    ``completed_from_checkpoint``). Returns a note for the "already complete" line."""
    from . import mlflow_runs

    status = mlflow_runs.client(uri).get_run(run_id).info.status
    if status == "FINISHED":
        return ""
    mlflow_runs.set_tags(uri, run_id, {"completed_from_checkpoint": "true"})
    mlflow_runs.close_training_run(uri, run_id, recipe.name, metrics, epochs, profile=recipe.profile)
    return f"; it had ended {status}, now FINISHED: its checkpoints hold every epoch"


def write_history_csv(history: list[dict[str, float]], path: str | Path) -> Path:
    """Per-epoch history as CSV (columns: epoch, then every metric seen; empty cells where not measured)."""
    import csv

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch"] + sorted({k for h in history for k in h} - {"epoch"})
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for h in history:
            w.writerow({k: h.get(k, "") for k in keys})
    return p


@dataclass(frozen=True)
class ResolvedWeights:
    """Where SOURCE led: the file read and how it was found (``file``, ``checkpoint``, ``run folder``,
    ``MLflow run <id>``)."""

    path: Path
    how: str


def _checkpoint_in(folder: Path) -> Path | None:
    """``folder/model.pt``, else the ``model.pt`` of its latest Ray Train checkpoint (None when neither)."""
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    ckpt = latest_checkpoint(folder)
    return ckpt / "model.pt" if ckpt is not None else None


def _mlflow_store_exists(uri: str) -> bool:
    """False for a local sqlite store that does not exist (opening it would create an empty database)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    if uri.startswith("file:"):
        return Path(uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]).exists()
    return True


def _from_mlflow(source: str, uri: str, experiment: str) -> ResolvedWeights | None:
    """The weights of the MLflow run with id or name ``source``: its run folder's latest checkpoint, else its
    ``weights/`` artifact; None when no such run (or no store).

    Raises:
        hrnet_core.weights.CheckpointError: the run has no checkpoint left.
    """
    from . import mlflow_runs

    if not _mlflow_store_exists(uri):
        return None
    c = mlflow_runs.client(uri)
    run = None
    if re.fullmatch(r"[0-9a-f]{32}", source):
        try:
            run = c.get_run(source)
        except Exception:  # noqa: BLE001 - mlflow raises MlflowException for an unknown id
            run = None
    if run is None:
        run_id = mlflow_runs.find_run(uri, experiment, source)
        run = c.get_run(run_id) if run_id else None
    if run is None:
        return None
    tags = run.data.tags
    storage, name = tags.get("ray.storage_path"), tags.get("ray.run_name")
    if storage and name:
        found = _checkpoint_in(Path(storage) / name)
        if found is not None:
            return ResolvedWeights(found, f"MLflow run {run.info.run_id} (run folder {Path(storage) / name})")
    try:
        local = Path(c.download_artifacts(run.info.run_id, "weights"))
    except Exception:  # noqa: BLE001 - no such artifact
        local = None
    files = sorted(local.glob("*")) if local is not None and local.is_dir() else []
    if files:
        return ResolvedWeights(files[0], f"MLflow run {run.info.run_id} (artifact weights/{files[0].name})")
    from hrnet_core.weights import CheckpointError

    raise CheckpointError(f"MLflow run {run.info.run_id} ({name or '?'}) has no checkpoint left: neither the run "
                          f"folder {storage}/{name} nor a weights/ artifact")


def resolve_weights(source: str, storage_path: str | Path = "ray_results", mlflow_uri: str | None = None,
                    experiment: str = "hrnet") -> ResolvedWeights:
    """The weights file ``source`` names, tried in this order: a file; a folder (a checkpoint with ``model.pt``, or
    a run folder: its latest checkpoint); a run name under ``storage_path``; an MLflow run id or name (its
    ``ray.storage_path`` / ``ray.run_name`` tags give the run folder, else its ``weights/`` artifact). Used by
    ``hrnet export-backbone`` and ``hrnet predict``.

    Raises:
        hrnet_core.weights.CheckpointError: nothing found (the message says where it looked), or an MLflow run
            without checkpoints.
    """
    from hrnet_core.weights import CheckpointError
    from . import mlflow_runs

    p = Path(source)
    if p.is_file():
        return ResolvedWeights(p, "file")
    if p.is_dir():
        found = _checkpoint_in(p)
        if found is None:
            raise CheckpointError(f"folder {source!r} holds neither model.pt nor Ray Train checkpoints")
        return ResolvedWeights(found, "checkpoint folder")
    run_dir = Path(storage_path) / source
    if "/" not in source and run_dir.is_dir():
        found = _checkpoint_in(run_dir)
        if found is not None:
            return ResolvedWeights(found, f"run folder {run_dir}")
    uri = mlflow_runs.resolve_tracking_uri(mlflow_uri)
    found = _from_mlflow(source, uri, experiment)
    if found is None:
        raise CheckpointError(f"{source!r} is no weights file, checkpoint folder, run folder under "
                              f"{str(storage_path)!r} or MLflow run of {uri}")
    return found
