"""How often compare's tests reject on simulated benchmarks: their false-positive rate where
operator B equals A in expectation, and their power where B is better.

A simulated benchmark has n test items and R replicates (seeds) of two operators. Item i's
error for operator X in replicate r is

    e_Xri = exp(-effect_X) * (difficulty * c_i + interaction * o_Xi + s_Xr * z_Xri)

c_i: the item's difficulty, shared by every operator and replicate (the test set's luck);
o_Xi: the operator's own error on item i, the same in every replicate (what replicates cannot
average away); s_Xr = exp(seed_sd * w_Xr): the replicate's luck (its seeds), drawn alike for A
and B under the null; z_Xri: per-item noise of that replicate (all standard normals). Under the
alternative B's errors, all of them, are exp(-effect) times A's (`EFFECT`: a fixed relative
improvement, the same for every statistic and world). The per-item predictions of each
statistic (`STATISTICS`, the item kinds compare tests) are made from the errors:

- sts: gold g_i ~ N(0, 1), prediction g_i + e (Spearman's rho with gold);
- pairs: label i mod 2, score 1.5 label + e (average precision);
- clusters: class i mod 5, predicted right when |e| < 1, else one of the other four at random
  (V-measure);
- queries: a per-query value exp(-e^2 / 2) in (0, 1] (their mean, like nDCG@10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sbabench.analysis.sequential import Design, decision, equivalence_p
from sbabench.analysis.stats import paired_bootstrap
from sbabench.analysis.two_level import two_level_test
from sbabench.analysis.uncertainty import Spread
from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult
from sbabench.tasks.items import ItemScores


@dataclass(frozen=True)
class World:
    """Where the variance of a simulated benchmark comes from (see the module's docstring)."""

    name: str
    seed_sd: float
    """SD of the log noise scale between replicates (the seeds' variance)."""
    interaction: float
    """SD of each operator's own per-item error, shared by its replicates."""
    noise: float = 1.0
    """SD of the per-item noise of one replicate (before its scale)."""
    difficulty: float = 0.5
    """SD of the item difficulty shared by every operator and replicate."""


SEED_DOMINATED = World("seeds dominate", seed_sd=0.25, interaction=0.0)
ITEM_DOMINATED = World("items dominate", seed_sd=0.01, interaction=0.0)
SHARED_ITEMS = World("per-item errors shared by replicates", seed_sd=0.01, interaction=1.0)
"""Where a test over replicates alone (a t-test of their differences) over-rejects: the
operators' per-item errors repeat in every replicate, so only resampling items sees them."""
MIXED = World("seeds and items alike", seed_sd=0.1, interaction=0.5)
"""The seeds' and the items' variance of the difference of about equal size at 50 items."""
WORLDS = (SEED_DOMINATED, ITEM_DOMINATED, SHARED_ITEMS, MIXED)

STATISTICS = ("sts", "pairs", "clusters", "queries")
"""The simulated statistics, by item kind: Spearman's rho, average precision, V-measure, a
mean of per-query values."""
EFFECT = 0.25
"""The alternative: B's per-item errors are exp(-0.25) = 0.78 times A's."""
CLASSES = 5
"""Classes of the simulated clustering task."""


@dataclass(frozen=True)
class Rate:
    """A rejection rate with its 95% Wilson interval."""

    rejections: int
    trials: int

    @property
    def rate(self) -> float:
        """Share of trials rejected."""
        return self.rejections / self.trials

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson score interval of the rate."""
        n, p, z = self.trials, self.rate, 1.959963984540054
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return float(centre - half), float(centre + half)


def _gold(statistic: str, items: int, rng: np.random.Generator) -> np.ndarray:
    if statistic == "sts":
        return rng.normal(size=items)
    if statistic == "pairs":
        return (np.arange(items) % 2).astype(float)
    if statistic == "clusters":
        return (np.arange(items) % CLASSES).astype(float)
    if statistic == "queries":
        return np.ones(items)
    raise ValueError(f"unknown statistic {statistic!r}: one of {', '.join(STATISTICS)}")


def _predicted(
    statistic: str, gold: np.ndarray, error: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if statistic == "sts":
        return gold + error
    if statistic == "pairs":
        return 1.5 * gold + error
    if statistic == "clusters":
        other = (gold + 1 + rng.integers(0, CLASSES - 1, len(gold))) % CLASSES
        return np.where(np.abs(error) < 1, gold, other)
    return np.exp(-(error**2) / 2)


def simulate(
    world: World,
    statistic: str,
    items: int,
    replicates: int,
    effect: float,
    rng: np.random.Generator,
) -> tuple[list[dict[str, ItemScores]], list[dict[str, ItemScores]]]:
    """Per-item scores of B and A in each replicate of one simulated benchmark."""
    gold = _gold(statistic, items, rng)
    shared = world.difficulty * rng.normal(size=items)
    own = {side: world.interaction * rng.normal(size=items) for side in ("b", "a")}
    sides: dict[str, list[dict[str, ItemScores]]] = {"b": [], "a": []}
    for _ in range(replicates):
        for side, shift in (("b", effect), ("a", 0.0)):
            scale = math.exp(world.seed_sd * rng.normal())
            noise = scale * world.noise * rng.normal(size=items)
            error = math.exp(-shift) * (shared + own[side] + noise)
            predicted = _predicted(statistic, gold, error, rng)
            scores = ItemScores(kind=statistic, gold=gold.tolist(), predicted=predicted.tolist())
            sides[side].append({"test": scores})
    return sides["b"], sides["a"]


Test = Callable[[list[dict[str, ItemScores]], list[dict[str, ItemScores]], int, int], float]
"""A test's p-value of B against A from their replicates, resamples and a seed."""


def item_only_p(
    b: list[dict[str, ItemScores]], a: list[dict[str, ItemScores]], n_resamples: int, seed: int
) -> float:
    """The item test on the first replicate alone (what compare does with one replicate)."""
    return paired_bootstrap(b[0], a[0], n_resamples, seed=seed).p_value


def two_level_p(
    b: list[dict[str, ItemScores]], a: list[dict[str, ItemScores]], n_resamples: int, seed: int
) -> float:
    """The two-level test over all replicates and the items (compare's, R >= 2)."""
    return two_level_test(b, a, n_resamples, seed=seed).p_value


def replicates_only_p(
    b: list[dict[str, ItemScores]], a: list[dict[str, ItemScores]], n_resamples: int, seed: int
) -> float:
    """A one-sample t-test of the replicates' differences (items taken as fixed)."""
    deltas = two_level_test(b, a, n_resamples, seed=seed).replicate_deltas
    return replicate_t_test(deltas)


def rates(
    world: World,
    replicates: int,
    trials: int,
    tests: tuple[Test, ...] = (item_only_p, two_level_p, replicates_only_p),
    *,
    statistic: str = "sts",
    items: int = 50,
    effect: float = 0.0,
    alpha: float = 0.05,
    n_resamples: int = 300,
    seed: int = 0,
) -> tuple[Rate, ...]:
    """How often each of `tests` rejects at `alpha` over `trials` simulated benchmarks of
    `world` (the same benchmarks for every test)."""
    rng = np.random.default_rng(seed)
    rejections = [0] * len(tests)
    for trial in range(trials):
        b, a = simulate(world, statistic, items, replicates, effect, rng)
        for i, test in enumerate(tests):
            rejections[i] += test(b, a, n_resamples, trial) < alpha
    return tuple(Rate(count, trials) for count in rejections)


def replicate_t_test(deltas: tuple[float, ...]) -> float:
    """The one-sample t-test's p-value of the replicates' differences (items taken as fixed)."""
    values = np.asarray(deltas)
    count = len(values)
    spread = Spread(0.0, math.inf, float(values.var(ddof=1)) / count, count - 1)
    return spread.p_two_sided(float(values.mean()))


def _gate_unit(task: str, gold: np.ndarray, values: np.ndarray, template: UnitResult) -> UnitResult:
    """A retrieval-like unit: per-query values, the main score their mean."""
    items = {"default": ItemScores(kind="queries", gold=gold.tolist(), predicted=values.tolist())}
    return template.model_copy(
        update={"task": task, "items": items, "main_score": float(values.mean())}
    )


def _gate_template() -> UnitResult:
    parts = KeyParts.model_validate(
        {
            "model": {"spec": {"source": "upcycle"}, "weights": {"hub": "simulated"}},
            "aggregator": None,
            "task": {"name": "T", "data": "simulated", "revision": "1", "split": "test"},
            "settings": {"dtype": "float32", "seed": 0},
            "scoring_version": 1,
        }
    )
    return UnitResult.model_validate(
        {
            "suite": "simulated", "model": "m", "aggregator": "sba", "task": "T",
            "key": parts.digest, "key_parts": parts, "task_type": "Retrieval", "split": "test",
            "main_score_name": "ndcg_at_10", "main_score": 0.0, "scores": {}, "timing_s": {},
            "provenance": {
                "versions": {}, "python": "3", "git_commit": None, "platform": "simulated",
                "device": "cpu", "device_name": "cpu", "settings": {}, "command": "simulated",
            },
        }
    )  # fmt: skip


def gate_regression_rate(
    units: int,
    suites: int,
    *,
    items: int = 50,
    drop: float = 0.0,
    dropped: int = 0,
    alpha: float = 0.05,
    max_drop: float = 0.005,
    n_resamples: int = 200,
    seed: int = 0,
    workers: int = 1,
) -> Rate:
    """How often the gate (`compare_results` against a baseline, its verdict) says REGRESSION
    over `suites` simulated suites of `units` units. Each unit has `items` queries, each with a
    difficulty shared by both sides (SD 0.15) and per-side noise (SD 0.1): a per-query mean
    statistic like retrieval's nDCG. The first `dropped` units' candidates are lower by `drop`
    on every query; the others equal the baseline in expectation (under no change, every
    REGRESSION is a false one). `workers` processes share the suites (each its own seed)."""
    args = (units, items, drop, dropped, alpha, max_drop, n_resamples)
    if workers <= 1:
        return Rate(_gate_regressions(*args, suites, seed), suites)
    from concurrent.futures import ProcessPoolExecutor

    shares = [suites // workers + (w < suites % workers) for w in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        jobs = [
            pool.submit(_gate_regressions, *args, n, seed * 1000 + w) for w, n in enumerate(shares)
        ]
        return Rate(sum(job.result() for job in jobs), suites)


def _gate_regressions(
    units: int,
    items: int,
    drop: float,
    dropped: int,
    alpha: float,
    max_drop: float,
    n_resamples: int,
    suites: int,
    seed: int,
) -> int:
    from sbabench.analysis.compare import compare_results  # compare imports this module's layer

    rng = np.random.default_rng(seed)
    template = _gate_template()
    gold = np.ones(items)
    regressions = 0
    for _ in range(suites):
        base, new = [], []
        for u in range(units):
            difficulty = rng.normal(0.6, 0.15, items)
            shift = drop if u < dropped else 0.0
            base.append(_gate_unit(f"T{u}", gold, difficulty + rng.normal(0, 0.1, items), template))
            noise = rng.normal(0, 0.1, items)
            new.append(_gate_unit(f"T{u}", gold, difficulty + noise - shift, template))
        comparison = compare_results(
            new, against=base, n_resamples=n_resamples, alpha=alpha, max_drop=max_drop,
            seed=int(rng.integers(2**31)),
        )  # fmt: skip
        regressions += bool(comparison.verdict().regressions)
    return regressions


@dataclass(frozen=True)
class SequentialRates:
    """How a run until decided fares on simulated benchmarks, beside two fixed plans."""

    sequential: Rate
    """Decided better or worse at some look (the design's boundary)."""
    within: Rate
    """Decided within the effect of interest at some look."""
    naive: Rate
    """Significant at alpha at any look (testing after every round, no correction)."""
    fixed: Rate
    """Significant at alpha with the design's maximum of replicates, fixed in advance."""
    replicates: float
    """Mean replicates the sequential run used (it stops when decided)."""


def sequential_rates(
    world: World,
    design: Design,
    trials: int,
    *,
    statistic: str = "sts",
    items: int = 50,
    effect: float = 0.0,
    n_resamples: int = 200,
    seed: int = 0,
) -> SequentialRates:
    """One comparison (one operator, one task) run until decided by `design`, over `trials`
    simulated benchmarks of `world` with a true `effect` (`simulate`). Each benchmark draws the
    design's maximum of replicates; a look at R replicates sees the first R."""
    rng = np.random.default_rng(seed)
    decided = within = naive = fixed = 0
    used = 0
    looks = design.looks()
    for trial in range(trials):
        b, a = simulate(world, statistic, items, design.maximum, effect, rng)
        stopped_at, any_naive, last_p = design.maximum, False, math.nan
        outcome = "open"
        for look, count in enumerate(looks):
            test = two_level_test(b[:count], a[:count], n_resamples, seed=trial)
            last_p = test.p_value
            any_naive |= test.p_value < design.alpha
            if outcome != "open":
                continue
            p_within = None
            if design.effect is not None:
                p_within = equivalence_p(test.spread, test.delta, design.effect)
            outcome = decision(test.p_value, p_within, test.delta, design.increment(look))
            if outcome != "open":
                stopped_at = count
        decided += outcome in ("better", "worse")
        within += outcome == "within"
        naive += any_naive
        fixed += last_p < design.alpha
        used += stopped_at
    return SequentialRates(
        Rate(decided, trials), Rate(within, trials), Rate(naive, trials), Rate(fixed, trials),
        used / trials,
    )  # fmt: skip
