"""Replicates that stop when decided: rounds of replicates, each followed by a look that tests
every operator against the baseline operator with a group-sequential boundary.

The design: looks at R = min, min + step, ..., max replicates of each model with something
random. Alpha is spent over the looks by Lan-DeMets' O'Brien-Fleming-type function,
alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)) with t = R / max (little early, most at the
end), and look k tests at its increment alpha_k = alpha(t_k) - alpha(t_{k-1}); the increments
sum to alpha. At each look every comparison of a model (operator x task, against the baseline
operator, by compare's two-level test over the replicates so far) gets

- a significance p: its two-sided p, Holm-adjusted over all the model's comparisons. Below
  alpha_k: decided, better or worse;
- with an effect of interest e, an equivalence p: the larger of the two one-sided p-values of
  "the difference is at or below -e" and "at or above +e" (two one-sided tests), Holm-adjusted
  the same way. Below alpha_k: decided, within +-e (the futility rule).

A model stops when every comparison is decided, or at max. Why the increments and not exact
group-sequential boundaries: those assume a normal statistic with known variance whose looks
correlate as sqrt(t_j / t_k); the two-level test's statistic has Student t references with
R - 1 df and a variance estimated anew at each look, so they would not be exact here either.
Testing look k at alpha_k holds the level by Bonferroni's inequality whatever the correlation
between looks (a false significance claim at any look has probability at most the sum of the
alpha_k over a model's family, Holm holding within a look; so has a false "within" claim, a
family of its own); it costs some power against exact boundaries.
`benchmarks/bench_sequential.py` measures the level, the power, the replicates saved against a
fixed design, and how far the naive "test after every replicate at alpha" overshoots.

The record of a sequential run (design, looks, decisions) is `.sequential.json` in the suite's
results folder (a dot file: the result readers skip it). A comparison's sequentially adjusted p
is min over its looks of p_j * alpha / alpha_j (below alpha exactly when some look decided it
significant); its repeated CI is the (1 - alpha_k) interval at the look it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sbabench.analysis.compare import Row, compare_results
from sbabench.analysis.evidence import read_side
from sbabench.analysis.stats import holm
from sbabench.analysis.uncertainty import Spread
from sbabench.atomic import write_atomic
from sbabench.errors import SbabenchError
from sbabench.run.results import UnitResult
from sbabench.suite.schema import Suite, UntilDecided

RECORD = ".sequential.json"
"""The sequential run's record, in the suite's results folder."""

Decision = Literal["better", "worse", "within", "open"]


class Design(BaseModel):
    """When to look, at what level, and what counts as decided."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum: int = Field(ge=2)
    """Replicates at the first look."""
    maximum: int = Field(ge=2)
    """Replicates at the last look."""
    step: int = Field(1, ge=1)
    """Replicates added per round."""
    alpha: float = Field(0.05, gt=0, lt=1)
    """Family-wise level of each model's comparisons over all looks."""
    effect: float | None = Field(None, gt=0)
    """The difference of interest: a comparison whose interval lies within +-effect is decided
    (None: only significance decides)."""
    baseline: str = "linear"
    """The operator every other operator is compared with."""
    spending: Literal["obrien-fleming"] = "obrien-fleming"

    def looks(self) -> list[int]:
        """Replicates at each look: minimum, minimum + step, ..., maximum."""
        counts = list(range(self.minimum, self.maximum, self.step))
        return [*counts, self.maximum]

    def spent(self, replicates: int) -> float:
        """Alpha spent up to a look at `replicates` (Lan-DeMets O'Brien-Fleming)."""
        from scipy.special import ndtr, ndtri

        fraction = min(replicates / self.maximum, 1.0)
        return float(2 - 2 * ndtr(ndtri(1 - self.alpha / 2) / math.sqrt(fraction)))

    def increment(self, look: int) -> float:
        """alpha_k of look index `look` (0-based)."""
        counts = self.looks()
        before = self.spent(counts[look - 1]) if look > 0 else 0.0
        return self.spent(counts[look]) - before


class Comparison(BaseModel):
    """One operator x task of a model against the baseline operator at one look."""

    model_config = ConfigDict(extra="forbid")

    model: str
    operator: str
    task: str
    replicates: int
    delta: float | None
    """The tested difference (operator minus baseline)."""
    p: float | None
    """Two-sided p of the two-level test (None: not tested, see note)."""
    p_holm: float | None
    """Holm-adjusted over the model's comparisons at this look."""
    p_within: float | None
    """Holm-adjusted equivalence p (two one-sided tests at +-effect; None without effect)."""
    ci_low: float | None
    """The (1 - alpha_k) interval at this look: the repeated CI."""
    ci_high: float | None
    decision: Decision
    note: str = ""


