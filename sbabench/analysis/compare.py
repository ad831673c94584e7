"""Compare result sets: per-task paired tests, summaries across tasks, a regression verdict.

`compare_results` is a pure function over loaded results (asv's compare is the model); the CLI
only renders what it returns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from sbabench.analysis import stats, two_level
from sbabench.analysis.evidence import Side, UnitKey, read_side, unit_label
from sbabench.analysis.uncertainty import MAX_REPLICATES, Spread, items_limit, replicates_for
from sbabench.errors import SbabenchError
from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult
from sbabench.tasks.types import find

MIN_ITEMS = 10
"""Fewest items a paired test is run on: below it a unit is NOT TESTED (a bootstrap over 2 or 3
items gives p-values that mean nothing)."""


class Mark(StrEnum):
    """How a row compares with its baseline (asv-style marks)."""

    BETTER = "better"
    WORSE = "worse"
    SAME = "not significant"
    INCOMPARABLE = "not comparable"
    BASELINE = "baseline"

    @property
    def symbol(self) -> str:
        """One character for tables."""
        return {
            "better": "+",
            "worse": "-",
            "not significant": "~",
            "not comparable": "x",
            "baseline": " ",
        }[self.value]


class State(StrEnum):
    """The gate's answer for one unit (see `Comparison.verdict`)."""

    PASS = "pass"
    """Identical to the baseline, or the drop is shown smaller than the tolerated one."""
    REGRESSION = "regression"
    """A significant drop (Holm) whose estimate exceeds the tolerated one."""
    INCONCLUSIVE = "inconclusive"
    """Neither: the data cannot tell (see the unit's minimum detectable difference)."""
    NOT_TESTED = "not tested"
    """No test could be made (the note says why)."""


@dataclass(frozen=True)
class Untested:
    """A unit (one replicate) that was not tested, and why."""

    label: str
    reason: str
    new: bool = False
    """Absent from the baseline only (a new task or operator): `--allow-new` excuses it."""


@dataclass(frozen=True)
class Row:
    """One model x aggregator x task compared with its baseline."""

    task: str
    task_type: str
    model: str
    aggregator: str
    score: float
    """Main score (mteb's)."""
    mark: Mark
    baseline: str = ""
    """`model/aggregator` of the baseline (or `other:model/aggregator` with --against)."""
    baseline_score: float | None = None
    delta: float | None = None
    """Main score minus the baseline's main score."""
    item_delta: float | None = None
    """Difference of the per-item statistic the test resamples (equals delta for STS)."""
    ci_low: float | None = None
    """95% CI of item_delta (paired bootstrap)."""
    ci_high: float | None = None
    p_value: float | None = None
    """Paired bootstrap p-value (of the per-item statistic)."""
    p_holm: float | None = None
    """Holm-adjusted over all rows' p-values."""
    steiger_p: float | None = None
    """STS only: Steiger's test of the two dependent Spearman correlations."""
    note: str = ""
    replicates: int = 1
    """Replicates tested (paired with the baseline's), or the candidate's count untested."""
    replicate_deltas: tuple[float, ...] = ()
    """Per replicate: the difference of the per-item statistic (two-level test only)."""
    between_sd: float | None = None
    """Sample SD of replicate_deltas (the seeds' share of the variance)."""
    agree: int | None = None
    """Replicates whose difference has the sign of the mean difference."""
    prob_improvement: float | None = None
    """P(candidate > baseline) over pairs of their replicates' main scores (rliable's)."""
    replicate_scores: tuple[float, ...] = ()
    """The candidate's main score per tested replicate."""
    baseline_replicate_scores: tuple[float, ...] = ()
    """The baseline's main score per tested replicate."""
    state: State | None = None
    """The gate's answer (None: a reference row, shown not tested)."""
    se: float | None = None
    """Standard error of item_delta (both levels with replicates)."""
    mde: float | None = None
    """Minimum detectable difference at 80% power and the Holm family's alpha / m."""
    p_noninferior: float | None = None
    """Holm-adjusted one-sided p that item_delta is at or below -max_drop (PASS below alpha)."""
    identical: bool = False
    """Scores and items bit-identical to the baseline's: PASS without a test."""
    untested: tuple[Untested, ...] = ()
    """Replicates of this unit that were not tested (every one, when the row is untested)."""
    units: int = 1
    """Units (replicates) this row accounts for, tested or not."""
    spread: Spread | None = field(default=None, repr=False, compare=False)
    """The tested difference's uncertainty (what the p-values and the MDE are read from)."""
    replicates_needed: int | None = None
    """An INCONCLUSIVE unit: replicates (at its items) that bring its MDE to the effect of
    interest (`--effect`, default `--max-drop`); None where more items are needed instead."""
    score_tested: bool = True
    """Whether the main score is what the test is about (False for clustering: mteb's own
    k-means runs; the verdict is on the stored runs' statistic, item_delta)."""

    @property
    def tested_delta(self) -> float | None:
        """The difference the verdict is about: the tested statistic's."""
        return self.item_delta if self.item_delta is not None else self.delta


