"""`history --plot FILE`: one panel per unit, its score per commit with a 95% band (1.96 se),
steps marked (red: a confirmed drop, green: a confirmed rise, grey: unconfirmed) and new
series (settings, task or model changed) as dotted lines. PNG or SVG, by the file's suffix."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from sbabench.analysis.history.report import HistoryReport
from sbabench.errors import SbabenchError

FORMATS = (".png", ".svg")


def _panel(ax: Any, report: HistoryReport, index: int) -> None:
    unit = report.units[index]
    position = {c.sha: i for i, c in enumerate(report.line)}
    for number, points in enumerate(unit.segments):
        x = [position[p.commit.sha] for p in points]
        y = [p.score for p in points]
        half = [1.96 * p.se if math.isfinite(p.se) else 0.0 for p in points]
        ax.fill_between(x, [a - h for a, h in zip(y, half, strict=True)],
                        [a + h for a, h in zip(y, half, strict=True)], alpha=0.2, color="C0")  # fmt: skip
        ax.plot(x, y, marker="o", markersize=3, color="C0")
        if number:
            ax.axvline(x[0] - 0.5, linestyle=":", color="black", linewidth=0.8)
    for step in (s for s in report.steps if s.suite == unit.suite and s.label == unit.label):
        color = "grey" if not step.confirmed else "red" if step.delta < 0 else "green"
        ax.axvline(position[step.after.sha] - 0.5, linestyle="--", color=color, linewidth=1)
    ax.set_title(f"{unit.suite}: {unit.label}", fontsize=8, loc="left")
    ax.set_ylabel(unit.score_name, fontsize=7)
    ax.tick_params(labelsize=6)


def plot_image(report: HistoryReport, path: Path) -> bytes:
    """The figure as the image `path` names by its suffix (.png or .svg)."""
    if path.suffix.lower() not in FORMATS:
        raise SbabenchError(
            f"--plot {path}: unknown image type {path.suffix!r}",
            fix="give a file ending in .png or .svg",
        )
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    rows = len(report.units)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 1.8 * rows + 0.6), squeeze=False)
    try:
        for index in range(rows):
            _panel(axes[index][0], report, index)
        shown = sorted({p.commit.sha for u in report.units for s in u.segments for p in s})
        position = {c.sha: i for i, c in enumerate(report.line)}
        ticks = sorted(position[sha] for sha in shown)
        axes[-1][0].set_xticks(ticks, [report.line[i].sha[:7] for i in ticks], rotation=90)
        fig.tight_layout()
        image = io.BytesIO()
        fig.savefig(image, dpi=120, format=path.suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return image.getvalue()
