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
        ("LeeDocSTS", (-0.0290, -0.0410, -0.0175)),
        ("AIABDEDuplicates", (-0.0051, -0.0080, -0.0025)),
        ("MiniNewsgroupsClustering", (-0.1247, -0.1749, -0.0809)),
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
    assert row.p_value == pytest.approx(0.002, abs=1e-3)


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
    low, high = np.percentile(deltas, [2.5, 97.5])
    assert (test.ci_low, test.ci_high) == pytest.approx((low, high), abs=1e-12)
