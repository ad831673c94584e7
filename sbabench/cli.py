"""The `sbabench` command: parses arguments, calls the library, renders. Nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Iterable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console, RenderableType

from sbabench.analysis import terminal
from sbabench.atomic import write_all_atomic
from sbabench.errors import SbabenchError

if TYPE_CHECKING:
    from sbabench.analysis.history.recording import Recorded
    from sbabench.analysis.sequential import Design, Look
    from sbabench.run.execute import RunSummary
    from sbabench.suite.schema import Suite

F = TypeVar("F", bound=Callable[..., Any])
# Piped output is not cut at 80 columns: tables stay whole in logs and CI.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True)


_RESAMPLES = click.option("--resamples", default=1000, show_default=True, type=click.IntRange(100, 100_000))  # fmt: skip


_HISTORY = click.option(
    "--history",
    "history_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results/history.sqlite"),
    show_default=True,
    help="The history file (SQLite).",
)
_REPO = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The git repository whose code is under test (its commits key the history).",
)


def _safe_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a name that is not safe to show or store (see `sbabench.paths`)."""
    from sbabench.paths import name_problem

    problem = None if value is None else name_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


_MACHINE = click.option(
    "--machine",
    callback=_safe_name,
    help="Machine name the records belong to (default: this host's name).",
)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN (click's FloatRange lets it through, and every comparison with it is False)."""
    if value is not None and value != value:
        raise click.BadParameter("must be a number, not NaN")
    return value


def _write_files(files: list[tuple[Path, bytes, str]]) -> None:
    """Write every output of a command, all or none (never one file beside a failed other).
    Refused before anything is written: two outputs on one path, a symbolic link, and an
    existing SQLite file (a history is never overwritten with a report)."""
    seen: dict[Path, str] = {}
    for path, _, option in files:
        where = path.resolve()
        if where in seen:
            raise SbabenchError(
                f"{seen[where]} and {option} both name {path}", fix="give each output its own file"
            )
        seen[where] = option
        if path.is_symlink():
            raise SbabenchError(
                f"{option} {path} is a symbolic link; sbabench writes only files it can replace "
                "whole", fix=f"give {option} the file itself, or a new path",
            )  # fmt: skip
        if path.exists() and not path.is_file():
            raise SbabenchError(
                f"{option} {path} exists and is not a regular file (a folder, a device, a pipe)",
                fix=f"give {option} a new path, or a file",
            )
        if _is_sqlite(path):
            raise SbabenchError(
                f"{option} {path} is a SQLite database (a history?): sbabench does not overwrite "
                "it with a report", fix=f"give {option} another file",
            )  # fmt: skip
    try:
        write_all_atomic([(path, data) for path, data, _ in files])
    except OSError as exc:
        option = next((o for p, _, o in files if str(p) == exc.filename), "the output option")
        raise SbabenchError(
            f"cannot write {exc.filename} ({exc.strerror or type(exc).__name__}); nothing was "
            "written",
            fix=f"give {option} a path in a folder that can be created and written",
        ) from None


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _results_option(help_text: str) -> Callable[[F], F]:
    folder = click.Path(file_okay=False, path_type=Path)
    return click.option("--results", "results_dir", type=folder, default=Path("results"), show_default=True, help=help_text)  # fmt: skip


def _show(shown: Iterable[RenderableType]) -> None:
    """Print each renderable (a table, a line) on standard output."""
    for item in shown:
        console.print(item)


def _user_errors(fn: F) -> F:
    """Turn SbabenchError into a readable message and exit code 2, Ctrl-C into 130 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SbabenchError as exc:
            # Plain text; in a terminal wrapped at spaces, never inside a path or file:line.
            width = errors.width if errors.is_terminal else None
            click.secho("error: ", fg="red", err=True, nl=False)
            text = terminal.wrapped("error: " + exc.render(), width).removeprefix("error: ")
            click.echo(text, err=True)
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
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: Ray actors, `resources.workers` per model "
    "(pip install 'sbabench[ray]').",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="With --executor ray: auto (the running cluster), HOST:PORT or ray://HOST:PORT; "
    "default: start a local Ray instance.",
)
@click.option(
    "--ray-retries",
    type=click.IntRange(0, 100),
    default=3,
    show_default=True,
    help="With --executor ray: retries of a unit whose worker process died (and restarts of "
    "each worker).",
)
@click.option(
    "--until-decided",
    is_flag=True,
    help="Run replicates in rounds until every operator's comparison with --baseline is decided "
    "(significant, or within --effect) or the suite's replicates are reached; a suite with "
    "`replicates: {min: .., max: ..}` always runs so (docs/replicates.md).",
)
@click.option(
    "--baseline",
    help="With --until-decided: the operator the others are compared with [default: the "
    "suite's, else linear].",
)
@click.option(
    "--effect",
    type=click.FloatRange(0, 1, min_open=True),
    callback=_finite,
    help="With --until-decided: a comparison whose interval lies within +-EFFECT is decided "
    "(default: the suite's; none: only a significant difference decides one).",
)
@click.option(
    "--record",
    "record_to",
    is_flag=True,
    help="Then record the suite's results in the history (as `sbabench record`).",
)
@_HISTORY
@_REPO
@_MACHINE
@_user_errors
def run(
    suite: Path,
    results_dir: Path,
    force: bool,
    only: str | None,
    shard: str | None,
    dry_run: bool,
    executor: str,
    ray_address: str | None,
    ray_retries: int,
    until_decided: bool,
    baseline: str | None,
    effect: float | None,
    record_to: bool,
    history_file: Path,
    repo: Path,
    machine: str | None,
) -> None:
    """Run every model x aggregator x task of SUITE that is not done yet.

    Finished units are skipped (their stored key must match); corrupt or stale result files are
    recomputed; a failed unit is recorded (<task>.error.json) and the others still run. Several
    processes (or --shard jobs) may share one results folder: a lock per unit keeps any unit from
    being computed twice. With --executor ray, Ray actors compute the units (the model's
    `resources`: `workers` actors per model, each with its `cpus` and `gpus`) and this process
    alone writes the results (docs/scaling.md).
    With --record, the suite's results are then recorded in the history (`sbabench record`).
    Exit code: 0 all done, 1 some unit failed, 2 bad input or a results folder that cannot be
    written (read-only, no permission, a full disk: finished units are kept; or a result file
    from a newer sbabench), each said in one line.
    """
    from sbabench.run.executors import run_with
    from sbabench.run.plan import parse_shard, plan_suite
    from sbabench.suite import load_suite
    from sbabench.suite.schema import UntilDecided

    spec = load_suite(suite, import_code=True)  # user operators are code: run imports them
    _print_notes(spec.notes)
    design = None
    sequential = isinstance(spec.replicates, UntilDecided) or until_decided
    if sequential or baseline is not None or effect is not None:
        # imported only here: it brings compare's statistics, which a plain run (a warm
        # re-run above all) does not need
        from sbabench.analysis.sequential import design_for, first_round

        design = design_for(spec, until_decided=until_decided, baseline=baseline, effect=effect)
    if design is not None:
        refused = [n for n, v in (("--force", force), ("--only", only), ("--shard", shard)) if v]
        if refused:
            raise SbabenchError(
                f"{', '.join(refused)} cannot be combined with a run until decided: every "
                "round runs the whole suite, so that each look tests every comparison",
                fix="drop the option (or run without --until-decided / a replicates range)",
            )
        spec = first_round(spec, design)
    shard_spec = parse_shard(shard) if shard else None
    if dry_run:
        plan = plan_suite(spec, results_dir, force=force, only=only, shard=shard_spec)
        _show(terminal.plan_report(spec.name, plan))
        return
    if ray_address is not None and executor != "ray":
        raise SbabenchError("--ray-address needs --executor ray", fix="add --executor ray")
    if design is not None:
        code, summary = _run_until_decided(
            spec, design, results_dir, executor, ray_address, ray_retries
        )
    else:
        with terminal.ProgressBar(errors) as bar:
            summary = run_with(
                executor, spec, results_dir, force=force, only=only, shard=shard_spec,
                progress=bar.event, ray_address=ray_address, ray_retries=ray_retries,
            )  # fmt: skip
        _show(terminal.run_report(summary, spec.name, results_dir))
        for label, message in summary.failed.items():
            errors.print(f"[red]FAILED[/red] {label}: {message}", highlight=False)
        code = summary.exit_code
    if record_to:  # failed units are listed, not recorded
        from sbabench.analysis.history.store import KEEP_ITEMS

        # only the units this run validated against the current code: files of other units in
        # the folder (e.g. left out by --only) may hold older code's scores
        done = {r.label for r in summary.results} | set(summary.failed)
        _record((results_dir / spec.name,), history_file, repo, machine, False, KEEP_ITEMS, done)
    sys.exit(code)


def _run_until_decided(
    spec: Suite,
    design: Design,
    results_dir: Path,
    executor: str,
    ray_address: str | None,
    ray_retries: int,
) -> tuple[int, RunSummary]:
    """Rounds of replicates with a look after each; the exit code (0 done, 1 a unit failed)
    and the last round's summary."""
    from sbabench.analysis.sequential import run_until_decided
    from sbabench.run.executors import run_with

    summaries = []
    with terminal.ProgressBar(errors) as bar:

        def run_round(round_suite: Suite) -> bool:
            summary = run_with(
                executor, round_suite, results_dir, force=False, only=None, shard=None,
                progress=bar.event, ray_address=ray_address, ray_retries=ray_retries,
            )  # fmt: skip
            summaries.append(summary)
            return not summary.failed

        def on_look(look: Look) -> None:
            bar.bar.console.print(terminal.look_line(look), highlight=False)

        outcome = run_until_decided(
            spec, design, results_dir / spec.name, run_round, on_look=on_look
        )
    last = summaries[-1]
    _show(terminal.run_report(last, spec.name, results_dir))
    _show(terminal.sequential_report(outcome.record))
    for label, message in last.failed.items():
        errors.print(f"[red]FAILED[/red] {label}: {message}", highlight=False)
    return (1 if outcome.failed else 0), last


@main.command()
@_results_option("Results folder whose embedding cache (.cache/embeddings.sqlite) to show.")
@click.option("--prune", is_flag=True, help="Delete cached embeddings matching the filters below.")
@click.option(
    "--older-than", type=click.FloatRange(0), metavar="DAYS", help="Not used for DAYS days."
)
@click.option("--model", help="Of this model name.")
@click.option("--suite", help="Of this suite.")
@click.option(
    "--machine",
    is_flag=True,
    help="Show this machine's cache instead (router centroids, parsed code; $SBABENCH_CACHE or the user cache folder).",
)
@click.option(
    "--clear",
    is_flag=True,
    help="With --machine: delete every entry sbabench wrote (a folder that is not its cache is refused).",
)
@_user_errors
def cache(
    results_dir: Path,
    prune: bool,
    older_than: float | None,
    model: str | None,
    suite: str | None,
    machine: bool,
    clear: bool,
) -> None:
    """Show the embedding cache's size per suite/model/aggregator, or prune it; with --machine,
    list (or --clear) the machine-wide cache."""

    if clear and not machine:
        raise SbabenchError(
            "--clear goes with --machine", fix="use --prune for the embedding cache"
        )
    if machine:
        from sbabench.models.machine_cache import MachineCache

        _show(terminal.cache_report(MachineCache().listing(clear)))
    else:
        from sbabench.run.embedding_store import report_cache

        report = report_cache(
            results_dir, prune=prune, older_than_days=older_than, model=model, suite=suite
        )
        _show(terminal.cache_report(report))


def _print_notes(notes: list[str]) -> None:
    """One line per note of the suite's loader (on stderr: stdout stays the command's output)."""
    for note in notes:
        errors.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@_user_errors
def validate(suite: Path) -> None:
    """Check SUITE without running it: schema, model sources, aggregators and their options,
    task names. Problems are listed as file:line:column: field: message (exit code 2). A user
    operator's reference is checked for its form, not imported: its code runs only at `run`.
    """
    from sbabench.suite import expand, load_suite

    spec = load_suite(suite)
    units = expand(spec)
    _print_notes(spec.notes)
    console.print(terminal.suite_line(suite, spec, len(units)))


@main.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file instead of printing it.",
)
@_user_errors
def schema(output: Path | None) -> None:
    """Print the JSON Schema of suite files (suites/schema.json is this output)."""
    from sbabench.suite.reference import schema_text, write_schema

    if output is None:
        click.echo(schema_text(), nl=False)
    else:
        write_schema(output)


