"""A repository under test of ten commits whose own operator (a user operator in it) changes
once: run and recorded commit by commit, its history has one step, at that commit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.analysis.history.bisect import bisect
from sbabench.analysis.history.report import history_report
from sbabench.cli import main
from sbabench.digests import _spec
from tests.analysis.history.builders import commit, new_repo

SUITE = """\
name: own
models:
  - name: moe
    source: upcycle
    experts: 4
    layers: [1]
    router: random
aggregators: ['userops:combine']
tasks: [LeeDocSTS]
settings: {device: cpu}
geometry: {tokens: 0}
"""
BEFORE = "    return (outputs * weights.unsqueeze(-1)).sum(1)\n"
AFTER = (  # a bug: a fixed vector added to every token, which the layer norm cannot remove
    "    mixed = (outputs * weights.unsqueeze(-1)).sum(1)\n"
    "    return mixed + 3.0 * torch.sin(torch.arange(mixed.shape[-1], dtype=mixed.dtype))\n"
)
CHANGED_AT = 6
"""The commit (0-based) that changes the operator."""


def _operator(body: str) -> str:
    return f'import torch\n\n\ndef combine(outputs, weights):\n    """The project\'s aggregation."""\n{body}'


@pytest.mark.slow  # two real units (~20 s of CPU)
def test_the_step_is_found_at_the_commit_that_changed_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(tmp_path / "repo")
    (repo / "suite.yaml").write_text(SUITE)
    monkeypatch.syspath_prepend(str(repo))
    history = repo / "results" / "history.sqlite"
    shas = []
    for n in range(10):
        (repo / "userops.py").write_text(_operator(AFTER if n >= CHANGED_AT else BEFORE))
        shas.append(commit(repo, f"commit {n}", 1_700_000_000 + 60 * n))
        monkeypatch.delitem(sys.modules, "userops", raising=False)  # the checked-out code
        ran = CliRunner().invoke(main, ["run", str(repo / "suite.yaml"), "--results", str(repo / "results"), "--record", "--history", str(history), "--repo", str(repo), "--machine", "ci"])  # fmt: skip
        assert ran.exit_code == 0, ran.output
        assert ("1 computed" in ran.output) == (n in (0, CHANGED_AT)), ran.output  # else cached
        assert "recorded 1 of 1 units" in ran.output
    report = history_report(history, repo=repo)
    (unit,) = report.units
    assert len(unit.points) == 10
    (step,) = report.steps
    assert step.confirmed and step.after.sha == shas[CHANGED_AT]
    assert step.before.sha == shas[CHANGED_AT - 1]
    before, after = unit.points[CHANGED_AT - 1].score, unit.points[CHANGED_AT].score
    assert step.test is not None and step.test.delta == pytest.approx(after - before, abs=1e-5)
    assert step.test.delta < 0 and step.test.ci_high < 0  # the bug lowers the score

    def in_process(tree: Path, suite: Path, results: Path, only: str) -> None:
        """What `run_in_subprocess` does, in this process (torch stays loaded): the worktree's
        module found afresh (the digests remember where a module name was found)."""
        _spec.cache_clear()
        monkeypatch.chdir(tree)
        monkeypatch.syspath_prepend(str(tree))
        monkeypatch.delitem(sys.modules, "userops", raising=False)
        ran = CliRunner().invoke(main, ["run", str(suite), "--results", str(results), "--only", only])  # fmt: skip
        assert ran.exit_code == 0, ran.output

    found = bisect(repo, shas[0], shas[-1], repo / "suite.yaml", "*/userops.combine/*", repo / "results", run=in_process)  # fmt: skip
    assert found.first_moved is not None and found.first_moved.sha == shas[CHANGED_AT]
    assert len(found.probes) <= 6  # GOOD, BAD and a halving of the 8 commits between
