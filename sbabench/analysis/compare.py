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
from sbabench.errors import SbabenchError
from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult, load_results
from sbabench.tasks.types import find


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
    """The regression gate's answer."""

    regressions: list[Row]
    """Rows that dropped significantly by more than the tolerated drop."""
    tested: int
    """Rows with a paired test."""
    text: str
    """One line: OK, REGRESSION with the worst drop, or NOT TESTED and why."""

    def exit_code(self, fail_on_regression: bool) -> int:
        """1 when regressions fail the gate, or when it could test nothing; else 0."""
        return 1 if fail_on_regression and (self.regressions or not self.tested) else 0


@dataclass
class Comparison:
    """Everything `sbabench compare` shows."""

    rows: list[Row] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    friedman: stats.AcrossTasks | None = None
    alpha: float = 0.05

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

    def verdict(self, max_drop: float) -> Verdict:
        """Whether any tested unit dropped significantly by more than `max_drop`."""
        regressions = self.regressions(max_drop)
        tested = sum(r.p_value is not None for r in self.rows)
        if not tested:
            reasons = sorted({r.note for r in self.rows if r.note}) or ["no results"]
            return Verdict(
                [],
                0,
                f"NOT TESTED: none of {len(self.rows)} unit(s) could be paired with a baseline "
                f"({'; '.join(reasons)})",
            )
        if not regressions:
            return Verdict(
                [],
                tested,
                f"OK: no significant drop larger than {max_drop} in {tested} tested unit(s)",
            )
        worst = min(regressions, key=lambda r: r.delta or 0.0)
        text = (
            f"REGRESSION: {len(regressions)} of {tested} tested unit(s) dropped by more than "
            f"{max_drop} (Holm p < {self.alpha}); worst {worst.model}/{worst.aggregator}/"
            f"{worst.task} {worst.delta:+.4f}"
        )
        return Verdict(regressions, tested, text)

    def regressions(self, max_drop: float) -> list[Row]:
        """Rows whose main score dropped by more than `max_drop` and whose tested per-item
        statistic dropped significantly (a main-score drop the test contradicts is not one)."""
        return [
            r
            for r in self.rows
            if r.delta is not None and r.delta < -max_drop and r.mark is Mark.WORSE
        ]


_IDENTITY_PARTS = ("model", "task", "settings", "scoring_version")
"""Key parts two results must share to be paired (the operator is what differs)."""


def _identity(parts: KeyParts, part: str) -> object:
    """A key part as pairing sees it: the model and the task without their code digests, since
    a change of the code that builds and runs models (the MoE path, the encoder) or builds the
    bundled tasks is what a gate compares across (a task whose items changed with its code is
    refused by the paired test itself: its gold values differ)."""
    value = getattr(parts, part)
    if part in ("model", "task"):
        return value.model_copy(update={"code_sha256": None})
    return value


def _comparable(a: UnitResult, b: UnitResult, parts: Sequence[str] = _IDENTITY_PARTS) -> str:
    """'' when two results may be paired (they share `parts`), else why not."""
    for part in parts:
        if _identity(a.key_parts, part) != _identity(b.key_parts, part):
            return f"{part} differs"
    if a.split != b.split:
        return "split differs"
    if not a.items or not b.items:
        return "no per-item scores"
    return ""


Replicates = dict[int, UnitResult]
"""One unit's results by replicate."""


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
    )
    if not base:
        return replace(row, note="no baseline result")
    shared = sorted(set(candidate) & set(base))
    row = replace(row, baseline_score=float(np.mean([r.main_score for r in base.values()])))
    if not shared:
        return replace(row, note="no baseline result for these replicates")
    pairs = [(candidate[i], base[i]) for i in shared]
    reason = next((why for c, b in pairs if (why := _comparable(c, b, parts))), "")
    if reason:
        return replace(row, note=reason)
    if any(math.isnan(c.main_score) or math.isnan(b.main_score) for c, b in pairs):
        delta = float(
            np.mean([c.main_score - b.main_score for c, b in pairs])
        )  # NaN: summaries say so
        return replace(row, delta=delta, note="NaN score: not tested (did a model diverge?)")
    if len(pairs) == 1:
        tested = _item_only(row, *pairs[0], n_resamples, seed)
    else:
        tested = _across_replicates(row, pairs, n_resamples, seed)
    unpaired = sorted(set(candidate) ^ set(base))
    if unpaired:  # a replicate on one side only: say so, the test used the paired ones
        shown = ", ".join(f"r{r}" for r in unpaired)
        note = f"replicate(s) {shown} on one side only, left out"
        tested = replace(tested, note="; ".join(n for n in (tested.note, note) if n))
    return tested


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
        return replace(row, delta=delta, note="NaN score: not tested (did a model diverge?)")
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
        return replace(row, note="NaN score: not tested (did a model diverge?)")
    return replace(
        row,
        mark=Mark.SAME,
        item_delta=test.delta,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        agree=test.agree,
    )


