"""What the CLI shows besides the result reports (`report`): a run's plan and progress, the
caches, a model's MoE layers, the registries. Rich renderables and lines built from library
values; nothing here prints, except the progress bar into the console it is given."""

from __future__ import annotations

import datetime
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sbabench.analysis.compare import Outcome
    from sbabench.analysis.export import Exported
    from sbabench.analysis.sequential import Look, Record
    from sbabench.models.machine_cache import Listing
    from sbabench.run.embedding_store import CacheReport
    from sbabench.run.execute import RunSummary
    from sbabench.run.inspection import ModelReport
    from sbabench.run.plan import Plan
    from sbabench.run.progress import Event
    from sbabench.run.results import UnitResult
    from sbabench.suite import Suite


def wrapped(text: str, width: int | None) -> str:
    """`text` with each line longer than `width` wrapped at spaces, its continuation indented
    four more than the line; None (a pipe, a log): unchanged, one line per message. A path, a
    `file:line:column` or any other long word is never broken, so it stays copyable."""
    if width is None:
        return text
    lines = []
    for line in text.splitlines():
        lead = line[: len(line) - len(line.lstrip())]
        lines.append(
            textwrap.fill(
                line.lstrip(),
                width,
                initial_indent=lead,
                subsequent_indent=lead + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def table(title: str, *columns: str) -> Table:
    """An empty rich table with these column headers."""
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    return out


def when(timestamp: float) -> str:
    """A POSIX time as local `YYYY-MM-DD HH:MM`."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


class ProgressBar:
    """Draws a run's progress events: one bar over units, one over the texts being encoded."""

    def __init__(self, out: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.out = out
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=out, transient=True,
        )  # fmt: skip
        self.units = self.bar.add_task("units", total=0, visible=False)
        self.texts = self.bar.add_task("encoding", total=0, visible=False)

    def __enter__(self) -> ProgressBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def event(self, event: Event) -> None:
        """Draw one `sbabench.run.progress.Event`."""
        from sbabench.run.progress import EventKind

        kind = event.kind
        if kind is EventKind.PLANNED:
            self.bar.reset(self.units, total=event.count, visible=True)
        elif kind is EventKind.NOTE:
            style = "yellow" if event.message.startswith("recomputing") else "dim"
            self.bar.console.print(f"[{style}]{event.message}[/{style}]", highlight=False)
        elif kind is EventKind.UNIT_STARTED:
            self.bar.update(self.units, description=event.label)
        elif kind is EventKind.PHASE:
            self.bar.update(self.units, description=f"{event.label} ({event.message})")
        elif kind is EventKind.TEXTS:
            self.bar.reset(self.texts, total=event.count, visible=True)
        elif kind is EventKind.BATCH:
            self.bar.advance(self.texts, event.count)
        elif kind is EventKind.UNIT_FAILED:
            self.bar.console.print(
                f"[red]failed[/red] {event.label}: {event.message}", highlight=False
            )
            self.bar.advance(self.units)
        elif kind in (EventKind.UNIT_FINISHED, EventKind.UNIT_ELSEWHERE):
            self.bar.advance(self.units)


def suite_line(path: Path, suite: Suite, units: int) -> str:
    """`validate`'s one line: what the suite holds and how many units it expands to."""
    replicates = {suite.replicates_of(m) for m in suite.models if suite.replicates_of(m) > 1}
    shown = f", {'/'.join(map(str, sorted(replicates)))} replicates" if replicates else ""
    return (
        f"[green]ok[/green] {path}: {len(suite.models)} model(s), {len(suite.aggregators)} "
        f"aggregator(s), {len(suite.tasks)} task(s){shown} -> {units} unit(s)"
    )


def run_report(summary: RunSummary, suite_name: str, results_dir: Path) -> list[RenderableType]:
    """After a run: the main scores, and what was computed, cached, failed and loaded."""
    from sbabench.analysis.report import score_table

    return [
        score_table(summary.results, title=f"{suite_name}: main scores"),
        f"{len(summary.computed)} computed, {len(summary.cached)} cached, "
        f"{len(summary.failed)} failed, {summary.models_loaded} model(s) loaded — results in "
        f"{results_dir / suite_name}",
    ]


def look_line(look: Look) -> str:
    """One line after each round of a run until decided."""
    decided = [c for c in look.comparisons if c.decision != "open"]
    return (
        f"look at {look.replicates} replicates (alpha {look.alpha:.4g}): {len(decided)} of "
        f"{len(look.comparisons)} comparison(s) decided at this look"
    )


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def sequential_report(record: Record, notes: Sequence[str] = ()) -> list[RenderableType]:
    """A sequential run's decisions: each comparison where it stopped, its repeated CI (at
    that look's level) and its sequentially adjusted p; then which models stopped where."""
    design = record.design
    effect = f", effect +-{design.effect:g}" if design.effect is not None else ""
    out = table(
        f"{record.suite}: until decided against {design.baseline} (alpha {design.alpha:g} over "
        f"{len(record.looks)} look(s){effect})",
        "comparison", "R", "decision", "Δ", "repeated CI", "p seq",
    )  # fmt: skip
    for adjusted in record.final():
        c = adjusted.comparison
        ci = "—" if c.ci_low is None else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        p = "—" if adjusted.p_sequential is None else f"{adjusted.p_sequential:.3g}"
        decision: str = c.decision if c.decision != "open" else "undecided"
        if c.note:
            decision += f" ({c.note})"
        out.add_row(
            f"{c.model}/{c.operator}/{c.task}", str(c.replicates), decision,
            _number(c.delta), ci, p,
        )  # fmt: skip
    stopped = ", ".join(f"{m} at {r}" for m, r in sorted(record.stopped.items()))
    return [
        out,
        f"stopped: {stopped or 'none yet'} (of at most {design.maximum} replicates). The "
        "sequential design's p and its repeated CI (at the look's level shared over the model's "
        "comparisons; a 'within' decision reads the 1 - 2 alpha_k interval, two one-sided "
        "tests); the tables of `compare` test the replicates as if their count had been fixed "
        "in advance.",
        *notes,
    ]


def plan_report(suite_name: str, plan: Plan) -> list[RenderableType]:
    """A dry run: each unit, done (cached) or would run; the result files that would be
    recomputed; how many units run."""
    out = table(f"{suite_name}: dry run", "unit", "status")
    for planned, _ in plan.done:
        out.add_row(planned.label, "[green]done (cached)[/green]")
    for planned in plan.todo:
        out.add_row(planned.label, "[yellow]would run[/yellow]")
    # Text: a file name is not highlighted (a str would be)
    notes = [Text.from_markup(f"would recompute {note}") for note in plan.invalid]
    return [out, *notes, f"{len(plan.todo)} to run, {len(plan.done)} done"]


def cache_report(cache: Listing | CacheReport) -> list[RenderableType]:
    """`cache`: what was removed, if anything, then the machine cache's or an embedding
    cache's table."""
    from sbabench.models.machine_cache import Listing

    if isinstance(cache, Listing):
        removed = f"removed {cache.removed} entr(ies) from {cache.root}"
        shown = _machine_cache_table(cache)
    else:
        removed = f"removed {cache.removed} vector(s)"
        shown = _embedding_cache_table(cache)
    return [shown] if cache.removed is None else [removed, shown]


def _machine_cache_table(listing: Listing) -> Table:
    """The machine cache's entries: kind, key (shortened), size, when written."""
    out = table(
        f"machine cache: {listing.root} ({listing.bytes / 1e6:.2f} MB)", "kind", "key", "KB",
        "written",
    )  # fmt: skip
    code = [entry for entry in listing.entries if entry.kind == "code"]
    for entry in listing.entries:
        if entry.kind != "code":
            out.add_row(
                entry.kind, entry.key[:16], f"{entry.bytes / 1e3:.1f}", when(entry.modified)
            )
    if code:  # one small entry per source file parsed: a row for all, not a screen of them
        size = sum(entry.bytes for entry in code) / 1e3
        latest = max(entry.modified for entry in code)
        out.add_row("code", f"{len(code)} source files", f"{size:.1f}", when(latest))
    return out


def _embedding_cache_table(report: CacheReport) -> Table:
    """An embedding cache's spaces: suite, model, aggregator, vectors, size, last use."""
    out = table(
        f"embedding cache: {report.path} ({report.bytes_on_disk / 1e6:.1f} MB on disk)",
        "suite", "model", "aggregator", "vectors", "MB", "last used",
    )  # fmt: skip
    for usage in report.usage:
        out.add_row(
            usage.suite, usage.model, usage.aggregator, str(usage.vectors),
            f"{usage.megabytes:.2f}", when(usage.last_used),
        )  # fmt: skip
    return out


def model_report(report: ModelReport) -> list[RenderableType]:
    """`inspect` for one model: a row per MoE layer (family, experts, top-k, renormalisation,
    which probes can run), then how the model embeds."""
    layers = table(
        f"{report.name}: {report.model_class}, {report.parameters / 1e6:.1f}M parameters",
        "MoE layer", "family", "experts", "top-k", "renormalised", "probes",
    )  # fmt: skip
    for layer in report.layers:
        renormalized = "yes" if layer.renormalized else "no"
        layers.add_row(
            layer.name, layer.family, str(layer.experts), str(layer.top_k), renormalized,
            layer.probes,
        )  # fmt: skip
    config = report.config
    lines: list[RenderableType] = [layers]
    if not report.layers:
        lines.append("  dense model: no MoE layers (aggregators do not apply)")
    lines.append(
        f"  pooling={config.pooling} normalize={config.normalize} "
        f"max_length={config.max_length} prompts={config.prompts or 'none'}"
    )
    lines.append(f"  sentence-transformers modules: {' -> '.join(config.modules)}")
    return lines


def aggregator_listing() -> list[RenderableType]:
    """The built-in operators with their options' defaults, and how to name one's own."""
    from sbabench.aggregators import registry

    out = table("aggregators", "name", "description", "options")
    for name, info in registry().items():
        options = ", ".join(
            f"{key}={field.default!r}" for key, field in info.options.model_fields.items()
        )
        out.add_row(name, info.summary, options or "—")
    return [
        out,
        "User operators: name them as 'package.module:function' with the signature "
        "fn(outputs[T,k,H], weights[T,k], **options) -> [T,H].",
    ]


def task_listing() -> list[RenderableType]:
    """The task types, the bundled offline tasks, and which MTEB tasks can be named."""
    from sbabench.tasks.bundled import BUNDLED
    from sbabench.tasks.types import mteb_types, task_types

    kinds = table("task types", "type", "MTEB types", "local task fields", "paired over")
    for task_type in task_types().values():
        local = "-"
        if task_type.local_layout is not None:
            local = ", ".join((*task_type.files, *task_type.columns))
        kinds.add_row(task_type.name, ", ".join(task_type.mteb_types), local, task_type.resampled)
    bundled = table("bundled offline tasks", "name", "type", "main score", "card")
    for name, cls in BUNDLED.items():
        meta = cls.metadata  # type: ignore[attr-defined]
        bundled.add_row(name, str(meta.type), str(meta.main_score), cls.card)
    return [
        kinds,
        bundled,
        f"Any MTEB task of type {', '.join(mteb_types())} can be named too "
        "(e.g. STSBenchmark, TwentyNewsgroupsClustering, SprintDuplicateQuestions, ArguAna, "
        "SciDocsRR, Banking77Classification); "
        "those need access to the Hugging Face hub.",
    ]


def score_report(
    results: Sequence[UnitResult], title: str, geometry: bool = False
) -> list[RenderableType]:
    """`show`: the main scores, then (with `geometry`) the geometry tables, or a line saying
    there are none."""
    from sbabench.analysis.report import geometry_tables, score_table

    shown: list[RenderableType] = [score_table(results, title=title)]
    if geometry:
        tables = geometry_tables(results)
        shown += tables or ["no geometry statistics in these results (geometry: {tokens: 0}?)"]
    return shown


def figures_report(written: Sequence[Path]) -> list[str]:
    """`plot`: one line per file written, or why there was nothing to plot."""
    if not written:
        return ["nothing to plot: no paired comparisons and no geometry statistics"]
    return [f"wrote {path}" for path in written]


def export_report(written: Sequence[Exported], output: Path, fmt: str) -> list[str]:
    """`export`: one line per unit written (label, main score, file), then the count."""
    lines = [f"{item.label}: {item.main_score:.4f} -> {item.path}" for item in written]
    return [*lines, f"{len(written)} unit(s) exported to {output} ({fmt} format)"]


def comparison_report(outcome: Outcome) -> list[Any]:
    """`compare` as rich tables: per task and across tasks, the geometry, and Friedman's line."""
    from sbabench.analysis.report import comparison_tables, friedman_line, geometry_tables

    shown: list[Any] = [
        *comparison_tables(outcome.comparison),
        *geometry_tables(outcome.results),
    ]
    line = friedman_line(outcome.comparison)
    return [*shown, line] if line else shown
