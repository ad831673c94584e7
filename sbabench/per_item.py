"""Per-item predictions of a scored unit, kept for paired significance tests.

STS and pair classification: the cosine similarity of every pair with its gold score or label.
Clustering: the gold label of every document mteb embedded and the clusters predicted by ten
seeded k-means runs (mteb's main score also averages ten runs; ours use their own seeds, so the
per-item statistic is close to, not identical with, mteb's V-measure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from sbabench.encoding import CachingEncoder

CLUSTER_RUNS = 10
"""k-means runs per clustering task, as in mteb."""


class ItemScores(BaseModel):
    """Per-item gold values and predictions of one subset of a task."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sts", "pairs", "clusters"]
    gold: list[float]
    """Gold similarity (sts), label 0/1 (pairs) or class index (clusters)."""
    predicted: list[float]
    """Cosine similarity (sts, pairs) or the first run's predicted cluster index (clusters)."""
    runs: list[list[float]] = []
    """Clusters only: predicted cluster index of every k-means run."""


def _rows(data: Any, columns: list[str]) -> dict[str, list[Any]]:
    # mteb keeps some v1 pair-classification datasets as one row holding lists.
    if len(data) == 1 and isinstance(data[0][columns[0]], list):
        return {c: list(data[0][c]) for c in columns}
    return {c: list(data[c]) for c in columns}


def _split_data(task: Any, subset: str, split: str) -> Any:
    if subset not in task.dataset and subset == "default":
        return task.dataset[split]
    return task.dataset[subset][split]


def _cosines(
    encoder: CachingEncoder, first: list[str], second: list[str], kinds: tuple[Any, Any]
) -> list[float]:
    a = encoder.embed(first, kinds[0])
    b = encoder.embed(second, kinds[1])
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return (a * b).sum(1).astype(float).tolist()


def collect(
    task: Any, encoder: CachingEncoder, split: str, subsets: list[str], seed: int
) -> dict[str, ItemScores]:
    """Per-item scores of every evaluated subset of an mteb task scored with `encoder`."""
    task_type = str(task.metadata.type)
    kinds = (getattr(task, "input1_prompt_type", None), getattr(task, "input2_prompt_type", None))
    items: dict[str, ItemScores] = {}
    for subset in subsets:
        data = _split_data(task, subset, split)
        if task_type == "STS":
            c1, c2 = (str(c) for c in task.column_names)
            rows = _rows(data, [c1, c2, "score"])
            predicted = _cosines(encoder, rows[c1], rows[c2], kinds)
            items[subset] = ItemScores(
                kind="sts", gold=[float(s) for s in rows["score"]], predicted=predicted
            )
        elif task_type == "PairClassification":
            c1, c2, label = task.input1_column_name, task.input2_column_name, task.label_column_name
            rows = _rows(data, [c1, c2, label])
            predicted = _cosines(encoder, rows[c1], rows[c2], kinds)
            items[subset] = ItemScores(
                kind="pairs", gold=[float(v) for v in rows[label]], predicted=predicted
            )
        elif task_type == "Clustering":
            items[subset] = _clusters(task, encoder, data, seed)
    return items


def _clusters(task: Any, encoder: CachingEncoder, data: Any, seed: int) -> ItemScores:
    from sklearn.cluster import MiniBatchKMeans

    text_col, label_col = str(task.input_column_name), str(task.label_column_name)
    texts, labels = list(data[text_col]), list(data[label_col])
    # Only the documents mteb embedded (it samples large corpora): the same items it scored.
    keep = [i for i, t in enumerate(texts) if encoder.has(t, None)] or list(range(len(texts)))
    gold_raw = [labels[i][0] if isinstance(labels[i], list) else labels[i] for i in keep]
    classes = {v: n for n, v in enumerate(sorted(set(map(str, gold_raw))))}
    gold = [float(classes[str(v)]) for v in gold_raw]
    vectors = encoder.embed([texts[i] for i in keep], None)
    runs = [
        MiniBatchKMeans(n_clusters=len(classes), batch_size=512, n_init=1, random_state=seed + run)
        .fit_predict(vectors)
        .astype(float)
        .tolist()
        for run in range(CLUSTER_RUNS)
    ]
    return ItemScores(kind="clusters", gold=gold, predicted=runs[0], runs=runs)