def _with_marks(rows: list[Row], alpha: float) -> list[Row]:
    tested = [i for i, r in enumerate(rows) if r.p_value is not None]
    adjusted = stats.holm([p for i in tested if (p := rows[i].p_value) is not None])
    out = list(rows)
    for i, p in zip(tested, adjusted, strict=True):
        row = rows[i]
        mark = Mark.SAME
        # the direction of what was tested (the per-item statistic), not of mteb's main score:
        # for clustering the two can disagree (one k-means run against the mean of ten)
        tested_delta = row.item_delta if row.item_delta is not None else row.delta
        if p < alpha and tested_delta is not None:
            mark = Mark.BETTER if tested_delta > 0 else Mark.WORSE if tested_delta < 0 else mark
        out[i] = replace(row, p_holm=p, mark=mark)
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


def _rows_against(
    results: Sequence[UnitResult], against: Sequence[UnitResult], n_resamples: int, seed: int
) -> list[Row]:
    """Each unit against its twin (same suite/model/aggregator/task, replicate by replicate)
    in another result set."""
    index = _by_unit(against)
    return [
        _row(unit, index.get(key), f"other:{key[1]}/{key[2]}", n_resamples, seed)
        for key, unit in _by_unit(results).items()
    ]


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
    parts = [p for p in _IDENTITY_PARTS if p != "model"]  # the models differ on purpose
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
    results: Sequence[UnitResult],
    *,
    baseline: str = "linear",
    against: Sequence[UnitResult] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    baseline_model: str | None = None,
) -> Comparison:
    """Compare every result with its baseline.

    Without `against`: each MoE model's operators against its `baseline` operator on the same
    task (dense reference rows are shown, not tested). With `against`: every unit against the
    unit of the same suite/model/aggregator/task in the other result set (before/after a change).
    With `baseline_model`: every model against that model, with the same operator and task.
    """
    if against is not None:
        rows = _rows_against(results, against, n_resamples, seed)
    elif baseline_model is not None:
        rows = _rows_against_model(results, baseline_model, n_resamples, seed)
    else:
        rows = _rows_against_baseline(results, baseline, n_resamples, seed)
    rows = _with_marks(rows, alpha)
    comparison = Comparison(rows=rows, summaries=_summaries(rows), alpha=alpha)
    comparison.friedman = _friedman(results, alpha)
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


def _plain(value: Any) -> Any:
    """A row's value for CSV / JSON: tuples as lists, NaN as None (null: JSON has no NaN)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_records(comparison: Comparison) -> list[dict[str, Any]]:
    """Rows as plain dicts (for CSV / JSON output)."""
    return [
        {**{k: _plain(v) for k, v in row.__dict__.items()}, "mark": row.mark.value}
        for row in comparison.rows
    ]


def load_folder(folder: Path) -> list[UnitResult]:
    """Every result under a results folder; a user error if there is none."""
    if not folder.is_dir():
        raise SbabenchError(
            f"results folder {str(folder)!r} does not exist", fix="check the path or run the suite"
        )
    found = load_results(folder)
    if not found:
        raise SbabenchError(f"no result files under {str(folder)!r}", fix="run a suite first")
    return found


def load_folders(folders: Sequence[str | Path]) -> list[UnitResult]:
    """The results of every folder, in the order given (an error for a folder with none)."""
    return [r for folder in folders for r in load_folder(Path(folder))]


@dataclass(frozen=True)
class Outcome:
    """What `compare` returns: the results read, their comparison and the gate's verdict."""

    results: list[UnitResult]
    """The current results (every folder given)."""
    comparison: Comparison
    verdict: Verdict
    exit_code: int
    """0, or 1 when `fail_on_regression` and a regression was found."""


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
) -> Outcome:
    """Read results folders, compare them (operators against `baseline`, models against
    `baseline_model`, or each unit against its twin in `against`), and judge regressions: what
    `sbabench compare` does, as a value."""
    current = load_folders(results)
    other = load_folder(Path(against)) if against is not None else None
    comparison = compare_results(
        current,
        baseline=baseline,
        against=other,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
        baseline_model=baseline_model,
    )
    verdict = comparison.verdict(max_drop)
    return Outcome(current, comparison, verdict, verdict.exit_code(fail_on_regression))