@dataclass(frozen=True)
class Summary:
    """Across the tasks of one task type (or all), for one candidate vs its baseline."""

    scope: str
    candidate: str
    baseline: str
    mean_score: float
    mean_delta: float
    wins: int
    ties: int
    losses: int
    test: stats.AcrossTasks
    """Wilcoxon over the tasks' (replicate-mean) main-score differences."""
    improvement: tuple[float, float, float] | None = None
    """P(candidate > baseline) averaged over tasks with its 95% stratified-bootstrap CI (only
    where every task has replicates)."""


@dataclass(frozen=True)
class Verdict:
    """The regression gate's answer, accounting for every unit of both sides."""

    regressions: list[Row]
    """Rows that dropped significantly by more than the tolerated drop."""
    tested: int
    """Units (replicates) tested, identical ones included."""
    units: int
    """Units of both sides, tested or not."""
    untested: list[Untested]
    """Units not tested that fail the gate."""
    excused: list[Untested]
    """Units absent from the baseline only, excused by `allow_new`."""
    inconclusive: list[Row]
    """Rows whose drop is neither shown nor ruled out."""
    text: str
    """One line: what was found, and always "K of N units tested"."""

    def exit_code(self, fail_on_regression: bool, strict: bool = False) -> int:
        """With `fail_on_regression`: 1 for a regression, an untested unit, nothing tested,
        or (with `strict`) an inconclusive unit; else 0."""
        failed = self.regressions or self.untested or not self.tested
        return 1 if fail_on_regression and (failed or (strict and self.inconclusive)) else 0


def _listed(items: Sequence[str], shown: int = 3) -> str:
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def _verdict_text(
    tested: int,
    regressions: list[Row],
    untested: list[Untested],
    inconclusive: list[Row],
    passed: int,
    max_drop: float,
    alpha: float,
) -> str:
    parts = []
    if regressions:
        worst = min(regressions, key=lambda r: r.tested_delta or 0.0)
        parts.append(
            f"REGRESSION: {len(regressions)} of {tested} tested unit(s) dropped by more than "
            f"{max_drop} (Holm p < "
            f"{alpha}); worst {worst.model}/{worst.aggregator}/{worst.task} "
            f"{worst.tested_delta:+.4f}"
        )
    if untested:
        parts.append(
            f"NOT TESTED: {len(untested)} unit(s) ("
            + _listed([f"{u.label}: {u.reason}" for u in untested])
            + ")"
        )
    if inconclusive:
        mdes = ", ".join(f"{r.mde:.3g}" if r.mde is not None else "n/a" for r in inconclusive[:5])
        parts.append(
            f"NO REGRESSION SHOWN: {passed} pass, {len(inconclusive)} inconclusive (MDE {mdes}"
            f"{', ...' if len(inconclusive) > 5 else ''}): a drop larger than {max_drop} is not "
            "ruled out"
        )
    if not parts:
        parts.append(f"OK: every tested unit passes (no drop larger than {max_drop})")
    return "; ".join(parts)


