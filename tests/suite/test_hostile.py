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
        assert _snapshot(sentinel) == before

    check()
