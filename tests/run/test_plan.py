"""Planning: where a unit's files go stays under the results folder, and links are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.errors import SbabenchError
from sbabench.run.plan import plan_suite
from sbabench.suite import parse_suite
from tests.factories import TINY_SUITE


def test_a_result_folder_linked_outside_is_refused_before_anything_runs(tmp_path: Path) -> None:
    results, outside = tmp_path / "results", tmp_path / "outside"
    (results / "tiny").mkdir(parents=True)
    outside.mkdir()
    (results / "tiny" / "moe").symlink_to(outside)
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE)
    for command in (["run", "--dry-run"], ["run"]):
        outcome = CliRunner().invoke(main, [*command, str(suite), "--results", str(results)])
        assert outcome.exit_code == 2 and "Traceback" not in outcome.output, outcome.output
        assert "symbolic link" in outcome.output and str(results / "tiny" / "moe") in outcome.output
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("which", ["result", "lock", "error"])
def test_a_result_lock_or_error_file_that_is_a_link_is_refused(tmp_path: Path, which: str) -> None:
    results = tmp_path / "results"
    relative = Path("tiny", "dense", "dense")
    folder = {"result": results, "error": results, "lock": results / ".cache" / "locks"}[which]
    name = {"result": "LeeDocSTS.json", "error": "LeeDocSTS.error.json", "lock": "LeeDocSTS.lock"}
    (folder / relative).mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / relative / name[which]).symlink_to(victim)
    suite = parse_suite(TINY_SUITE, check=False)
    with pytest.raises(SbabenchError, match="symbolic link") as caught:
        plan_suite(suite, results)
    assert name[which] in caught.value.render()
    assert victim.read_text() == "keep me"


def test_a_suite_built_in_python_with_a_bad_name_is_refused(tmp_path: Path) -> None:
    suite = parse_suite(TINY_SUITE, check=False)
    hostile = suite.model_copy(update={"name": "../../escaped"})  # no validation on copy
    with pytest.raises(SbabenchError, match="suite name"):
        plan_suite(hostile, tmp_path / "results")
    assert not (tmp_path / "escaped").exists()
