"""Grouping speed: :func:`hrnet_core.codecs.grouping.group` (scipy ``linear_sum_assignment`` + vectorised NumPy)
against the straightforward ``munkres`` implementation of the same procedure (``benchmarks/grouping_reference.py``),
on the same heatmaps / tags in the same run, at 2, 10 and 20 people. Goal (issue 12): >= 5x. Every map is checked
for identical people, joints and scores before timing.

Maps: :func:`benchmarks.grouping_reference.synthetic_maps` at ``--size`` cells (the test maps are projected to the
input size: 512 for the W32-512 recipe), 17 joints, 2 tag maps (flip test), 15% of the joints missing (refine fills
them), weak clutter. Usage::

    python benchmarks/bench_grouping.py [--size 512] [--repeats 3] [--people 2 10 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.grouping_reference import reference_group, synthetic_maps  # noqa: E402
from hrnet_core.codecs.grouping import GroupingParams, GroupingStats, group  # noqa: E402


def _time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(size: int = 512, people=(2, 10, 20), repeats: int = 3, seed: int = 0, quiet: bool = False) -> list[dict]:
    """Time both implementations per people count; returns rows ``{people, ours_ms, reference_ms, ratio, found,
    matchings}``. Raises ``AssertionError`` when the outputs differ."""
    import torch

    torch.set_num_threads(1)
    params = GroupingParams(num_joints=17)
    rows = []
    for n in people:
        hm, tg, _ = synthetic_maps(n, size, seed=seed + n, noise=0.05, tag_spread=0.15, missing=0.15)
        stats = GroupingStats()
        a, sa = group(hm, tg, params, stats=stats)
        b, sb = reference_group(hm, tg, params)
        assert a.shape == b.shape and np.array_equal(a, b) and np.array_equal(sa, sb), f"outputs differ at {n} people"
        ours = _time(lambda: group(hm, tg, params), repeats)
        ref = _time(lambda: reference_group(hm, tg, params), repeats)
        row = {"people": n, "ours_ms": 1e3 * ours, "reference_ms": 1e3 * ref, "ratio": ref / ours,
               "found": len(a), "matchings": f"argmin {stats.argmin}, lsa {stats.lsa}, munkres {stats.munkres}"}
        rows.append(row)
        if not quiet:
            print(f"{n:3d} people ({size}x{size} maps): ours {row['ours_ms']:8.1f} ms  munkres reference "
                  f"{row['reference_ms']:8.1f} ms  ratio {row['ratio']:5.1f}x  (found {len(a)}; {row['matchings']})")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--people", type=int, nargs="+", default=[2, 10, 20])
    args = ap.parse_args(argv)
    run(args.size, args.people, args.repeats)


if __name__ == "__main__":
    main()
