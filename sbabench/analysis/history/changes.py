"""Steps in a unit's series, found by an uncertainty-weighted segmentation and confirmed by the
paired test between the commits on either side.

Finding: binary segmentation of a piecewise-constant mean, each point weighted by the inverse
of its measured variance (w_i = 1 / v_i). Splitting a segment at k gains

    G(k) = (W_L W_R / (W_L + W_R)) (m_L - m_R)^2,

W and m the weights' sum and weighted mean of each side: under no change (and variances as
measured) G(k) is chi-square with 1 df at each k. The best split is kept when G exceeds the
chi-square quantile at 1 - alpha / (m - 1), m the segment's length (Bonferroni over its m - 1
candidate splits), so a series without a step is split with probability at most alpha; the two
halves are searched the same way. Why not `ruptures`: its penalties are not stated in the
points' measured variances, and one formula of ten lines is easier to calibrate (the slow
tests measure its rate of false steps and its power).

Confirming: a step at commit c_k is read from sbabench's paired test on the stored items of the
commits on either side: the commits of the level before it (up to `POOLED` nearest, back to the
previous step) against those of the level after it (up to the next step), each item's prediction
averaged over a side's commits (`series.pooled_test`). The segmentation treats repeated identical
scores (a deterministic rerun) as independent evidence; the paired test does not, so a step is
CONFIRMED only when that test's p < alpha. Testing levels rather than the two neighbouring
commits is what gives a step of 3 standard errors its power where each commit's item noise is
new (with two single commits the difference's standard error is sqrt(2) points' and the test
finds such a step about half the time). Where predictions do not average (clusters, class
predictions) the two neighbouring commits are tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sbabench.analysis.history.git import Commit
from sbabench.analysis.history.series import Paired, UnitSeries, pooled_test
from sbabench.analysis.history.store import HistoryStore

POOLED = 10
"""Commits per side whose items confirm a step (the nearest ones; retention keeps 20)."""


def split_threshold(length: int, alpha: float) -> float:
    """The gain a split of a segment of `length` points must exceed: the chi-square (1 df)
    quantile at 1 - alpha / (length - 1)."""
    from scipy.special import ndtri

    return float(ndtri(1 - alpha / (2 * max(length - 1, 1)))) ** 2


def _best_split(x: np.ndarray, w: np.ndarray) -> tuple[int, float]:
    """(k, G(k)) of the split with the largest gain; k is the first index of the right side."""
    cw, cwx = np.cumsum(w)[:-1], np.cumsum(w * x)[:-1]
    total_w, total_wx = w.sum(), (w * x).sum()
    right_w = total_w - cw
    gain = cw * right_w / total_w * (cwx / cw - (total_wx - cwx) / right_w) ** 2
    k = int(np.argmax(gain))
    return k + 1, float(gain[k])


def change_points(scores: np.ndarray, variances: np.ndarray, alpha: float) -> list[int]:
    """Indices where a new level starts (sorted). Points without a finite positive variance
    take no part: they can neither make nor hide a step."""
    usable = np.flatnonzero(np.isfinite(scores) & np.isfinite(variances) & (variances > 0))
    x, w = scores[usable], 1.0 / variances[usable]
    found: list[int] = []
    pending = [(0, len(x))]
    while pending:
        start, stop = pending.pop()
        if stop - start < 2:
            continue
        k, gain = _best_split(x[start:stop], w[start:stop])
        if gain > split_threshold(stop - start, alpha):
            found.append(int(usable[start + k]))
            pending += [(start, start + k), (start + k, stop)]
    return sorted(found)


def levels(cuts: list[int], length: int) -> list[tuple[int, slice, slice]]:
    """Each cut with the level before it (from the previous cut) and after it (to the next)."""
    bounds = [0, *cuts, length]
    return [(cut, slice(bounds[i], cut), slice(cut, bounds[i + 2])) for i, cut in enumerate(cuts)]


@dataclass(frozen=True)
class Step:
    """A step in a unit's series."""

    suite: str
    label: str
    before: Commit
    """The last commit at the old level."""
    after: Commit
    """The first commit at the new level."""
    level_change: float
    """Weighted mean after minus before (within the series' neighbouring segments)."""
    test: Paired | None
    """The level after against the level before (None: no test, see `note`)."""
    confirmed: bool
    """The paired test's p < alpha."""
    sides: tuple[int, int] = (1, 1)
    """Commits whose items the test pooled before and after the step."""
    note: str = ""

    @property
    def delta(self) -> float:
        """The paired difference, or the change of level where there is no test."""
        return self.test.delta if self.test is not None else self.level_change


def _level(scores: np.ndarray, variances: np.ndarray) -> float:
    weights = 1.0 / variances
    ok = np.isfinite(weights) & np.isfinite(scores)
    return float((weights[ok] * scores[ok]).sum() / weights[ok].sum()) if ok.any() else math.nan


def find_steps(
    store: HistoryStore,
    unit: UnitSeries,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[Step]:
    """Steps of each of the unit's series, each with its paired test."""
    steps = []
    for points in unit.segments:
        scores = np.array([p.score for p in points])
        variances = np.array([p.var for p in points])
        for cut, left, right in levels(change_points(scores, variances, alpha), len(points)):
            change = _level(scores[right], variances[right]) - _level(scores[left], variances[left])
            before, after = points[cut - 1], points[cut]
            level_before = points[max(left.start, cut - POOLED) : cut]
            level_after = points[cut : min(right.stop, cut + POOLED)]
            sides = (len(level_before), len(level_after))
            test = pooled_test(store, level_before, level_after, n_resamples, seed)
            if isinstance(test, str):
                steps.append(Step(unit.suite, unit.label, before.commit, after.commit, change, None, False, sides, test))  # fmt: skip
                continue
            confirmed = test.p_value < alpha
            note = "" if confirmed else f"paired test p = {test.p_value:.3g} >= alpha"
            steps.append(Step(unit.suite, unit.label, before.commit, after.commit, change, test, confirmed, sides, note))  # fmt: skip
    return steps
