"""Replicates until decided: the design's alpha spending, what a look decides, the rounds of a
run (with results written as a run would), its record, and its level by simulation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbabench.analysis import calibration, sequential
from sbabench.analysis.sequential import Design
from sbabench.analysis.stats import statistic
from sbabench.cli import main
from sbabench.errors import SbabenchError
from sbabench.run.results import result_path, save_result
from sbabench.suite import parse_suite
from sbabench.suite.replicates import instance_name
from sbabench.suite.schema import Suite, expand
from sbabench.tasks.items import ItemScores
from tests.factories import TINY_MOE_SUITE, result


def test_the_increments_spend_alpha_late_and_sum_to_it() -> None:
    design = Design(minimum=2, maximum=10)
    increments = [design.increment(k) for k in range(len(design.looks()))]
    assert design.looks() == list(range(2, 11))
    assert math.isclose(sum(increments), 0.05, rel_tol=1e-9)
    assert all(a > 0 for a in increments)
    # O'Brien-Fleming: 2 - 2 Phi(1.96 / sqrt(0.2)) at R = 2 of 10, most of alpha at the end
    assert increments[0] == pytest.approx(1.1726e-5, rel=1e-3)
    assert increments[-1] == max(increments)
    assert Design(minimum=2, maximum=9, step=3).looks() == [2, 5, 8, 9]


def _sts(gold: np.ndarray, predicted: np.ndarray) -> dict[str, ItemScores]:
    return {"test": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}


def _writer(folder: Path, noise: dict[str, float], seed: int = 0, same_draws: bool = False):  # type: ignore[no-untyped-def]
    """A stand-in for a run: writes every unit of the suite it is given (as a run would:
    result files at their places, scores their items' Spearman), each operator's predictions
    gold plus noise of its SD; records the replicate counts each round asked for."""
    rounds: list[int] = []
    gold = np.random.default_rng(seed).normal(size=80)

    def run_round(suite: Suite) -> bool:
        units = expand(suite)
        rounds.append(max(u.replicate for u in units) + 1)
        for unit in units:
            draw = 0 if same_draws else len(unit.aggregator_key)
            rng = np.random.default_rng([seed, unit.replicate, draw])
            predicted = gold + noise[unit.aggregator_key] * rng.normal(size=len(gold))
            items = _sts(gold, predicted)
            score = float(statistic("sts", gold, predicted)[0])
            made = result(
                unit.aggregator_key, items, score, task=unit.task, model=unit.model.name,
                replicate=unit.replicate,
            ).model_copy(update={"suite": suite.name})  # fmt: skip
            path = result_path(folder, suite.name, unit.model_id, unit.aggregator_key, unit.task)
            if not path.exists():
                save_result(path, made)
        return True

    return run_round, rounds


def _suite(replicates: str) -> Suite:
    return parse_suite(TINY_MOE_SUITE + f"replicates: {replicates}\n", check=False)


def test_a_clear_difference_stops_at_the_first_look_that_can_see_it(tmp_path: Path) -> None:
    suite = _suite("{min: 2, max: 8}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None and design.maximum == 8
    run_round, rounds = _writer(tmp_path, {"linear": 1.5, "sba": 0.3})
    outcome = sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    assert not outcome.failed
    (final,) = outcome.record.final()
    assert final.comparison.decision == "better"
    stopped = outcome.record.stopped["moe"]
    assert stopped < 8 and rounds == list(range(2, stopped + 1))  # nothing past the decision
    assert not (tmp_path / "tiny" / instance_name("moe", stopped)).exists()
    assert final.p_sequential is not None and final.p_sequential < design.alpha
    saved = json.loads((tmp_path / "tiny" / sequential.RECORD).read_text())
    assert saved["stopped"] == {"moe": stopped} and len(saved["looks"]) == len(rounds)


def test_equal_operators_are_decided_within_the_effect_or_run_to_the_maximum(
    tmp_path: Path,
) -> None:
    suite = _suite("{min: 2, max: 5}")
    same = {"linear": 1.0, "sba": 1.0}
    wide = sequential.design_for(suite, until_decided=False, baseline=None, effect=0.3)
    assert wide is not None
    run_round, _ = _writer(tmp_path / "a", same)
    outcome = sequential.run_until_decided(suite, wide, tmp_path / "a" / "tiny", run_round)
    assert [f.comparison.decision for f in outcome.record.final()] == ["within"]
    none = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert none is not None
    run_round, rounds = _writer(tmp_path / "b", same)
    outcome = sequential.run_until_decided(suite, none, tmp_path / "b" / "tiny", run_round)
    assert rounds == [2, 3, 4, 5] and outcome.record.stopped == {"moe": 5}
    assert [f.comparison.decision for f in outcome.record.final()] == ["open"]


def test_a_failed_round_stops_the_run_with_its_record(tmp_path: Path) -> None:
    suite = _suite("{min: 2, max: 5}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    outcome = sequential.run_until_decided(suite, design, tmp_path / "tiny", lambda s: False)
    assert outcome.failed and outcome.record.looks == []
    assert (tmp_path / "tiny" / sequential.RECORD).is_file()


def test_design_from_a_plain_count_and_refusals() -> None:
    plain = parse_suite(TINY_MOE_SUITE + "replicates: 6\n", check=False)
    design = sequential.design_for(plain, until_decided=True, baseline="sba", effect=0.01)
    assert design is not None and (design.minimum, design.maximum) == (2, 6)
    assert design.baseline == "sba" and design.effect == 0.01
    assert sequential.design_for(plain, until_decided=False, baseline=None, effect=None) is None
    with pytest.raises(SbabenchError, match="applies to a run until decided"):
        sequential.design_for(plain, until_decided=False, baseline=None, effect=0.01)
    with pytest.raises(SbabenchError, match="not among the suite's aggregators"):
        sequential.design_for(plain, until_decided=True, baseline="nope", effect=None)
    two = parse_suite(TINY_MOE_SUITE + "replicates: 2\n", check=False)
    with pytest.raises(SbabenchError, match="room for rounds"):
        sequential.design_for(two, until_decided=True, baseline=None, effect=None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{min: 1, max: 4}", "min must be at least 2"),
        ("{min: 5, max: 4}", "max (4) is below min (5)"),
        ("{min: 2, max: 4, effect: -1}", "replicates.effect"),
        ("{min: 2}", "replicates.max"),
    ],
)
def test_bad_ranges_are_located_errors(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TINY_MOE_SUITE + f"replicates: {value}\n")
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 2 and f"{path}:11:" in out.output and message in out.output


def test_run_refuses_options_that_would_change_the_family(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TINY_MOE_SUITE + "replicates: {min: 2, max: 4}\n")
    out = CliRunner().invoke(
        main, ["run", str(path), "--only", "*/sba/*", "--results", str(tmp_path)]
    )
    assert out.exit_code == 2 and "--only cannot be combined" in out.output
    assert not (tmp_path / "tiny").exists()


def test_compare_shows_the_record_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    suite = _suite("{min: 2, max: 6}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    run_round, _ = _writer(tmp_path, {"linear": 1.5, "sba": 0.3})
    sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "tiny")])
    assert out.exit_code == 0, out.output
    assert "until decided against linear" in out.output and "moe/sba/LeeDocSTS" in out.output
    (tmp_path / "tiny" / sequential.RECORD).write_text('{"version": 1')
    out = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert out.exit_code == 2 and "not a readable sequential record" in out.output
    assert "Traceback" not in out.output


@pytest.mark.slow
def test_the_sequential_design_holds_its_level_where_testing_every_round_does_not() -> None:
    design = Design(minimum=2, maximum=10, effect=0.05)
    rates = calibration.sequential_rates(
        calibration.ITEM_DOMINATED, design, 300, statistic="queries", items=50, seed=3
    )
    assert rates.sequential.rate <= design.alpha
    assert rates.naive.interval[0] > design.alpha  # "until significant" over-rejects


def test_replicates_beyond_a_look_are_not_seen_by_it(tmp_path: Path) -> None:
    """A folder that already holds 6 replicates (an earlier fixed run): each look tests only its
    own count, so the looks are the ones a fresh folder gives."""
    suite = _suite("{min: 2, max: 6}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    noise = {"linear": 1.0, "sba": 0.95}
    fresh_round, _ = _writer(tmp_path / "fresh", noise)
    fresh = sequential.run_until_decided(suite, design, tmp_path / "fresh" / "tiny", fresh_round)
    full_round, _ = _writer(tmp_path / "full", noise)
    full_round(sequential.with_counts(suite, {"moe": 6}))
    full = sequential.run_until_decided(suite, design, tmp_path / "full" / "tiny", full_round)
    assert len(fresh.record.looks) == len(full.record.looks) > 1
    for a, b in zip(fresh.record.looks, full.record.looks, strict=True):
        assert [c.p for c in a.comparisons] == [c.p for c in b.comparisons]


def test_compare_replays_the_record_and_refuses_one_the_results_do_not_support(
    tmp_path: Path,
) -> None:
    suite = _suite("{min: 2, max: 6}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    run_round, _ = _writer(tmp_path, {"linear": 1.0, "sba": 0.97})
    sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    path = tmp_path / "tiny" / sequential.RECORD
    record = json.loads(path.read_text())
    record["looks"][0]["comparisons"][0].update(decision="better", p=1e-9, p_holm=1e-9)
    path.write_text(json.dumps(record))
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "tiny")])
    assert out.exit_code == 2 and "look 1" in out.output and "the results give" in out.output


def test_more_replicates_in_the_folder_are_said_and_left_out(tmp_path: Path) -> None:
    suite = _suite("{min: 2, max: 6}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    run_round, _ = _writer(tmp_path, {"linear": 1.5, "sba": 0.3})
    outcome = sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    run_round(sequential.with_counts(suite, {"moe": 6}))  # a plain run added replicates
    ((record, notes),) = sequential.records_under([tmp_path / "tiny"])
    assert record.stopped == outcome.record.stopped
    assert notes == [f"moe: the folder holds 6 replicates; the sequential decisions use the first {record.stopped['moe']} (the tables above test them all)"]  # fmt: skip


def test_files_of_operators_the_suite_no_longer_has_are_not_in_the_family(tmp_path: Path) -> None:
    suite = _suite("{min: 2, max: 5}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    old = parse_suite(TINY_MOE_SUITE.replace("[linear, sba]", "[linear, sba, slerp]") + "replicates: 2\n", check=False)  # fmt: skip
    run_round, _ = _writer(tmp_path, {"linear": 1.5, "sba": 0.3, "slerp": 1.5})
    run_round(old)  # an earlier run left slerp's files
    outcome = sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    assert {c.operator for look in outcome.record.looks for c in look.comparisons} == {"sba"}


def test_an_operator_identical_to_the_baseline_is_decided_within_the_effect(
    tmp_path: Path,
) -> None:
    suite = _suite("{min: 2, max: 6, effect: 0.01}")
    design = sequential.design_for(suite, until_decided=False, baseline=None, effect=None)
    assert design is not None
    run_round, rounds = _writer(tmp_path, {"linear": 1.0, "sba": 1.0}, same_draws=True)
    outcome = sequential.run_until_decided(suite, design, tmp_path / "tiny", run_round)
    assert rounds == [2] and [f.comparison.decision for f in outcome.record.final()] == ["within"]


def test_a_suite_with_the_baseline_alone_is_refused() -> None:
    alone = parse_suite(TINY_MOE_SUITE.replace("[linear, sba]", "[linear]") + "replicates: 4\n", check=False)  # fmt: skip
    with pytest.raises(SbabenchError, match="needs at least two"):
        sequential.design_for(alone, until_decided=True, baseline=None, effect=None)
