"""Content digests: of result keys, of files and folders, and of source code.

Source is compared as its syntax tree (`ast.unparse` with docstrings and other bare strings
removed), so comments, formatting and docstrings do not count. Only sbabench's own code and the
user's own tree count: the standard library and installed packages do not (their versions are
in each result's provenance). Both rules below may take too much code, never too little:

- `modules_digest`: whole modules, every module of sbabench or of the user's tree that they
  import (anywhere in them, except under `if TYPE_CHECKING:`) and the packages holding them,
  transitively.
- `source_digest`: definitions in sbabench and, recursively, the module-level definitions they
  name (directly, through `from m import name`, or as `m.name`). It follows names only in a
  module whose top level is imports, `def`/`class` (decorators and bodies included) and
  plain-name assignments that call nothing, each name bound once, with no `global` anywhere.
  Any other module it meets (a module-level call, `if`, `try` or loop; a tuple, subscript,
  attribute or augmented assignment), a name it cannot find, or a module used as a value, it
  takes whole, by the first rule. (Other modules are taken not to assign into a module.)
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any, Protocol

_PACKAGE = "sbabench"


def key_digest(parts: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a key's parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time)."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def folder_content_hash(folder: str) -> str:
    """SHA-256 over the relative paths and bytes of every file in a folder (e.g. model weights)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


# --- finding modules ------------------------------------------------------------------------

Target = tuple[str, str | None]
"""An imported name: (module, attribute), attribute None when the name is the module itself."""


@cache
def _spec(name: str) -> ModuleSpec | None:
    """A module's spec found on disk, executing no package's `__init__` on the way (asking
    importlib for `a.b.c` would import `a` and `a.b`, e.g. torch through a package's init)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    prefix = top
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return None
        prefix = f"{prefix}.{part}"
        spec = PathFinder.find_spec(prefix, list(spec.submodule_search_locations))
    return spec


def package_modules(package: str) -> list[str]:
    """Every module of a package, its subpackages' included, found on disk (none imported)."""
    spec = _spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ValueError(f"{package!r} is not a package")
    found = [package]
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                found.append(".".join((package, *parts)))
    return found


def _module_path(name: str) -> Path | None:
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@cache
def _third_party_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib")
    )


def _in_package(name: str) -> bool:
    return name == _PACKAGE or name.startswith(_PACKAGE + ".")


@cache
def _counts(name: str) -> bool:
    """sbabench, or source the user wrote (not the standard library, not an installed package)."""
    if _in_package(name):
        return True
    path = _module_path(name)
    return path is not None and not str(path.resolve()).startswith(_third_party_roots())


# --- parsing --------------------------------------------------------------------------------


