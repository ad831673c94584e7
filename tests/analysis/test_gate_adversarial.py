"""The gate attacked: every way one side can be missing, unreadable, emptied, planted, forged or
unpairable ends in a named NOT TESTED (exit 1) or a located error (exit 2), never in OK; and its
p-values resolve far enough below alpha / m that a clear drop fails it in a suite of any size."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbabench.analysis.compare import State, compare
from sbabench.analysis.evidence import recomputed_score
from sbabench.cli import main
from sbabench.run.results import UnitResult, load_result, result_path, save_result
from sbabench.tasks.items import ItemScores
from tests import factories

BASELINE = Path(__file__).resolve().parents[2] / "results" / "baseline" / "quickstart"
STS = "minilm-moe/sba/LeeDocSTS"
CLUSTERING = "minilm-moe/sba/MiniNewsgroupsClustering"


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path]:
    """(new, base): two copies of the committed quickstart baseline."""
    new, base = tmp_path / "new" / "quickstart", tmp_path / "base" / "quickstart"
    shutil.copytree(BASELINE, new)
    shutil.copytree(BASELINE, base)
    return new, base


def _gate(new: Path, base: Path, *extra: str) -> tuple[int, str]:
    args = ["compare", str(new), "--against", str(base), "--fail-on-regression", *extra]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _verdict(output: str) -> str:
    return output.strip().splitlines()[-1]


def _load(path: Path) -> UnitResult:
    result = load_result(path)
    assert result is not None
    return result


def _rewrite(path: Path, **update: object) -> None:
    """Save the unit with fields replaced (its key kept valid: the key covers key_parts only)."""
    save_result(path, _load(path).model_copy(update=update))


def _edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def test_two_identical_sides_pass_with_every_unit_counted(sides: tuple[Path, Path]) -> None:
    code, output = _gate(*sides)
    assert code == 0 and _verdict(output).startswith("OK")
    assert "9 of 9 units tested" in _verdict(output)


def test_a_deleted_baseline_file_fails_and_is_named(sides: tuple[Path, Path]) -> None:
    new, base = sides
    (base / f"{STS}.json").unlink()
    code, output = _gate(new, base)
    assert code == 1 and "NOT TESTED" in _verdict(output)
    assert f"{STS}: absent from the baseline" in _verdict(output)
    assert "8 of 9 units tested" in _verdict(output)
    # a unit absent from the baseline only is what --allow-new excuses
    code, output = _gate(new, base, "--allow-new")
    assert code == 0 and "allowed by --allow-new" in _verdict(output)


def test_allow_new_excuses_nothing_else(sides: tuple[Path, Path]) -> None:
    new, base = sides
    (new / f"{STS}.json").unlink()
    code, output = _gate(new, base, "--allow-new")
    assert code == 1 and f"{STS}: missing from the candidate" in _verdict(output)


@pytest.mark.parametrize("content", ["{", "[]", "", "null", '{"schema_version": 2}'])
@pytest.mark.parametrize("side", [0, 1])
def test_an_unreadable_file_on_either_side_is_a_located_error(
    sides: tuple[Path, Path], content: str, side: int
) -> None:
    path = sides[side] / f"{STS}.json"
    path.write_text(content)
    code, output = _gate(*sides)
    assert code == 2 and str(path) in output and "fix:" in output


def test_the_new_sides_missing_operator_fails_naming_each_unit(sides: tuple[Path, Path]) -> None:
    new, base = sides
    shutil.rmtree(new / "minilm-moe" / "sba")
    code, output = _gate(new, base)
    assert code == 1 and "6 of 9 units tested" in _verdict(output)
    assert f"{STS}: missing from the candidate" in _verdict(output)


def test_emptied_items_are_not_tested(sides: tuple[Path, Path]) -> None:
    new, base = sides
    _rewrite(new / f"{STS}.json", items={})
    code, output = _gate(new, base)
    assert code == 1 and f"{STS}: no per-item scores in the candidate" in _verdict(output)


def _drop_sts(path: Path, noise: float = 0.2, seed: int = 3) -> float:
    """Worse STS predictions (noise added), with the main score they give; returns the score."""
    result = _load(path)
    items = {}
    for subset, scores in result.items.items():
        rng = np.random.default_rng(seed)
        predicted = np.asarray(scores.predicted) + rng.normal(0, noise, len(scores.predicted))
        items[subset] = scores.model_copy(update={"predicted": predicted.tolist()})
    worse = result.model_copy(update={"items": items})
    score = recomputed_score(worse)
    assert score is not None
    save_result(path, worse.model_copy(update={"main_score": score}))
    return score


def test_a_regression_with_a_good_copy_planted_beside_it_is_an_error(
    sides: tuple[Path, Path],
) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    shutil.copy(path, path.with_name("LeeDocSTS_good.json"))
    _drop_sts(path)
    code, output = _gate(new, base)
    assert code == 2 and "LeeDocSTS_good.json" in output and "'task'" in output


def test_alone_that_regression_fails_the_gate(sides: tuple[Path, Path]) -> None:
    new, base = sides
    _drop_sts(new / f"{STS}.json")
    code, output = _gate(new, base)
    assert code == 1 and _verdict(output).startswith("REGRESSION")
    assert "minilm-moe/sba/LeeDocSTS" in _verdict(output)


@pytest.mark.parametrize("side", [0, 1])
def test_a_forged_score_is_refused_where_its_items_contradict_it(
    sides: tuple[Path, Path], side: int
) -> None:
    path = sides[side] / f"{STS}.json"

    def forge(data: dict) -> None:
        data["main_score"] = -0.5
        for subset in data["scores"].values():  # forged everywhere the file states it
            if isinstance(subset, dict) and "cosine_spearman" in subset:
                subset["cosine_spearman"] = -0.5

    _edit_json(path, forge)
    code, output = _gate(*sides)
    assert code == 2 and str(path) in output and "main_score" in output


def test_a_file_whose_content_names_another_unit_is_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    other = new / "minilm-moe" / "linear" / "LeeDocSTS.json"
    shutil.copy(new / f"{STS}.json", other)  # sba's result where linear's goes
    code, output = _gate(new, base)
    assert code == 2 and str(other) in output and "'aggregator'" in output


def test_a_folder_where_a_file_goes_is_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    path.unlink()
    path.mkdir()
    code, output = _gate(new, base)
    assert code == 2 and str(path) in output


def test_a_symlinked_result_is_an_error(sides: tuple[Path, Path], tmp_path: Path) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    outside = tmp_path / "outside.json"
    shutil.move(path, outside)
    os.symlink(outside, path)
    code, output = _gate(new, base)
    assert code == 2 and "symbolic link" in output


def test_two_folders_claiming_one_unit_are_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    args = ["compare", str(new), str(base), "--against", str(base), "--fail-on-regression"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "also claims" in result.output


@pytest.mark.parametrize(
    ("part", "update", "reason"),
    [
        ("settings", {"seed": 9}, "settings differs"),
        ("task", {"revision": "other"}, "task differs"),
    ],
)
def test_a_changed_setting_or_task_is_not_tested(
    sides: tuple[Path, Path], part: str, update: dict, reason: str
) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    result = _load(path)
    changed = getattr(result.key_parts, part).model_copy(update=update)
    parts = result.key_parts.model_copy(update={part: changed})
    save_result(path, result.model_copy(update={"key_parts": parts, "key": parts.digest}))
    code, output = _gate(new, base)
    assert code == 1 and f"{STS}: {reason}" in _verdict(output)


def test_a_changed_split_is_not_tested(sides: tuple[Path, Path]) -> None:
    new, base = sides
    _rewrite(new / f"{STS}.json", split="dev")
    code, output = _gate(new, base)
    assert code == 1 and f"{STS}: split differs" in _verdict(output)


def test_nan_predictions_are_not_tested(sides: tuple[Path, Path]) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    result = _load(path)
    scores = result.items["default"]
    nan = scores.model_copy(update={"predicted": [float("nan")] * len(scores.predicted)})
    save_result(path, result.model_copy(update={"items": {"default": nan}, "main_score": np.nan}))
    code, output = _gate(new, base)
    assert code == 1 and f"{STS}: NaN score" in _verdict(output)


def _first_gold(path: Path, value: float) -> None:
    """The unit's first gold value replaced (clustering: its score is not recomputed)."""
    scores = _load(path).items["default"]
    gold = [value, *scores.gold[1:]]
    _rewrite(path, items={"default": scores.model_copy(update={"gold": gold})})


