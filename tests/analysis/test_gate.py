"""The regression gate on the committed baselines: each passes itself and fails a significantly
worse operator on every task type it holds (quickstart: STS, clustering, pair classification;
task-types: retrieval, reranking, classification)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sbabench.analysis.compare import compare
from sbabench.analysis.evidence import recomputed_score
from sbabench.run.results import load_result, load_results, save_result

BASELINES = Path(__file__).resolve().parents[2] / "results" / "baseline"
BASELINE = BASELINES / "quickstart"
EXPECTED_TYPES = {
    "quickstart": {"Clustering", "PairClassification", "STS"},
    "task-types": {"Retrieval", "Reranking", "Classification"},
}
CASES = [
    (suite, task_type)
    for suite in EXPECTED_TYPES
    if (BASELINES / suite).is_dir()
    for task_type in sorted({r.task_type for r in load_results(BASELINES / suite)})
]


@pytest.mark.parametrize("suite", list(EXPECTED_TYPES))
def test_the_baseline_is_committed_and_covers_every_task_type(suite: str) -> None:
    results = load_results(BASELINES / suite)
    assert {r.aggregator for r in results} >= {"linear", "sba"}
    assert {r.task_type for r in results} == EXPECTED_TYPES[suite]
    assert not list(BASELINES.rglob("*.lock")) and not list(BASELINES.rglob(".cache"))


@pytest.mark.parametrize("suite", list(EXPECTED_TYPES))
def test_the_baseline_passes_its_own_gate(suite: str) -> None:
    outcome = compare((BASELINES / suite,), against=BASELINES / suite, fail_on_regression=True)
    assert outcome.exit_code == 0 and outcome.verdict.text.startswith("OK")
    assert outcome.verdict.tested == outcome.verdict.units >= 6


def _degrade(path: Path) -> float:
    """Make one unit much worse: every item predicted one below the lowest prediction the unit
    made (a constant nothing can cluster, classify or retrieve with: AP, V-measure or accuracy at
    chance or 0, each query's score below all of them); STS's ranking reversed (a constant has
    no correlation: undefined, so not tested). Its main score is what the new items give (a
    stored score its items contradict is refused), mteb's clustering score lowered by 0.1."""
    result = load_result(path)
    assert result is not None
    items = {}
    for subset, scores in result.items.items():
        floor = min(min(run) for run in [scores.predicted, *scores.runs]) - 1.0
        predicted = [floor] * len(scores.predicted)
        if scores.kind == "sts":
            predicted = [-p for p in scores.predicted]
        runs = [[floor] * len(run) for run in scores.runs]
        items[subset] = scores.model_copy(update={"predicted": predicted, "runs": runs})
    worse = result.model_copy(update={"items": items})
    score = recomputed_score(worse)
    worse = worse.model_copy(
        update={"main_score": result.main_score - 0.1 if score is None else score}
    )
    save_result(path, worse)
    return worse.main_score


@pytest.mark.parametrize(("suite", "task_type"), CASES)
def test_a_significantly_worse_operator_fails_the_gate(
    tmp_path: Path, suite: str, task_type: str
) -> None:
    current = tmp_path / suite
    shutil.copytree(BASELINES / suite, current)
    (unit,) = [
        r for r in load_results(current) if r.aggregator == "sba" and r.task_type == task_type
    ]
    _degrade(current / unit.model / unit.aggregator / f"{unit.task}.json")
    outcome = compare((current,), against=BASELINES / suite, fail_on_regression=True)
    assert outcome.exit_code == 1, outcome.verdict.text
    assert [(r.aggregator, r.task) for r in outcome.verdict.regressions] == [("sba", unit.task)]


@pytest.mark.parametrize("part", ["model", "task", "scoring"])
def test_a_change_of_the_model_task_or_scoring_code_is_still_gated(
    tmp_path: Path, part: str
) -> None:
    """The model key part carries the digest of the code that builds and runs models, a bundled
    task's the digest of the code that builds it, every key the scoring code's; a change to that
    code (the MoE path, the encoder, a bundled task's reader, an evaluator's driver) must still
    be compared with the baseline, whose results may predate the digest."""
    current = tmp_path / "quickstart"
    shutil.copytree(BASELINE, current)
    for path in current.rglob("*.json"):
        result = load_result(path)
        assert result is not None
        if part == "scoring":
            parts = result.key_parts.model_copy(update={"scoring_code_sha256": "changed"})
        else:
            changed = getattr(result.key_parts, part).model_copy(update={"code_sha256": "changed"})
            parts = result.key_parts.model_copy(update={part: changed})
        save_result(
            path,
            result.model_copy(update={"key_parts": parts, "key": parts.digest}),
        )
    outcome = compare((current,), against=BASELINE, fail_on_regression=True)
    assert outcome.exit_code == 0 and outcome.verdict.tested == 9, outcome.verdict.text


def test_a_gate_that_can_pair_nothing_fails(tmp_path: Path) -> None:
    current = tmp_path / "quickstart"
    shutil.copytree(BASELINE, current)
    for path in current.rglob("*.json"):
        result = load_result(path)
        assert result is not None
        settings = result.key_parts.settings.model_copy(update={"seed": 1})
        parts = result.key_parts.model_copy(update={"settings": settings})
        save_result(
            path,
            result.model_copy(update={"key_parts": parts, "key": parts.digest}),
        )
    outcome = compare((current,), against=BASELINE, fail_on_regression=True)
    assert outcome.exit_code == 1 and outcome.verdict.text.startswith("NOT TESTED"), (
        outcome.verdict.text
    )
    assert "settings differs" in outcome.verdict.text