@dataclass
class Comparison:
    """Everything `sbabench compare` shows."""

    rows: list[Row] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    friedman: stats.AcrossTasks | None = None
    alpha: float = 0.05
    max_drop: float = 0.005
    """The tolerated drop the rows' states were judged with."""

    @property
    def coverage(self) -> str:
        """One line on what variance the tests cover."""
        counts = sorted({r.replicates for r in self.rows if r.p_value is not None})
        if not counts:
            return ""
        if counts == [1]:
            return (
                "One replicate per unit: these tests cover test-item variance only, not the "
                "seeds' (upcycling, router, training); add `replicates: N` to the suite."
            )
        many = [c for c in counts if c > 1]
        shown = " or ".join(str(c) for c in many)
        return (
            f"Two-level tests over {shown} replicates and the test items; rows tested on one "
            "replicate cover item variance only."
            if 1 in counts
            else f"Two-level tests over {shown} replicates and the test items."
        )

    def verdict(self, max_drop: float | None = None, *, allow_new: bool = False) -> Verdict:
        """Every unit's state read together: regressions, untested units (those absent from
        the baseline only are excused with `allow_new`), inconclusive ones; "K of N units
        tested" always. A `max_drop` other than the rows' re-judges them first."""
        drop = self.max_drop if max_drop is None else max_drop
        judged = [r for r in self._judged(drop) if r.state is not None]
        missing = [u for r in judged for u in r.untested]
        untested = [u for u in missing if not (allow_new and u.new)]
        excused = [u for u in missing if allow_new and u.new]
        units = sum(r.units for r in judged)
        tested = units - len(missing)
        regressions = [r for r in judged if r.state is State.REGRESSION]
        inconclusive = [r for r in judged if r.state is State.INCONCLUSIVE]
        passed = sum(r.state is State.PASS for r in judged)
        text = _verdict_text(tested, regressions, untested, inconclusive, passed, drop, self.alpha)
        if not tested and not missing:
            text = "NOT TESTED: no unit to test (no results)"
        text += f"; {tested} of {units} units tested"
        if excused:
            text += f" ({len(excused)} absent from the baseline, allowed by --allow-new)"
        return Verdict(regressions, tested, units, untested, excused, inconclusive, text)

    def regressions(self, max_drop: float) -> list[Row]:
        """Rows whose tested statistic dropped significantly (Holm) by more than `max_drop`."""
        return [r for r in self._judged(max_drop) if r.state is State.REGRESSION]

    def _judged(self, max_drop: float) -> list[Row]:
        """The rows, their states judged against `max_drop` (again, if not the rows')."""
        if max_drop == self.max_drop:
            return self.rows
        return _with_marks(self.rows, self.alpha, max_drop)


_IDENTITY_PARTS = ("model", "task", "settings", "scoring_version", "train")
"""Key parts two results must share to be paired (the operator is what differs)."""


def _identity(parts: KeyParts, part: str) -> object:
    """A key part as pairing sees it: the model and the task without their code digests, since
    a change of the code that builds and runs models (the MoE path, the encoder) or builds the
    bundled tasks is what a gate compares across (a task whose items changed with its code is
    refused by the paired test itself: its gold values differ)."""
    value = getattr(parts, part)
    if part in ("model", "task", "train") and value is not None:
        return value.model_copy(update={"code_sha256": None})
    return value


def _comparable(a: UnitResult, b: UnitResult, parts: Sequence[str] = _IDENTITY_PARTS) -> str:
    """'' when two results may be paired (they share `parts`), else why not."""
    for part in parts:
        if _identity(a.key_parts, part) != _identity(b.key_parts, part):
            return f"{part} differs"
    if a.split != b.split:
        return f"split differs ({a.split} against {b.split})"
    if not a.items or not b.items:
        return "no per-item scores" + (" in the candidate" if not a.items else " in the baseline")
    return ""


Replicates = dict[int, UnitResult]
"""One unit's results by replicate."""


def _identical(pairs: Sequence[tuple[UnitResult, UnitResult]]) -> bool:
    """Scores and items bit for bit the same on every paired replicate."""
    return all(
        c.main_score == b.main_score and c.items == b.items and c.task_type == b.task_type
        for c, b in pairs
    )


def _too_few(pairs: Sequence[tuple[UnitResult, UnitResult]]) -> str:
    """Why the items are too few to test, or ''. Items are resampled within each subset, so
    every subset needs enough of them (a one-item subset would add no variance at all)."""
    sizes = [(len(s.gold), name) for c, _ in pairs for name, s in c.items.items()]
    least, subset = min(sizes)
    if least >= MIN_ITEMS:
        return ""
    where = f" in subset {subset!r}" if len({name for _, name in sizes}) > 1 else ""
    return f"only {least} items{where} (a paired test needs at least {MIN_ITEMS})"