def test_nan_gold_is_a_located_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    _first_gold(new / f"{CLUSTERING}.json", float("nan"))
    code, output = _gate(new, base)
    assert code == 2 and "NaN gold value at item 0" in output


def test_edited_gold_is_not_paired(sides: tuple[Path, Path]) -> None:
    new, base = sides
    path = new / f"{CLUSTERING}.json"
    _first_gold(path, 1 - _load(path).items["default"].gold[0])
    code, output = _gate(new, base)
    assert code == 1 and f"{CLUSTERING}: subset 'default': gold differs at item 0" in output


def test_a_renamed_subset_is_named(sides: tuple[Path, Path]) -> None:
    new, base = sides
    path = new / f"{CLUSTERING}.json"
    result = _load(path)
    _rewrite(path, items={"en": result.items["default"]})
    code, output = _gate(new, base)
    assert code == 1 and "subsets differ: en only in the candidate" in _verdict(output)


def test_a_failed_unit_is_not_tested_with_its_message(sides: tuple[Path, Path]) -> None:
    new, base = sides
    failure = new / "minilm-moe" / "sba" / "LeeDocSTS.error.json"
    failure.write_text(json.dumps({"unit": STS, "error": "CUDA out of memory"}))
    code, output = _gate(new, base)
    assert code == 1 and "CUDA out of memory" in _verdict(output)


