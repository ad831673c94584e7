"""The example suites ship inside the package: `sbabench run quickstart` works after a pip install."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.errors import SbabenchError
from sbabench.suite import load_suite
from sbabench.suite.loader import example_suites

SUITES = Path(__file__).resolve().parents[2] / "suites"


def test_the_examples_are_the_repository_suites() -> None:
    examples = example_suites()
    assert sorted(examples) == sorted(p.stem for p in SUITES.glob("*.yaml"))
    for name, path in examples.items():
        assert path.read_bytes() == (SUITES / f"{name}.yaml").read_bytes()
    assert (examples["quickstart"].parent / "schema.json").is_file()


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml"])
def test_a_bare_name_that_is_no_file_here_is_the_example(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = load_suite(name)
    assert suite.model_dump() == load_suite(SUITES / "quickstart.yaml").model_dump()
    assert suite.notes[0].startswith(f"{name}: no such file here; using the example suite ")
    result = CliRunner().invoke(main, ["validate", name])
    assert result.exit_code == 0, result.output
    assert "note:" in result.output and "-> 9 unit(s)" in result.output


def test_a_file_here_wins_over_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (SUITES / "quickstart.yaml").read_text().replace("name: quickstart", "name: mine")
    Path("quickstart").write_text(text)
    suite = load_suite("quickstart")
    assert suite.name == "mine" and not suite.notes


def test_a_missing_path_is_not_looked_up_among_the_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SbabenchError, match="does not exist") as caught:
        load_suite("elsewhere/quickstart.yaml")
    assert "quickstart" in str(caught.value.fix) and "task-types" in str(caught.value.fix)


def test_only_an_exact_bare_name_is_an_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for path in ("./quickstart", "./quickstart.yaml", "sub/quickstart"):
        with pytest.raises(SbabenchError, match="does not exist"):
            load_suite(path)


def test_inspect_takes_an_example_name_as_the_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbabench.run.inspection import inspected_specs

    monkeypatch.chdir(tmp_path)
    specs = inspected_specs("quickstart")
    assert [s.name for s in specs] == ["minilm-moe", "minilm"]