@main.command()
def aggregators() -> None:
    """List the built-in aggregation operators and their options."""
    _show(terminal.aggregator_listing())


@main.command()
def tasks() -> None:
    """List the task types, the bundled offline tasks, and explain how to name MTEB tasks."""
    _show(terminal.task_listing())


@main.command()
@click.argument("results_dir", type=click.Path(path_type=Path), default=Path("results"))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown"]), default="table", show_default=True
)
@click.option("--geometry", is_flag=True, help="Also print the MoE-layer geometry statistics.")
@_user_errors
def show(results_dir: Path, fmt: str, geometry: bool) -> None:
    """Print the main-score table of the results under RESULTS_DIR (a suite's folder or all)."""
    from sbabench.analysis.compare import load_folder
    from sbabench.analysis.report import score_text

    results = load_folder(results_dir)
    if fmt == "markdown":
        click.echo(score_text(results, geometry))
    else:
        _show(terminal.score_report(results, str(results_dir), geometry))


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
    from sbabench.run.inspection import inspect_model, inspected_specs

    for spec in inspected_specs(target, model_name, trust_remote_code, revision):
        _show(terminal.model_report(inspect_model(spec)))


@main.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    default="linear",
    show_default=True,
    help="Operator every other one is compared with.",
)
@click.option(
    "--baseline-model",
    help="Compare every model with this model instead, operator by operator (router or "
    "Tilt-Rate sweeps).",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    help="A second results folder (e.g. from the main branch): compare each unit with its twin there.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json", "html"]),
    default="table",
    show_default=True,
    help="html: a self-contained page (sortable table, a chart of the differences).",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report to FILE."
)
@_RESAMPLES
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    callback=_finite,
    help="Significance level of the marks (Holm-adjusted p) and of Nemenyi's critical difference.",
)
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help="Exit 1 if any task drops significantly by > --max-drop.",
)
@click.option(
    "--max-drop",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0),
    callback=_finite,
    help="Tolerated drop.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="With --fail-on-regression, an INCONCLUSIVE unit (a drop larger than --max-drop not "
    "ruled out) fails the gate too.",
)
@click.option(
    "--effect",
    type=click.FloatRange(0, min_open=True),
    callback=_finite,
    help="The difference you care about: an INCONCLUSIVE unit says how many replicates would "
    "bring its minimum detectable difference below it (default: --max-drop).",
)
@click.option(
    "--allow-new",
    is_flag=True,
    help="Units absent from the --against folder (new tasks or operators) do not fail the gate; "
    "nothing else is excused.",
)
@_user_errors
def compare(
    results: tuple[Path, ...],
    baseline: str,
    baseline_model: str | None,
    against: Path | None,
    fmt: str,
    output: Path | None,
    resamples: int,
    seed: int,
    alpha: float,
    fail_on_regression: bool,
    max_drop: float,
    strict: bool,
    effect: float | None,
    allow_new: bool,
) -> None:
    """Compare operators (or two result folders) with paired significance tests.

    RESULTS are results folders (default: results/). Per task: score, difference to the
    baseline, its 95% CI and p-value from a paired bootstrap over the same test items (pairs
    for STS / pair classification, documents for clustering), Holm-adjusted p, and Steiger's
    test for STS. Across tasks: wins/ties/losses and a Wilcoxon signed-rank test; Friedman +
    Nemenyi with three or more systems. Every unit gets a state: PASS, REGRESSION,
    INCONCLUSIVE (with its minimum detectable difference) or NOT TESTED (with the reason).
    Exit code: 0; 1 with --fail-on-regression when a unit regressed or was not tested (with
    --strict, also when one is inconclusive); 2 on bad input (a result file that cannot be
    read, or whose content disagrees with its path or its own items).
    """
    from sbabench.analysis.compare import compare as compare_folders
    from sbabench.analysis.report import comparison_text
    from sbabench.analysis.sequential import records_under

    folders = results or (Path("results"),)
    shown = fmt == "table" and output is None and against is None
    records = records_under([f for f in folders if f.is_dir()]) if shown else []
    outcome = compare_folders(
        folders,
        against=against,
        baseline=baseline,
        n_resamples=resamples,
        seed=seed,
        alpha=alpha,
        max_drop=max_drop,
        fail_on_regression=fail_on_regression,
        baseline_model=baseline_model,
        strict=strict,
        allow_new=allow_new,
        effect=effect,
    )
    text = ""
    if fmt == "html":
        from sbabench.analysis.compare_page import comparison_html

        text = comparison_html(outcome)
    elif fmt != "table" or output:
        text = comparison_text(outcome, fmt)
    if output:
        _write_files([(output, text.encode("utf-8"), "--output")])
    elif fmt != "table":
        click.echo(text, nl=False)
    else:
        _show(terminal.comparison_report(outcome))
    if fmt == "table" and output is None and against is None:
        for record, notes in records:
            _show(terminal.sequential_report(record, notes))
    if fmt == "table" and output is None:  # wrapped at words in a terminal, one line in a pipe
        console.print(
            outcome.verdict.text, markup=False, highlight=False, soft_wrap=not console.is_terminal
        )
    else:  # beside --format json/csv/markdown on stdout, on stderr
        click.echo(outcome.verdict.text, err=fmt != "table" and output is None)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("plots"),
    show_default=True,
)
@click.option("--baseline", default="linear", show_default=True, help="Operator the forest plot compares with.")  # fmt: skip
@_RESAMPLES
@_user_errors
def plot(results: tuple[Path, ...], folder: Path, baseline: str, resamples: int) -> None:
    """Write PNG figures: score differences with 95% CIs per task (forest plot); per model/
    aggregator the norm and angle histograms and the collapse ratio of every MoE layer; with
    geometry probes, expert x expert heatmaps (Jacobian alignment, Grassmann distance, router
    coupling) and Jacobian spectra; for fine-tuned suites, the loss and gradient-norm
    curves per operator; with token elimination, score against FLOPs kept and encode time.
    """
    from sbabench.analysis.compare import load_folders
    from sbabench.analysis.plots import write_figures

    folders = results or (Path("results"),)
    loaded = load_folders(folders)
    written = write_figures(
        loaded, folder, baseline=baseline, n_resamples=resamples, sources=folders
    )
    _show(terminal.figures_report(written))


