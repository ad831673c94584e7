"""Per-item collection on the bundled tasks, with a stand-in encoder whose vectors we know."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sbabench.tasks import get_task
from sbabench.tasks.items import CLUSTER_RUNS, collect


class _KnownVectors:
    """Each text's vector is seeded by the text, so cosines can be recomputed here."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def vector(self, text: str) -> np.ndarray:
        seed = sum(map(ord, text)) % 2**31
        return np.random.default_rng(seed).normal(size=8)

    def embed(self, texts: list[str], prompt_type: Any = None) -> np.ndarray:
        self.asked.extend(texts)
        return np.stack([self.vector(t) for t in texts])

    def has(self, text: str, prompt_type: Any) -> bool:
        return True


def _loaded(name: str) -> Any:
    task = get_task(name)
    task.load_data()
    return task


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_sts_items_are_the_cosines_of_every_pair_with_gold_scores() -> None:
    task = _loaded("LeeDocSTS")
    embedder = _KnownVectors()
    items = collect(task, embedder, "test", ["default"], seed=0)["default"]
    data = task.dataset["test"]
    assert items.kind == "sts" and len(items.gold) == len(data) == 1225
    first, second = (str(c) for c in task.column_names)
    assert items.gold[:5] == [float(s) for s in data["score"][:5]]
    expected = _cosine(embedder.vector(data[first][0]), embedder.vector(data[second][0]))
    assert items.predicted[0] == pytest.approx(expected, abs=1e-9)


def test_pair_items_carry_binary_labels() -> None:
    items = collect(_loaded("AIABDEDuplicates"), _KnownVectors(), "test", ["default"], seed=0)
    pairs = items["default"]
    assert pairs.kind == "pairs" and set(pairs.gold) == {0.0, 1.0}
    assert len(pairs.predicted) == len(pairs.gold) == 1680
    assert all(-1.0 - 1e-9 <= p <= 1.0 + 1e-9 for p in pairs.predicted)


def test_cluster_items_hold_every_seeded_run_and_are_reproducible() -> None:
    task = _loaded("PangLeePolarityClustering")
    first = collect(task, _KnownVectors(), "test", ["default"], seed=0)["default"]
    again = collect(task, _KnownVectors(), "test", ["default"], seed=0)["default"]
    assert first.kind == "clusters" and len(first.runs) == CLUSTER_RUNS
    assert first.predicted == first.runs[0] and set(first.gold) == {0.0, 1.0}
    assert first.runs == again.runs  # seeded k-means
    other = collect(task, _KnownVectors(), "test", ["default"], seed=5)["default"]
    assert other.runs[0] == first.runs[5]  # run r uses seed + r


def test_a_task_of_an_unregistered_type_has_no_items() -> None:
    class Task:
        class metadata:
            type = "Retrieval"

    assert collect(Task(), _KnownVectors(), "test", ["default"], seed=0) == {}
