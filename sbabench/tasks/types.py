"""The task-type registry: everything sbabench knows about a kind of task, in one record.

Every place that depends on the type of a task (suite validation of local files, which mteb
tasks are accepted, per-item collection, the statistic the paired bootstrap resamples, report
labels) reads the record; nothing else switches on a type's name. Adding a task type is one
module that calls `register` (and its test).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sbabench.registry import Registry


@dataclass(frozen=True)
class TaskType:
    """One kind of task sbabench can score."""

    name: str
    """Canonical name, as a local task's `type:` (e.g. `pair-classification`)."""
    aliases: tuple[str, ...]
    """Other accepted spellings (case-insensitive), e.g. mteb's `PairClassification`."""
    mteb_types: tuple[str, ...]
    """mteb task types (`TaskMetadata.type`) scored as this type."""
    columns: tuple[str, ...]
    """The columns a local file of this type maps (roles, e.g. text1, text2, score)."""
    item_kind: str
    """Tag of the stored per-item predictions (`ItemScores.kind`)."""
    collector: str | None
    """`module:function` computing per-item predictions from the embeddings once mteb has
    scored the task: fn(task, data, embedder, seed) (None: the type has a `keeper`)."""
    statistic: str
    """`module:function` of the per-item statistic the paired bootstrap resamples:
    fn(gold[n], predicted[n], weights[B, n]) -> [B], `weights[b, i]` how many times resample b
    drew item i (a float array of whole numbers; one row of ones: every item once)."""
    resampled: str
    """What one bootstrap draw resamples (`pairs`, `documents`)."""
    label: str
    """How reports name the type."""
    statistic_label: str
    """How reports name the resampled statistic."""
    steiger: bool = False
    """Whether the statistic is a correlation with gold, so Steiger's test of two dependent
    correlations applies."""
    binary_label: bool = False
    """Whether a local file's `label` column holds 0/1 (or true/false) labels."""
    local_layout: str | None = None
    """`module:function` reading a local task's files as an mteb task: fn(files, columns) ->
    `LocalLayout`, `files` the suite's file fields -> path (None: no local files of this type)."""
    files: tuple[str, ...] = ("path",)
    """The suite fields naming a local task's files (one table, or a BEIR folder's three)."""
    statistic_many: str | None = None
    """`module:function` computing `statistic` for R predictions of the same items at once:
    fn(gold[n], predictions[R][n], weights[B, n]) -> [R, B], equal to R calls of `statistic`
    and faster where the predictions share work (the gold ranks of a resample; one pass per
    clustering run). None: `statistic` once per prediction."""
    score_from_items: bool = True
    """Whether the main score is the statistic on all items (mteb's score recomputed from the
    stored items, to its 5-decimal rounding): `compare` refuses a file whose score they
    contradict. False for clustering, whose main score is mteb's own k-means runs."""
    keeper: str | None = None
    """`module:function` that makes a task keep mteb's own per-item scores while it evaluates:
    fn(task) -> None, called before mteb scores it. For metrics mteb computes per item and
    then averages (per-query retrieval metrics, each classifier's predictions), keeping them
    costs nothing and makes the mean over items mteb's main score by construction."""

    def collect_fn(self) -> Callable[..., Any]:
        """The collector (imported on first use)."""
        if self.collector is None:
            raise ValueError(f"task type {self.name!r} keeps mteb's items; it has no collector")
        return _load(self.collector)

    def keeper_fn(self) -> Callable[..., Any] | None:
        """The keeper (imported on first use), None for a type that collects."""
        return None if self.keeper is None else _load(self.keeper)

    def local_layout_fn(self) -> Callable[..., Any]:
        """The local-file layout (imported on first use)."""
        if self.local_layout is None:
            raise ValueError(f"task type {self.name!r} has no local-file layout")
        return _load(self.local_layout)

    def statistic_fn(self) -> Callable[..., Any]:
        """The resampled statistic (imported on first use)."""
        return _load(self.statistic)

    def statistic_many_fn(self) -> Callable[..., Any]:
        """The statistic of many predictions of the same items: fn(gold, predictions,
        weights) -> [R, B] (imported on first use; `statistic` per prediction when the type
        has no batched form)."""
        if self.statistic_many is not None:
            return _load(self.statistic_many)
        one = self.statistic_fn()

        def each(gold: Any, predictions: Any, weights: Any) -> Any:
            import numpy as np

            return np.stack([one(gold, p, weights) for p in predictions])

        return each


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _keys(task_type: TaskType) -> list[str]:
    return [k.lower() for k in (task_type.name, *task_type.aliases, *task_type.mteb_types)]


