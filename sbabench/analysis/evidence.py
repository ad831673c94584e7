"""One side of a comparison, read as evidence: every result file found by its defined place
(`sbabench.run.result_files`), each checked against its path and against its own items.

Nothing is skipped. A file that cannot be read, whose content names another unit than its
path, that claims a unit another file claims, or whose stored main score its items contradict
is a located user error (exit 2); a unit recorded as failed is kept, with its message, so the
gate can name it NOT TESTED.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbabench.analysis.stats import statistics
from sbabench.errors import StorageError
from sbabench.run.result_files import Located, find_result_files
from sbabench.run.results import UnitResult, read_result
from sbabench.suite.replicates import instance_name, parse_instance
from sbabench.tasks.types import by_item_kind, find

UnitKey = tuple[str, str, str, str, int]
"""suite, model, aggregator, task, replicate: one unit of a comparison."""

SCORE_TOLERANCE = 1e-5
"""How far a stored main score may be from the one its items give: mteb rounds scores to 5
decimals (at most 5e-6 off), and sums in another order."""


def unit_label(key: UnitKey) -> str:
    """`model[@rR]/aggregator/task`."""
    _suite, model, aggregator, task, replicate = key
    return f"{instance_name(model, replicate)}/{aggregator}/{task}"


@dataclass
class Side:
    """Every unit one side holds: results, and units recorded as failed."""

    results: dict[UnitKey, UnitResult] = field(default_factory=dict)
    failed: dict[UnitKey, str] = field(default_factory=dict)
    """Unit -> the failure's message (`<task>.error.json`)."""
    paths: dict[UnitKey, Path] = field(default_factory=dict)

    def keys(self) -> set[UnitKey]:
        """Every unit the side holds, failed or not."""
        return set(self.results) | set(self.failed)


def _bad(path: Path, what: str, fix: str = "re-run the unit, or remove the file") -> StorageError:
    return StorageError(f"{path}: {what}", fix=fix)


def _check_place(found: Located, result: UnitResult) -> None:
    """The unit the file's content names must be the one its path names."""
    expected = {
        "suite": found.suite,
        "model": found.model_id,
        "aggregator": found.aggregator,
        "task": found.task,
    }
    stated = {
        "suite": result.suite,
        "model": result.model_id,
        "aggregator": result.aggregator,
        "task": result.task,
    }
    for name, value in expected.items():
        if value is not None and stated[name] != value:
            raise _bad(
                found.path,
                f"field {name!r} says {stated[name]!r} but the file's path says {value!r}: "
                "a result file is <model>[@rR]/<aggregator>/<task>.json",
                fix="move the file to where its content says, or re-run the unit",
            )
    if result.replicate != result.key_parts.replicate:
        raise _bad(found.path, "field 'replicate' disagrees with 'key_parts.replicate'")


def recomputed_score(result: UnitResult) -> float | None:
    """The main score the stored items give (mean over subsets, and over runs where a unit
    keeps several), or None where they do not determine it (clustering, or no items)."""
    task_type = find(result.task_type)
    if task_type is None or not task_type.score_from_items or not result.items:
        return None
    values = []
    for scores in result.items.values():
        runs = [np.asarray(r, dtype=np.float64) for r in (scores.runs or [scores.predicted])]
        if any(np.isnan(run).any() for run in runs):  # ranks would order NaNs: mteb's is NaN
            return math.nan
        gold = np.asarray(scores.gold, dtype=np.float64)
        values.append(float(np.mean(statistics(scores.kind, gold, runs)[:, 0])))
    return float(np.mean(values))


def _check_items(path: Path, result: UnitResult) -> None:
    """Items of a known kind, gold defined, every prediction as long as gold, and the stored
    score the one they give."""
    task_type = find(result.task_type)
    for subset, scores in result.items.items():
        where = f"field 'items.{subset}"
        if by_item_kind(scores.kind) is None:
            raise _bad(path, f"{where}.kind' is {scores.kind!r}: no task type stores such items")
        if task_type is not None and scores.kind != task_type.item_kind:
            raise _bad(
                path,
                f"{where}.kind' is {scores.kind!r}, but a {result.task_type} task stores "
                f"{task_type.item_kind!r} items",
            )
        nan = np.flatnonzero(np.isnan(np.asarray(scores.gold, dtype=np.float64)))
        if len(nan):
            raise _bad(path, f"{where}.gold': NaN gold value at item {int(nan[0])}")
        for name, run in [("predicted", scores.predicted), *(("runs", r) for r in scores.runs)]:
            if len(run) != len(scores.gold):
                raise _bad(path, f"{where}.{name}': {len(run)} values for {len(scores.gold)} items")
    score = recomputed_score(result)
    if score is None:
        return
    stored = result.main_score
    agree = (math.isnan(score) and math.isnan(stored)) or abs(score - stored) <= SCORE_TOLERANCE
    if not agree:
        raise _bad(
            path,
            f"field 'main_score' is {stored!r} but its items give {score:.6f}: the stored score "
            "is not the one its per-item predictions summarise (edited or damaged)",
        )


def _failure_record(path: Path) -> tuple[str, str | None]:
    """A failure record's message, and the suite it names (records written before they named
    it: None)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        record = None
    record = record if isinstance(record, dict) else {}
    message, suite = record.get("error"), record.get("suite")
    text = f"recorded as failed: {message}" if isinstance(message, str) else "recorded as failed"
    return text, suite if isinstance(suite, str) else None


def _add(side: Side, key: UnitKey, path: Path) -> None:
    if key in side.paths:
        raise _bad(
            path,
            f"claims unit {unit_label(key)} of suite {key[0]!r}, which {side.paths[key]} "
            "also claims",
            fix="keep one of the two files (compare one results folder per side)",
        )
    side.paths[key] = path


def _suite_of(results: Sequence[UnitResult], folder: Path) -> str:
    """The suite of a suite folder's failure records: its results' (one suite per folder)."""
    suites = {r.suite for r in results}
    if len(suites) > 1:
        raise _bad(
            folder,
            f"holds results of several suites ({', '.join(sorted(suites))})",
            fix="give each suite's folder, or the folder holding the suite folders",
        )
    return suites.pop() if suites else folder.resolve().name


def read_side(folders: Sequence[Path]) -> Side:
    """Every unit of `folders` (one side of a comparison), checked (see the module)."""
    side = Side()
    for folder in folders:
        located = find_result_files(folder)
        results = [(f, read_result(f.path)) for f in located if not f.failed]
        one_suite = bool(located) and located[0].suite is None  # a suite folder was given
        suite = _suite_of([r for _, r in results], folder) if one_suite else ""
        for found, result in results:
            _check_place(found, result)
            _check_items(found.path, result)
            key = (result.suite, result.model, result.aggregator, result.task, result.replicate)
            _add(side, key, found.path)
            side.results[key] = result
        for found in (f for f in located if f.failed):
            model, replicate = parse_instance(found.model_id)
            message, named = _failure_record(found.path)
            # a suite folder's own name is the user's: the record's suite, else its results'
            of_suite = found.suite or (suite if results else named or suite)
            key = (of_suite, model, found.aggregator, found.task, replicate)
            side.failed[key] = message
            side.paths.setdefault(key, found.path)
    return side
