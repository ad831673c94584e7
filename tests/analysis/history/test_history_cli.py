"""`sbabench history` over a made-up repository of 8 commits whose score drops once."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from sbabench.analysis.history import render
from sbabench.analysis.history.report import history_report
from sbabench.cli import main
from tests.analysis.history.builders import commit, new_repo, sts_result, write_results
from tests.factories import key_parts

DROP_AT = 5
"""The commit (0-based) whose results are noisier: its Spearman, and every later one's, drops."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    repo = new_repo(tmp_path_factory.mktemp("history") / "repo")
    shas = []
    for n in range(8):
        shas.append(commit(repo, f"change {n}", 1_700_000_000 + 60 * n))
        shift = 3.0 if n >= DROP_AT else 0.0
        folder = write_results(
            repo / "results", sts_result(shift, 1), sts_result(0.0, 1, aggregator="linear")
        )
        result = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--machine", "ci", "--history", str(repo / "h.sqlite")])  # fmt: skip
        assert result.exit_code == 0, result.output
    return repo, shas


def _history(repo: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["history", "--repo", str(repo), "--history", str(repo / "h.sqlite"), *args])  # fmt: skip
    return result.exit_code, result.output


def test_the_drop_is_found_at_its_commit_confirmed_with_its_sign(
    recorded: tuple[Path, list[str]],
) -> None:
    repo, shas = recorded
    report = history_report(repo / "h.sqlite", repo=repo)
    assert [u.label for u in report.units] == ["m/linear/T1", "m/sba/T1"]
    (step,) = report.steps
    assert step.label == "m/sba/T1" and step.confirmed
    assert step.before.sha == shas[DROP_AT - 1] and step.after.sha == shas[DROP_AT]
    assert step.test is not None and step.test.delta < 0 and step.test.ci_high < 0
    assert step.after.subject == f"change {DROP_AT}"


def test_the_table_fits_80_columns_and_names_the_step(recorded: tuple[Path, list[str]]) -> None:
    repo, shas = recorded
    console = Console(width=80, record=True, file=io.StringIO())
    for shown in render.terminal(history_report(repo / "h.sqlite", repo=repo)):
        console.print(shown)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert f"@{shas[DROP_AT][:7]}" in text and "CONFIRMED" in text
    assert "▁" in text and "█" in text


def test_markdown_csv_and_json(recorded: tuple[Path, list[str]]) -> None:
    repo, shas = recorded
    code, out = _history(repo, "--format", "markdown", "--only", "*/sba/*")
    assert code == 0 and "| m/sba/T1 | 8 |" in out and "m/linear/T1" not in out
    code, out = _history(repo, "--format", "csv")
    assert code == 0 and len(out.splitlines()) == 1 + 16 and ",confirmed" in out
    code, out = _history(repo, "--format", "json")
    data = json.loads(out)
    assert code == 0 and len(data["points"]) == 16 and data["steps"][0]["after"] == shas[DROP_AT]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot(recorded: tuple[Path, list[str]], tmp_path: Path, suffix: str) -> None:
    repo, _ = recorded
    target = tmp_path / f"history{suffix}"
    code, out = _history(repo, "--plot", str(target), "--format", "csv")
    assert code == 0 and target.stat().st_size > 1000, out
    code, out = _history(repo, "--plot", str(tmp_path / "x.gif"))
    assert code == 2 and ".png or .svg" in out


def test_drop_gate_fails_on_a_drop_since_ref_and_passes_after_it(
    recorded: tuple[Path, list[str]],
) -> None:
    repo, shas = recorded
    code, out = _history(repo, "--fail-on-drop", "--since", shas[1], "--max-drop", "0.005")
    assert code == 1, out
    assert "DROP: m/sba/T1" in out and "NO DROP SHOWN: m/linear/T1" in out
    assert "2 of 2 units tested" in out
    code, out = _history(repo, "--fail-on-drop", "--since", shas[DROP_AT], "--format", "json")
    assert code == 0, out
    assert json.loads(out)["gate"]["failed"] is False
    code, out = _history(repo, "--fail-on-drop")
    assert code == 2 and "--since" in out


