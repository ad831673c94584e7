"""The `sbabench` command: parses arguments, calls the library, renders. Nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from sbabench.errors import SbabenchError

F = TypeVar("F", bound=Callable[..., Any])
# Piped output is not cut at 80 columns: tables stay whole in logs and CI.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True)


def _results_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--results",
        "results_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("results"),
        show_default=True,
        help=help_text,
    )


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _user_errors(fn: F) -> F:
    """Turn SbabenchError into a readable message and exit code 2, Ctrl-C into 130 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SbabenchError as exc:
            # Plain text, never wrapped: file:line prefixes must stay copyable.
            click.secho("error: ", fg="red", err=True, nl=False)
            click.echo(exc.render(), err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: finished units are saved; run the same command to resume", err=True
            )
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sbabench")
def main() -> None:
    """Benchmark aggregation operators (linear vs Spherical Barycentric Aggregation) of MoE
    embedding models on MTEB tasks.

    Typical use: `sbabench validate suite.yaml`, then `sbabench run suite.yaml`.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@_results_option("Folder for result files (results/<suite>/<model>/<aggregator>/<task>.json).")
@click.option(
    "--force",
    is_flag=True,
    help="Recompute units even when a valid result exists (all, or --only).",
)
@click.option(
    "--only",
    metavar="GLOB",
    help="Only units whose model/aggregator/task label matches, e.g. '*/sba/*'.",
)
@click.option(
    "--shard", metavar="I/N", help="Run a deterministic 1/N of the units (for job arrays)."
)
@click.option(
    "--dry-run", is_flag=True, help="List what would run and what is already done; run nothing."
)
@_user_errors
def run(
    suite: Path, results_dir: Path, force: bool, only: str | None, shard: str | None, dry_run: bool
) -> None:
    """Run every model x aggregator x task of SUITE that is not done yet.

    Finished units are skipped (their stored key must match); corrupt or stale result files are
    recomputed; a failed unit is recorded (<task>.error.json) and the others still run. Several
    processes (or --shard jobs) may share one results folder: a lock per unit keeps any unit from
    being computed twice. Exit code: 0 all done, 1 some unit failed, 2 bad input.
    """
    from sbabench.report import score_table
    from sbabench.runner import parse_shard, plan_suite, run_suite
    from sbabench.suite import load_suite

    spec = load_suite(suite)
    shard_spec = parse_shard(shard) if shard else None
    if dry_run:
        plan = plan_suite(spec, results_dir, force=force, only=only, shard=shard_spec)
        table = _table(f"{spec.name}: dry run", "unit", "status")
        for planned, _ in plan.done:
            table.add_row(planned.unit.label, "[green]done (cached)[/green]")
        for planned in plan.todo:
            table.add_row(planned.unit.label, "[yellow]would run[/yellow]")
        console.print(table)
        for note in plan.invalid:
            console.print(f"would recompute {note}", highlight=False)
        console.print(f"{len(plan.todo)} to run, {len(plan.done)} done")
        return
    summary = run_suite(spec, results_dir, force=force, only=only, shard=shard_spec, console=errors)
    console.print(score_table(summary.results, title=f"{spec.name}: main scores"))
    console.print(
        f"{len(summary.computed)} computed, {len(summary.cached)} cached, "
        f"{len(summary.failed)} failed, {summary.models_loaded} model(s) loaded — results in {results_dir / spec.name}"
    )
    for label, message in summary.failed.items():
        errors.print(f"[red]FAILED[/red] {label}: {message}", highlight=False)
    sys.exit(summary.exit_code)


@main.command()
@_results_option("Results folder whose embedding cache (.cache/embeddings.sqlite) to show.")
@click.option("--prune", is_flag=True, help="Delete cached embeddings matching the filters below.")
@click.option(
    "--older-than", type=click.FloatRange(0), metavar="DAYS", help="Not used for DAYS days."
)
@click.option("--model", help="Of this model name.")
@click.option("--suite", help="Of this suite.")
@_user_errors
def cache(
    results_dir: Path, prune: bool, older_than: float | None, model: str | None, suite: str | None
) -> None:
    """Show the embedding cache's size per suite/model/aggregator, or prune it."""
    from sbabench.embedding_store import EmbeddingStore

    path = results_dir / ".cache" / "embeddings.sqlite"
    if not path.is_file():
        raise SbabenchError(
            f"no embedding cache at {str(path)!r}", fix="run a suite first (or pass --results)"
        )
    store = EmbeddingStore(path)
    if prune:
        if older_than is None and model is None and suite is None:
            raise SbabenchError(
                "--prune needs a filter", fix="add --older-than DAYS, --model NAME or --suite NAME"
            )
        removed = store.prune(older_than_days=older_than, model=model, suite=suite)
        console.print(f"removed {removed} vector(s)")
    import datetime

    table = Table(title=f"embedding cache: {path} ({path.stat().st_size / 1e6:.1f} MB on disk)")
    for column in ("suite", "model", "aggregator", "vectors", "MB", "last used"):
        table.add_column(column)
    for usage in store.usage():
        used = datetime.datetime.fromtimestamp(usage.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            usage.suite,
            usage.model,
            usage.aggregator,
            str(usage.vectors),
            f"{usage.megabytes:.2f}",
            used,
        )
    console.print(table)
    store.close()


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@_user_errors
def validate(suite: Path) -> None:
    """Check SUITE without running it: schema, model sources, aggregators and their options,
    task names. Problems are listed as file:line:column: field: message (exit code 2).
    """
    from sbabench.suite import expand, load_suite

    spec = load_suite(suite)
    units = expand(spec)
    console.print(
        f"[green]ok[/green] {suite}: {len(spec.models)} model(s), {len(spec.aggregators)} "
        f"aggregator(s), {len(spec.tasks)} task(s) -> {len(units)} unit(s)"
    )


