"""`sbabench bisect GOOD BAD --suite S --only UNIT`: the first commit between GOOD and BAD at
which one unit's score moved.

The commits are BAD's first-parent line after GOOD. Each tested commit is checked out in one
temporary worktree of the repository under test and the unit is run there with the current
environment (`sbabench run` started in the worktree, so the repository's own operator code is
the one imported) into one results folder shared by every commit: a commit whose code gives an
already computed unit key costs nothing, and the embedding cache serves operator code seen
before. Each commit is compared with GOOD by the paired test on its items; a commit has MOVED
when p < alpha. The search halves the range, assuming that once moved the score stays moved
(as `git bisect` does); the report lists every commit it tested.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sbabench.analysis.evidence import read_side, unit_label
from sbabench.analysis.history import git
from sbabench.analysis.stats import PairedTest, paired_bootstrap
from sbabench.errors import SbabenchError
from sbabench.run.results import UnitResult
from sbabench.suite import Suite, load_suite
from sbabench.suite.schema import expand

Runner = Callable[[Path, Path, Path, str], None]
"""run(worktree, suite file, results folder, only): run the unit with the worktree's code."""


@dataclass(frozen=True)
class Probe:
    """One tested commit."""

    commit: git.Commit
    score: float
    test: PairedTest | None
    """Against GOOD (None: GOOD itself)."""
    moved: bool


@dataclass
class Bisection:
    """What `bisect` found."""

    label: str
    good: git.Commit
    bad: git.Commit
    first_moved: git.Commit | None
    """None: BAD does not differ from GOOD."""
    probes: list[Probe] = field(default_factory=list)
    """In the order they were tested."""
    commits: int = 0
    """Commits after GOOD up to BAD (the range searched)."""


