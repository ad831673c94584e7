"""The vectorised per-item statistics equal scikit-learn's on every resample (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sbabench.tasks.item_statistics import (
    average_ranks,
    resampled_ranks,
    row_average_precision,
    row_average_precision_sklearn,
    row_spearman,
    row_v_measure,
    row_v_measure_sklearn,
)

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


@st.composite
def _labellings(draw: st.DrawFn) -> Data:
    rows, n = draw(st.integers(1, 8)), draw(st.integers(1, 40))
    classes, clusters = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, classes, size=n).astype(float)
    predicted = rng.integers(0, clusters, size=n).astype(float)
    if draw(st.booleans()):  # cluster ids far apart: empty clusters in the shared table
        predicted = predicted * 7 + 3
    return gold, predicted, rng.integers(0, n, size=(rows, n))


@given(_labellings())
@settings(max_examples=300, deadline=None)
def test_v_measure_equals_sklearn_on_every_resample(data: Data) -> None:
    gold, predicted, index = data
    np.testing.assert_allclose(
        row_v_measure(gold, predicted, index),
        row_v_measure_sklearn(gold, predicted, index),
        rtol=0,
        atol=1e-12,
    )


@st.composite
def _rankings(draw: st.DrawFn) -> Data:
    rows, n = draw(st.integers(1, 8)), draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    share = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    labels = (rng.random(n) < share).astype(float)
    decimals = draw(st.sampled_from([0, 1, 6]))  # 0 and 1 decimals: many tied scores
    scores = np.round(rng.normal(size=n), decimals)
    return labels, scores, rng.integers(0, n, size=(rows, n))


@given(_rankings())
@settings(max_examples=300, deadline=None)
def test_average_precision_equals_sklearn_on_every_resample(data: Data) -> None:
    labels, scores, index = data
    np.testing.assert_allclose(
        row_average_precision(labels, scores, index),
        row_average_precision_sklearn(labels, scores, index),
        rtol=0,
        atol=1e-12,
    )


@given(_labellings())
@settings(max_examples=300, deadline=None)
def test_resampled_ranks_are_scipys_rankdata_exactly(data: Data) -> None:
    values, other, index = data
    for x in (values, other, values + 0.5 * other):  # few ties, many ties, mixed
        np.testing.assert_array_equal(resampled_ranks(x, index), sps.rankdata(x[index], axis=1))
        np.testing.assert_array_equal(average_ranks(x), sps.rankdata(x))


def test_spearman_equals_scipy_on_every_resample() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(float)  # ties, as STS gold scores have
    predicted = gold + rng.normal(0, 2, 300)
    index = rng.integers(0, 300, size=(50, 300))
    expected = [sps.spearmanr(gold[row], predicted[row]).statistic for row in index]
    np.testing.assert_allclose(row_spearman(gold, predicted, index), expected, rtol=0, atol=1e-12)


def _all(n: int) -> np.ndarray:
    return np.arange(n)[None]


def test_edge_cases_by_hand() -> None:
    one_class = np.zeros(5)
    spread = np.array([0.0, 1, 2, 3, 4])
    for gold, predicted in ((one_class, spread), (spread, one_class), (spread, spread)):
        assert row_v_measure(gold, predicted, _all(5))[0] == pytest.approx(
            row_v_measure_sklearn(gold, predicted, _all(5))[0], abs=1e-12
        )
    assert row_v_measure(spread, spread, _all(5))[0] == 1.0
    # all tied: every positive gets the overall precision
    assert row_average_precision(np.array([1.0, 0, 1, 0]), np.zeros(4), _all(4))[0] == 0.5
    assert row_average_precision(np.ones(2), np.array([0.3, 0.1]), _all(2))[0] == 0.0
    ranked = row_average_precision(
        np.array([0.0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]), _all(4)
    )
    assert ranked[0] == 1.0
    # a resample that drew the one negative twice and the positive once
    drawn = row_average_precision(np.array([1.0, 0.0]), np.array([0.2, 0.9]), np.array([[1, 1, 0]]))
    assert drawn[0] == pytest.approx(1 / 3)