def _strip_strings(tree: ast.Module) -> ast.Module:
    """Remove docstrings and every other bare string statement (they run no code)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not _is_bare_string(s)]
            node.body = kept or [ast.Pass()]  # type: ignore[attr-defined]
    return tree


def _is_bare_string(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under `node` except those under `if TYPE_CHECKING:` (which never runs)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
            for inner in child.orelse:
                yield from _runtime_nodes(inner)
        else:
            yield from _runtime_nodes(child)


@dataclass(frozen=True)
class _Statement:
    """An import statement as written: `import a.b as c` (`level` None) or
    `from ..m import x as y` (`level` the number of dots)."""

    names: tuple[tuple[str, str | None], ...]
    """(name, asname) pairs."""
    module: str | None = None
    level: int | None = None

    @classmethod
    def of(cls, node: ast.Import | ast.ImportFrom) -> _Statement:
        names = tuple((a.name, a.asname) for a in node.names)
        if isinstance(node, ast.Import):
            return cls(names)
        return cls(names, node.module, node.level)


def _statements(nodes: Iterable[ast.AST]) -> tuple[_Statement, ...]:
    return tuple(_Statement.of(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom))


def _imports(statements: Iterable[_Statement], package: str) -> list[tuple[str, Target]]:
    """(local name, what it names) for every import statement."""
    found: list[tuple[str, Target]] = []
    for statement in statements:
        if statement.level is None:
            for name, asname in statement.names:
                top = name.split(".")[0]  # `import a.b` binds `a`
                found.append((asname or top, (name if asname else top, None)))
        else:
            base = statement.module or ""
            if statement.level:
                try:
                    base = importlib.util.resolve_name("." * statement.level + base, package)
                except (ImportError, ValueError):
                    continue  # beyond the top-level package: Python raises there, loading nothing
            found.extend((asname or name, (base, name)) for name, asname in statement.names)
    return found


def _definitions(tree: ast.Module) -> dict[str, ast.stmt] | None:
    """Top-level name -> the statement binding it; None where the top level does more than
    define names once (see the module docstring)."""
    if any(isinstance(node, ast.Global) for node in ast.walk(tree)):
        return None
    found: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
            if "*" in names:  # `from m import *`: which names, unknown
                return None
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and _plain_assignment(node):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            return None
        for name in names:
            if name in found:
                return None
            found[name] = node
    return found


def _plain_assignment(node: ast.Assign | ast.AnnAssign) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    calls = node.value is not None and any(isinstance(n, ast.Call) for n in ast.walk(node.value))
    return all(isinstance(t, ast.Name) for t in targets) and not calls


@dataclass(frozen=True)
class _Facts:
    """What keying needs of one source file, a function of its bytes (and of this Python and
    this module's code) alone: kept in the fact store, so an unchanged file is not parsed."""

    sha256: str
    """Digest of the syntax tree, bare strings removed (`ast.unparse`)."""
    runtime: tuple[_Statement, ...]
    """Its import statements outside `if TYPE_CHECKING:`."""
    every: tuple[_Statement, ...]
    """All its import statements."""

    @classmethod
    def of(cls, tree: ast.Module) -> _Facts:
        return cls(
            hashlib.sha256(ast.unparse(tree).encode()).hexdigest(),
            _statements(_runtime_nodes(tree)),
            _statements(ast.walk(tree)),
        )

    def dumps(self) -> bytes:
        def rows(statements: tuple[_Statement, ...]) -> list[list[Any]]:
            return [[[list(n) for n in s.names], s.module, s.level] for s in statements]

        every = {"sha256": self.sha256, "runtime": rows(self.runtime), "every": rows(self.every)}
        return json.dumps(every, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, payload: bytes) -> _Facts | None:
        """The facts stored, or None where the payload is not exactly what `dumps` writes for
        well-formed facts (a damaged or forged entry is parsed again, never trusted)."""
        try:
            data = json.loads(payload)
            if not (isinstance(data, dict) and set(data) == {"sha256", "runtime", "every"}):
                return None
            facts = cls(
                data["sha256"], _statement_rows(data["runtime"]), _statement_rows(data["every"])
            )
        except (ValueError, TypeError, RecursionError, MemoryError):
            return None
        if not _SHA256.fullmatch(facts.sha256) or facts.dumps() != payload:
            return None
        return facts


_SHA256 = re.compile(r"[0-9a-f]{64}")
_DOTTED = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*")
_MAX_LEVEL = 64
"""More leading dots than any real package nests."""


def _statement_rows(rows: object) -> tuple[_Statement, ...]:
    """Statements from their JSON rows; TypeError where a row is not one `dumps` writes."""
    if not isinstance(rows, list):
        raise TypeError("not a list")
    return tuple(_statement_row(row) for row in rows)


def _statement_row(row: object) -> _Statement:
    if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], list) and row[0]):
        raise TypeError("not an import statement")
    names, module, level = row
    pairs = []
    for pair in names:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise TypeError("not a (name, asname) pair")
        name, asname = pair
        star = name == "*" and level is not None
        if not (star or (isinstance(name, str) and _DOTTED.fullmatch(name))):
            raise TypeError("not an imported name")
        if asname is not None and not (isinstance(asname, str) and asname.isidentifier()):
            raise TypeError("not a name")
        pairs.append((name, asname))
    if level is None:
        if module is not None:
            raise TypeError("`import` names no module")
    elif isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= _MAX_LEVEL:
        raise TypeError("not a relative level")
    elif module is not None and not (isinstance(module, str) and _DOTTED.fullmatch(module)):
        raise TypeError("not a module name")
    return _Statement(tuple(pairs), module, level)


