"""The two-level test over replicates and items: its false-positive rate by simulation, its
power, and how compare uses it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sbabench.analysis import calibration, two_level
from sbabench.analysis.compare import Mark, compare_results
from sbabench.analysis.export import model_name, model_revision
from sbabench.analysis.plots import forest_plot
from sbabench.digests import key_digest
from sbabench.tasks.items import ItemScores
from tests.factories import result

ALPHA = 0.05


def _holds(rate: calibration.Rate) -> bool:
    """At most alpha plus two Monte-Carlo standard errors."""
    return rate.rate <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / rate.trials)


@pytest.mark.parametrize("replicates", [3, 5])
def test_replicate_variance_makes_the_item_only_test_reject_and_the_two_level_test_hold(
    replicates: int,
) -> None:
    item_only, two, _ = calibration.rates(
        calibration.SEED_DOMINATED, replicates, 160, items=400, n_resamples=150, seed=replicates
    )
    assert item_only.interval[0] > 3 * ALPHA  # one seed's luck reads as "significant"
    assert _holds(two)


@pytest.mark.parametrize("replicates", [3, 5])
def test_items_shared_by_replicates_need_the_item_level(replicates: int) -> None:
    """The operators' per-item errors repeat in every replicate: a t-test over replicates
    alone over-rejects; the two-level test (which resamples the items) holds."""
    _, two, replicates_only = calibration.rates(
        calibration.SHARED_ITEMS, replicates, 200, n_resamples=150, seed=replicates
    )
    assert replicates_only.interval[0] > 2 * ALPHA
    assert _holds(two)


@pytest.mark.parametrize(
    ("statistic", "world", "replicates"),
    [
        ("sts", calibration.ITEM_DOMINATED, 2),
        ("queries", calibration.MIXED, 3),
        ("pairs", calibration.ITEM_DOMINATED, 5),
        ("clusters", calibration.MIXED, 2),
    ],
)
def test_the_two_level_test_holds_its_level(
    statistic: str, world: calibration.World, replicates: int
) -> None:
    (two,) = calibration.rates(
        world, replicates, 200, (calibration.two_level_p,), statistic=statistic,
        items=20, n_resamples=150, seed=replicates,
    )  # fmt: skip
    assert _holds(two)


def test_the_two_level_test_counts_no_variance_twice() -> None:
    """Where the items dominate, a test that adds the bootstrap's whole variance (which holds
    each replicate's own item noise) to the replicates' spread rejected 0.2-1% under the null
    (a mean statistic, 50 items); the two-level test rejects near alpha."""
    args = (calibration.ITEM_DOMINATED, 3, 300, (calibration.two_level_p,))
    (null,) = calibration.rates(*args, statistic="queries", n_resamples=150, seed=3)
    assert null.interval[0] > 0.02 and _holds(null)


def test_the_two_level_test_finds_a_real_effect() -> None:
    args = (calibration.ITEM_DOMINATED, 5, 60, (calibration.two_level_p,))
    (null,) = calibration.rates(*args, items=300, n_resamples=150, seed=7)
    (power,) = calibration.rates(*args, items=300, effect=0.4, n_resamples=150, seed=7)
    assert power.rate > 0.5 > null.rate


def _sts(gold: np.ndarray, predicted: np.ndarray) -> dict[str, ItemScores]:
    return {"test": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}


def test_the_reported_numbers() -> None:
    rng = np.random.default_rng(0)
    gold = rng.normal(size=300)
    better = [_sts(gold, gold + 0.5 * rng.normal(size=300)) for _ in range(4)]
    worse = [_sts(gold, gold + 1.5 * rng.normal(size=300)) for _ in range(4)]
    test = two_level.two_level_test(better, worse, 300, seed=1)
    assert len(test.replicate_deltas) == 4 and test.agree == 4
    assert test.delta == pytest.approx(np.mean(test.replicate_deltas))
    assert test.between_sd == pytest.approx(np.std(test.replicate_deltas, ddof=1))
    assert test.ci_low < test.delta < test.ci_high and test.ci_low > 0 and test.p_value < 0.01
    with pytest.raises(ValueError, match="paired replicates"):
        two_level.two_level_test(better[:1], worse[:1])


def test_probability_of_improvement() -> None:
    assert two_level.probability_of_improvement([2, 3], [1, 1]) == 1.0
    assert two_level.probability_of_improvement([1, 3], [2, 2]) == 0.5
    assert two_level.probability_of_improvement([1], [1]) == 0.5
    point, low, high = two_level.aggregate_improvement([([2, 3], [1, 1]), ([1, 3], [2, 2])])
    assert point == 0.75 and low <= point <= high


def _replicated_results(shift: float, replicates: int) -> list:
    """A model with `replicates` replicates of linear and sba on one STS task."""
    rng = np.random.default_rng(3)
    gold = rng.normal(size=200)
    out = []
    for r in range(replicates):
        for name, noise in (("linear", 1.0), ("sba", 1.0 - shift)):
            items = _sts(gold, gold + noise * rng.normal(size=200))
            score = float(np.corrcoef(gold, items["test"].predicted)[0, 1])
            out.append(result(name, items, score, replicate=r))
    return out


def test_compare_tests_over_replicates_and_says_so() -> None:
    comparison = compare_results(_replicated_results(0.6, 3), n_resamples=200)
    (row,) = [r for r in comparison.rows if r.aggregator == "sba"]
    assert row.replicates == 3 and len(row.replicate_deltas) == 3 and row.agree == 3
    assert row.mark is Mark.BETTER and row.prob_improvement == 1.0
    assert row.between_sd is not None and row.steiger_p is None
    assert "Two-level tests over 3 replicates" in comparison.coverage
    assert comparison.summaries[0].improvement is not None


def test_one_replicate_says_it_covers_item_variance_only() -> None:
    comparison = compare_results(_replicated_results(0.6, 1), n_resamples=200)
    assert "item variance only" in comparison.coverage
    (row,) = [r for r in comparison.rows if r.aggregator == "sba"]
    assert row.replicates == 1 and row.replicate_deltas == () and row.steiger_p is not None


def test_the_gate_uses_the_two_level_test_and_the_forest_plot_shows_replicates(
    tmp_path: Path,
) -> None:
    before = _replicated_results(0.0, 3)
    after = [
        r.model_copy(update={"main_score": r.main_score - 0.2}) if r.aggregator == "sba" else r
        for r in _replicated_results(-0.8, 3)
    ]
    comparison = compare_results(after, against=before, n_resamples=200)
    (row,) = [r for r in comparison.rows if r.aggregator == "sba"]
    assert row.replicates == 3 and row.mark is Mark.WORSE and row.baseline == "other:m/sba"
    assert comparison.verdict(0.005).text.startswith("REGRESSION")
    path = forest_plot(comparison, tmp_path / "forest.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_export_writes_one_mteb_result_per_replicate() -> None:
    results = _replicated_results(0.2, 3)
    assert len({(model_name(r), model_revision(r)) for r in results}) == len(results)
    first = results[0]
    assert first.replicate == 0  # replicate 0 keeps the revision it had before replicates
    assert model_revision(first) == key_digest(first.key_parts.model.model_dump(mode="json"))[:16]


def test_a_diverged_or_missing_replicate_is_not_tested_silently() -> None:
    results = _replicated_results(0.6, 3)
    diverged = [
        r.model_copy(
            update={
                "items": {
                    "test": r.items["test"].model_copy(update={"predicted": [math.nan] * 200})
                }
            }
        )
        if (r.aggregator, r.replicate) == ("sba", 2)
        else r
        for r in results
    ]
    comparison = compare_results(diverged, n_resamples=200)
    (row,) = [r for r in comparison.rows if r.aggregator == "sba"]
    assert row.p_value is None and "NaN score" in row.note
    assert comparison.verdict(0.005).text.startswith("NOT TESTED")
    missing = [r for r in results if (r.aggregator, r.replicate) != ("linear", 2)]
    (row,) = [r for r in compare_results(missing, n_resamples=200).rows if r.aggregator == "sba"]
    assert row.replicates == 2 and "r2 on one side only" in row.note and row.p_value is not None


def test_an_a_a_comparison_through_compare_is_significant_no_more_often_than_alpha() -> None:
    """Two operators that differ only by their seeds (the same errors in distribution, drawn
    anew per replicate), three replicates each, through `compare_results` (Holm, the gate's
    states): significant in at most alpha of 150 simulated benchmarks, in a world where seeds
    and items both matter."""
    from sbabench.analysis.stats import statistic

    rng = np.random.default_rng(11)
    significant = 0
    trials = 150
    for trial in range(trials):
        b, a = calibration.simulate(calibration.MIXED, "sts", 40, 3, 0.0, rng)
        results = []
        for name, side in (("seed-b", b), ("seed-a", a)):
            for r, items in enumerate(side):
                scores = items["test"]
                main = float(
                    statistic("sts", np.asarray(scores.gold), np.asarray(scores.predicted))[0]
                )
                results.append(result(name, items, main, replicate=r, model="m"))
        comparison = compare_results(results, baseline="seed-a", n_resamples=200, seed=trial)
        (row,) = [r for r in comparison.rows if r.aggregator == "seed-b"]
        assert row.replicates == 3
        significant += row.p_value is not None and row.p_value < ALPHA
    assert _holds(calibration.Rate(significant, trials))
