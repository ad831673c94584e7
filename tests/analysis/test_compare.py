"""compare: operator-vs-baseline tables, before/after folders, and the CI regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from sbabench.analysis.compare import Mark, compare_results
from sbabench.cli import main
from sbabench.run.results import UnitResult, result_path, save_result
from sbabench.tasks.items import ItemScores
from tests import factories

RNG = np.random.default_rng(0)
GOLD = RNG.random(600)
NOISE = RNG.normal(0, 1, 600)


def _result(
    aggregator: str, predicted: np.ndarray, task: str = "T1", model: str = "m"
) -> UnitResult:
    items = {"default": ItemScores(kind="sts", gold=GOLD.tolist(), predicted=predicted.tolist())}
    score = float(sps.spearmanr(GOLD, predicted).statistic)
    return factories.result(aggregator, items, score, task=task, model=model)


def _folder(root: Path, results: list[UnitResult]) -> Path:
    for r in results:
        save_result(result_path(root, r.suite, r.model, r.aggregator, r.task), r)
    return root


def test_operator_vs_baseline_marks() -> None:
    results = [
        _result("linear", GOLD + 1.0 * NOISE),
        _result("sba", GOLD + 0.3 * NOISE),  # better on every item
        _result("same", GOLD + 1.0 * NOISE),  # identical to linear
    ]
    comparison = compare_results(results, n_resamples=500)
    marks = {r.aggregator: r for r in comparison.rows}
    assert marks["linear"].mark is Mark.BASELINE
    assert (
        marks["sba"].mark is Mark.BETTER
        and marks["sba"].p_value is not None
        and marks["sba"].p_value < 0.01
    )
    assert marks["same"].mark is Mark.SAME and marks["same"].p_value == 1.0
    same = marks["same"]
    assert same.ci_low is not None and same.ci_high is not None and same.ci_low <= 0 <= same.ci_high
    assert marks["sba"].steiger_p is not None and marks["sba"].steiger_p < 0.01


def test_incomparable_results_are_marked_not_paired() -> None:
    base = _result("linear", GOLD + NOISE)
    other = _result("sba", GOLD + 0.3 * NOISE)
    other.key_parts = factories.key_parts(model={"source": "upcycle", "revision": "another"})
    row = next(r for r in compare_results([base, other]).rows if r.aggregator == "sba")
    assert row.mark is Mark.INCOMPARABLE and "model differs" in row.note and row.p_value is None


@pytest.mark.parametrize(
    ("noise", "exit_code", "verdict"),
    [
        (1.0, 1, "REGRESSION: 1 of 1"),  # much noisier predictions: a significant drop
        (0.05, 0, "OK:"),  # a little extra noise: a drop, but not a significant one
    ],
)
def test_gate(tmp_path: Path, noise: float, exit_code: int, verdict: str) -> None:
    extra = np.random.default_rng(7).normal(0, 1, 600)
    main_branch = _folder(tmp_path / "main", [_result("sba", GOLD + 0.3 * NOISE)])
    change = _folder(tmp_path / "pr", [_result("sba", GOLD + 0.3 * NOISE + noise * extra)])
    args = [
        "compare",
        str(change),
        "--against",
        str(main_branch),
        "--fail-on-regression",
        "--resamples",
        "500",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == exit_code, result.output
    assert result.output.strip().splitlines()[-1].startswith(verdict)


def test_gate_exits_2_on_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "nope"), "--fail-on-regression"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_markdown_is_a_github_table(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path / "r", [_result("linear", GOLD + NOISE), _result("sba", GOLD + 0.5 * NOISE)]
    )
    out = tmp_path / "report.md"
    result = CliRunner().invoke(
        main, ["compare", str(folder), "--format", "markdown", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("|") and "task" in line)
    assert (
        set(lines[header + 1].replace("|", "").replace("-", "").replace(":", "").strip()) == set()
    )
    assert "m/sba" in text and "### Across tasks" in text
    csv = CliRunner().invoke(main, ["compare", str(folder), "--format", "csv"])
    assert csv.exit_code == 0 and csv.output.splitlines()[0].startswith(
        "task,task_type,model,aggregator"
    )


def test_plot_writes_a_forest_plot(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path / "r", [_result("linear", GOLD + NOISE), _result("sba", GOLD + 0.5 * NOISE)]
    )
    result = CliRunner().invoke(
        main, ["plot", str(folder), "--output", str(tmp_path / "plots"), "--resamples", "200"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "forest.png").read_bytes()[:4] == b"\x89PNG"


def _pairs_result(aggregator: str, noise: float) -> UnitResult:
    from sklearn.metrics import average_precision_score

    labels = (np.random.default_rng(1).random(600) < 0.4).astype(float)
    predicted = labels + noise * np.random.default_rng(2).normal(0, 1, 600)
    items = {
        "default": ItemScores(kind="pairs", gold=labels.tolist(), predicted=predicted.tolist())
    }
    score = float(average_precision_score(labels, predicted))
    return factories.result(
        aggregator,
        items,
        score,
        task="Dups",
        task_type="PairClassification",
        main_score_name="max_ap",
    )


def _clusters_result(aggregator: str, flip: float) -> UnitResult:
    from sklearn.metrics import v_measure_score

    gold = np.random.default_rng(3).integers(0, 3, 300)
    runs = []
    for run in range(10):
        wrong = np.random.default_rng(10 + run).random(300) < flip
        runs.append(np.where(wrong, (gold + 1) % 3, gold).astype(float))
    items = {
        "default": ItemScores(
            kind="clusters",
            gold=gold.astype(float).tolist(),
            predicted=runs[0].tolist(),
            runs=[r.tolist() for r in runs],
        )
    }
    score = float(np.mean([v_measure_score(gold, r) for r in runs]))
    return factories.result(
        aggregator, items, score, task="Topics", task_type="Clustering", main_score_name="v_measure"
    )


@pytest.mark.parametrize(
    ("make", "good", "bad"),
    [(_pairs_result, 0.3, 0.9), (_clusters_result, 0.05, 0.3)],
    ids=["pair-classification", "clustering"],
)
def test_gate_fails_on_a_regression_of_every_task_type(
    tmp_path: Path, make: Any, good: float, bad: float
) -> None:
    from sbabench.analysis.compare import compare

    main_branch = _folder(tmp_path / "main", [make("sba", good)])
    worse = _folder(tmp_path / "worse", [make("sba", bad)])
    same = _folder(tmp_path / "same", [make("sba", good)])
    outcome = compare([worse], against=main_branch, n_resamples=300, fail_on_regression=True)
    assert outcome.exit_code == 1 and outcome.verdict.text.startswith("REGRESSION: 1 of 1")
    row = outcome.verdict.regressions[0]
    assert row.delta is not None and row.delta < -0.05 and row.p_holm is not None
    unchanged = compare([same], against=main_branch, n_resamples=300, fail_on_regression=True)
    assert unchanged.exit_code == 0 and unchanged.verdict.text.startswith("OK:")
    cli = CliRunner().invoke(
        main,
        [
            "compare",
            str(worse),
            "--against",
            str(main_branch),
            "--fail-on-regression",
            "--resamples",
            "300",
        ],
    )
    assert cli.exit_code == 1 and "REGRESSION" in cli.output.strip().splitlines()[-1]


def test_marks_and_regressions_follow_the_tested_statistic_not_the_main_score() -> None:
    from sbabench.analysis.compare import Comparison, Row, _with_marks
    from sbabench.analysis.uncertainty import Spread

    def row(delta: float, item_delta: float) -> Row:
        return Row(
            "T", "Clustering", "m", "sba", 0.5, Mark.SAME, "m/linear", 0.5 - delta, delta,
            item_delta, p_value=0.001, spread=Spread(0.01**2, 100),
        )  # fmt: skip

    # the main score (one k-means run) fell, the tested statistic (mean of ten) rose
    contradicted, real = _with_marks([row(-0.05, +0.04), row(-0.05, -0.04)], alpha=0.05)
    assert contradicted.mark is Mark.BETTER and real.mark is Mark.WORSE
    comparison = Comparison(rows=[contradicted, real])
    assert comparison.regressions(max_drop=0.005) == [real]


def test_models_compare_with_a_baseline_model_operator_by_operator() -> None:
    base = [_result("linear", GOLD + NOISE), _result("sba", GOLD + NOISE)]
    other = [_result("linear", GOLD + 0.5 * NOISE, model="other")]
    rows = compare_results(base + other, baseline_model="other").rows
    tested = [r for r in rows if r.model == "m" and r.aggregator == "linear"]
    assert tested and tested[0].baseline == "other/linear" and tested[0].p_value is not None
    sba = [r for r in rows if r.aggregator == "sba"]
    assert sba[0].note == "no baseline result"  # `other` has no sba unit
    with pytest.raises(Exception, match="no results here"):
        compare_results(base, baseline_model="missing")


def test_a_spearman_of_minus_one_and_a_nan_score_are_reported_not_crashed() -> None:
    nan_items = np.full(600, np.nan)
    results = [
        _result("linear", GOLD + NOISE),
        _result("reversed", -GOLD),  # Spearman exactly -1: Steiger's atanh must stay finite
        _result("diverged", nan_items),
        _result("linear", GOLD + NOISE, task="T2"),
        _result("reversed", -GOLD, task="T2"),
        _result("diverged", nan_items, task="T2"),
    ]
    for i in (2, 5):
        results[i] = results[i].model_copy(update={"main_score": float("nan")})
    comparison = compare_results(results, n_resamples=200)
    rows = {(r.aggregator, r.task): r for r in comparison.rows}
    reversed_row = rows[("reversed", "T1")]
    assert reversed_row.mark is Mark.WORSE and reversed_row.steiger_p is not None
    assert np.isfinite(reversed_row.steiger_p)
    diverged = rows[("diverged", "T2")]
    assert diverged.p_value is None and diverged.mark is Mark.INCOMPARABLE
    assert diverged.note == "NaN score: not tested (did a model diverge?)"
    summary = next(s for s in comparison.summaries if s.candidate == "m/diverged")
    assert np.isnan(summary.test.p_value) and summary.test.note == "NaN score in 2 task(s)"
    assert comparison.friedman is not None and np.isnan(comparison.friedman.p_value)
    assert comparison.friedman.note == "NaN score for m/diverged"
