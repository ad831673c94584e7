"""Calibration of compare's tests, by simulation, and the time of compare over replicates.

    python benchmarks/bench_two_level.py                 # about 10 minutes on 2 cores
    python benchmarks/bench_two_level.py --trials 200    # a quick look

1. False-positive rate (B equals A in expectation) of the item-only test on one replicate and
   of the two-level test on all replicates, with replicate variance dominating and small, for
   R = 2, 3 and 5 replicates: each rate with its 95% Wilson interval, out of `--trials`
   simulated benchmarks (`sbabench.analysis.calibration` says what is simulated).
2. Power of both under a real effect (B's noise scale times exp(-0.4) in every replicate).
3. `sbabench compare` on a results folder with replicates (default
   results/quickstart-replicates: 5 replicates x 6 MoE units + 3 dense units), whole process,
   median of 5.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sbabench.analysis import calibration

ROOT = Path(__file__).resolve().parent.parent


def _rates(trials: int, effect: float) -> None:
    kind = "false-positive rate" if effect == 0 else f"power (effect {effect})"
    print(f"\n{kind} at alpha 0.05, {trials} simulated benchmarks per cell")
    print(f"{'setting':<30} {'R':>2} {'item-only (1 replicate)':>28} {'two-level':>28}")
    for setting in (calibration.REPLICATE_DOMINATED, calibration.ITEM_DOMINATED):
        for replicates in (2, 3, 5):
            item_only, two = calibration.rejection_rates(
                setting, replicates, trials, effect=effect, seed=replicates
            )
            cells = [
                f"{r.rate:.3f} [{r.interval[0]:.3f}, {r.interval[1]:.3f}]" for r in (item_only, two)
            ]
            print(f"{setting.name:<30} {replicates:>2} {cells[0]:>28} {cells[1]:>28}", flush=True)


def _compare_time(folder: Path, repeats: int = 5) -> None:
    if not folder.is_dir():
        print(f"\n{folder} not found: run `sbabench run suites/quickstart-replicates.yaml` first")
        return
    command = [sys.executable, "-m", "sbabench", "compare", str(folder)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"\nsbabench compare {folder} (whole process): median {statistics.median(times):.2f} s")
    print(f"  runs: {shown} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "quickstart-replicates")
    args = parser.parse_args()
    _rates(args.trials, 0.0)
    _rates(max(100, args.trials // 4), 0.4)
    _compare_time(args.results)


if __name__ == "__main__":
    main()
