"""Code digests: an operator's key covers its own code and the helpers it calls, nothing else."""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sbabench.aggregators import registry, resolve
from sbabench.digests import code_closure, code_digest, file_sha256, key_digest

ROOT = Path(__file__).resolve().parent.parent
_DIGESTS = (
    "import json; from sbabench.aggregators import registry, resolve; "
    "print(json.dumps({n: resolve(n).code_sha256 for n in registry()}))"
)


def _operator_digests(package_root: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", _DIGESTS],
        cwd=package_root,
        env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    digests: dict[str, str] = json.loads(out.stdout)
    return digests


def _edit(path: Path, function: str, statement: str) -> None:
    """Add a statement at the top of a module-level function's body."""
    lines = path.read_text().splitlines()
    node = next(n for n in ast.parse("\n".join(lines)).body if getattr(n, "name", None) == function)
    first = node.body[0].lineno - 1  # type: ignore[attr-defined]
    lines.insert(first, f"    {statement}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "sbabench", tmp_path / "sbabench", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_editing_one_operator_rekeys_that_operator_only(package_copy: Path) -> None:
    spherical = package_copy / "sbabench" / "aggregators" / "spherical.py"
    before = _operator_digests(package_copy)
    assert len(set(before.values())) == len(before)  # every built-in has its own digest

    _edit(spherical, "_slerp", "eps = eps * 1.0")
    after_slerp = _operator_digests(package_copy)
    changed = {name for name in before if before[name] != after_slerp[name]}
    assert changed == {"slerp"}

    # a helper that sba (and its two ablations) call, and linear does not
    _edit(spherical, "_radius_and_direction", "eps = eps * 1.0")
    after_helper = _operator_digests(package_copy)
    changed = {name for name in before if after_slerp[name] != after_helper[name]}
    assert changed == {"sba", "radius-only", "direction-only"}


def test_comments_docstrings_and_formatting_do_not_count(package_copy: Path) -> None:
    spherical = package_copy / "sbabench" / "aggregators" / "spherical.py"
    before = _operator_digests(package_copy)
    text = spherical.read_text()
    spherical.write_text(
        text.replace("def sba(", "# a comment that changes nothing\ndef sba(", 1).replace(
            '"""', '"""Reworded. ', 1
        )
    )
    assert _operator_digests(package_copy) == before


def test_closure_of_builtins_follows_calls_into_helpers() -> None:
    definitions, files = code_closure(registry()["sba"].build)
    assert "sbabench.aggregators.spherical:sba" in definitions
    assert "sbabench.aggregators.spherical:_radius_and_direction" in definitions
    assert "sbabench.aggregators.spherical:_mass_and_probs" in definitions
    assert not any(
        d.endswith((":slerp", ":_slerp", ":karcher_direction", ":linear")) for d in definitions
    )
    assert files == []  # nothing outside sbabench's own code
    linear, _ = code_closure(registry()["linear"].build)
    assert "sbabench.aggregators.spherical:linear" in linear
    assert not any(d.endswith(":_radius_and_direction") for d in linear)


def _write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(source))
    while path.stat().st_mtime_ns == before:  # a coarse clock must still see the edit
        time.sleep(0.01)
        path.touch()


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # A fresh package name per test: Python keeps imported modules for the whole session.
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    _write(root / "__init__.py", "")
    _write(
        root / "helpers.py",
        """
        def scale(x):
            return x * 2.0
        """,
    )
    _write(
        root / "ops.py",
        """
        from PKG.helpers import scale

        def _local(x):
            return x + 1

        def unrelated(x):
            return x - 1

        def op(outputs, weights):
            return _local(scale((outputs * weights.unsqueeze(-1)).sum(1)))
        """,
    )
    ops = root / "ops.py"
    ops.write_text(ops.read_text().replace("PKG", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    return root


def test_user_operator_digest_covers_its_helpers_and_the_user_modules_it_imports(
    user_package: Path,
) -> None:
    name = user_package.name
    ops = importlib.import_module(f"{name}.ops")
    before = code_digest(ops.op)
    definitions, files = code_closure(ops.op)
    assert {f"{name}.ops:op", f"{name}.ops:_local"} <= set(definitions)
    assert f"{name}.ops:unrelated" not in definitions
    assert files == [f"{name}.helpers"]

    ops_text = (user_package / "ops.py").read_text()
    _write(user_package / "ops.py", ops_text.replace("return x - 1", "return x - 2"))
    assert code_digest(ops.op) == before  # a function it does not call

    _write(user_package / "helpers.py", "def scale(x):\n    return x * 3.0\n")
    assert code_digest(ops.op) != before  # a helper in another of the user's modules


def test_resolved_user_operator_key_follows_its_helper(user_package: Path) -> None:
    operator = f"{user_package.name}.ops:op"
    first = resolve(operator).code_sha256
    _write(user_package / "helpers.py", "def scale(x):\n    return x * 4.0\n")
    assert resolve(operator).code_sha256 != first


def test_key_digest_is_canonical_and_file_hashes_follow_edits(tmp_path: Path) -> None:
    assert key_digest({"a": 1, "b": [1, 2]}) == key_digest({"b": [1, 2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})
    path = tmp_path / "f.txt"
    _write(path, "one")
    first = file_sha256(path)
    _write(path, "two!")
    assert file_sha256(path) != first