@pytest.mark.parametrize("command", ["compare", "show", "run"])
def test_deeply_nested_json_is_handled_without_a_traceback(
    sides: tuple[Path, Path], command: str
) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    if command == "compare":
        code, output = _gate(new, base)
        assert code == 2 and "nested deeper" in output and str(path) in output
        return
    suite = str(Path(__file__).resolve().parents[2] / "suites" / "quickstart.yaml")
    if command == "show":
        args = ["show", str(new)]
    else:  # the planned unit's file is the nested one: it reads as no result (to recompute)
        args = ["run", suite, "--results", str(new.parent), "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output and result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if command == "run":
        assert result.exit_code == 0 and "to run" in result.output, result.output


def _sts_unit(task: str, gold: np.ndarray, predicted: np.ndarray, aggregator: str) -> UnitResult:
    items = {"default": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}
    unit = factories.result(aggregator, items, 0.0, task=task)
    score = recomputed_score(unit)
    assert score is not None
    return unit.model_copy(update={"main_score": score})


def _suite(root: Path, units: list[UnitResult]) -> Path:
    for unit in units:
        save_result(result_path(root, unit.suite, unit.model, unit.aggregator, unit.task), unit)
    return root / "s"


def _synthetic(tmp_path: Path, units: int, dropped: int, noise: float) -> tuple[Path, Path]:
    """`units` STS units of 1,225 pairs; in the first `dropped` the candidate's predictions carry
    `noise` more noise (the others: fresh noise of the same size, so they differ but do not
    drop)."""
    rng = np.random.default_rng(11)
    new, base = [], []
    for i in range(units):
        gold = rng.uniform(0, 5, 1225)
        base.append(_sts_unit(f"T{i}", gold, gold + rng.normal(0, 2, 1225), "sba"))
        extra = noise if i < dropped else 0.0
        new.append(_sts_unit(f"T{i}", gold, gold + rng.normal(0, 2 + extra, 1225), "sba"))
    return _suite(tmp_path / "new", new), _suite(tmp_path / "base", base)


def test_thirty_units_each_dropping_clearly_fail(tmp_path: Path) -> None:
    new, base = _synthetic(tmp_path, 30, 30, 0.7)
    outcome = compare([new], against=base, fail_on_regression=True)
    drops = [r.delta for r in outcome.comparison.rows if r.delta is not None]
    assert -0.16 < float(np.mean(drops)) < -0.07  # about 0.11 Spearman each
    assert outcome.exit_code == 1 and outcome.verdict.text.startswith("REGRESSION: 30 of 30")


def test_three_of_sixty_units_dropping_fail_and_the_others_do_not(tmp_path: Path) -> None:
    new, base = _synthetic(tmp_path, 60, 3, 3.5)  # drops of 0.29-0.37 Spearman
    outcome = compare([new], against=base, fail_on_regression=True)
    regressed = {r.task for r in outcome.verdict.regressions}
    assert outcome.exit_code == 1 and regressed == {"T0", "T1", "T2"}, outcome.verdict.text
    assert "60 of 60 units tested" in outcome.verdict.text


def test_sixty_unchanged_units_pass(tmp_path: Path) -> None:
    new, base = _synthetic(tmp_path, 60, 0, 0.0)
    outcome = compare([new], against=base, fail_on_regression=True)
    assert outcome.exit_code == 0 and not outcome.verdict.regressions, outcome.verdict.text


def test_too_few_items_are_not_tested(tmp_path: Path) -> None:
    gold = np.array([1.0, 2.0, 3.0])
    new = _suite(tmp_path / "new", [_sts_unit("T", gold, np.array([1.0, 3.0, 2.0]), "sba")])
    base = _suite(tmp_path / "base", [_sts_unit("T", gold, np.array([1.0, 2.0, 3.0]), "sba")])
    outcome = compare([new], against=base, fail_on_regression=True)
    assert outcome.exit_code == 1 and "only 3 items" in outcome.verdict.text


def test_constant_predictions_are_not_a_correlation_of_zero(tmp_path: Path) -> None:
    gold = np.arange(20, dtype=float)
    new = _suite(tmp_path / "new", [_sts_unit("T", gold, np.ones(20), "sba")])
    base = _suite(tmp_path / "base", [_sts_unit("T", gold, gold, "sba")])
    outcome = compare([new], against=base, fail_on_regression=True)
    (row,) = outcome.comparison.rows
    assert row.state is State.NOT_TESTED and "NaN" in row.note
    assert outcome.exit_code == 1


def test_strict_fails_an_inconclusive_unit(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    gold = rng.uniform(0, 5, 40)
    new = _suite(tmp_path / "new", [_sts_unit("T", gold, gold + rng.normal(0, 3, 40), "sba")])
    base = _suite(tmp_path / "base", [_sts_unit("T", gold, gold + rng.normal(0, 3, 40), "sba")])
    outcome = compare([new], against=base, fail_on_regression=True)
    (row,) = outcome.comparison.rows
    assert row.state is State.INCONCLUSIVE and row.mde is not None and row.mde > 0.005
    assert outcome.exit_code == 0 and outcome.verdict.text.startswith("NO REGRESSION SHOWN")
    assert f"MDE {row.mde:.3g}" in outcome.verdict.text
    strict = compare([new], against=base, fail_on_regression=True, strict=True)
    assert strict.exit_code == 1


def test_one_nan_prediction_is_not_tested(sides: tuple[Path, Path]) -> None:
    """A single NaN (its stored score rewritten to what the items give): still no test."""
    new, base = sides
    path = new / f"{STS}.json"
    result = _load(path)
    scores = result.items["default"]
    predicted = [float("nan"), *scores.predicted[1:]]
    nan = result.model_copy(
        update={"items": {"default": scores.model_copy(update={"predicted": predicted})}}
    )
    save_result(path, nan.model_copy(update={"main_score": recomputed_score(nan)}))
    code, output = _gate(new, base)
    assert code == 1 and f"{STS}: NaN score" in _verdict(output)


@pytest.mark.parametrize(("shift", "code"), [(2e-5, 2), (4e-6, 0)])
def test_the_score_tolerance_is_mtebs_rounding(
    sides: tuple[Path, Path], shift: float, code: int
) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    _rewrite(path, main_score=_load(path).main_score + shift)
    assert _gate(new, base)[0] == code


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["items"]["default"]["predicted"].pop(), "values for 1225 items"),
        (lambda d: d["items"]["default"].update(kind="weird"), "no task type stores"),
        (lambda d: d["items"]["default"].update(kind="pairs"), "a STS task stores 'sts'"),
        (lambda d: d["scores"].update(deep=json.loads("[" * 40 + "]" * 40)), "nested deeper"),
    ],
    ids=["length", "unknown-kind", "kind-of-another-type", "depth"],
)
def test_each_check_of_a_result_file_names_the_file(
    sides: tuple[Path, Path], edit: object, message: str
) -> None:
    new, base = sides
    path = new / f"{STS}.json"
    _edit_json(path, edit)
    code, output = _gate(new, base)
    assert code == 2 and str(path) in output and message in output, output


