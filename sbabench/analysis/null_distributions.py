"""The null distributions `compare`'s tests need, written out so `compare` never imports
scipy.stats.

Why by hand: importing `scipy.stats` takes 1.0-1.7 s on the 2-core machines this project runs
on, more than half of `compare`'s 2 s budget, for four numbers per report (a normal tail, a
chi-square tail, the exact signed-rank distribution and one studentized-range quantile); even
`scipy.special` alone costs 0.3-0.6 s. Each function below is a closed form or a short exact
count, and tests/analysis/test_null_distributions.py holds each to scipy.stats' value
(1e-12, or 1e-10 for the integrals) on random inputs. What is not covered here (Wilcoxon with
tied differences or more than 50 tasks) still goes to scipy.stats, imported only then.
"""

from __future__ import annotations

import functools
import math

import numpy as np

_SQRT2 = math.sqrt(2.0)

_HALF_WIDTH = 9.0


@functools.cache
def _normal_quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes z on [-9, 9] and weights times the standard normal density there, for
    integrals against that density: the mass outside is 2e-19 and the integrands below are
    smooth, so 200 nodes reach 1e-13 (computed on first use: 16 ms)."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    z = nodes * _HALF_WIDTH
    density = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return z, weights * _HALF_WIDTH * density


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x), the standard normal CDF, elementwise (numpy has no erf; math.erfc is exact to
    the last bits, and the arrays here are a few hundred values)."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    return np.array([0.5 * math.erfc(-v / _SQRT2) for v in flat]).reshape(np.shape(x))


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z: erfc(|z| / sqrt 2)."""
    return math.erfc(abs(z) / _SQRT2)


def at_most_one(p: float) -> float:
    """min(p, 1) that keeps a NaN a NaN (`min(1.0, nan)` is 1.0: a hidden NaN)."""
    return p if math.isnan(p) else min(1.0, p)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with an integer number `df` >= 1 of degrees of freedom.

    The regularised upper incomplete gamma Q(df/2, x/2) has a finite sum for integer df
    (Abramowitz & Stegun 26.4.4 and 26.4.5), with h = x/2:
    even df: exp(-h) sum_{i < df/2} h^i / i!;
    odd df: erfc(sqrt h) + exp(-h) sum_{i < (df-1)/2} h^(i+1/2) / Gamma(i + 3/2).
    Each term is taken in log space so a large statistic neither overflows nor underflows early.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if math.isnan(x):
        return math.nan
    if x == math.inf:
        return 0.0
    h = x / 2
    if h <= 0:  # x <= 0, or so small that x / 2 is 0
        return 1.0
    log_h = math.log(h)
    if df % 2 == 0:
        terms = (math.exp(-h + i * log_h - math.lgamma(i + 1)) for i in range(df // 2))
        return at_most_one(math.fsum(terms))
    terms = (math.exp(-h + (i + 0.5) * log_h - math.lgamma(i + 1.5)) for i in range(df // 2))
    return at_most_one(math.erfc(math.sqrt(h)) + math.fsum(terms))


def signed_rank_counts(n: int) -> list[int]:
    """How many of the 2^n sign patterns of the ranks 1..n give each rank sum T+ = 0..n(n+1)/2
    (the exact null distribution of Wilcoxon's statistic without ties: one subset-sum count)."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    return counts


def signed_rank_p(r_plus: int, n: int) -> float:
    """Exact two-sided p-value of Wilcoxon's rank sum `r_plus` of the positive differences among
    `n` untied non-zero ones: 2 min(P(T+ <= r_plus), P(T+ >= r_plus)), at most 1."""
    counts = signed_rank_counts(n)
    total = 2**n
    below = sum(counts[: r_plus + 1]) / total
    above = sum(counts[r_plus:]) / total
    return min(1.0, 2 * min(below, above))


def range_cdf(q: float, k: int) -> float:
    """P(R <= q) for R the range of k independent standard normals (the studentized range with
    infinite degrees of freedom): k * integral phi(z) (Phi(z + q) - Phi(z))^(k-1) dz."""
    if q <= 0:
        return 0.0
    z, weights = _normal_quadrature()
    inside = _normal_cdf(z + q) - _normal_cdf(z)
    return float(k * np.sum(weights * inside ** (k - 1)))


def range_ppf(p: float, k: int) -> float:
    """The q with P(R <= q) = p for the range R of k >= 2 standard normals (Nemenyi's critical
    value is range_ppf(1 - alpha, k) / sqrt 2; Demsar 2006, JMLR 7). Bisection to the last bit:
    the CDF is increasing and cheap. p = 1 (an alpha below 1e-16) gives infinity, as scipy's."""
    if k < 2 or not 0 < p <= 1:
        raise ValueError(f"need k >= 2 and 0 < p <= 1, got k={k}, p={p}")
    if p == 1:
        return math.inf
    low, high = 0.0, 8.0
    while range_cdf(high, k) < p and high < 1e3:
        high *= 2
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            return middle
        if range_cdf(middle, k) < p:
            low = middle
        else:
            high = middle
