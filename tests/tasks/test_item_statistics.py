"""The vectorised per-item statistics equal scikit-learn's on every resample (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sbabench.tasks.item_statistics import (
    average_ranks,
    resample_weights,
    row_average_precision,
    row_average_precision_sklearn,
    row_spearman,
    row_spearman_many,
    row_v_measure,
    row_v_measure_many,
    row_v_measure_sklearn,
    weighted_ranks,
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
    weights = resample_weights(index, len(gold))
    np.testing.assert_allclose(
        row_v_measure(gold, predicted, weights),
        row_v_measure_sklearn(gold, predicted, weights),
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
    weights = resample_weights(index, len(labels))
    np.testing.assert_allclose(
        row_average_precision(labels, scores, weights),
        row_average_precision_sklearn(labels, scores, weights),
        rtol=0,
        atol=1e-12,
    )


@given(_labellings())
@settings(max_examples=300, deadline=None)
def test_weighted_ranks_are_scipys_rankdata_of_the_draws_exactly(data: Data) -> None:
    values, other, index = data
    weights = resample_weights(index, len(values))
    for x in (values, other, values + 0.5 * other):  # few ties, many ties, mixed
        ranks = weighted_ranks(x, weights)
        drawn = np.take_along_axis(ranks, index, axis=1)  # each draw takes its item's rank
        np.testing.assert_array_equal(drawn, sps.rankdata(x[index], axis=1))
        np.testing.assert_array_equal(average_ranks(x), sps.rankdata(x))


def test_spearman_equals_scipy_on_every_resample() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(float)  # ties, as STS gold scores have
    predicted = gold + rng.normal(0, 2, 300)
    index = rng.integers(0, 300, size=(50, 300))
    expected = [sps.spearmanr(gold[row], predicted[row]).statistic for row in index]
    weights = resample_weights(index, 300)
    np.testing.assert_allclose(row_spearman(gold, predicted, weights), expected, rtol=0, atol=1e-12)


@st.composite
def _many_labellings(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Gold and several clusterings of the same items, some of them nearly the same (as
    seeded k-means runs are), some unrelated."""
    rows, n = draw(st.integers(1, 6)), draw(st.integers(1, 50))
    classes, clusters, runs = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 5)),
        draw(st.integers(1, 6)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gold = rng.integers(0, classes, size=n).astype(float)
    first = rng.integers(0, clusters, size=n)
    flips = draw(st.sampled_from([0.0, 0.1, 1.0]))
    clusterings = [
        np.where(rng.random(n) < flips, rng.integers(0, clusters, size=n), first) * 3 + 1
        for _ in range(runs)
    ]
    return gold, clusterings, rng.integers(0, n, size=(rows, n))


@given(_many_labellings())
@settings(max_examples=200, deadline=None)
def test_v_measure_of_many_clusterings_is_sklearns_for_each(
    data: tuple[np.ndarray, list[np.ndarray], np.ndarray],
) -> None:
    gold, clusterings, index = data
    weights = resample_weights(index, len(gold))
    many = row_v_measure_many(gold, clusterings, weights)
    assert many.shape == (len(clusterings), len(index))
    for row, predicted in zip(many, clusterings, strict=True):
        expected = row_v_measure_sklearn(gold, predicted, weights)
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(row, row_v_measure(gold, predicted, weights))


def test_spearman_of_many_predictions_is_scipys_for_each() -> None:
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 6, 300).astype(float)
    predictions = [gold + rng.normal(0, s, 300) for s in (0.5, 2, 8)] + [np.round(gold / 2)]
    index = rng.integers(0, 300, size=(40, 300))
    weights = resample_weights(index, 300)
    many = row_spearman_many(gold, predictions, weights)
    for row, predicted in zip(many, predictions, strict=True):
        expected = [sps.spearmanr(gold[i], predicted[i]).statistic for i in index]
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(row, row_spearman(gold, predicted, weights))


def test_statistics_are_the_same_in_blocks_as_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resamples computed in blocks (a few rows at a time) give the numbers of one block."""
    import sbabench.tasks.item_statistics as module

    rng = np.random.default_rng(1)
    gold, predicted = rng.integers(0, 4, 200).astype(float), rng.normal(size=200)
    weights = resample_weights(rng.integers(0, 200, size=(30, 200)), 200)
    labels, clusters = (gold > 1).astype(float), np.round(predicted)
    cases = (
        (row_spearman, gold, predicted),
        (row_average_precision, labels, predicted),
        (row_v_measure, gold, clusters),
    )
    whole = [fn(g, p, weights) for fn, g, p in cases]
    monkeypatch.setattr(module, "BLOCK_DRAWS", 7 * 200)  # 7 resamples per block: 5 blocks
    blocked = [fn(g, p, weights) for fn, g, p in cases]
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(a, b)


def _all(n: int) -> np.ndarray:
    return np.ones((1, n))


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
    drawn = row_average_precision(np.array([1.0, 0.0]), np.array([0.2, 0.9]), np.array([[1, 2]]))
    assert drawn[0] == pytest.approx(1 / 3)