def test_a_replicate_its_key_does_not_say_is_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    path = new / "minilm-moe@r1" / "sba" / "LeeDocSTS.json"
    path.parent.mkdir(parents=True)
    shutil.copy(new / f"{STS}.json", path)
    _edit_json(path, lambda d: d.update(replicate=1))  # its key_parts still say replicate 0
    code, output = _gate(new, base)
    assert code == 2 and str(path) in output and "'key_parts.replicate'" in output


def test_a_suite_folder_holding_two_suites_is_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    _edit_json(new / f"{STS}.json", lambda d: d.update(suite="other"))
    code, output = _gate(new, base)
    assert code == 2 and "several suites" in output


def test_a_folder_among_result_files_is_an_error(sides: tuple[Path, Path]) -> None:
    new, base = sides
    hidden = new / "minilm-moe" / "sba" / "old"
    hidden.mkdir()
    (hidden / "LeeDocSTS.json").write_text("{")
    code, output = _gate(new, base)
    assert code == 2 and str(hidden) in output


def test_results_at_two_depths_are_an_error(sides: tuple[Path, Path], tmp_path: Path) -> None:
    """A folder of suite folders with one stray file three levels down: which files are results
    is ambiguous (read as a suite folder, every real result would be left out)."""
    new, base = sides
    stray = new.parent / "minilm" / "dense"
    stray.mkdir(parents=True)
    shutil.copy(new / "minilm" / "dense" / "LeeDocSTS.json", stray)
    code, output = _gate(new.parent, base.parent)
    assert code == 2 and "ambiguous" in output


