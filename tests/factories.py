"""Small, valid result objects for tests that need results without running a suite."""

from __future__ import annotations

from typing import Any

from sbabench.run.keys import KeyParts
from sbabench.run.results import UnitResult
from sbabench.tasks.items import ItemScores


def key_parts(task: str = "T1", model: dict[str, Any] | None = None) -> KeyParts:
    """Key parts of a made-up unit."""
    return KeyParts.model_validate(
        {
            "model": {"spec": model or {"source": "upcycle"}, "weights": {"hub": "x"}},
            "aggregator": None,
            "task": {"name": task, "data": "made-up", "revision": "1", "split": "test"},
            "settings": {"dtype": "float32", "seed": 0},
            "scoring_version": 1,
        }
    )


def provenance() -> dict[str, Any]:
    """A provenance block with placeholder values."""
    return {
        "versions": {},
        "python": "3",
        "git_commit": None,
        "platform": "test",
        "device": "cpu",
        "device_name": "cpu",
        "settings": {},
        "command": "test",
    }


def result(
    aggregator: str,
    items: dict[str, ItemScores],
    score: float,
    *,
    task: str = "T1",
    model: str = "m",
    task_type: str = "STS",
    main_score_name: str = "cosine_spearman",
    parts: KeyParts | None = None,
    replicate: int = 0,
) -> UnitResult:
    """A unit result with the given per-item predictions and main score."""
    parts = (parts or key_parts(task)).model_copy(update={"replicate": replicate})
    return UnitResult(
        suite="s", model=model, aggregator=aggregator, task=task, replicate=replicate,
        key=parts.digest,
        key_parts=parts, task_type=task_type, split="test", main_score_name=main_score_name,
        main_score=score, scores={}, items=items, timing_s={}, provenance=provenance(),
    )  # fmt: skip


TINY_SUITE = """\
name: tiny
models:
  - name: moe
    source: upcycle
    experts: 4
    layers: [1]
    router: random
  - name: dense
    source: dense
aggregators: [linear, sba]
tasks: [LeeDocSTS]
settings: {device: cpu}
"""
"""A suite of three quick units (an upcycled MoE with two operators, a dense row, one task)."""

TINY_MOE_SUITE = TINY_SUITE.replace("  - name: dense\n    source: dense\n", "")
"""The tiny suite's MoE alone: two units (linear, sba)."""


def tiny_moe_with_workers(workers: int | str) -> str:
    """`TINY_MOE_SUITE` whose MoE asks for `workers` Ray workers of one CPU (line 8 of the file,
    the value at column 35)."""
    return TINY_MOE_SUITE.replace(
        "    router: random\n",
        f"    router: random\n    resources: {{cpus: 1, workers: {workers}}}\n",
    )
