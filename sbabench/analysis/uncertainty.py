"""The uncertainty of a tested difference, and everything read from it: CI, p-values (two-sided,
and one-sided against a tolerated drop), and the smallest difference a test could detect.

A tested difference d has up to two sources of variance, each with its own reference
distribution: the replicates' (s^2 / R, Student's t with R - 1 df) and the test items' (V_item,
from a paired bootstrap, Student's t with n - 1 df; beside replicates, only its part shared by
every replicate, see `sbabench.analysis.two_level`). The (1 - a) two-sided interval is
d +- q(1 - a/2), q(level) = sqrt(t_R(level)^2 s^2 / R + t_items(level)^2 V_item); p-values
invert it. Why not the bootstrap's own tail: a two-sided percentile p-value cannot go below
2 / (B + 1), and the gate multiplies p by the units it tests (Holm), so at B = 1000 a gate over
more than ~26 units could never fail. The reference distribution's p has no such floor; its level is
measured by simulation (`tests/analysis/test_gate_simulation.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POWER = 0.8
"""The power at which `Spread.detectable` states a minimum detectable difference."""


@dataclass(frozen=True)
class Spread:
    """Variance of a tested difference by source, each with the degrees of freedom of its
    reference (math.inf: the normal)."""

    item_var: float
    """Variance from resampling the test items (paired bootstrap)."""
    item_df: float
    """Degrees of freedom of the items' reference."""
    replicate_var: float = 0.0
    """s^2 / R from the replicates' differences (0: one replicate)."""
    replicate_df: float = math.inf
    """R - 1."""

    @property
    def se(self) -> float:
        """Standard error of the difference, both sources."""
        return math.sqrt(self.item_var + self.replicate_var)

    def quantile(self, level: float) -> float:
        """q(level): each variance scaled by its own reference's `level` quantile."""
        from scipy.special import ndtri, stdtrit  # ~0.15 s, imported when something is tested

        def scale(df: float) -> float:
            return float(ndtri(level)) if math.isinf(df) else float(stdtrit(df, level))

        items, replicates = scale(self.item_df), scale(self.replicate_df)
        return math.copysign(
            math.sqrt(items**2 * self.item_var + replicates**2 * self.replicate_var),
            level - 0.5,
        )

    def p_two_sided(self, distance: float) -> float:
        """p of a difference `distance` away from the null value: 1 - the level of the widest
        interval that excludes it. No variance at all: 1 for no distance, else 0 (the
        difference is exact)."""
        distance = abs(distance)
        if math.isnan(distance) or math.isnan(self.se):
            return math.nan
        if distance == 0:
            return 1.0
        if self.se == 0:
            return 0.0
        if self.replicate_var == 0:  # one reference: its tail directly
            return 2 * _tail(distance / self.se, self.item_df)
        low, high = 0.5, 1.0  # q grows with the level: bisect for q(level) = distance
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if self.quantile(middle) < distance else (low, middle)
        return 2 * (1 - low)

    def p_above(self, distance: float) -> float:
        """One-sided p that the true difference is at or below the null value, for an
        estimate `distance` above it (negative: below it)."""
        p = self.p_two_sided(distance) / 2
        return p if distance > 0 else 1 - p

    def interval(self, estimate: float, confidence: float = 0.95) -> tuple[float, float]:
        """The two-sided `confidence` interval around `estimate`."""
        half = self.quantile(1 - (1 - confidence) / 2) if self.se > 0 else 0.0
        return estimate - half, estimate + half

    def detectable(self, alpha: float, power: float = POWER) -> float:
        """Minimum detectable difference: the true difference a two-sided test at `alpha`
        (already divided by the tests it is read with) finds with probability `power`,
        q(1 - alpha / 2) + q(power)."""
        if self.se == 0:
            return 0.0
        return self.quantile(1 - alpha / 2) + self.quantile(power)


def _tail(z: float, df: float) -> float:
    """P(T > z) for Student's t with `df` degrees of freedom (the normal at math.inf)."""
    from scipy.special import ndtr, stdtr

    return float(ndtr(-z)) if math.isinf(df) else float(stdtr(df, -z))


MAX_REPLICATES = 200
"""The most replicates `replicates_for` considers (more is not a plan anyone runs)."""


def replicates_for(spread: Spread, replicates: int, effect: float, alpha: float) -> int | None:
    """Replicates (at the current items) that bring the MDE at `alpha` to `effect` or below:
    the replicates' variance s^2 / R scaled to s^2 / R', the items' shared part kept (replicates
    cannot average it away). None when the items' variance alone keeps the
    MDE above `effect` (more items would help, not more replicates), when `spread` has no
    replicates' variance to scale (one replicate: the seeds' variance is unknown), or past
    `MAX_REPLICATES`."""
    if math.isinf(spread.replicate_df) or replicates < 2 or effect <= 0:
        return None
    if items_limit(spread, effect, alpha):
        return None
    between = spread.replicate_var * replicates  # s^2
    for count in range(replicates, MAX_REPLICATES + 1):
        scaled = Spread(spread.item_var, spread.item_df, between / count, count - 1)
        if scaled.detectable(alpha) <= effect:
            return count
    return None


def items_limit(spread: Spread, effect: float, alpha: float) -> bool:
    """Whether the items' variance alone keeps the MDE at `alpha` above `effect` (then more
    test items, not more replicates, would help)."""
    return Spread(spread.item_var, spread.item_df).detectable(alpha) > effect
