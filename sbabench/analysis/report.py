"""Score tables: rows = tasks, columns = model/aggregator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sbabench.analysis.fitted import Column, FittedTable
from sbabench.analysis.html import markdown_text, spreadsheet_cell
from sbabench.run.results import UnitResult

if TYPE_CHECKING:
    from sbabench.analysis.compare import Comparison, Outcome, Row, Summary


def score_grid(
    results: Sequence[UnitResult],
) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """Tasks (rows) and 'model/aggregator' columns in first-seen order, and the main scores
    (the mean over replicates where a model has several)."""
    tasks = list(dict.fromkeys(r.task for r in results))
    columns = list(dict.fromkeys(f"{r.model}/{r.aggregator}" for r in results))
    scores = {cell: float(np.mean(values)) for cell, values in _replicate_scores(results).items()}
    return tasks, columns, scores


def _replicate_scores(results: Sequence[UnitResult]) -> dict[tuple[str, str], list[float]]:
    """(task, 'model/aggregator') -> the main score of each replicate."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in results:
        cells.setdefault((r.task, f"{r.model}/{r.aggregator}"), []).append(r.main_score)
    return cells


def _with_spread(value: float, values: list[float]) -> str:
    """`mean` or, over several replicates, `mean ±SD (nR)`."""
    if len(values) < 2:
        return f"{value:.4f}"
    return f"{value:.4f} ±{np.std(values, ddof=1):.4f} ({len(values)}r)"


def score_table(results: Sequence[UnitResult], title: str = "scores") -> FittedTable:
    """A table of main scores (replicates: mean ±SD); the best score of each task is bold."""
    tasks, columns, scores = score_grid(results)
    spread = _replicate_scores(results)
    metric = {r.task: r.main_score_name for r in results}
    headers = [Column("task", no_wrap=True), Column("metric", keep=1, style="dim")]
    for column in columns:
        model, _, aggregator = column.partition("/")
        headers.append(Column(f"{model}\n{aggregator}", justify="right"))
    table = FittedTable(title, headers)
    for task in tasks:
        values = [scores.get((task, c)) for c in columns]
        best = max(v for v in values if v is not None)
        shown = [
            None if v is None else _with_spread(v, spread[(task, c)])
            for v, c in zip(values, columns, strict=True)
        ]
        cells = [
            "—" if t is None else (f"[bold]{t}[/bold]" if v == best else t)
            for v, t in zip(values, shown, strict=True)
        ]
        table.add_row(task, metric.get(task, ""), *cells)
    return table


def score_markdown(results: Sequence[UnitResult]) -> str:
    """The same table as GitHub-flavoured Markdown."""
    from tabulate import tabulate

    tasks, columns, scores = score_grid(results)
    if not tasks:
        return "(no results)"
    spread = _replicate_scores(results)
    rows = [
        [
            task,
            *(
                _with_spread(scores[(task, c)], spread[(task, c)]) if (task, c) in scores else None
                for c in columns
            ),
        ]
        for task in tasks
    ]
    return tabulate(
        rows, headers=["task", *columns], tablefmt="github", floatfmt=".4f", missingval="—"
    )


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def _ci(row: Row) -> str:
    if row.ci_low is None or row.item_delta is None:
        return "—"
    return f"{row.item_delta:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"


COMPARE_COLUMNS = [
    "",
    "state",
    "task",
    "model/aggregator",
    "score",
    "baseline",
    "Δ",
    "Δ items [95% CI]",
    "p",
    "p (Holm)",
    "MDE",
    "Steiger p",
    "note",
]


REPLICATE_COLUMNS = ["reps", "SD (reps)", "agree", "P(B>A)"]
"""Added after "p (Holm)" when any row was tested over replicates."""


def is_replicated(comparison: Comparison) -> bool:
    return any(r.replicates > 1 for r in comparison.rows)