@main.command()
def aggregators() -> None:
    """List the built-in aggregation operators and their options."""
    from sbabench.aggregators import registry

    table = _table("aggregators", "name", "description", "options")
    for name, info in registry().items():
        options = ", ".join(
            f"{key}={field.default!r}" for key, field in info.options.model_fields.items()
        )
        table.add_row(name, info.summary, options or "—")
    console.print(table)
    console.print(
        "User operators: name them as 'package.module:function' with the signature "
        "fn(outputs[T,k,H], weights[T,k], **options) -> [T,H]."
    )


@main.command()
def tasks() -> None:
    """List the bundled offline tasks and explain how to name MTEB tasks."""
    from sbabench.tasks import SUPPORTED_TYPES
    from sbabench.tasks.bundled import BUNDLED

    table = _table("bundled offline tasks", "name", "type", "main score", "card")
    for name, cls in BUNDLED.items():
        meta = cls.metadata  # type: ignore[attr-defined]
        table.add_row(name, str(meta.type), str(meta.main_score), cls.card)
    console.print(table)
    console.print(
        f"Any MTEB task of type {', '.join(SUPPORTED_TYPES)} can be named too "
        "(e.g. STSBenchmark, TwentyNewsgroupsClustering, SprintDuplicateQuestions); "
        "those need access to the Hugging Face hub."
    )


@main.command()
@click.argument("results_dir", type=click.Path(path_type=Path), default=Path("results"))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown"]), default="table", show_default=True
)
@click.option("--geometry", is_flag=True, help="Also print the MoE-layer geometry statistics.")
@_user_errors
def show(results_dir: Path, fmt: str, geometry: bool) -> None:
    """Print the main-score table of the results under RESULTS_DIR (a suite's folder or all)."""
    from sbabench.report import geometry_markdown, geometry_tables, score_markdown, score_table
    from sbabench.results import load_results

    if not results_dir.is_dir():
        raise SbabenchError(
            f"results folder {str(results_dir)!r} does not exist", fix="run a suite first"
        )
    results = load_results(results_dir)
    if not results:
        raise SbabenchError(f"no result files under {str(results_dir)!r}", fix="run a suite first")
    if fmt == "markdown":
        click.echo(score_markdown(results))
        if geometry:
            click.echo("\n" + geometry_markdown(results))
    else:
        console.print(score_table(results, title=str(results_dir)))
        tables = geometry_tables(results) if geometry else []
        for table in tables:
            console.print(table)
        if geometry and not tables:
            console.print("no geometry statistics in these results (geometry: {tokens: 0}?)")