def _row(
    candidate: Replicates,
    base: Replicates | None,
    label: str,
    n_resamples: int,
    seed: int,
    parts: Sequence[str] = _IDENTITY_PARTS,
) -> Row:
    first = candidate[min(candidate)]
    row = Row(
        first.task,
        first.task_type,
        first.model,
        first.aggregator,
        float(np.mean([r.main_score for r in candidate.values()])),
        Mark.INCOMPARABLE,
        baseline=label,
        replicates=len(candidate),
        state=State.NOT_TESTED,
        units=len(candidate),
    )
    base = base or {}
    shared = sorted(set(candidate) & set(base))
    row = _with_unpaired(row, candidate, base, shared)
    if not shared:
        return row
    row = replace(row, baseline_score=float(np.mean([base[i].main_score for i in shared])))
    pairs = [(candidate[i], base[i]) for i in shared]
    paired = [c for c, _ in pairs]
    reason = next((why for c, b in pairs if (why := _comparable(c, b, parts))), "")
    if reason:
        return _not_tested(row, reason, paired)
    if any(math.isnan(c.main_score) or math.isnan(b.main_score) for c, b in pairs):
        delta = float(np.mean([c.main_score - b.main_score for c, b in pairs]))
        row = replace(row, delta=delta)  # NaN: summaries say so
        return _not_tested(row, _NAN, paired)
    task_type = find(first.task_type)
    row = replace(row, score_tested=task_type is None or task_type.score_from_items)
    if _identical(pairs):  # bit-identical passes however few its items
        return _same(row, pairs)
    if reason := _too_few(pairs):
        return _not_tested(row, reason, paired)
    if len(pairs) == 1:
        tested = _item_only(row, *pairs[0], n_resamples, seed)
    else:
        tested = _across_replicates(row, pairs, n_resamples, seed)
    if tested.p_value is None:
        return _not_tested(tested, tested.note, paired)
    if not tested.score_tested and not tested.identical:
        note = "verdict on Δ items (Δ: mteb's own k-means, not recomputable from items)"
        tested = replace(tested, note=_notes(tested.note, note))
    return tested


_NAN = "NaN score: not tested (did a model diverge?)"


def _notes(*parts: str) -> str:
    """A row's note from its parts, the empty ones left out."""
    return "; ".join(p for p in parts if p)


def _with_unpaired(row: Row, candidate: Replicates, base: Replicates, shared: list[int]) -> Row:
    """The row with its replicates on one side only named (untested), and counted."""
    untested = [
        Untested(candidate[i].label, "absent from the baseline", new=True)
        for i in sorted(set(candidate) - set(base))
    ]
    untested += [
        Untested(base[i].label, "missing from the candidate")
        for i in sorted(set(base) - set(candidate))
    ]
    note = ""
    if untested and shared:
        note = "replicate(s) " + ", ".join(f"r{i}" for i in sorted(set(candidate) ^ set(base)))
        note += " on one side only: not tested"
    elif untested:
        note = "no baseline result"
    return replace(row, untested=tuple(untested), units=len(set(candidate) | set(base)), note=note)


def _not_tested(row: Row, reason: str, results: Sequence[UnitResult]) -> Row:
    """The row untested for `reason`, every one of its paired replicates named."""
    untested = (*row.untested, *(Untested(r.label, reason) for r in results))
    note = _notes(reason, row.note)
    return replace(
        row, mark=Mark.INCOMPARABLE, state=State.NOT_TESTED, note=note, untested=untested
    )


def _same(row: Row, pairs: Sequence[tuple[UnitResult, UnitResult]]) -> Row:
    """Bit-identical to the baseline: PASS, outside the multiple-testing family."""
    scores = tuple(c.main_score for c, _ in pairs)
    return replace(
        row,
        score=float(np.mean(scores)),
        delta=0.0,
        item_delta=0.0,
        ci_low=0.0,
        ci_high=0.0,
        p_value=1.0,
        mark=Mark.SAME,
        identical=True,
        replicates=len(pairs),
        note=_notes("identical to the baseline", row.note),  # keeps "r2 on one side only"
    )


