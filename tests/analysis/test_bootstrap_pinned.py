"""The paired bootstrap's numbers on the committed baseline, pinned, and its clustering
statistic (the mean over k-means runs) against a plain loop over the runs: a change to how the
runs are combined, resampled or weighted moves these numbers and fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sbabench.analysis.compare import compare, load_folder
from sbabench.analysis.stats import paired_bootstrap, statistic
from sbabench.tasks.item_statistics import resample_weights

BASELINE = Path(__file__).resolve().parents[2] / "results" / "baseline" / "quickstart"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("LeeDocSTS", (-0.0290, -0.0408, -0.0171)),
        ("AIABDEDuplicates", (-0.0051, -0.0079, -0.0023)),
        ("MiniNewsgroupsClustering", (-0.1247, -0.1732, -0.0763)),
    ],
)
def test_the_baselines_sba_rows_are_the_documented_numbers(
    task: str, expected: tuple[float, float, float]
) -> None:
    """The numbers docs/quickstart.md and docs/getting-started.md show (1000 resamples, seed 0)."""
    rows = [r for r in compare([BASELINE]).comparison.rows if r.task == task]
    (row,) = [r for r in rows if r.aggregator == "sba"]
    assert row.item_delta is not None and row.ci_low is not None and row.ci_high is not None
    assert (round(row.item_delta, 4), round(row.ci_low, 4), round(row.ci_high, 4)) == expected
    # read from the reference distribution: below the 2/1001 a 1000-resample tail count floors at
    assert row.p_value is not None and row.p_value < 1e-3


def test_clustering_is_the_mean_over_runs_of_each_side_resampled_together() -> None:
    results = {(r.aggregator, r.task): r for r in load_folder(BASELINE)}
    a = results[("sba", "MiniNewsgroupsClustering")].items
    b = results[("linear", "MiniNewsgroupsClustering")].items
    (subset,) = a
    test = paired_bootstrap(a, b, n_resamples=300, seed=5)
    # the reference: the same draws, each run of each side scored on its own, means subtracted
    gold = np.asarray(a[subset].gold)
    index = np.random.default_rng(5).integers(0, len(gold), size=(300, len(gold)))
    weights = resample_weights(index, len(gold))

    def mean_over_runs(scores: object, w: np.ndarray | None) -> np.ndarray:
        runs = [np.asarray(run) for run in scores.runs]  # type: ignore[attr-defined]
        return sum(statistic("clusters", gold, run, w) for run in runs) / len(runs)

    deltas = mean_over_runs(a[subset], weights) - mean_over_runs(b[subset], weights)
    observed = float((mean_over_runs(a[subset], None) - mean_over_runs(b[subset], None))[0])
    assert test.delta == pytest.approx(observed, abs=1e-12)
    n = len(gold)
    assert test.spread.se == pytest.approx(float(np.std(deltas, ddof=1)) * (n / (n - 1)) ** 0.5)


def _kinds(rng: np.random.Generator, n: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Gold and two sides' predictions of n items for each built-in item kind."""
    scores = rng.integers(0, 6, n).astype(float)
    labels = (rng.random(n) < 0.4).astype(float)
    classes = rng.integers(0, 4, n).astype(float)
    return {
        "sts": (scores, [scores + rng.normal(0, s, n) for s in (1, 2)]),
        "pairs": (labels, [labels + rng.normal(0, s, n) for s in (0.5, 1)]),
        "clusters": (classes, [rng.integers(0, k, n).astype(float) for k in (3, 4, 4, 5)]),
        "queries": (np.zeros(n), [rng.random(n), rng.random(n)]),
        "predictions": (classes, [np.where(rng.random(n) < 0.7, classes, 0.0) for _ in range(2)]),
    }


@pytest.mark.parametrize("kind", ["sts", "pairs", "clusters", "queries", "predictions"])
def test_one_call_for_all_items_and_resamples_gives_what_separate_calls_give(kind: str) -> None:
    """Row 0 of the weights (every item once) is the observed statistic, rows 1.. the resamples,
    to the bit what scoring each apart gives; an off-by-one row would fail."""
    from sbabench.analysis.stats import observed_and_resampled, statistics

    rng = np.random.default_rng(11)
    gold, predictions = _kinds(rng, 150)[kind]
    index = rng.integers(0, 150, size=(40, 150))
    observed, resampled = observed_and_resampled(
        kind, gold, predictions, resample_weights(index, 150, all_items_first=True)
    )
    np.testing.assert_array_equal(observed, statistics(kind, gold, predictions)[:, 0])
    expected = statistics(kind, gold, predictions, resample_weights(index, 150))
    np.testing.assert_array_equal(resampled, expected)
    for p, row in zip(predictions, expected, strict=True):  # and the one-prediction form
        np.testing.assert_array_equal(row, statistic(kind, gold, p, resample_weights(index, 150)))


def test_the_two_level_differences_are_the_statistics_of_the_same_draws() -> None:
    """Per replicate: the observed difference on all items, and on each of the resamples the
    shared draws give, exactly as scoring them one by one does."""
    from sbabench.analysis.two_level import _replicate_deltas
    from sbabench.tasks.items import ItemScores

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, 80).astype(float)
    sides = []
    for _ in range(3):
        runs = [rng.integers(0, 3, 80).astype(float).tolist() for _ in range(4)]
        base = [rng.integers(0, 3, 80).astype(float).tolist() for _ in range(4)]
        item = {"s": ItemScores(kind="clusters", gold=gold.tolist(), predicted=runs[0], runs=runs)}
        twin = {"s": ItemScores(kind="clusters", gold=gold.tolist(), predicted=base[0], runs=base)}
        sides.append((item, twin))
    observed, resampled = _replicate_deltas(
        [c for c, _ in sides], [b for _, b in sides], 50, np.random.default_rng(9)
    )
    index = np.random.default_rng(9).integers(0, 80, size=(50, 80))
    weights = resample_weights(index, 80)
    for r, (c, b) in enumerate(sides):
        mine = [statistic("clusters", gold, np.asarray(run)) for run in c["s"].runs]
        theirs = [statistic("clusters", gold, np.asarray(run)) for run in b["s"].runs]
        delta = sum(float(v[0]) for v in mine) / 4 - sum(float(v[0]) for v in theirs) / 4
        assert observed[r] == pytest.approx(delta, abs=1e-15)
        drawn = sum(statistic("clusters", gold, np.asarray(run), weights) for run in c["s"].runs)
        drawn_b = sum(statistic("clusters", gold, np.asarray(run), weights) for run in b["s"].runs)
        np.testing.assert_allclose(resampled[r], drawn / 4 - drawn_b / 4, rtol=0, atol=1e-15)


def test_many_clusterings_of_different_sizes_score_as_their_own_tables() -> None:
    """Each clustering's V-measure is `_v_measure` of its own contingency table, built here
    item by item, to the bit: no padding to a common shape, whatever the cluster counts."""
    from sbabench.tasks.item_statistics import _v_measure, row_v_measure_many

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 3, 60)
    clusterings = [rng.integers(0, k, 60) for k in (2, 5, 3, 5, 8)]
    weights = resample_weights(rng.integers(0, 60, size=(7, 60)), 60)
    many = row_v_measure_many(gold, clusterings, weights)
    for row, clusters in zip(many, clusterings, strict=True):
        k = int(clusters.max()) + 1
        tables = np.zeros((7, 3, k))
        for b in range(7):
            np.add.at(tables[b], (gold, clusters), weights[b].astype(np.float64))
        np.testing.assert_array_equal(row, _v_measure(tables, weights.sum(1).astype(np.float64)))
