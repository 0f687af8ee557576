"""Sweep results table and plot, with the paper's values beside ours (``hrnet sweep report <name>``).

Rows come from MLflow: one per child run of the sweep's parent run. For each trial the table shows the Tune outcome
(``TERMINATED`` / ``ERROR`` / unfinished, and whether ASHA stopped it early), our metric (the child run's ``<metric>``,
e.g. ``AP``, as logged by the training run; else the last value Tune received, ``sweep/<metric>``), the paper's value
for the variant (``paper/<metric>``, copied from the sweep file, which quotes the paper table or figure) and the
difference, and the model size: parameters and "GFLOPs" in the pose paper's convention (MACs / 2**30; FACTS.md
"Counting conventions"), plus MACs / 1e9.

Outputs: ``<stem>.md`` (Markdown table with the sweep's paper reference), ``<stem>.csv`` and ``<stem>.png`` (metric vs
the sweep's ``report.x``: variant, GFLOPs, GMACs, params or a swept recipe key; ours and the paper's points).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import mlflow_sweeps
from .spec import SweepConfigError, SweepPlan, SweepSpec

COLUMNS = ["variant", "trial", "status", "early_stopped", "iterations", "ours", "paper", "delta", "params_m",
           "gflops", "gmacs", "run_id"]


def trial_complexity(plan: SweepPlan, keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """``{trial_key: {"params", "gmacs", "gflops"}}`` of each trial's model at its input size (``keys``: a subset).

    ``gflops`` is MACs / 2**30, the "GFLOPs" printed in the pose paper's tables; ``gmacs`` is MACs / 1e9
    (:mod:`hrnet_core.models.complexity`). Trials sharing a network and input size are counted once. The network is
    the zoo entry ``model.name`` with the overrides it accepts: for a detection recipe that is the HRNetV2p backbone
    + neck (the RPN / RoI heads and ``model.detector`` / ``num_classes`` are the task's, not the zoo's).
    """
    from hrnet_core.models import build_model, count_macs, count_params
    from hrnet_core.models.zoo import model_overrides
    from hrnet_core.recipes import load_recipe

    out: dict[str, dict[str, float]] = {}
    cache: dict[str, dict[str, float]] = {}
    for t in plan.trials:
        if keys is not None and t.key not in keys:
            continue
        recipe = load_recipe(plan.spec.recipe, overrides=t.overrides, profile=plan.profile)
        accepted = model_overrides(recipe.model.name)
        kwargs = {k: v for k, v in recipe.model.build_kwargs().items() if k in accepted}
        w, h = recipe.data.input_size
        sig = json.dumps([recipe.model.name, kwargs, w, h], sort_keys=True, default=str)
        if sig not in cache:
            model = build_model(recipe.model.name, **kwargs)
            macs = count_macs(model, [1, 3, h, w])
            cache[sig] = {"params": float(count_params(model)), "gmacs": macs / 1e9, "gflops": macs / 2**30}
        out[t.key] = dict(cache[sig])
    return out


def build_rows(plan: SweepPlan, *, mlflow_uri: str, parent_run_id: str,
               complexity: Mapping[str, Mapping[str, float]] | None = None,
               statuses: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per trial of ``plan`` (columns :data:`COLUMNS` plus ``override.<key>`` for the swept keys).

    Our value is the trial's MLflow run's ``<metric>`` (logged by the training run: the last validation), else the
    last value Tune received (``sweep/<metric>``). The paper value comes from the sweep file. A trial without a run
    (never started) gets status ``PENDING`` or the Tune status from ``statuses``. The ``override.<key>`` columns
    are those of the sweep run reported (its ``sweep/plan.json``: the overrides each trial ran with, the sweep
    file's shared ``overrides`` left out), not the reporting command's ``--override`` values; ``plan``'s own only
    where the run has no plan artifact.
    """
    metric = plan.spec.metric
    complexity = complexity if complexity is not None else trial_complexity(plan)
    children: dict[str, Any] = {}
    for run in mlflow_sweeps.child_runs(mlflow_uri, parent_run_id):  # newest last: keep the newest per trial
        children[run.data.tags.get("sweep.trial", "")] = run
    ran = run_trial_overrides(mlflow_uri, parent_run_id)
    trial_overrides = {t.key: (ran.get(t.key, {}) if ran is not None else t.overrides) for t in plan.trials}
    swept = sorted({k for o in trial_overrides.values() for k in o} - set(plan.spec.overrides))
    rows = []
    for t in plan.trials:
        run = children.get(t.key)
        m = run.data.metrics if run is not None else {}
        tags = run.data.tags if run is not None else {}
        ours = m.get(metric, m.get(f"sweep/{metric}"))
        paper = t.paper.get(metric)
        iters = tags.get("sweep.iterations")
        size = complexity.get(t.key, {})
        status = tags.get("sweep.status") or (statuses or {}).get(t.key) or "PENDING"
        row = {
            "variant": t.variant,
            "trial": t.key,
            "status": status,
            "early_stopped": tags.get("sweep.early_stopped") == "true",
            "iterations": int(float(iters)) if iters not in (None, "", "None") else None,
            "ours": ours,
            "paper": paper,
            # smoke numbers are not comparable to the paper: no difference is shown for them
            "delta": (ours - paper) if ours is not None and paper is not None and not plan.smoke else None,
            "params_m": size["params"] / 1e6 if "params" in size else None,
            "gflops": size.get("gflops"),
            "gmacs": size.get("gmacs"),
            "run_id": run.info.run_id if run is not None else None,
        }
        for k in swept:
            row[f"override.{k}"] = trial_overrides[t.key].get(k)
        rows.append(row)
    return rows


