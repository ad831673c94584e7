"""Calibration of compare's two-level test by simulation, before and after it stopped counting
the replicates' own item noise twice, and the time of compare over replicates.

    python benchmarks/bench_two_level.py                  # about 20 minutes on 2 cores
    python benchmarks/bench_two_level.py --trials 100     # a quick look

1. The grid: statistic (STS Spearman, pair AP, clustering V-measure, mean of per-query values)
   x items (10, 20, 50, 300) x replicates (2, 3, 5) x world (seeds dominate, items dominate,
   per-item errors shared by replicates, seeds and items alike), as
   `sbabench.analysis.calibration` simulates them. In each cell, on the same simulated
   benchmarks: the rejection rate at alpha 0.05 of the previous two-level test ("before": the
   bootstrap's whole variance of the mean difference, normal reference, plus s^2 / R against
   t with R - 1 df) and of compare's ("after": `two_level_test`). Under the null every cell's
   95% Wilson interval should meet [0.02, 0.065]; under the alternative (`calibration.EFFECT`)
   the power target is max(2 x before, before + 0.15) wherever before < 0.5. The script counts
   the cells that meet each.
2. The item-only test (one replicate, what compare runs at R = 1) where the seeds do not matter
   (items dominate): its false-positive rate per statistic and items. Where the seeds matter
   it is not valid at all (item 1's worlds show the two-level test instead).
3. `sbabench compare` on a results folder with replicates (default
   results/quickstart-replicates), whole process, median of 5.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from sbabench.analysis import calibration
from sbabench.analysis.stats import statistic as statistic_of
from sbabench.analysis.two_level import _replicate_deltas, item_resamples
from sbabench.analysis.uncertainty import Spread
from sbabench.tasks.items import ItemScores

ROOT = Path(__file__).resolve().parent.parent
ITEMS = (10, 20, 50, 300)
REPLICATES = (2, 3, 5)
NULL_BAND = (0.02, 0.065)

Side = list[dict[str, ItemScores]]


def previous_p(b: Side, a: Side, n_resamples: int, seed: int) -> float:
    """The two-level test as it was: the item bootstrap's variance of the mean difference (which
    holds each replicate's own item noise, already in s^2) against the normal, plus s^2 / R
    against t with R - 1 df."""
    count = len(b)
    rng = np.random.default_rng(seed)
    observed, resampled = _replicate_deltas(b, a, item_resamples(n_resamples, count), rng)
    items = len(b[0]["test"].gold)
    item_var = float(resampled.mean(0).var(ddof=1)) * items / (items - 1)
    spread = Spread(item_var, math.inf, float(observed.var(ddof=1)) / count, count - 1)
    return spread.p_two_sided(float(observed.mean()))


def _value(replicate: dict[str, ItemScores]) -> float:
    """The statistic of one simulated replicate on all its items."""
    scores = replicate["test"]
    gold, predicted = np.asarray(scores.gold), np.asarray(scores.predicted)
    return float(statistic_of(scores.kind, gold, predicted)[0])


class _Deltas:
    """A "test" that records each benchmark's mean difference on all items and never rejects
    (what the oracle is computed from)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self, b: Side, a: Side, n_resamples: int, seed: int) -> float:
        differences = [_value(x) - _value(y) for x, y in zip(b, a, strict=True)]
        self.values.append(float(np.mean(differences)))
        return 1.0


def _cell(job: tuple[str, int, int, int, float, int]) -> tuple[tuple[int, int, int, int, int], ...]:
    """(before, after, oracle) rejections and trials of one statistic x items x replicates,
    every world. The oracle knows the null distribution of the mean difference (from as many
    simulated null benchmarks) and rejects beyond its two-sided 5% quantile: the power no test
    at level 0.05 that reads the mean difference can beat (up to simulation error)."""
    statistic_, items, replicates, trials, effect, seed = job
    out = []
    for w, world in enumerate(calibration.WORLDS):
        observed = _Deltas()
        before, after, _ = calibration.rates(
            world, replicates, trials, (previous_p, calibration.two_level_p, observed),
            statistic=statistic_, items=items, effect=effect, seed=seed + w,
        )  # fmt: skip
        oracle = 0
        if effect > 0:
            null = _Deltas()
            calibration.rates(
                world, replicates, trials, (null,), statistic=statistic_, items=items,
                seed=seed + w + 500,
            )  # fmt: skip
            limit = float(np.quantile(np.abs(null.values), 0.95))
            oracle = int(np.sum(np.abs(observed.values) > limit))
        out.append((before.rejections, after.rejections, oracle, trials, w))
    return tuple(out)


