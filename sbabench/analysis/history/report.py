"""`sbabench history` as a library call: the series of every unit along a branch on one
machine, their steps, and (with `since`) the drop gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sbabench.analysis.history import git
from sbabench.analysis.history.changes import Step, find_steps
from sbabench.analysis.history.gate import DropGate, drop_gate
from sbabench.analysis.history.recording import default_machine
from sbabench.analysis.history.series import UnitSeries, build_series
from sbabench.analysis.history.store import HistoryStore
from sbabench.errors import SbabenchError

COMMIT_LIMIT = 500
"""First-parent commits read from the branch (the newest)."""


@dataclass(frozen=True)
class HistoryReport:
    """Every unit's series on one machine along one branch, with its steps."""

    machine: str
    branch: str
    line: tuple[git.Commit, ...]
    """The branch's first-parent commits, oldest first."""
    units: tuple[UnitSeries, ...]
    steps: tuple[Step, ...]
    alpha: float
    gate: DropGate | None = None


def pick_machine(store: HistoryStore, machine: str | None) -> str:
    """`machine`, else this machine's name when it has records, else the only machine."""
    machines = store.machines()
    if machine is not None and machine not in machines:
        raise SbabenchError(
            f"{store.path}: no records of machine {machine!r} (it holds: "
            f"{', '.join(machines) or 'none'})",
            fix="give --machine one of those",
        )
    if machine is not None:
        return machine
    if default_machine() in machines or len(machines) == 1:
        return default_machine() if default_machine() in machines else machines[0]
    raise SbabenchError(
        f"{store.path}: holds records of {len(machines)} machines ({', '.join(machines)}) "
        "and none is this one"
        if machines
        else f"{store.path}: holds no records",
        fix="give --machine NAME" if machines else "record results first (sbabench record)",
    )


def history_report(
    history: Path,
    *,
    repo: Path = Path("."),
    branch: str = "HEAD",
    machine: str | None = None,
    only: str | None = None,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
    since: str | None = None,
    max_drop: float = 0.005,
    limit: int = COMMIT_LIMIT,
) -> HistoryReport:
    """The series, steps and (with `since`) the drop gate of `history` along `branch` of
    `repo` (see `sbabench.analysis.history`)."""
    store = HistoryStore(history)
    name = pick_machine(store, machine)
    line = git.first_parent(repo, branch, limit)
    units = build_series(store.records(name), line, only)
    if not units:
        what = f" matching {only!r}" if only else ""
        raise SbabenchError(
            f"{history}: no unit{what} is recorded on machine {name!r} at any of the "
            f"{len(line)} first-parent commits of {branch} in {repo}",
            fix="record results at a commit of that branch (sbabench record RESULTS --repo "
            f"{repo}), or give --repo / --branch / --only / --machine",
        )
    steps = [step for unit in units for step in find_steps(store, unit, alpha, n_resamples, seed)]
    gate = None
    if since is not None:
        ref = git.describe(repo, since)
        if ref.sha not in {c.sha for c in line}:
            raise SbabenchError(
                f"--since {since} ({ref.sha[:12]}) is not a first-parent commit of {branch} "
                f"among its newest {limit}",
                fix="give --since a commit on the branch's first-parent line",
            )
        tip = git.describe(repo, branch)
        gate = drop_gate(
            store, units, ref, tip, max_drop=max_drop, alpha=alpha, n_resamples=n_resamples,
            seed=seed,
        )  # fmt: skip
    return HistoryReport(name, branch, tuple(line), tuple(units), tuple(steps), alpha, gate)
