"""A two-level test of B against A over replicates and test items, and the probability of
improvement.

Replicate r of a model gives a difference d_r of the per-item statistic (B minus A, paired by
item within the replicate). The items are one test set shared by all replicates, so the variance
of the mean difference d = mean_r d_r has two components, each estimated once:

- the shared items' V_shared: the part of the item noise that repeats in every replicate (the
  operators' own per-item errors, the test set's luck). A paired item bootstrap whose resampled
  items are the same in every replicate (crossed: the test set is resampled, not each
  replicate's view of it) gives the (R, R) covariance of the d_r over resamples; its mean
  off-diagonal entry is V_shared (the diagonal also holds each replicate's own item noise,
  which the replicates' spread already measures). Scaled by n / (n - 1) like the item-only
  test's variance, clipped at 0, from max(200, resamples / R) resamples (`item_resamples`).
- the replicates' s^2 / R, s the sample SD of the d_r: the seeds' variance plus the
  replicate-specific part of the item noise.

Nothing is counted twice (an earlier version added the bootstrap's whole variance of d, which
holds the replicate-specific item noise again, to s^2 / R: valid, but it rejected 0-2% at alpha
0.05 where the items dominate, and lost most of its power). Each variance is read against its
own reference, Student's t with n - 1 df for V_shared and with R - 1 df for s^2 / R:
the (1 - a) interval is d +- sqrt(t_{n-1}^2 V_shared + t_{R-1}^2 s^2 / R), and the p-value is one
minus the level of the widest such interval that excludes 0 (`Spread`). With no shared item
noise it is the one-sample t-test of the d_r; with no replicates' spread, the item test.
Welch-Satterthwaite's single df instead was measured anticonservative at R = 2 (0.06-0.13 at
alpha 0.05 over 400-1000 simulated benchmarks per cell: the 1-df estimate of s^2 pulls the df
up when it comes out small). At R = 2 the seeds' part is read against t with 1 df (12.7 at 95%): honest, and costly
where the seeds dominate; the MDE says how costly. The grid of statistics x items x replicates
x worlds that measures the level and power is `benchmarks/bench_two_level.py`
(`sbabench.analysis.calibration` simulates the worlds).

P(B > A) is rliable's probability of improvement (Agarwal et al. 2021): over every pair of a B
replicate and an A replicate, how often B's main score is higher (ties count half). It is
unpaired, as rliable's is: where the seeds move both operators' scores more than their
difference, it stays near 0.5 even when B wins in every replicate (the paired view is how
many replicates agree in sign).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sbabench.analysis.stats import (
    check_same_items,
    has_nan,
    observed_and_resampled,
    signed_runs,
    subset_mismatch,
)
from sbabench.analysis.uncertainty import Spread
from sbabench.tasks.item_statistics import resample_weights
from sbabench.tasks.items import ItemScores

MIN_REPLICATES = 2
"""Fewest paired replicates a two-level test accepts (its level was measured to hold at 2)."""
MIN_ITEM_RESAMPLES = 200
"""Fewest item resamples the items' variance is estimated from (see `item_resamples`)."""


@dataclass(frozen=True)
class TwoLevelTest:
    """B minus A over replicates and items."""

    delta: float
    """Mean over replicates of the difference of the per-item statistic on all items."""
    ci_low: float
    """Lower end of the 95% CI (see the module's docstring)."""
    ci_high: float
    """Upper end of that interval."""
    p_value: float
    """Two-sided p-value of delta = 0."""
    replicate_deltas: tuple[float, ...]
    """The difference in each replicate."""
    between_sd: float
    """Sample SD of the replicates' differences."""
    item_se: float
    """Standard error of delta from the test items shared by the replicates (sqrt V_shared)."""
    df: int
    """Degrees of freedom of the replicates' t reference (R - 1)."""
    spread: Spread
    """Both variances with their references (what the CI and p are read from)."""

    @property
    def agree(self) -> int:
        """Replicates whose difference has the sign of the mean difference."""
        sign = np.sign(self.delta)
        return int(sum(np.sign(d) == sign for d in self.replicate_deltas))


