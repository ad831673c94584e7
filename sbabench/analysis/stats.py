"""Paired significance over the same test items, and tests across tasks.

Pure functions over arrays; no printing. What scipy lacks (Steiger's test of dependent
correlations, Holm's step-down, Nemenyi's critical difference) is written out below with its
reference; the null distributions come from `null_distributions`, which keeps scipy.stats' 1-2 s
import off `compare` (scipy.stats is imported only for Wilcoxon with ties or over 50 tasks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sbabench.analysis import null_distributions as null
from sbabench.analysis.uncertainty import Spread
from sbabench.tasks.item_statistics import average_ranks, resample_weights
from sbabench.tasks.items import ItemScores
from sbabench.tasks.types import by_item_kind


@dataclass(frozen=True)
class PairedTest:
    """A paired bootstrap of the difference of one statistic between two systems."""

    delta: float
    """Statistic of the candidate minus that of the baseline, on all items."""
    ci_low: float
    """Lower end of the 95% percentile interval of the resampled differences."""
    ci_high: float
    """Upper end of that interval."""
    p_value: float
    """Two-sided p-value of delta = 0 (`spread`'s reference, no resampling floor)."""
    n_items: int
    """Items per resample (summed over subsets)."""
    spread: Spread
    """The bootstrap's variance of delta, with its reference distribution."""


def statistic(
    kind: str, gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """The per-item statistic of `gold` / `predicted` (n,) over each resample, a row of
    `weights` (B, n) saying how often it drew each item (`resample_weights`; default: every
    item once), as the task type whose per-item predictions carry the tag `kind` defines it
    (see `sbabench.tasks.types`)."""
    result: np.ndarray = statistics(kind, gold, [predicted], weights)[0]
    return result


def statistics(
    kind: str,
    gold: np.ndarray,
    predictions: Sequence[np.ndarray],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(R, B): `statistic` of each of R predictions of the same items over each resample, in
    one call, so the task type's batched form shares what depends on gold and the resample
    only (`TaskType.statistic_many`). The weights are draw counts, whole numbers, as
    `resample_weights` makes them: the rank statistics read them as copies of an item, so
    fractional weights give numbers that mean nothing."""
    task_type = by_item_kind(kind)
    if task_type is None:
        raise ValueError(f"unknown item kind {kind!r}")
    rows = np.ones((1, len(gold))) if weights is None else weights
    predictions = [np.asarray(p) for p in predictions]
    result: np.ndarray = task_type.statistic_many_fn()(np.asarray(gold), predictions, rows)
    return result


def observed_and_resampled(
    kind: str, gold: np.ndarray, predictions: Sequence[np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(R,) statistics on all items and (R, B) on the resamples, from `weights` (B + 1, n) whose
    row 0 is every item once (`resample_weights(..., all_items_first=True)`). A task type with a
    batched form scores all B + 1 rows in one call, so the items are sorted and grouped once;
    the others score row 0 and the resamples apart, each row in the block position it always
    had (a BLAS product's last bits can depend on a row's place in the block)."""
    if len(gold) == 0:
        raise ValueError("no items to compare")
    task_type = by_item_kind(kind)
    if task_type is not None and task_type.statistic_many is not None:
        both = statistics(kind, gold, predictions, weights)
        return both[:, 0], both[:, 1:]
    observed = statistics(kind, gold, predictions, weights[:1])[:, 0]
    return observed, statistics(kind, gold, predictions, weights[1:])


def signed_runs(
    *sides: tuple[ItemScores, float],
) -> tuple[list[np.ndarray], list[tuple[float, int]]]:
    """Every prediction of each side (a clustering unit's k-means runs, else its one
    prediction) with its share of the difference, (sign, runs of that side): a side's
    statistic is the mean over its runs, added as sign * value / runs."""
    predictions: list[np.ndarray] = []
    shares: list[tuple[float, int]] = []
    for scores, sign in sides:
        runs = [np.asarray(run) for run in (scores.runs or [scores.predicted])]
        predictions += runs
        shares += [(sign, len(runs))] * len(runs)
    return predictions, shares


def paired_bootstrap(
    candidate: dict[str, ItemScores],
    baseline: dict[str, ItemScores],
    n_resamples: int = 1000,
    seed: int = 0,
) -> PairedTest:
    """Resample items (pairs or documents) with replacement, the same indices for both systems.

    With several subsets, items are resampled within each subset and the statistic is the mean
    over subsets, as mteb's main score is.
    """
    rng = np.random.default_rng(seed)
    deltas = np.zeros(n_resamples)
    observed = 0.0
    n_items = 0
    subsets = sorted(set(candidate) & set(baseline))
    if set(candidate) != set(baseline) or not subsets:
        raise ValueError(subset_mismatch(candidate, baseline))
    if any(has_nan(scores[s]) for scores in (candidate, baseline) for s in subsets):
        # ranks would order the NaNs and give a number: a diverged model would look tested
        return _undefined(sum(len(candidate[s].gold) for s in subsets))
    for subset in subsets:
        a, b = candidate[subset], baseline[subset]
        if a.kind != b.kind:
            raise ValueError(f"subset {subset!r}: the two sides hold different item kinds")
        gold = np.asarray(a.gold)
        check_same_items(subset, gold, np.asarray(b.gold))
        n_items += len(gold)
        index = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
        # Clustering: the statistic is the mean V-measure over the stored k-means runs.
        predictions, shares = signed_runs((a, 1.0), (b, -1.0))
        weights = resample_weights(index, len(gold), all_items_first=True)
        values, resampled = observed_and_resampled(a.kind, gold, predictions, weights)
        for value, (sign, runs) in zip(values, shares, strict=True):
            observed += sign * float(value) / runs
        for row, (sign, runs) in zip(resampled, shares, strict=True):
            deltas += sign * row / runs
    smallest = min(len(candidate[s].gold) for s in subsets)  # its plug-in factor is largest
    return _from_resamples(observed / len(subsets), deltas / len(subsets), n_items, smallest)


def subset_mismatch(candidate: Mapping[str, object], baseline: Mapping[str, object]) -> str:
    """Why two sides' subsets do not pair, naming the subsets of one side only."""
    only_new, only_base = (
        sorted(set(candidate) - set(baseline)),
        sorted(set(baseline) - set(candidate)),
    )
    if not candidate or not baseline:
        return "no per-item scores"
    parts = [f"{', '.join(only_new)} only in the candidate"] if only_new else []
    parts += [f"{', '.join(only_base)} only in the baseline"] if only_base else []
    return f"subsets differ: {'; '.join(parts)}"


def check_same_items(subset: str, gold: np.ndarray, other: np.ndarray) -> None:
    """A ValueError naming the first item whose gold value differs (the two sides were scored
    on different items: a task's data or split changed)."""
    if len(gold) != len(other):
        raise ValueError(f"subset {subset!r}: {len(gold)} items against {len(other)}")
    differ = np.flatnonzero(~np.isclose(gold, other))
    if len(differ):
        i = int(differ[0])
        raise ValueError(
            f"subset {subset!r}: gold differs at item {i} ({gold[i]:g} against {other[i]:g}): "
            "scored on different items"
        )


def _undefined(n_items: int) -> PairedTest:
    nan = math.nan
    return PairedTest(nan, nan, nan, nan, n_items, Spread(nan, max(n_items - 1, 1)))


def _from_resamples(
    observed: float, deltas: np.ndarray, n_items: int, smallest: int | None = None
) -> PairedTest:
    """The test from the observed difference and its resampled ones. The bootstrap's variance
    is the plug-in ((n - 1) / n of the unbiased one), so it is scaled by n / (n - 1), and read
    against Student's t with n - 1 df: too narrow otherwise for a mean over few items. A
    resample whose statistic is undefined (all its predictions tied) is left out; with more
    than a tenth of them undefined there is no test."""
    finite = deltas[np.isfinite(deltas)]
    if math.isnan(observed) or len(finite) < 0.9 * len(deltas) or len(finite) < 2:
        return _undefined(n_items)
    n = smallest or n_items  # items are resampled within subsets: the smallest one's factor
    spread = Spread(float(finite.var(ddof=1)) * n / max(n - 1, 1), n_items - 1)
    low, high = spread.interval(observed)
    return PairedTest(observed, low, high, spread.p_two_sided(observed), n_items, spread)


def has_nan(scores: ItemScores) -> bool:
    """Whether any prediction (or clustering run) of a subset is NaN."""
    runs = scores.runs or [scores.predicted]
    return any(bool(np.isnan(np.asarray(run, dtype=np.float64)).any()) for run in runs)


def steiger_z(gold: Sequence[float], a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Steiger's (1980) Z*2 test that corr(gold, a) = corr(gold, b), on ranks (Spearman).

    The two correlations share `gold` and are dependent through corr(a, b). Returns (Z, p),
    NaN for NaN predictions or a constant one. Steiger, J. H. (1980), Tests for comparing elements of a correlation matrix, Psychol. Bull.
    87(2), eq. 15; scipy has no dependent-correlation test.
    """
    n = len(gold)
    if np.isnan(np.asarray([*a, *b], dtype=np.float64)).any():
        return math.nan, math.nan
    r12, r13, r23 = (_spearman(x, y) for x, y in ((gold, a), (gold, b), (a, b)))
    if n < 4 or r23 >= 1.0:
        return 0.0, 1.0
    mean = (r12 + r13) / 2
    psi = r23 * (1 - 2 * mean**2) - 0.5 * mean**2 * (1 - 2 * mean**2 - r23**2)
    covariance = psi / (1 - mean**2) ** 2
    z = (math.atanh(_inside_unit(r12)) - math.atanh(_inside_unit(r13))) * math.sqrt(n - 3)
    z /= math.sqrt(max(2 - 2 * covariance, 1e-12))
    return float(z), null.normal_two_sided_p(z)


def _inside_unit(r: float, bound: float = 0.999999) -> float:
    """A correlation clipped into (-1, 1), where atanh is finite (a NaN stays NaN)."""
    return r if math.isnan(r) else max(-bound, min(bound, r))


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of two sequences as scipy.stats.spearmanr computes it (numpy's corrcoef
    of the average ranks, bit for bit), nan when one of them is constant."""
    ranks_x = average_ranks(np.asarray(x, dtype=np.float64))
    ranks_y = average_ranks(np.asarray(y, dtype=np.float64))
    if np.ptp(ranks_x) == 0 or np.ptp(ranks_y) == 0:
        return float("nan")
    # the same (n, 2) layout scipy hands to corrcoef, so the sums run in the same order
    return float(np.corrcoef(np.column_stack((ranks_x, ranks_y)), rowvar=False)[1, 0])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error); scipy offers only FDR control.

    A NaN p-value (a test that could not be computed) stays NaN and still counts in the family
    size, as if it were the largest: the others are adjusted as strictly as with it read."""
    m = len(p_values)
    order = sorted((i for i in range(m) if not math.isnan(p_values[i])), key=lambda i: p_values[i])
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, null.at_most_one((m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class AcrossTasks:
    """A test across tasks of per-task score differences or rankings."""

    test: str
    """`wilcoxon` (two systems) or `friedman` (more)."""
    statistic: float
    """The test statistic."""
    p_value: float
    """Its p-value (nan when there are too few tasks)."""
    n_tasks: int
    """Tasks used."""
    critical_difference: float | None = None
    """Nemenyi critical difference of mean ranks (friedman only)."""
    mean_ranks: dict[str, float] | None = None
    """Mean rank of each system, 1 = best (friedman only)."""
    note: str = ""
    """Why there is no p-value although there were tasks enough (a NaN score)."""


def wilcoxon_across_tasks(differences: Sequence[float]) -> AcrossTasks:
    """Wilcoxon signed-rank test that per-task differences are centred on 0 (zeros dropped).

    Exact, as scipy.stats.wilcoxon's default is, for up to 50 untied differences: the statistic
    is min(T+, T-), the p-value two-sided. Ties or more differences go to scipy.stats itself
    (a permutation or normal approximation there). A NaN difference (a diverged model) is not
    dropped: the test is NaN, with a note.
    """
    undefined = sum(math.isnan(d) for d in differences)
    if undefined:
        note = f"NaN score in {undefined} task(s)"
        return AcrossTasks("wilcoxon", math.nan, math.nan, len(differences), note=note)
    values = np.array([d for d in differences if d != 0], dtype=np.float64)
    n = len(values)
    if n < 2:
        return AcrossTasks("wilcoxon", float("nan"), float("nan"), len(differences))
    magnitudes = np.abs(values)
    if n > 50 or len(np.unique(magnitudes)) < n:
        from scipy import stats as sps  # 1-2 s import, only for the rare tied / large case

        result = sps.wilcoxon(values)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        r_plus = int(average_ranks(magnitudes)[values > 0].sum())  # untied: ranks 1..n
        statistic = float(min(r_plus, n * (n + 1) // 2 - r_plus))
        p_value = null.signed_rank_p(r_plus, n)
    return AcrossTasks("wilcoxon", statistic, p_value, len(differences))


def friedman_nemenyi(scores: Mapping[str, Sequence[float]], alpha: float = 0.05) -> AcrossTasks:
    """Friedman test over systems (columns) x tasks (rows), with Nemenyi's critical difference.

    CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2)
    (Demsar 2006, JMLR 7). A NaN score makes the test NaN, with a note naming its systems.
    """
    names = list(scores)
    table = np.array([scores[n] for n in names], dtype=np.float64).T  # (tasks, systems)
    n, k = table.shape
    undefined = [
        name for name, column in zip(names, table.T, strict=True) if np.isnan(column).any()
    ]
    if undefined:
        note = f"NaN score for {', '.join(undefined)}"
        return AcrossTasks("friedman", math.nan, math.nan, n, note=note)
    ranks = np.stack([average_ranks(-row) for row in table])
    mean_ranks = {name: float(r) for name, r in zip(names, ranks.mean(0), strict=True)}
    if n < 2 or k < 3:
        return AcrossTasks("friedman", float("nan"), float("nan"), n, None, mean_ranks)
    statistic = _friedman_statistic(table, ranks)
    p_value = null.chi2_sf(statistic, k - 1)
    q = null.range_ppf(1 - alpha, k) / math.sqrt(2)
    cd = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return AcrossTasks("friedman", statistic, p_value, n, cd, mean_ranks)


def _friedman_statistic(table: np.ndarray, ranks: np.ndarray) -> float:
    """Friedman's chi-square of a (tasks, systems) table and its within-task average ranks,
    corrected for ties: (12 / (n k (k+1)) sum_j R_j^2 - 3 n (k+1)) / (1 - sum (t^3 - t) /
    (n k (k^2 - 1))), R_j the rank sum of system j, t the sizes of the tied groups."""
    n, k = table.shape
    tie_sizes = [np.unique(row, return_counts=True)[1] for row in table]
    correction = 1 - sum(float(np.sum(t**3 - t)) for t in tie_sizes) / (n * k * (k * k - 1))
    if correction <= 0:  # every system tied on every task: no ranking to test (scipy: nan)
        return float("nan")
    rank_sums = ranks.sum(0)
    return float((12 / (n * k * (k + 1)) * np.sum(rank_sums**2) - 3 * n * (k + 1)) / correction)
