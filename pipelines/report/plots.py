"""The report's PNG plots (matplotlib, Agg): paper vs ours per table, accuracy vs GFLOPs, overall complexity."""

from __future__ import annotations

import re
from pathlib import Path

from hrnet_core.paper_tables import METRICS
from hrnet_core.paper_tables import complexity as cx

from .compare import RowResult
from .render import Results

_FAMILY_RE = re.compile(r"^(HRFormer|HRNetV2p|HRNetV2|HRNet|HigherHRNet)[-_ ]?(W?\d+|[TSB])?", re.I)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def make_plots(results: Results, out_dir: Path) -> dict[str, list[str]]:
    """Write PNGs: per table with a recipe or a run, paper vs ours (primary metric); per table with >= 2 HRNet-family
    rows having GFLOPs and the metric, accuracy vs GFLOPs (one line per family and input size, like the papers'
    figures; competitors as grey squares; our runs as red stars); overall, paper vs our GFLOPs of every checked row.
    Returns ``{"<paper>/<table>": [paths], "overall": [paths]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):  # plots of an earlier report (rows or tables may have changed)
        stale.unlink()
    plots: dict[str, list[str]] = {}
    for paper, table, rows in results:
        key = f"{paper.id}/{table.table}"
        metric = table.primary_metric
        if metric is None:
            continue
        mine = [r for r in rows if r.row.role != "competitor" and metric in r.row.metrics]
        reproducible = any(r.row.recipe or r.runs for r in rows)
        if mine and reproducible:
            plots.setdefault(key, []).append(str(_paper_vs_ours(plt, paper, table, metric, mine, out_dir)))
        pts = [r for r in rows if r.row.gflops is not None and metric in r.row.metrics]
        if sum(r.row.role != "competitor" for r in pts) >= 2:
            plots.setdefault(key, []).append(str(_accuracy_vs_gflops(plt, paper, table, metric, pts, out_dir)))
    checks = [r for _, _, rs in results for r in rs if r.complexity is not None and r.complexity.ours_gflops
              is not None and r.complexity.paper_gflops is not None]
    if checks:
        plots["overall"] = [str(_complexity(plt, checks, out_dir))]
    return plots


def _paper_vs_ours(plt, paper, table, metric: str, mine: list[RowResult], out_dir: Path) -> Path:
    """Bars per row: the paper's value, our best training run, the official weights in our evaluator."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(mine) + 1.6))
    labels = [r.row.row for r in mine]
    series = [("paper", "#7f8fa6", [r.row.metrics[metric] for r in mine])]
    for source, label, color in (("training", "ours (best run)", "#2e86de"),
                                 ("official-checkpoint", "official weights, our evaluator", "#10ac84")):
        vals = [r.runs[source].ours if source in r.runs and r.runs[source].metric == metric else None
                for r in mine]
        if any(v is not None for v in vals):
            series.append((label, color, vals))
    height = 0.8 / len(series)
    for i, (label, color, vals) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * height
        ax.barh([k + offset for k, v in enumerate(vals) if v is not None], [v for v in vals if v is not None],
                height=height, label=label, color=color)
    ax.set_yticks(list(range(len(mine))))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)")
    lo = min(v for _, _, vals in series for v in vals if v is not None)
    ax.set_xlim(left=max(0.0, lo - 0.25 * max(abs(lo), 1.0)))
    ax.set_title(f"{paper.id} Table {table.table}: paper vs ours", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out_dir / f"{_slug(paper.id)}_T{_slug(table.table)}_paper_vs_ours.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _accuracy_vs_gflops(plt, paper, table, metric: str, pts: list[RowResult], out_dir: Path) -> Path:
    """The papers' accuracy vs GFLOPs figure: one line per family and input size, competitors as grey squares,
    our runs as red stars."""
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.6))
    groups: dict[tuple[str, str], list[RowResult]] = {}
    for r in pts:
        m = _FAMILY_RE.match(r.row.backbone or "")
        fam = m.group(1) if m and r.row.role != "competitor" else "other methods"
        groups.setdefault((fam, r.row.input_size or ""), []).append(r)
    for (fam, size), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.row.gflops)
        style = "o-" if fam != "other methods" else "s"
        ax.plot([r.row.gflops for r in rs], [r.row.metrics[metric] for r in rs], style, alpha=0.85,
                label=f"{fam} {size}".strip() + " (paper)", color=None if fam != "other methods" else "#999")
        for r in rs:
            ax.annotate(r.row.backbone or r.row.method, (r.row.gflops, r.row.metrics[metric]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ours = [(r.complexity.ours_gflops, r.runs["training"].ours) for r in pts
            if "training" in r.runs and r.runs["training"].ours is not None and r.complexity is not None
            and r.complexity.ours_gflops is not None and r.runs["training"].metric == metric]
    if ours:
        ax.plot([g for g, _ in ours], [v for _, v in ours], "r*", markersize=12, label="ours (best run)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("GFLOPs (row's convention, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{paper.id} Table {table.table}: {metric} vs GFLOPs", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{_slug(paper.id)}_T{_slug(table.table)}_accuracy_vs_gflops.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _complexity(plt, checks: list[RowResult], out_dir: Path) -> Path:
    """Paper vs our GFLOPs of every checked row, coloured by the complexity status."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    colors = {"reproduced": "#10ac84", "not comparable": "#8395a7", "convention unknown": "#feca57",
              "params differ": "#ff9f43", "GFLOPs differ": "#ee5253", "params and GFLOPs differ": "#b71540"}
    for status in sorted({r.complexity.status for r in checks}):
        sel = [r for r in checks if r.complexity.status == status]
        ax.scatter([r.complexity.paper_gflops for r in sel], [r.complexity.ours_gflops for r in sel],
                   label=status, color=colors.get(status, "#ee5253"), s=22)
    lim = [min(r.complexity.paper_gflops for r in checks) * 0.7, max(r.complexity.paper_gflops for r in checks) * 1.4]
    ax.plot(lim, lim, "k-", lw=0.8, label="ours = paper")
    ax.fill_between(lim, [v * (1 - cx.GFLOPS_TOLERANCE) for v in lim], [v * (1 + cx.GFLOPS_TOLERANCE) for v in lim],
                    color="k", alpha=0.1, label=f"±{cx.GFLOPS_TOLERANCE:.0%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("paper GFLOPs")
    ax.set_ylabel("our GFLOPs (row's convention)")
    ax.set_title("Complexity: paper vs our models", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out_dir / "complexity_paper_vs_ours.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