def _check(known: Mapping[str, TaskType], task_type: TaskType) -> None:
    if (task_type.collector is None) == (task_type.keeper is None):
        raise ValueError(f"task type {task_type.name!r} needs one of a collector and a keeper")
    taken = {key for other in known.values() for key in _keys(other)}
    clash = taken & set(_keys(task_type))
    if clash:
        raise ValueError(f"task type {task_type.name!r} clashes with a registered one: {clash}")


_REGISTRY: Registry[TaskType] = Registry("task type", lambda t: t.name, _check)


def register(task_type: TaskType) -> TaskType:
    """Add a task type; names, aliases and mteb types must not clash."""
    return _REGISTRY.register(task_type)


def unregister(name: str) -> None:
    """Remove a task type (for tests that register their own)."""
    _REGISTRY.unregister(name)


def task_types() -> Mapping[str, TaskType]:
    """Every registered task type by canonical name."""
    return _REGISTRY.entries()


def find(name: str) -> TaskType | None:
    """The type a name, alias or mteb type stands for (case-insensitive), or None."""
    wanted = name.lower()
    return next((t for t in task_types().values() if wanted in _keys(t)), None)


def by_item_kind(kind: str) -> TaskType | None:
    """The type whose per-item predictions carry this tag."""
    return next((t for t in task_types().values() if t.item_kind == kind), None)


def mteb_types() -> tuple[str, ...]:
    """Every mteb task type sbabench scores."""
    return tuple(m for t in task_types().values() for m in t.mteb_types)


_ITEMS = "sbabench.tasks.items"
_STATS = "sbabench.tasks.item_statistics"
_LOCAL = "sbabench.tasks.local"

register(
    TaskType(
        name="sts",
        steiger=True,
        local_layout=f"{_LOCAL}:sts_layout",
        aliases=("semantic-textual-similarity",),
        mteb_types=("STS",),
        columns=("text1", "text2", "score"),
        item_kind="sts",
        collector=f"{_ITEMS}:collect_sts",
        statistic=f"{_STATS}:row_spearman",
        statistic_many=f"{_STATS}:row_spearman_many",
        resampled="pairs",
        label="STS",
        statistic_label="Spearman of cosine vs gold",
    )
)
register(
    TaskType(
        name="clustering",
        local_layout=f"{_LOCAL}:clustering_layout",
        aliases=(),
        mteb_types=("Clustering",),
        columns=("text", "label"),
        item_kind="clusters",
        collector=f"{_ITEMS}:collect_clusters",
        statistic=f"{_STATS}:row_v_measure",
        statistic_many=f"{_STATS}:row_v_measure_many",
        resampled="documents",
        label="Clustering",
        statistic_label="mean V-measure of 10 seeded k-means runs",
        score_from_items=False,
    )
)
register(
    TaskType(
        name="pair-classification",
        binary_label=True,
        local_layout=f"{_LOCAL}:pairs_layout",
        aliases=("pair_classification", "pairs"),
        mteb_types=("PairClassification",),
        columns=("text1", "text2", "label"),
        item_kind="pairs",
        collector=f"{_ITEMS}:collect_pairs",
        statistic=f"{_STATS}:row_average_precision",
        resampled="pairs",
        label="PairClassification",
        statistic_label="cosine average precision",
    )
)
register(
    TaskType(
        name="retrieval",
        local_layout="sbabench.tasks.retrieval:retrieval_layout",
        files=("corpus", "queries", "qrels"),
        aliases=("beir",),
        mteb_types=("Retrieval",),
        columns=(),
        item_kind="queries",
        collector=None,
        keeper="sbabench.tasks.retrieval:keep_per_query",
        statistic=f"{_STATS}:row_mean",
        resampled="queries",
        label="Retrieval",
        statistic_label="mean over queries of the per-query main score (nDCG@10)",
    )
)
register(
    TaskType(
        name="classification",
        local_layout="sbabench.tasks.classification:classification_layout",
        aliases=(),
        mteb_types=("Classification",),
        columns=("text", "label"),
        item_kind="predictions",
        collector=None,
        keeper="sbabench.tasks.classification:keep_predictions",
        statistic=f"{_STATS}:row_accuracy",
        resampled="test items",
        label="Classification",
        statistic_label="accuracy, averaged over mteb's 10 classifier runs",
    )
)
register(
    TaskType(
        name="reranking",
        local_layout="sbabench.tasks.reranking:reranking_layout",
        aliases=(),
        mteb_types=("Reranking",),
        columns=("query", "positive", "negative"),
        item_kind="reranked",
        collector=None,
        keeper="sbabench.tasks.retrieval:keep_per_query",
        statistic=f"{_STATS}:row_mean",
        resampled="queries",
        label="Reranking",
        statistic_label="mean over queries of the per-query main score (MAP@1000)",
    )
)