def run_in_subprocess(worktree: Path, suite: Path, results: Path, only: str) -> None:
    """`sbabench run SUITE --only UNIT` started in `worktree` with this Python and environment;
    the worktree's folder first on the import path, so its own code is imported, and every
    import path inside the repository (a `src/` folder on the user's PYTHONPATH) moved to the
    same place in the worktree: the commit's code, never the working tree's."""
    common = Path(
        git.run_git(worktree, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
    )
    paths = [
        str(worktree),
        *_in_worktree(os.environ.get("PYTHONPATH", ""), common.parent, worktree),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, "-m", "sbabench", "run", str(suite), "--results", str(results), "--only", only]  # fmt: skip
    done = subprocess.run(command, cwd=worktree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise SbabenchError(
            f"sbabench run failed at commit {git.describe(worktree).sha[:12]} "
            f"(exit {done.returncode}): {tail}",
            fix="make the unit run at that commit, or bisect a narrower range",
        )


def _in_worktree(pythonpath: str, repo: Path, worktree: Path) -> list[str]:
    """PYTHONPATH's entries, those inside `repo` moved to the same place in `worktree`."""
    moved = []
    for entry in filter(None, pythonpath.split(os.pathsep)):
        resolved = Path(entry).resolve()
        if resolved.is_relative_to(repo.resolve()):
            resolved = worktree / resolved.relative_to(repo.resolve())
            moved.append(str(resolved))
        else:
            moved.append(entry)
    return moved


class Terminated(KeyboardInterrupt):
    """SIGTERM received during a bisection: unwound like Ctrl-C, so the worktree is removed
    and the running child killed (`subprocess.run` kills its child on any exception)."""


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(f"signal {signum}")


@contextmanager
def _worktree(repo: Path) -> Iterator[Path]:
    """A temporary detached worktree of `repo`, removed afterwards, also when the process is
    sent SIGTERM (from the main thread, where a handler can be installed)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    folder = Path(tempfile.mkdtemp(prefix="sbabench-bisect-"))
    tree = folder / "tree"
    try:
        git.run_git(repo, "worktree", "add", "--detach", "--quiet", str(tree), "HEAD")
        try:
            yield tree
        finally:
            git.run_git(repo, "worktree", "remove", "--force", str(tree))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if main:
            signal.signal(signal.SIGTERM, previous)


def the_unit(suite: Suite, only: str) -> str:
    """The label of the one unit of `suite` that `only` matches (a user error, before anything
    runs, where it matches none or several)."""
    labels = [unit.label for unit in expand(suite)]
    matched = [label for label in labels if fnmatch.fnmatchcase(label, only)]
    if len(matched) != 1:
        shown = ", ".join(matched[:4]) if matched else "its units: " + ", ".join(labels[:4])
        more = " ..." if len(matched if matched else labels) > 4 else ""
        raise SbabenchError(
            f"--only {only!r} matches {len(matched)} unit(s) of suite {suite.name!r} "
            f"({shown}{more})",
            fix="give --only a pattern that matches exactly one model/aggregator/task",
        )
    return matched[0]


def _unit(results: Path, suite: str, only: str) -> UnitResult:
    side = read_side([results / suite])
    found = [r for k, r in side.results.items() if fnmatch.fnmatchcase(unit_label(k), only)]
    failed = [unit_label(k) for k in side.failed if fnmatch.fnmatchcase(unit_label(k), only)]
    if len(found) != 1 or failed:
        raise SbabenchError(
            f"--only {only!r} matches {len(found)} computed unit(s) of suite {suite!r}"
            + (f" and failed ones ({', '.join(failed)})" if failed else ""),
            fix="give --only a pattern that matches exactly one model/aggregator/task",
        )
    return found[0]


def bisect(
    repo: Path,
    good: str,
    bad: str,
    suite: Path,
    only: str,
    results: Path,
    *,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
    run: Runner = run_in_subprocess,
    progress: Callable[[str], None] = lambda _: None,
) -> Bisection:
    """The first commit after `good` up to `bad` whose unit differs from `good`'s (see the
    module)."""
    spec = load_suite(suite)
    name = spec.name
    the_unit(spec, only)
    good_commit, bad_commit = git.describe(repo, good), git.describe(repo, bad)
    line = git.first_parent(repo, bad_commit.sha, limit=100_000)
    shas = [c.sha for c in line]
    if good_commit.sha not in shas:
        raise SbabenchError(
            f"GOOD {good} ({good_commit.sha[:12]}) is not on the first-parent line of BAD {bad}",
            fix="give a GOOD commit that BAD descends from by first parents",
        )
    commits = line[shas.index(good_commit.sha) + 1 :]
    if not commits:
        raise SbabenchError(f"BAD {bad} is GOOD {good}: nothing to search", fix="give two commits")
    results = results.resolve()
    with _worktree(repo) as tree:

        def score(commit: git.Commit) -> UnitResult:
            progress(f"running {only} at {commit.sha[:12]} {commit.subject}")
            git.run_git(tree, "checkout", "--detach", "--force", "--quiet", commit.sha)
            run(tree, suite.resolve(), results, only)
            return _unit(results, name, only)

        base = score(good_commit)
        found = Bisection(unit_label((base.suite, base.model, base.aggregator, base.task, base.replicate)), good_commit, bad_commit, None, [Probe(good_commit, base.main_score, None, False)], len(commits))  # fmt: skip

        def moved(commit: git.Commit) -> bool:
            result = score(commit)
            try:
                test = paired_bootstrap(result.items, base.items, n_resamples, seed)
            except ValueError as exc:
                raise SbabenchError(
                    f"{found.label} at {commit.sha[:12]} does not pair with GOOD's: {exc}",
                    fix="bisect a range whose task data and settings stay the same",
                ) from None
            found.probes.append(Probe(commit, result.main_score, test, test.p_value < alpha))
            return test.p_value < alpha

        if not moved(commits[-1]):
            return found
        low, high = -1, len(commits) - 1  # commits[high] moved; commits[low] did not (GOOD)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if moved(commits[middle]) else (middle, high)
        found.first_moved = commits[high]
    return found