def compare_columns(comparison: Comparison) -> list[str]:
    if not is_replicated(comparison):
        return COMPARE_COLUMNS
    at = COMPARE_COLUMNS.index("p (Holm)") + 1
    return [*COMPARE_COLUMNS[:at], *REPLICATE_COLUMNS, *COMPARE_COLUMNS[at:]]


def row_cells(row: Row, replicated: bool) -> list[str]:
    cells = _cells(row)
    if not replicated:
        return cells
    extra = [
        str(row.replicates),
        _fmt(row.between_sd),
        "—" if row.agree is None else f"{row.agree}/{row.replicates}",
        _fmt(row.prob_improvement, ".2f"),
    ]
    at = COMPARE_COLUMNS.index("p (Holm)") + 1
    return [*cells[:at], *extra, *cells[at:]]


def _cells(row: Row) -> list[str]:
    return [
        row.mark.symbol,
        "" if row.state is None else row.state.value.upper(),
        row.task,
        f"{row.model}/{row.aggregator}",
        _fmt(row.score),
        row.baseline or "—",
        _signed(row.delta),
        _ci(row),
        _fmt(row.p_value, ".3g"),
        _fmt(row.p_holm, ".3g"),
        _fmt(row.mde, ".3g"),
        _fmt(row.steiger_p, ".3g"),
        row.note,
    ]


def _improvement(summary: Summary) -> str:
    if summary.improvement is None:
        return "—"
    point, low, high = summary.improvement
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def summary_cells(summary: Summary, replicated: bool = False) -> list[str]:
    test = summary.test
    p = (test.note or "n/a") if test.p_value != test.p_value else f"{test.p_value:.3g}"
    return [
        summary.scope,
        summary.candidate,
        summary.baseline,
        f"{summary.mean_score:.4f}",
        f"{summary.mean_delta:+.4f}",
        f"{summary.wins}/{summary.ties}/{summary.losses}",
        f"{p} (n={test.n_tasks})",
        *([_improvement(summary)] if replicated else []),
    ]


SUMMARY_COLUMNS = ["scope", "candidate", "baseline", "mean score", "mean Δ", "W/T/L", "Wilcoxon p"]


def summary_columns(replicated: bool) -> list[str]:
    return [*SUMMARY_COLUMNS, "P(B>A) [95% CI]"] if replicated else SUMMARY_COLUMNS


COLUMN_KEEP = {
    "": 0, "state": 0, "MDE": 3, "task": 0, "model/aggregator": 0, "Δ items [95% CI]": 0, "p (Holm)": 0,
    "agree": 1, "note": 1, "P(B>A)": 2, "Δ": 3, "score": 4, "SD (reps)": 4, "p": 5, "reps": 6,
    "Steiger p": 6, "baseline": 7,
    "scope": 0, "candidate": 0, "mean Δ": 0, "W/T/L": 0, "Wilcoxon p": 0,
    "P(B>A) [95% CI]": 1, "mean score": 3,
}  # fmt: skip
"""How readily each comparison column is dropped on a narrow terminal (0: never; see
`FittedTable`): the verdict (mark, the tested Δ and its CI, Holm p) and, with replicates, how
many agree stay; the baseline, usually the same on every row, goes first, then Steiger's and
the unadjusted p, the score, the main-score Δ."""

GEOMETRY_KEEP = {
    "collapse (operator)": 1, "collapse (linear)": 1, "angle to linear °": 1,
    "expert cosine": 2, "load CV": 2, "norm CV (within token)": 3, "norm CV (all)": 3,
    "tokens": 9,
}  # fmt: skip
"""The same for the geometry tables: the collapse ratios and the angle (what SBA is about) stay
longest; a column not named here goes from the right after these."""

_NAMES = ("task", "model/aggregator", "candidate", "baseline", "scope")


def _columns(headers: Sequence[str]) -> list[Column]:
    return [Column(h, keep=COLUMN_KEEP.get(h, 2), no_wrap=h in _NAMES or h == "") for h in headers]