@main.command()
@click.argument("results", type=click.Path(path_type=Path), default=Path("results"))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mteb"]),
    default="mteb",
    show_default=True,
    help="mteb: one TaskResult file per unit, in mteb's results layout.",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write (mteb: <model>__<operator>/<revision>/<Task>.json).",
)
@_user_errors
def export(results: Path, fmt: str, output: Path) -> None:
    """Write RESULTS (a results folder, or one suite's) in another tool's format: mteb's, so
    mteb's TaskResult.from_disk, ResultCache and leaderboard tools read them. The operator is
    part of the model name (minilm-moe__sba); a dense model keeps its own."""
    from sbabench.analysis.export import export_mteb

    _show(terminal.export_report(export_mteb(results, output), output, fmt))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist (yet)
        return False


def _record(
    folders: tuple[Path, ...],
    history_file: Path,
    repo: Path,
    machine: str | None,
    replace: bool,
    keep_items: int,
    units: Collection[str] | None = None,
) -> None:
    from sbabench.analysis.history.recording import record_results

    done = record_results(
        folders, history_file, repo=repo, machine=machine,
        replace_changed=replace, keep_items=keep_items, units=units,
    )  # fmt: skip
    _report_recorded(done, history_file)


def _report_recorded(done: Recorded, history_file: Path) -> None:
    dirty = " (dirty tree)" if done.dirty else ""
    console.print(
        f"recorded {done.units - len(done.not_recorded)} of {done.units} units at "
        f"{done.commit.sha[:12]}{dirty} on {done.machine} in {history_file}: "
        f"{done.added.summary()}",
        markup=False, highlight=False,
    )  # fmt: skip
    for label, message in done.not_recorded.items():
        errors.print(f"not recorded: {label}: {message}", markup=False, highlight=False)


