"""Run a suite: plan the units, skip finished ones, compute the rest with models loaded lazily.

Guarantees: a result is read back only if its file is valid and its key matches; every write is
atomic; a unit is computed by one process at a time (a lock per unit, under
`<results>/.cache/locks/`); a failing unit is recorded and the others go on. Progress goes to a
callback; nothing here prints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from filelock import FileLock, Timeout

from sbabench.atomic import write_atomic
from sbabench.run.compute import Failure, UnitComputer, checked_cache, open_store
from sbabench.run.plan import Plan, PlannedUnit, finished, plan_suite
from sbabench.run.progress import Event, EventKind, ProgressCallback, ignore
from sbabench.run.results import UnitResult, save_result
from sbabench.run.storage import check_writable, stop_when_disk_full
from sbabench.suite import Suite, expand


@dataclass
class RunSummary:
    """What a run did."""

    computed: list[str] = field(default_factory=list)
    """Units computed now."""
    cached: list[str] = field(default_factory=list)
    """Units whose valid result already existed (or that another process finished)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Units that failed, with their error."""
    results: list[UnitResult] = field(default_factory=list)
    """Every result of the suite's selected units (computed or cached), without its per-item
    arrays: a run's memory does not grow with its tasks' items once a unit is saved (the
    arrays are in the result files: `load_results`)."""
    models_loaded: int = 0
    """How many models were loaded (0 on a warm re-run)."""

    def take(self, planned: PlannedUnit, result: UnitResult) -> None:
        """Count a unit as done already (by an earlier run or another process)."""
        self.cached.append(planned.label)
        self.results.append(result.without_items())

    @property
    def exit_code(self) -> int:
        """0 when every unit has a result, 1 when any failed."""
        return 1 if self.failed else 0


def _failure_path(path: Path) -> Path:
    return path.with_name(path.stem + ".error.json")


def record_failure(
    summary: RunSummary, planned: PlannedUnit, failure: Failure, progress: ProgressCallback
) -> None:
    """Count a unit as failed and write its `<task>.error.json` (message and traceback)."""
    summary.failed[planned.label] = failure.message
    record = {
        "suite": planned.path.parents[2].name,  # results/<suite>/<model>/<aggregator>/<task>
        "unit": planned.label,
        "error": failure.message,
        "traceback": failure.traceback,
        "key": planned.key,
        "time": time.time(),
        "command": " ".join(sys.argv),
    }
    write_atomic(_failure_path(planned.path), json.dumps(record, indent=2))
    progress(Event(EventKind.UNIT_FAILED, planned.label, message=failure.message))


def record_result(
    summary: RunSummary, planned: PlannedUnit, result: UnitResult, progress: ProgressCallback
) -> None:
    """Save a computed unit's result (and forget an earlier failure of it)."""
    save_result(planned.path, result)
    _failure_path(planned.path).unlink(missing_ok=True)
    summary.computed.append(planned.label)
    summary.results.append(result.without_items())
    progress(Event(EventKind.UNIT_FINISHED, planned.label))


@contextmanager
def _unit_locks(
    units: list[PlannedUnit], blocking: bool
) -> Iterator[tuple[list[PlannedUnit], list[PlannedUnit]]]:
    """Lock each unit; yields (locked, held elsewhere). Released on exit (or death)."""
    with ExitStack() as stack:
        mine, theirs = [], []
        for planned in units:
            planned.lock.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(planned.lock), timeout=-1 if blocking else 0)
            try:
                stack.enter_context(lock)
            except Timeout:
                theirs.append(planned)
            else:
                mine.append(planned)
        yield mine, theirs


def remove_finished_locks(units: list[PlannedUnit]) -> None:
    """Delete this run's lock files once a run ends (their folders stay: a process waiting on
    a lock may be about to make its file anew there).

    Safe with other processes: each file is deleted while held, so a waiter that locked the
    deleted file notices (filelock checks the link count) and retries on a fresh one; holding
    it, it sees whether the unit is finished (`done_meanwhile`). A lock another process holds
    stays."""
    for planned in units:
        lock = FileLock(str(planned.lock), timeout=0)
        try:
            with lock:
                planned.lock.unlink(missing_ok=True)
        except (Timeout, FileNotFoundError):
            continue


