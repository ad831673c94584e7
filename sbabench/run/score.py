"""Scoring one unit: mteb's evaluator, per-item predictions, geometry, timings, provenance."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sbabench.run.results import (
    GeometryBlock,
    Provenance,
    Timing,
    TokenEliminationRecord,
    UnitResult,
)

if TYPE_CHECKING:
    from sbabench.geometry.recorder import GeometryRecorder
    from sbabench.run.embedding_store import EmbeddingStore
    from sbabench.run.encoding import CachingEncoder
    from sbabench.run.plan import PlannedUnit
    from sbabench.run.session import ModelSession
    from sbabench.suite import GeometrySpec, Suite


@dataclass
class _Counters:
    """The encoder's counters when the unit began (a model x operator shares one encoder)."""

    encoded: int
    reused: int
    observed: int
    encode_s: float

    @classmethod
    def of(cls, encoder: CachingEncoder) -> _Counters:
        return cls(
            encoder.encoded_texts,
            encoder.reused_texts,
            encoder.observed_texts,
            encoder.encode_seconds,
        )


def _peak_memory() -> dict[str, float]:
    import torch

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _linear_vectors(
    planned: PlannedUnit, store: EmbeddingStore | None, requested: list[tuple[str, str]]
) -> Any:
    """The `requested` (prompt type, text) embeddings under the linear operator, if all are
    in the store."""
    import numpy as np

    from sbabench.run.keys import linear_operator_key

    if store is None or planned.aggregator is None or not requested:
        return None
    linear_space = planned.key_parts.with_operator(linear_operator_key()).embedding_space()
    if linear_space == planned.key_parts.embedding_space():
        return None
    by_kind: dict[str, list[str]] = {}
    for kind, text in requested:
        by_kind.setdefault(kind, []).append(text)
    found = {
        (kind, t): v
        for kind, texts in by_kind.items()
        for t, v in store.get(linear_space, kind, texts).items()
    }
    if len(found) != len(requested):
        return None
    return np.stack([found[key] for key in requested])


def _embedding_block(
    planned: PlannedUnit, encoder: CachingEncoder, store: EmbeddingStore | None
) -> dict[str, Any] | None:
    from sbabench.geometry.stats import EMBEDDING_SAMPLE, embedding_stats

    requested = list(encoder.requested)
    if not requested:
        return None
    # Only the first texts enter the statistics: only they are gathered (and looked up under
    # the linear operator), not the whole task's embeddings twice over.
    sample = requested[:EMBEDDING_SAMPLE]
    vectors = encoder.vectors(sample)
    prenorm = [encoder.prenorm[key] for key in requested if key in encoder.prenorm]
    return embedding_stats(vectors, prenorm, _linear_vectors(planned, store, sample))


def _layer_stats(
    spec: GeometrySpec,
    recorder: GeometryRecorder,
    encoder: CachingEncoder,
    phase: Callable[[str], None],
) -> dict[str, Any]:
    """Per-layer statistics, with the probes' results when the suite asks for them."""
    from sbabench.geometry.probes import run_probes

    loaded = encoder.loaded_encoder
    num_experts = {m.name: m.num_experts for m in loaded.moe_layers} if loaded else None
    layers = recorder.layers(num_experts)
    if spec.probes and loaded is not None and recorder.observed_tokens:
        phase("geometry probes")
        probed = run_probes(
            spec.requested(), recorder, loaded.model, loaded.moe_layers, seed=recorder.seed
        )
        for name, results in probed.items():
            layers[name]["probes"] = results
    return layers


def geometry_block(
    spec: GeometrySpec,
    planned: PlannedUnit,
    encoder: CachingEncoder,
    recorder: GeometryRecorder | None,
    store: EmbeddingStore | None,
    stored: dict[str, Any] | None,
    phase: Callable[[str], None],
) -> dict[str, Any] | None:
    """The unit's geometry block: observed now, or `stored` when its embeddings were made."""
    from sbabench.geometry.stats import GEOMETRY_VERSION, reusable

    if recorder is None:
        return None
    if recorder.observed_tokens == 0 and reusable(stored, spec):
        return stored
    block: dict[str, Any] = {
        "version": GEOMETRY_VERSION,
        "tokens_per_layer": recorder.budget,
        "probes": spec.recorded(),
        "layers": _layer_stats(spec, recorder, encoder, phase),
        "embeddings": _embedding_block(planned, encoder, store),
    }
    if recorder.observed_tokens == 0 and planned.aggregator is not None:
        block["note"] = "MoE layers not observed: every text came from the embedding cache"
    elif store is not None:
        store.put_geometry(*_geometry_slot(planned), block)
    return block


def _geometry_slot(planned: PlannedUnit) -> tuple[str, str]:
    """Where the embedding store keeps a unit's geometry: its embedding space, and its task
    with the geometry code's digest (geometry recorded by other geometry code is recorded
    again; a change elsewhere in the scoring code reuses it)."""
    from sbabench.run.keys import geometry_code_sha256

    task = f"{planned.unit.task}@{geometry_code_sha256()[:16]}"
    return planned.key_parts.embedding_space(), task