def test_dot_folders_are_not_results(sides: tuple[Path, Path]) -> None:
    new, base = sides
    cache = new / ".cache" / "x" / "y"
    cache.mkdir(parents=True)
    (cache / "z.json").write_text("{")
    code, output = _gate(new, base)
    assert code == 0 and "9 of 9 units tested" in _verdict(output)


def test_two_sides_with_different_item_kinds_are_not_tested(tmp_path: Path) -> None:
    gold = np.arange(30, dtype=float)
    pairs = ItemScores(kind="pairs", gold=(gold % 2).tolist(), predicted=gold.tolist())
    sts = _sts_unit("T", gold, gold, "sba")
    other = sts.model_copy(update={"items": {"default": pairs}})
    outcome = compare_results_of(tmp_path, [sts], [other])
    (row,) = outcome.comparison.rows
    assert row.state is State.NOT_TESTED and "different item kinds" in row.note


def compare_results_of(tmp_path: Path, new: list[UnitResult], base: list[UnitResult]) -> object:
    from sbabench.analysis.compare import Outcome, compare_results

    comparison = compare_results(new, against=base)
    return Outcome(new, comparison, comparison.verdict(), 0)


@pytest.mark.parametrize("option", ["--alpha", "--max-drop", "--effect"])
def test_nan_options_are_refused(sides: tuple[Path, Path], option: str) -> None:
    code, output = _gate(*sides, option, "nan")
    assert code == 2 and "NaN" in output


