"""The item-only paired test's level by simulation, per item kind and number of items.

    python benchmarks/bench_item_test_level.py                # about a minute on 2 cores
    python benchmarks/bench_item_test_level.py --trials 500   # a quick look

Two predictors equal in expectation (gold plus independent unit-variance noise; pairs: 0/1 gold
with balanced classes) scored by `paired_bootstrap` (its variance read against Student's t);
prints the share of tasks rejected at alpha 0.05, two-sided, with its 95% Wilson interval.
The gate's REGRESSION is one side of this (a drop), its non-inferiority PASS the other.
"""

from __future__ import annotations

import argparse

import numpy as np

from sbabench.analysis.calibration import Rate
from sbabench.analysis.stats import paired_bootstrap
from sbabench.tasks.items import ItemScores


def _task(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    gold = (np.arange(n) % 2).astype(float) if kind == "pairs" else rng.normal(size=n)
    return gold, gold + rng.normal(size=n), gold + rng.normal(size=n)


def level(kind: str, n: int, trials: int, resamples: int, alpha: float = 0.05) -> Rate:
    """Share of `trials` simulated tasks whose paired test rejects at `alpha`."""
    rng = np.random.default_rng(1)
    rejected = 0
    for trial in range(trials):
        gold, a, b = _task(kind, n, rng)
        sides = [
            {"d": ItemScores(kind=kind, gold=gold.tolist(), predicted=p.tolist())} for p in (a, b)
        ]
        rejected += paired_bootstrap(*sides, resamples, seed=trial).p_value < alpha
    return Rate(rejected, trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    for kind, sizes in (("sts", (20, 60, 300)), ("pairs", (60, 200)), ("queries", (10, 20, 50))):
        for n in sizes:
            rate = level(kind, n, args.trials, args.resamples)
            low, high = rate.interval
            print(
                f"{kind:8} n={n:4}  rejected {rate.rate:.4f}  [{low:.4f}, {high:.4f}]  of {rate.trials}"
            )


if __name__ == "__main__":
    main()
