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


def _depth(node: yaml.Node | None) -> int:
    """How deeply a composed YAML tree nests (iteratively: the tree may be very deep)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in current.value for child in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)
        deepest = max(deepest, depth)
    return deepest


def _read_yaml(text: str, path: str) -> tuple[yaml.Node | None, Any]:
    """The composed tree (for locations) and the data; size and nesting are bounded first."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SuiteError(
            [f"{path}:1:1: the suite is larger than 1 MiB; a suite is a few dozen lines"], path=path
        )
    try:
        root = yaml.compose(text)
        if _depth(root) > MAX_DEPTH:
            raise SuiteError(
                [
                    f"{path}:1:1: the suite nests more than {MAX_DEPTH} levels deep; a suite needs about 5"
                ],
                path=path,
            )
        return root, yaml.safe_load(text)
    except RecursionError:
        raise SuiteError(
            [f"{path}:1:1: the suite nests too deeply to read; a suite needs about 5 levels"],
            path=path,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError([f"{where}: not valid YAML: {problem}"], path=path) from None


def parse_suite(text: str, path: str = "<suite>", *, check: bool = True) -> Suite:
    """Validate suite YAML text; raise SuiteError listing every problem with file:line.

    `check=False` stops after the schema (no I/O: task names, data files and user operators
    are not looked at); see `sbabench.suite.check`.
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

        found = check_problems(suite)
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


def load_suite(path: str | Path, *, check: bool = True) -> Suite:
    """Read and validate a suite file (`check`: also the checks that need I/O). A bare name
    that is no file here (`quickstart`) is the example suite of that name shipped with
    sbabench."""
    file, note = _suite_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SuiteError([f"{file}:1:1: not UTF-8 text"], path=str(file)) from None
    suite = parse_suite(text, str(file), check=check)
    if note is not None:
        suite._notes.insert(0, note)
    return suite
