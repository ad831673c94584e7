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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


def resample_weights(index: np.ndarray, n: int, *, all_items_first: bool = False) -> np.ndarray:
    """(B, n) float32: how many times each row of `index` (B, m) drew each of the n items
    (exact below 2^24 draws). Every built-in statistic reads a resample as these weights: the
    items are sorted and grouped once for all B resamples, and the B x m draws never gathered.
    `all_items_first`: (B + 1, n), row 0 every item once (the statistic on all items), so one
    call of a statistic gives it and the resamples (no second copy of the array)."""
    first = 1 if all_items_first else 0
    weights = np.empty((len(index) + first, n), dtype=np.float32)
    weights[:first] = 1.0

    def count(rows: range) -> None:  # one bincount a row: no (row, item) codes to build
        for row in rows:
            weights[first + row] = np.bincount(index[row], minlength=n)

    # threads only pay for their start on large draws (a pool per call costs ~3 ms)
    parts = min(_THREADS, len(index)) if index.size >= _THREADED_DRAWS else 1
    if parts <= 1:
        count(range(len(index)))
    else:  # bincount lets go of the GIL: the rows split over the threads
        with ThreadPoolExecutor(max_workers=parts) as pool:
            list(pool.map(count, [range(k, len(index), parts) for k in range(parts)]))
    return weights


_THREADED_DRAWS = 1 << 20
"""Draws (resamples x items) from which `resample_weights` splits its rows over threads."""

BLOCK_DRAWS = 1 << 18
"""Resamples are computed in blocks of about this many item weights (float64 arrays of 2 MB):
each statistic makes several passes over its (B, n) arrays, and at 16,000 items x 1,000
resamples (128 MB each) those passes ran from memory, not from the CPU's cache."""


def _by_blocks(weights: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`compute` over blocks of rows of `weights` (as float64), the results joined along their
    last axis (B,) or (R, B). Blocks run on a few threads: numpy lets go of the GIL in the
    passes that take the time (cumsum, reduceat, bincount, take), and blocks share nothing
    (`benchmarks/bench_compare_scale.py` times compare with one thread and as shipped)."""
    step = max(1, BLOCK_DRAWS // max(weights.shape[1], 1))
    starts = range(0, len(weights), step)

    def block(start: int) -> np.ndarray:
        return compute(weights[start : start + step].astype(np.float64))

    if len(starts) == 1:
        return block(0)
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(starts))) as pool:
        return np.concatenate(list(pool.map(block, starts)), axis=-1)


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
            return np.take(weights, self.order, axis=1)
        return np.add.reduceat(np.take(weights, self.order, axis=1), self.starts, axis=1)

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """(B, n): the average rank each item's copies take in each resample (see
        `weighted_ranks`)."""
        return (self.doubled_ranks(weights) + 1) / 2

    def doubled_ranks(self, weights: np.ndarray) -> np.ndarray:
        """(B, n): 2 x rank - 1 of each item's copies in each resample. A group drawn d times
        after C - d smaller draws has the average rank C - d + (d + 1) / 2, so 2 rank - 1 =
        2C - d: whole numbers, two passes in place after the cumulative sum."""
        drawn = self.sums(weights)
        doubled = np.cumsum(drawn, axis=1)
        doubled *= 2
        doubled -= drawn
        result: np.ndarray = np.take(doubled, self.code, axis=1)
        return result


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

    A resample of m draws has mean rank (m + 1) / 2 whatever its ties, so with the ranks as
    a = 2 rank - 1 (mean m; Pearson's r does not change) r = (S_ab - m^3) /
    sqrt((S_aa - m^3)(S_bb - m^3)), S_xy = sum_i w_i x_i y_i. The a are whole numbers and every
    sum stays below 2^53 up to about 130,000 items, so the sums are exact in float64."""
    result: np.ndarray = row_spearman_many(gold, [predicted], weights)[0]
    return result


