"""The hand-written null distributions and across-task tests equal scipy.stats' (hypothesis), and
`compare` runs without importing scipy.stats."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sbabench.analysis import null_distributions as null
from sbabench.analysis import stats

ROOT = Path(__file__).resolve().parents[2]


@given(st.floats(0, 400, allow_nan=False), st.integers(1, 60))
@settings(max_examples=400, deadline=None)
def test_chi2_tail_equals_scipy(x: float, df: int) -> None:
    expected = sps.chi2.sf(x, df)
    assert null.chi2_sf(x, df) == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_chi2_tail_edges() -> None:
    assert null.chi2_sf(0.0, 3) == 1.0 and null.chi2_sf(-1.0, 2) == 1.0
    assert math.isnan(null.chi2_sf(math.nan, 2))
    assert null.chi2_sf(5000.0, 4) == 0.0  # far tail underflows to 0, as scipy's does
    with pytest.raises(ValueError, match="degrees of freedom"):
        null.chi2_sf(1.0, 0)


@given(st.floats(-40, 40, allow_nan=False))
def test_normal_two_sided_tail_equals_scipy(z: float) -> None:
    expected = 2 * sps.norm.sf(abs(z))
    assert null.normal_two_sided_p(z) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_signed_rank_counts_are_the_subset_sums() -> None:
    # ranks 1..4: 16 sign patterns; T+ = 5 from {1,4} and {2,3}
    assert null.signed_rank_counts(4) == [1, 1, 1, 2, 2, 2, 2, 2, 1, 1, 1]
    assert sum(null.signed_rank_counts(20)) == 2**20


@st.composite
def _differences(draw: st.DrawFn) -> list[float]:
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.normal(draw(st.floats(-1, 1)), 1, n)
    if draw(st.booleans()):  # coarse values: tied magnitudes and zeros
        values = np.round(values * 2) / 2
    return values.tolist()


@given(_differences())
@settings(max_examples=150, deadline=None)  # tied inputs run scipy's permutation test twice
def test_wilcoxon_equals_scipy(differences: list[float]) -> None:
    result = stats.wilcoxon_across_tasks(differences)
    nonzero = [d for d in differences if d != 0]
    assert result.n_tasks == len(differences)
    if len(nonzero) < 2:
        assert math.isnan(result.p_value)
        return
    expected = sps.wilcoxon(nonzero)
    assert result.statistic == float(expected.statistic)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-300)


def test_wilcoxon_by_hand() -> None:
    # 3 positive differences: T+ = 6 is the most extreme of 8 patterns; p = 2/8
    result = stats.wilcoxon_across_tasks([0.1, 0.3, 0.2])
    assert (result.statistic, result.p_value) == (0.0, 0.25)


@pytest.mark.parametrize("k", range(2, 21))
@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01])
def test_studentized_range_quantile_equals_scipy(k: int, alpha: float) -> None:
    expected = sps.studentized_range.ppf(1 - alpha, k, np.inf)
    assert null.range_ppf(1 - alpha, k) == pytest.approx(expected, rel=1e-10)


def test_studentized_range_refuses_what_it_cannot_compute() -> None:
    assert null.range_cdf(0.0, 3) == 0.0
    with pytest.raises(ValueError, match="k >= 2"):
        null.range_ppf(0.95, 1)
    with pytest.raises(ValueError, match="0 < p <= 1"):
        null.range_ppf(0.0, 3)
    assert null.range_ppf(1.0, 3) == math.inf  # alpha below 1e-16, as scipy's ppf(1)


@st.composite
def _tables(draw: st.DrawFn) -> np.ndarray:
    tasks, systems = draw(st.integers(2, 12)), draw(st.integers(3, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    table = rng.random((tasks, systems))
    if draw(st.booleans()):  # tied scores within a task
        table = np.round(table * 3) / 3
    return table


@given(_tables())
@settings(max_examples=200, deadline=None)
def test_friedman_equals_scipy(table: np.ndarray) -> None:
    names = [f"s{j}" for j in range(table.shape[1])]
    result = stats.friedman_nemenyi({n: table[:, j].tolist() for j, n in enumerate(names)})
    ranks = sps.rankdata(-table, axis=1).mean(0)
    assert result.mean_ranks == {n: float(r) for n, r in zip(names, ranks, strict=True)}
    if np.all(table == table[:, :1]):  # every task ties every system: nothing to test
        assert math.isnan(result.statistic)
        return
    expected = sps.friedmanchisquare(*table.T)
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-12, abs=1e-12)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-10, abs=1e-300)


@given(st.integers(4, 80), st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=100, deadline=None)
def test_steiger_spearman_is_scipys_bit_for_bit(n: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    gold, a, b = rng.random(n), rng.random(n), rng.random(n)
    if ties:
        gold, a = np.round(gold * 4), np.round(a * 4)
    for x, y in ((gold, a), (gold, b), (a, b)):
        expected = sps.spearmanr(x, y).statistic
        assert stats._spearman(x, y) == expected or (
            math.isnan(expected) and math.isnan(stats._spearman(x, y))
        )


def test_compare_imports_no_scipy_stats() -> None:
    code = (
        "import json, sys\n"
        "from sbabench.cli import main\n"
        "try:\n"
        "    main(['compare', 'results/baseline/quickstart', '--format', 'json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('scipy.stats',) if m in sys.modules]\n"
        "print('loaded:', json.dumps(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    report, loaded = out.stdout.split("loaded:")
    assert json.loads(loaded) == []
    assert {row["model"] for row in json.loads(report)} == {"minilm", "minilm-moe"}


def test_nemenyi_follows_alpha_and_a_table_of_ties_is_said_so() -> None:
    from sbabench.analysis.compare import Comparison
    from sbabench.analysis.report import friedman_line

    scores = {"a": [0.9, 0.8, 0.7, 0.6], "b": [0.5, 0.4, 0.3, 0.2], "c": [0.1, 0.1, 0.1, 0.1]}
    lines = {}
    for alpha in (0.05, 0.01):
        comparison = Comparison(rows=[], summaries=[], alpha=alpha)
        comparison.friedman = stats.friedman_nemenyi(scores, alpha)
        lines[alpha] = friedman_line(comparison)
    expected = sps.studentized_range.ppf(0.99, 3, np.inf) / math.sqrt(2) * math.sqrt(12 / 24)
    assert f"Nemenyi critical difference at alpha 0.01 {expected:.3f}." in str(lines[0.01])
    assert "Nemenyi critical difference 1.657." in str(lines[0.05])
    tied = Comparison(rows=[], summaries=[], alpha=0.05)
    tied.friedman = stats.friedman_nemenyi({"a": [0.5, 0.5], "b": [0.5, 0.5], "c": [0.5, 0.5]})
    assert "Every system ties on every task" in str(friedman_line(tied))


def test_no_nan_is_hidden_by_the_cap_at_one() -> None:
    assert math.isnan(null.at_most_one(math.nan)) and null.at_most_one(1.5) == 1.0
    assert null.chi2_sf(math.inf, 3) == 0.0 and null.chi2_sf(math.inf, 4) == 0.0