def run_trial_overrides(mlflow_uri: str, parent_run_id: str) -> dict[str, dict[str, Any]] | None:
    """``{trial_key: overrides}`` of a sweep run as it ran: the ``sweep/plan.json`` artifact of its parent run
    (written by ``sweeps.mlflow_sweeps.ensure_parent_run``); ``None`` when the run has none."""
    import tempfile

    from mlflow.tracking import MlflowClient

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = MlflowClient(mlflow_uri).download_artifacts(parent_run_id, "sweep/plan.json", tmp)
            plan = json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - no artifact (older runs) or an unreachable artifact store
        return None
    return {t["key"]: dict(t.get("overrides") or {}) for t in plan.get("trials", [])}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:+.{digits}f}" if digits < 0 else f"{v:.{digits}f}"
    return str(v)


def markdown_table(spec: SweepSpec, rows: Sequence[Mapping[str, Any]], *, smoke: bool = False) -> str:
    """The results as a Markdown table headed by the paper reference (what the sweep reproduces)."""
    metric = spec.metric
    lines = [f"# {spec.report.title or spec.name}", ""]
    lines.append(f"Sweep `{spec.name}`{' (smoke)' if smoke else ''}: recipe `{spec.recipe}`, metric {metric} "
                 f"({spec.mode}); paper {spec.paper.id} {spec.paper.label}.")
    if spec.paper.note:
        lines += ["", f"Paper: {spec.paper.note.strip()}"]
    if smoke:
        lines += ["", "Smoke run: a tiny network on generated data for a few steps; its numbers are not comparable to "
                      "the paper's (the paper column is kept to show which row each trial stands for)."]
    lines += ["", f"| Variant | Trial | Status | Iters | Ours {metric} | Paper {metric} | Δ | Params (M) | "
                  f"GFLOPs (MACs/2^30) | GMACs |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        status = r["status"] + (" (early-stopped)" if r.get("early_stopped") else "")
        lines.append("| " + " | ".join([
            r["variant"], f"`{r['trial']}`", status, _fmt(r.get("iterations")), _fmt(r.get("ours")),
            _fmt(r.get("paper"), 1), "—" if r.get("delta") is None else f"{r['delta']:+.2f}",
            _fmt(r.get("params_m")), _fmt(r.get("gflops")), _fmt(r.get("gmacs")),
        ]) + " |")
    return "\n".join(lines) + "\n"


def _x_value(spec: SweepSpec, row: Mapping[str, Any]) -> Any:
    x = spec.report.x
    if x == "variant":
        return row["variant"]
    if x == "params":
        return row.get("params_m")
    if x in {"gflops", "gmacs"}:
        return row.get(x)
    return row.get(f"override.{x}")


def plot_metric(spec: SweepSpec, rows: Sequence[Mapping[str, Any]], path: str | Path, *, smoke: bool = False) -> Path:
    """Metric vs ``report.x`` (ours: filled circles, early-stopped trials hollow; paper: crosses, at our trial's x,
    i.e. the same network; not drawn for smoke runs, whose numbers are not comparable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [_x_value(spec, r) for r in rows]
    categorical = spec.report.x == "variant" or any(x is None or not isinstance(x, (int, float)) for x in xs)
    if categorical:
        labels = list(dict.fromkeys(str(r["variant"]) if spec.report.x == "variant" else str(x)
                                    for r, x in zip(rows, xs)))
        pos = [labels.index(str(r["variant"]) if spec.report.x == "variant" else str(x)) for r, x in zip(rows, xs)]
    else:
        pos = [float(x) for x in xs]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for p, r in zip(pos, rows):
        if r.get("ours") is not None:
            ax.scatter([p], [r["ours"]], s=40, color="C0", facecolors="none" if r.get("early_stopped") else "C0",
                       zorder=3)
            ax.annotate(r["variant"], (p, r["ours"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if r.get("paper") is not None and not smoke:
            ax.scatter([p], [r["paper"]], marker="x", s=50, color="C3", zorder=3)
    ax.scatter([], [], color="C0", label="ours" + (" (smoke)" if smoke else ""))
    if not smoke:  # smoke numbers are not comparable to the paper's
        ax.scatter([], [], marker="x", color="C3", label=f"paper ({spec.paper.label})")
    if categorical:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
    xlabel = {"variant": "variant", "gflops": "GFLOPs (MACs / 2^30)", "gmacs": "GMACs (MACs / 1e9)",
              "params": "params (M)"}.get(spec.report.x, spec.report.x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(spec.metric)
    ax.set_title((spec.report.title or spec.name) + (" [smoke]" if smoke else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(plan: SweepPlan, rows: Sequence[Mapping[str, Any]], *, out_dir: str | Path, stem: str,
                 plot: bool = True) -> list[str]:
    """Write ``<stem>.md``, ``<stem>.csv`` (and ``<stem>.png``) into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    md.write_text(markdown_table(plan.spec, rows, smoke=plan.smoke))
    keys = list(COLUMNS) + sorted({k for r in rows for k in r if k not in COLUMNS})
    csv_path = out / f"{stem}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    paths = [str(md), str(csv_path)]
    if plot:
        paths.append(str(plot_metric(plan.spec, rows, out / f"{stem}.png", smoke=plan.smoke)))
    return paths


def report_sweep(plan: SweepPlan, *, mlflow_uri: str, experiment: str, out_dir: str | Path,
                 storage_path: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and written files for the newest run of ``plan`` found in MLflow.

    Raises:
        SweepConfigError: no parent run of this sweep in ``experiment`` at ``mlflow_uri``.
    """
    import os

    from pipelines.runs import pinned_storage_path

    if storage_path:
        storage_path = pinned_storage_path(storage_path)
    sweep_path = os.path.join(storage_path, plan.experiment_name) if storage_path else None
    parent = mlflow_sweeps.find_parent_run(mlflow_uri, experiment, plan.experiment_name, sweep_path)
    if parent is None:
        raise SweepConfigError(
            f"no MLflow run of sweep {plan.experiment_name!r} in experiment {experiment!r} at {mlflow_uri}"
            f"{f' for {sweep_path}' if sweep_path else ''}; run `hrnet sweep run {plan.spec.name}"
            f"{' --smoke' if plan.smoke else ''}` first")
    rows = build_rows(plan, mlflow_uri=mlflow_uri, parent_run_id=parent.info.run_id)
    paths = write_report(plan, rows, out_dir=out_dir, stem=plan.experiment_name, plot=True)
    return rows, paths
