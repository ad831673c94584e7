"""`sbabench record`: result folders, read as the gate reads them (`evidence.read_side`), become
history records of one commit of the repository under test."""

from __future__ import annotations

import hashlib
import json
import math
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sbabench.analysis.evidence import read_side, unit_label
from sbabench.analysis.history import git
from sbabench.analysis.history.store import (
    KEEP_ITEMS,
    Added,
    HistoryStore,
    Record,
    content_digest,
    pack_items,
)
from sbabench.analysis.stats import has_nan, observed_and_resampled, signed_runs
from sbabench.errors import SbabenchError
from sbabench.paths import name_problem
from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult
from sbabench.tasks.item_statistics import resample_weights
from sbabench.tasks.items import ItemScores

DEFAULT_HISTORY = Path("results/history.sqlite")
ITEM_RESAMPLES = 1000
"""Resamples of the items bootstrap that gives each recorded score its variance."""
_CODE_FIELDS = frozenset({"code_sha256", "scoring_code_sha256", "replicate"})
"""Key parts left out of a series' digest: the code (what the history follows) and the
replicate (a record's own key)."""


@dataclass
class Recorded:
    """What `record_results` did."""

    commit: git.Commit
    dirty: bool
    machine: str
    added: Added
    units: int
    """Units read from the results."""
    not_recorded: dict[str, str] = field(default_factory=dict)
    """Unit label -> why it has no record (recorded as failed)."""


def default_machine() -> str:
    """This machine's name (the host name); CI runners should pass a stable `--machine`."""
    return socket.gethostname() or "unknown"


def series_digest(parts: KeyParts) -> str:
    """Digest of a unit's key parts less its code digests and replicate: a change of settings,
    task data or revision, model build or scoring version starts a new series."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _CODE_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    text = json.dumps(strip(parts.model_dump(mode="json")), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_variance(
    items: dict[str, ItemScores], n_resamples: int = ITEM_RESAMPLES, seed: int = 0
) -> tuple[float, int]:
    """(variance, items) of a unit's per-item statistic under resampling its items (within
    each subset; the mean over subsets, as the main score), scaled by n / (n - 1) as the paired
    test's is. NaN where it is not estimable (no items, a NaN prediction, undefined resamples)."""
    n_items = sum(len(s.gold) for s in items.values())
    if not items or any(has_nan(s) or not s.gold for s in items.values()):
        return math.nan, n_items
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    for scores in items.values():
        gold = np.asarray(scores.gold, dtype=np.float64)
        index = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
        weights = resample_weights(index, len(gold), all_items_first=True)
        predictions, shares = signed_runs((scores, 1.0))
        _observed, resampled = observed_and_resampled(scores.kind, gold, predictions, weights)
        for row, (_sign, runs) in zip(resampled, shares, strict=True):
            total += row / runs
    total /= len(items)
    finite = total[np.isfinite(total)]
    if len(finite) < 0.9 * n_resamples:
        return math.nan, n_items
    smallest = min(len(s.gold) for s in items.values())
    return float(finite.var(ddof=1)) * smallest / max(smallest - 1, 1), n_items


def to_record(result: UnitResult, commit: str, machine: str, dirty: bool) -> Record:
    """The history record of one result at `commit` on `machine`."""
    packed = pack_items(result.items)
    variance, n_items = item_variance(result.items)
    return Record(
        sha=commit, machine=machine, suite=result.suite, model=result.model,
        aggregator=result.aggregator, task=result.task, replicate=result.replicate,
        series=series_digest(result.key_parts), unit_key=result.key,
        task_type=result.task_type, score_name=result.main_score_name,
        score=float(result.main_score), item_var=variance, n_items=n_items, dirty=dirty,
        device=result.provenance.device_name or result.provenance.device,
        versions=json.dumps(result.provenance.versions, sort_keys=True),
        content=content_digest(result.key, float(result.main_score), packed), recorded_at=datetime.now(UTC).isoformat(),
        items=packed if result.items else None,
    )  # fmt: skip


@dataclass
class Prepared:
    """Results read and checked, ready to record (nothing written yet)."""

    commit: git.Commit
    dirty: bool
    machine: str
    records: list[Record]
    units: int
    """Units read from the results."""
    not_recorded: dict[str, str]

    @property
    def commits(self) -> list[tuple[str, str, str]]:
        """The one commit the records are at, as the store keeps it."""
        return [(self.commit.sha, self.commit.date, self.commit.subject)]

    def recorded(self, added: Added) -> Recorded:
        """What recording these records did."""
        return Recorded(self.commit, self.dirty, self.machine, added, self.units, self.not_recorded)


def prepare_records(
    folders: Sequence[Path],
    *,
    repo: Path = Path("."),
    machine: str | None = None,
    units: Collection[str] | None = None,
) -> Prepared:
    """Every unit of `folders` as a record at the current commit of `repo`, nothing written.

    The folders are read as evidence (`read_side`): a file the gate would refuse is refused
    here too. A unit recorded as failed gets no record, and is listed in `not_recorded`.
    `units` (labels `model[@rR]/aggregator/task`): only these, the units a run has just
    validated against the current code (`run --record`); files of other units in the folder
    may be left from older code."""
    side = read_side(folders)
    if units is not None:
        wanted = set(units)
        side.results = {k: r for k, r in side.results.items() if unit_label(k) in wanted}
        side.failed = {k: m for k, m in side.failed.items() if unit_label(k) in wanted}
    if not side.keys():
        raise SbabenchError(
            f"no result files in {', '.join(str(f) for f in folders)}",
            fix="run the suite first (sbabench run SUITE), then record its results folder",
        )
    commit = git.describe(repo)
    dirty = git.is_dirty(repo)
    name = machine or default_machine()
    problem = name_problem(name)
    if problem:
        raise SbabenchError(
            f"this machine's name cannot name records: {problem}",
            fix="give --machine a name (e.g. --machine ci)",
        )
    failed = {unit_label(k): message for k, message in sorted(side.failed.items())}
    records = []
    for key in sorted(side.results):
        record = to_record(side.results[key], commit.sha, name, dirty)
        problem = _unrecordable(record)
        if problem:  # listed, not recorded: a gate on this commit finds it NOT TESTED
            failed[unit_label(key)] = problem
        else:
            records.append(record)
    return Prepared(commit, dirty, name, records, len(side.keys()), failed)


def record_results(
    folders: Sequence[Path],
    history: Path,
    *,
    repo: Path = Path("."),
    machine: str | None = None,
    replace_changed: bool = False,
    keep_items: int = KEEP_ITEMS,
    units: Collection[str] | None = None,
) -> Recorded:
    """Record every unit of `folders` (`prepare_records`) in one transaction."""
    ready = prepare_records(folders, repo=repo, machine=machine, units=units)
    store = HistoryStore(history, create=True)
    added = store.add(
        ready.records, ready.commits, replace_changed=replace_changed, keep_items=keep_items
    )
    return ready.recorded(added)


def _unrecordable(record: Record) -> str:
    """Why a unit cannot be a point of a history (empty: it can)."""
    if not math.isfinite(record.score):
        return "its main score is not a number (did the model diverge?): not recorded"
    if not math.isfinite(record.item_var):
        return (
            "its items' variance cannot be estimated (constant predictions, a NaN prediction "
            "or too few items): not recorded"
        )
    return ""
