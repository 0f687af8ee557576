"""The report as Markdown and as one static HTML page: a table per paper table, one line per row."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hrnet_core.paper_tables import GFLOPS_CONVENTIONS, PARAMS_UNITS, Paper, PaperRow, PaperTable
from hrnet_core.paper_tables import complexity as cx

from .compare import DEFAULT_TOLERANCES, RowResult

#: A comparison: every table of every paper with its row results (:func:`pipelines.report.compare.compare`).
Results = Sequence[tuple[Paper, PaperTable, Sequence[RowResult]]]


def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _fmt_signed(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def _nd(value: float) -> int:
    return max(1, len(repr(float(value)).split(".")[1].rstrip("0")))


def _paper_metrics_text(row: PaperRow) -> str:
    return ", ".join(f"{k} {v:.{_nd(v)}f}" for k, v in row.metrics.items()) or "-"


def _complexity_cells(res: RowResult) -> tuple[str, str, str]:
    c = res.complexity
    row = res.row
    if c is None or c.status == "none":
        return "-", "-", "-"
    unit = {"M": "M", "Mi": "Mi"}.get(row.params_unit or "M", "M")
    p = f"{_fmt(c.paper_params, _nd(c.paper_params) if c.paper_params else 1)} / " \
        f"{_fmt(c.ours_params, 2)}{unit if c.ours_params is not None else ''}"
    g = f"{_fmt(c.paper_gflops, _nd(c.paper_gflops) if c.paper_gflops else 1)} / {_fmt(c.ours_gflops, 2)}"
    if c.gflops_rel_diff is not None:
        g += f" ({c.gflops_rel_diff:+.1%})"
    if row.gflops_convention:
        g += f" [{row.gflops_convention}]"
    status = c.status + (f": {c.detail}" if c.detail else "")
    return p, g, status


def row_cells(res: RowResult, ui: str) -> dict[str, str]:
    """The text of every column of one row result (also the report's JSON), with run ids and UI links."""
    row = res.row
    d: dict[str, str] = {
        "row": row.row, "method": row.method, "backbone": row.backbone or "-", "role": row.role,
        "dataset": f"{row.dataset} {row.split}", "input": row.input_size or "-",
        "metric": res.metric or "-",
        "paper_value": "-" if res.metric is None else f"{row.metrics[res.metric]:.{_nd(row.metrics[res.metric])}f}",
        "paper_all": _paper_metrics_text(row),
        "recipe": row.recipe or (row.recipe_status or "-"),
    }
    for source, prefix in (("training", "ours"), ("official-checkpoint", "official")):
        rr = res.runs.get(source)
        d[prefix] = "-" if rr is None or rr.ours is None else f"{rr.ours:.2f}"
        d[f"{prefix}_delta"] = "-" if rr is None else _fmt_signed(rr.delta)
        d[f"{prefix}_run"] = "" if rr is None else rr.run.run_id
        d[f"{prefix}_link"] = "" if rr is None else rr.run.link(ui)
        d[f"{prefix}_profile"] = "" if rr is None or not rr.run.profile else rr.run.profile
    d["status"] = res.status
    d["params"], d["gflops"], d["complexity"] = _complexity_cells(res)
    notes = [row.note] if row.note else []
    if row.model_status and (res.complexity is None or res.complexity.status != "no model"):
        notes.append(row.model_status)
    d["note"] = " ".join(notes)
    d["sources"] = "; ".join(row.sources)
    return d


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


COLUMNS = [("row", "Row"), ("method", "Method"), ("backbone", "Backbone"), ("role", "Role"), ("dataset", "Data"),
           ("input", "Input"), ("metric", "Metric"), ("paper_value", "Paper"), ("ours", "Ours (training)"),
           ("ours_delta", "Δ"), ("official", "Official ckpt"), ("official_delta", "Δ official"),
           ("status", "Status"), ("run", "MLflow run"), ("params", "Params paper / ours"),
           ("gflops", "GFLOPs paper / ours [convention]"), ("complexity", "Complexity"),
           ("paper_all", "All paper metrics"), ("recipe", "Recipe"), ("note", "Notes")]


def _header_lines(meta: Mapping[str, Any], counts: Mapping[str, int], tolerances: Mapping[str, float]) -> list[str]:
    tol = ", ".join(f"{k} ±{v}" for k, v in {**DEFAULT_TOLERANCES, **tolerances}.items())
    return [
        f"Generated {meta['generated']} from MLflow `{meta['tracking_uri']}` "
        f"({meta['runs']} tagged runs); {counts['rows_total']} paper rows "
        f"({counts['rows_hrnet_family']} HRNet-family, {counts['rows_with_recipe']} with a recipe).",
        "",
        f"**Accuracy**: paper value of the table's primary metric vs our best run of the row (tags `paper.id/table/row` "
        f"or the row's `recipe`); Δ = ours - paper. *reproduced* = at most the tolerance worse than the paper "
        f"(or better); tolerances in metric units (percent points): {tol}. *not run* = no run yet. A run made with a "
        f"profile (e.g. `smoke`: tiny model on synthetic data) is marked as such and is not a reproduction.",
        "",
        "**Complexity**: our model's trainable parameters and MACs (FlopCounterMode / 2, cached in "
        "`hrnet_core/paper_tables/complexity_cache.yaml`) in each row's unit and convention; *reproduced* = params "
        f"round to the printed value and GFLOPs within {cx.GFLOPS_TOLERANCE:.0%}. Conventions: "
        + "; ".join(f"`{k}` = {v}" for k, v in GFLOPS_CONVENTIONS.items())
        + ". Params units: " + ", ".join(f"`{k}` = {v:g}" for k, v in PARAMS_UNITS.items()) + ".",
        "",
        "**Summary**: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + ".",
    ]


def render_markdown(results: Results, meta: Mapping[str, Any], counts: Mapping[str, int],
                    plots: Mapping[str, list[str]], tolerances: Mapping[str, float], ui: str, base: Path) -> str:
    """The report as Markdown: header (sources, rules, summary), then per paper and table the rows and the plots
    (``plots``: ``{"<paper>/<table>": [png], "overall": [png]}``, linked relative to ``base``)."""
    lines = ["# Paper vs reproduction", ""] + _header_lines(meta, counts, tolerances) + [""]
    current = None
    for paper, table, rows in results:
        if paper.id != current:
            current = paper.id
            lines += [f"## {paper.title} (`{paper.id}`)", "", f"{paper.venue}; transcribed from `{paper.text_file}`."]
            if paper.note:
                lines += ["", f"> {paper.note}"]
            lines.append("")
        lines += [f"### {paper.id} Table {table.table}", "", f"*{_md_escape(table.caption)}*", ""]
        if table.note:
            lines += [f"> {_md_escape(table.note)}", ""]
        lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for res in rows:
            d = row_cells(res, ui)
            cells = []
            for key, _ in COLUMNS:
                if key == "run":
                    links = [f"[{d[p + '_run'][:8]}]({d[p + '_link']})" for p in ("ours", "official") if d[p + "_run"]]
                    cells.append(" ".join(links) or "-")
                elif key in ("ours", "official") and d[f"{key}_profile"]:
                    cells.append(f"{d[key]} ({d[key + '_profile']})")
                else:
                    cells.append(_md_escape(d[key]) or "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for png in plots.get(f"{paper.id}/{table.table}", []):
            lines += [f"![{paper.id} Table {table.table}]({Path(png).relative_to(base).as_posix()})", ""]
    if plots.get("overall"):
        lines += ["## Overall plots", ""]
        for png in plots["overall"]:
            lines += [f"![overall]({Path(png).relative_to(base).as_posix()})", ""]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:26px} h2{font-size:21px;margin-top:36px;border-bottom:2px solid #ddd} h3{font-size:17px;margin-top:26px}
table.paper-table{border-collapse:collapse;font-size:12px;margin:8px 0 14px 0}
table.paper-table th{background:#33475b;color:#fff;padding:4px 6px;text-align:left;position:sticky;top:0}
table.paper-table td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
tr.competitor td{color:#777;background:#fafafa}
td.st-reproduced{background:#c8efc8} td.st-below{background:#f8d0c8} td.st-not-run{background:#eee}
td.st-differ{background:#fbe3b5} td.st-ok{background:#c8efc8} td.st-nc{background:#e3e3f5}
.caption{font-style:italic} .note{color:#555;border-left:3px solid #ccc;padding-left:8px}
img.plot{max-width:900px;border:1px solid #ddd;margin:6px 0}
.summary{background:#f4f6f8;padding:10px;border-radius:4px}
nav ul{columns:4;font-size:13px} table.paper-table td:last-child{min-width:260px}
"""


def _status_class(status: str) -> str:
    if status.startswith("reproduced"):
        return "st-reproduced"
    if status.startswith("below"):
        return "st-below"
    if status == "not run":
        return "st-not-run"
    return ""


def _complexity_class(status: str) -> str:
    if status.startswith("reproduced"):
        return "st-ok"
    if "differ" in status or status.startswith("convention"):
        return "st-differ"
    if status.startswith(("not comparable", "no model", "no paper")):
        return "st-nc"
    return ""


def render_html(results: Results, meta: Mapping[str, Any], counts: Mapping[str, int], plots: Mapping[str, list[str]],
                tolerances: Mapping[str, float], ui: str, base: Path) -> str:
    """The report as one static HTML page (same content as :func:`render_markdown`, status cells coloured, a table
    of contents; tables ``id='t-<paper>-<table>'``)."""
    e = html.escape
    header = "".join(f"<p>{e(line)}</p>" for line in _header_lines(meta, counts, tolerances) if line)
    header = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", header)
    header = re.sub(r"`(.+?)`", r"<code>\1</code>", header)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Paper vs reproduction</title>",
             f"<style>{_CSS}</style></head><body>", "<h1>Paper vs reproduction</h1>",
             f"<div class='summary' id='summary'>{header}</div>", "<nav><ul>"]
    for paper, table, _ in results:
        parts.append(f"<li><a href='#t-{e(paper.id)}-{e(table.table)}'>{e(paper.id)} Table {e(table.table)}</a></li>")
    parts.append("</ul></nav>")
    current = None
    for paper, table, rows in results:
        if paper.id != current:
            current = paper.id
            parts.append(f"<h2 id='p-{e(paper.id)}'>{e(paper.title)} (<code>{e(paper.id)}</code>)</h2>"
                         f"<p>{e(paper.venue)}; transcribed from <code>{e(paper.text_file)}</code>.</p>")
            if paper.note:
                parts.append(f"<p class='note'>{e(paper.note)}</p>")
        tid = f"t-{paper.id}-{table.table}"
        parts.append(f"<h3>{e(paper.id)} Table {e(table.table)}</h3><p class='caption'>{e(table.caption)}</p>")
        if table.note:
            parts.append(f"<p class='note'>{e(table.note)}</p>")
        parts.append(f"<table class='paper-table' id='{e(tid)}' data-paper='{e(paper.id)}' "
                     f"data-table='{e(table.table)}'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for _, h in COLUMNS) + "</tr></thead><tbody>")
        for res in rows:
            d = row_cells(res, ui)
            cls = "competitor" if res.row.role == "competitor" else "hrnet"
            cells = []
            for key, _ in COLUMNS:
                if key == "run":
                    links = [f"<a href='{e(d[p + '_link'])}'>{e(d[p + '_run'][:8])}</a>"
                             for p in ("ours", "official") if d[p + "_run"]]
                    cells.append(f"<td>{' '.join(links) or '-'}</td>")
                elif key == "status":
                    cells.append(f"<td class='{_status_class(d[key])}'>{e(d[key])}</td>")
                elif key == "complexity":
                    cells.append(f"<td class='{_complexity_class(d[key])}'>{e(d[key])}</td>")
                elif key in ("ours", "official") and d[f"{key}_profile"]:
                    cells.append(f"<td>{e(d[key])} ({e(d[key + '_profile'])})</td>")
                else:
                    cells.append(f"<td>{e(d[key]) or '-'}</td>")
            parts.append(f"<tr class='{cls}' data-row='{e(res.row.row)}'>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        for png in plots.get(f"{paper.id}/{table.table}", []):
            parts.append(f"<img class='plot' alt='{e(paper.id)} Table {e(table.table)}' "
                         f"src='{e(Path(png).relative_to(base).as_posix())}'>")
    if plots.get("overall"):
        parts.append("<h2>Overall plots</h2>")
        for png in plots["overall"]:
            parts.append(f"<img class='plot' alt='overall' src='{e(Path(png).relative_to(base).as_posix())}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
