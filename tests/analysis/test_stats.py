"""Statistics: hand-checked cases and the behaviour the compare command relies on."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats as sps

from sbabench.analysis import stats
from sbabench.tasks.item_statistics import resample_weights
from sbabench.tasks.items import ItemScores


def _sts(gold: np.ndarray, predicted: np.ndarray) -> dict[str, ItemScores]:
    return {"default": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}


def test_holm_hand_computed() -> None:
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.6, 0.6]) == [1.0, 1.0]


def test_statistics_match_scipy_and_sklearn_on_all_items_and_on_resamples() -> None:
    from sklearn.metrics import average_precision_score, v_measure_score

    rng = np.random.default_rng(0)
    gold, pred = rng.random(40), rng.random(40)
    assert stats.statistic("sts", gold, pred)[0] == pytest.approx(
        sps.spearmanr(gold, pred).statistic
    )
    index = rng.integers(0, 40, (3, 40))
    weights = resample_weights(index, 40)
    expected = [sps.spearmanr(gold[i], pred[i]).statistic for i in index]
    assert stats.statistic("sts", gold, pred, weights) == pytest.approx(expected)
    labels = (rng.random(40) > 0.5).astype(float)
    assert stats.statistic("pairs", labels, pred)[0] == pytest.approx(
        average_precision_score(labels, pred)
    )
    assert stats.statistic("pairs", labels, pred, weights) == pytest.approx(
        [average_precision_score(labels[i], pred[i]) for i in index]
    )
    clusters, other = rng.integers(0, 3, 40), rng.integers(0, 4, 40)
    assert stats.statistic("clusters", clusters, other)[0] == pytest.approx(
        v_measure_score(clusters, other)
    )
    assert stats.statistic("clusters", clusters, other, weights) == pytest.approx(
        [v_measure_score(clusters[i], other[i]) for i in index]
    )


def test_identical_systems_give_zero_delta_and_p_one() -> None:
    rng = np.random.default_rng(1)
    gold = rng.random(300)
    pred = gold + rng.normal(0, 0.5, 300)
    test = stats.paired_bootstrap(_sts(gold, pred), _sts(gold, pred), n_resamples=500)
    assert test.delta == 0 and test.ci_low <= 0 <= test.ci_high and test.p_value == 1.0


def test_a_system_better_on_every_item_is_significant() -> None:
    rng = np.random.default_rng(2)
    gold = rng.random(400)
    noise = rng.normal(0, 1, 400)
    good, bad = (
        gold + 0.2 * noise,
        gold + 1.0 * noise,
    )  # the same noise, smaller: closer on every item
    test = stats.paired_bootstrap(_sts(gold, good), _sts(gold, bad), n_resamples=1000)
    assert test.delta > 0 and test.ci_low > 0 and test.p_value < 0.01
    z, p = stats.steiger_z(gold, good, bad)
    assert z > 0 and p < 0.01


def test_steiger_identical_predictions() -> None:
    rng = np.random.default_rng(3)
    gold, pred = rng.random(50), rng.random(50)
    assert stats.steiger_z(gold, pred, pred) == (0.0, 1.0)


def test_different_items_are_refused() -> None:
    a = _sts(np.arange(10.0), np.arange(10.0))
    b = _sts(np.arange(10.0)[::-1].copy(), np.arange(10.0))
    with pytest.raises(ValueError, match="different items"):
        stats.paired_bootstrap(a, b)


def test_bootstrap_of_1225_pairs_x_1000_takes_seconds() -> None:
    rng = np.random.default_rng(4)
    gold = rng.random(1225)
    start = time.perf_counter()
    stats.paired_bootstrap(
        _sts(gold, gold + rng.random(1225)), _sts(gold, rng.random(1225)), n_resamples=1000
    )
    # Generous bound on a shared machine: the vectorised version takes well under a second here.
    assert time.perf_counter() - start < 20


def test_across_tasks() -> None:
    assert stats.wilcoxon_across_tasks([0.1, 0.2, 0.15, 0.3, 0.25, 0.2]).p_value < 0.05
    assert np.isnan(stats.wilcoxon_across_tasks([0.0, 0.0]).p_value)
    result = stats.friedman_nemenyi(
        {"a": [0.9, 0.8, 0.7, 0.6], "b": [0.5, 0.4, 0.3, 0.2], "c": [0.1, 0.1, 0.1, 0.1]}
    )
    assert result.mean_ranks == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert result.p_value < 0.05 and result.critical_difference == pytest.approx(
        2.343 * np.sqrt(12 / 24), rel=1e-3
    )


def test_clustering_statistic_is_the_mean_over_runs() -> None:
    from sklearn.metrics import v_measure_score

    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 120).astype(float)
    runs_a = [np.where(rng.random(120) < 0.9, gold, 1 - gold) for _ in range(4)]
    runs_b = [np.where(rng.random(120) < 0.6, gold, 1 - gold) for _ in range(4)]
    a = {
        "default": ItemScores(
            kind="clusters",
            gold=gold.tolist(),
            predicted=runs_a[0].tolist(),
            runs=[r.tolist() for r in runs_a],
        )
    }
    b = {
        "default": ItemScores(
            kind="clusters",
            gold=gold.tolist(),
            predicted=runs_b[0].tolist(),
            runs=[r.tolist() for r in runs_b],
        )
    }
    expected = np.mean([v_measure_score(gold, r) for r in runs_a]) - np.mean(
        [v_measure_score(gold, r) for r in runs_b]
    )
    test = stats.paired_bootstrap(a, b, n_resamples=300)
    assert test.delta == pytest.approx(expected)
    assert test.ci_low > 0 and test.p_value < 0.01


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_steiger_at_a_spearman_of_plus_or_minus_one_is_finite(sign: float) -> None:
    rng = np.random.default_rng(5)
    gold = rng.random(40)
    exact, other = sign * gold, gold + rng.normal(0, 0.5, 40)
    for a, b in ((exact, other), (other, exact)):
        z, p = stats.steiger_z(gold, a, b)
        assert np.isfinite(z) and 0 <= p <= 1
    z, _ = stats.steiger_z(gold, exact, other)
    assert (z > 0) == (sign > 0)  # rho 1 beats a noisy copy, rho -1 loses to it


def test_a_nan_prediction_gives_no_p_value() -> None:
    rng = np.random.default_rng(6)
    gold = rng.random(50)
    diverged = np.full(50, np.nan)
    test = stats.paired_bootstrap(_sts(gold, diverged), _sts(gold, gold + rng.random(50)))
    assert np.isnan(test.p_value) and np.isnan(test.ci_low) and np.isnan(test.delta)
    assert np.isnan(stats.steiger_z(gold, diverged, gold)[1])


def test_nan_task_scores_never_become_a_p_value() -> None:
    wilcoxon = stats.wilcoxon_across_tasks([0.1, 0.2, float("nan"), 0.3, 0.25, 0.2])
    assert np.isnan(wilcoxon.p_value) and np.isnan(wilcoxon.statistic)
    assert wilcoxon.note == "NaN score in 1 task(s)" and wilcoxon.n_tasks == 6
    friedman = stats.friedman_nemenyi(
        {"a": [0.9, 0.8, 0.7, 0.6], "b": [0.5, float("nan"), 0.3, 0.2], "c": [0.1] * 4}
    )
    assert np.isnan(friedman.p_value) and friedman.note == "NaN score for b"
    assert friedman.critical_difference is None and friedman.n_tasks == 4


def test_holm_keeps_a_nan_a_nan_and_counts_it_in_the_family() -> None:
    adjusted = stats.holm([0.01, float("nan"), 0.03])
    assert np.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[2] == pytest.approx(0.06)
    assert all(np.isnan(p) for p in stats.holm([float("nan"), float("nan")]))


def test_one_nan_prediction_among_many_gives_no_p_value() -> None:
    """Ranks would order a NaN among the numbers and give a p-value: one NaN is enough."""
    gold = np.arange(40, dtype=float)
    predicted = gold.copy()
    predicted[7] = np.nan
    a = {"t": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}
    b = {"t": ItemScores(kind="sts", gold=gold.tolist(), predicted=(gold[::-1]).tolist())}
    assert np.isnan(stats.paired_bootstrap(a, b, 200).p_value)