def _recorder(
    suite: Suite, planned: PlannedUnit, store: EmbeddingStore | None
) -> tuple[GeometryRecorder | None, dict[str, Any] | None]:
    """A geometry recorder for the unit (None: geometry off), and the geometry stored with its
    embeddings if they were computed before."""
    from sbabench.geometry.recorder import GeometryRecorder

    spec = suite.geometry
    if not spec.tokens:
        return None, None
    recorder = GeometryRecorder(spec.tokens, seed=planned.unit.seed, keep_inputs=bool(spec.probes))
    stored = None
    if store is not None:
        stored = store.get_geometry(*_geometry_slot(planned))
    return recorder, stored


def _evaluate(suite: Suite, planned: PlannedUnit, encoder: CachingEncoder) -> tuple[Any, Any, Any]:
    """mteb's scores and the per-item predictions of the unit's task."""
    from sbabench.tasks import get_task, load_task_data
    from sbabench.tasks.items import collect, prepare

    entry = planned.unit.task_entry
    task = get_task(entry)
    load_task_data(task, entry)
    prepare(task)
    split = planned.key_parts.task.split
    scores = task.evaluate(
        encoder,
        split,
        subsets_to_run=list(entry.subsets) if entry.subsets else None,
        # mteb's retrieval search draws its own bars unless told not to: sbabench draws progress
        encode_kwargs={"batch_size": suite.settings.batch_size, "show_progress_bar": False},
    )
    items = collect(task, encoder, split, list(scores), planned.unit.seed)
    return task, scores, items


def _timing(
    encoder: CachingEncoder,
    session: ModelSession,
    before: _Counters,
    total: float,
    geometry_s: float,
    was_loaded: bool,
) -> Timing:
    """Where the unit's time went: model load, encoding, geometry, and the rest (scoring)."""
    encode_s = encoder.encode_seconds - before.encode_s
    load_s = session.load_s if session.encoder is not None and not was_loaded else 0.0
    return Timing(
        geometry_summary=geometry_s,
        model_load=load_s,
        encode=encode_s,
        score=total - encode_s - load_s - geometry_s,
        total=total,
        texts_encoded=encoder.encoded_texts - before.encoded,
        texts_from_cache=encoder.reused_texts - before.reused,
        texts_run_for_geometry_only=encoder.observed_texts - before.observed,
    )


def _elimination(
    planned: PlannedUnit, encoder: CachingEncoder, encode_s: float
) -> TokenEliminationRecord | None:
    """The FLOPs share kept over the unit's texts encoded in this run (None without token
    elimination; a null share when every text came from the embedding cache)."""
    options = planned.unit.model.token_elimination
    if options is None:
        return None
    loaded = encoder.loaded_encoder
    total: float | None = None
    per_layer: list[float] = []
    texts = 0
    if loaded is not None and loaded.elimination is not None:
        share, per_layer, texts = loaded.flops_fraction(list(encoder.requested))
        total = share if texts else None
    return TokenEliminationRecord(
        tilt_rate=options.tilt_rate,
        start_layer=options.start_layer,
        flops_fraction=total,
        flops_fraction_per_layer=per_layer if texts else [],
        texts=texts,
        encode_s=encode_s,
    )


def _provenance(suite: Suite, session: ModelSession) -> Provenance:
    from sbabench.models.encoder import pick_device
    from sbabench.run import provenance

    device = session.encoder.device if session.encoder else pick_device(suite.settings.device)
    return Provenance(**provenance.collect(device, suite.settings.model_dump()), **_peak_memory())


def score_unit(
    suite: Suite,
    planned: PlannedUnit,
    encoder: CachingEncoder,
    session: ModelSession,
    store: EmbeddingStore | None,
    phase: Callable[[str], None] = lambda _: None,
) -> UnitResult:
    """Evaluate one unit; `phase` is told when a long step without its own counter begins."""
    from sbabench.geometry.stats import reusable

    recorder, stored = _recorder(suite, planned, store)
    # Unless this unit's geometry was recorded with its embeddings, the model must see its texts.
    observe = (
        recorder is not None and planned.unit.model.is_moe and not reusable(stored, suite.geometry)
    )
    encoder.start_unit(recorder, observe_cached=observe)
    was_loaded = session.encoder is not None
    before, start = _Counters.of(encoder), time.perf_counter()
    try:
        task, scores, items = _evaluate(suite, planned, encoder)
        geometry_start = time.perf_counter()
        geometry = geometry_block(suite.geometry, planned, encoder, recorder, store, stored, phase)
        geometry_s = time.perf_counter() - geometry_start
        elimination = _elimination(planned, encoder, encoder.encode_seconds - before.encode_s)
    finally:
        encoder.finish_unit()
    timing = _timing(encoder, session, before, time.perf_counter() - start, geometry_s, was_loaded)
    main = [float(s["main_score"]) for s in scores.values()]
    return UnitResult(
        suite=suite.name,
        model=planned.unit.model.name,
        aggregator=planned.unit.aggregator_key,
        task=planned.unit.task,
        replicate=planned.unit.replicate,
        key=planned.key,
        key_parts=planned.key_parts,
        task_type=str(task.metadata.type),
        split=planned.key_parts.task.split,
        main_score_name=str(task.metadata.main_score),
        main_score=sum(main) / len(main),
        scores={subset: dict(values) for subset, values in scores.items()},
        items=items,
        geometry=None if geometry is None else GeometryBlock.model_validate(geometry),
        token_elimination=elimination,
        training=session.training_log(planned),
        timing_s=timing,
        provenance=_provenance(suite, session),
    )
