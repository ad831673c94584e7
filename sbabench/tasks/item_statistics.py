"""The per-item statistic of each task type, over many resamples at once.

Each function takes the n items' gold values and predictions and a (B, n) array of weights,
one row per bootstrap resample (how many times it drew each item, `resample_weights`), and
returns the B statistics; the task-type registry names which one a type uses.

Written by hand, vectorised over the B resamples, because a paired bootstrap calls them
thousands of times: scikit-learn's `v_measure_score` and `average_precision_score` validate
their inputs on every call, which took about 95% of `sbabench compare` (20,020 calls on the
quickstart). The formulas follow scikit-learn's step by step and agree with it to 1e-12 on
every resample (tests/tasks/test_item_statistics.py, property-based); the `*_sklearn` twins
call scikit-learn one row at a time, for those tests and for the benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


def resample_weights(index: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float32: how many times each row of `index` (B, m) drew each of the n items
    (exact below 2^24 draws). Every built-in statistic reads a resample as these weights: the
    items are sorted and grouped once for all B resamples, and the B x m draws never gathered."""
    weights = np.empty((len(index), n), dtype=np.float32)
    step = max(1, BLOCK_DRAWS // max(n, 1))
    for start in range(0, len(index), step):
        block = index[start : start + step]
        cells = (np.arange(len(block))[:, None] * n + block).ravel()
        counts = np.bincount(cells, minlength=len(block) * n)
        weights[start : start + step] = counts.reshape(len(block), n)
    return weights


BLOCK_DRAWS = 1 << 18
"""Resamples are computed in blocks of about this many item weights (float64 arrays of 2 MB):
each statistic makes several passes over its (B, n) arrays, and at 16,000 items x 1,000
resamples (128 MB each) those passes ran from memory, not from the CPU's cache."""


def _by_blocks(weights: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`compute` over blocks of rows of `weights` (as float64), the B results joined. Blocks
    run on a few threads: numpy lets go of the GIL in the passes that take the time (cumsum,
    reduceat, take), and blocks share nothing (`benchmarks/bench_compare_scale.py` times
    compare with one thread and as shipped)."""
    step = max(1, BLOCK_DRAWS // max(weights.shape[1], 1))
    starts = range(0, len(weights), step)

    def block(start: int) -> np.ndarray:
        return compute(weights[start : start + step].astype(np.float64))

    if len(starts) == 1:
        return block(0)
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(starts))) as pool:
        return np.concatenate(list(pool.map(block, starts)))


_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads for blocks of resamples (at most 4: the passes are bound by memory bandwidth)."""


@dataclass(frozen=True)
class _Groups:
    """Items grouped by a code 0..groups-1 (every code present), sorted once."""

    code: np.ndarray
    order: np.ndarray
    starts: np.ndarray | None
    """Where each group starts in `order` (None: every item its own group)."""

    @classmethod
    def of(cls, values: np.ndarray) -> _Groups:
        """Items grouped by their distinct values, in ascending order of value."""
        distinct, code = np.unique(values, return_inverse=True)
        code = code.reshape(-1)
        order = np.argsort(code, kind="stable")
        if len(distinct) == len(code):
            return cls(code, order, None)
        return cls(code, order, np.searchsorted(code[order], np.arange(len(distinct))))

    def sums(self, weights: np.ndarray) -> np.ndarray:
        """(B, groups): the weights summed over each group's items."""
        if self.starts is None:
            return weights[:, self.order]
        return np.add.reduceat(weights[:, self.order], self.starts, axis=1)

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """(B, n): the average rank each item's copies take in each resample (see
        `weighted_ranks`)."""
        drawn = self.sums(weights)
        ranks = np.cumsum(drawn, axis=1) - drawn + (drawn + 1) / 2
        return ranks[:, self.code]


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, n): the average rank (1 = smallest, ties share their mean) that each item's copies
    take in each resample, the numbers `scipy.stats.rankdata(values[index], axis=1)` gives its
    draws. The distinct values are sorted once; a value drawn c times after m smaller draws has
    the average rank m + (c + 1) / 2 (integers and halves: exact in float64)."""
    return _Groups.of(values).ranks(np.asarray(weights, dtype=np.float64))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1 = smallest, ties share their mean rank) of a 1-D array, the numbers
    `scipy.stats.rankdata(values)` gives: the whole array as one resample."""
    return weighted_ranks(values, np.ones((1, len(values))))[0]


def row_spearman(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman correlation of gold and predicted over each resample (ties: average ranks):
    Pearson's r of the ranks, each item counted as often as the resample drew it.

    A resample of m draws has mean rank (m + 1) / 2 whatever its ties, so r = (S_ab - m c^2) /
    sqrt((S_aa - m c^2)(S_bb - m c^2)) with c = (m + 1) / 2 and S_xy = sum_i w_i x_i y_i. Ranks
    are halves and their sums stay below 2^53, so every sum is exact in float64."""
    by_gold, by_prediction = _Groups.of(gold), _Groups.of(predicted)

    def block(w: np.ndarray) -> np.ndarray:
        draws = w.sum(1)
        a, b = by_gold.ranks(w), by_prediction.ranks(w)
        centre = draws * ((draws + 1) / 2) ** 2
        weighted_a = w * a
        covariance = (weighted_a * b).sum(1) - centre
        variance_a = (weighted_a * a).sum(1) - centre
        variance_b = (w * b * b).sum(1) - centre
        denominator = np.sqrt(variance_a * variance_b)
        return np.divide(covariance, denominator, out=np.zeros(len(w)), where=denominator > 0)

    return _by_blocks(weights, block)


def row_average_precision(
    gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision of the 0/1 labels ranked by the predicted similarity, per resample (0
    for a resample whose labels are all 0 or all 1).

    AP = sum over thresholds of (recall step) x precision, a threshold at each distinct score:
    every positive counts once, with the precision at the end of its group of tied scores. A
    resample is the items weighted by how often it drew them, so the items are sorted once.
    """
    n = len(gold)
    order = np.argsort(-predicted, kind="stable")
    scores, labels = predicted[order], gold[order].astype(np.float64)
    # the end of each group of tied scores: the last position before the score changes
    is_end = np.ones(n, dtype=bool)
    is_end[:-1] = scores[1:] != scores[:-1]
    group_end = np.minimum.accumulate(np.where(is_end, np.arange(n), n)[::-1])[::-1]

    def block(w: np.ndarray) -> np.ndarray:
        w = w[:, order]
        true_positives = np.cumsum(w * labels, axis=1)
        drawn = np.cumsum(w, axis=1)
        tp_end, drawn_end = true_positives[:, group_end], drawn[:, group_end]
        precision = np.divide(tp_end, drawn_end, out=np.zeros_like(tp_end), where=drawn_end > 0)
        positives = true_positives[:, -1]
        valid = (positives > 0) & (positives < drawn[:, -1])
        total = (w * labels * precision).sum(1)
        return np.divide(total, positives, out=np.zeros(len(w)), where=valid)

    return _by_blocks(weights, block)


def _entropy_terms(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """-sum_i (c_i / N) (log c_i - log N) over the last axis, zero counts skipped."""
    safe = np.where(counts > 0, counts, 1.0)
    terms = (counts / totals[:, None]) * (np.log(safe) - np.log(totals)[:, None])
    return -np.where(counts > 0, terms, 0.0).sum(1)


def row_v_measure(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """V-measure of gold classes vs predicted clusters, per resample (beta = 1).

    One contingency table per resample, the weights summed per (class, cluster) cell:
    homogeneity = MI / H(classes), completeness = MI / H(clusters) (1 when that entropy is 0),
    V = 2hc / (h + c) (0 when both are 0).
    """
    _, gold_codes = np.unique(gold, return_inverse=True)
    _, pred_codes = np.unique(predicted, return_inverse=True)
    gold_codes, pred_codes = gold_codes.reshape(-1), pred_codes.reshape(-1)
    classes, clusters = int(gold_codes.max()) + 1, int(pred_codes.max()) + 1
    cells = gold_codes * clusters + pred_codes
    by_cell = _Groups.of(cells)
    present = np.unique(cells)

    def block(w: np.ndarray) -> np.ndarray:
        rows = len(w)
        cells_of_row = np.zeros((rows, classes * clusters))
        cells_of_row[:, present] = by_cell.sums(w)
        return _v_measure(cells_of_row.reshape(rows, classes, clusters), w.sum(1))

    return _by_blocks(weights, block)


def _v_measure(table: np.ndarray, total: np.ndarray) -> np.ndarray:
    """V-measure of each (class x cluster) contingency table of `total` items."""
    rows = len(table)
    class_counts, cluster_counts = table.sum(2), table.sum(1)
    entropy_c = _entropy_terms(class_counts, total)
    entropy_k = _entropy_terms(cluster_counts, total)
    mi = _mutual_information(table, class_counts, cluster_counts, total)
    homogeneity = np.divide(mi, entropy_c, out=np.ones(rows), where=entropy_c != 0)
    completeness = np.divide(mi, entropy_k, out=np.ones(rows), where=entropy_k != 0)
    both = homogeneity + completeness
    return np.divide(2 * homogeneity * completeness, both, out=np.zeros(rows), where=both != 0)


def _mutual_information(
    table: np.ndarray, class_counts: np.ndarray, cluster_counts: np.ndarray, total: np.ndarray
) -> np.ndarray:
    """MI of each row's contingency table, as scikit-learn computes it (terms below machine
    epsilon dropped, the sum clipped at 0; 0 when there is one class or one cluster)."""
    nonzero = table > 0
    safe = np.where(nonzero, table, 1.0)
    share = table / total[:, None, None]
    outer = class_counts[:, :, None] * cluster_counts[:, None, :]
    log_outer = -np.log(np.where(nonzero, outer, 1.0)) + 2 * np.log(total)[:, None, None]
    terms = share * (np.log(safe) - np.log(total)[:, None, None]) + share * log_outer
    terms = np.where(nonzero & (np.abs(terms) >= np.finfo(np.float64).eps), terms, 0.0)
    mi = np.clip(terms.sum((1, 2)), 0.0, None)
    single = ((class_counts > 0).sum(1) == 1) | ((cluster_counts > 0).sum(1) == 1)
    return np.where(single, 0.0, mi)


def _draws(weights: np.ndarray) -> np.ndarray:
    """(B, m): the items each resample drew, as indices (each item as often as its weight)."""
    items = np.arange(weights.shape[1])
    return np.stack([np.repeat(items, row.astype(np.int64)) for row in weights])


def row_average_precision_sklearn(
    gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """`row_average_precision` through scikit-learn, one resample at a time (reference)."""
    from sklearn.metrics import average_precision_score

    index = _draws(weights)
    return np.array(
        [
            average_precision_score(g, p) if 0 < g.sum() < len(g) else 0.0
            for g, p in zip(gold[index], predicted[index], strict=True)
        ]
    )


def row_v_measure_sklearn(
    gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """`row_v_measure` through scikit-learn, one resample at a time (reference)."""
    from sklearn.metrics import v_measure_score

    index = _draws(weights)
    pairs = zip(gold[index], predicted[index], strict=True)
    return np.array([v_measure_score(g, p) for g, p in pairs])


def row_mean(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of the per-item values `predicted` over each resample, sum_i w_i p_i / sum_i
    w_i: for retrieval and reranking, each query's value of the main score (nDCG@10, MAP), whose
    mean over the queries is mteb's main score (`gold` is not read)."""
    values = np.asarray(predicted, dtype=np.float64)

    def block(w: np.ndarray) -> np.ndarray:
        draws = w.sum(1)
        return np.divide(w @ values, draws, out=np.zeros(len(w)), where=draws > 0)

    return _by_blocks(weights, block)


def row_accuracy(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The share of items whose predicted class is the gold class, per resample: sum_i w_i
    [p_i = g_i] / sum_i w_i (one classifier run; the paired tests average the runs, as mteb's
    accuracy does)."""
    return row_mean(gold, (np.asarray(gold) == np.asarray(predicted)).astype(np.float64), weights)
