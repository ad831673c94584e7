"""The uncertainty of a tested difference: p-values without a floor, the MDE as a power
statement (checked by simulation), and how many replicates or items would decide a unit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbabench.analysis.compare import State, compare_results
from sbabench.analysis.uncertainty import Spread, items_limit, replicates_for
from sbabench.tasks.items import ItemScores
from tests.factories import result


def test_one_normal_reference_gives_the_textbook_numbers() -> None:
    spread = Spread(1.0, math.inf)
    assert spread.p_two_sided(1.959964) == pytest.approx(0.05, abs=1e-6)
    assert spread.detectable(0.05) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert spread.interval(0.0) == pytest.approx((-1.959964, 1.959964), abs=1e-6)


def test_p_values_reach_far_below_any_resampling_floor() -> None:
    assert Spread(1e-4, 1224).p_two_sided(0.11) < 1e-20


@pytest.mark.parametrize("spread", [Spread(1.0, 30), Spread(0.5, math.inf, 0.5, 2)])
def test_a_true_difference_of_the_mde_is_found_80_percent_of_the_time(spread: Spread) -> None:
    """Power by simulation: estimates drawn around the MDE from the spread's own reference."""
    rng = np.random.default_rng(0)
    mde = spread.detectable(0.05)
    draws = 20_000
    t_items = (
        rng.standard_t(spread.item_df, draws)
        if math.isfinite(spread.item_df)
        else rng.normal(size=draws)
    )
    t_reps = (
        rng.standard_t(spread.replicate_df, draws)
        if math.isfinite(spread.replicate_df)
        else np.zeros(draws)
    )
    # the composite reference is approximate: its quantiles combine per source (see uncertainty)
    estimates = (
        mde + t_items * math.sqrt(spread.item_var) + t_reps * math.sqrt(spread.replicate_var)
    )
    power = np.mean([spread.p_two_sided(e) < 0.05 for e in estimates[:4000]])
    assert 0.74 <= power <= 0.9, power


def test_no_variance_at_all_gives_p_one_for_no_difference() -> None:
    assert Spread(0.0, 10).p_two_sided(0.0) == 1.0
    assert Spread(0.0, 10).p_two_sided(0.2) == 0.0
    assert Spread(0.0, 10).detectable(0.05) == 0.0


@given(st.floats(1e-6, 1e-2), st.floats(1e-6, 1e-1), st.integers(2, 10), st.floats(0.005, 0.5))
def test_the_replicates_asked_for_are_the_fewest_that_reach_the_effect(
    item_var: float, between: float, replicates: int, effect: float
) -> None:
    spread = Spread(item_var, math.inf, between / replicates, replicates - 1)
    needed = replicates_for(spread, replicates, effect, 0.05)
    if items_limit(spread, effect, 0.05):
        assert needed is None
        return
    if needed is None:  # beyond the cap
        return
    assert needed >= replicates
    at = Spread(item_var, math.inf, between / needed, needed - 1)
    assert at.detectable(0.05) <= effect
    if needed > replicates:
        before = Spread(item_var, math.inf, between / (needed - 1), needed - 2)
        assert before.detectable(0.05) > effect


def _replicated(seed_sd: float, items: int, replicates: int) -> list:
    """linear and sba, equal in expectation, on one STS task; each replicate moves sba's noise
    by a seed effect of SD `seed_sd`."""
    rng = np.random.default_rng(4)
    gold = rng.normal(size=items)
    out = []
    for r in range(replicates):
        base = gold + rng.normal(size=items)
        cand = gold + rng.normal(size=items) * math.exp(seed_sd * rng.normal())
        for name, predicted in (("linear", base), ("sba", cand)):
            scores = {
                "test": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())
            }
            out.append(result(name, scores, 0.0, replicate=r))
    return out


def test_an_undecided_unit_says_how_many_replicates_would_decide_it() -> None:
    rows = compare_results(_replicated(0.3, 3000, 3), n_resamples=200, max_drop=0.05).rows
    (row,) = [r for r in rows if r.aggregator == "sba"]
    assert row.state is State.INCONCLUSIVE, row
    assert row.replicates_needed is not None and row.replicates_needed > 3
    assert f"about {row.replicates_needed} replicates" in row.note


def test_where_items_limit_it_says_more_items_not_replicates() -> None:
    rows = compare_results(_replicated(0.0, 40, 3), n_resamples=200, max_drop=0.01).rows
    (row,) = [r for r in rows if r.aggregator == "sba"]
    assert row.state is State.INCONCLUSIVE
    assert row.replicates_needed is None and "more test items" in row.note