def _item_only(
    row: Row, candidate: UnitResult, base: UnitResult, n_resamples: int, seed: int
) -> Row:
    """One replicate: the paired item bootstrap (and Steiger's test for STS)."""
    try:
        test = stats.paired_bootstrap(candidate.items, base.items, n_resamples, seed)
    except ValueError as exc:
        return replace(row, note=str(exc))
    delta = candidate.main_score - base.main_score
    row = replace(row, score=candidate.main_score, baseline_score=base.main_score, replicates=1)
    if math.isnan(test.p_value):  # no p-value from a NaN; the NaN delta reaches the summaries
        reason = (
            _NAN
            if math.isnan(test.delta)
            else "the statistic is undefined on most resamples (tied predictions)"
        )
        return replace(row, delta=delta, note=reason)
    steiger = None
    task_type = find(candidate.task_type)
    if task_type is not None and task_type.steiger:
        ps = [
            stats.steiger_z(c.gold, c.predicted, base.items[s].predicted)[1]
            for s, c in candidate.items.items()
        ]
        steiger = float(np.min(ps)) if ps else None
    return replace(
        row,
        mark=Mark.SAME,
        delta=delta,
        item_delta=test.delta,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        steiger_p=steiger,
        spread=test.spread,
        se=test.spread.se,
    )


def _across_replicates(
    row: Row, pairs: list[tuple[UnitResult, UnitResult]], n_resamples: int, seed: int
) -> Row:
    """Two or more paired replicates: the two-level test (replicates and items)."""
    scores = tuple(c.main_score for c, _ in pairs)
    base_scores = tuple(b.main_score for _, b in pairs)
    row = replace(
        row,
        score=float(np.mean(scores)),
        baseline_score=float(np.mean(base_scores)),
        delta=float(np.mean(scores) - np.mean(base_scores)),
        replicates=len(pairs),
        replicate_scores=scores,
        baseline_replicate_scores=base_scores,
        prob_improvement=two_level.probability_of_improvement(scores, base_scores),
    )
    try:
        test = two_level.two_level_test(
            [c.items for c, _ in pairs], [b.items for _, b in pairs], n_resamples, seed
        )
    except ValueError as exc:
        return replace(row, note=str(exc))
    row = replace(row, replicate_deltas=test.replicate_deltas, between_sd=test.between_sd)
    if math.isnan(test.p_value):
        return replace(row, note=_NAN)
    return replace(
        row,
        mark=Mark.SAME,
        item_delta=test.delta,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        agree=test.agree,
        spread=test.spread,
        se=test.spread.se,
    )


def _state(row: Row, p_noninferior: float, alpha: float, max_drop: float) -> State:
    """REGRESSION from the row's (Holm) mark and its estimate, else PASS when non-inferiority
    is shown, else INCONCLUSIVE."""
    drop = row.tested_delta
    if row.mark is Mark.WORSE and drop is not None and drop < -max_drop:
        return State.REGRESSION
    return State.PASS if p_noninferior < alpha else State.INCONCLUSIVE


def _advice(row: Row, spread: Spread, effect: float, alpha: float) -> Row:
    """An undecided row with what would decide it: how many replicates (at its items) bring
    its MDE at `alpha` to `effect`, or that only more items would."""
    if row.mde is None or row.mde <= effect:
        return row
    needed = None
    if items_limit(spread, effect, alpha):
        advice = (
            f"MDE above {effect:g} from the items alone: more test items would help, not replicates"
        )
    elif row.replicates < 2:
        advice = (
            f"MDE above {effect:g}: replicates (`replicates: N`) would tell how many are needed"
        )
    else:
        needed = replicates_for(spread, row.replicates, effect, alpha)
        advice = (
            f"about {needed} replicates would bring the MDE to {effect:g}"
            if needed is not None
            else f"more than {MAX_REPLICATES} replicates needed for an MDE of {effect:g}"
        )
    return replace(row, replicates_needed=needed, note=_notes(row.note, advice))