@main.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@_HISTORY
@_REPO
@_MACHINE
@click.option(
    "--from",
    "sources",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Merge the records of another history file (e.g. a CI artefact); repeatable.",
)
@click.option(
    "--replace", is_flag=True, help="Overwrite records already stored with other content."
)
@click.option(
    "--keep-items",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Commits per unit whose per-item scores are kept (scores are kept forever).",
)
@_user_errors
def record(
    results: tuple[Path, ...],
    history_file: Path,
    repo: Path,
    machine: str | None,
    sources: tuple[Path, ...],
    replace: bool,
    keep_items: int,
) -> None:
    """Append every unit of RESULTS (results folders, read as the gate reads them) to the
    history at the current commit of --repo: main score, its uncertainty, the per-item scores
    and provenance. Recording the same unit, commit and machine again is a no-op; other content
    is an error unless --replace. Exit code: 0; 2 on bad input (a result file the gate would
    refuse, a damaged history, a changed record without --replace).
    """
    from sbabench.analysis.history.recording import prepare_records
    from sbabench.analysis.history.store import HistoryStore

    if not results and not sources:
        raise SbabenchError("nothing to record", fix="give RESULTS folders, or --from FILE")
    # the history being written, given as a source too, adds nothing to itself
    for source in [s for s in sources if _same_file(s, history_file)]:
        console.print(f"skipped --from {source}: it is the history being written", markup=False)
    sources = tuple(s for s in sources if not _same_file(s, history_file))
    # every source and the results read and checked first, then written in one transaction:
    # all or nothing
    groups = [HistoryStore(source).export() for source in sources]
    ready = prepare_records(results, repo=repo, machine=machine) if results else None
    if ready is not None:
        groups.append((ready.records, ready.commits))
    names = [str(source) for source in sources] + (["the RESULTS folders"] if ready else [])
    done = HistoryStore(history_file, create=True).add_groups(
        groups, replace_changed=replace, keep_items=keep_items, names=names
    )
    for source, added in zip(sources, done, strict=False):
        console.print(f"merged {source}: {added.summary()}", markup=False, highlight=False)
    if ready is not None:
        _report_recorded(ready.recorded(done[-1]), history_file)