class Look(BaseModel):
    """The tests after one round."""

    model_config = ConfigDict(extra="forbid")

    replicates: int
    alpha: float
    """alpha_k: the level this look tests at."""
    comparisons: list[Comparison]


class Record(BaseModel):
    """What `.sequential.json` holds."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    suite: str
    design: Design
    operators: list[str] = []
    """The suite's operators (aggregator keys) the looks compared: result files of others left
    in the folder are not part of the family."""
    tasks: list[str] = []
    """The suite's tasks the looks compared."""
    resamples: int = 1000
    """Item resamples of each look's tests (what a replay of the looks needs)."""
    seed: int = 0
    looks: list[Look] = []
    stopped: dict[str, int] = {}
    """Model -> the replicates it stopped at (every comparison decided, or the maximum)."""

    def final(self) -> list[Adjusted]:
        """Each comparison at the first look that decided it (else its last look), with its
        sequentially adjusted p."""
        where: dict[tuple[str, str, str], tuple[Comparison, float]] = {}
        best: dict[tuple[str, str, str], float] = {}
        for look in self.looks:
            for c in look.comparisons:
                key = (c.model, c.operator, c.task)
                if c.p_holm is not None:
                    scaled = min(1.0, c.p_holm * self.design.alpha / look.alpha)
                    best[key] = min(best.get(key, 1.0), scaled)
                if key not in where or where[key][0].decision == "open":
                    where[key] = (c, look.alpha)
        return [Adjusted(c, best.get(key), alpha_k) for key, (c, alpha_k) in sorted(where.items())]

    def decided(self) -> set[tuple[str, str, str]]:
        """(model, operator, task) of every comparison some look decided."""
        return {
            (c.model, c.operator, c.task)
            for look in self.looks
            for c in look.comparisons
            if c.decision != "open"
        }


@dataclass(frozen=True)
class Adjusted:
    """A comparison where it stopped, with its sequentially adjusted p."""

    comparison: Comparison
    p_sequential: float | None
    """min over looks of p_holm * alpha / alpha_k (capped at 1)."""
    alpha_k: float
    """The level of the look it stopped at (its CI is the 1 - alpha_k interval)."""


def equivalence_p(spread: Spread, delta: float, effect: float) -> float:
    """Two one-sided tests: the larger p of `true <= -effect` and `true >= effect`."""
    below = spread.p_above(delta + effect)  # H0: true <= -effect
    above = spread.p_above(effect - delta)  # H0: true >= effect, by symmetry
    return max(below, above)


def decision(
    p_holm: float | None, p_within: float | None, delta: float | None, alpha_k: float
) -> Decision:
    """What one look decides about one comparison, from its Holm-adjusted p-values."""
    if p_holm is not None and p_holm < alpha_k:
        return "better" if (delta or 0.0) > 0 else "worse"
    if p_within is not None and p_within < alpha_k:
        return "within"
    return "open"


def _decide(rows: Sequence[Row], design: Design, look: int, replicates: int) -> list[Comparison]:
    """The comparisons of one model at one look."""
    alpha_k = design.increment(look)
    tested = [r for r in rows if r.p_value is not None and not math.isnan(r.p_value)]
    adjusted = dict(zip(map(id, tested), holm([r.p_value or 0.0 for r in tested]), strict=True))
    within: dict[int, float] = {}
    if design.effect is not None:
        kept = [
            (r, equivalence_p(r.spread, r.tested_delta, design.effect))
            for r in tested
            if r.spread is not None and r.tested_delta is not None
        ]
        within = dict(zip((id(r) for r, _ in kept), holm([p for _, p in kept]), strict=True))
    out = []
    family = max(len(tested), 1)
    for row in rows:
        p_holm = adjusted.get(id(row))
        p_within = within.get(id(row))
        if row.identical and design.effect is not None:
            p_within = 0.0  # bit-identical in every replicate: a difference of exactly 0
        low = high = None
        if row.spread is not None and row.tested_delta is not None and p_holm is not None:
            # the look's level shared over the model's comparisons (Bonferroni, Holm's first
            # step), so an interval that excludes 0 always goes with a decided difference
            low, high = row.spread.interval(row.tested_delta, 1 - alpha_k / family)
        elif row.identical:
            low = high = 0.0
        out.append(
            Comparison(
                model=row.model, operator=row.aggregator, task=row.task, replicates=replicates,
                delta=row.tested_delta, p=row.p_value, p_holm=p_holm, p_within=p_within,
                ci_low=low, ci_high=high,
                decision=decision(p_holm, p_within, row.tested_delta, alpha_k),
                note=row.note if p_holm is None else "",
            )
        )  # fmt: skip
    return out


