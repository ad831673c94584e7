"""How many Ray workers each model of a run gets (`resources.workers`).

A number is capped by the model's units still to compute (a worker with no unit would load the
model for nothing) and by how many such workers the cluster's nodes hold at all (more would wait
for resources that never come; a note says so). `auto` takes as many as the cluster's free
resources hold when the run starts, at most one per unit and at least one. Models claim in suite
order, so a later `auto` model counts what the earlier ones took; a worker that does not fit yet
waits for Ray to free room (the driver gives units only to workers that started).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from sbabench.models.spec import Resources
from sbabench.run.plan import PlannedUnit
from sbabench.run.progress import Event, EventKind, ProgressCallback
from sbabench.suite import Suite


def fitting(need: Resources, offer: Mapping[str, float]) -> int:
    """How many workers that each need `need` fit in `offer` (Ray's resource names)."""
    # a hair of slack: 0.3 GPUs held by workers of 0.1 is 2.9999999999999996 workers in floats
    counts = [math.floor(offer.get("CPU", 0.0) / need.cpus + 1e-9)]
    if need.gpus > 0:
        counts.append(math.floor(offer.get("GPU", 0.0) / need.gpus + 1e-9))
    return max(0, min(counts))


@dataclass
class Cluster:
    """What a Ray cluster offers: each live node's resources, and what is free now."""

    nodes: list[dict[str, float]]
    """Every live node's total resources (`ray.nodes()`)."""
    free: dict[str, float] = field(default_factory=dict)
    """What no actor or task holds now (`ray.available_resources()`); claims are taken off."""

    def room(self, need: Resources) -> int:
        """How many workers that each need `need` the cluster holds when nothing else runs."""
        return sum(fitting(need, node) for node in self.nodes)

    def claim(self, need: Resources, count: int) -> None:
        """Take `count` workers' resources off what is free."""
        self.free["CPU"] = self.free.get("CPU", 0.0) - count * need.cpus
        self.free["GPU"] = self.free.get("GPU", 0.0) - count * need.gpus


def by_model(units: list[PlannedUnit]) -> dict[str, list[PlannedUnit]]:
    """The units of each model instance (`model_id`), models and units in suite order."""
    groups: dict[str, list[PlannedUnit]] = {}
    for planned in units:
        groups.setdefault(planned.unit.model_id, []).append(planned)
    return groups


def worker_counts(
    suite: Suite, units: list[PlannedUnit], cluster: Cluster, progress: ProgressCallback
) -> dict[str, int]:
    """How many workers each model instance of `units` gets (see the module's docstring)."""
    counts = {}
    for model_id, group in by_model(units).items():
        model = group[0].unit.model
        need, where = model.resources, _where(suite, model.name)
        if need.workers == "auto":
            count = max(1, min(len(group), fitting(need, cluster.free)))
            progress(Event(EventKind.NOTE, message=f"{where} is auto: {count} for {model_id}"))
        else:
            count = min(need.workers, len(group))
            if count > cluster.room(need):
                count = max(1, cluster.room(need))
                progress(Event(EventKind.NOTE, message=_too_many(where, need, count)))
        cluster.claim(need, count)
        counts[model_id] = count
    return counts


def _where(suite: Suite, model: str) -> str:
    index = [m.name for m in suite.models].index(model)
    return f"suite {suite.name}: models[{index}].resources.workers"


def _too_many(where: str, need: Resources, room: int) -> str:
    return (
        f"{where}: {need.workers} workers of {need.cpus:g} CPUs / {need.gpus:g} GPUs do not fit "
        f"the Ray cluster, which holds {room}: starting {room} (lower `workers`, or use auto)"
    )
