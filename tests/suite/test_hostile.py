"""Hostile suites: random names built to escape (`..`, `/`, absolute paths aimed at a sentinel
folder, NUL, very long, unicode) go through `validate` and `run --dry-run`; each ends with exit
0, 1 or 2, no traceback, and the sentinel folder byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbabench.cli import main


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` (links too) with its content's digest."""
    found = {}
    for path in sorted(folder.rglob("*")):
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        found[str(path.relative_to(folder))] = hashlib.sha256(content).hexdigest()
    return found


def _hostile_names(sentinel: Path) -> st.SearchStrategy[str]:
    aimed = [
        "..", "../x", "../../sentinel", str(sentinel), f"{sentinel}/planted", "a/../../b",
        "./x", ".hidden", "x/", "/", "a\0b", "x" * 300, "naïve", "名前", "a b", "~", "$HOME",
        "%2e%2e", "..\\x", "LeeDocSTS", "ok-name",
    ]  # fmt: skip
    return st.one_of(st.sampled_from(aimed), st.text(min_size=0, max_size=40))


def _suite(suite: str, model: str, label: str, task: str) -> str:
    return (
        f"name: {json.dumps(suite)}\n"
        "models:\n"
        f"  - {{name: {json.dumps(model)}, source: upcycle, experts: 4, layers: [1], router: random}}\n"
        f"aggregators: [linear, {{name: sba, label: {json.dumps(label)}}}]\n"
        f"tasks: [{json.dumps(task)}]\n"
        "settings: {device: cpu}\n"
    )


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    sentinel = root / "sentinel"
    (sentinel / "inner").mkdir(parents=True)
    (sentinel / "keep.txt").write_text("keep me")
    (sentinel / "inner" / "weights.bin").write_bytes(b"\0" * 64)
    for name in ("home", "tmp", "work"):
        (root / name).mkdir()
    return root


def test_hostile_names_are_refused_or_harmless(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = sandbox / "sentinel"
    before = _snapshot(sentinel)
    work = sandbox / "work"
    monkeypatch.chdir(work)
    env = {
        "HOME": str(sandbox / "home"),
        "TMPDIR": str(sandbox / "tmp"),
        "SBABENCH_CACHE": str(sandbox / "home" / "cache"),
    }
    names = _hostile_names(sentinel)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(suite=names, model=names, label=names, task=names)
    def check(suite: str, model: str, label: str, task: str) -> None:
        path = work / "suite.yaml"
        path.write_text(_suite(suite, model, label, task), encoding="utf-8")
        for args in (["validate", str(path)], ["run", "--dry-run", str(path), "--results", "r"]):
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code in (0, 1, 2), (args, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                args, result.exception,
            )  # fmt: skip
            assert "Traceback" not in result.output
            if any(_unsafe(n) for n in (suite, model, label, task)):  # refused, not harmless
                assert result.exit_code == 2, (args, result.output)
        assert _snapshot(sentinel) == before

    check()


def _unsafe(name: str) -> bool:
    """Names no pattern may let through: they would leave or confuse a results folder."""
    return any(bad in name for bad in ("..", "/", "\0", "\\")) or name.endswith(".error")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{trust_remote_code: true}", "model_kwargs may not set trust_remote_code"),
        (
            "{revision: main, code_revision: main}",
            "model_kwargs may not set code_revision, revision",
        ),
    ],
)
def test_model_kwargs_cannot_bypass_the_pinned_revision(
    tmp_path: Path, model: str, message: str
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: s\nmodels:\n"
        f"  - {{name: m, source: huggingface, path: /nowhere, model_kwargs: {model}}}\n"
        "aggregators: [linear]\ntasks: [LeeDocSTS]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "model_kwargs" in result.output


def test_a_task_named_like_a_failure_record_is_refused(tmp_path: Path) -> None:
    """`x.error`'s result file would be where a failure of task `x` is recorded."""
    (tmp_path / "data.csv").write_text("text1,text2,score\na,b,1\n")
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: s\nmodels:\n  - {name: m, source: dense}\naggregators: [linear]\n"
        "tasks:\n  - {name: my-sts.error, type: sts, path: data.csv,"
        " text1: text1, text2: text2, score: score}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "'.error'" in result.output, result.output