def row_spearman_many(
    gold: np.ndarray, predictions: Sequence[np.ndarray], weights: np.ndarray
) -> np.ndarray:
    """(R, B): `row_spearman` of each of R predictions of the same items, the gold ranks of a
    resample computed once for all of them (a paired test ranks gold once, not twice)."""
    by_gold = _Groups.of(gold)
    by_predictions = [_Groups.of(p) for p in predictions]

    def block(w: np.ndarray) -> np.ndarray:
        centre = w.sum(1) ** 3
        a = by_gold.doubled_ranks(w)
        weighted_a = w * a
        variance_a = _row_dot(weighted_a, a) - centre
        out = np.full((len(by_predictions), len(w)), np.nan)  # all tied: undefined
        for r, by_prediction in enumerate(by_predictions):
            b = by_prediction.doubled_ranks(w)
            covariance = _row_dot(weighted_a, b) - centre
            variance_b = _row_dot(w * b, b) - centre
            denominator = np.sqrt(variance_a * variance_b)
            np.divide(covariance, denominator, out=out[r], where=denominator > 0)
        return out

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
    tied = not is_end.all()  # without ties every item ends its own group: no gathers

    def block(w: np.ndarray) -> np.ndarray:
        w = np.take(w, order, axis=1)
        positive = w * labels
        true_positives = np.cumsum(positive, axis=1)
        drawn = np.cumsum(w, axis=1)
        positives, total_drawn = true_positives[:, -1].copy(), drawn[:, -1].copy()
        if tied:
            true_positives = np.take(true_positives, group_end, axis=1)
            drawn = np.take(drawn, group_end, axis=1)
        # Where nothing is drawn yet no positive is either (0 / 1 = 0): a plain divide, in
        # place, about 7x faster than one masked by `where`.
        np.maximum(drawn, 1.0, out=drawn)
        precision = np.divide(true_positives, drawn, out=true_positives)
        valid = (positives > 0) & (positives < total_drawn)
        # Summed item after item along each row, the order every earlier release used (its
        # gathered arrays were column-major): a pairwise sum or an einsum of these non-integer
        # terms would move the last bits of the resampled statistics.
        positive *= precision
        total = np.asfortranarray(positive).sum(1)
        return np.divide(total, positives, out=np.zeros(len(w)), where=valid)

    return _by_blocks(weights, block)


def _row_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_i x[b, i] y[b, i] for each row b, without the (B, n) product array (einsum: about
    2.5x faster than `(x * y).sum(1)` here)."""
    result: np.ndarray = np.einsum("ij,ij->i", x, y)
    return result


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
    result: np.ndarray = row_v_measure_many(gold, [predicted], weights)[0]
    return result


def row_v_measure_many(
    gold: np.ndarray, predictions: Sequence[np.ndarray], weights: np.ndarray
) -> np.ndarray:
    """(R, B): `row_v_measure` of each of R clusterings of the same items (a clustering unit
    stores 10 seeded k-means runs, so a paired test scores 20).

    Each resample's contingency table is one `np.bincount` over (resample, cell) codes with
    the weights: a single pass over the block per clustering, whatever the number of classes
    and clusters (the cells are few and the items many)."""
    _, gold_codes = np.unique(gold, return_inverse=True)
    codes = [np.unique(p, return_inverse=True)[1].reshape(-1) for p in predictions]
    # Items with the same class and the same cluster in every clustering fall in the same
    # cells: their weights are summed once (one pass), and each clustering's table is then
    # summed over these groups, not over the items (k-means runs mostly agree, so groups are
    # far fewer than items; at worst one per item).
    signatures, group = np.unique(
        np.stack([gold_codes.reshape(-1), *codes]), axis=1, return_inverse=True
    )
    by_group = _Groups.of(group.reshape(-1))
    classes = int(signatures[0].max()) + 1 if signatures.size else 1
    # The clusterings with as many clusters (seeded k-means runs: all of them) are scored by
    # one V-measure call on their stacked tables; each table keeps its own shape, so every
    # number is the one `row_v_measure` gives for that clustering alone, to the bit.
    shapes: dict[int, list[int]] = {}
    for r, row in enumerate(signatures[1:]):
        shapes.setdefault(int(row.max()) + 1 if row.size else 1, []).append(r)

    def block(w: np.ndarray) -> np.ndarray:
        rows, total = len(w), w.sum(1)
        flat = by_group.sums(w).ravel()  # (rows x groups)
        out = np.empty((len(signatures) - 1, rows))
        for clusters, same_shape in shapes.items():
            size = classes * clusters
            offsets = np.arange(rows)[:, None] * size
            # as many tables at once as keep them near a block's size (with many classes and
            # clusters one table can be larger than the items: then one at a time)
            step = max(1, BLOCK_DRAWS // (rows * size))
            for start in range(0, len(same_shape), step):
                members = same_shape[start : start + step]
                tables = np.empty((len(members), rows * size))
                for k, r in enumerate(members):
                    cell = (offsets + signatures[0] * clusters + signatures[r + 1]).ravel()
                    tables[k] = np.bincount(cell, weights=flat, minlength=rows * size)
                scored = _v_measure(
                    tables.reshape(-1, classes, clusters), np.tile(total, len(members))
                )
                out[members] = scored.reshape(len(members), rows)
        return out

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