def test_a_change_of_settings_starts_a_new_series(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    for n in range(4):
        commit(repo, f"c{n}", 1_700_000_000 + n)
        result = sts_result(1.0 if n >= 2 else 0.0, 1)
        if n >= 2:  # another seed from commit 2 on: a new series, not a step
            parts = key_parts().model_copy(update={"settings": key_parts().settings.model_copy(update={"seed": 1})})  # fmt: skip
            result = result.model_copy(update={"key_parts": parts, "key": parts.digest})
        folder = write_results(repo / "results", result)
        result_cli = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", str(repo / "h.sqlite")])  # fmt: skip
        assert result_cli.exit_code == 0, result_cli.output
    report = history_report(repo / "h.sqlite", repo=repo)
    (unit,) = report.units
    assert [len(s) for s in unit.segments] == [2, 2] and not report.steps
    code, out = _history(repo, "--fail-on-drop", "--since", "HEAD~3")
    assert code == 1 and "NOT TESTED" in out and "new series" in out


def test_the_gate_fails_closed_when_the_tip_lacks_a_unit_or_was_never_recorded(
    tmp_path: Path,
) -> None:
    """An older record never stands in for the gated commit's: a unit recorded at REF but not
    at the tip, or a tip with no record at all, is NOT TESTED and fails the gate."""
    repo = new_repo(tmp_path / "repo")
    history = str(repo / "h.sqlite")
    for n in range(2):
        commit(repo, f"c{n}", 1_700_000_000 + n)
        results = [sts_result(0.0, 1)]
        if n == 0:
            results.append(sts_result(0.0, 1, task="T2"))  # T2 only at REF
        folder = write_results(repo / f"results{n}", *results)
        done = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", history])  # fmt: skip
        assert done.exit_code == 0, done.output
    code, out = _history(repo, "--fail-on-drop", "--since", "HEAD~1")
    assert code == 1 and "NOT TESTED: m/sba/T2" in out and "no record at the gated commit" in out
    commit(repo, "c2, never recorded", 1_700_000_010)
    code, out = _history(repo, "--fail-on-drop", "--since", "HEAD~2")
    assert code == 1 and "NOT TESTED: m/sba/T1" in out and "0 of 2 units tested" in out


def test_a_record_from_a_dirty_tree_is_flagged_in_the_gate_and_the_tables(tmp_path: Path) -> None:
    """A score recorded with uncommitted changes may not be the commit's: the gate does not
    judge it (NOT TESTED, exit 1), and every report marks it (the Markdown table, JSON)."""
    repo = new_repo(tmp_path / "repo")
    history = str(repo / "h.sqlite")
    for n in range(2):
        commit(repo, f"c{n}", 1_700_000_000 + n)
        if n == 1:
            (repo / "log.txt").write_text("edited, not committed\n")  # a tracked file changed
        folder = write_results(repo / f"results{n}", sts_result(0.0, 1))
        done = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", history])  # fmt: skip
        assert done.exit_code == 0, done.output
    code, out = _history(repo, "--fail-on-drop", "--since", "HEAD~1")
    assert code == 1 and "NOT TESTED: m/sba/T1" in out and "uncommitted changes" in out
    code, out = _history(repo, "--format", "markdown", "--since", "HEAD~1")
    assert code == 0 and "*" in out.split("| m/sba/T1 |")[1].split("\n")[0]
    assert "uncommitted changes" in out
    code, out = _history(repo, "--format", "json", "--since", "HEAD~1")
    assert json.loads(out)["gate"]["units"][0]["dirty"] is True


def test_outputs_are_written_all_or_none(recorded: tuple[Path, list[str]], tmp_path: Path) -> None:
    """--plot, --html and --output are made first and written together: one that cannot be
    written (its folder is a file) leaves no other behind, and an old file as it was."""
    repo, _ = recorded
    plot, report = tmp_path / "series.png", tmp_path / "report.md"
    report.write_text("the old report\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out = _history(repo, "--plot", str(plot), "--output", str(report), "--html", str(blocker / "site"))  # fmt: skip
    assert code == 2 and "nothing was written" in out and "--html" in out
    assert not plot.exists() and report.read_text() == "the old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "report.md"]  # no temporary
    code, out = _history(repo, "--plot", str(tmp_path / "new" / "deep" / "p.svg"), "--html", str(blocker / "site"))  # fmt: skip
    assert code == 2 and not (tmp_path / "new").exists()  # the folders it made are gone too
    code, out = _history(repo, "--plot", str(plot), "--output", str(report), "--html", str(tmp_path / "site"))  # fmt: skip
    assert code == 0 and plot.stat().st_size > 1000 and (tmp_path / "site" / "index.html").exists()
    assert report.read_text().startswith("###")


def test_outputs_that_clash_or_would_overwrite_a_history_are_refused(
    recorded: tuple[Path, list[str]], tmp_path: Path
) -> None:
    repo, _ = recorded
    history = repo / "h.sqlite"
    before = history.read_bytes()
    same = tmp_path / "same.svg"
    code, out = _history(repo, "--plot", str(same), "--output", str(same))
    assert code == 2 and "--plot and --output both name" in out and not same.exists()
    code, out = _history(repo, "--output", str(history))
    assert code == 2 and "SQLite database" in out and history.read_bytes() == before
    link = tmp_path / "link.md"
    link.symlink_to(tmp_path / "elsewhere.md")
    code, out = _history(repo, "--output", str(link))
    assert code == 2 and "symbolic link" in out and not (tmp_path / "elsewhere.md").exists()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # reading it would block: refused without opening it
    code, out = _history(repo, "--output", str(fifo))
    assert code == 2 and "not a regular file" in out
    (tmp_path / "site" / "index.html").mkdir(parents=True)  # the page's file is a folder
    code, out = _history(repo, "--plot", str(tmp_path / "p.svg"), "--html", str(tmp_path / "site"))
    assert code == 2 and "index.html" in out and "--html" in out
    assert not (tmp_path / "p.svg").exists()


def test_csv_shows_a_formula_in_a_commit_subject_as_text(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    commit(repo, '=HYPERLINK("http://example.invalid","x")', 1_700_000_000)
    folder = write_results(repo / "results", sts_result(0.0, 1))
    done = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", str(repo / "h.sqlite")])  # fmt: skip
    assert done.exit_code == 0, done.output
    code, out = _history(repo, "--format", "csv")
    assert code == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["subject"] == '\'=HYPERLINK("http://example.invalid","x")'
