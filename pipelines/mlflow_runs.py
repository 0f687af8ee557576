"""MLflow helpers: one run per training job, created by the driver and written to by run id from anywhere.

Conventions (docs/INTERFACES.md, "pipelines"):

- tracking URI: ``sqlite:///mlflow.db`` by default, made absolute against the working directory of the command that
  resolves it (Ray workers change directory, so only absolute URIs travel); artifacts go to ``mlartifacts/`` beside
  the database (file store);
- tags: ``recipe``, ``task``, ``paper.id``, ``paper.table``, ``paper.row``, ``git_commit``, ``dataset_fingerprint``,
  ``source`` (``training`` | ``official-checkpoint``), ``ray.run_name``, ``ray.cluster_cpus`` / ``ray.cluster_gpus``,
  ``ray.num_workers``, and on every training and evaluation run the environment that decides its numbers
  (:func:`environment_tags`: ``env.cpu_model``, ``env.cpu_isa``, ``env.torch``, ``env.onednn``, ``env.cuda``,
  ``env.cudnn``, ``env.gpu``, ...); a failed training run has ``failure`` (its one-line cause);
- params: the resolved recipe as flat dotted keys (``train.optimizer.lr``);
- metrics: per-epoch ``loss``, ``lr``, ``epoch_time_s``, ``samples_per_s`` (step = epoch), evaluation metrics under
  the papers' names (``AP``, ``AP50``, ..., ``PCKh``), and ``paper/<m>``, ``delta/<m>`` from
  :func:`log_paper_comparison`.

All functions take explicit ``tracking_uri`` / ``run_id`` (no global active run), so rank 0 of a Ray Train job, the
evaluation stage and a Tune trial can all log into the same run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "hrnet"
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 4000  # well under MLflow's tag value limit (8000)


def resolve_tracking_uri(uri: str | None = None, base: str | Path | None = None) -> str:
    """Absolute tracking URI: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` by default.

    Relative ``sqlite:///<path>`` and plain paths / ``file:`` URIs are made absolute against ``base`` (default: the
    current directory); server URIs (``http://...``, ``databricks``) are returned unchanged.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    base_dir = Path(base) if base is not None else Path.cwd()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            path = str((base_dir / path).resolve())
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return "sqlite:///" + path
    if uri.startswith("file:"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
        return Path(path if path.startswith("/") else base_dir / path).resolve().as_uri()
    if "://" not in uri and uri != "databricks":
        return Path(base_dir / uri).resolve().as_uri()
    return uri


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact location for new experiments: ``mlartifacts/`` beside a sqlite database (None for servers)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def client(tracking_uri: str):
    """An ``mlflow.MlflowClient`` for ``tracking_uri`` (quiet about alembic migrations)."""
    import logging

    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str = DEFAULT_EXPERIMENT) -> str:
    """Id of experiment ``name``, created (with an absolute artifact location) when missing."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root(tracking_uri))
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_run(tracking_uri: str, experiment: str, run_name: str) -> str | None:
    """Id of the newest run of ``experiment`` tagged ``ray.run_name = run_name`` (None if there is none)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    safe = run_name.replace("'", "")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`ray.run_name` = '{safe}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def create_run(tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, Any] | None = None,
               parent_run_id: str | None = None) -> str:
    """Create a run (status RUNNING) and return its id. ``parent_run_id`` nests it (sweeps)."""
    all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
    all_tags["ray.run_name"] = run_name
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client(tracking_uri).create_run(experiment_id(tracking_uri, experiment), run_name=run_name, tags=all_tags)
    return run.info.run_id


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set string tags (``None`` values skipped)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
    if items:
        client(tracking_uri).log_batch(run_id, tags=items)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any], on_change: str = "error") -> list[str]:
    """Log params (values stringified, truncated to MLflow's limit); returns the keys whose value changed.

    Re-logging an identical value is a no-op (resumed runs). MLflow params are immutable: a different value raises
    ``MlflowException`` with ``on_change="error"``; with ``on_change="tag"`` it is recorded as the tag
    ``resumed.changed.<key> = "<old> -> <new>"`` instead (a resumed run whose recipe was edited, e.g. more epochs).
    """
    from mlflow.entities import Param, RunTag

    c = client(tracking_uri)
    existing = c.get_run(run_id).data.params
    items, tags, changed = [], [], []
    for k, v in params.items():
        s = ("null" if v is None else str(v))[:PARAM_VALUE_MAX]
        if k in existing:
            if existing[k] != s:
                changed.append(k)
                if on_change == "tag":
                    tags.append(RunTag(f"resumed.changed.{k}", f"{existing[k]} -> {s}"[:PARAM_VALUE_MAX]))
                else:
                    items.append(Param(k, s))  # MLflow raises, naming the key
            continue
        items.append(Param(k, s))
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])
    if tags:
        c.log_batch(run_id, tags=tags)
    return changed


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numeric ``metrics`` at ``step`` (values that are not numbers, e.g. a dataset name, are skipped).

    A non-finite value is logged too, never dropped: MLflow keeps NaN and stores +-inf as +-1.797e308, so the
    run also gets the tag ``nonfinite_metrics`` (``key@step=value``, comma-separated, accumulated over calls) and
    one warning line on stderr names them. (A non-finite training loss never gets here: the engine stops the run
    FAILED first, :func:`hrnet_core.engine.check_finite_loss`.)
    """
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items, bad = [], []
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        items.append(Metric(k, f, ts, int(step or 0)))
        if not math.isfinite(f):
            bad.append(f"{k}@{int(step or 0)}={f}")
    c = client(tracking_uri)
    for i in range(0, len(items), 500):
        c.log_batch(run_id, metrics=items[i:i + 500])
    if bad:
        _flag_nonfinite(c, run_id, bad)


def _flag_nonfinite(c, run_id: str, bad: list[str]) -> None:
    """Tag ``nonfinite_metrics`` of ``run_id`` (joined with what an earlier call flagged) and warn on stderr."""
    old = c.get_run(run_id).data.tags.get("nonfinite_metrics")
    value = ", ".join(([old] if old else []) + bad)
    c.set_tag(run_id, "nonfinite_metrics", value[:TAG_VALUE_MAX])
    print(f"warning: non-finite metric(s) logged to MLflow run {run_id}: {', '.join(bad)}", file=sys.stderr)


def logged_steps(tracking_uri: str, run_id: str, key: str) -> set[int]:
    """Steps at which metric ``key`` of run ``run_id`` has a value."""
    return {int(m.step) for m in client(tracking_uri).get_metric_history(run_id, key)}


def log_metrics_once(tracking_uri: str, run_id: str, metrics: Mapping[str, Any], step: int,
                     sentinel: str = "epoch") -> dict[str, Any]:
    """:func:`log_metrics` of the keys that have no value at ``step`` yet (a rerun of the same step -- a worker
    restarted after it logged but before its checkpoint was kept -- adds nothing). Returns what was logged.

    ``sentinel``: a key logged in the same batch as the others (one ``log_batch`` request, which the stores apply
    as a whole): while it has no value at ``step``, nothing of the step was logged and the per-key look-ups are
    skipped (one query per epoch instead of one per metric).
    """
    if sentinel in metrics and int(step) not in logged_steps(tracking_uri, run_id, sentinel):
        todo = dict(metrics)
    else:
        todo = {k: v for k, v in metrics.items() if int(step) not in logged_steps(tracking_uri, run_id, k)}
    log_metrics(tracking_uri, run_id, todo, step=step)
    return todo


#: x86 vector ISA levels that change which oneDNN / MKL kernels run (and with them the last bits of a result), in
#: ``/proc/cpuinfo`` flag names, widest first
ISA_LEVELS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_fp16", "avx512_bf16", "avx512_vnni", "avx512bw",
              "avx512f", "avx_vnni", "avx2", "fma", "avx", "sse4_2", "asimd", "sve")


def _cpu_info() -> tuple[str, str]:
    """``(model name, ISA levels present)`` from ``/proc/cpuinfo`` (Linux), else ``platform``'s processor name."""
    import platform

    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = " ".join(level for level in ISA_LEVELS if level in flags)
    return model or platform.processor() or platform.machine() or "unknown", isa or "unknown"


def environment_tags(device: Any = None) -> dict[str, str]:
    """The hardware and software that decide a run's numbers, as MLflow tags (``env.*``).

    The same recipe, seed and worker count give bit-identical losses on the same hardware and software; other CPU
    vector units (AVX-512 vs AVX2: other oneDNN kernels), library versions or GPUs change the last bits and, over a
    training, the figures. Tags: ``env.cpu_model``, ``env.cpu_isa`` (:data:`ISA_LEVELS` present, widest first),
    ``env.onednn_max_cpu_isa`` (``$ONEDNN_MAX_CPU_ISA`` or ``default``), ``env.cpu_count``, ``env.torch``,
    ``env.onednn`` (from ``torch.__config__.show()``, ``none`` without it), ``env.mkldnn_enabled``, ``env.cuda``,
    ``env.cudnn``, ``env.gpu`` (``device``'s name, else GPU 0's; ``none`` without CUDA), ``env.python``,
    ``env.hostname``.
    """
    import platform
    import re
    import socket

    import torch

    model, isa = _cpu_info()
    found = re.search(r"oneDNN v(\S+)", torch.__config__.show())
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    gpu = "none"
    if torch.cuda.is_available():
        dev = device if device is not None and getattr(device, "type", "cuda") == "cuda" else 0
        gpu = torch.cuda.get_device_name(dev)
    return {
        "env.cpu_model": model,
        "env.cpu_isa": isa,
        "env.onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "env.cpu_count": str(os.cpu_count()),
        "env.torch": torch.__version__,
        "env.onednn": found.group(1) if found else "none",
        "env.mkldnn_enabled": str(bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)).lower(),
        "env.cuda": str(torch.version.cuda or "none"),
        "env.cudnn": str(cudnn or "none"),
        "env.gpu": gpu,
        "env.python": platform.python_version(),
        "env.hostname": socket.gethostname(),
    }


def merge_environment_tags(per_rank: list[Mapping[str, str]]) -> dict[str, str]:
    """One set of ``env.*`` tags for several workers (rank order): a value every rank shares as it is, a differing
    one as ``"rank0: <v0>; rank1: <v1>; ..."`` (workers on machines of different kinds)."""
    keys = list(dict.fromkeys(k for tags in per_rank for k in tags))
    out = {}
    for k in keys:
        values = [str(tags.get(k, "")) for tags in per_rank]
        out[k] = values[0] if len(set(values)) == 1 else "; ".join(f"rank{r}: {v}" for r, v in enumerate(values))
    return out


def log_artifacts(tracking_uri: str, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
    """Upload files or directories (directories recursively) under ``artifact_path``."""
    c = client(tracking_uri)
    for p in paths:
        p = Path(p)
        if p.is_dir():
            c.log_artifacts(run_id, str(p), artifact_path=artifact_path)
        elif p.is_file():
            c.log_artifact(run_id, str(p), artifact_path=artifact_path)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED", only_if_running: bool = False) -> None:
    """Mark the run FINISHED / FAILED / KILLED. ``only_if_running``: leave a run that something else (a sweep's trial
    bookkeeping, which knows that Tune stopped the trial on purpose) has already ended as it is."""
    c = client(tracking_uri)
    if only_if_running and c.get_run(run_id).info.status != "RUNNING":
        return
    c.set_terminated(run_id, status=status)


def git_commit(repo: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of ``repo`` (default: this package's checkout), ``+dirty`` when the tree has changes;
    None outside a git checkout or before the first commit."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def recipe_tags(recipe) -> dict[str, Any]:
    """Tags naming the recipe and its paper-table row."""
    paper = recipe.paper
    return {
        "recipe": recipe.name,
        "profile": recipe.profile,
        "task": recipe.task,
        "paper.id": paper.id if paper else None,
        "paper.table": paper.table if paper else None,
        "paper.row": paper.row if paper else None,
    }


def log_paper_comparison(run_id: str, recipe_name: str, metrics: Mapping[str, float],
                         tracking_uri: str | None = None,
                         paper_key: tuple[str, str, str] | Mapping[str, str] | None = None,
                         paper_values: Mapping[str, float] | None = None,
                         tolerances: Mapping[str, float] | None = None, *,
                         paper_ref: Mapping[str, str] | None = None) -> dict[str, float]:
    """Log the paper's values next to ours in MLflow run ``run_id``: ``paper/<m>`` for every paper value,
    ``delta/<m>`` (ours - paper) for every one of them measured in ``metrics``, and the tags ``paper.id``,
    ``paper.table``, ``paper.row``, ``paper.metric``, ``paper.status`` (``reproduced`` / ``below``).

    The numbers are :func:`pipelines.paper_values.paper_comparison` of the run's tags: the explicit ``paper_key``
    (or its older spelling ``paper_ref``) / ``paper_values``, else the row or values the run's own ``paper.*`` tags
    name (a sweep trial), else the recipe's row (its ``paper`` block, else its primary row in
    ``hrnet_core.paper_tables``). ``tolerances``: per-metric overrides for ``paper.status``.

    Returns:
        The logged metrics (``{}`` when there are no paper values for the run: nothing is logged then).

    Raises:
        KeyError: an explicit ``paper_key`` names an unknown row and no ``paper_values`` are given.
    """
    # the comparison logic (pure, one floor down: pipelines.paper_values); imported here so that training workers
    # that never compare do not load the paper tables
    from .paper_values import paper_comparison

    uri = resolve_tracking_uri(tracking_uri)
    out, tags = paper_comparison(recipe_name, metrics, run_tags=client(uri).get_run(run_id).data.tags,
                                 paper_key=paper_key if paper_key is not None else paper_ref,
                                 paper_values=paper_values, tolerances=tolerances)
    if out:
        log_metrics(uri, run_id, out)
    if tags:
        set_tags(uri, run_id, tags)
    return out


def log_epoch(uri: str, run_id: str, metrics: dict[str, float], epoch: int) -> dict[str, float]:
    """Log one training epoch's metrics at step ``epoch`` (1-based) once: a worker restarted between this log and
    its checkpoint report retrains the epoch and logs it again, which adds nothing (:func:`log_metrics_once`).
    Returns what was logged."""
    return log_metrics_once(uri, run_id, metrics, step=epoch)


def close_training_run(uri: str, run_id: str, recipe_name: str, metrics: dict[str, float], step: int,
                       profile: str | None = None) -> dict[str, float]:
    """End a finished training run: log ``train_time_s`` / ``driver_setup_s`` and the paper comparison of the final
    metrics (``paper/<m>``, ``delta/<m>`` and ``paper.*`` tags, :func:`log_paper_comparison`, as ``hrnet evaluate``
    does; a sweep trial is compared with its own row), tag ``paper.comparable`` (no profile), and mark it FINISHED.

    Args:
        metrics: the final metrics (the last epoch's, with its validation metrics in the papers' names).
        step: the step of the final metrics (epochs trained).

    Returns:
        The ``paper/`` and ``delta/`` metrics logged (``{}`` without paper values).
    """
    log_metrics(uri, run_id, {k: metrics[k] for k in ("train_time_s", "driver_setup_s") if k in metrics}, step=step)
    set_tags(uri, run_id, {"paper.comparable": str(profile is None).lower()})
    logged = log_paper_comparison(run_id, recipe_name, metrics, tracking_uri=uri)
    end_run(uri, run_id, "FINISHED")
    return logged


def tag_failure(uri: str, run_id: str, kind: str, message: str) -> None:
    """Tag a still-running run with ``failure`` = ``"<kind>: <message>"`` (at most 4000 characters); errors of the
    bookkeeping itself are swallowed (they must not hide the training's own error)."""
    try:
        if client(uri).get_run(run_id).info.status != "RUNNING":
            return
        set_tags(uri, run_id, {"failure": f"{kind}: {message}"[:4000]})
    except Exception:  # noqa: BLE001 - bookkeeping must not hide the training's own error
        pass