def _with_marks(
    rows: list[Row], alpha: float, max_drop: float = 0.005, effect: float | None = None
) -> list[Row]:
    """Holm over the tested units that differ from their baseline (identical ones pass
    without spending the family's alpha): the marks and REGRESSION from the two-sided p of
    no difference, PASS from the one-sided p of a drop of at least `max_drop`
    (non-inferiority), the MDE at alpha / m, and for an INCONCLUSIVE unit what would decide
    it at `effect` (default: `max_drop`)."""
    family = [
        (i, r.p_value, r.spread)
        for i, r in enumerate(rows)
        if r.p_value is not None and r.spread is not None
    ]
    adjusted = stats.holm([p for _, p, _ in family])
    noninferior = stats.holm(
        [spread.p_above((rows[i].tested_delta or 0.0) + max_drop) for i, _, spread in family]
    )
    out = [replace(r, state=State.PASS, p_holm=1.0) if r.identical else r for r in rows]
    for (i, _, spread), p, p_ni in zip(family, adjusted, noninferior, strict=True):
        row = rows[i]
        mark = Mark.SAME
        # the direction of what was tested (the per-item statistic), not of mteb's main score:
        # for clustering the two can disagree (one k-means run against the mean of ten)
        tested_delta = row.tested_delta
        if p < alpha and tested_delta is not None:
            mark = Mark.BETTER if tested_delta > 0 else Mark.WORSE if tested_delta < 0 else mark
        row = replace(row, p_holm=p, mark=mark, p_noninferior=p_ni)
        row = replace(
            row,
            state=_state(row, p_ni, alpha, max_drop),
            mde=spread.detectable(alpha / len(family)),
        )
        if row.state is State.INCONCLUSIVE:
            row = _advice(row, spread, max_drop if effect is None else effect, alpha / len(family))
        out[i] = row
    return out


def _summaries(rows: list[Row]) -> list[Summary]:
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.delta is None:
            continue
        candidate = f"{row.model}/{row.aggregator}"
        groups[(row.task_type, candidate, row.baseline)].append(row)
        groups[("all", candidate, row.baseline)].append(row)
    out = []
    for (scope, candidate, baseline), members in groups.items():
        deltas = [r.delta for r in members if r.delta is not None]
        replicated = [(r.replicate_scores, r.baseline_replicate_scores) for r in members]
        improvement = (
            two_level.aggregate_improvement(replicated)
            if all(len(scores) > 1 for scores, _ in replicated)
            else None
        )
        out.append(
            Summary(
                scope=scope,
                candidate=candidate,
                baseline=baseline,
                mean_score=float(np.mean([r.score for r in members])),
                mean_delta=float(np.mean(deltas)),
                wins=sum(r.mark is Mark.BETTER for r in members),
                ties=sum(r.mark is Mark.SAME for r in members),
                losses=sum(r.mark is Mark.WORSE for r in members),
                test=stats.wilcoxon_across_tasks(deltas),
                improvement=improvement,
            )
        )
    return sorted(out, key=lambda s: (s.scope != "all", s.scope, s.candidate))


def _unit_id(r: UnitResult) -> tuple[str, str, str, str]:
    return (r.suite, r.model, r.aggregator, r.task)


def _by_unit(results: Sequence[UnitResult]) -> dict[tuple[str, str, str, str], Replicates]:
    """Results grouped by unit (suite/model/aggregator/task), then by replicate, in order."""
    groups: dict[tuple[str, str, str, str], Replicates] = defaultdict(dict)
    for r in results:
        groups[_unit_id(r)][r.replicate] = r
    return groups


def _reference(unit: Replicates) -> Row:
    """A row that is shown, not tested (the baseline operator, a dense model)."""
    first = unit[min(unit)]
    score = float(np.mean([r.main_score for r in unit.values()]))
    return Row(
        first.task,
        first.task_type,
        first.model,
        first.aggregator,
        score,
        Mark.BASELINE,
        replicates=len(unit),
    )


def side_of(results: Sequence[UnitResult] | Side) -> Side:
    """Results held in memory as a comparison side (a later result of a unit replaces an
    earlier one; `read_side` refuses two files of one unit)."""
    if isinstance(results, Side):
        return results
    side = Side()
    for r in results:
        side.results[(r.suite, r.model, r.aggregator, r.task, r.replicate)] = r
    return side


def _failed_row(keys: Sequence[UnitKey], reasons: Sequence[Untested]) -> Row:
    """A unit none of whose replicates has a result to test (failed, or on one side only)."""
    _suite, model, aggregator, task, _ = keys[0]
    return Row(
        task,
        "",
        model,
        aggregator,
        math.nan,
        Mark.INCOMPARABLE,
        note="; ".join(sorted({u.reason for u in reasons})),
        replicates=0,
        state=State.NOT_TESTED,
        untested=tuple(reasons),
        units=len(keys),
    )


