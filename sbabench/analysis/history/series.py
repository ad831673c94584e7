"""A unit's scores along a branch: one point per first-parent commit with a record, cut into
series where what the score depends on besides code (settings, task revision, model build)
changed, and the paired test between two points."""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sbabench.analysis.history.git import Commit
from sbabench.analysis.history.store import HistoryStore, Record
from sbabench.analysis.stats import paired_bootstrap
from sbabench.analysis.two_level import two_level_test
from sbabench.analysis.uncertainty import Spread
from sbabench.tasks.items import ItemScores

PRUNED = "per-item scores no longer stored (pruned by retention); rerun and record"
"""Why a test cannot be made from records whose items retention dropped."""

AVERAGED_KINDS = frozenset({"sts", "pairs", "queries", "reranked"})
"""Item kinds whose predictions are values that average (a similarity, a per-query score);
clusters and class predictions are indices and do not."""


@dataclass(frozen=True)
class Point:
    """A unit's score at one commit: the mean over its recorded replicates."""

    commit: Commit
    score: float
    var: float
    """Variance of `score`: the items' with one replicate; with R >= 2, s^2 / R between the
    replicates plus the mean items' variance (the replicates share their test items, so that
    part does not shrink with R)."""
    records: tuple[Record, ...]
    """One per replicate, by replicate number."""

    @property
    def se(self) -> float:
        """Standard error of the score."""
        return math.sqrt(self.var) if self.var >= 0 else math.nan

    @property
    def dirty(self) -> bool:
        """Some replicate was recorded from a tree that differed from the commit."""
        return any(r.dirty for r in self.records)


@dataclass(frozen=True)
class UnitSeries:
    """One unit's points along the branch, in series (oldest first)."""

    suite: str
    label: str
    """`model/aggregator/task`."""
    score_name: str
    segments: tuple[tuple[Point, ...], ...]
    """Runs of consecutive points with the same series digest; a new one starts where
    settings, task revision or model build changed."""

    @property
    def points(self) -> tuple[Point, ...]:
        """The latest series' points (the ones a step or the gate is read on)."""
        return self.segments[-1]