def item_resamples(n_resamples: int, replicates: int) -> int:
    """Item resamples of a two-level test: `n_resamples` shared out over the replicates, at
    least 200. The bootstrap gives a variance here, not a tail quantile, and 200 resamples
    estimate a variance to about 10%; the calibration (`benchmarks/bench_two_level.py`) ran
    with 300 and the tests with 150. So R replicates cost what one replicate's test costs."""
    return max(MIN_ITEM_RESAMPLES, n_resamples // replicates)


def _replicate_deltas(
    candidates: Sequence[dict[str, ItemScores]],
    baselines: Sequence[dict[str, ItemScores]],
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(R,) differences on all items and (R, B) on B item resamples shared by the replicates.

    With several subsets, items are resampled within each and the statistic is the mean over
    subsets (mteb's main score); a clustering statistic is the mean over its k-means runs."""
    subsets = sorted(set(candidates[0]))
    for r, (c, b) in enumerate(zip(candidates, baselines, strict=True)):
        if set(c) != set(subsets) or set(b) != set(subsets) or not subsets:
            mismatch = subset_mismatch(c, b) if set(c) != set(b) else "subsets differ from r0's"
            raise ValueError(f"replicate {r}: {mismatch}")
    observed = np.zeros(len(candidates))
    resampled = np.zeros((len(candidates), n_resamples))
    for subset in subsets:
        golds = [
            np.asarray(side[subset].gold)
            for pair in zip(candidates, baselines, strict=True)
            for side in pair
        ]
        gold = golds[0]
        for other in golds[1:]:
            check_same_items(subset, gold, other)
        index = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
        # row 0: every item once (the observed difference), then the resamples
        weights = resample_weights(index, len(gold), all_items_first=True)
        for r, (c, b) in enumerate(zip(candidates, baselines, strict=True)):
            if c[subset].kind != b[subset].kind:
                raise ValueError(f"subset {subset!r}: the two sides hold different item kinds")
            predictions, shares = signed_runs((c[subset], 1.0), (b[subset], -1.0))
            values, rows = observed_and_resampled(c[subset].kind, gold, predictions, weights)
            for value, row, (sign, runs) in zip(values, rows, shares, strict=True):
                observed[r] += sign * float(value) / runs
                resampled[r] += sign * row / runs
    return observed / len(subsets), resampled / len(subsets)


def two_level_test(
    candidates: Sequence[dict[str, ItemScores]],
    baselines: Sequence[dict[str, ItemScores]],
    n_resamples: int = 1000,
    seed: int = 0,
) -> TwoLevelTest:
    """B (candidates) against A (baselines), one pair of per-item scores per replicate."""
    count = len(candidates)
    if any(has_nan(side[s]) for side in (*candidates, *baselines) for s in side):
        raise ValueError("NaN score in a replicate: not tested (did a model diverge?)")
    if len(baselines) != count:
        raise ValueError(f"{count} candidate replicates against {len(baselines)} baseline ones")
    if count < MIN_REPLICATES:
        raise ValueError(
            f"a two-level test needs >= {MIN_REPLICATES} paired replicates, got {count}"
        )
    rng = np.random.default_rng(seed)
    observed, resampled = _replicate_deltas(
        candidates, baselines, item_resamples(n_resamples, count), rng
    )
    delta = float(observed.mean())
    between = float(observed.std(ddof=1))
    # the bootstrap's variance is the plug-in one: scaled by n / (n - 1), as the item-only test
    # is, n the smallest subset's items (resampled within subsets: its factor is the largest)
    items = sum(len(side[s].gold) for side in candidates[:1] for s in side)
    smallest = min(len(side[s].gold) for side in candidates[:1] for s in side)
    plug_in = smallest / max(smallest - 1, 1)
    replicate_var = between**2 / count
    shared_var = _shared_item_variance(resampled) * plug_in
    deltas = tuple(float(d) for d in observed)
    spread = Spread(shared_var, max(items - 1, 1), replicate_var, count - 1)
    if not all(math.isfinite(v) for v in (delta, replicate_var, shared_var)):
        nan = float("nan")
        return TwoLevelTest(delta, nan, nan, nan, deltas, between, nan, count - 1, spread)
    low, high = spread.interval(delta)
    p = spread.p_two_sided(delta)
    return TwoLevelTest(
        delta, low, high, p, deltas, between, math.sqrt(shared_var), count - 1, spread
    )


def _shared_item_variance(resampled: np.ndarray) -> float:
    """V_shared from the (R, B) resampled differences: the mean covariance of two different
    replicates' differences over the shared item resamples, clipped at 0 (a negative estimate
    is noise around none). NaN when a resample is undefined (its statistic had no value)."""
    if not np.isfinite(resampled).all():
        return math.nan
    count = len(resampled)
    covariance = np.cov(resampled)
    off_diagonal = (covariance.sum() - np.trace(covariance)) / (count * (count - 1))
    return max(float(off_diagonal), 0.0)


def probability_of_improvement(b: Sequence[float], a: Sequence[float]) -> float:
    """P(B > A): the share of (B replicate, A replicate) pairs where B scores higher, ties half."""
    x, y = np.asarray(b, dtype=np.float64)[:, None], np.asarray(a, dtype=np.float64)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def aggregate_improvement(
    tasks: Sequence[tuple[Sequence[float], Sequence[float]]],
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """P(B > A) averaged over tasks, with a 95% stratified-bootstrap CI (rliable's): each
    resample redraws every task's B and A replicates with replacement."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([probability_of_improvement(b, a) for b, a in tasks]))
    draws = np.zeros(n_resamples)
    for b, a in tasks:
        x, y = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
        xs = x[rng.integers(0, len(x), size=(n_resamples, len(x)))][:, :, None]
        ys = y[rng.integers(0, len(y), size=(n_resamples, len(y)))][:, None, :]
        draws += ((xs > ys) + 0.5 * (xs == ys)).mean((1, 2))
    draws /= len(tasks)
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)