def _failures(keys: Sequence[UnitKey], new: Side, base: Side) -> list[Untested]:
    """The replicates of a unit recorded as failed on either side, with their messages."""
    out = []
    for key in keys:
        reasons = [
            f"{name}: {side.failed[key]}"
            for side, name in ((new, "candidate"), (base, "baseline"))
            if key in side.failed
        ]
        if reasons:  # one unit, however many sides failed
            out.append(Untested(unit_label(key), "; ".join(reasons)))
    return out


def _unit_against(keys: list[UnitKey], new: Side, base: Side, n_resamples: int, seed: int) -> Row:
    """One unit (all its replicates) against its twin in the other side."""
    failures = _failures(keys, new, base)
    failed = {u.label for u in failures}
    usable = [k for k in keys if unit_label(k) not in failed]
    candidate = {k[4]: new.results[k] for k in usable if k in new.results}
    baseline = {k[4]: base.results[k] for k in usable if k in base.results}
    if not candidate:
        missing = [Untested(unit_label(k), "missing from the candidate") for k in usable]
        return _failed_row(keys, [*failures, *missing])
    _, model, aggregator, _, _ = keys[0]
    row = _row(candidate, baseline, f"other:{model}/{aggregator}", n_resamples, seed)
    if not failures:
        return row
    note = _notes(row.note, f"{len(failures)} replicate(s) failed")
    return replace(row, untested=(*failures, *row.untested), units=len(keys), note=note)


def _rows_against(new: Side, base: Side, n_resamples: int, seed: int) -> list[Row]:
    """Every unit of either side against its twin (same suite/model/aggregator/task,
    replicate by replicate) in the other: a unit on one side only, or failed, is a row too."""
    grouped: dict[tuple[str, str, str, str], list[UnitKey]] = defaultdict(list)
    for key in sorted(new.keys() | base.keys()):
        grouped[key[:4]].append(key)
    return [_unit_against(keys, new, base, n_resamples, seed) for keys in grouped.values()]


def _failed_rows(side: Side) -> list[Row]:
    """Units recorded as failed (compare without --against): rows, not tested."""
    return [_failed_row([k], _failures([k], side, Side())) for k in sorted(side.failed)]


def _rows_against_model(
    results: Sequence[UnitResult], model: str, n_resamples: int, seed: int
) -> list[Row]:
    """Each model against `model`, operator by operator, on the same task (router or Tilt-Rate
    sweeps: the models differ, the operator and test items do not)."""
    index = _by_unit(results)
    if not any(r.model == model for r in results):
        raise SbabenchError(
            f"--baseline-model {model!r} has no results here",
            fix="use one of: " + ", ".join(sorted({r.model for r in results})),
        )
    # the models differ on purpose, and so may how (or whether) they were trained
    parts = [p for p in _IDENTITY_PARTS if p not in ("model", "train")]
    rows = []
    for (suite, name, aggregator, task), unit in index.items():
        if name == model:
            rows.append(_reference(unit))
            continue
        base = index.get((suite, model, aggregator, task))
        rows.append(_row(unit, base, f"{model}/{aggregator}", n_resamples, seed, parts))
    return rows


def _rows_against_baseline(
    results: Sequence[UnitResult], baseline: str, n_resamples: int, seed: int
) -> list[Row]:
    """Each MoE model's operators against its baseline operator on the same task."""
    index = _by_unit(results)
    rows = []
    for (suite, model, aggregator, task), unit in index.items():
        if aggregator in (baseline, "dense"):
            rows.append(_reference(unit))
            continue
        base = index.get((suite, model, baseline, task))
        rows.append(_row(unit, base, f"{model}/{baseline}", n_resamples, seed))
    return rows


