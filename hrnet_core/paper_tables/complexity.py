"""Our models' parameters and MACs next to the papers' "#Params" / "GFLOPs", in each row's counting convention.

The counts come from :mod:`hrnet_core.models` (``count_params``: trainable parameters; ``count_macs``:
``torch.utils.flop_counter.FlopCounterMode`` total / 2, forward on the ``meta`` device - the same procedure that
produced ``../shared/reference/official_models/*.json``). Two extra figures are collected: the MACs of
activation-activation matrix products (attention ``q @ k^T`` and ``attn @ v``: ``aten.bmm``), which "conv + linear
only" counters leave out, and, for the HigherHRNet convention, the MACs of every transposed convolution counted per
*output* pixel (``k*k*Cin/groups*Cout*Hout*Wout``) instead of per input pixel (what FlopCounterMode counts).

Conventions (``hrnet_core.paper_tables.GFLOPS_CONVENTIONS``) -> our number:

* ``gmacs_2p30``: (MACs - attention-product MACs) / 2^30, i.e. conv + linear MACs / 1024^3 (FACTS.md; identical to
  MACs / 2^30 for the convolutional HRNets)
* ``gmacs_1e9``: MACs / 1e9
* ``gmacs_1e9_deconv_out``: (MACs - deconv MACs + deconv MACs per output pixel) / 1e9
* ``unspecified``: MACs / 1e9, and the report names the closest of the known conventions

Params: ``params / PARAMS_UNITS[row.params_unit]`` (1e6 for ``M``, 2^20 for ``Mi``).

A row is *reproduced* when our params round to the printed value (to its printed decimals) and our GFLOPs are within
``GFLOPS_TOLERANCE`` (2 %) of the printed value, both in the row's convention.

Counting the 1024x2048 segmentation networks is cheap on the meta device but building ~50 networks still takes a
while, so the counts are cached in ``complexity_cache.yaml`` beside this file (package data, committed), generated
by :func:`write_cache` (``hrnet report --recompute-complexity``); ``tests/test_paper_tables.py`` recomputes entries
to check the cache is current.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from . import PARAMS_UNITS, ModelRef, PaperRow, all_rows

__all__ = [
    "CACHE_FILE", "GFLOPS_TOLERANCE", "ComplexityCheck", "ComplexityRecord", "cache_key", "cache_lookup", "check_row",
    "closest_convention", "compute_complexity", "gflops_in_convention", "isclose_record", "load_cache",
    "params_in_unit", "params_match", "required_entries", "write_cache",
]

CACHE_FILE = Path(__file__).resolve().parent / "complexity_cache.yaml"
#: Relative GFLOPs tolerance for "reproduced" (issue 5: "GFLOPs agree within 2 % in the row's convention").
GFLOPS_TOLERANCE = 0.02


@dataclass(frozen=True)
class ComplexityRecord:
    """Counts of one network at one input.

    Attributes:
        model: zoo name; overrides: build overrides; input_shape: ``[N, 3, H, W]``.
        params: trainable parameters (count). macs: multiply-accumulates (FlopCounterMode total / 2).
        matmul_macs: the part of ``macs`` spent in activation-activation products (attention ``bmm``); the
            "conv + linear only" conventions leave it out.
        deconv_macs: the part of ``macs`` spent in transposed convolutions (per input pixel).
        deconv_out_macs: the same transposed convolutions counted per output pixel.
    """

    model: str
    overrides: Mapping[str, Any]
    input_shape: tuple[int, int, int, int]
    params: int
    macs: int
    matmul_macs: int = 0
    deconv_macs: int = 0
    deconv_out_macs: int = 0

    @property
    def key(self) -> str:
        return cache_key(self.model, self.overrides, self.input_shape)


def cache_key(model: str, overrides: Mapping[str, Any], input_shape: Sequence[int]) -> str:
    """Stable key ``name|{"k": v}|1x3xHxW`` of one (network, input) pair."""
    return f"{model}|{json.dumps(dict(overrides), sort_keys=True)}|{'x'.join(str(int(s)) for s in input_shape)}"


_MATMUL_OPS = ("aten.bmm", "aten.baddbmm", "aten._scaled_dot_product_efficient_attention",
               "aten._scaled_dot_product_flash_attention", "aten._scaled_dot_product_cudnn_attention")


def compute_complexity(model: str, overrides: Mapping[str, Any], input_shape: Sequence[int]) -> ComplexityRecord:
    """Build ``model`` and count params, MACs, attention-product MACs and transposed-convolution MACs at ``input_shape``.

    The network is built on the meta device when its builder allows it (else on the CPU); the forward pass always
    runs on meta tensors (``torch.func.functional_call``), exactly like ``hrnet_core.models.count_macs``.

    Raises:
        KeyError / ValueError: from ``hrnet_core.models.build_model`` (unknown name or override).
    """
    import itertools

    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from hrnet_core.models import build_model, count_params

    try:  # meta device: no memory, no initialisation cost
        with torch.device("meta"):
            net = build_model(model, **dict(overrides))
    except (NotImplementedError, RuntimeError):  # builders that compute buffers from data (HRFormer) need real tensors
        net = build_model(model, **dict(overrides))
    net.eval()
    deconv = {"in": 0, "out": 0}

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        per_pixel = mod.in_channels // mod.groups * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        deconv["in"] += per_pixel * x.shape[0] * x.shape[-2] * x.shape[-1]
        deconv["out"] += per_pixel * output.shape[0] * output.shape[-2] * output.shape[-1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    tensors = {name: torch.empty_like(t, device="meta")
               for name, t in itertools.chain(net.named_parameters(), net.named_buffers())}
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            torch.func.functional_call(net, tensors, (torch.empty(tuple(int(s) for s in input_shape), device="meta"),))
    finally:
        for h in handles:
            h.remove()
    per_op = counter.get_flop_counts().get("Global", {})
    matmul = sum(int(v) for k, v in per_op.items() if str(k) in _MATMUL_OPS)
    return ComplexityRecord(model=model, overrides=dict(overrides), input_shape=tuple(int(s) for s in input_shape),
                            params=int(count_params(net)), macs=int(counter.get_total_flops()) // 2,
                            matmul_macs=matmul // 2, deconv_macs=int(deconv["in"]), deconv_out_macs=int(deconv["out"]))


def gflops_in_convention(rec: ComplexityRecord, convention: str | None) -> float:
    """Our "GFLOPs" in a row's convention (see the module docstring). Raises ``KeyError`` for an unknown one."""
    if convention == "gmacs_2p30":
        return (rec.macs - rec.matmul_macs) / 2**30
    if convention in ("gmacs_1e9", "unspecified", None):
        return rec.macs / 1e9
    if convention == "gmacs_1e9_deconv_out":
        return (rec.macs - rec.deconv_macs + rec.deconv_out_macs) / 1e9
    raise KeyError(f"unknown GFLOPs convention {convention!r}")


