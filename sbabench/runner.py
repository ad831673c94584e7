"""Run a suite: plan the units, skip finished ones, compute the rest with models loaded lazily.

Guarantees: a result is read back only if its file is valid and its key matches; every write is
atomic; a unit is computed by one process at a time (a lock per unit); a failing unit is
recorded and the others go on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from rich.console import Console

from sbabench.aggregators import ResolvedAggregator, resolve
from sbabench.errors import SbabenchError
from sbabench.keys import embedding_space, unit_key_parts
from sbabench.results import (
    UnitResult,
    key_digest,
    load_result,
    result_path,
    save_result,
    write_atomic,
)
from sbabench.suite import GeometrySpec, Suite, Unit, expand

if TYPE_CHECKING:
    from sbabench.embedding_store import EmbeddingStore
    from sbabench.encoding import CachingEncoder
    from sbabench.geometry import GeometryRecorder
    from sbabench.models import TextEncoder

log = logging.getLogger("sbabench")


@dataclass(frozen=True)
class PlannedUnit:
    """A unit with its key and where its result lives."""

    unit: Unit
    aggregator: ResolvedAggregator | None
    key_parts: dict[str, Any]
    path: Path

    @cached_property
    def key(self) -> str:
        """The digest of the key parts."""
        return key_digest(self.key_parts)


@dataclass
class Plan:
    """Which units run and which are already done."""

    todo: list[PlannedUnit] = field(default_factory=list)
    done: list[tuple[PlannedUnit, UnitResult]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    """Result files that exist but are corrupt or stale (they will be recomputed)."""


@dataclass
class RunSummary:
    """What a run did."""

    computed: list[str] = field(default_factory=list)
    """Units computed now."""
    cached: list[str] = field(default_factory=list)
    """Units whose valid result already existed (or that another process finished)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Units that failed, with their error."""
    results: list[UnitResult] = field(default_factory=list)
    """Every result of the suite's selected units (computed or cached)."""
    models_loaded: int = 0
    """How many models were loaded (0 on a warm re-run)."""

    @property
    def exit_code(self) -> int:
        """0 when every unit has a result, 1 when any failed."""
        return 1 if self.failed else 0


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
    """Whether the suite asks for geometry probes (or probe settings) an MoE unit's result lacks."""
    from sbabench.geometry import covers

    spec = suite.geometry
    wanted = bool(spec.probes and spec.tokens)
    return wanted and unit.model.is_moe and not covers(result.geometry, spec)


def plan_suite(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
) -> Plan:
    """Decide, without loading any model, which units need computing.

    `only` is a glob over unit labels (model/aggregator/task) selecting the units; `force`
    recomputes the selected units even when done.
    """
    root = Path(results_dir)
    plan = Plan()
    # One resolution per operator, not per unit: a user operator is imported, hashed and probed.
    operators = {a.key: resolve(a.name, a.options) for a in suite.aggregators}
    for unit in expand(suite):
        if not in_shard(unit.label, shard):
            continue
        if only and not fnmatch.fnmatch(unit.label, only):
            continue
        aggregator = None if unit.aggregator is None else operators[unit.aggregator.key]
        parts = unit_key_parts(suite, unit, aggregator)
        path = result_path(root, suite.name, unit.model.name, unit.aggregator_key, unit.task)
        planned = PlannedUnit(unit, aggregator, parts, path)
        existing = load_result(path)
        if existing is not None and existing.key == planned.key and not force:
            if _lacks_probes(suite, unit, existing):
                plan.invalid.append(f"{path} (geometry probes requested)")
            else:
                plan.done.append((planned, existing))
                continue
        elif path.exists() and existing is None:
            plan.invalid.append(f"{path} (corrupt or truncated)")
        elif existing is not None and existing.key != planned.key and not force:
            plan.invalid.append(f"{path} (stale: its key no longer matches)")
        plan.todo.append(planned)
    return plan


