"""`history --html DIR`: one self-contained page (`DIR/index.html`: no script, style or font
from the network) with a sortable table of every unit, one chart per unit (score per commit,
its 95% band, steps marked; a point's tooltip names its commit and subject), the steps and
the drop gate. A static server can host the folder as it is.

The charts are SVG written here rather than matplotlib's: tooltips are plain `<title>`
elements, and the page stays small and readable without a plotting library in the browser.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from sbabench.analysis.history.changes import Step
from sbabench.analysis.history.render import gate_lines, sparkline, step_line
from sbabench.analysis.history.report import HistoryReport
from sbabench.analysis.history.series import UnitSeries
from sbabench.atomic import write_atomic
from sbabench.errors import SbabenchError

WIDTH, HEIGHT, MARGIN = 640, 160, 36

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .6em;border-bottom:1px solid #ddd}
th{cursor:pointer;text-align:left;background:#f4f4f4}th[aria-sort]::after{content:" \\2195"}
td.num{text-align:right;font-variant-numeric:tabular-nums}.down{color:#b00}.up{color:#070}
svg{background:#fafafa;border:1px solid #eee}figure{margin:1em 0}
"""

_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    var n = parseFloat(v);
    return isNaN(n) ? v : n;
  }
  function sortBy(table, column, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      var order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  var tables = document.querySelectorAll("table.sortable");
  tables.forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, column) {
      th.setAttribute("aria-sort", "none");
      th.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        sortBy(table, column, descending);
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      });
    });
  });
  if (location.hash === "#selftest" && tables.length) {
    var table = tables[0];
    table.querySelectorAll("th")[3].click();
    var order = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.getAttribute("data-unit");
    });
    document.body.setAttribute("data-sorted", order.join(","));
  }
  document.body.setAttribute("data-ready", "yes");
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


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


def _step_cell(steps: list[Step]) -> str:
    confirmed = [s for s in steps if s.confirmed]
    if not confirmed:
        return '<td data-value="0"></td>'
    step = confirmed[-1]
    kind = "down" if step.delta < 0 else "up"
    return (
        f'<td class="num {kind}" data-value="{step.delta:.6f}" title="{_e(step_line(step))}">'
        f"{step.delta:+.4f} @{_e(step.after.sha[:7])}</td>"
    )


def _table(report: HistoryReport) -> str:
    rows = []
    for n, unit in enumerate(report.units):
        newest = unit.points[-1]
        mine = [s for s in report.steps if s.suite == unit.suite and s.label == unit.label]
        rows.append(
            f'<tr data-unit="{_e(unit.suite)}:{_e(unit.label)}">'
            f'<td data-value="{_e(unit.suite)}">{_e(unit.suite)}</td>'
            f'<td data-value="{_e(unit.label)}"><a href="#unit-{n}">{_e(unit.label)}</a></td>'
            f'<td class="num" data-value="{len(unit.points)}">{len(unit.points)}</td>'
            f'<td class="num" data-value="{newest.score:.8f}">{newest.score:.4f}</td>'
            f'<td class="num" data-value="{newest.se:.8f}">{newest.se:.4f}</td>'
            f'<td data-value="">{_e(sparkline([p.score for p in unit.points]))}</td>'
            f"{_step_cell(mine)}</tr>"
        )
    head = "".join(
        f"<th>{name}</th>" for name in ("suite", "unit", "points", "newest", "se", "trend", "step")
    )
    return f'<table class="sortable" id="units"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'  # fmt: skip


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
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head><body>'
        f"<h1>{_e(title)}</h1><p>First-parent commits of {_e(report.branch)}; band: 95% "
        f"(1.96 se); dashed: a step (red down, green up, grey unconfirmed). Click a column "
        f"to sort.</p>{_table(report)}<h2>Steps</h2><ul>{steps}</ul>{gate}<h2>Charts</h2>"
        f"{charts}<script>{_SCRIPT}</script></body></html>\n"
    )


def write_page(report: HistoryReport, folder: Path) -> Path:
    """Write `folder/index.html` (atomically); returns its path."""
    path = folder / "index.html"
    try:
        write_atomic(path, page_html(report))
    except OSError as exc:
        raise SbabenchError(
            f"cannot write the page to {path} ({exc.strerror or type(exc).__name__})",
            fix="give --html a folder that can be created and written",
        ) from None
    return path
