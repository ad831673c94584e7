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


# --- facts kept per machine -------------------------------------------------------------------

_KEYS = """
import json, sys
from pathlib import Path
from sbabench import digests
parses = []
_parse = digests.ast.parse
digests.ast.parse = lambda *a, **k: parses.append(1) or _parse(*a, **k)
if sys.argv[1] != "-":
    from sbabench.models.machine_cache import MachineCache
    digests.keep_facts_in(MachineCache(Path(sys.argv[1])).store("code"))
from sbabench.aggregators import registry, resolve
from sbabench.models.code import model_code_sha256
from sbabench.run.keys import _ENCODER_CODE, geometry_code_sha256, scoring_code_sha256
keys = {n: resolve(n).code_sha256 for n in registry()}
keys.update(scoring=scoring_code_sha256(), geometry=geometry_code_sha256())
keys.update(moe=model_code_sha256(_ENCODER_CODE, True), dense=model_code_sha256(_ENCODER_CODE, False))
print(json.dumps({"keys": keys, "parses": len(parses)}))
"""


def _keys(root: Path, cache: Path | None) -> tuple[dict[str, str], int]:
    """Every code digest a unit key holds, computed in a new process from the sbabench under
    `root`, with facts kept in the machine cache `cache` (None: no fact store); and how many
    files that process parsed."""
    out = subprocess.run(
        [sys.executable, "-c", _KEYS, "-" if cache is None else str(cache)],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    return found["keys"], found["parses"]


def test_facts_kept_per_machine_give_the_same_keys_and_spare_the_parsing(tmp_path: Path) -> None:
    plain, parsed = _keys(ROOT, None)
    cold, parsed_cold = _keys(ROOT, tmp_path / "cache")
    warm, parsed_warm = _keys(ROOT, tmp_path / "cache")
    assert cold == plain and warm == plain
    assert parsed_cold == parsed > 60
    # the operators' definitions are still read from syntax trees; whole modules are not
    assert parsed_warm < parsed / 2
    assert len(list((tmp_path / "cache" / "code").glob("*.bin"))) > 60


def test_an_edit_rekeys_with_facts_kept_and_undoing_it_restores_the_key(
    package_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    before, _ = _keys(package_copy, cache)
    scorer = package_copy / "sbabench" / "run" / "score.py"
    original = scorer.read_text()
    scorer.write_text(original + "\nimport sbabench.run.zz_new  # noqa\n")
    (package_copy / "sbabench" / "run" / "zz_new.py").write_text("X = 1\n")
    edited, _ = _keys(package_copy, cache)
    assert edited["scoring"] != before["scoring"]  # the file's bytes key its facts
    (package_copy / "sbabench" / "run" / "zz_new.py").write_text("X = 2\n")
    imported, _ = _keys(package_copy, cache)
    assert imported["scoring"] != edited["scoring"]  # the new import is followed from facts
    scorer.write_text(original)
    assert _keys(package_copy, cache)[0] == before


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"{}", b'{"sha256": "0", "runtime": [], "every": []}',
     json.dumps({"sha256": "0" * 64, "runtime": [[[["os", None]], "x", None]], "every": []}).encode(),
     json.dumps({"sha256": "0" * 64, "runtime": [["os", None, None]], "every": []}).encode(),
     json.dumps({"sha256": "0" * 64, "runtime": 7, "every": []}).encode(),
     b'{"sha256":"' + b"0" * 64 + b'","runtime":' + b"[" * 100_000 + b"]" * 100_000 + b',"every":[]}',
     json.dumps({"sha256": "z" * 64, "runtime": [], "every": []}).encode(),
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[[[["ab"]],null,null]],"every":[]}',
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[[[["os",null]],null,-1]],"every":[]}',
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[[[["os",null]],null,99999999999]],"every":[]}',
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[[[["",null]],null,null]],"every":[]}',
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[[[["o\\u0000s",null]],null,null]],"every":[]}',
     b'{"sha256":"' + b"0" * 64 + b'","runtime":[],"every":[],"extra":1}',
     b'{"sha256": "' + b"0" * 64 + b'", "runtime": [], "every": []}'],
)  # fmt: skip
def test_a_malformed_fact_is_parsed_again_and_rewritten(tmp_path: Path, payload: bytes) -> None:
    from sbabench.models.machine_cache import MachineCache

    cache = MachineCache(tmp_path / "cache")
    plain, _ = _keys(ROOT, None)
    _keys(ROOT, cache.root)
    keys = [entry.key for entry in cache.entries() if entry.kind == "code"]
    for key in keys:
        cache.put("code", key, payload)
    again, parsed = _keys(ROOT, cache.root)
    assert again == plain and parsed > 60
    assert all(cache.get("code", key) != payload for key in keys)


def test_an_edit_of_the_parsing_code_parses_every_file_again(
    package_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    before, _ = _keys(package_copy, cache)
    assert _keys(package_copy, cache)[1] < 60
    parser = package_copy / "sbabench" / "digests.py"
    parser.write_text(parser.read_text() + "\n# reworded\n")
    after, parsed = _keys(package_copy, cache)
    assert parsed > 60  # facts kept under the old parsing code are not read
    assert after == before  # a comment changes no key


_TREE = """
import json, sys
from pathlib import Path
from sbabench import digests
if sys.argv[1] != "-":
    from sbabench.models.machine_cache import MachineCache
    digests.keep_facts_in(MachineCache(Path(sys.argv[1])).store("code"))
print(json.dumps([digests.code_modules(["up.a"]), digests.modules_digest(["up.a"])]))
"""


def _tree_keys(tree: Path, cache: Path | None) -> list[object]:
    out = subprocess.run(
        [sys.executable, "-c", _TREE, "-" if cache is None else str(cache)],
        env={"PYTHONPATH": f"{tree}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    found: list[object] = json.loads(out.stdout)
    return found


def test_the_same_bytes_moved_into_a_package_follow_their_imports_from_there(
    tmp_path: Path,
) -> None:
    """Facts are keyed by a file's bytes, not its place: `from . import e` in `up/b.py` and in
    `up/b/__init__.py` names two modules, so stored imports are resolved where the file is."""
    up = tmp_path / "tree" / "up"
    up.mkdir(parents=True)
    (up / "__init__.py").write_text("")
    (up / "a.py").write_text("from . import b\n")
    (up / "b.py").write_text("from . import e\n")
    (up / "e.py").write_text("X = 1\n")
    cache = tmp_path / "cache"
    assert _tree_keys(tmp_path / "tree", cache)[0] == ["up", "up.a", "up.b", "up.e"]
    (up / "b.py").unlink()
    (up / "b").mkdir()
    (up / "b" / "__init__.py").write_text("from . import e\n")
    (up / "b" / "e.py").write_text("Y = 2\n")
    moved = _tree_keys(tmp_path / "tree", cache)
    assert moved == _tree_keys(tmp_path / "tree", None)
    assert moved[0] == ["up", "up.a", "up.b", "up.b.e"]


def test_a_relative_import_beyond_the_top_package_is_not_a_crash(tmp_path: Path) -> None:
    """Python raises at such a statement and loads nothing, so it adds nothing to a key."""
    up = tmp_path / "tree" / "up"
    up.mkdir(parents=True)
    (up / "__init__.py").write_text("")
    (up / "a.py").write_text("def f():\n    from ... import nowhere\n    return nowhere\n")
    assert _tree_keys(tmp_path / "tree", None)[0] == ["up", "up.a"]
    assert _tree_keys(tmp_path / "tree", tmp_path / "cache")[0] == ["up", "up.a"]