class _LazyModel:
    """Builds a model on first use, switches its aggregator and, with `train:`, fine-tunes it.

    With a training stage every operator starts from the same initial weights (restored before
    each), then loads its cached checkpoint or trains and caches one.
    """

    def __init__(self, suite: Suite, unit: Unit, checkpoints: Path) -> None:
        self.suite, self.unit = suite, unit
        self.encoder: TextEncoder | None = None
        self.load_s = 0.0
        self.checkpoints = checkpoints
        self._initial: dict[str, Any] | None = None
        self.training: dict[str, dict[str, Any]] = {}
        """Training log per checkpoint key."""

    def with_aggregator(self, planned: PlannedUnit) -> Callable[[], TextEncoder]:
        def get() -> TextEncoder:
            from sbabench.models import build_encoder
            from sbabench.moe import set_aggregator

            if self.encoder is None:
                start = time.perf_counter()
                self.encoder = build_encoder(
                    self.unit.model,
                    self.suite.settings.device,
                    self.suite.settings.dtype,
                    cache=self.checkpoints.parent / "routers",
                )
                self.load_s = time.perf_counter() - start
            if planned.aggregator is not None:
                set_aggregator(self.encoder.model, planned.aggregator.fn)
            if self.suite.train is not None:
                self._train(planned, self.encoder)
            return self.encoder

        return get

    def _train(self, planned: PlannedUnit, encoder: TextEncoder) -> None:
        from sbabench import training
        from sbabench.keys import checkpoint_key

        assert self.suite.train is not None
        if self._initial is None:
            self._initial = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
        else:
            encoder.model.load_state_dict(self._initial)
        key = checkpoint_key(planned.key_parts)
        if not encoder.moe_layers and self.suite.train.trainable == "moe":
            self.training[key] = {"skipped": "dense model: `trainable: moe` trains nothing"}
            return
        log = training.load_checkpoint(self.checkpoints, key, encoder)
        if log is None:
            result = training.train(encoder, self.suite.train)
            training.save_checkpoint(self.checkpoints, key, encoder, self.suite.train, result)
            log = result.to_dict()
        self.training[key] = log

    def training_log(self, planned: PlannedUnit) -> dict[str, Any] | None:
        """The log of this unit's model x operator: from this run or the checkpoint cache."""
        if self.suite.train is None:
            return None
        from sbabench import training
        from sbabench.keys import checkpoint_key

        key = checkpoint_key(planned.key_parts)
        return self.training.get(key) or training.load_log(self.checkpoints, key)


def _peak_memory() -> dict[str, float]:
    import torch

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _linear_space(planned: PlannedUnit) -> str | None:
    """The embedding space of the same model with the linear operator (None for dense)."""
    if planned.aggregator is None:
        return None
    from sbabench.keys import aggregator_parts

    return embedding_space({**planned.key_parts, "aggregator": aggregator_parts(resolve("linear"))})


def _geometry(
    spec: GeometrySpec,
    planned: PlannedUnit,
    encoder: CachingEncoder,
    recorder: GeometryRecorder | None,
    store: EmbeddingStore | None,
    stored: dict[str, Any] | None,
    phase: Callable[[str], None],
) -> dict[str, Any] | None:
    """The unit's geometry block: observed now, or `stored` when its embeddings were made."""
    import numpy as np

    from sbabench.geometry import GEOMETRY_VERSION, embedding_stats, reusable

    if recorder is None:
        return None
    space, task = embedding_space(planned.key_parts), planned.unit.task
    if recorder.observed_tokens == 0 and reusable(stored, spec):
        return stored
    requested = list(encoder.requested)
    vectors = np.stack([encoder.cache[key] for key in requested]) if requested else np.zeros((0, 1))
    loaded = encoder.loaded_encoder
    prenorm = (
        [loaded.prenorm[t] for _, t in requested if t in loaded.prenorm]
        if loaded is not None
        else []
    )
    linear_vectors = None
    linear_space = _linear_space(planned)
    if store is not None and linear_space is not None and linear_space != space and requested:
        by_kind: dict[str, list[str]] = {}
        for kind, text in requested:
            by_kind.setdefault(kind, []).append(text)
        found = {
            (kind, t): v
            for kind, texts in by_kind.items()
            for t, v in store.get(linear_space, kind, texts).items()
        }
        if len(found) == len(requested):
            linear_vectors = np.stack([found[key] for key in requested])
    num_experts = (
        {layer.name: layer.num_experts for layer in loaded.moe_layers}
        if loaded is not None
        else None
    )
    layers = recorder.layers(num_experts)
    if spec.probes and loaded is not None and recorder.observed_tokens:
        from sbabench.probes import run_probes

        phase("geometry probes")
        probed = run_probes(
            list(spec.probes),
            recorder,
            loaded.model,
            loaded.moe_layers,
            jacobian_tokens=spec.jacobian_tokens,
            subspace_dim=spec.subspace_dim,
            seed=recorder.seed,
        )
        for name, results in probed.items():
            layers[name]["probes"] = results
    block: dict[str, Any] = {
        "version": GEOMETRY_VERSION,
        "tokens_per_layer": recorder.budget,
        "probes": spec.model_dump(
            mode="json", include={"probes", "jacobian_tokens", "subspace_dim"}
        ),
        "layers": layers,
        "embeddings": embedding_stats(vectors, prenorm, linear_vectors) if requested else None,
    }
    if recorder.observed_tokens == 0 and planned.aggregator is not None:
        block["note"] = "MoE layers not observed: every text came from the embedding cache"
    elif store is not None:
        store.put_geometry(space, task, block)
    return block


