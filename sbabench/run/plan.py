"""Planning a run: every unit of a suite with its key, and which are already done.

Planning loads no model and imports neither torch nor mteb for the built-in tasks.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sbabench.aggregators import ResolvedAggregator, resolve
from sbabench.digests import keep_facts_in
from sbabench.errors import SbabenchError
from sbabench.geometry.stats import GEOMETRY_VERSION, covers
from sbabench.models.machine_cache import MachineCache
from sbabench.paths import confined, name_problem
from sbabench.run.keys import KeyParts, unit_key_parts
from sbabench.run.results import UnitResult, load_result, result_path
from sbabench.suite import Suite, Unit, expand

LOCKS = Path(".cache") / "locks"
"""Where, inside a results folder, the per-unit locks live (never beside result files)."""


@dataclass(frozen=True)
class PlannedUnit:
    """A unit with its key and where its result (and its lock) live."""

    unit: Unit
    """The model x operator x task."""
    aggregator: ResolvedAggregator | None
    """The resolved operator; None for a dense model."""
    key_parts: KeyParts
    """Everything its score depends on."""
    path: Path
    """Its result file."""
    lock: Path
    """Its lock file (under `<results>/.cache/locks/`)."""

    @cached_property
    def key(self) -> str:
        """The digest of the key parts."""
        return self.key_parts.digest

    @property
    def label(self) -> str:
        """`model/aggregator/task`."""
        return self.unit.label


@dataclass
class Plan:
    """Which units run and which are already done."""

    todo: list[PlannedUnit] = field(default_factory=list)
    """Units to compute, in suite order (grouped by model, then operator)."""
    done: list[tuple[PlannedUnit, UnitResult]] = field(default_factory=list)
    """Units whose valid result exists (without its per-item arrays: a plan of many large
    finished units holds none of their items; they stay in the files)."""
    invalid: list[str] = field(default_factory=list)
    """Result files that exist but are corrupt or stale (they will be recomputed)."""


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1 <= I <= N) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SbabenchError(f"bad shard {text!r}", fix="write it as I/N, e.g. 2/8") from None
    if not 1 <= index <= count:
        raise SbabenchError(f"bad shard {text!r}: need 1 <= I <= N", fix="e.g. --shard 1/4")
    return index, count


def in_shard(label: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic assignment of a unit to one of N shards (stable when units are added)."""
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha256(label.encode()).hexdigest(), 16) % count == index - 1


def _lacks_probes(suite: Suite, unit: Unit, result: UnitResult) -> bool:
    """Whether the suite asks for geometry probes (or probe settings) an MoE unit's result lacks,
    or has from an older geometry version (a probe that since measures more)."""
    spec = suite.geometry
    wanted = bool(spec.probes and spec.tokens)
    stored = result.geometry.model_dump() if result.geometry else None
    current = stored is not None and stored.get("version") == GEOMETRY_VERSION
    return wanted and unit.model.is_moe and not (current and covers(stored, spec))


def _why_not_done(planned: PlannedUnit, existing: UnitResult | None, force: bool) -> str | None:
    """None if `existing` is this unit's valid, current result; else why it must be computed."""
    if force:
        return ""
    if existing is None:
        return f"{planned.path} (corrupt or truncated)" if planned.path.exists() else ""
    if existing.key != planned.key:
        return f"{planned.path} (stale: its key no longer matches)"
    return None


def finished(suite: Suite, planned: PlannedUnit) -> UnitResult | None:
    """The unit's valid, current result on disk (with the geometry probes the suite asks for),
    or None."""
    existing = load_result(planned.path)
    if existing is None or existing.key != planned.key:
        return None
    return None if _lacks_probes(suite, planned.unit, existing) else existing


def plan_unit(
    suite: Suite, unit: Unit, aggregator: ResolvedAggregator | None, root: Path
) -> PlannedUnit:
    """One unit's key and paths."""
    path, lock = _unit_paths(suite, unit, root)
    return PlannedUnit(unit, aggregator, unit_key_parts(suite, unit, aggregator), path, lock)


def _unit_paths(suite: Suite, unit: Unit, root: Path) -> tuple[Path, Path]:
    """The unit's result file and lock, each checked to stay under `root` once symbolic links
    are resolved, and to be no link itself (its error file too): a suite is data, and its
    names become these paths. The schema has checked the names; a suite built in Python may
    not have been through it, so they are checked again."""
    named = {"suite": suite.name, "model": unit.model.name, "aggregator": unit.aggregator_key}
    for field_name, value in {**named, "task": unit.task}.items():
        problem = name_problem(value)
        if problem is not None:
            raise SbabenchError(
                f"{field_name} name {problem}", where=unit.label, fix="rename it in the suite"
            )
    relative = result_path(Path(), suite.name, unit.model_id, unit.aggregator_key, unit.task)
    path = confined(root, *relative.parts)
    confined(root, *relative.with_name(f"{unit.task}.error.json").parts)
    lock = confined(root, *LOCKS.parts, *relative.with_suffix(".lock").parts)
    return path, lock


def selected_units(suite: Suite, only: str | None, shard: tuple[int, int] | None) -> list[Unit]:
    """The suite's units in this shard whose label matches the `only` glob."""
    return [
        unit
        for unit in expand(suite)
        if in_shard(unit.label, shard) and (not only or fnmatch.fnmatch(unit.label, only))
    ]


def plan_suite(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
) -> Plan:
    """Decide, without loading any model, which units need computing.

    `only` is a glob over unit labels (model/aggregator/task, model@rR/aggregator/task for
    replicate R > 0) selecting the units; `force`
    recomputes the selected units even when done.
    """
    root = Path(results_dir)
    plan = Plan()
    # Code digests key every unit: what parsing each source file found is kept per machine, so
    # a warm re-run reads it instead of parsing every module again.
    keep_facts_in(MachineCache().store("code"))
    # One resolution per operator, not per unit: a user operator is imported and probed.
    operators = {a.key: resolve(a.name, a.options) for a in suite.aggregators}
    for unit in selected_units(suite, only, shard):
        aggregator = None if unit.aggregator is None else operators[unit.aggregator.key]
        planned = plan_unit(suite, unit, aggregator, root)
        existing = load_result(planned.path)
        reason = _why_not_done(planned, existing, force)
        if reason is None and existing is not None and _lacks_probes(suite, unit, existing):
            reason = f"{planned.path} (geometry probes requested)"
        if reason is None and existing is not None:
            plan.done.append((planned, existing.without_items()))
            continue
        if reason:
            plan.invalid.append(reason)
        plan.todo.append(planned)
    return plan