class FactStore(Protocol):
    """Where parsed files' facts are kept between processes (the machine cache)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, payload: bytes) -> None: ...


_stores: list[FactStore] = []


def keep_facts_in(store: FactStore | None) -> None:
    """Keep what parsing a source file finds in `store`, keyed by the SHA-256 of the file's
    bytes, this Python's version and this module's own source (a change to any re-parses);
    None stops. A warm re-run then reads its code digests instead of parsing every module."""
    _stores[:] = [] if store is None else [store]


@cache
def _facts_salt() -> bytes:
    own = Path(__file__).read_bytes()
    return hashlib.sha256(own + sys.version.encode()).digest()


class _Module:
    """One module of sbabench or the user's tree. Its facts come from the fact store where the
    same bytes were parsed before; its syntax tree (bare strings removed) is parsed only when
    a definition is looked up."""

    def __init__(self, name: str, path: str, source: bytes) -> None:
        self.name = name
        self.source = source
        self.package = name if Path(path).name == "__init__.py" else name.rpartition(".")[0]
        key = hashlib.sha256(_facts_salt() + source).hexdigest()
        stored = _stores[0].get(key) if _stores else None
        facts = None if stored is None else _Facts.loads(stored)
        if facts is None:
            facts = _Facts.of(self.tree)
            if _stores:
                _stores[0].put(key, facts.dumps())
        self.facts = facts

    @cached_property
    def tree(self) -> ast.Module:
        # from the bytes, as Python reads a module: a BOM or a coding declaration is honoured
        return _strip_strings(ast.parse(self.source))

    @cached_property
    def imports(self) -> dict[str, Target]:
        """Top-level imports: local name -> what it names."""
        return dict(_imports(_statements(self.tree.body), self.package))

    @cached_property
    def definitions(self) -> dict[str, ast.stmt] | None:
        """Top-level names, or None where the module is taken whole (see `_definitions`);
        found when first asked (a whole-module digest, what most keys need, never asks)."""
        return _definitions(self.tree)

    @property
    def sha256(self) -> str:
        """Digest of the whole module's syntax tree."""
        return self.facts.sha256

    @cached_property
    def targets(self) -> frozenset[Target]:
        """Everything it imports, anywhere in it."""
        return frozenset(target for _, target in _imports(self.facts.every, self.package))

    @cached_property
    def runs(self) -> frozenset[str]:
        """The modules that importing this one imports (that count) and the packages above it."""
        found = {self.name.rpartition(".")[0]} - {""}
        for statement in self.facts.runtime:
            if statement.level is None:  # `import a.b` runs `a.b`, though it binds `a`
                found.update(name for name, _ in statement.names)
                continue
            for _, (module, attribute) in _imports([statement], self.package):
                submodule = f"{module}.{attribute}"
                found.add(submodule if _counts(module) and _spec(submodule) else module)
        return frozenset(name for name in found if _counts(name))


@cache
def _parse_cached(name: str, path: str, size: int, mtime_ns: int) -> _Module:
    return _Module(name, path, Path(path).read_bytes())


def _parse(name: str) -> _Module | None:
    path = _module_path(name)
    if path is None:
        return None
    stat = path.stat()
    return _parse_cached(name, str(path), stat.st_size, stat.st_mtime_ns)


def imports(module: str) -> frozenset[Target]:
    """Every (module, attribute) that `module` imports, anywhere in it (none if not found)."""
    parsed = _parse(module)
    return frozenset() if parsed is None else parsed.targets


# --- whole modules ----------------------------------------------------------------------------


def code_modules(roots: Iterable[str], skip: Callable[[str], bool] = lambda _: False) -> list[str]:
    """`roots`, wherever they are, and every module they import, transitively, that counts (see
    the module docstring); a module for which `skip` is true is left out and not followed."""
    found: set[str] = set()
    todo = list(roots)
    for root in todo:
        if _module_path(root) is None:
            raise ValueError(f"no Python source for module {root!r}: its code cannot be keyed")
    while todo:
        name = todo.pop()
        parsed = None if name in found or skip(name) else _parse(name)
        if parsed is not None:
            found.add(name)
            todo.extend(parsed.runs)
    return sorted(found)