@main.command()
@_HISTORY
@_REPO
@_MACHINE
@click.option("--branch", default="HEAD", show_default=True, help="Whose first-parent commits.")
@click.option("--only", metavar="GLOB", help="Only units whose model/aggregator/task matches.")
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
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the series to FILE (.png or .svg).",
)
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write a self-contained page to DIR/index.html (sortable table, charts).",
)
@_RESAMPLES
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    callback=_finite,
    help="Level of the step detection, of each step's paired test and of the drop gate (Holm).",
)
@click.option(
    "--fail-on-drop",
    is_flag=True,
    help="Exit 1 if a unit dropped by more than --max-drop between --since and the newest "
    "recorded commit, or could not be tested.",
)
@click.option("--since", metavar="REF", help="The commit the drop gate compares with.")
@click.option(
    "--max-drop",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0),
    callback=_finite,
    help="Tolerated drop.",
)
@_user_errors
def history(
    history_file: Path,
    repo: Path,
    machine: str | None,
    branch: str,
    only: str | None,
    fmt: str,
    output: Path | None,
    plot: Path | None,
    html_dir: Path | None,
    resamples: int,
    seed: int,
    alpha: float,
    fail_on_drop: bool,
    since: str | None,
    max_drop: float,
) -> None:
    """Each unit's score over the first-parent commits of --branch: a table with a trend, the
    steps found (weighted by each score's uncertainty, confirmed by the paired test between
    the commits on either side), and with --since the drop gate. A change of settings, task
    revision or model build starts a new series. Exit code: 0; 1 with --fail-on-drop when a
    unit dropped or was not tested; 2 on bad input.
    """
    from sbabench.analysis.history import render
    from sbabench.analysis.history.report import history_report

    if fail_on_drop and since is None:
        raise SbabenchError(
            "--fail-on-drop needs --since REF", fix="add --since main (or a commit)"
        )
    report = history_report(
        history_file, repo=repo, branch=branch, machine=machine, only=only, alpha=alpha,
        n_resamples=resamples, seed=seed, since=since, max_drop=max_drop,
    )  # fmt: skip
    files: list[tuple[Path, bytes, str]] = []  # made first, then written all or none
    if plot is not None:
        from sbabench.analysis.history.figure import plot_image

        files.append((plot, plot_image(report, plot), "--plot"))
    if html_dir is not None:
        from sbabench.analysis.history.page import page_html

        files.append((html_dir / "index.html", page_html(report).encode("utf-8"), "--html"))
    if output:
        text = render.text(report, "markdown" if fmt == "table" else fmt)
        files.append((output, text.encode("utf-8"), "--output"))
    _write_files(files)
    for path, _, option in files:
        if option != "--output":
            errors.print(f"wrote {path}", markup=False, highlight=False)
    if not output and fmt != "table":
        click.echo(render.text(report, fmt), nl=False)
    elif not output:
        _show(render.terminal(report))
    if fail_on_drop and report.gate is not None and report.gate.failed:
        sys.exit(1)


