"""How often the item-only and the two-level test reject on simulated data: their false-positive
rate where operator B equals A in expectation, and their power where B is better.

The simulation mirrors an STS task scored by Spearman's rho: n items with gold g_i and a
difficulty c_i shared by every model (the test set's own luck). In replicate r, operator X
predicts g_i + c_i + o_Xi + s_rX e_rXi; o_Xi is the operator's own error on item i, the same in
every replicate (SD `interaction`: the test items' variance that replicates cannot average
away); its noise scale s_rX = exp(sigma_rep z_rX) is the replicate's luck (its seeds), drawn
alike for A and B under the null, and e_rXi is per-item noise of that replicate. With
`effect` > 0, B's noise scale is multiplied by exp(-effect) in every replicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sbabench.analysis.stats import paired_bootstrap
from sbabench.analysis.two_level import two_level_test
from sbabench.analysis.uncertainty import Spread
from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult
from sbabench.tasks.items import ItemScores


@dataclass(frozen=True)
class Setting:
    """One simulated world."""

    name: str
    sigma_rep: float
    """SD of the log noise scale between replicates (the replicate variance)."""
    items: int
    """Test items."""
    difficulty: float = 0.5
    """SD of the item difficulty shared by every model and replicate."""
    interaction: float = 0.0
    """SD of each operator's own per-item error, shared by its replicates."""


REPLICATE_DOMINATED = Setting("replicate variance dominates", sigma_rep=0.25, items=400)
ITEM_DOMINATED = Setting("item variance dominates", sigma_rep=0.01, items=120)
SHARED_ITEMS = Setting(
    "items shared by replicates dominate", sigma_rep=0.01, items=60, interaction=1.0
)
"""Where a test over replicates alone (a t-test of their differences) over-rejects: the
operators' per-item errors repeat in every replicate, so only resampling items sees them."""


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


def _world(
    setting: Setting, replicates: int, effect: float, rng: np.random.Generator
) -> tuple[list[dict[str, ItemScores]], list[dict[str, ItemScores]]]:
    """Per-item scores of B and A in each replicate of one simulated benchmark."""
    gold = rng.normal(size=setting.items)
    shared = gold + setting.difficulty * rng.normal(size=setting.items)
    own = {side: setting.interaction * rng.normal(size=setting.items) for side in ("b", "a")}
    sides: dict[str, list[dict[str, ItemScores]]] = {"b": [], "a": []}
    for _ in range(replicates):
        for side, shift in (("b", effect), ("a", 0.0)):
            scale = np.exp(setting.sigma_rep * rng.normal() - shift)
            predicted = shared + own[side] + scale * rng.normal(size=setting.items)
            scores = ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())
            sides[side].append({"test": scores})
    return sides["b"], sides["a"]


def rejection_rates(
    setting: Setting,
    replicates: int,
    trials: int,
    *,
    effect: float = 0.0,
    alpha: float = 0.05,
    n_resamples: int = 300,
    seed: int = 0,
) -> tuple[Rate, Rate, Rate]:
    """(item-only test on replicate 0, two-level test on all replicates, t-test of the
    replicates' differences alone): how often each rejects at `alpha` over `trials` simulated
    benchmarks."""
    rng = np.random.default_rng(seed)
    item_only = two_level = replicates_only = 0
    for trial in range(trials):
        b, a = _world(setting, replicates, effect, rng)
        item_only += paired_bootstrap(b[0], a[0], n_resamples, seed=trial).p_value < alpha
        test = two_level_test(b, a, n_resamples, seed=trial)
        two_level += test.p_value < alpha
        replicates_only += replicate_t_test(test.replicate_deltas) < alpha
    return Rate(item_only, trials), Rate(two_level, trials), Rate(replicates_only, trials)


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