def modules_digest(roots: Iterable[str], skip: Callable[[str], bool] = lambda _: False) -> str:
    """SHA-256 over the syntax trees of `code_modules(roots, skip)`."""
    digest = hashlib.sha256()
    for name in code_modules(roots, skip):
        parsed = _parse(name)
        assert parsed is not None
        digest.update(f"{name} {parsed.sha256}\n".encode())
    return digest.hexdigest()


# --- definitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _References:
    """What a definition reads: names, (name, attribute) pairs, and names used as values."""

    names: set[str]
    attributes: set[tuple[str, str]]
    bare: set[str]
    """Names read other than as `name.attribute` (a module read so is taken whole)."""

    @classmethod
    def of(cls, node: ast.AST) -> _References:
        nodes = list(ast.walk(node))
        reads = [
            (n.value, n.attr)
            for n in nodes
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        ]
        names = [n for n in nodes if isinstance(n, ast.Name)]
        bases = {id(base) for base, _ in reads}
        return cls(
            {n.id for n in names},
            {(base.id, attr) for base, attr in reads},
            {n.id for n in names if id(n) not in bases},
        )


def _with_submodules(name: str) -> list[str]:
    """A module and, for a package, every module below it: code reached as `pkg.sub.f` through
    an attribute chain is not traced, so the whole package is taken (too broad, never too
    narrow)."""
    spec = _spec(name)
    if spec is None or not spec.submodule_search_locations:
        return [name]
    found = [name]
    for location in spec.submodule_search_locations:
        for path in sorted(Path(location).rglob("*.py")):
            parts = path.relative_to(location).with_suffix("").parts
            if parts[-1] != "__init__":
                found.append(".".join((name, *parts)))
    return found


class _Closure:
    """The definitions a walk proved it needs, and the modules it takes whole."""

    def __init__(self) -> None:
        self.definitions: dict[str, str] = {}
        self.whole: set[str] = set()

    def add(self, module: str, name: str) -> None:
        """`module:name` and what it names; the module whole where that cannot be proved."""
        parsed = _parse(module)
        if parsed is None or f"{module}:{name}" in self.definitions or module in self.whole:
            return
        if _spec(f"{module}.{name}") is not None:  # a submodule: whole, with all below it
            self.whole.update(_with_submodules(f"{module}.{name}"))
            return
        definitions = parsed.definitions or {}
        node = definitions.get(name)
        if isinstance(node, ast.Import | ast.ImportFrom):  # a re-exported name
            self._follow(parsed.imports[name], set(), bare=True)
        elif node is None:  # a module that does more than define, or a name not found
            self.whole.add(module)
        else:
            self.definitions[f"{module}:{name}"] = ast.unparse(node)
            local = dict(_imports(_statements(ast.walk(node)), parsed.package))
            refs = _References.of(node)
            for ref in sorted(refs.names):
                target = local.get(ref) or ((module, ref) if ref in definitions else None)
                if target is not None:
                    attributes = {attr for base, attr in refs.attributes if base == ref}
                    self._follow(target, attributes, bare=ref in refs.bare)

    def _follow(self, target: Target, attributes: set[str], bare: bool) -> None:
        module, attribute = target
        if not _in_package(module):
            return  # third-party or standard library (sbabench imports no user code)
        if attribute is not None:
            self.add(module, attribute)
        elif bare:
            self.whole.add(module)
        else:
            for name in sorted(attributes):
                self.add(module, name)


def source_digest(*definitions: str) -> str:
    """SHA-256 over the `module:name` definitions in sbabench and what they depend on (see the
    module docstring), without importing them."""
    closure = _Closure()
    for definition in definitions:
        module, _, name = definition.partition(":")
        if _parse(module) is None or not _in_package(module):
            raise ValueError(f"no sbabench module {module!r} (in {definition!r})")
        closure.add(module, name)
    digest = hashlib.sha256()
    for key, source in sorted(closure.definitions.items()):
        digest.update(f"{key}\n{source}\n".encode())
    if closure.whole:
        digest.update(f"whole {modules_digest(closure.whole)}\n".encode())
    return digest.hexdigest()