def closest_convention(rec: ComplexityRecord, paper_gflops: float) -> tuple[str, float]:
    """The known convention (not ``unspecified``) whose value of ``rec`` is closest to ``paper_gflops``."""
    values = {c: gflops_in_convention(rec, c) for c in ("gmacs_2p30", "gmacs_1e9", "gmacs_1e9_deconv_out")}
    best = min(values, key=lambda c: abs(values[c] - paper_gflops))
    return best, values[best]


def params_in_unit(rec: ComplexityRecord, unit: str | None) -> float:
    """Our parameter count in a row's unit (``M`` = 1e6, ``Mi`` = 2^20; default ``M``)."""
    return rec.params / PARAMS_UNITS[unit or "M"]


def _printed_decimals(value: float) -> int:
    """Decimals of a printed value as far as the float keeps them (trailing zeros are lost: ``45.0`` -> 1)."""
    return max(1, len(repr(float(value)).split(".")[1].rstrip("0")))


def params_match(paper: float, ours: float, decimals: int | None = None) -> bool:
    """True when ``ours`` rounds to the printed ``paper`` value (half a unit of its last printed digit)."""
    d = _printed_decimals(paper) if decimals is None else decimals
    return abs(ours - paper) <= 0.5 * 10 ** (-d) + 1e-9


