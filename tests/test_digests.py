"""Code digests: never too narrow. A built-in operator's key covers its own code and the helpers it
calls, or its whole module where that cannot be proved; a user operator's, its whole module and
the user's modules it imports."""

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

from sbabench import digests
from sbabench.aggregators import resolve
from sbabench.digests import file_sha256, key_digest, source_digest

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

        # a comment
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


def test_user_operator_digest_is_its_whole_module_and_the_user_modules_it_imports(
    user_package: Path,
) -> None:
    operator = f"{user_package.name}.ops:op"
    before = resolve(operator).code_sha256
    ops = user_package / "ops.py"
    _write(ops, ops.read_text().replace("# a comment", "# another comment, reworded"))
    assert resolve(operator).code_sha256 == before  # comments do not count

    _write(ops, ops.read_text().replace("return x - 1", "return x - 2"))
    after_unrelated = resolve(operator).code_sha256
    assert after_unrelated != before  # its whole module counts, called or not

    _write(user_package / "helpers.py", "def scale(x):\n    return x * 3.0\n")
    assert resolve(operator).code_sha256 != after_unrelated  # another of the user's modules


_CASES = {
    "partial argument": (
        """
        import functools

        def _scaled(outputs, weights, s):
            return s * (outputs * weights.unsqueeze(-1)).sum(1)

        op = functools.partial(_scaled, s=2.0)
        """,
        ("s=2.0", "s=3.0"),
    ),
    "tuple-target assignment": (
        """
        EPS, SCALE = 1e-6, 2.0

        def op(outputs, weights):
            return SCALE * (outputs * weights.unsqueeze(-1)).sum(1)
        """,
        ("2.0", "3.0"),
    ),
    "subscript assignment": (
        """
        TABLE = {}
        TABLE["s"] = 2.0

        def op(outputs, weights):
            return TABLE["s"] * (outputs * weights.unsqueeze(-1)).sum(1)
        """,
        ("2.0", "3.0"),
    ),
    "factory argument": (
        """
        def make(s):
            def combine(outputs, weights):
                return s * (outputs * weights.unsqueeze(-1)).sum(1)
            return combine

        op = make(2.0)
        """,
        ("make(2.0)", "make(3.0)"),
    ),
    "instance whose __call__ changes": (
        """
        from dataclasses import dataclass

        @dataclass
        class Op:
            s: float = 2.0

            def __call__(self, outputs, weights):
                return self.s * (outputs * weights.unsqueeze(-1)).sum(1)

        op = Op()
        """,
        ("self.s *", "self.s * 1.5 *"),
    ),
    "lambda": (
        """
        op = lambda outputs, weights: 2.0 * (outputs * weights.unsqueeze(-1)).sum(1)
        """,
        ("2.0", "3.0"),
    ),
    "instance without a stable repr": (
        """
        class Op:
            def __call__(self, outputs, weights):
                return 2.0 * (outputs * weights.unsqueeze(-1)).sum(1)

        op = Op()
        """,
        ("2.0", "3.0"),
    ),
}


@pytest.fixture
def case_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / f"cases_{uuid.uuid4().hex[:8]}"
    _write(root / "__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    return root / "ops.py"


@pytest.mark.parametrize("case", sorted(_CASES))
def test_user_operator_edits_that_change_its_output_rekey_it(case_module: Path, case: str) -> None:
    source, (old, new) = textwrap.dedent(_CASES[case][0]), _CASES[case][1]
    _write(case_module, source + "\n# a comment\n")
    name = f"{case_module.parent.name}.ops"
    first = resolve(f"{name}:op").code_sha256
    importlib.reload(importlib.import_module(name))  # a new object: a rerun's key still hits
    assert resolve(f"{name}:op").code_sha256 == first
    _write(case_module, source + "\n# a comment, reworded\n")
    assert resolve(f"{name}:op").code_sha256 == first
    _write(case_module, source.replace(old, new, 1))
    assert resolve(f"{name}:op").code_sha256 != first


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_per_definition_digest_takes_the_whole_module_where_it_cannot_prove(
    case_module: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rule built-in operators are keyed by, run over the case's module as if in sbabench
    monkeypatch.setattr(digests, "_PACKAGE", case_module.parent.name)
    source, (old, new) = textwrap.dedent(_CASES[case][0]), _CASES[case][1]
    definition = f"{case_module.parent.name}.ops:op"
    _write(case_module, source + "\n# a comment\n")
    first = source_digest(definition)
    _write(case_module, source + "\n# a comment, reworded\n")
    assert source_digest(definition) == first
    _write(case_module, source.replace(old, new, 1))
    assert source_digest(definition) != first


def test_key_digest_is_canonical_and_file_hashes_follow_edits(tmp_path: Path) -> None:
    assert key_digest({"a": 1, "b": [1, 2]}) == key_digest({"b": [1, 2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})
    path = tmp_path / "f.txt"
    _write(path, "one")
    first = file_sha256(path)
    _write(path, "two!")
    assert file_sha256(path) != first


def test_a_submodule_reached_through_a_package_takes_the_package_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`from sbabench import aggregators; aggregators.zz_h.scale(x)`: the attribute chain is
    not traced, so every module below the package is in the key (an edit of zz_h re-keys)."""
    import shutil
    import sys

    import sbabench

    copy = tmp_path / "sbabench"
    shutil.copytree(
        Path(sbabench.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    (copy / "aggregators" / "zz_h.py").write_text("def scale(x):\n    return x * 2.0\n")
    (copy / "aggregators" / "zz_op.py").write_text(
        "from sbabench import aggregators\n\n\ndef op(x):\n    return aggregators.zz_h.scale(x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "sbabench" or m.startswith("sbabench.")]:
        monkeypatch.delitem(sys.modules, name)
    from sbabench import digests

    before = digests.source_digest("sbabench.aggregators.zz_op:op")
    (copy / "aggregators" / "zz_h.py").write_text("def scale(x):\n    return x * 3.0\n")
    assert digests.source_digest("sbabench.aggregators.zz_op:op") != before
