"""Step detection: the weighted segmentation on its own, and its calibration by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from sbabench.analysis.history.changes import change_points, split_threshold
from tests.analysis.history.simulation import rates


def test_a_step_is_found_where_it_is_and_a_flat_series_has_none() -> None:
    flat = np.full(10, 0.5)
    variances = np.full(10, 1e-4)
    assert change_points(flat, variances, 0.05) == []
    stepped = np.r_[np.full(6, 0.5), np.full(4, 0.47)]
    assert change_points(stepped, variances, 0.05) == [6]
    two = np.r_[np.full(4, 0.5), np.full(4, 0.47), np.full(4, 0.52)]
    assert change_points(two, np.full(12, 1e-4), 0.05) == [4, 8]


def test_a_step_within_the_uncertainty_is_not_a_step() -> None:
    stepped = np.r_[np.full(5, 0.5), np.full(5, 0.49)]
    assert change_points(stepped, np.full(10, 0.05**2), 0.05) == []  # 0.01 against se 0.05
    assert change_points(stepped, np.full(10, 0.001**2), 0.05) == [5]


def test_points_without_a_usable_variance_take_no_part() -> None:
    scores = np.r_[np.full(5, 0.5), np.full(5, 0.4)]
    variances = np.full(10, 1e-4)
    variances[[2, 7]] = [np.nan, 0.0]
    scores[3] = np.nan
    assert change_points(scores, variances, 0.05) == [5]


def test_the_threshold_is_bonferroni_over_the_splits() -> None:
    assert split_threshold(2, 0.05) == pytest.approx(1.959964**2, rel=1e-5)
    assert split_threshold(11, 0.05) == pytest.approx(2.807034**2, rel=1e-5)  # z at 0.0025


@pytest.mark.slow
def test_detection_alone_flags_few_step_free_series() -> None:
    """The segmentation without confirmation: 1,000 series of 20 independent points with their
    measured variances."""
    rng = np.random.default_rng(7)
    flagged = sum(bool(change_points(rng.normal(0, 1, 20), np.ones(20), 0.05)) for _ in range(1000))
    assert flagged / 1000 <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("shared", [0.0, 0.5])
def test_calibration_false_steps_at_most_alpha_and_power_for_a_step_of_3_se(shared: float) -> None:
    """1,000 simulated histories of 20 commits (100 items each; see `simulation`): a step is
    reported (found and confirmed) in no more than alpha of the step-free ones, and a step of 3
    standard errors is found at its commit, with its sign, in at least 80%, whether each item's
    noise is new at every commit or half of it is shared (measured: 0.029 / 0.836 and
    0.001 / 0.958)."""
    false, power = rates(1000, shared=shared)
    assert false <= 0.05
    assert power >= 0.8


def test_items_pool_by_averaging_predictions_and_indices_do_not() -> None:
    from sbabench.analysis.history.series import pool_items
    from sbabench.tasks.items import ItemScores

    def sts(predicted: list[float], gold: tuple[float, ...] = (1.0, 2.0)) -> dict[str, ItemScores]:
        return {"default": ItemScores(kind="sts", gold=list(gold), predicted=predicted)}

    pooled = pool_items([sts([0.2, 0.4]), sts([0.4, 0.8])])
    assert not isinstance(pooled, str) and pooled["default"].predicted == pytest.approx([0.3, 0.6])
    assert "differs" in str(pool_items([sts([0.2, 0.4]), sts([0.2, 0.4], gold=(2.0, 1.0))]))
    clusters = {
        "default": ItemScores(kind="clusters", gold=[0, 1], predicted=[1, 0], runs=[[1, 0]])
    }
    assert "indices" in str(pool_items([clusters, clusters]))
