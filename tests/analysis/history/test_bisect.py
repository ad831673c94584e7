"""`sbabench bisect`: the located refusals, the worktree removed however the search ends
(an error, a failed run, SIGTERM with its child killed); the search itself:
`test_user_repository`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.analysis.history.bisect import bisect
from sbabench.cli import main
from sbabench.errors import SbabenchError
from tests.analysis.history.builders import commit, git, new_repo, sts_result, write_results
from tests.analysis.history.test_user_repository import SUITE


def _worktrees(repo: Path) -> int:
    return len(git(repo, "worktree", "list").splitlines())


def _bisect_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("sbabench-bisect-*")}


def test_bisect_refuses_a_range_it_cannot_search(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    (repo / "suite.yaml").write_text(SUITE)
    first = commit(repo, "first", 1_700_000_000)
    git(repo, "checkout", "-q", "-b", "side")
    side = commit(repo, "side", 1_700_000_060)
    git(repo, "checkout", "-q", "main")
    second = commit(repo, "second", 1_700_000_120)
    base = ["bisect", "--suite", str(repo / "suite.yaml"), "--only", "*", "--repo", str(repo)]
    for good, bad, message in [
        (side, second, "not on the first-parent line"),
        (first, first, "nothing to search"),
        ("no-such-ref", second, "git rev-parse"),
    ]:
        result = CliRunner().invoke(main, [*base, good, bad])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "fix:" in result.output and "Traceback" not in result.output
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # no worktree left behind


def test_import_paths_inside_the_repository_move_to_the_worktree(tmp_path: Path) -> None:
    """A `src/` folder of the repository on the user's PYTHONPATH would import the working
    tree's code in every probed commit: it is moved to the same place in the worktree."""
    from sbabench.analysis.history.bisect import _in_worktree

    repo, tree, other = tmp_path / "repo", tmp_path / "tree", tmp_path / "elsewhere"
    (repo / "src").mkdir(parents=True)
    joined = os.pathsep.join([str(repo / "src"), str(other), str(repo)])
    assert _in_worktree(joined, repo, tree) == [str(tree / "src"), str(other), str(tree)]


def test_only_must_name_one_unit_of_the_suite_before_anything_runs(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    (repo / "suite.yaml").write_text(
        SUITE.replace("tasks: [LeeDocSTS]", "tasks: [LeeDocSTS, STS12]")
    )
    first = commit(repo, "first", 1_700_000_000)
    second = commit(repo, "second", 1_700_000_060)
    for only, found in [("*", "matches 2 unit(s)"), ("nope/*", "matches 0 unit(s)")]:
        result = CliRunner().invoke(main, ["bisect", first, second, "--suite", str(repo / "suite.yaml"), "--only", only, "--repo", str(repo)])  # fmt: skip
        assert result.exit_code == 2 and found in result.output, result.output
        assert "moe/userops.combine/LeeDocSTS" in result.output  # the units it could mean
        assert "running" not in result.output and _worktrees(repo) == 1


def test_a_failed_run_leaves_no_worktree_behind(tmp_path: Path) -> None:
    """The worktree is made, GOOD runs (a stand-in writes its result), the next commit's run
    fails: the error comes through, and the worktree and its temporary folder are gone."""
    repo = new_repo(tmp_path / "repo")
    (repo / "suite.yaml").write_text(SUITE)
    shas = [commit(repo, f"c{n}", 1_700_000_000 + n) for n in range(3)]
    runs: list[Path] = []
    before = _bisect_folders()

    def good_then_failing(tree: Path, suite: Path, results: Path, only: str) -> None:
        runs.append(tree)
        assert _worktrees(repo) == 2 and tree.is_dir()  # the search is under way in it
        if len(runs) > 1:
            raise SbabenchError("the unit failed at this commit", fix="-")
        write_results(results, sts_result(0.0, 1).model_copy(update={"suite": "own"}))

    with pytest.raises(SbabenchError, match="failed at this commit"):
        bisect(repo, shas[0], shas[-1], repo / "suite.yaml", "*", tmp_path / "r", run=good_then_failing)  # fmt: skip
    assert len(runs) == 2 and not runs[0].exists()
    assert _worktrees(repo) == 1 and _bisect_folders() == before


CHILD = """import os, pathlib, time
pathlib.Path(os.environ["BISECT_CHILD_PID"]).write_text(str(os.getpid()))
time.sleep(120)
"""


@pytest.mark.slow  # a real bisect process and its child, terminated
def test_sigterm_removes_the_worktree_and_kills_the_running_child(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    (repo / "suite.yaml").write_text(SUITE)
    # the repository holds a stand-in `sbabench` package: the worktree is first on the child's
    # import path, so the child (`python -m sbabench run` there) only records its pid and waits
    (repo / "sbabench").mkdir()
    (repo / "sbabench" / "__init__.py").write_text("")
    (repo / "sbabench" / "__main__.py").write_text(CHILD)
    shas = [commit(repo, f"c{n}", 1_700_000_000 + n) for n in range(3)]
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "BISECT_CHILD_PID": str(pid_file)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sbabench", "bisect", shas[0], shas[-1], "--suite", str(repo / "suite.yaml"), "--only", "*", "--repo", str(repo), "--results", str(tmp_path / "r")],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.2)
    child = int(pid_file.read_text())
    assert _worktrees(repo) == 2
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert _worktrees(repo) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped by the bisect process
