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

from dataclasses import dataclass

import numpy as np

from sbabench.analysis.stats import paired_bootstrap
from sbabench.analysis.two_level import p_value, two_level_test
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
    return p_value(abs(float(values.mean())), float(values.var(ddof=1)) / count, 0.0, count - 1)
