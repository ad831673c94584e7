"""Reading a suite file: YAML with line locations, the schema, then the checks that need I/O.

Every problem is reported as `file:line:column: field: message` (exit code 2 in the CLI).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sbabench.errors import SbabenchError, SuiteError
from sbabench.paths import NAME_PATTERN, NAME_RULE
from sbabench.suite.schema import Suite


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, list[str]]:
    """Walk a composed YAML tree along a pydantic error location; returns the deepest node."""
    node, path = root, []
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    node = value
                    path.append(part)
                    break
            # an unmatched part is a union tag or a missing key: stay on the parent
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                node = node.value[part]
            path.append(f"[{part}]")
    return node, path


def _format_path(path: list[str]) -> str:
    return "".join(p if p.startswith("[") else f".{p}" for p in path).lstrip(".") or "(top level)"


def _describe(error: Any, path: list[str]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return (
            f"unknown key {error['loc'][-1]!r} (check its spelling; see `sbabench validate --help`)"
        )
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    if kind == "union_tag_invalid":
        return msg.replace("Input tag", "model source") + " (use one of the sources listed)"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{error.get('input')!r} is not a safe name (use {NAME_RULE})"
    got = error.get("input")
    message = msg.removeprefix("Value error, ")
    said = f"got {got!r}" in message or f"got {got}" in message  # a validator's own words
    shown = "" if isinstance(got, dict | list) or got is None or said else f" (got {got!r})"
    return message + shown


def _locate_problem(loc: tuple[Any, ...], message: str, root: yaml.Node | None, path: str) -> str:
    node, walked = _node_at(root, loc)
    where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node else path
    return f"{where}: {_format_path(walked)}: {message}"


def _locate(error: Any, root: yaml.Node | None, path: str) -> str:
    node, walked = _node_at(root, tuple(error["loc"]))
    loc = tuple(str(p) for p in error["loc"])
    if error["type"] in ("extra_forbidden", "missing") and walked and loc and walked[-1] == loc[-1]:
        walked = walked[:-1]
    if error["type"] in ("extra_forbidden", "missing"):
        walked = [*walked, str(error["loc"][-1])]
    where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node else path
    return f"{where}: {_format_path(walked)}: {_describe(error, walked)}"


MAX_BYTES = 1 << 20
"""A suite file larger than this (1 MiB) is refused: suites are a few dozen lines."""
MAX_DEPTH = 32
"""Nesting deeper than this is refused (a suite needs about 5 levels)."""
MAX_NODES = 100_000
"""Values a suite may expand to, aliases (`*name`) counted each time they are used: a suite
needs a few hundred; ten nested anchors of ten aliases each expand to 10^10 from 480 bytes."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node) -> tuple[int, int, yaml.Node]:
    """(depth, expanded size, a node whose expansion is too large or too deep — else the
    root) of a composed tree, each shared (aliased) node measured once: nothing is expanded.
    An alias inside the value it names (endless once expanded) gives size -1."""
    sizes: dict[int, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if not children_done:
            if id(node) in open_nodes:
                return 0, -1, node  # an alias of its own ancestor: endless
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in sizes)
            continue
        open_nodes.discard(id(node))
        depth = 1 + max((sizes[id(k)][0] for k in kids), default=0)
        size = 1 + sum(sizes[id(k)][1] for k in kids)
        if depth > MAX_DEPTH or size > MAX_NODES:
            return depth, size, node
        sizes[id(node)] = (depth, size)
    depth, size = sizes[id(root)]
    return depth, size, root


