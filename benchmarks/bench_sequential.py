"""Replicates until decided, by simulation: the sequential design's false-positive rate against
testing after every round at alpha, its power against a fixed plan of the maximum, and the
replicates it saves.

    python benchmarks/bench_sequential.py                 # about 10 minutes on 2 cores
    python benchmarks/bench_sequential.py --trials 100    # a quick look

One comparison (one operator against the baseline on one task) in two simulated worlds
(`sbabench.analysis.calibration`): the items dominate (a mean of per-query values, 50 queries),
and the seeds dominate (STS, 300 pairs). The design: looks at 2, 3, ..., 10 replicates, alpha
0.05 spent by O'Brien-Fleming-type increments, an effect of interest of 0.05 (a comparison whose
interval lies within +-0.05 is decided too). Under the null (B equals A) and under the
alternative (`calibration.EFFECT`), each with the same simulated benchmarks for every plan:

- sequential: decided better or worse at some look (the false-positive rate under the null);
- within: decided within +-0.05 at some look;
- naive: p < 0.05 at any look (what "run replicates until it is significant" does);
- fixed: p < 0.05 at 10 replicates, planned in advance;
- replicates: the mean the sequential run used (a fixed plan uses 10).
"""

from __future__ import annotations

import argparse
import time

from sbabench.analysis import calibration
from sbabench.analysis.sequential import Design

CASES = (
    (calibration.ITEM_DOMINATED, "queries", 50),
    (calibration.SEED_DOMINATED, "sts", 300),
)
DESIGN = Design(minimum=2, maximum=10, effect=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400, help="benchmarks under the null")
    parser.add_argument("--power-trials", type=int, default=200)
    args = parser.parse_args()
    start = time.perf_counter()
    print("| world | statistic, items | truth | trials | sequential | within | naive | fixed |"
          " replicates used |")  # fmt: skip
    print("|---|---|---|---:|---|---|---|---|---:|")
    for world, statistic, items in CASES:
        for truth, trials in (("null", args.trials), ("alternative", args.power_trials)):
            effect = calibration.EFFECT if truth == "alternative" else 0.0
            rates = calibration.sequential_rates(
                world, DESIGN, trials, statistic=statistic, items=items, effect=effect, seed=1
            )
            cells = [
                f"{r.rate:.3f} [{r.interval[0]:.3f}, {r.interval[1]:.3f}]"
                for r in (rates.sequential, rates.within, rates.naive, rates.fixed)
            ]
            print(
                f"| {world.name} | {statistic}, {items} | {truth} | {trials} | "
                + " | ".join(cells) + f" | {rates.replicates:.2f} of {DESIGN.maximum} |",
                flush=True,
            )  # fmt: skip
    increments = ", ".join(f"{DESIGN.increment(k):.2g}" for k in range(len(DESIGN.looks())))
    print(f"\nalpha per look (R = {DESIGN.looks()}): {increments}")
    print(f"time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
