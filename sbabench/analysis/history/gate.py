"""`history --fail-on-drop --since REF`: each unit at the branch's tip (the gated commit) against
the same unit at REF, by the paired test directly (a slow drift of many small steps
is one drop here), Holm-adjusted over the units tested.

States: DROP (the score is shown lower than at REF by more than `max_drop`: one-sided test of
delta < -max_drop at Holm's alpha; fails the gate), IMPROVED (shown higher: two-sided p < alpha;
reported, never failed), NO DROP SHOWN, and NOT TESTED with the reason (no record at REF,
settings or task changed since, items pruned, no record at the tip: a unit recorded at REF and
missing at the tip, or a tip never recorded), which fails the gate: a unit it cannot answer for
is not a pass, and an older record never stands in for the tip's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sbabench.analysis.history.git import Commit
from sbabench.analysis.history.series import Paired, Point, UnitSeries, paired_test
from sbabench.analysis.history.store import HistoryStore
from sbabench.analysis.stats import holm

DROP, IMPROVED, NO_DROP, NOT_TESTED = "DROP", "IMPROVED", "NO DROP SHOWN", "NOT TESTED"


@dataclass(frozen=True)
class GateRow:
    """One unit's answer."""

    suite: str
    label: str
    state: str
    since: Commit
    head: Commit | None
    test: Paired | None = None
    p_drop: float = math.nan
    """Holm-adjusted one-sided p of a drop larger than max_drop."""
    reason: str = ""
    dirty: bool = False
    """A record on either side came from a tree with uncommitted changes: its score may not
    be the commit's, so the row is NOT TESTED (its reason says so)."""


@dataclass(frozen=True)
class DropGate:
    """Every unit's answer, and the gate's verdict."""

    rows: tuple[GateRow, ...]
    max_drop: float
    alpha: float

    @property
    def failed(self) -> bool:
        """Some unit dropped, or could not be tested."""
        return any(r.state in (DROP, NOT_TESTED) for r in self.rows)

    @property
    def text(self) -> str:
        """The verdict in one line, counting what was asked and what was answered."""
        tested = sum(r.state != NOT_TESTED for r in self.rows)
        counts = {s: sum(r.state == s for r in self.rows) for s in (DROP, IMPROVED, NOT_TESTED)}
        head = "DROP" if counts[DROP] else "NOT TESTED" if counts[NOT_TESTED] else "NO DROP SHOWN"
        return (
            f"{head}: {counts[DROP]} dropped by more than {self.max_drop:g}, {counts[IMPROVED]} "
            f"improved, {counts[NOT_TESTED]} not tested; {tested} of {len(self.rows)} units "
            "tested"
        )


def _at(points: Sequence[Point], sha: str) -> Point | None:
    return next((p for p in points if p.commit.sha == sha), None)


def _row(
    store: HistoryStore, unit: UnitSeries, since: Commit, tip: Commit, resamples: int, seed: int
) -> GateRow:
    """The unit's row before Holm (NO DROP SHOWN with its test, or NOT TESTED)."""
    head = _at(unit.points, tip.sha)
    if head is None:
        return GateRow(
            unit.suite, unit.label, NOT_TESTED, since, tip,
            reason=f"no record at the gated commit {tip.sha[:12]} on this machine (record "
            "the results computed there)",
        )  # fmt: skip
    base = _at(unit.points, since.sha)
    if base is None:
        earlier = any(_at(s, since.sha) for s in unit.segments[:-1])
        reason = (
            "settings, task revision or model build changed since REF (a new series)"
            if earlier
            else "no record at REF on this machine"
        )
        return GateRow(unit.suite, unit.label, NOT_TESTED, since, head.commit, reason=reason)
    if base.dirty or head.dirty:  # the score may not be the commit's: no verdict on it
        at = ", ".join(p.commit.sha[:12] for p in (base, head) if p.dirty)
        return GateRow(
            unit.suite, unit.label, NOT_TESTED, since, head.commit, dirty=True,
            reason=f"recorded from a tree with uncommitted changes at {at}: commit them, run "
            "and record again (a clean record of the same result clears the mark)",
        )  # fmt: skip
    test = paired_test(store, base, head, resamples, seed)
    if isinstance(test, str):
        return GateRow(unit.suite, unit.label, NOT_TESTED, since, head.commit, reason=test)
    return GateRow(unit.suite, unit.label, NO_DROP, since, head.commit, test)


def drop_gate(
    store: HistoryStore,
    units: Sequence[UnitSeries],
    since: Commit,
    tip: Commit,
    *,
    max_drop: float,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
) -> DropGate:
    """Each unit's point at `tip` against its point at `since` (see the module)."""
    rows: list[GateRow] = []
    raw: list[float] = []
    for unit in units:
        row = _row(store, unit, since, tip, n_resamples, seed)
        rows.append(row)
        raw.append(_p_drop(row.test, max_drop) if row.test is not None else math.nan)
    adjusted = holm([p for p in raw if not math.isnan(p)])
    two_sided = holm([r.test.p_value for r, p in zip(rows, raw, strict=True) if r.test and not math.isnan(p)])  # fmt: skip
    judged, next_p, next_two = [], iter(adjusted), iter(two_sided)
    for row, p in zip(rows, raw, strict=True):
        if math.isnan(p):
            judged.append(row)
            continue
        p_drop, p_change = next(next_p), next(next_two)
        assert row.test is not None
        state = (
            DROP
            if p_drop < alpha
            else IMPROVED
            if row.test.delta > 0 and p_change < alpha
            else NO_DROP
        )
        judged.append(GateRow(row.suite, row.label, state, since, row.head, row.test, p_drop))
    return DropGate(tuple(judged), max_drop, alpha)


def _p_drop(test: Paired, max_drop: float) -> float:
    """One-sided p of "the true difference is at or above -max_drop" (small: a drop larger
    than max_drop is shown): the estimate's distance below -max_drop, mirrored for p_above."""
    return test.spread.p_above(-(test.delta + max_drop))
