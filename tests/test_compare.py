"""compare: operator-vs-baseline tables, before/after folders, and the CI regression gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from sbabench.cli import main
from sbabench.compare import Mark, compare_results
from sbabench.per_item import ItemScores
from sbabench.results import UnitResult, key_digest, result_path, save_result

RNG = np.random.default_rng(0)
GOLD = RNG.random(600)
NOISE = RNG.normal(0, 1, 600)


def _result(
    aggregator: str, predicted: np.ndarray, task: str = "T1", model: str = "m"
) -> UnitResult:
    items = {"default": ItemScores(kind="sts", gold=GOLD.tolist(), predicted=predicted.tolist())}
    score = float(sps.spearmanr(GOLD, predicted).statistic)
    parts = {
        "model": {"source": "upcycle"},
        "model_identity": "x",
        "task": task,
        "settings": {},
        "scoring_version": 1,
    }
    return UnitResult(
        suite="s", model=model, aggregator=aggregator, task=task, key=key_digest(parts), key_parts=parts, task_type="STS",
        split="test", main_score_name="cosine_spearman", main_score=score, scores={}, items=items,
        timing_s={}, provenance={},
    )  # fmt: skip


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
    other.key_parts["model"] = {"source": "upcycle", "revision": "another"}
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