@main.command()
@click.argument("target")
@click.option("--model", "model_name", help="Only this model of the suite.")
@click.option("--trust-remote-code", is_flag=True, help="For a hub id or folder TARGET.")
@click.option("--revision", help="For a hub id TARGET.")
@_user_errors
def inspect(
    target: str, model_name: str | None, trust_remote_code: bool, revision: str | None
) -> None:
    """Show the MoE layers sbabench finds in a model: experts, top-k, renormalisation, sizes,
    and which geometry probes can run on each.

    TARGET is a suite file (every model in it, or --model NAME) or a hub id / local folder of an
    MoE model (as `source: huggingface`).
    """
    from sbabench.logs import quiet_libraries
    from sbabench.models import build_encoder
    from sbabench.probes import support
    from sbabench.suite import HuggingFaceModel, load_suite

    if target.endswith((".yaml", ".yml")):
        specs = [m for m in load_suite(target).models if model_name in (None, m.name)]
        if not specs:
            raise SbabenchError(f"suite {target!r} has no model named {model_name!r}")
    else:
        specs = [
            HuggingFaceModel(
                name="inspected",
                source="huggingface",
                path=target,
                revision=revision,
                trust_remote_code=trust_remote_code,
            )
        ]
    for spec in specs:
        with quiet_libraries():
            encoder = build_encoder(spec, device="cpu")
        total = sum(p.numel() for p in encoder.model.parameters())
        table = Table(
            title=f"{spec.name}: {type(encoder.model).__name__}, {total / 1e6:.1f}M parameters"
        )
        for column in ("MoE layer", "family", "experts", "top-k", "renormalised", "probes"):
            table.add_column(column)
        for layer in encoder.moe_layers:
            unavailable = {
                p: why for p, why in support(encoder.model, layer).items() if why != "ok"
            }
            table.add_row(
                layer.name,
                layer.family,
                str(layer.num_experts),
                str(layer.top_k),
                "yes" if layer.renormalized else "no",
                "; ".join(f"no {p}: {why}" for p, why in unavailable.items()) or "all",
            )
        console.print(table)
        if not encoder.moe_layers:
            console.print("  dense model: no MoE layers (aggregators do not apply)")
        console.print(
            f"  pooling={encoder.config.pooling} normalize={encoder.config.normalize} "
            f"max_length={encoder.config.max_length} prompts={encoder.config.prompts or 'none'}"
        )


