"""Run a suite: every unit not already done, models loaded once, results written atomically."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from sbabench import per_item, provenance
from sbabench.aggregators import ResolvedAggregator, resolve
from sbabench.encoding import CachingEncoder
from sbabench.errors import SbabenchError
from sbabench.logs import quiet_libraries
from sbabench.models import TextEncoder, build_encoder, resolve_base
from sbabench.moe.base import set_aggregator
from sbabench.results import UnitResult, key_digest, load_result, result_path, save_result
from sbabench.suite import Suite, Unit, expand
from sbabench.tasks import get_task

SCORING_VERSION = 3
"""Bump when the way scores are computed changes; it is part of every unit key."""


@dataclass
class RunSummary:
    """What a run did."""

    computed: list[str] = field(default_factory=list)
    """Units computed now."""
    cached: list[str] = field(default_factory=list)
    """Units whose valid result already existed."""
    failed: dict[str, str] = field(default_factory=dict)
    """Units that failed, with their error."""
    results: list[UnitResult] = field(default_factory=list)
    """Every result of the suite (computed or cached)."""

    @property
    def exit_code(self) -> int:
        """0 when every unit has a result, 1 when any failed."""
        return 1 if self.failed else 0


def unit_key_parts(
    suite: Suite, unit: Unit, aggregator: ResolvedAggregator | None
) -> dict[str, Any]:
    """Everything that changes a unit's score."""
    _, model_identity = resolve_base(unit.model.base)
    return {
        "model": unit.model.model_dump(exclude={"name"}),
        "model_revision": getattr(unit.model, "revision", None),
        "model_identity": model_identity,
        "aggregator": None
        if aggregator is None
        else {
            "name": aggregator.name,
            "options": dict(aggregator.options),
            "source_sha256": aggregator.source_hash,
        },
        "task": unit.task,
        "settings": suite.settings.model_dump(include={"dtype", "seed"}),
        "scoring_version": SCORING_VERSION,
    }


def _resolved(unit: Unit) -> ResolvedAggregator | None:
    if unit.aggregator is None:
        return None
    return resolve(unit.aggregator.name, unit.aggregator.options)


def _score_unit(
    suite: Suite, unit: Unit, encoder: CachingEncoder, key_parts: dict[str, Any], load_s: float
) -> UnitResult:
    task = get_task(unit.task)
    split = task.metadata.eval_splits[0]
    start = time.perf_counter()
    encoded_before = encoder.encoded_texts
    encode_before = encoder.encode_seconds
    scores = task.evaluate(encoder, split, encode_kwargs={"batch_size": suite.settings.batch_size})
    items = per_item.collect(task, encoder, split, list(scores), suite.settings.seed)
    total = time.perf_counter() - start
    encode_s = encoder.encode_seconds - encode_before
    main = [float(s["main_score"]) for s in scores.values()]
    return UnitResult(
        suite=suite.name,
        model=unit.model.name,
        aggregator=unit.aggregator_key,
        task=unit.task,
        key=key_digest(key_parts),
        key_parts=key_parts,
        task_type=str(task.metadata.type),
        split=split,
        main_score_name=str(task.metadata.main_score),
        main_score=sum(main) / len(main),
        scores={subset: dict(values) for subset, values in scores.items()},
        items=items,
        timing_s={
            "model_load": load_s,
            "encode": encode_s,
            "score": total - encode_s,
            "total": total,
            "texts_encoded": float(encoder.encoded_texts - encoded_before),
        },
        provenance=provenance.collect(encoder.encoder.device, suite.settings.model_dump()),
    )


def run_suite(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    console: Console | None = None,
) -> RunSummary:
    """Run every unit of `suite` that has no valid result yet; never raises for one unit."""
    console = console or Console(stderr=True)
    root = Path(results_dir)
    summary = RunSummary()
    units = expand(suite)
    torch.manual_seed(suite.settings.seed)
    plan: list[tuple[Unit, ResolvedAggregator | None, dict[str, Any], Path]] = []
    for unit in units:
        aggregator = _resolved(unit)
        parts = unit_key_parts(suite, unit, aggregator)
        path = result_path(root, suite.name, unit.model.name, unit.aggregator_key, unit.task)
        existing = None if force else load_result(path)
        if existing is not None and existing.key == key_digest(parts):
            summary.cached.append(unit.label)
            summary.results.append(existing)
        else:
            plan.append((unit, aggregator, parts, path))
    if summary.cached:
        console.print(f"[dim]{len(summary.cached)} unit(s) already done, skipped[/dim]")
    if not plan:
        return summary

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with quiet_libraries(), progress:
        overall = progress.add_task("units", total=len(plan))
        texts = progress.add_task("encoding", total=0, visible=False)

        def on_texts(count: int) -> None:
            progress.reset(texts, total=count, visible=True)

        def on_batch(count: int) -> None:
            progress.advance(texts, count)

        for model_name, group in groupby(plan, key=lambda item: item[0].model.name):
            items = list(group)
            progress.update(overall, description=f"loading {model_name}")
            start = time.perf_counter()
            try:
                text_encoder: TextEncoder = build_encoder(
                    items[0][0].model, suite.settings.device, suite.settings.dtype
                )
            except Exception as exc:
                for unit, *_ in items:
                    _record_failure(summary, unit, exc, console)
                    progress.advance(overall)
                continue
            load_s = time.perf_counter() - start
            for _, agg_items in groupby(items, key=lambda item: item[0].aggregator_key):
                agg_list = list(agg_items)
                aggregator = agg_list[0][1]
                if aggregator is not None:
                    set_aggregator(text_encoder.model, aggregator.fn)
                cache = CachingEncoder(
                    text_encoder,
                    model_name,
                    suite.settings.batch_size,
                    on_batch=on_batch,
                    on_texts=on_texts,
                )
                for unit, _, parts, path in agg_list:
                    progress.update(overall, description=unit.label)
                    try:
                        result = _score_unit(suite, unit, cache, parts, load_s)
                    except Exception as exc:
                        _record_failure(summary, unit, exc, console)
                    else:
                        save_result(path, result)
                        summary.computed.append(unit.label)
                        summary.results.append(result)
                    progress.advance(overall)
            del text_encoder
        progress.update(overall, description="done")
        progress.update(texts, visible=False)
    return summary


def _record_failure(summary: RunSummary, unit: Unit, exc: BaseException, console: Console) -> None:
    if isinstance(exc, SbabenchError):
        message = exc.render()
    else:
        message = f"{type(exc).__name__}: {exc}"
        logging.getLogger("sbabench").debug("".join(traceback.format_exception(exc)))
    summary.failed[unit.label] = message
    console.print(f"[red]failed[/red] {unit.label}: {message}")