def compare_results(
    results: Sequence[UnitResult] | Side,
    *,
    baseline: str = "linear",
    against: Sequence[UnitResult] | Side | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    baseline_model: str | None = None,
    max_drop: float = 0.005,
    effect: float | None = None,
) -> Comparison:
    """Compare every result with its baseline.

    Without `against`: each MoE model's operators against its `baseline` operator on the same
    task (dense reference rows are shown, not tested). With `against`: every unit of either
    side against its twin (same suite/model/aggregator/task) in the other (before/after a
    change). With `baseline_model`: every model against that model, with the same operator and
    task. Each tested row's state is judged against `max_drop` (see `Comparison.verdict`); an
    INCONCLUSIVE one says what would bring its MDE to `effect` (default `max_drop`).
    """
    side = side_of(results)
    found = list(side.results.values())
    if against is not None:
        rows = _rows_against(side, side_of(against), n_resamples, seed)
    elif baseline_model is not None:
        rows = _rows_against_model(found, baseline_model, n_resamples, seed)
        rows += _failed_rows(side)
    else:
        rows = _rows_against_baseline(found, baseline, n_resamples, seed) + _failed_rows(side)
    rows = _with_marks(rows, alpha, max_drop, effect)
    comparison = Comparison(rows=rows, summaries=_summaries(rows), alpha=alpha, max_drop=max_drop)
    comparison.friedman = _friedman(found, alpha)
    return comparison


def _friedman(results: Sequence[UnitResult], alpha: float) -> stats.AcrossTasks | None:
    """Friedman + Nemenyi over every model/aggregator column that has all tasks."""
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (_, model, aggregator, task), unit in _by_unit(results).items():  # replicate means
        table[f"{model}/{aggregator}"][task] = float(np.mean([r.main_score for r in unit.values()]))
    tasks = sorted({r.task for r in results})
    complete = {
        name: [scores[t] for t in tasks]
        for name, scores in table.items()
        if set(scores) >= set(tasks)
    }
    if len(complete) < 3:
        return None
    return stats.friedman_nemenyi(complete, alpha)


_NOT_RECORDS = {"spread", "untested"}


def _plain(value: Any) -> Any:
    """A row's value for CSV / JSON: tuples as lists, NaN as None (null: JSON has no NaN)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, StrEnum):
        return value.value
    return value


def to_records(comparison: Comparison) -> list[dict[str, Any]]:
    """Rows as plain dicts (for CSV / JSON output); `untested` as "label: reason" strings."""
    return [
        {
            **{k: _plain(v) for k, v in row.__dict__.items() if k not in _NOT_RECORDS},
            "mark": row.mark.value,
            "untested": [f"{u.label}: {u.reason}" for u in row.untested],
        }
        for row in comparison.rows
    ]


def load_folder(folder: Path) -> list[UnitResult]:
    """Every result under a results folder, each checked (`read_side`); a user error if there
    is none, or for a file that is not a readable result of its place."""
    found = list(read_side([folder]).results.values())
    if not found:
        raise SbabenchError(f"no result files under {str(folder)!r}", fix="run a suite first")
    return found


def load_folders(folders: Sequence[str | Path]) -> list[UnitResult]:
    """The results of every folder, in the order given (an error for a folder with none)."""
    return [r for folder in folders for r in load_folder(Path(folder))]


def _side(folders: Sequence[Path]) -> Side:
    side = read_side(folders)
    if not side.keys():
        shown = ", ".join(str(f) for f in folders)
        raise SbabenchError(f"no result files under {shown}", fix="run a suite first")
    return side


@dataclass(frozen=True)
class Outcome:
    """What `compare` returns: the results read, their comparison and the gate's verdict."""

    results: list[UnitResult]
    """The current results (every folder given)."""
    comparison: Comparison
    verdict: Verdict
    exit_code: int
    """0; 1 with `fail_on_regression` for a regression or an untested unit (or, `strict`,
    an inconclusive one)."""


def compare(
    results: Sequence[str | Path] = ("results",),
    *,
    against: str | Path | None = None,
    baseline: str = "linear",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    max_drop: float = 0.005,
    fail_on_regression: bool = False,
    baseline_model: str | None = None,
    allow_new: bool = False,
    strict: bool = False,
    effect: float | None = None,
) -> Outcome:
    """Read results folders, compare them (operators against `baseline`, models against
    `baseline_model`, or each unit against its twin in `against`), and judge regressions: what
    `sbabench compare` does, as a value."""
    current = _side([Path(f) for f in results])
    other = _side([Path(against)]) if against is not None else None
    comparison = compare_results(
        current,
        baseline=baseline,
        against=other,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
        baseline_model=baseline_model,
        max_drop=max_drop,
        effect=effect,
    )
    verdict = comparison.verdict(allow_new=allow_new)
    code = verdict.exit_code(fail_on_regression, strict)
    return Outcome(list(current.results.values()), comparison, verdict, code)
