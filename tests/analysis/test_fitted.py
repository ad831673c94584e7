"""Tables fit the terminal: nothing is cut to "…", the columns a reader can spare go first and
are named, and a wide terminal or a pipe shows every column as a plain table would."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from sbabench.analysis.compare import compare, load_folder
from sbabench.analysis.fitted import Column, FittedTable
from sbabench.analysis.report import comparison_tables, geometry_tables, score_table

BASELINE = Path(__file__).resolve().parents[2] / "results" / "baseline" / "quickstart"


def _render(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _toy() -> FittedTable:
    table = FittedTable(
        "toy",
        [
            Column("task", no_wrap=True),
            Column("model/aggregator", no_wrap=True),
            Column("score", keep=2),
            Column("p value", keep=1),
            Column("verdict"),
        ],
    )
    table.add_row(
        "MiniNewsgroupsClustering", "minilm-moe/linear", "0.7288", "0.00599", "worse by far"
    )
    table.add_row("LeeDocSTS", "minilm-moe/sba", "0.4963", "1.88e-06", "level")
    return table


def test_a_table_that_fits_is_the_plain_table() -> None:
    table = _toy()
    assert _render(table, 200) == _render(table.table(), 200)
    assert "not shown" not in _render(table, 200)


def test_a_narrow_terminal_drops_the_spare_columns_first_and_names_them() -> None:
    text = _render(_toy(), 70)
    assert "score" not in text.split("not shown")[0]  # keep=2 went before keep=1
    assert "not shown at this width: score (" in text  # and only score
    assert "MiniNewsgroupsClustering" in text and "0.00599" in text and "p value" in text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 70


def test_names_fold_rather_than_anything_being_cut_when_nothing_else_can_go() -> None:
    text = _render(_toy(), 40)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 40
    first_column = "".join(
        line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")
    )
    assert "MiniNewsgroupsClustering" in first_column  # folded over lines, not cut
    assert "level" in text and "worse" in text


@pytest.mark.parametrize("width", [40, 56, 64, 80, 100, 120])
def test_the_quickstart_comparison_is_readable_at_common_widths(width: int) -> None:
    outcome = compare([BASELINE])
    for table in [*comparison_tables(outcome.comparison), *geometry_tables(outcome.results)]:
        text = _render(table, width)
        assert "…" not in text, text
        assert max(len(line) for line in text.splitlines()) <= width
    per_task = _render(comparison_tables(outcome.comparison)[0], width)
    for value in ("-0.0290", "[-0.0408,", "-0.0171]", "3.51e-06"):  # the verdict's numbers, whole
        assert value in per_task
    shown = _render(score_table(load_folder(BASELINE)), width)
    assert "…" not in shown and "0.5253" in shown


def test_a_pipe_shows_every_column() -> None:
    outcome = compare([BASELINE])
    text = _render(comparison_tables(outcome.comparison)[0], 200)
    assert "Steiger p" in text and "baseline" in text and "not shown" not in text


def test_messages_wrap_at_spaces_in_a_terminal_and_never_inside_a_location() -> None:
    from sbabench.analysis.terminal import wrapped

    location = "/a/rather/long/path/to/some/suites/folder/my-suite.yaml:12:7:"
    message = f"problems\n  {location} models[0].experts: should be at least 2, got 0 (fix it)"
    assert wrapped(message, None) == message  # a pipe or a log: one line per message
    lines = wrapped(message, 50).splitlines()
    assert lines[0] == "problems" and lines[1] == f"  {location}"  # whole, though over 50
    assert all(len(line) <= 50 for line in lines[2:]) and lines[2].startswith("      models")
    assert " ".join(line.strip() for line in lines[1:]) == message.splitlines()[1].strip()


def _replicated_comparison() -> object:
    """Two systems over three replicates: the replicate columns (reps, SD, agree, P(B>A))."""
    import numpy as np

    from sbabench.analysis.compare import compare_results
    from sbabench.tasks.items import ItemScores
    from tests import factories

    gold = np.random.default_rng(0).random(120)
    results = []
    for replicate in range(3):
        for aggregator, noise in (("linear", 0.5), ("sba", 0.3)):
            predicted = gold + noise * np.random.default_rng(replicate).normal(size=120)
            items = {
                "default": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())
            }
            results.append(
                factories.result(
                    aggregator,
                    items,
                    1 - noise,
                    task="ALongTaskNameForTheTable",
                    replicate=replicate,
                )
            )
    return compare_results(results, n_resamples=200)


def test_with_replicates_how_many_agree_stays_at_80_columns() -> None:
    comparison = _replicated_comparison()
    text = _render(comparison_tables(comparison)[0], 80)
    header = text.split("┡")[0]
    assert "agree" in header and "3/3" in text
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    wide = _render(comparison_tables(comparison)[0], 200)
    assert all(name in wide for name in ("reps", "SD (reps)", "agree", "P(B>A)"))


def test_below_the_narrowest_table_each_row_is_a_block_and_no_number_is_split() -> None:
    outcome = compare([BASELINE])
    text = _render(comparison_tables(outcome.comparison)[0], 50)
    assert "Δ items [95% CI]  -0.0290 [-0.0408, -0.0171]" in text
    assert "p (Holm)          3.51e-06" in text and "Steiger p         1.88e-06" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 50
    narrower = _render(comparison_tables(outcome.comparison)[0], 36)  # the CI wraps at spaces
    words = narrower.split()
    assert all(w in words for w in ("-0.0290", "[-0.0408,", "-0.0171]", "3.51e-06", "1.88e-06"))