@dataclass(frozen=True)
class ComplexityCheck:
    """Paper vs ours for one row.

    ``status``: ``reproduced`` | ``params differ`` | ``GFLOPs differ`` | ``params and GFLOPs differ`` |
    ``convention unknown`` (params match; the paper does not state its GFLOPs convention and MACs / 1e9 differs by
    more than the tolerance - ``detail`` names the closest known convention) | ``not comparable`` (detector rows:
    backbone + neck only) | ``no paper value`` (paper value lost, ours shown) |
    ``no model`` (not in our zoo; ``detail`` says why) | ``context`` (competitor) | ``none`` (no complexity).
    """

    status: str
    paper_params: float | None = None
    ours_params: float | None = None
    paper_gflops: float | None = None
    ours_gflops: float | None = None
    gflops_rel_diff: float | None = None
    detail: str = ""
    record: ComplexityRecord | None = None


def check_row(row: PaperRow, lookup: Callable[[ModelRef, Sequence[int]], ComplexityRecord | None],
              tolerance: float = GFLOPS_TOLERANCE) -> ComplexityCheck:
    """Compare a row's printed complexity with our model's, in the row's convention.

    Args:
        row: the paper row.
        lookup: ``(model_ref, input_shape) -> ComplexityRecord`` (e.g. a cache lookup; ``None`` when unknown).
        tolerance: relative GFLOPs tolerance.
    """
    if row.role == "competitor":
        return ComplexityCheck("context" if row.has_complexity else "none", row.params, None, row.gflops)
    if row.model is None:
        if row.has_complexity:
            return ComplexityCheck("no model", row.params, None, row.gflops, detail=row.model_status or "")
        return ComplexityCheck("none")
    assert row.complexity_input is not None
    rec = lookup(row.model, row.complexity_input)
    if rec is None:
        return ComplexityCheck("no model", row.params, None, row.gflops,
                               detail=f"no complexity count for {row.model.name} at {list(row.complexity_input)}")
    ours_p = params_in_unit(rec, row.params_unit)
    ours_g = gflops_in_convention(rec, row.gflops_convention)
    rel = None if row.gflops is None else (ours_g - row.gflops) / row.gflops
    if row.model.scope != "full":
        return ComplexityCheck("not comparable", row.params, ours_p, row.gflops, ours_g, rel,
                               detail=f"our {row.model.name} is the {row.model.scope} only; the detector is not built",
                               record=rec)
    if not row.has_complexity:
        return ComplexityCheck("no paper value", None, ours_p, None, ours_g, None,
                               detail="the paper's value is lost in the text", record=rec)
    p_ok = row.params is None or params_match(row.params, ours_p)
    g_ok = rel is None or abs(rel) <= tolerance
    detail = ""
    if rel is not None and row.gflops_convention == "unspecified" and not g_ok:
        conv, value = closest_convention(rec, row.gflops)  # type: ignore[arg-type]
        detail = (f"convention not stated; closest known: {conv} = {value:.2f} "
                  f"({(value - row.gflops) / row.gflops:+.1%})")  # type: ignore[operator]
        status = "convention unknown" if p_ok else "params differ"
        return ComplexityCheck(status, row.params, ours_p, row.gflops, ours_g, rel, detail=detail, record=rec)
    if p_ok and g_ok:
        status = "reproduced"
    elif not p_ok and not g_ok:
        status = "params and GFLOPs differ"
    else:
        status = "params differ" if not p_ok else "GFLOPs differ"
    return ComplexityCheck(status, row.params, ours_p, row.gflops, ours_g, rel, record=rec)


# ---------------------------------------------------------------------------------------------------------- cache

