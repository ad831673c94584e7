"""`compare --format html`: one comparison as a self-contained page: the verdict, a sortable
table of every row (the columns of the Markdown report, each unit's state coloured), a forest
chart of the tested differences with their 95% CIs, the across-task summaries and the notes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sbabench.analysis.html import Cell, document, escape, sortable_table
from sbabench.analysis.report import (
    COLUMNS_NOTE,
    REPLICATES_NOTE,
    compare_columns,
    friedman_line,
    is_replicated,
    row_cells,
    summary_cells,
    summary_columns,
)

if TYPE_CHECKING:
    from sbabench.analysis.compare import Comparison, Outcome, Row

_STATE_CSS = {"regression": "down", "not tested": "down", "pass": "up"}
LABEL_WIDTH, PLOT_WIDTH, ROW_HEIGHT = 300, 420, 22


def _row(row: Row, replicated: bool, columns: list[str]) -> tuple[str, list[Cell]]:
    shown = row_cells(row, replicated)
    state = "" if row.state is None else row.state.value
    cells = []
    for name, text in zip(columns, shown, strict=True):
        if name == "state":
            cells.append(Cell(text, value=text, css=_STATE_CSS.get(state, "")))
        elif name in ("task", "model/aggregator", "baseline", "note", ""):
            cells.append(Cell(text, value=text))
        else:
            cells.append(Cell(text, css="num"))
    return f"{row.model}/{row.aggregator}/{row.task}", cells


def _forest(comparison: Comparison) -> str:
    """The tested differences (Δ items) with their 95% CIs, one line per row, zero marked."""
    tested = [
        r
        for r in comparison.rows
        if r.item_delta is not None and r.ci_low is not None and r.ci_high is not None
        and all(math.isfinite(v) for v in (r.item_delta, r.ci_low, r.ci_high))
    ]  # fmt: skip
    if not tested:
        return "<p>No row has a tested difference to draw.</p>"
    low = min(0.0, *(r.ci_low for r in tested if r.ci_low is not None))
    high = max(0.0, *(r.ci_high for r in tested if r.ci_high is not None))
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return LABEL_WIDTH + 10 + (value - low) / span * (PLOT_WIDTH - 20)

    height = ROW_HEIGHT * (len(tested) + 1)
    width = LABEL_WIDTH + PLOT_WIDTH
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="0" y2="{height}" stroke="#999" stroke-dasharray="4 3"/>')  # fmt: skip
    for n, r in enumerate(tested, start=1):
        assert r.item_delta is not None and r.ci_low is not None and r.ci_high is not None
        y = n * ROW_HEIGHT
        colour = "#b00" if r.ci_high < 0 else "#070" if r.ci_low > 0 else "#1f77b4"
        label = f"{r.model}/{r.aggregator} {r.task}"
        tip = f"{label}: {r.item_delta:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] vs {r.baseline}"
        parts.append(f'<text x="4" y="{y + 4}" font-size="11">{escape(label[:48])}</text>')
        parts.append(f'<line x1="{x(r.ci_low):.1f}" x2="{x(r.ci_high):.1f}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        parts.append(f'<circle cx="{x(r.item_delta):.1f}" cy="{y}" r="4" fill="{colour}"><title>{escape(tip)}</title></circle>')  # fmt: skip
    parts.append(f'<text x="{LABEL_WIDTH + 10}" y="{height - 4}" font-size="10">{low:+.4f}</text>')
    parts.append(f'<text x="{width - 60}" y="{height - 4}" font-size="10">{high:+.4f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _paragraphs(text: str) -> str:
    return "".join(f'<p class="note">{escape(line)}</p>' for line in text.splitlines() if line)


def comparison_html(outcome: Outcome) -> str:
    """The whole page as text."""
    comparison = outcome.comparison
    replicated = is_replicated(comparison)
    columns = compare_columns(comparison)
    rows = [_row(r, replicated, columns) for r in comparison.rows]
    at = columns.index("score")
    failed = bool(outcome.exit_code or outcome.verdict.regressions or outcome.verdict.untested)
    body = [
        f'<p class="verdict{" failed" if failed else ""}">{escape(outcome.verdict.text)}</p>',
        "<h2>Per task</h2>",
        sortable_table("rows", columns, rows, selftest_column=at),
        _paragraphs(COLUMNS_NOTE),
    ]
    if replicated:
        body.append(_paragraphs(REPLICATES_NOTE))
    if comparison.coverage:
        body.append(_paragraphs(comparison.coverage))
    body += ["<h2>Differences (Δ items, 95% CI)</h2>", _forest(comparison)]
    if comparison.summaries:
        summaries = [
            (f"{s.scope}:{s.candidate}", [Cell(t) for t in summary_cells(s, replicated)])
            for s in comparison.summaries
        ]
        body += ["<h2>Across tasks</h2>", sortable_table("summaries", summary_columns(replicated), summaries)]  # fmt: skip
    line = friedman_line(comparison)
    if line:
        body.append(_paragraphs(line))
    return document("sbabench compare", "".join(body))