def comparison_tables(comparison: Comparison) -> list[FittedTable]:
    """Tables: per-task rows, then summaries by task type and overall."""
    from sbabench.analysis.compare import Mark

    replicated = is_replicated(comparison)
    rows = FittedTable(
        "per task (+ better, - worse, ~ not significant, x not comparable)",
        _columns(compare_columns(comparison)),
        caption=comparison.coverage or None,
    )
    for row in comparison.rows:
        style = {Mark.BETTER: "green", Mark.WORSE: "red", Mark.INCOMPARABLE: "yellow"}.get(
            row.mark, ""
        )
        rows.add_row(*row_cells(row, replicated), style=style)
    tables = [rows]
    if comparison.summaries:
        summary = FittedTable("across tasks", _columns(summary_columns(replicated)))
        for item in comparison.summaries:
            summary.add_row(*summary_cells(item, replicated))
        tables.append(summary)
    return tables


def friedman_line(comparison: Comparison) -> str | None:
    """One sentence on the Friedman test and Nemenyi critical difference, if it ran."""
    f = comparison.friedman
    if f is not None and f.note:
        return f"Friedman over {f.n_tasks} tasks: not tested ({f.note})."
    if f is None or f.mean_ranks is None:
        return None
    ranks = ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.mean_ranks.items(), key=lambda kv: kv[1]))
    if f.n_tasks < 2:
        return f"Mean ranks over {f.n_tasks} task(s) (1 = best): {ranks}. Friedman needs at least 2 tasks."
    if f.p_value != f.p_value:
        return f"Mean ranks over {f.n_tasks} tasks (1 = best): {ranks}. Every system ties on every task: nothing for Friedman to test."
    level = "" if comparison.alpha == 0.05 else f" at alpha {comparison.alpha:g}"
    return (
        f"Friedman over {f.n_tasks} tasks: chi2={f.statistic:.3f}, p={f.p_value:.3g}; mean ranks "
        f"(1 = best): {ranks}; Nemenyi critical difference{level} {f.critical_difference:.3f}."
    )


COLUMNS_NOTE = (
    "Δ: difference of mteb's main scores. Δ items: difference of the per-item statistic that the"
    " paired bootstrap resamples (cosine Spearman for STS, cosine AP for pair classification, mean"
    " V-measure of 10 seeded k-means runs for clustering), with its 95% CI; p from that bootstrap."
    "\nMarks: `+` better, `-` worse (Holm-adjusted p < alpha), `~` not significant, `x` not comparable."
    " State (the gate's answer): PASS (identical, or the drop is shown smaller than --max-drop),"
    " REGRESSION (a significant drop larger than --max-drop), INCONCLUSIVE (neither; MDE: the"
    " smallest difference the test detects with 80% power at Holm's alpha / m), NOT TESTED (the note says why)."
)
"""What the per-task table's columns mean (Markdown and HTML reports)."""

REPLICATES_NOTE = (
    "With replicates: score and Δ are means over replicates; Δ items, its CI and p come"
    " from the two-level test (replicates and items; docs: Replicates); SD (reps) is"
    " the replicates' spread of Δ items, agree how many replicates share its sign,"
    " P(B>A) rliable's (unpaired) probability of improvement over pairs of replicates' main scores."
)


def _markdown_row(cells: list[str]) -> list[str]:
    """A row's cells for Markdown; the note (the last cell) may quote a failure's message."""
    return [markdown_text(c, free=n == len(cells) - 1) for n, c in enumerate(cells)]