@main.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    default="linear",
    show_default=True,
    help="Operator every other one is compared with.",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    help="A second results folder (e.g. from the main branch): compare each unit with its twin there.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report to FILE."
)
@click.option("--resamples", default=1000, show_default=True, type=click.IntRange(100, 100_000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
)
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help="Exit 1 if any task drops significantly by > --max-drop.",
)
@click.option(
    "--max-drop", default=0.005, show_default=True, type=click.FloatRange(0), help="Tolerated drop."
)
@_user_errors
def compare(
    results: tuple[Path, ...],
    baseline: str,
    against: Path | None,
    fmt: str,
    output: Path | None,
    resamples: int,
    seed: int,
    alpha: float,
    fail_on_regression: bool,
    max_drop: float,
) -> None:
    """Compare operators (or two result folders) with paired significance tests.

    RESULTS are results folders (default: results/). Per task: score, difference to the
    baseline, its 95% CI and p-value from a paired bootstrap over the same test items (pairs
    for STS / pair classification, documents for clustering), Holm-adjusted p, and Steiger's
    test for STS. Across tasks: wins/ties/losses and a Wilcoxon signed-rank test; Friedman +
    Nemenyi with three or more systems. Exit code: 0, or 1 with --fail-on-regression when a
    regression is found, 2 on bad input.
    """
    import json

    from sbabench.compare import compare_results, to_records
    from sbabench.report import (
        comparison_markdown,
        comparison_tables,
        friedman_line,
        geometry_markdown,
        geometry_tables,
    )
    from sbabench.results import UnitResult, load_results

    def _load(folder: Path) -> list[UnitResult]:
        if not folder.is_dir():
            raise SbabenchError(
                f"results folder {str(folder)!r} does not exist",
                fix="check the path or run the suite",
            )
        found = load_results(folder)
        if not found:
            raise SbabenchError(f"no result files under {str(folder)!r}", fix="run a suite first")
        return found

    current = [r for folder in (results or (Path("results"),)) for r in _load(folder)]
    other = _load(against) if against else None
    comparison = compare_results(
        current, baseline=baseline, against=other, n_resamples=resamples, seed=seed, alpha=alpha
    )
    if fmt == "markdown":
        text = comparison_markdown(comparison)
        if geometry_markdown(current):
            text += "\n### Geometry per MoE layer\n\n" + geometry_markdown(current) + "\n"
    elif fmt == "json":
        text = json.dumps(to_records(comparison), indent=2)
    elif fmt == "csv":
        import pandas as pd

        text = pd.DataFrame(to_records(comparison)).to_csv(index=False)
    else:
        text = ""
    if output:
        output.write_text(
            text if fmt != "table" else comparison_markdown(comparison), encoding="utf-8"
        )
    elif fmt == "table":
        for table in comparison_tables(comparison):
            console.print(table)
        for table in geometry_tables(current):
            console.print(table)
        line = friedman_line(comparison)
        if line:
            console.print(line)
    else:
        click.echo(text, nl=False)
    regressions = comparison.regressions(max_drop)
    tested = sum(r.p_value is not None for r in comparison.rows)
    if regressions:
        worst = min(regressions, key=lambda r: r.delta or 0.0)
        verdict = (
            f"REGRESSION: {len(regressions)} of {tested} tested unit(s) dropped by more than {max_drop} "
            f"(Holm p < {alpha}); worst {worst.model}/{worst.aggregator}/{worst.task} {worst.delta:+.4f}"
        )
    else:
        verdict = f"OK: no significant drop larger than {max_drop} in {tested} tested unit(s)"
    click.echo(verdict, err=fmt != "table" and output is None)
    if fail_on_regression and regressions:
        sys.exit(1)


@main.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("plots"),
    show_default=True,
)
@click.option(
    "--baseline",
    default="linear",
    show_default=True,
    help="Operator the forest plot compares with.",
)
@click.option("--resamples", default=1000, show_default=True, type=click.IntRange(100, 100_000))
@_user_errors
def plot(results: tuple[Path, ...], folder: Path, baseline: str, resamples: int) -> None:
    """Write PNG figures: score differences with 95% CIs per task (forest plot); per model/
    aggregator the norm and angle histograms and the collapse ratio of every MoE layer; with
    geometry probes, expert x expert heatmaps (Jacobian alignment, Grassmann distance, router
    coupling) and Jacobian spectra; and, for fine-tuned suites, the loss and gradient-norm
    curves per operator.
    """
    from sbabench.compare import compare_results
    from sbabench.plots import forest_plot, geometry_plots, probe_plots, training_plots
    from sbabench.results import load_results

    loaded = []
    for source in results or (Path("results"),):
        if not source.is_dir():
            raise SbabenchError(
                f"results folder {str(source)!r} does not exist", fix="run a suite first"
            )
        loaded.extend(load_results(source))
    if not loaded:
        raise SbabenchError("no result files found", fix="run a suite first")
    folder.mkdir(parents=True, exist_ok=True)
    written = (
        geometry_plots(loaded, folder)
        + probe_plots(loaded, folder)
        + training_plots(loaded, folder)
    )
    forest = forest_plot(
        compare_results(loaded, baseline=baseline, n_resamples=resamples), folder / "forest.png"
    )
    if forest:
        written.insert(0, forest)
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print("nothing to plot: no paired comparisons and no geometry statistics")
