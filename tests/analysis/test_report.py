"""Reports: score tables, comparison tables, geometry tables, in rich and Markdown."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from sbabench.analysis.compare import Outcome, compare_results
from sbabench.analysis.report import (
    comparison_markdown,
    comparison_tables,
    comparison_text,
    geometry_markdown,
    geometry_tables,
    score_markdown,
    score_table,
)
from sbabench.run.results import load_result
from sbabench.tasks.items import ItemScores
from tests import factories

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLD = np.random.default_rng(0).random(200)


def _result(aggregator: str, noise: float, task: str = "T1") -> factories.UnitResult:
    predicted = GOLD + noise * np.random.default_rng(1).normal(size=200)
    items = {"default": ItemScores(kind="sts", gold=GOLD.tolist(), predicted=predicted.tolist())}
    return factories.result(aggregator, items, float(1 - noise), task=task)


def _render(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_score_tables_have_a_row_per_task_and_a_column_per_system() -> None:
    results = [_result("linear", 0.5), _result("sba", 0.2), _result("linear", 0.5, task="T2")]
    text = _render(score_table(results, title="scores"))
    assert "T1" in text and "T2" in text and "0.8000" in text and "0.5000" in text
    markdown = score_markdown(results).splitlines()
    assert markdown[0].startswith("| task") and "m/linear" in markdown[0] and "m/sba" in markdown[0]
    assert any(line.startswith("| T2") and "—" in line for line in markdown)  # no sba on T2


def test_comparison_tables_show_the_difference_and_its_test() -> None:
    comparison = compare_results([_result("linear", 0.5), _result("sba", 0.2)], n_resamples=200)
    text = "\n".join(_render(t) for t in comparison_tables(comparison))
    assert "sba" in text and "+0.3000" in text
    markdown = comparison_markdown(comparison)
    assert "| T1" in markdown and "### Across tasks" in markdown


def test_geometry_tables_from_a_stored_result() -> None:
    result = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert result is not None
    tables = geometry_tables([result])
    assert len(tables) == 2  # geometry and load balance; no probes in this result
    text = _render(tables[0])
    assert "encoder.layer.1.output.dense" in text and "minilm-moe/sba" in text
    markdown = geometry_markdown([result])
    assert markdown.count("encoder.layer.") == 6
    assert geometry_markdown([_result("linear", 0.1)]) == ""


def test_the_load_balance_table_reads_the_expert_loads() -> None:
    from sbabench.analysis.report import LOAD_COLUMNS, geometry_rows

    result = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert result is not None and result.geometry is not None
    layers = dict(result.geometry.layers)
    name = next(iter(layers))
    routing = {**layers[name].routing, "load": [0.5, 0.25, 0.25, 0.0, 0.0]}
    layers[name] = layers[name].model_copy(update={"routing": routing})
    result = result.model_copy(
        update={"geometry": result.geometry.model_copy(update={"layers": layers})}
    )
    headers, rows = geometry_rows([result], LOAD_COLUMNS)
    row = dict(zip(headers, next(r for r in rows if name.startswith(r[1])), strict=True))
    assert row["max/mean load"] == "2.500"  # 0.5 / (1 / 5)
    assert row["experts with no token"] == "2" and row["experts"] == "5"


def _outcome() -> Outcome:
    """linear vs sba on T1, plus a stored result that carries geometry statistics."""
    stored = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert stored is not None
    results = [_result("linear", 0.5), _result("sba", 0.2)]
    comparison = compare_results(results, n_resamples=200)
    verdict = comparison.verdict(0.005)
    return Outcome([*results, stored], comparison, verdict, 0)


def test_comparison_text_as_json_has_one_record_per_row() -> None:
    records = json.loads(comparison_text(_outcome(), "json"))
    assert [(r["aggregator"], r["mark"]) for r in records] == [
        ("linear", "baseline"),
        ("sba", "better"),
    ]
    assert records[1]["baseline"] == "m/linear" and records[1]["delta"] == pytest.approx(0.3)
    assert records[0]["delta"] is None


def test_comparison_text_as_csv_has_a_header_and_a_line_per_row() -> None:
    lines = comparison_text(_outcome(), "csv").splitlines()
    assert lines[0].startswith("task,task_type,model,aggregator,score,mark,baseline,")
    assert len(lines) == 3
    assert lines[1].startswith("T1,STS,m,linear,0.5,baseline,,")
    assert lines[2].startswith("T1,STS,m,sba,0.8,better,m/linear,0.5,0.3")


def test_csv_cells_that_a_spreadsheet_would_run_are_shown_as_text() -> None:
    from sbabench.analysis.html import spreadsheet_cell

    formulas = ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "\n=1",
                "  =1+1", "\uff1d1+1", "\uff0b1")  # fmt: skip
    for formula in formulas:
        assert spreadsheet_cell(formula) == "'" + formula
    for kept in (-0.25, 3, None, True, "m/sba/T1", "a=b", "—"):
        assert spreadsheet_cell(kept) == kept
    outcome = _outcome()
    rows = outcome.comparison.rows
    rows[1] = replace(rows[1], note="=cmd|' /C calc'!A0")
    lines = comparison_text(outcome, "csv").splitlines()
    assert "'=cmd|' /C calc'!A0" in lines[2] and ",=cmd" not in lines[2]
    assert lines[1].startswith("T1,STS,m,linear,0.5,baseline,,")  # numbers as they were


def test_comparison_text_as_markdown_adds_the_geometry_tables() -> None:
    outcome = _outcome()
    markdown = comparison_text(outcome, "markdown")
    verdict = f"**Verdict:** {outcome.verdict.text}\n\n"  # the gate's line leads the report
    assert markdown.startswith(verdict + comparison_markdown(outcome.comparison))
    geometry = markdown.split("\n### Geometry per MoE layer\n\n", 1)[1]
    assert geometry == geometry_markdown(outcome.results) + "\n"
    # a table written to a file is the Markdown without the geometry
    assert comparison_text(outcome, "table") == verdict + comparison_markdown(outcome.comparison)


def test_a_note_holding_a_pipe_or_a_line_break_keeps_the_markdown_table_whole() -> None:
    import dataclasses

    comparison = compare_results([_result("linear", 0.5), _result("sba", 0.6)])
    comparison.rows[-1] = dataclasses.replace(
        comparison.rows[-1], note="read a|b <img src=x>\nthen c"
    )
    text = comparison_markdown(comparison)
    per_task = text.split("### Per task")[1].split("\n\n")[1]
    table = [line for line in per_task.splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, rule, two rows
    cells = {line.replace("\\|", "").count("|") for line in table}
    assert len(cells) == 1  # every row has as many cell borders as the header
    assert "read a\\|b &lt;img src=x&gt; then c" in text and "<img" not in text