def comparison_markdown(comparison: Comparison) -> str:
    """GitHub-flavoured Markdown (for PR comments and $GITHUB_STEP_SUMMARY)."""
    from tabulate import tabulate

    replicated = is_replicated(comparison)
    parts = [
        "### Per task\n",
        tabulate(
            [_markdown_row(row_cells(r, replicated)) for r in comparison.rows],
            headers=compare_columns(comparison),
            tablefmt="github",
        ),
        "\n" + COLUMNS_NOTE,
    ]
    if replicated:
        parts.append(REPLICATES_NOTE)
    if comparison.coverage:
        parts.append("\n" + comparison.coverage)
    if comparison.summaries:
        parts += [
            "\n### Across tasks\n",
            tabulate(
                [
                    [markdown_text(c) for c in summary_cells(s, replicated)]
                    for s in comparison.summaries
                ],
                headers=summary_columns(replicated),
                tablefmt="github",
            ),
        ]
    line = friedman_line(comparison)
    if line:
        parts.append("\n" + line)
    return "\n".join(parts) + "\n"


GEOMETRY_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("norm CV (within token)", ("norm_cv_within_token", "mean")),
    ("norm CV (all)", ("norm", "cv")),
    ("expert cosine", ("pairwise_cosine", "mean")),
    ("collapse (operator)", ("collapse_ratio", "mean")),
    ("collapse (linear)", ("linear_collapse_ratio", "mean")),
    ("angle to linear °", ("operator_vs_linear", "angle_deg", "mean")),
    ("load CV", ("routing", "load_cv")),
]
"""Column title and where its value sits in a layer's geometry statistics."""

PROBE_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("J align", ("probes", "jacobian", "alignment_mean")),
    ("J stable rank", ("probes", "jacobian", "stable_rank", "mean")),
    ("J decay", ("probes", "jacobian", "decay_exponent", "mean")),
    ("PCA Grassmann", ("probes", "expert-pca", "grassmann_mean")),
    ("Grassmann floor", ("probes", "expert-pca", "grassmann_split_half_mean")),
    ("PCA eff. rank", ("probes", "expert-pca", "effective_rank_mean")),
]
"""The Jacobian and expert-PCA probes' columns, shown when any result has them."""

COUPLING_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("router margin", ("probes", "router-coupling", "margin_mean")),
    ("score~activation ρ", ("probes", "router-coupling", "score_activation_spearman")),
    ("ρ within expert", ("probes", "router-coupling", "score_activation_spearman_within")),
    ("router row |cos|", ("probes", "router-coupling", "router_row_abs_cosine_mean")),
]
"""The router-coupling probe's columns, a table of their own (one table of every probe's
columns no longer fits 120 columns)."""

LOAD_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("max/mean load", ("balance", "max_over_mean")),
    ("load CV", ("balance", "cv")),
    ("load entropy (norm.)", ("balance", "entropy")),
    ("experts with no token", ("balance", "idle_experts")),
    ("experts", ("balance", "experts")),
    ("tokens routed", ("balance", "tokens")),
]
"""Load balance per MoE layer: over every real token the layer saw (results of geometry
version 5 on), else over the geometry's sampled tokens."""


def _with_balance(stats: dict[str, Any]) -> dict[str, Any]:
    """A layer's statistics plus its load balance (all tokens when recorded, else the sample)."""
    if stats.get("load"):
        return {**stats, "balance": stats["load"]}
    routing = stats.get("routing", {})
    load = routing.get("load") or []
    if not load:
        return stats
    mean = sum(load) / len(load)
    balance = {
        "max_over_mean": max(load) / mean if mean else None,
        "cv": routing.get("load_cv"),
        "entropy": routing.get("load_entropy"),
        "idle_experts": sum(1 for share in load if share == 0),
        "experts": len(load),
        "tokens": stats.get("tokens"),
    }
    return {**stats, "balance": balance}