@dataclass(frozen=True)
class Paired:
    """The paired test of one point against another (after minus before)."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    spread: Spread


def _point(commit: Commit, records: Sequence[Record]) -> Point:
    ordered = tuple(sorted(records, key=lambda r: r.replicate))
    scores = np.array([r.score for r in ordered])
    item_var = float(np.mean([r.item_var for r in ordered]))
    if len(ordered) == 1:
        return Point(commit, float(scores[0]), item_var, ordered)
    between = float(scores.var(ddof=1)) / len(ordered)
    return Point(commit, float(scores.mean()), between + item_var, ordered)


def _segments(points: list[tuple[str, Point]]) -> tuple[tuple[Point, ...], ...]:
    segments: list[list[Point]] = []
    last = None
    for series, point in points:
        if series != last:
            segments.append([])
            last = series
        segments[-1].append(point)
    return tuple(tuple(s) for s in segments)


def build_series(
    records: Sequence[Record], line: Sequence[Commit], only: str | None = None
) -> list[UnitSeries]:
    """Every unit's series along `line` (first-parent commits, oldest first); records of
    commits off the line are not shown. `only`: a glob on `model/aggregator/task`."""
    position = {c.sha: i for i, c in enumerate(line)}
    grouped: dict[tuple[str, str, str, str], dict[str, list[Record]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        label = f"{record.model}/{record.aggregator}/{record.task}"
        if record.sha in position and (only is None or fnmatch.fnmatchcase(label, only)):
            grouped[record.unit][record.sha].append(record)
    found = []
    for unit, by_commit in sorted(grouped.items()):
        ordered = sorted(by_commit.items(), key=lambda item: position[item[0]])
        points = [(recs[0].series, _point(line[position[sha]], recs)) for sha, recs in ordered]
        any_record = ordered[-1][1][0]
        label = f"{unit[1]}/{unit[2]}/{unit[3]}"
        found.append(UnitSeries(unit[0], label, any_record.score_name, _segments(points)))
    return found


def paired_test(
    store: HistoryStore, before: Point, after: Point, n_resamples: int = 1000, seed: int = 0
) -> Paired | str:
    """After against before on their stored items (paired bootstrap; with >= 2 common
    replicates, the two-level test), or why there is no test."""
    common = sorted({r.replicate for r in before.records} & {r.replicate for r in after.records})
    if not common:
        return "no replicate recorded at both commits"
    pick = {r.replicate: r for r in before.records}, {r.replicate: r for r in after.records}
    items = [(store.items(pick[0][r]), store.items(pick[1][r])) for r in common]
    if any(a is None or b is None for a, b in items):
        return PRUNED
    bases = [a for a, _ in items if a is not None]
    news = [b for _, b in items if b is not None]
    try:
        if len(common) == 1:
            one = paired_bootstrap(news[0], bases[0], n_resamples, seed)
            found = Paired(one.delta, one.ci_low, one.ci_high, one.p_value, one.spread)
        else:
            two = two_level_test(news, bases, n_resamples, seed)
            found = Paired(two.delta, two.ci_low, two.ci_high, two.p_value, two.spread)
    except ValueError as exc:
        return f"not paired: {exc}"
    if math.isnan(found.p_value):
        return "no test: NaN or constant predictions"
    return found


def pool_items(sides: Sequence[dict[str, ItemScores]]) -> dict[str, ItemScores] | str:
    """Several commits' items of one unit as one: each item's prediction averaged over them
    (the same subsets, kinds, gold values and order required), or why they do not pool."""
    first = sides[0]
    pooled = {}
    for subset, items in first.items():
        if items.kind not in AVERAGED_KINDS:
            return f"{items.kind} predictions are indices, not values that average"
        others = [side.get(subset) for side in sides]
        if any(o is None or o.kind != items.kind or o.gold != items.gold for o in others):
            return f"subset {subset!r} differs between the commits (items or gold values)"
        mean = np.mean([o.predicted for o in others if o is not None], axis=0)
        pooled[subset] = ItemScores(kind=items.kind, gold=items.gold, predicted=mean.tolist())
    if any(set(side) != set(first) for side in sides):
        return "the commits hold different subsets"
    return pooled


def _every_items(store: HistoryStore, points: Sequence[Point]) -> list[dict[str, ItemScores]] | str:
    found = []
    for point in points:
        for record in point.records:
            items = store.items(record)
            if items is None:
                return PRUNED
            found.append(items)
    return found


def pooled_test(
    store: HistoryStore,
    before: Sequence[Point],
    after: Sequence[Point],
    n_resamples: int = 1000,
    seed: int = 0,
) -> Paired | str:
    """The level after a step against the level before it: every item's prediction averaged
    over the commits (and replicates) of each side, then the paired bootstrap on the items. With
    one commit a side and several replicates, or items that do not average (clusters, class
    predictions), the paired test of the two commits nearest the step (`paired_test`)."""
    if len(before) == 1 and len(after) == 1:
        return paired_test(store, before[0], after[0], n_resamples, seed)
    sides = _every_items(store, before), _every_items(store, after)
    if isinstance(sides[0], str) or isinstance(sides[1], str):
        return sides[0] if isinstance(sides[0], str) else str(sides[1])
    pools = pool_items(sides[0]), pool_items(sides[1])
    if isinstance(pools[0], str) or isinstance(pools[1], str):
        return paired_test(store, before[-1], after[0], n_resamples, seed)
    try:
        one = paired_bootstrap(pools[1], pools[0], n_resamples, seed)
    except ValueError as exc:
        return f"not paired: {exc}"
    if math.isnan(one.p_value):
        return "no test: NaN or constant predictions"
    return Paired(one.delta, one.ci_low, one.ci_high, one.p_value, one.spread)
