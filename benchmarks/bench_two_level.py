"""Calibration of compare's tests, by simulation, and the time of compare over replicates.

    python benchmarks/bench_two_level.py                 # about 10 minutes on 2 cores
    python benchmarks/bench_two_level.py --trials 200    # a quick look

1. False-positive rate (B equals A in expectation) of the item-only test on one replicate, of
   the two-level test on all replicates, and of a t-test of the replicates' differences alone,
   in three worlds (replicate variance dominating; item variance dominating; the operators'
   own per-item errors, shared by their replicates, dominating), for R = 2, 3 and 5
   replicates: each rate with its 95% Wilson interval, out of `--trials` simulated benchmarks
   (`sbabench.analysis.calibration` says what is simulated).
2. Power of the three under a real effect (B's noise scale times exp(-0.4) in every replicate).
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
    heads = ("item-only (1 replicate)", "two-level", "replicates only (t)")
    print(f"{'setting':<37} {'R':>2} " + " ".join(f"{h:>24}" for h in heads))
    settings = (
        calibration.REPLICATE_DOMINATED,
        calibration.ITEM_DOMINATED,
        calibration.SHARED_ITEMS,
    )
    for setting in settings:
        for replicates in (2, 3, 5):
            rates = calibration.rejection_rates(
                setting, replicates, trials, effect=effect, seed=replicates
            )
            cells = " ".join(
                f"{f'{r.rate:.3f} [{r.interval[0]:.3f}, {r.interval[1]:.3f}]':>24}" for r in rates
            )
            print(f"{setting.name:<37} {replicates:>2} {cells}", flush=True)


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
