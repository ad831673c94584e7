"""`sbabench bisect`: the located refusals (the search itself: `test_user_repository`)."""

from __future__ import annotations

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
