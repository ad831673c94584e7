"""Content digests: of result keys, of files and folders, and of the code an operator runs.

The code digest answers "which source does this function's result depend on?" from the code
itself (its AST), so that editing one operator re-keys that operator's results and nothing else:

- Inside sbabench and inside the module that defines the function, it follows names: the
  function's own source, then every module-level function, class or constant it refers to
  (directly, through `from x import y`, or as `module.name`), recursively.
- Another module of the user's own code (not the standard library, not an installed
  third-party package) that the followed code imports is taken whole: its file's bytes, and
  the user modules that one imports, recursively.
- Comments, formatting and docstrings do not count (each definition is compared as
  `ast.unparse` of its tree without docstrings); third-party code does not count (its version is
  recorded in each result's provenance).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import sysconfig
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, partial
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any

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


# --- code digests ---------------------------------------------------------------------------

_Target = tuple[str, str | None]
"""An imported name: (module, attribute), attribute None when the name is the module itself."""


@dataclass(frozen=True)
class _ParsedModule:
    name: str
    path: Path
    definitions: dict[str, ast.AST]
    """Module-level functions, classes and assigned names."""
    imports: dict[str, _Target]
    """Module-level imports: local name -> what it names."""


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


def _module_path(name: str) -> Path | None:
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_module(name: str) -> bool:
    return _spec(name) is not None


@cache
def _third_party_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib")
    )


def _in_package(name: str) -> bool:
    return name == _PACKAGE or name.startswith(_PACKAGE + ".")


@cache
def _is_user_module(name: str) -> bool:
    """Source the user wrote: not sbabench, not the standard library, not an installed package.

    Decided on the top-level package, whose lookup imports nothing.
    """
    top = name.split(".")[0]
    if _in_package(top):
        return False
    path = _module_path(top)
    return path is not None and not str(path.resolve()).startswith(_third_party_roots())


def _imports_of(nodes: Iterator[ast.AST], package: str) -> dict[str, _Target]:
    found: dict[str, _Target] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found[alias.asname] = (alias.name, None)
                else:  # `import a.b` binds `a`
                    top = alias.name.split(".")[0]
                    found[top] = (top, None)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            for alias in node.names:
                found[alias.asname or alias.name] = (base, alias.name)
    return found


def _strip_docstring(node: ast.AST) -> ast.AST:
    body = getattr(node, "body", None)
    if (
        isinstance(body, list)
        and body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return node


def _assigned_names(node: ast.AST) -> list[str]:
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


@cache
def _parse_cached(name: str, path: str, size: int, mtime_ns: int) -> _ParsedModule:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    definitions: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[node.name] = node
        for assigned in _assigned_names(node):
            definitions[assigned] = node
    is_package = Path(path).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    return _ParsedModule(name, Path(path), definitions, _imports_of(iter(tree.body), package))


def _parse(name: str) -> _ParsedModule | None:
    path = _module_path(name)
    if path is None:
        return None
    stat = path.stat()
    return _parse_cached(name, str(path), stat.st_size, stat.st_mtime_ns)


class _ReferenceFinder(ast.NodeVisitor):
    """Names a definition reads, and (name, attribute) pairs; type annotations do not count
    (they change no number, and following them would tie every module to its types)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.attributes: set[tuple[str, str]] = set()

    def visit_Name(self, node: ast.Name) -> None:
        self.names.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            self.attributes.add((node.value.id, node.attr))
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        return  # an annotation only

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in (
            *node.decorator_list,
            *node.args.defaults,
            *node.args.kw_defaults,
            *node.body,
        ):
            if child is not None:
                self.visit(child)

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function


def _references(node: ast.AST) -> tuple[set[str], set[tuple[str, str]]]:
    """Names a definition loads, and (name, attribute) pairs it reads."""
    finder = _ReferenceFinder()
    finder.visit(node)
    return finder.names, finder.attributes


@dataclass(frozen=True)
class _Definition:
    """One module-level definition as the closure needs it."""

    source: str
    """`ast.unparse` of its tree without docstrings: what its digest covers."""
    imports: dict[str, _Target]
    """Imports inside it (e.g. lazy ones in a function body)."""
    names: set[str]
    attributes: set[tuple[str, str]]


_DEFINITIONS: dict[tuple[str, str, str], _Definition] = {}
"""Per (file, its size and mtime, name): parsing and unparsing once per process and edit."""