@main.command()
@click.argument("good")
@click.argument("bad")
@click.option(
    "--suite",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The suite that defines the unit.",
)
@click.option("--only", required=True, metavar="GLOB", help="The one unit: model/aggregator/task.")
@_REPO
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".sbabench-bisect"),
    show_default=True,
    help="Results folder shared by every tested commit (its caches make unchanged code free).",
)
@_RESAMPLES
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--alpha",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    callback=_finite,
    help="A commit has moved when its paired test against GOOD has p < alpha.",
)
@_user_errors
def bisect(
    good: str,
    bad: str,
    suite: Path,
    only: str,
    repo: Path,
    results_dir: Path,
    resamples: int,
    seed: int,
    alpha: float,
) -> None:
    """Find the first commit after GOOD (up to BAD, on BAD's first-parent line) where the score
    of one unit moved: each tested commit is checked out in a temporary worktree of --repo and
    the unit run there with the current environment, then compared with GOOD by the paired test.
    Exit code: 0 a commit was found; 1 BAD does not differ from GOOD; 2 on bad input or a run
    that failed.
    """
    from sbabench.analysis.history.bisect import bisect as bisect_range

    def note(text: str) -> None:
        errors.print(text, markup=False, highlight=False)

    found = bisect_range(
        repo, good, bad, suite, only, results_dir,
        alpha=alpha, n_resamples=resamples, seed=seed, progress=note,
    )  # fmt: skip
    for probe in found.probes:
        test = probe.test
        against = (
            "GOOD"
            if test is None
            else f"{test.delta:+.4f} (95% CI {test.ci_low:+.4f}..{test.ci_high:+.4f}, "
            f"p {test.p_value:.2g}){' MOVED' if probe.moved else ''}"
        )
        console.print(
            f"{probe.commit.sha[:12]} {probe.score:.4f} {against}  {probe.commit.subject}",
            markup=False, highlight=False,
        )  # fmt: skip
    if found.first_moved is None:
        console.print(
            f"{found.label}: BAD does not differ from GOOD (p >= {alpha:g})", markup=False
        )
        sys.exit(1)
    first = found.first_moved
    console.print(
        f"{found.label}: first moved at {first.sha[:12]} ({first.subject}); "
        f"{len(found.probes)} of {found.commits + 1} commits run",
        markup=False, highlight=False,
    )  # fmt: skip