def _score(
    suite: Suite,
    planned: PlannedUnit,
    encoder: CachingEncoder,
    model: _LazyModel,
    store: EmbeddingStore | None,
    phase: Callable[[str], None] = lambda _: None,
) -> UnitResult:
    """Evaluate one unit; `phase` is told when a long step without its own bar begins."""
    from sbabench import per_item, provenance
    from sbabench.geometry import GeometryRecorder, reusable
    from sbabench.models import pick_device
    from sbabench.tasks import get_task, load_task_data

    unit = planned.unit
    task = get_task(unit.task_entry)
    load_task_data(task, unit.task_entry)
    split = planned.key_parts["task"]["split"]
    subsets = list(unit.task_entry.subsets) if unit.task_entry.subsets else None
    spec = suite.geometry
    recorder = None
    stored = None
    if spec.tokens:
        recorder = GeometryRecorder(
            spec.tokens, seed=suite.settings.seed, keep_inputs=bool(spec.probes)
        )
        if store is not None:
            stored = store.get_geometry(embedding_space(planned.key_parts), unit.task)
    # Unless this unit's geometry was recorded with its embeddings, the model must see its texts.
    observe_cached = recorder is not None and unit.model.is_moe and not reusable(stored, spec)
    encoder.start_unit(recorder, observe_cached=observe_cached)
    was_loaded = model.encoder is not None
    start = time.perf_counter()
    encoded_before, encode_before = encoder.encoded_texts, encoder.encode_seconds
    reused_before, observed_before = encoder.reused_texts, encoder.observed_texts
    scores = task.evaluate(
        encoder,
        split,
        subsets_to_run=subsets,
        encode_kwargs={"batch_size": suite.settings.batch_size},
    )
    items = per_item.collect(task, encoder, split, list(scores), suite.settings.seed)
    geometry_start = time.perf_counter()
    geometry = _geometry(spec, planned, encoder, recorder, store, stored, phase)
    geometry_s = time.perf_counter() - geometry_start
    encoder.start_unit(None)
    total = time.perf_counter() - start
    encode_s = encoder.encode_seconds - encode_before
    load_s = model.load_s if model.encoder is not None and not was_loaded else 0.0
    main = [float(s["main_score"]) for s in scores.values()]
    device = (
        model.encoder.device if model.encoder is not None else pick_device(suite.settings.device)
    )
    return UnitResult(
        suite=suite.name,
        model=unit.model.name,
        aggregator=unit.aggregator_key,
        task=unit.task,
        key=planned.key,
        key_parts=planned.key_parts,
        task_type=str(task.metadata.type),
        split=split,
        main_score_name=str(task.metadata.main_score),
        main_score=sum(main) / len(main),
        scores={subset: dict(values) for subset, values in scores.items()},
        items=items,
        geometry=geometry,
        training=model.training_log(planned),
        timing_s={
            "geometry_summary": geometry_s,
            "model_load": load_s,
            "encode": encode_s,
            "score": total - encode_s - load_s - geometry_s,
            "total": total,
            "texts_encoded": float(encoder.encoded_texts - encoded_before),
            "texts_from_cache": float(encoder.reused_texts - reused_before),
            "texts_run_for_geometry_only": float(encoder.observed_texts - observed_before),
        },
        provenance=provenance.collect(device, suite.settings.model_dump()) | _peak_memory(),
    )


def _failure_path(path: Path) -> Path:
    return path.with_name(path.stem + ".error.json")


def _record_failure(
    summary: RunSummary, planned: PlannedUnit, exc: BaseException, console: Console
) -> None:
    message = exc.render() if isinstance(exc, SbabenchError) else f"{type(exc).__name__}: {exc}"
    summary.failed[planned.unit.label] = message
    record = {
        "unit": planned.unit.label,
        "error": message,
        "traceback": "".join(traceback.format_exception(exc)),
        "key": planned.key,
        "time": time.time(),
        "command": " ".join(sys.argv),
    }
    write_atomic(_failure_path(planned.path), json.dumps(record, indent=2))
    console.print(f"[red]failed[/red] {planned.unit.label}: {message}", highlight=False)


@contextmanager
def _unit_locks(
    units: list[PlannedUnit], blocking: bool
) -> Iterator[tuple[list[PlannedUnit], list[PlannedUnit]]]:
    """Lock each unit's result path; yields (locked, held elsewhere). Released on exit (or death)."""
    with ExitStack() as stack:
        mine, theirs = [], []
        for planned in units:
            planned.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(planned.path) + ".lock", timeout=-1 if blocking else 0)
            try:
                stack.enter_context(lock)
            except Timeout:
                theirs.append(planned)
            else:
                mine.append(planned)
        yield mine, theirs


