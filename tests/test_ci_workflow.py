"""The GitHub workflow and the Makefile call sbabench commands and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from sbabench.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _shell_lines(script: str) -> list[str]:
    """The logical lines of a shell script (backslash continuations joined)."""
    return script.replace("\\\n", " ").splitlines()


def _sbabench_calls(lines: list[str]) -> list[list[str]]:
    """The argument lists of every sbabench call in these lines."""
    calls = []
    for line in lines:
        line = line.replace("$(VENV)", ".venv").replace("$(GATE_RESULTS)", ".gate-results")
        line = line.replace("$(BASELINE)", "results/baseline")
        words = shlex.split(line, comments=True)
        # the program, not the package folder: `sbabench` first, or a path ending in it
        starts = [
            i
            for i, w in enumerate(words)
            if w.endswith("/sbabench") or (w == "sbabench" and i == 0)
        ]
        calls.extend(words[i + 1 :] for i in starts[:1])
    return calls


def _check(args: list[str]) -> None:
    command = main.commands.get(args[0])
    assert isinstance(command, click.Command), f"sbabench has no command {args[0]!r}"
    known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    for word in args[1:]:
        option = word.split("=")[0]
        if option.startswith("--"):
            assert option in known, f"`sbabench {args[0]}` has no option {option}"
    # and click accepts the whole line (arguments, choices, flag values)
    context = command.make_context(args[0], list(args[1:]), resilient_parsing=False)
    assert context.params is not None


def _workflow_runs(path: Path) -> list[str]:
    workflow = yaml.safe_load(path.read_text())
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_there_is_a_workflow_and_it_runs_the_readmes_test_command() -> None:
    assert WORKFLOWS, "no .github/workflows/*.yml"
    runs = [
        line for path in WORKFLOWS for run in _workflow_runs(path) for line in _shell_lines(run)
    ]
    assert "bash .ci/run" in runs
    script = _shell_lines((ROOT / ".ci" / "run").read_text())
    assert "make test" in script
    assert "make test" in (ROOT / "README.md").read_text()


def test_ci_runs_the_slow_tests_that_make_test_skips() -> None:
    """Every test runs somewhere: the default selection deselects `slow`, so CI runs it."""
    script = _shell_lines((ROOT / ".ci" / "run").read_text())
    slow = [line for line in script if "pytest" in line and "-m slow" in line]
    assert slow and script.index(slow[0]) > script.index("make test")
    assert "-m slow" in (ROOT / "README.md").read_text()
    addopts = (ROOT / "pyproject.toml").read_text()
    assert "not slow" in addopts  # what makes the separate run necessary


def test_the_speed_guard_judges_every_recorded_ratio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """guard.json records each ratio `make bench-check` measures, and a ratio more than the
    tolerance below its record fails, named, measured against recorded. (CI does not run it yet:
    its ratios vary too much between runs on a shared machine.)"""
    import json

    assert re.search(r"^bench-check:", (ROOT / "Makefile").read_text(), re.M)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_check

    guard = json.loads(bench_check.GUARD.read_text())
    assert set(guard["ratios"]) == {"cold", "warm", "compare", "fused"}
    assert all(entry["ratio"] > 0 for entry in guard["ratios"].values())
    recorded = {name: entry["ratio"] for name, entry in guard["ratios"].items()}
    assert bench_check.judge(recorded, guard) == []
    slow = {**recorded, "warm": recorded["warm"] * 0.7}
    (failure,) = bench_check.judge(slow, guard)
    assert failure.startswith("warm: measured") and f"{recorded['warm']:.3f}x" in failure
    assert "FAIL warm" in capsys.readouterr().out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_sbabench_command_of_the_workflow_exists_with_its_options(path: Path) -> None:
    calls = [c for run in _workflow_runs(path) for c in _sbabench_calls(_shell_lines(run))]
    assert calls
    for args in calls:
        _check(args)


def test_the_makefiles_test_target_runs_the_gate_with_options_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\bgate\b", makefile, re.M)
    recipes = [line for line in _shell_lines(makefile) if line.startswith("\t")]
    calls = _sbabench_calls(recipes)
    assert any(c[0] == "compare" and "--fail-on-regression" in c for c in calls)
    for args in calls:
        _check(args)


def test_the_check_itself_catches_a_misspelt_option() -> None:
    with pytest.raises(AssertionError, match="no option --fail-on-regresion"):
        _check(["compare", "results", "--fail-on-regresion"])
    with pytest.raises(AssertionError, match="no command"):
        _check(["comapre", "results"])
