"""Running suites: results on disk, skipping finished units, recovering from bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.run.execute import run_suite
from sbabench.run.results import load_result, result_path
from sbabench.suite import parse_suite
from tests.factories import TINY_SUITE

SUITE = TINY_SUITE


def test_run_writes_results_and_skips_finished_units(tmp_path: Path) -> None:
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert first.exit_code == 0 and len(first.computed) == 3 and not first.cached
    path = result_path(tmp_path, "tiny", "moe", "sba", "LeeDocSTS")
    result = load_result(path)
    assert result is not None
    assert result.main_score_name == "cosine_spearman"
    assert 0.2 < result.main_score < 0.8
    assert result.scores["default"]["cosine_spearman"] == result.main_score
    assert result.provenance.versions["mteb"] and result.timing_s.encode > 0
    assert result.key_parts.aggregator.name == "sba"
    scores = {r.aggregator: r.main_score for r in first.results}
    assert scores["linear"] != scores["sba"]
    assert not list(tmp_path.rglob("*.lock"))

    second = run_suite(suite, tmp_path)
    assert not second.computed and len(second.cached) == 3
    assert {r.main_score for r in second.results} == {r.main_score for r in first.results}

    # A truncated file is not read as a result: that unit alone is recomputed, same score.
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    third = run_suite(suite, tmp_path)
    assert third.computed == ["moe/sba/LeeDocSTS"]
    recomputed = load_result(path)
    assert recomputed is not None and abs(recomputed.main_score - scores["sba"]) < 1e-9

    # A result whose key no longer matches (e.g. the operator's options changed) is recomputed.
    data = json.loads(path.read_text())
    data["key"] = "0" * 64
    path.write_text(json.dumps(data))
    assert run_suite(suite, tmp_path).computed == ["moe/sba/LeeDocSTS"]


def test_a_failing_unit_is_reported_and_the_others_run(tmp_path: Path) -> None:
    suite = parse_suite(
        SUITE.replace("[linear, sba]", "[linear, 'tests.user_ops:fails_on_real_batches']")
    )
    summary = run_suite(suite, tmp_path)
    assert summary.exit_code == 1
    assert list(summary.failed) == ["moe/tests.user_ops.fails_on_real_batches/LeeDocSTS"]
    assert "simulated operator failure" in next(iter(summary.failed.values()))
    assert len(summary.computed) == 2


def test_cli_run_prints_the_table(tmp_path: Path) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(
        SUITE.replace("[linear, sba]", "[linear]").replace(
            "  - name: dense\n    source: dense\n", ""
        )
    )
    result = CliRunner().invoke(main, ["run", str(suite_file), "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "LeeDocSTS" in result.output and "1 computed" in result.output
    shown = CliRunner().invoke(main, ["show", str(tmp_path / "r"), "--format", "markdown"])
    assert shown.exit_code == 0 and "| LeeDocSTS" in shown.output
    missing = CliRunner().invoke(main, ["show", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_result_files_are_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    from sbabench.atomic import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_a_unit_finished_by_another_process_after_planning_is_not_computed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window two concurrent runs share: both planned a unit, one finished it before the
    other locked it. The second takes the result instead of computing the unit again."""
    from sbabench.run import execute
    from sbabench.run.plan import plan_suite

    suite = parse_suite(SUITE.replace("[linear, sba]", "[linear]"))
    stale = plan_suite(suite, tmp_path)
    assert len(stale.todo) == 2
    first = run_suite(suite, tmp_path)  # the other process
    monkeypatch.setattr(execute, "plan_suite", lambda *_, **__: stale)
    second = run_suite(suite, tmp_path)
    assert second.computed == [] and sorted(second.cached) == sorted(first.computed)
    assert second.models_loaded == 0
    assert {r.label: r.main_score for r in second.results} == {
        r.label: r.main_score for r in first.results
    }
    forced = run_suite(suite, tmp_path, force=True)
    assert sorted(forced.computed) == sorted(first.computed)


def test_an_operator_that_returns_nan_on_real_batches_fails_its_units_with_a_located_message(
    tmp_path: Path,
) -> None:
    suite = parse_suite(
        SUITE.replace("[linear, sba]", "[linear, 'tests.user_ops:nan_on_real_batches']")
    )
    summary = run_suite(suite, tmp_path)
    assert summary.exit_code == 1 and len(summary.computed) == 2
    ((label, message),) = summary.failed.items()
    assert label == "moe/tests.user_ops.nan_on_real_batches/LeeDocSTS"
    assert "operator 'tests.user_ops:nan_on_real_batches' returned NaN or inf" in message
    assert not list(tmp_path.rglob("*.lock"))  # a failed unit leaves no lock file either
    assert "MoE layer encoder.layer.1.output.dense.combine" in message
    assert "in batch 1 of 2 (32 texts)" in message and "fix:" in message
    assert "Input contains NaN" not in message


def test_a_lock_another_process_holds_is_not_removed_when_a_run_ends(tmp_path: Path) -> None:
    from filelock import FileLock

    from sbabench.run.execute import remove_finished_locks
    from sbabench.run.plan import plan_suite

    plan = plan_suite(parse_suite(SUITE), tmp_path)
    held, free = plan.todo[0], plan.todo[1]
    free.lock.parent.mkdir(parents=True, exist_ok=True)
    free.lock.touch()
    held.lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(held.lock)):
        remove_finished_locks(plan.todo)
        assert held.lock.exists() and not free.lock.exists()


def test_a_run_holds_no_task_sized_data_past_the_units_that_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model x operator's in-memory embeddings are dropped after its last unit, and the
    summary keeps each result without its per-item arrays (the files keep them)."""
    from sbabench.run.compute import UnitComputer
    from tests.factories import TINY_MOE_SUITE

    alive: list[tuple[str, list[str]]] = []
    attempt = UnitComputer.attempt

    def recording(self: UnitComputer, planned: Any) -> Any:
        alive.append((planned.unit.aggregator_key, sorted(k[1] for k in self._encoders)))
        return attempt(self, planned)

    monkeypatch.setattr(UnitComputer, "attempt", recording)
    summary = run_suite(parse_suite(TINY_MOE_SUITE), tmp_path)
    assert summary.exit_code == 0
    operators = [operator for operator, _ in alive]
    assert len(set(operators)) == 2 and all(held == [] for _, held in alive), alive
    assert all(r.items == {} for r in summary.results)
    for r in summary.results:
        saved = load_result(result_path(tmp_path, "tiny", r.model, r.aggregator, r.task))
        assert saved is not None and len(saved.items["default"].gold) > 100
        assert saved.model_copy(update={"items": {}}) == r