@dataclass
class _Run:
    """The state one process's computation of a plan shares."""

    suite: Suite
    summary: RunSummary
    progress: ProgressCallback
    computer: UnitComputer
    force: bool
    """Recompute even what is done (no unit is taken from another process's run)."""

    def unit(self, planned: PlannedUnit) -> None:
        """Compute one unit, save its result or record its failure."""
        outcome = self.computer.attempt(planned)
        if isinstance(outcome, Failure):
            record_failure(self.summary, planned, outcome, self.progress)
        else:
            record_result(self.summary, planned, outcome, self.progress)

    def model(self, group: list[PlannedUnit], blocking: bool) -> list[PlannedUnit]:
        """Compute the units of one model this process can lock; returns those held elsewhere."""
        with _unit_locks(group, blocking) as (locked, theirs):
            for planned in theirs:
                self.progress(Event(EventKind.UNIT_ELSEWHERE, planned.label))
            for number, planned in enumerate(locked):
                if not self.done_meanwhile(planned):
                    self.unit(planned)
                operator = planned.unit.aggregator_key
                if all(later.unit.aggregator_key != operator for later in locked[number + 1 :]):
                    self.computer.release_encoder(planned)
            self.summary.models_loaded += int(self.computer.release(group[0].unit.model_id))
        return theirs

    def done_meanwhile(self, planned: PlannedUnit) -> bool:
        """Whether another process finished the unit between planning and locking it (then its
        result is taken, not computed again)."""
        result = None if self.force else finished(self.suite, planned)
        if result is None:
            return False
        self.summary.take(planned, result)
        self.progress(Event(EventKind.UNIT_ELSEWHERE, planned.label))
        return True

    def compute(self, todo: list[PlannedUnit], blocking: bool) -> list[PlannedUnit]:
        """Compute what this process can lock, model by model; returns the units held elsewhere."""
        from sbabench.run.quiet import quiet_libraries

        deferred: list[PlannedUnit] = []
        with quiet_libraries():
            for _, model_group in groupby(todo, key=lambda p: p.unit.model_id):
                deferred.extend(self.model(list(model_group), blocking))
        return deferred

    def take_theirs(self, deferred: list[PlannedUnit]) -> list[PlannedUnit]:
        """Wait for the units another process holds; keep its results, return what it failed."""
        leftover = []
        for planned in deferred:
            with FileLock(str(planned.lock)):
                theirs = finished(self.suite, planned)
            if theirs is not None:
                self.summary.take(planned, theirs)
            else:
                leftover.append(planned)
        return leftover


def _compute(
    suite: Suite,
    plan: Plan,
    root: Path,
    summary: RunSummary,
    progress: ProgressCallback,
    force: bool,
) -> None:
    """Compute the units to do; wait for those another process holds and take its results."""
    import torch

    torch.manual_seed(suite.settings.seed)
    progress(Event(EventKind.PLANNED, count=len(plan.todo)))
    store = open_store(suite, root / ".cache" / "embeddings.sqlite")
    computer = UnitComputer(suite, checked_cache(root / ".cache"), store, progress)
    run = _Run(suite, summary, progress, computer, force)
    try:
        deferred = run.compute(plan.todo, blocking=False)
        if deferred:
            progress(
                Event(
                    EventKind.NOTE,
                    message=f"{len(deferred)} unit(s) running in another process; waiting",
                )
            )
            leftover = run.take_theirs(deferred)
            if leftover:
                run.compute(leftover, blocking=True)
    finally:
        computer.close()
        remove_finished_locks(plan.todo)


def planned_run(
    suite: Suite,
    root: Path,
    force: bool,
    only: str | None,
    shard: tuple[int, int] | None,
    progress: ProgressCallback,
) -> tuple[Plan, RunSummary]:
    """The plan of a run, and its summary holding the units done already (for any executor)."""
    plan = plan_suite(suite, root, force=force, only=only, shard=shard)
    summary = RunSummary()
    for planned, result in plan.done:
        summary.take(planned, result)
    for note in plan.invalid:
        progress(Event(EventKind.NOTE, message=f"recomputing {note}"))
    if summary.cached:
        progress(
            Event(EventKind.NOTE, message=f"{len(summary.cached)} unit(s) already done, skipped")
        )
    return plan, summary


def in_suite_order(suite: Suite, summary: RunSummary) -> RunSummary:
    """Cached units come first, computed ones after: put them back in the suite's order."""
    order = {unit.label: i for i, unit in enumerate(expand(suite))}
    summary.results.sort(key=lambda r: order.get(r.label, len(order)))
    return summary


def run_suite(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
    progress: ProgressCallback = ignore,
) -> RunSummary:
    """Run every selected unit of `suite` that has no valid result; never raises for one unit.

    `progress` receives an `Event` at each step (the CLI draws a progress bar from them). A
    results folder that cannot be written is refused before any work, and a full disk ends the
    run (`StorageError`, finished units kept). The summary's results carry no per-item arrays
    (so a run's memory does not grow with finished units): to compare them, read the files
    back with `load_results(results_dir)`.
    """
    root = Path(results_dir)
    plan, summary = planned_run(suite, root, force, only, shard, progress)
    if plan.todo:
        check_writable(root / suite.name, root / ".cache")
        with stop_when_disk_full(root):
            _compute(suite, plan, root, summary, progress, force)
    return in_suite_order(suite, summary)