def test_a_report_that_cannot_be_written_is_a_located_error(
    sides: tuple[Path, Path], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "v.json"  # its folder cannot be created: a file is in the way
    code, output = _gate(*sides, "--format", "json", "--output", str(target))
    assert code == 2 and str(target) in output and "--output" in output


def test_one_item_subsets_are_not_tested(tmp_path: Path) -> None:
    """Items are resampled within a subset: a task split into one-item subsets would have no
    variance at all and pass anything."""
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 30)

    def split(unit: UnitResult) -> UnitResult:
        scores = unit.items["default"]
        items = {
            f"s{i}": scores.model_copy(update={"gold": [g], "predicted": [p]})
            for i, (g, p) in enumerate(zip(scores.gold, scores.predicted, strict=True))
        }
        return unit.model_copy(update={"items": items})

    new = split(_sts_unit("T", gold, gold + rng.normal(0, 3, 30), "sba"))
    base = split(_sts_unit("T", gold, gold, "sba"))
    outcome = compare_results_of(tmp_path, [new], [base])
    (row,) = outcome.comparison.rows
    assert row.state is State.NOT_TESTED and "only 1 items in subset" in row.note


def test_a_unit_failed_on_both_sides_is_one_unit(sides: tuple[Path, Path]) -> None:
    for side in sides:
        (side / f"{STS}.json").unlink()
        (side / f"{STS}.error.json").write_text(json.dumps({"error": "boom"}))
    code, output = _gate(*sides)
    assert code == 1 and "NOT TESTED: 1 unit(s)" in _verdict(output)
    assert "8 of 9 units tested" in _verdict(output)


def test_a_failure_record_names_its_suite(sides: tuple[Path, Path], tmp_path: Path) -> None:
    """A folder holding only a failure record, named otherwise than its suite, still pairs."""
    _, base = sides
    only = tmp_path / "elsewhere"
    (only / "minilm-moe" / "sba").mkdir(parents=True)
    record = {"suite": "quickstart", "unit": STS, "error": "boom"}
    (only / "minilm-moe" / "sba" / "LeeDocSTS.error.json").write_text(json.dumps(record))
    outcome = compare([only], against=base, fail_on_regression=True)
    assert outcome.exit_code == 1 and "0 of 9 units tested" in outcome.verdict.text
    reasons = {u.label: u.reason for u in outcome.verdict.untested}
    assert reasons[STS] == "candidate: recorded as failed: boom"


def test_an_unchanged_tiny_unit_passes(tmp_path: Path) -> None:
    gold = np.array([1.0, 2.0, 3.0])
    unit = _sts_unit("T", gold, np.array([1.0, 3.0, 2.0]), "sba")
    outcome = compare_results_of(tmp_path, [unit], [unit])
    (row,) = outcome.comparison.rows
    assert row.state is State.PASS and row.identical


def test_a_changed_training_setup_is_not_paired_but_changed_training_code_is(
    tmp_path: Path,
) -> None:
    from sbabench.run.keys import TrainKey

    rng = np.random.default_rng(3)
    gold = rng.uniform(0, 5, 40)
    base = _sts_unit("T", gold, gold + rng.normal(0, 1, 40), "sba")
    parts = base.key_parts.model_copy(
        update={"train": TrainKey(spec={"epochs": 1}, code_sha256="a")}
    )
    base = base.model_copy(update={"key_parts": parts, "key": parts.digest})
    new = base.model_copy(update={"items": _sts_unit("T", gold, gold, "sba").items})
    for update, tested in (({"code_sha256": "b"}, True), ({"spec": {"epochs": 2}}, False)):
        train = parts.train.model_copy(update=update)  # type: ignore[union-attr]
        changed = parts.model_copy(update={"train": train})
        other = new.model_copy(update={"key_parts": changed, "key": changed.digest})
        (row,) = compare_results_of(tmp_path, [other], [base]).comparison.rows
        assert (row.state is not State.NOT_TESTED) is tested, row.note
        assert tested or "train differs" in row.note
