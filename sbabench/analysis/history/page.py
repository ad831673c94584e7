"""`history --html DIR`: one self-contained page (`DIR/index.html`: no script, style or font
from the network) with a sortable table of every unit, one chart per unit (score per commit,
its 95% band, steps marked; a point's tooltip names its commit and subject), the steps and
the drop gate. A static server can host the folder as it is.

The charts are SVG written here rather than matplotlib's: tooltips are plain `<title>`
elements, and the page stays small and readable without a plotting library in the browser.
"""

from __future__ import annotations

import math

from sbabench.analysis.history.changes import Step
from sbabench.analysis.history.render import gate_lines, sparkline, step_line
from sbabench.analysis.history.report import HistoryReport
from sbabench.analysis.history.series import UnitSeries
from sbabench.analysis.html import Cell, document, sortable_table
from sbabench.analysis.html import escape as _e

WIDTH, HEIGHT, MARGIN = 640, 160, 36


def _chart(report: HistoryReport, unit: UnitSeries) -> str:
    """An SVG chart of one unit: the band, the line, the points with tooltips, the steps."""
    position = {c.sha: i for i, c in enumerate(report.line)}
    points = [p for segment in unit.segments for p in segment]
    low = min(p.score - 1.96 * (p.se if math.isfinite(p.se) else 0) for p in points)
    high = max(p.score + 1.96 * (p.se if math.isfinite(p.se) else 0) for p in points)
    span = (high - low) or 1.0
    first, last = position[points[0].commit.sha], position[points[-1].commit.sha]

    def x(sha: str) -> float:
        return MARGIN + (position[sha] - first) / max(last - first, 1) * (WIDTH - 2 * MARGIN)

    def y(value: float) -> float:
        return HEIGHT - MARGIN / 2 - (value - low) / span * (HEIGHT - MARGIN)

    parts = [f'<svg role="img" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">']
    for segment in unit.segments:
        half = [1.96 * p.se if math.isfinite(p.se) else 0.0 for p in segment]
        upper = [f"{x(p.commit.sha):.1f},{y(p.score + h):.1f}" for p, h in zip(segment, half, strict=True)]  # fmt: skip
        lower = [f"{x(p.commit.sha):.1f},{y(p.score - h):.1f}" for p, h in zip(segment, half, strict=True)]  # fmt: skip
        parts.append(f'<polygon points="{" ".join(upper + lower[::-1])}" fill="#1f77b4" fill-opacity="0.15"/>')  # fmt: skip
        line = " ".join(f"{x(p.commit.sha):.1f},{y(p.score):.1f}" for p in segment)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4"/>')
    for step in (s for s in report.steps if s.suite == unit.suite and s.label == unit.label):
        colour = "#999" if not step.confirmed else "#b00" if step.delta < 0 else "#070"
        at = (x(step.before.sha) + x(step.after.sha)) / 2
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="0" y2="{HEIGHT}" stroke="{colour}" stroke-dasharray="4 3"><title>{_e(step_line(step))}</title></line>')  # fmt: skip
    for p in points:
        tip = f"{p.commit.sha[:12]} {p.commit.date}\n{p.commit.subject}\n{p.score:.4f} ± {p.se:.4f}"
        parts.append(f'<circle cx="{x(p.commit.sha):.1f}" cy="{y(p.score):.1f}" r="3.5" fill="#1f77b4"><title>{_e(tip)}</title></circle>')  # fmt: skip
    parts.append(f'<text x="4" y="12" font-size="10">{high:.4f}</text>')
    parts.append(f'<text x="4" y="{HEIGHT - 4}" font-size="10">{low:.4f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _step_cell(steps: list[Step]) -> Cell:
    confirmed = [s for s in steps if s.confirmed]
    if not confirmed:
        return Cell("", value=0.0)
    step = confirmed[-1]
    return Cell(
        f"{step.delta:+.4f} @{step.after.sha[:7]}",
        value=step.delta,
        css="num " + ("down" if step.delta < 0 else "up"),
        title=step_line(step),
    )


def _table(report: HistoryReport) -> str:
    rows = []
    for n, unit in enumerate(report.units):
        newest = unit.points[-1]
        mine = [s for s in report.steps if s.suite == unit.suite and s.label == unit.label]
        cells = [
            Cell(unit.suite, value=unit.suite),
            Cell(unit.label, value=unit.label, link=f"unit-{n}"),
            Cell(str(len(unit.points)), css="num"),
            Cell(f"{newest.score:.4f}", value=newest.score, css="num"),
            Cell(f"{newest.se:.4f}", value=newest.se, css="num"),
            Cell(sparkline([p.score for p in unit.points]), value=""),
            _step_cell(mine),
        ]
        rows.append((f"{unit.suite}:{unit.label}", cells))
    headers = ("suite", "unit", "points", "newest", "se", "trend", "step")
    return sortable_table("units", headers, rows, selftest_column=3)


def page_html(report: HistoryReport) -> str:
    """The whole page as text."""
    charts = "".join(
        f'<figure id="unit-{n}"><figcaption>{_e(u.suite)}: {_e(u.label)} ({_e(u.score_name)})'
        f"</figcaption>{_chart(report, u)}</figure>"
        for n, u in enumerate(report.units)
    )
    steps = "".join(f"<li>{_e(step_line(s))}</li>" for s in report.steps) or "<li>none found</li>"
    gate = ""
    if report.gate is not None:
        gate = "<h2>Drop gate</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in gate_lines(report.gate)) + "</ul>"  # fmt: skip
    title = f"sbabench history: {report.branch} on {report.machine}"
    return document(
        title,
        f"<p>First-parent commits of {_e(report.branch)}; band: 95% (1.96 se); dashed: a step "
        f"(red down, green up, grey unconfirmed). Click a column to sort.</p>{_table(report)}"
        f"<h2>Steps</h2><ul>{steps}</ul>{gate}<h2>Charts</h2>{charts}",
    )