def required_entries(rows: Iterable[PaperRow] | None = None) -> list[tuple[str, dict[str, Any], tuple[int, ...]]]:
    """Unique ``(model, overrides, input_shape)`` triples the HRNet-family rows with a model need."""
    seen: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {}
    for row in all_rows() if rows is None else rows:
        if row.model is None or row.complexity_input is None or row.role == "competitor":
            continue
        key = cache_key(row.model.name, row.model.overrides, row.complexity_input)
        seen.setdefault(key, (row.model.name, dict(row.model.overrides), tuple(row.complexity_input)))
    return list(seen.values())


def load_cache(path: str | Path | None = None) -> dict[str, ComplexityRecord]:
    """``{cache_key: ComplexityRecord}`` from the cache file (``{}`` when it does not exist).

    Raises:
        ValueError: the file exists but is malformed (names the file and the entry).
    """
    path = Path(path or CACHE_FILE)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, ComplexityRecord] = {}
    for i, e in enumerate(data.get("entries") or []):
        try:
            rec = ComplexityRecord(model=e["model"], overrides=dict(e.get("overrides") or {}),
                                   input_shape=tuple(int(s) for s in e["input_shape"]), params=int(e["params"]),
                                   macs=int(e["macs"]), matmul_macs=int(e.get("matmul_macs", 0)),
                                   deconv_macs=int(e.get("deconv_macs", 0)),
                                   deconv_out_macs=int(e.get("deconv_out_macs", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entries[{i}] is malformed ({exc!r})") from exc
        out[rec.key] = rec
    return out


def write_cache(path: str | Path | None = None, rows: Iterable[PaperRow] | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, ComplexityRecord]:
    """Recompute every entry the rows need and write the cache file (sorted, one entry per line).

    Returns the records written.
    """
    import torch

    path = Path(path or CACHE_FILE)
    records: dict[str, ComplexityRecord] = {}
    for model, overrides, shape in required_entries(rows):
        if progress:
            progress(f"counting {model} {overrides or ''} at {list(shape)}")
        rec = compute_complexity(model, overrides, shape)
        records[rec.key] = rec
    lines = [
        "# Generated by `hrnet report --recompute-complexity` (hrnet_core.paper_tables.complexity.write_cache).",
        "# Do not edit: params = trainable parameters; macs = FlopCounterMode total / 2 (meta-device forward);",
        "# matmul_macs = attention products (bmm); deconv_macs / deconv_out_macs = transposed convolutions counted per",
        "# input / per output pixel.",
        f"torch: '{torch.__version__}'",
        "entries:",
    ]
    for key in sorted(records):
        e = asdict(records[key])
        e["input_shape"] = list(e["input_shape"])
        lines.append("  - " + json.dumps(e, sort_keys=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return records


def cache_lookup(cache: Mapping[str, ComplexityRecord], compute_missing: bool = True
                 ) -> Callable[[ModelRef, Sequence[int]], ComplexityRecord | None]:
    """A ``lookup`` for :func:`check_row` reading ``cache`` and, when allowed, counting missing entries on the fly
    (``None`` if the model cannot be built, e.g. a name not in the zoo)."""
    extra: dict[str, ComplexityRecord | None] = {}

    def lookup(ref: ModelRef, shape: Sequence[int]) -> ComplexityRecord | None:
        key = cache_key(ref.name, ref.overrides, shape)
        if key in cache:
            return cache[key]
        if not compute_missing:
            return None
        if key not in extra:
            try:
                extra[key] = compute_complexity(ref.name, ref.overrides, shape)
            except (KeyError, ValueError, ImportError):
                extra[key] = None
        return extra[key]

    return lookup


def isclose_record(a: ComplexityRecord, b: ComplexityRecord) -> bool:
    """Exact equality of the integer counts (the counting is deterministic)."""
    return ((a.params, a.macs, a.matmul_macs, a.deconv_macs, a.deconv_out_macs)
            == (b.params, b.macs, b.matmul_macs, b.deconv_macs, b.deconv_out_macs))

