"""What the CLI shows, as rich renderables: plans, runs, caches, models, registries, progress."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.text import Text

from sbabench.analysis.compare import Outcome, compare_results
from sbabench.analysis.export import Exported
from sbabench.analysis.report import comparison_tables, geometry_tables
from sbabench.analysis.terminal import (
    ProgressBar,
    aggregator_listing,
    cache_report,
    comparison_report,
    export_report,
    figures_report,
    model_report,
    plan_report,
    run_report,
    score_report,
    suite_line,
    task_listing,
    when,
)
from sbabench.models.encoder import EncoderConfig
from sbabench.models.machine_cache import Entry, Listing
from sbabench.run.embedding_store import CacheReport, SpaceUsage
from sbabench.run.execute import RunSummary
from sbabench.run.inspection import LayerReport, ModelReport
from sbabench.run.plan import plan_suite
from sbabench.run.progress import Event, EventKind
from sbabench.run.results import load_result
from sbabench.suite import expand, parse_suite
from tests import factories
from tests.analysis.test_report import _result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _text(*shown: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    for item in shown:
        console.print(item)
    return console.export_text()


def test_suite_line_counts_models_aggregators_tasks_replicates_and_units() -> None:
    suite = parse_suite(
        factories.TINY_SUITE.replace("router: random", "router: random\n    replicates: 3")
    )
    line = suite_line(Path("s.yaml"), suite, len(expand(suite)))
    assert line == (
        "[green]ok[/green] s.yaml: 2 model(s), 2 aggregator(s), 1 task(s), 3 replicates "
        "-> 7 unit(s)"
    )
    plain = parse_suite(factories.TINY_SUITE)
    assert suite_line(Path("s.yaml"), plain, 3).endswith("1 task(s) -> 3 unit(s)")


def test_plan_report_lists_every_unit_then_what_would_be_recomputed(tmp_path: Path) -> None:
    plan = plan_suite(parse_suite(factories.TINY_SUITE), tmp_path)
    plan.invalid.append("r/a.json (stale: its key no longer matches)")
    table, note, count = plan_report("tiny", plan)
    lines = _text(table).splitlines()
    assert "tiny: dry run" in lines[0]
    rows = [line.split("│")[1:3] for line in lines if line.startswith("│")]
    assert [(unit.strip(), status.strip()) for unit, status in rows] == [
        ("moe/linear/LeeDocSTS", "would run"),
        ("moe/sba/LeeDocSTS", "would run"),
        ("dense/dense/LeeDocSTS", "would run"),
    ]
    assert (
        isinstance(note, Text)
        and note.plain == "would recompute r/a.json (stale: its key no longer matches)"
    )
    assert count == "3 to run, 0 done"


def test_figures_and_export_reports_are_a_line_per_file(tmp_path: Path) -> None:
    assert figures_report([tmp_path / "a.png", tmp_path / "b.png"]) == [
        f"wrote {tmp_path / 'a.png'}",
        f"wrote {tmp_path / 'b.png'}",
    ]
    assert figures_report([]) == [
        "nothing to plot: no paired comparisons and no geometry statistics"
    ]
    written = [Exported("m/sba/T1", tmp_path / "T1.json", 0.81234)]
    assert export_report(written, tmp_path, "mteb") == [
        f"m/sba/T1: 0.8123 -> {tmp_path / 'T1.json'}",
        f"1 unit(s) exported to {tmp_path} (mteb format)",
    ]


def test_run_report_shows_the_scores_then_the_counts(tmp_path: Path) -> None:
    summary = RunSummary(computed=["a"], cached=["b", "c"], failed={"d": "boom"}, models_loaded=1)
    summary.results.append(_result("sba", 0.2))
    table, line = run_report(summary, "tiny", tmp_path)
    assert "tiny: main scores" in _text(table) and "0.8000" in _text(table)
    assert line == (
        f"1 computed, 2 cached, 1 failed, 1 model(s) loaded — results in {tmp_path / 'tiny'}"
    )


def test_cache_reports_say_what_was_removed_then_list_the_entries(tmp_path: Path) -> None:
    entry = Entry("routers", "0123456789abcdef0123", tmp_path / "x.bin", 2500, 0.0)
    listing = Listing(tmp_path, [entry], removed=3)
    removed, table = cache_report(listing)
    assert removed == f"removed 3 entr(ies) from {tmp_path}"
    assert table.title == f"machine cache: {tmp_path} (0.00 MB)"
    assert "│ routers │ 0123456789abcdef │ 2.5 │ " + when(0.0) + " │" in _text(table)
    assert len(cache_report(Listing(tmp_path, []))) == 1
    code = [Entry("code", f"{i:064x}", tmp_path / f"{i}.bin", 500, float(i)) for i in range(70)]
    text = _text(cache_report(Listing(tmp_path, [entry, *code]))[0])
    assert "│ code    │ 70 source files  │ 35.0 │ " + when(69.0) + " │" in text
    assert len(text.splitlines()) < 10  # one row for all the parsed files

    usage = SpaceUsage("s1", "suite", "moe", "sba", 12, 0.0456, 0.0)
    shown = cache_report(CacheReport(tmp_path / "e.sqlite", 2_000_000, [usage], removed=0))
    assert shown[0] == "removed 0 vector(s)"
    assert shown[1].title == f"embedding cache: {tmp_path / 'e.sqlite'} (2.0 MB on disk)"
    text = _text(shown[1])
    assert "│ suite │ moe   │ sba        │ 12      │ 0.05 │ " + when(0.0) + " │" in text
    assert len(cache_report(CacheReport(tmp_path / "e.sqlite", 0, []))) == 1


def test_model_report_has_a_row_per_moe_layer_and_the_embedding_config() -> None:
    config = EncoderConfig("mean", True, 128, {"query": "q: "}, ("Transformer", "Pooling"))
    layer = LayerReport("enc.1.combine", "mixtral", 8, 2, False, {"jacobian": "no norm"})
    table, pooling, modules = model_report(
        ModelReport("m", "BertModel", 47_512_345, (layer,), config)
    )
    text = _text(table)
    assert "m: BertModel, 47.5M parameters" in text
    assert (
        "│ enc.1.combine │ mixtral │ 8       │ 2     │ no           │ no jacobian: no norm │"
        in text
    )
    assert pooling == "  pooling=mean normalize=True max_length=128 prompts={'query': 'q: '}"
    assert modules == "  sentence-transformers modules: Transformer -> Pooling"
    dense = model_report(ModelReport("d", "BertModel", 1, (), EncoderConfig()))
    assert dense[1:] == [
        "  dense model: no MoE layers (aggregators do not apply)",
        "  pooling=mean normalize=True max_length=256 prompts=none",
        "  sentence-transformers modules: ",
    ]


def test_the_registry_listings_name_the_builtins() -> None:
    table, note = aggregator_listing()
    assert "│ sba " in _text(table) and "│ linear " in _text(table)
    assert note.startswith("User operators: name them as 'package.module:function'")
    kinds, bundled, mteb = task_listing()
    assert "│ sts " in _text(kinds).lower()
    assert "│ LeeDocSTS " in _text(bundled)
    assert mteb.startswith("Any MTEB task of type ") and "STS" in mteb


def test_score_report_says_when_there_is_no_geometry() -> None:
    results = [_result("linear", 0.5)]
    assert len(score_report(results, "r")) == 1
    assert score_report(results, "r", geometry=True)[1] == (
        "no geometry statistics in these results (geometry: {tokens: 0}?)"
    )
    stored = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert stored is not None
    assert len(score_report([stored], "r", geometry=True)) == 1 + len(geometry_tables([stored]))


def test_comparison_report_is_the_comparison_then_the_geometry_tables() -> None:
    stored = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert stored is not None
    results = [_result("linear", 0.5), _result("sba", 0.2)]
    comparison = compare_results(results, n_resamples=200)
    outcome = Outcome([*results, stored], comparison, comparison.verdict(0.005), 0)
    shown = comparison_report(outcome)
    tables = comparison_tables(comparison)
    assert len(shown) == len(tables) + len(geometry_tables([stored]))  # two systems: no Friedman
    assert _text(*shown[: len(tables)]) == _text(*tables)


def test_the_progress_bar_prints_notes_and_failures_and_counts_units() -> None:
    out = io.StringIO()
    with ProgressBar(Console(file=out, width=200)) as bar:
        bar.event(Event(EventKind.PLANNED, count=3))
        bar.event(Event(EventKind.NOTE, message="recomputing x: stale"))
        bar.event(Event(EventKind.UNIT_STARTED, label="m/sba/T"))
        bar.event(Event(EventKind.TEXTS, count=10))
        bar.event(Event(EventKind.BATCH, count=4))
        bar.event(Event(EventKind.UNIT_FAILED, label="m/sba/T", message="boom"))
        bar.event(Event(EventKind.UNIT_FINISHED, label="m/linear/T"))
        units, texts = (bar.bar.tasks[i] for i in (bar.units, bar.texts))
        assert (units.total, units.completed, units.description) == (3, 2, "m/sba/T")
        assert (texts.total, texts.completed) == (10, 4)
    printed = [line for line in out.getvalue().splitlines() if line]
    assert printed == ["recomputing x: stale", "failed m/sba/T: boom"]