def geometry_rows(
    results: Sequence[UnitResult], columns: Sequence[tuple[str, tuple[str, ...]]]
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: per model/aggregator and MoE layer, means over the tasks that have them."""
    import numpy as np

    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        for layer, stats in r.geometry_layers.items():
            grouped.setdefault((f"{r.model}/{r.aggregator}", layer), []).append(
                _with_balance(stats)
            )

    def mean(stats: list[dict[str, Any]], path: tuple[str, ...]) -> str:
        values: list[float] = []
        for s in stats:
            for key in path:
                s = s.get(key, {}) if isinstance(s, dict) else {}
            if isinstance(s, int | float):
                values.append(float(s))
        if not values:
            return "—"
        average = float(np.mean(values))
        return (
            str(int(average)) if average.is_integer() and abs(average) < 1e6 else f"{average:.3f}"
        )

    headers = ["model/aggregator", "layer", "tokens", *(title for title, _ in columns)]
    rows = [
        [name, layer.removesuffix(".combine"), str(sum(s["tokens"] for s in stats))]
        + [mean(stats, path) for _, path in columns]
        for (name, layer), stats in grouped.items()
    ]
    return headers, rows


def _has_probes(results: Sequence[UnitResult], names: Sequence[str]) -> bool:
    return any(
        name in (layer.get("probes") or {})
        for r in results
        for layer in r.geometry_layers.values()
        for name in names
    )


def _geometry_grids(
    results: Sequence[UnitResult],
) -> list[tuple[str, list[str], list[list[str]]]]:
    grids = []
    headers, rows = geometry_rows(results, GEOMETRY_COLUMNS)
    if rows:
        grids.append(("geometry per MoE layer (mean over tasks)", headers, rows))
        headers, rows = geometry_rows(results, LOAD_COLUMNS)
        grids.append(
            ("load balance per MoE layer (every real token seen, mean over tasks)", headers, rows)
        )
    if _has_probes(results, ("jacobian", "expert-pca")):
        headers, rows = geometry_rows(results, PROBE_COLUMNS)
        grids.append(("geometry probes per MoE layer (mean over tasks)", headers, rows))
    if _has_probes(results, ("router-coupling",)):
        headers, rows = geometry_rows(results, COUPLING_COLUMNS)
        grids.append(("router-expert coupling per MoE layer (mean over tasks)", headers, rows))
    return grids


def geometry_tables(results: Sequence[UnitResult]) -> list[FittedTable]:
    """Tables of the MoE-layer geometry (and the probes, when any result has them); on a narrow
    terminal the token count goes first, then the statistics from the right."""
    tables = []
    for title, headers, rows in _geometry_grids(results):
        columns = [Column(headers[0], no_wrap=True), Column(headers[1], no_wrap=True)]
        columns += [Column(h, keep=GEOMETRY_KEEP.get(h, 1)) for h in headers[2:]]
        table = FittedTable(title, columns)
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return tables


def geometry_markdown(results: Sequence[UnitResult]) -> str:
    """The geometry tables as Markdown ('' when there are none)."""
    from tabulate import tabulate

    return "\n\n".join(
        tabulate(rows, headers=headers, tablefmt="github")
        for _, headers, rows in _geometry_grids(results)
    )


def score_text(results: Sequence[UnitResult], geometry: bool = False) -> str:
    """`show --format markdown`: the score table, then (with `geometry`) the geometry tables."""
    text = score_markdown(results)
    return f"{text}\n\n{geometry_markdown(results)}" if geometry else text


def comparison_text(outcome: Outcome, fmt: str) -> str:
    """The comparison as `fmt`: "json" or "csv" (one record per row), or Markdown (any other
    `fmt`; "markdown" adds the geometry tables)."""
    import json

    from sbabench.analysis.compare import to_records

    if fmt == "json":
        return json.dumps(to_records(outcome.comparison), indent=2)

    if fmt == "csv":
        import pandas as pd

        records = [
            {k: spreadsheet_cell(v) for k, v in record.items()}
            for record in to_records(outcome.comparison)
        ]
        return str(pd.DataFrame(records).to_csv(index=False))
    text = f"**Verdict:** {outcome.verdict.text}\n\n" + comparison_markdown(outcome.comparison)
    geometry = geometry_markdown(outcome.results)
    if fmt == "markdown" and geometry:
        text += "\n### Geometry per MoE layer\n\n" + geometry + "\n"
    return text