def _grid(trials: int, effect: float, workers: int) -> dict[tuple[str, int, int, int], tuple]:
    jobs = [
        (statistic, items, replicates, trials, effect, 1000 * i)
        for i, (statistic, items, replicates) in enumerate(
            (s, n, r) for s in calibration.STATISTICS for n in ITEMS for r in REPLICATES
        )
    ]
    cells = {}
    with ProcessPoolExecutor(workers) as pool:
        for job, result in zip(jobs, pool.map(_cell, jobs), strict=True):
            for before, after, oracle, count, w in result:
                cells[(job[0], job[1], job[2], w)] = (
                    calibration.Rate(before, count),
                    calibration.Rate(after, count),
                    calibration.Rate(oracle, count),
                )
    return cells


def _show(cells: dict, title: str) -> None:
    print(f"\n{title}")
    heads = [w.name for w in calibration.WORLDS]
    print("| statistic | n | R | " + " | ".join(heads) + " |")
    print("|---|---:|---:|" + "---|" * len(heads))
    for statistic in calibration.STATISTICS:
        for items in ITEMS:
            for replicates in REPLICATES:
                row = []
                for w in range(len(heads)):
                    before, after, oracle = cells[(statistic, items, replicates, w)]
                    cell = f"{before.rate:.3f} → {after.rate:.3f}"
                    row.append(cell + (f" ({oracle.rate:.3f})" if oracle.rejections else ""))
                print(f"| {statistic} | {items} | {replicates} | " + " | ".join(row) + " |")


def _meets_null(rate: calibration.Rate) -> bool:
    low, high = rate.interval
    return high >= NULL_BAND[0] and low <= NULL_BAND[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400, help="null benchmarks per cell")
    parser.add_argument("--power-trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "quickstart-replicates")
    args = parser.parse_args()
    start = time.perf_counter()
    null = _grid(args.trials, 0.0, args.workers)
    _show(null, f"False-positive rate at alpha 0.05, before → after, {args.trials} per cell")
    meets = [_meets_null(after) for _, after, _ in null.values()]
    met_before = [_meets_null(before) for before, _, _ in null.values()]
    worst = max(null.items(), key=lambda kv: kv[1][1].rate)
    print(
        f"\nnull cells whose Wilson 95% interval meets {list(NULL_BAND)}: after "
        f"{sum(meets)} of {len(meets)}, before {sum(met_before)} of {len(met_before)}; "
        f"highest after: {worst[1][1].rate:.3f} at {worst[0][:3]} "
        f"{calibration.WORLDS[worst[0][3]].name}"
    )
    for key, (_, after, _) in null.items():
        if not _meets_null(after):
            low, high = after.interval
            world = calibration.WORLDS[key[3]].name
            print(f"  misses: {key[:3]} {world}: {after.rate:.3f} [{low:.3f}, {high:.3f}]")
    power = _grid(args.power_trials, calibration.EFFECT, args.workers)
    _show(
        power,
        f"Power (effect {calibration.EFFECT}), before → after (oracle), {args.power_trials} per cell",
    )
    low = [(b, a, o, max(2 * b.rate, b.rate + 0.15)) for b, a, o in power.values() if b.rate < 0.5]
    met = sum(a.rate >= t for _, a, _, t in low)
    reachable = [(a, t) for _, a, o, t in low if o.rate >= t]
    ratio = [a.rate / b.rate for b, a, _, _ in low if b.rate > 0]
    share = [a.rate / o.rate for _, a, o in power.values() if o.rate > 0.1]
    print(
        f"\npower cells below 0.5 before: {len(low)}; meeting max(2 x before, before + 0.15) "
        f"after: {met}; cells where even the oracle reaches that target: {len(reachable)}, met "
        f"there: {sum(a.rate >= t for a, t in reachable)}; median after/before "
        f"{statistics.median(ratio):.2f}x; median after/oracle where the oracle > 0.1: "
        f"{statistics.median(share):.2f}"
    )
    _item_only(args.trials)
    print(f"grid time {time.perf_counter() - start:.0f} s with {args.workers} workers")
    _compare_time(args.results)


def _item_only(trials: int) -> None:
    print(f"\nItem-only test (R = 1), items dominate: false-positive rate, {trials} per cell")
    print("| statistic | " + " | ".join(f"n = {n}" for n in ITEMS) + " |")
    print("|---|" + "---|" * len(ITEMS))
    for statistic in calibration.STATISTICS:
        cells = []
        for items in ITEMS:
            (rate,) = calibration.rates(
                calibration.ITEM_DOMINATED, 1, trials, (calibration.item_only_p,),
                statistic=statistic, items=items, seed=items,
            )  # fmt: skip
            low, high = rate.interval
            cells.append(f"{rate.rate:.3f} [{low:.3f}, {high:.3f}]")
        print(f"| {statistic} | " + " | ".join(cells) + " |", flush=True)


def _compare_time(folder: Path, repeats: int = 5) -> None:
    if not folder.is_dir():
        print(f"\n{folder} not found: run `sbabench run suites/quickstart-replicates.yaml` first")
        return
    command = [sys.executable, "-m", "sbabench", "compare", str(folder)]
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - begin)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"\nsbabench compare {folder} (whole process): median {statistics.median(times):.2f} s")
    print(f"  runs: {shown} s")


if __name__ == "__main__":
    main()
