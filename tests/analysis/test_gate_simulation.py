"""The gate's own error rates by simulation (slow: about 3 minutes on 2 cores, two processes): under no change
its false REGRESSION rate over 2,000 simulated suites stays at or below alpha for m = 9, 30 and
100 units, and a clear drop in one unit of 100 is caught."""

from __future__ import annotations

import pytest

from sbabench.analysis.calibration import gate_regression_rate

pytestmark = pytest.mark.slow

ALPHA = 0.05


@pytest.mark.parametrize("units", [9, 30, 100])
def test_no_change_fails_the_gate_at_most_alpha_of_the_time(units: int) -> None:
    rate = gate_regression_rate(units, 2000, alpha=ALPHA, seed=units, workers=2)
    # the point estimate itself at or below alpha (its Wilson interval is printed)
    assert rate.rate <= ALPHA, (rate.rate, rate.interval)
    print(f"m={units}: false REGRESSION {rate.rate:.4f} {rate.interval} over {rate.trials}")


def test_a_clear_drop_in_one_unit_of_a_hundred_is_caught() -> None:
    # one unit's queries all 0.15 lower: about 7 standard errors, past Holm's alpha / 100
    rate = gate_regression_rate(100, 200, drop=0.15, dropped=1, alpha=ALPHA, seed=1, workers=2)
    assert rate.rate >= 0.95, rate.rate
