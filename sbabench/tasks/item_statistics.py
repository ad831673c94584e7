"""The per-item statistic of each task type, over many resamples at once.

Each function takes the n items' gold values and predictions and a (B, n) array of item
indices, one row per bootstrap resample, and returns the B statistics; the task-type registry
names which one a type uses.

Written by hand, vectorised over the B resamples, because a paired bootstrap calls them
thousands of times: scikit-learn's `v_measure_score` and `average_precision_score` validate
their inputs on every call, which took about 95% of `sbabench compare` (20,020 calls on the
quickstart). The formulas follow scikit-learn's step by step and agree with it to 1e-12 on
every resample (tests/tasks/test_item_statistics.py, property-based); the `*_sklearn` twins
call scikit-learn one row at a time, for those tests and for the benchmark.
"""

from __future__ import annotations

import numpy as np


def resampled_ranks(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B, n) average ranks of `values[index]` within each row, the numbers
    `scipy.stats.rankdata(values[index], axis=1)` gives, without sorting each row: the distinct
    values are sorted once, each resample becomes how often it drew each of them (one
    bincount), and a value drawn c times after m smaller draws has the average rank
    m + (c + 1) / 2 (integers and halves: exact in float64)."""
    distinct, code = np.unique(values, return_inverse=True)
    drawn = code[index]
    counts = _resample_counts(drawn, len(distinct))
    ranks = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
    return np.take_along_axis(ranks, drawn, axis=1)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1 = smallest, ties share their mean rank) of a 1-D array, the numbers
    `scipy.stats.rankdata(values)` gives: the whole array as one resample."""
    return resampled_ranks(values, np.arange(len(values))[None])[0]


def row_spearman(gold: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Spearman correlation of gold and predicted over each resample (ties: average ranks)."""
    a = resampled_ranks(gold, index)
    b = resampled_ranks(predicted, index)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), denominator, out=np.zeros(len(a)), where=denominator > 0)


def _resample_counts(index: np.ndarray, n: int) -> np.ndarray:
    """(B, n): how many times each item was drawn in each resample (one bincount)."""
    rows = len(index)
    cells = (np.arange(rows)[:, None] * n + index).ravel()
    return np.bincount(cells, minlength=rows * n).reshape(rows, n).astype(np.float64)


def row_average_precision(gold: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Average precision of the 0/1 labels ranked by the predicted similarity, per resample (0
    for a resample whose labels are all 0 or all 1).

    AP = sum over thresholds of (recall step) x precision, a threshold at each distinct score:
    every positive counts once, with the precision at the end of its group of tied scores. A
    resample is the items weighted by how often it drew them, so the items are sorted once.
    """
    n = len(gold)
    counts = _resample_counts(index, n)
    order = np.argsort(-predicted, kind="stable")
    scores, labels, weights = predicted[order], gold[order].astype(np.float64), counts[:, order]
    true_positives = np.cumsum(weights * labels, axis=1)
    drawn = np.cumsum(weights, axis=1)
    # the end of each group of tied scores: the last position before the score changes
    is_end = np.ones(n, dtype=bool)
    is_end[:-1] = scores[1:] != scores[:-1]
    position = np.arange(n)
    group_end = np.minimum.accumulate(np.where(is_end, position, n)[::-1])[::-1]
    tp_end, drawn_end = true_positives[:, group_end], drawn[:, group_end]
    precision = np.divide(tp_end, drawn_end, out=np.zeros_like(tp_end), where=drawn_end > 0)
    positives = true_positives[:, -1]
    valid = (positives > 0) & (positives < index.shape[1])
    total = (weights * labels * precision).sum(1)
    return np.divide(total, positives, out=np.zeros(len(index)), where=valid)


def _entropy_terms(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """-sum_i (c_i / N) (log c_i - log N) over the last axis, zero counts skipped."""
    safe = np.where(counts > 0, counts, 1.0)
    terms = (counts / totals[:, None]) * (np.log(safe) - np.log(totals)[:, None])
    return -np.where(counts > 0, terms, 0.0).sum(1)


def row_v_measure(gold: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> np.ndarray:
    """V-measure of gold classes vs predicted clusters, per resample (beta = 1).

    From one contingency table per row, built with a single `bincount` over
    (row, class, cluster) codes: homogeneity = MI / H(classes), completeness = MI / H(clusters)
    (1 when that entropy is 0), V = 2hc / (h + c) (0 when both are 0).
    """
    _, gold_codes = np.unique(gold, return_inverse=True)
    _, pred_codes = np.unique(predicted, return_inverse=True)
    gold_codes, pred_codes = gold_codes.reshape(-1)[index], pred_codes.reshape(-1)[index]
    rows, n = gold_codes.shape
    classes, clusters = int(gold_codes.max()) + 1, int(pred_codes.max()) + 1
    cells = (np.arange(rows)[:, None] * classes + gold_codes) * clusters + pred_codes
    table = np.bincount(cells.ravel(), minlength=rows * classes * clusters)
    table = table.reshape(rows, classes, clusters).astype(np.float64)
    total = np.full(rows, float(n))
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


def row_average_precision_sklearn(
    gold: np.ndarray, predicted: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """`row_average_precision` through scikit-learn, one resample at a time (reference)."""
    from sklearn.metrics import average_precision_score

    return np.array(
        [
            average_precision_score(g, p) if 0 < g.sum() < len(g) else 0.0
            for g, p in zip(gold[index], predicted[index], strict=True)
        ]
    )


def row_v_measure_sklearn(gold: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`row_v_measure` through scikit-learn, one resample at a time (reference)."""
    from sklearn.metrics import v_measure_score

    pairs = zip(gold[index], predicted[index], strict=True)
    return np.array([v_measure_score(g, p) for g, p in pairs])
