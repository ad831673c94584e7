"""Running suites: results on disk, skipping finished units, recovering from bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.run.execute import run_suite
from sbabench.run.plan import plan_suite
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


@pytest.mark.parametrize("store", ["float32", "off"])
def test_a_run_holds_no_task_sized_data_past_the_units_that_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """With an embedding store, no unit starts with another unit's vectors in memory; without
    one, a model x operator keeps its vectors for its next task and drops them after its last.
    The summary keeps each result without its per-item arrays (the files keep them), and so
    does a resumed run's plan."""
    from sbabench.run.compute import UnitComputer
    from tests.factories import TINY_MOE_SUITE

    rows = [
        f"the {w} sat on the mat,the {w} lay on a rug,{i % 5}" for i, w in enumerate("abcdefgh")
    ]
    (tmp_path / "pairs.csv").write_text("a,b,score\n" + "\n".join(rows) + "\n")
    text = TINY_MOE_SUITE.replace(
        "tasks: [LeeDocSTS]",
        f"tasks: [LeeDocSTS, {{name: Mats, type: sts, path: {tmp_path / 'pairs.csv'}, "
        "text1: a, text2: b, score: score}]",
    ).replace("settings: {device: cpu}", f"settings: {{device: cpu, embedding_cache: '{store}'}}")
    held: list[tuple[str, list[str], int]] = []
    attempt = UnitComputer.attempt

    def recording(self: UnitComputer, planned: Any) -> Any:
        vectors = sum(len(e.cache) for e in self._encoders.values())
        held.append((planned.unit.aggregator_key, sorted(k[1] for k in self._encoders), vectors))
        return attempt(self, planned)

    monkeypatch.setattr(UnitComputer, "attempt", recording)
    results = tmp_path / "results"
    summary = run_suite(parse_suite(text), results)
    assert summary.exit_code == 0
    kept = 0 if store != "off" else held[1][2]
    assert held == [("linear", [], 0), ("linear", ["linear"], kept), ("sba", [], 0),
                    ("sba", ["sba"], kept)]  # fmt: skip
    assert store != "off" or kept >= 50  # LeeDocSTS's 50 documents, kept for the next task
    assert all(r.items == {} for r in summary.results)
    for r in summary.results:
        saved = load_result(result_path(results, "tiny", r.model, r.aggregator, r.task))
        assert saved is not None and len(saved.items["default"].gold) >= 8
        assert saved.model_copy(update={"items": {}}) == r
    result_path(results, "tiny", "moe", "sba", "Mats").unlink()
    plan = plan_suite(parse_suite(text), results)
    assert len(plan.done) == 3 and all(r.items == {} for _, r in plan.done)
    resumed = run_suite(parse_suite(text), results)
    assert resumed.computed == ["moe/sba/Mats"] and len(resumed.cached) == 3
    assert all(r.items == {} for r in resumed.results)


def test_a_full_collection_runs_once_between_models_and_not_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing an operator's embeddings only trims the heap; what a released model's cycles
    hold is collected before the next model's session (a full collection costs ~0.3 s with
    torch and mteb imported), and after the run's last model nothing is collected."""
    from sbabench.run import compute, session

    calls: list[str] = []
    monkeypatch.setattr(compute, "give_back_freed_memory", lambda collect=False: calls.append(
        "collect" if collect else "trim"))  # fmt: skip
    built = session.ModelSession

    def building(suite: Any, unit: Any, cache: Path) -> Any:
        calls.append(f"session {unit.model_id}")
        return built(suite, unit, cache)

    monkeypatch.setattr(session, "ModelSession", building)
    assert run_suite(parse_suite(SUITE), tmp_path).exit_code == 0
    assert calls == ["session moe", "trim", "trim", "collect", "session dense", "trim"]