def look_at(
    results: Sequence[UnitResult],
    design: Design,
    look: int,
    counts: dict[str, int],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """Every comparison of the models in `counts` at look index `look`, from their first
    `counts[model]` replicates in `results` (later replicates, e.g. from an earlier fixed run,
    are left out: the design decides at its own counts)."""
    kept = [r for r in results if r.model in counts and r.replicate < counts[r.model]]
    comparison = compare_results(kept, baseline=design.baseline, n_resamples=n_resamples, seed=seed)
    out: list[Comparison] = []
    for model, replicates in counts.items():
        rows = [
            r for r in comparison.rows
            if r.model == model and r.baseline and r.aggregator != design.baseline
        ]  # fmt: skip
        out += _decide(rows, design, look, replicates)
    return out


def with_counts(suite: Suite, counts: dict[str, int]) -> Suite:
    """`suite` with each model in `counts` asked for that many replicates."""
    models = [
        m.model_copy(update={"replicates": counts[m.name]}) if m.name in counts else m
        for m in suite.models
    ]
    return suite.model_copy(update={"models": models})


def sequential_models(suite: Suite) -> list[str]:
    """The models a sequential design applies to: MoE models with something random (the
    others run once; their rows are not compared across operators)."""
    return [
        m.name for m in suite.models
        if m.is_moe and suite.replicates_of(m.model_copy(update={"replicates": 2})) > 1
    ]  # fmt: skip


def design_for(
    spec: Suite, *, until_decided: bool, baseline: str | None, effect: float | None
) -> Design | None:
    """The sequential design of a run: the suite's `replicates: {min, max}`, or --until-decided
    over a suite's plain count (2 up to it); None for a plain run."""
    form = spec.replicates
    if not until_decided and not isinstance(form, UntilDecided):
        for name, value in (("--baseline", baseline), ("--effect", effect)):
            if value is not None:
                raise SbabenchError(
                    f"{name} applies to a run until decided", fix="add --until-decided"
                )
        return None
    if isinstance(form, int):
        if form < 3:
            raise SbabenchError(
                f"suite {spec.name!r} asks for {form} replicate(s): a run until decided needs "
                "room for rounds",
                fix="give the suite `replicates: {min: 2, max: 10}` (or a count of 3 or more)",
            )
        form = UntilDecided(min=2, max=form)
    chosen = baseline or form.baseline
    keys = [a.key for a in spec.aggregators]
    if len(keys) < 2:
        raise SbabenchError(
            f"suite {spec.name!r} has {len(keys)} operator(s): a run until decided compares "
            "operators with a baseline operator, and needs at least two",
            fix="add an operator to `aggregators:` (e.g. [linear, sba]), or give `replicates:` a count",
        )
    if chosen not in keys:
        raise SbabenchError(
            f"baseline operator {chosen!r} is not among the suite's aggregators "
            f"({', '.join(keys) or 'none'})",
            fix="name one of them with --baseline, or in `replicates: {baseline: ...}`",
        )
    return Design(
        minimum=form.min, maximum=form.max, step=form.step, alpha=form.alpha,
        effect=effect if effect is not None else form.effect, baseline=chosen,
    )  # fmt: skip


def first_round(spec: Suite, design: Design) -> Suite:
    """The suite as the first round runs it (what --dry-run lists)."""
    return with_counts(spec, dict.fromkeys(sequential_models(spec), design.minimum))


@dataclass
class Outcome:
    """What a sequential run did."""

    record: Record
    failed: bool
    """A round had a failed unit: the run stopped there (exit code 1)."""


def run_until_decided(
    suite: Suite,
    design: Design,
    suite_folder: Path,
    run_round: Callable[[Suite], bool],
    *,
    on_look: Callable[[Look], None] = lambda look: None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Outcome:
    """Run `suite` in rounds until every model's comparisons are decided or it reaches the
    design's maximum. `run_round(suite)` runs (or finds cached) every unit of the suite it is
    given and says whether all succeeded. After each look the record is written to
    `suite_folder/.sequential.json`."""
    models = sequential_models(suite)
    if not models:
        raise SbabenchError(
            f"suite {suite.name!r} has no MoE model with something random: replicates of it "
            "would be identical, so there is nothing to run until decided",
            fix="give `replicates:` a count (and drop --until-decided): the suite runs once",
        )
    record = Record(
        suite=suite.name, design=design, operators=[a.key for a in suite.aggregators],
        tasks=[t.name for t in suite.tasks], resamples=n_resamples, seed=seed,
    )  # fmt: skip
    counts = dict.fromkeys(models, design.minimum)
    for look, replicates in enumerate(design.looks()):
        open_models = [m for m in models if m not in record.stopped]
        counts.update(dict.fromkeys(open_models, replicates))
        if not run_round(with_counts(suite, counts)):
            _write(suite_folder, record)
            return Outcome(record, failed=True)
        comparisons = look_at(
            _of_suite(record, [suite_folder]), design, look,
            {m: counts[m] for m in open_models}, n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
        current = Look(replicates=replicates, alpha=design.increment(look), comparisons=comparisons)
        record.looks.append(current)
        decided = record.decided()  # a decision stands once a look made it
        for model in open_models:
            mine = [(c.model, c.operator, c.task) for c in comparisons if c.model == model]
            if replicates == design.maximum or (mine and all(k in decided for k in mine)):
                record.stopped[model] = replicates
        _write(suite_folder, record)
        on_look(current)
        if len(record.stopped) == len(models):
            break
    return Outcome(record, failed=False)


def _of_suite(record: Record, folders: Sequence[Path]) -> list[UnitResult]:
    """The results of the record's operators and tasks in `folders` (read as evidence)."""
    side = read_side(folders)
    return [
        r for r in side.results.values()
        if r.aggregator in record.operators and r.task in record.tasks
    ]  # fmt: skip


def _write(folder: Path, record: Record) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / RECORD, record.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        raise SbabenchError(
            f"{folder / RECORD}: the sequential record could not be written ({exc.strerror or exc})",
            fix="free space or fix the folder's permissions (and remove a folder in the "
            "record's place), then run again: finished replicates are reused",
        ) from None


def check_record(record: Record, folder: Path) -> list[str]:
    """Replay the record's looks on the results in `folder` (the same tests, seeds and
    counts): a located error when a stored test disagrees (the record was edited, or written
    for other results); notes where the folder holds more replicates than the record used."""
    results = _of_suite(record, [folder])
    for index, look in enumerate(record.looks):
        counts = {c.model: c.replicates for c in look.comparisons}
        replayed = look_at(
            results, record.design, index, counts, n_resamples=record.resamples, seed=record.seed
        )
        stored = {(c.model, c.operator, c.task): c for c in look.comparisons}
        again = {(c.model, c.operator, c.task): c for c in replayed}
        for key in sorted(set(stored) | set(again)):
            a, b = stored.get(key), again.get(key)
            if a is None or b is None or a.decision != b.decision or not _same_p(a.p, b.p):
                said = "absent" if a is None else f"p {a.p}, {a.decision}"
                found = "absent" if b is None else f"p {b.p}, {b.decision}"
                raise _bad_record(
                    folder,
                    f"look {index + 1} ({look.replicates} replicates), {'/'.join(key)}: the "
                    f"record says {said}, the results give {found}",
                )
    notes = []
    for model, stopped in sorted(record.stopped.items()):
        held = {r.replicate for r in results if r.model == model}
        if held and max(held) + 1 > stopped:
            notes.append(
                f"{model}: the folder holds {max(held) + 1} replicates; the sequential "
                f"decisions use the first {stopped} (the tables above test them all)"
            )
    return notes


def _same_p(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def _bad_record(folder: Path, what: str) -> SbabenchError:
    return SbabenchError(
        f"{folder / RECORD}: {what}",
        fix="re-run the suite until decided (finished replicates are reused) to write the "
        "record again, or remove it",
    )


def read_record(folder: Path) -> Record | None:
    """The sequential record of a suite folder, None when it has none; a located error when
    it cannot be read."""
    path = folder / RECORD
    if path.is_symlink():
        raise SbabenchError(
            f"{path}: is a symbolic link; a sequential record is a plain file the run wrote",
            fix="remove the link (re-running with --until-decided writes the record again)",
        )
    if not path.exists():
        return None
    try:
        return Record.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise SbabenchError(
            f"{path}: not a readable sequential record ({first})",
            fix="re-run the suite with --until-decided (finished replicates are reused), or "
            "remove the file",
        ) from None


def records_under(folders: Sequence[Path]) -> list[tuple[Record, list[str]]]:
    """The sequential records of results folders given to `compare` (each folder's own, a suite
    folder, or its suite folders'), each replayed on its folder's results (`check_record`),
    with its notes."""
    found = []
    for folder in folders:
        for place in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
            if place.name.startswith(".") and place != folder:
                continue
            record = read_record(place)
            if record is not None:
                found.append((record, check_record(record, place)))
    return found
