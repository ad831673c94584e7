"""Score tables: rows = tasks, columns = model/aggregator."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from rich.table import Table

from sbabench.results import UnitResult


def score_frame(results: Sequence[UnitResult]) -> pd.DataFrame:
    """Main scores as a task x 'model/aggregator' frame, in first-seen order."""
    rows = [
        {"task": r.task, "column": f"{r.model}/{r.aggregator}", "score": r.main_score}
        for r in results
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(
        index="task", columns="column", values="score", aggfunc="first", sort=False
    )
    return table.reindex(columns=list(dict.fromkeys(frame["column"])))


def score_table(results: Sequence[UnitResult], title: str = "scores") -> Table:
    """A rich table of main scores; the best score of each task is bold."""
    frame = score_frame(results)
    metric = {r.task: r.main_score_name for r in results}
    table = Table(title=title)
    table.add_column("task", no_wrap=True)
    table.add_column("metric", style="dim", no_wrap=True)
    for column in frame.columns:
        model, _, aggregator = str(column).partition("/")
        table.add_column(f"{model}\n{aggregator}", justify="right", no_wrap=True)
    for task, row in frame.iterrows():
        best = row.max()
        cells = [
            "—" if pd.isna(v) else (f"[bold]{v:.4f}[/bold]" if v == best else f"{v:.4f}")
            for v in row
        ]
        table.add_row(str(task), metric.get(str(task), ""), *cells)
    return table


def score_markdown(results: Sequence[UnitResult]) -> str:
    """The same table as GitHub-flavoured Markdown."""
    frame = score_frame(results)
    return frame.to_markdown(floatfmt=".4f") if not frame.empty else "(no results)"
