"""The per-item statistic of each task type, over many resamples at once.

Each function takes (B, n) gold and predicted arrays (one row per bootstrap resample) and returns
the B statistics; the task-type registry names which one a type uses.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def row_spearman(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of (B, n) arrays (ties get average ranks)."""
    a = sps.rankdata(gold, axis=1)
    b = sps.rankdata(predicted, axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), denominator, out=np.zeros(len(a)), where=denominator > 0)


def row_average_precision(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Average precision of the 0/1 labels ranked by the predicted similarity, per row."""
    from sklearn.metrics import average_precision_score

    return np.array(
        [
            average_precision_score(g, p) if 0 < g.sum() < len(g) else 0.0
            for g, p in zip(gold, predicted, strict=True)
        ]
    )


def row_v_measure(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """V-measure of gold classes vs predicted clusters, per row."""
    from sklearn.metrics import v_measure_score

    return np.array([v_measure_score(g, p) for g, p in zip(gold, predicted, strict=True)])