def _definition(parsed: _ParsedModule, name: str) -> _Definition:
    stat = parsed.path.stat()
    key = (str(parsed.path), f"{stat.st_size}:{stat.st_mtime_ns}", name)
    if key not in _DEFINITIONS:
        node = parsed.definitions[name]
        plain = _strip_docstring(ast.parse(ast.unparse(node)).body[0])
        package = (
            parsed.name if parsed.path.name == "__init__.py" else parsed.name.rpartition(".")[0]
        )
        names, attributes = _references(node)
        _DEFINITIONS[key] = _Definition(
            ast.unparse(plain), _imports_of(ast.walk(node), package), names, attributes
        )
    return _DEFINITIONS[key]


class _Closure:
    """Walks from one definition to everything it depends on (see the module docstring)."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.definitions: dict[tuple[str, str], str] = {}
        self.files: dict[str, str] = {}

    def _follows_names(self, module: str) -> bool:
        return _in_package(module) or module == self.home

    def add_definition(self, module: str, name: str) -> None:
        if (module, name) in self.definitions:
            return
        parsed = _parse(module)
        if parsed is None:
            return
        node = parsed.definitions.get(name)
        if node is None:  # a re-exported name: follow the import
            if name in parsed.imports:
                self._add_target(parsed.imports[name])
            return
        definition = _definition(parsed, name)
        self.definitions[(module, name)] = definition.source
        local, names, attributes = definition.imports, definition.names, definition.attributes
        for ref in sorted(names):
            self._add_name(parsed, local, ref, attributes)

    def _add_name(
        self,
        parsed: _ParsedModule,
        local: dict[str, _Target],
        ref: str,
        attributes: set[tuple[str, str]],
    ) -> None:
        target = local.get(ref) or (
            (parsed.name, ref) if ref in parsed.definitions else parsed.imports.get(ref)
        )
        if target is None:
            return
        module, attribute = target
        in_scope = self._follows_names(module) or _is_user_module(module)
        if attribute is not None and in_scope and _is_module(f"{module}.{attribute}"):
            module, attribute = f"{module}.{attribute}", None
        if attribute is not None:
            self._add_target((module, attribute))
            return
        for base, attr in sorted(attributes):
            if base == ref:
                self._add_target((module, attr))
        self._add_module(module)

    def _add_target(self, target: _Target) -> None:
        module, attribute = target
        if attribute is None or not self._follows_names(module):
            self._add_module(module)
        else:
            self.add_definition(module, attribute)

    def _add_module(self, module: str) -> None:
        """A user module other than the home one counts whole, with the user modules it imports."""
        if module in self.files or self._follows_names(module) or not _is_user_module(module):
            return
        parsed = _parse(module)
        if parsed is None:
            return
        self.files[module] = file_sha256(parsed.path)
        for imported, attribute in parsed.imports.values():
            if not _is_user_module(imported):
                continue
            name = f"{imported}.{attribute}" if attribute else imported
            self._add_module(name if _is_module(name) else imported)

    def digest(self) -> str:
        digest = hashlib.sha256()
        for (module, name), source in sorted(self.definitions.items()):
            digest.update(f"{module}:{name}\n{source}\n".encode())
        for module, sha in sorted(self.files.items()):
            digest.update(f"{module} file {sha}\n".encode())
        return digest.hexdigest()


def _unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    while isinstance(fn, partial):
        fn = fn.func
    return inspect.unwrap(fn)


def code_closure(fn: Callable[..., Any]) -> tuple[list[str], list[str]]:
    """The `module:name` definitions and the whole user modules that `fn`'s digest covers."""
    closure = _walk(fn)
    return sorted(f"{m}:{n}" for m, n in closure.definitions), sorted(closure.files)


def _walk(fn: Callable[..., Any]) -> _Closure:
    fn = _unwrap(fn)
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", "").split(".")[0]
    closure = _Closure(module or "")
    if module and name:
        closure.add_definition(module, name)
    return closure


def source_digest(module: str, name: str) -> str:
    """SHA-256 over the source of `module:name` and what it depends on, without importing it."""
    closure = _Closure(module)
    closure.add_definition(module, name)
    if not closure.definitions:
        raise ValueError(f"no definition {name!r} in module {module!r}")
    return closure.digest()


def code_digest(fn: Callable[..., Any]) -> str:
    """SHA-256 over the source `fn` depends on (see the module docstring for the rule)."""
    closure = _walk(fn)
    if not closure.definitions:  # no source to read (a builtin, a lambda in a REPL)
        return hashlib.sha256(repr(fn).encode()).hexdigest()
    return closure.digest()
