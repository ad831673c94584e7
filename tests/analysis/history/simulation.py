"""Simulated histories for calibrating step detection (what `test_changes` measures).

A history is `commits` points of one unit scored on the same `items` test items (a "queries"
unit: the score is the mean of the per-item values). Item i's value at commit c is
level_c + a_i + e_ci, a_i ~ N(0, shared) fixed across commits (the items' own difficulty, which
the paired test cancels) and e_ci ~ N(0, 1 - shared) new at every commit; so every point's
standard error is 1 / sqrt(items), and a step of k standard errors moves the level by
k / sqrt(items). A point's variance is the items' sample variance / items: what the items
bootstrap of `record` estimates (without its resampling noise, which keeps the simulation fast).
"""

from __future__ import annotations

import math

import numpy as np

from sbabench.analysis.history.changes import POOLED, change_points, levels
from sbabench.analysis.history.series import pool_items
from sbabench.analysis.stats import paired_bootstrap
from sbabench.tasks.items import ItemScores


def history(
    rng: np.random.Generator,
    commits: int,
    items: int,
    shared: float,
    step_at: int | None,
    step_se: float,
) -> list[np.ndarray]:
    """Per-item values at each commit (a step of `step_se` standard errors at `step_at`)."""
    own = rng.normal(0, math.sqrt(shared), items)
    step = step_se / math.sqrt(items)
    return [
        own + rng.normal(0, math.sqrt(1 - shared), items) + (step if step_at is not None and c >= step_at else 0.0)
        for c in range(commits)
    ]  # fmt: skip


def _items(values: np.ndarray) -> dict[str, ItemScores]:
    return {
        "default": ItemScores(kind="queries", gold=[1.0] * len(values), predicted=values.tolist())
    }


def confirmed_steps(
    values: list[np.ndarray], alpha: float, resamples: int, seed: int
) -> list[tuple[int, float]]:
    """(index, paired delta) of every step found and confirmed (paired p < alpha), as
    `changes.find_steps` confirms it: the items of the levels on either side pooled."""
    scores = np.array([v.mean() for v in values])
    variances = np.array([v.var(ddof=1) / len(v) for v in values])
    found = []
    for cut, left, right in levels(change_points(scores, variances, alpha), len(values)):
        before = pool_items([_items(v) for v in values[max(left.start, cut - POOLED) : cut]])
        after = pool_items([_items(v) for v in values[cut : min(right.stop, cut + POOLED)]])
        assert not isinstance(before, str) and not isinstance(after, str)
        test = paired_bootstrap(after, before, resamples, seed)
        if test.p_value < alpha:
            found.append((cut, test.delta))
    return found


def rates(
    histories: int,
    *,
    commits: int = 20,
    items: int = 100,
    shared: float = 0.5,
    step_se: float = 3.0,
    alpha: float = 0.05,
    resamples: int = 300,
    seed: int = 0,
) -> tuple[float, float]:
    """(share of step-free histories with a confirmed step, share of histories with a step
    of `step_se` at a random commit whose step is found there with the right sign)."""
    rng = np.random.default_rng(seed)
    false = found = 0
    for h in range(histories):
        null = history(rng, commits, items, shared, None, 0.0)
        false += bool(confirmed_steps(null, alpha, resamples, h))
        at = int(rng.integers(3, commits - 2))
        stepped = history(rng, commits, items, shared, at, step_se)
        found += any(
            cut == at and delta > 0 for cut, delta in confirmed_steps(stepped, alpha, resamples, h)
        )
    return false / histories, found / histories