def _bounded(root: yaml.Node | None, path: str) -> None:
    """Refuse a tree too deep or too large once its aliases are expanded, before anything
    expands them (building the data, validating it)."""
    if root is None:
        return
    depth, size, node = _measure(root)
    where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    if size < 0:
        raise SuiteError(
            [f"{where}: an alias (*name) is used inside the value it names — fix: remove it"],
            path=path,
        )
    if size > MAX_NODES:
        raise SuiteError(
            [
                f"{where}: the suite holds more than {MAX_NODES:,} values (counting what its "
                "aliases, *name, repeat) — fix: a suite is a few dozen lines; use fewer aliases"
            ],
            path=path,
        )
    if depth > MAX_DEPTH:
        raise SuiteError(
            [
                f"{path}:1:1: the suite nests more than {MAX_DEPTH} levels deep; a suite needs about 5"
            ],
            path=path,
        )


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it: refusing a 1 MiB flat list took 11.7 s whole
process in Python, 3.8 s with it; the same nodes and marks."""


def _read_yaml(text: str, path: str) -> tuple[yaml.Node | None, Any]:
    """The composed tree (for locations) and the data; size, nesting and the expansion of
    aliases are bounded first."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SuiteError(
            [f"{path}:1:1: the suite is larger than 1 MiB; a suite is a few dozen lines"], path=path
        )
    try:
        root = yaml.compose(text, Loader=_LOADER)
        _bounded(root, path)
        return root, yaml.load(text, Loader=_LOADER)
    except RecursionError:
        raise SuiteError(
            [f"{path}:1:1: the suite nests too deeply to read; a suite needs about 5 levels"],
            path=path,
        ) from None
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own bound
            raise SuiteError(
                [f"{path}:1:1: the suite nests too deeply to read; a suite needs about 5 levels"],
                path=path,
            ) from None
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError([f"{where}: not valid YAML: {problem}"], path=path) from None


def parse_suite(
    text: str, path: str = "<suite>", *, check: bool = True, import_code: bool = False
) -> Suite:
    """Validate suite YAML text; raise SuiteError listing every problem with file:line.

    `check=False` stops after the schema (no I/O: task names, data files and user operators
    are not looked at); see `sbabench.suite.check`. `import_code` imports and probes the
    user operators (their code runs): `run` asks for it, `validate` does not.
    """
    root, data = _read_yaml(text, path)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SuiteError(
            [
                f"{path}:1:1: a suite must be a mapping with keys name, models, aggregators, tasks; got {got}"
            ],
            path=path,
        )
    base_dir = str(Path(path).resolve().parent) if path != "<suite>" else "."
    try:
        suite = Suite.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_locate(e, root, path) for e in exc.errors(include_url=False)]
        raise SuiteError(problems, path=path) from None
    if check:
        from sbabench.suite.check import problems as check_problems

        found = check_problems(suite, import_code=import_code)
        if found:
            located = [_locate_problem(loc, message, root, path) for loc, message in found]
            raise SuiteError(located, path=path)
    suite._notes.extend(
        _locate_problem(loc, msg, root, path) for loc, msg in suite.replicate_notes()
    )
    return suite


def example_suites() -> dict[str, Path]:
    """The example suites shipped inside the package (the repository's suites/), by name."""
    folder = Path(str(resources.files("sbabench") / "examples"))
    return {file.stem: file for file in sorted(folder.glob("*.yaml"))}


def _suite_file(path: str | Path) -> tuple[Path, str | None]:
    """The file to read, and a note when a bare name (`quickstart`) that is no file here names
    an example suite shipped with sbabench (a `pip install` has no suites/ folder)."""
    file = Path(path)
    if file.is_file():
        return file, None
    examples = example_suites()
    name = str(path).removesuffix(".yaml")
    if name in examples:  # exactly a bare name: `./quickstart` or `x/quickstart` is a path
        example = examples[name]
        return example, f"{path}: no such file here; using the example suite {example}"
    raise SbabenchError(
        f"suite file {str(file)!r} does not exist",
        fix="check the path, or name an example suite shipped with sbabench: "
        + ", ".join(examples),
    )


def load_suite(path: str | Path, *, check: bool = True, import_code: bool = False) -> Suite:
    """Read and validate a suite file (`check`: also the checks that need I/O; `import_code`:
    also import the user operators, see `parse_suite`). A bare name that is no file here
    (`quickstart`) is the example suite of that name shipped with sbabench."""
    file, note = _suite_file(path)
    with file.open("rb") as handle:  # never more than the cap: the file may be endless
        raw = handle.read(MAX_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if len(raw) <= MAX_BYTES:
            raise SuiteError([f"{file}:1:1: not UTF-8 text"], path=str(file)) from None
        text = raw.decode("utf-8", "replace")  # cut inside a character: refused for its size
    suite = parse_suite(text, str(file), check=check, import_code=import_code)
    if note is not None:
        suite._notes.insert(0, note)
    return suite
