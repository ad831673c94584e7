"""A history report as text: a terminal table (rich, 80 columns: the unit wraps, the trend is a
sparkline of the newest points), Markdown, CSV (one row per unit and commit) and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from sbabench.analysis.history.changes import Step
from sbabench.analysis.history.gate import DropGate, GateRow
from sbabench.analysis.history.report import HistoryReport
from sbabench.analysis.history.series import Point, UnitSeries
from sbabench.analysis.html import markdown_text, spreadsheet_cell

SPARK = "▁▂▃▄▅▆▇█"
TREND_POINTS = 12
"""Points the terminal's sparkline shows (the newest)."""


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled between the smallest and largest (` `: NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    span = high - low
    return "".join(
        " " if not math.isfinite(v) else SPARK[0 if span == 0 else round((v - low) / span * 7)]
        for v in values
    )


UNIT_WIDTH = 21
"""Width of the terminal's unit column: a label wraps after a '/' (the table fits 80 columns)."""


def wrap_label(label: str, width: int = UNIT_WIDTH) -> str:
    """`label` in lines of at most `width`, broken after a '/' where one is near enough, else
    cut (a task name longer than the column)."""
    lines, line = [], ""
    for part in label.replace("/", "/\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
        while len(line) > width:
            lines.append(line[:width])
            line = line[width:]
    return "\n".join([*lines, line] if line else lines)


def _short(sha: str) -> str:
    return sha[:7]


def _score(point: Point) -> str:
    se = f"±{point.se:.3f}" if math.isfinite(point.se) else "±?"
    return f"{point.score:.4f}{se}{'*' if point.dirty else ''}"


def _last_step(steps: Sequence[Step], unit: UnitSeries) -> str:
    mine = [s for s in steps if s.suite == unit.suite and s.label == unit.label and s.confirmed]
    if not mine:
        return ""
    step = mine[-1]
    return f"{step.delta:+.4f} @{_short(step.after.sha)}"


def step_line(step: Step) -> str:
    """One sentence per step: where, by how much, the test."""
    where = f"{_short(step.before.sha)}..{_short(step.after.sha)} ({step.after.subject})"
    if step.test is None:
        return f"{step.label}: level {step.level_change:+.4f} at {where}; UNCONFIRMED: {step.note}"
    t = step.test
    state = "CONFIRMED" if step.confirmed else "UNCONFIRMED"
    pooled = "" if step.sides == (1, 1) else f", levels of {step.sides[0]} and {step.sides[1]} commits"  # fmt: skip
    return (
        f"{step.label}: {t.delta:+.4f} (95% CI {t.ci_low:+.4f}..{t.ci_high:+.4f}, "
        f"p {t.p_value:.2g}{pooled}) at {where}; {state}"
    )


def gate_lines(gate: DropGate) -> Iterator[str]:
    """One line per unit of the drop gate, then its verdict."""
    for row in gate.rows:
        head = _short(row.head.sha) if row.head else "?"
        if row.test is None:  # NOT TESTED (a dirty record among them): the reason says why
            yield f"{row.state}: {row.label} ({_short(row.since.sha)}..{head}): {row.reason}"
            continue
        t = row.test
        yield (
            f"{row.state}: {row.label} {_short(row.since.sha)}..{head}: {t.delta:+.4f} "
            f"(95% CI {t.ci_low:+.4f}..{t.ci_high:+.4f}, p(drop > {gate.max_drop:g}) "
            f"{row.p_drop:.2g})"
        )
    yield gate.text


def terminal(report: HistoryReport) -> list[RenderableType]:
    """Tables per suite (unit, points, newest score ± se, trend, last confirmed step), then
    the steps and the gate, each a line."""
    shown: list[RenderableType] = []
    for suite in sorted({u.suite for u in report.units}):
        table = Table(
            title=f"{suite} on {report.machine}, {report.branch} (first parent)",
            box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
        )  # fmt: skip
        table.add_column("unit", no_wrap=True)
        table.add_column("n", justify="right")
        table.add_column("newest", no_wrap=True)
        table.add_column("trend", no_wrap=True)
        table.add_column("step", no_wrap=True)
        for unit in (u for u in report.units if u.suite == suite):
            points = unit.points
            trend = sparkline([p.score for p in points[-TREND_POINTS:]])
            earlier = sum(len(s) for s in unit.segments[:-1])
            count = f"{len(points)}" + (f"+{earlier}" if earlier else "")
            table.add_row(wrap_label(unit.label), count, _score(points[-1]), trend, _last_step(report.steps, unit))  # fmt: skip
        shown.append(table)
    shown.append(
        Text("n: points in the current series (+ earlier series); *: a dirty tree", style="dim")
    )
    shown += [Text(step_line(s)) for s in report.steps]
    if report.gate is not None:
        shown += [Text(line) for line in gate_lines(report.gate)]
    return shown


def markdown(report: HistoryReport) -> str:
    """A Markdown table per suite, the steps as a list, and the gate."""
    lines = []
    for suite in sorted({u.suite for u in report.units}):
        where = markdown_text(f"{suite} on {report.machine} ({report.branch}, first parent)", free=True)  # fmt: skip
        lines += [f"### {where}", ""]
        lines += ["| unit | points | newest | se | trend | step |", "|---|---:|---:|---:|---|---|"]
        for unit in (u for u in report.units if u.suite == suite):
            newest = unit.points[-1]
            lines.append(
                f"| {unit.label} | {len(unit.points)} | {newest.score:.4f}{'*' if newest.dirty else ''} | {newest.se:.4f} | "
                f"{sparkline([p.score for p in unit.points])} | {_last_step(report.steps, unit)} |"
            )
        lines.append("")
    if any(u.points[-1].dirty for u in report.units):
        lines += ["\\*: recorded from a tree with uncommitted changes", ""]
    if report.steps:
        steps = [f"- {markdown_text(step_line(s), free=True)}" for s in report.steps]
        lines += ["**Steps**", "", *steps, ""]
    if report.gate is not None:
        gate = [f"- {markdown_text(line, free=True)}" for line in gate_lines(report.gate)]
        lines += ["**Drop gate**", "", *gate, ""]
    return "\n".join(lines)


def _point_rows(report: HistoryReport) -> Iterator[dict[str, Any]]:
    starts = {(s.suite, s.label, s.after.sha): s for s in report.steps}
    for unit in report.units:
        for series, points in enumerate(unit.segments):
            for p in points:
                step = starts.get((unit.suite, unit.label, p.commit.sha))
                yield {
                    "suite": unit.suite, "unit": unit.label, "score_name": unit.score_name,
                    "series": series, "commit": p.commit.sha, "date": p.commit.date,
                    "subject": p.commit.subject, "score": p.score, "se": p.se,
                    "replicates": len(p.records), "dirty": p.dirty,
                    "step": "" if step is None else ("confirmed" if step.confirmed else "unconfirmed"),
                }  # fmt: skip


def _nan_free(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def as_csv(report: HistoryReport) -> str:
    """One row per unit and commit."""
    rows = [{k: spreadsheet_cell(v) for k, v in row.items()} for row in _point_rows(report)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["unit"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _step_dict(step: Step) -> dict[str, Any]:
    t = step.test
    return {
        "suite": step.suite, "unit": step.label, "before": step.before.sha,
        "after": step.after.sha, "subject": step.after.subject,
        "level_change": step.level_change, "delta": t.delta if t else None,
        "ci_low": t.ci_low if t else None, "ci_high": t.ci_high if t else None,
        "p_value": t.p_value if t else None, "confirmed": step.confirmed, "note": step.note,
        "commits_before": step.sides[0], "commits_after": step.sides[1],
    }  # fmt: skip


def as_json(report: HistoryReport) -> str:
    """Points, steps and the gate, as one object."""
    data: dict[str, Any] = {
        "machine": report.machine,
        "branch": report.branch,
        "alpha": report.alpha,
        "points": list(_point_rows(report)),
        "steps": [_step_dict(s) for s in report.steps],
    }
    if report.gate is not None:
        data["gate"] = {
            "failed": report.gate.failed,
            "verdict": report.gate.text,
            "max_drop": report.gate.max_drop,
            "units": [_gate_dict(r) for r in report.gate.rows],
        }
    return json.dumps(_walk(data), indent=2, allow_nan=False) + "\n"


def _gate_dict(row: GateRow) -> dict[str, Any]:
    t = row.test
    return {
        "suite": row.suite, "unit": row.label, "state": row.state, "since": row.since.sha,
        "head": row.head.sha if row.head else None, "delta": t.delta if t else None,
        "ci_low": t.ci_low if t else None, "ci_high": t.ci_high if t else None,
        "p_drop": row.p_drop, "reason": row.reason, "dirty": row.dirty,
    }  # fmt: skip


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v) for v in value]
    return _nan_free(value)


def text(report: HistoryReport, fmt: str) -> str:
    """The report in `fmt`: markdown, csv or json."""
    return {"markdown": markdown, "csv": as_csv, "json": as_json}[fmt](report)
