"""Per-item predictions of a scored unit, kept for paired significance tests.

STS and pair classification: the cosine similarity of every pair with its gold score or label.
Clustering: the gold label of every document mteb embedded and the clusters predicted by ten
seeded k-means runs (mteb's main score also averages ten runs; ours use their own seeds, so the
per-item statistic is close to, not identical with, mteb's V-measure).

Retrieval, reranking and classification keep mteb's own per-item scores instead (the type's
keeper, set up by `prepare` before mteb scores the task): the per-query value of the main
score, and each classifier run's predicted labels.

Which collector or keeper runs is the task type's (see `sbabench.tasks.types`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from sbabench.tasks.types import find

CLUSTER_RUNS = 10
"""k-means runs per clustering task, as in mteb."""


class ItemScores(BaseModel):
    """Per-item gold values and predictions of one subset of a task."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """The task type's item tag: `sts`, `pairs`, `clusters`, `queries`, ... (see
    `sbabench.tasks.types`)."""
    gold: list[float]
    """Gold similarity (sts), label 0/1 (pairs), class index (clusters, predictions) or the
    number of relevant documents of each query (queries, reranked)."""
    predicted: list[float]
    """Cosine similarity (sts, pairs), the first run's predicted cluster or class index
    (clusters, predictions), or each query's value of the main score (queries, reranked)."""
    runs: list[list[float]] = []
    """Clusters and predictions: the predicted index of every k-means or classifier run."""


class Embedder(Protocol):
    """What collection needs from an encoder: embeddings of texts, and which it has seen."""

    def embed(self, texts: list[str], prompt_type: Any = None) -> np.ndarray:
        """Embeddings of plain texts (rows follow the input)."""

    def has(self, text: str, prompt_type: Any) -> bool:
        """Whether `text` was embedded for this prompt type."""


def _rows(data: Any, columns: list[str]) -> dict[str, list[Any]]:
    # mteb keeps some v1 pair-classification datasets as one row holding lists.
    if len(data) == 1 and isinstance(data[0][columns[0]], list):
        return {c: list(data[0][c]) for c in columns}
    return {c: list(data[c]) for c in columns}


def _split_data(task: Any, subset: str, split: str) -> Any:
    if subset not in task.dataset and subset == "default":
        return task.dataset[split]
    return task.dataset[subset][split]


def _cosines(task: Any, embedder: Embedder, first: list[str], second: list[str]) -> list[float]:
    kinds = (getattr(task, "input1_prompt_type", None), getattr(task, "input2_prompt_type", None))
    a = embedder.embed(first, kinds[0])
    b = embedder.embed(second, kinds[1])
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return (a * b).sum(1).astype(float).tolist()


_KEPT = "sbabench_items"
"""The task attribute where a keeper puts each subset's items as mteb scores it."""


def prepare(task: Any) -> None:
    """Before mteb scores `task`: have it keep its per-item scores, if its type keeps them."""
    task_type = find(str(task.metadata.type))
    keeper = None if task_type is None else task_type.keeper_fn()
    if keeper is not None:
        setattr(task, _KEPT, {})
        keeper(task)


def keep(task: Any, subset: str, items: ItemScores) -> None:
    """Record the items of one subset mteb has just scored (called by keepers)."""
    getattr(task, _KEPT)[subset] = items


def collect(
    task: Any, embedder: Embedder, split: str, subsets: list[str], seed: int
) -> dict[str, ItemScores]:
    """Per-item scores of every evaluated subset of an mteb task scored with `embedder` (for a
    type that keeps mteb's own: those kept since `prepare`, none for a subset that kept none)."""
    task_type = find(str(task.metadata.type))
    if task_type is None:
        return {}
    if task_type.keeper is not None:
        kept: dict[str, ItemScores] = getattr(task, _KEPT, {})
        return {s: kept[s] for s in subsets if s in kept}
    collector = task_type.collect_fn()
    return {s: collector(task, _split_data(task, s, split), embedder, seed) for s in subsets}


def collect_sts(task: Any, data: Any, embedder: Embedder, seed: int) -> ItemScores:
    """Cosine of every pair, with its gold similarity."""
    c1, c2 = (str(c) for c in task.column_names)
    rows = _rows(data, [c1, c2, "score"])
    predicted = _cosines(task, embedder, rows[c1], rows[c2])
    return ItemScores(kind="sts", gold=[float(s) for s in rows["score"]], predicted=predicted)


def collect_pairs(task: Any, data: Any, embedder: Embedder, seed: int) -> ItemScores:
    """Cosine of every pair, with its 0/1 label."""
    c1, c2, label = task.input1_column_name, task.input2_column_name, task.label_column_name
    rows = _rows(data, [c1, c2, label])
    predicted = _cosines(task, embedder, rows[c1], rows[c2])
    return ItemScores(kind="pairs", gold=[float(v) for v in rows[label]], predicted=predicted)


def collect_clusters(task: Any, data: Any, embedder: Embedder, seed: int) -> ItemScores:
    """Gold class and ten seeded k-means clusterings of every document mteb embedded."""
    from sklearn.cluster import MiniBatchKMeans

    text_col, label_col = str(task.input_column_name), str(task.label_column_name)
    texts, labels = list(data[text_col]), list(data[label_col])
    # Only the documents mteb embedded (it samples large corpora): the same items it scored.
    keep = [i for i, t in enumerate(texts) if embedder.has(t, None)] or list(range(len(texts)))
    gold_raw = [labels[i][0] if isinstance(labels[i], list) else labels[i] for i in keep]
    classes = {v: n for n, v in enumerate(sorted(set(map(str, gold_raw))))}
    gold = [float(classes[str(v)]) for v in gold_raw]
    vectors = embedder.embed([texts[i] for i in keep], None)
    runs = [
        MiniBatchKMeans(n_clusters=len(classes), batch_size=512, n_init=1, random_state=seed + run)
        .fit_predict(vectors)
        .astype(float)
        .tolist()
        for run in range(CLUSTER_RUNS)
    ]
    return ItemScores(kind="clusters", gold=gold, predicted=runs[0], runs=runs)