def _describe(progress: Any, task: Any, label: str, note: str) -> None:
    progress.update(task, description=f"{label} ({note})")


def _compute(
    suite: Suite,
    todo: list[PlannedUnit],
    results_dir: Path,
    summary: RunSummary,
    console: Console,
    blocking: bool,
) -> list[PlannedUnit]:
    """Compute the units this process can lock; returns those another process holds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sbabench.embedding_store import EmbeddingStore
    from sbabench.encoding import CachingEncoder
    from sbabench.logs import quiet_libraries

    deferred: list[PlannedUnit] = []
    settings = suite.settings
    store = None
    if settings.embedding_cache != "off":
        store = EmbeddingStore(
            results_dir / ".cache" / "embeddings.sqlite", settings.embedding_cache
        )
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip
    with quiet_libraries(), progress:
        overall = progress.add_task("units", total=len(todo))
        texts = progress.add_task("encoding", total=0, visible=False)
        for _, model_group in groupby(todo, key=lambda p: p.unit.model.name):
            group = list(model_group)
            with _unit_locks(group, blocking) as (mine, theirs):
                deferred.extend(theirs)
                progress.advance(overall, len(theirs))
                model = _LazyModel(suite, group[0].unit, results_dir / ".cache" / "checkpoints")
                for _, agg_group in groupby(mine, key=lambda p: p.unit.aggregator_key):
                    members = list(agg_group)
                    space = embedding_space(members[0].key_parts)
                    if store is not None:
                        store.register(
                            space,
                            suite.name,
                            members[0].unit.model.name,
                            members[0].unit.aggregator_key,
                        )
                    cache = CachingEncoder(
                        model.with_aggregator(members[0]),
                        members[0].unit.model.name,
                        settings.batch_size,
                        on_batch=lambda n: progress.advance(texts, n),
                        on_texts=lambda n: progress.reset(texts, total=n, visible=True),
                        store=store,
                        space=space,
                    )
                    for planned in members:
                        progress.update(overall, description=planned.unit.label)
                        try:
                            result = _score(
                                suite, planned, cache, model, store,
                                partial(_describe, progress, overall, planned.unit.label),
                            )  # fmt: skip
                        except Exception as exc:
                            _record_failure(summary, planned, exc, console)
                        else:
                            save_result(planned.path, result)
                            _failure_path(planned.path).unlink(missing_ok=True)
                            summary.computed.append(planned.unit.label)
                            summary.results.append(result)
                        progress.advance(overall)
                if model.encoder is not None:
                    summary.models_loaded += 1
                del model
    if store is not None:
        store.close()
    return deferred


def run_suite(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
    console: Console | None = None,
) -> RunSummary:
    """Run every selected unit of `suite` that has no valid result; never raises for one unit."""
    console = console or Console(stderr=True)
    root = Path(results_dir)
    plan = plan_suite(suite, root, force=force, only=only, shard=shard)
    summary = RunSummary()
    for planned, result in plan.done:
        summary.cached.append(planned.unit.label)
        summary.results.append(result)
    for note in plan.invalid:
        console.print(f"[yellow]recomputing[/yellow] {note}", highlight=False)
    if summary.cached:
        console.print(f"[dim]{len(summary.cached)} unit(s) already done, skipped[/dim]")
    if not plan.todo:
        return summary
    _run(suite, plan, root, summary, console)
    # cached units first, computed ones after: put them back in the suite's order for tables
    order = {unit.label: i for i, unit in enumerate(expand(suite))}
    summary.results.sort(key=lambda r: order.get(f"{r.model}/{r.aggregator}/{r.task}", len(order)))
    return summary


def _run(suite: Suite, plan: Plan, root: Path, summary: RunSummary, console: Console) -> None:
    """Compute the units to do; wait for those another process holds and take its results."""
    import torch

    torch.manual_seed(suite.settings.seed)
    deferred = _compute(suite, plan.todo, root, summary, console, blocking=False)
    if deferred:
        # Another process holds these: wait for it, then take its results (or compute the
        # units it failed on ourselves).
        console.print(f"[dim]{len(deferred)} unit(s) running in another process; waiting[/dim]")
        leftover = []
        for planned in deferred:
            with FileLock(str(planned.path) + ".lock"):
                theirs = load_result(planned.path)
            if theirs is not None and theirs.key == planned.key:
                summary.cached.append(planned.unit.label)
                summary.results.append(theirs)
            else:
                leftover.append(planned)
        if leftover:
            _compute(suite, leftover, root, summary, console, blocking=True)
