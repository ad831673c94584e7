"""`sbabench bisect`: the located refusals (the search itself: `test_user_repository`)."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from sbabench.cli import main
from tests.analysis.history.builders import commit, git, new_repo
from tests.analysis.history.test_user_repository import SUITE


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
