"""What counts as a result file, found without guessing.

A result file is `<model>[@rR]/<aggregator>/<task>.json` under a suite folder (`result_path`
writes them there), outside dot folders such as `.cache`; `<task>.error.json` beside it records
that the unit failed. A folder given to `compare` is either one suite folder (files three levels
down) or a results folder holding suite folders (four levels down). Anything at those places
that is not a plain file (a folder named `x.json`, a symbolic link) is an error, never skipped:
a gate that silently reads fewer files passes on less evidence than it claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sbabench.errors import StorageError

FAILED_SUFFIX = ".error.json"
"""A failed unit's record: `<task>.error.json` (message and traceback)."""


@dataclass(frozen=True)
class Located:
    """One result (or failure) file and the unit its path names."""

    path: Path
    suite: str | None
    """The suite folder's name; None when the folder given is itself a suite folder (its name
    is the user's choice, so only the files' own `suite` fields are compared)."""
    model_id: str
    """`model` or `model@rR` (replicate R)."""
    aggregator: str
    task: str
    failed: bool
    """A `<task>.error.json` record, not a result."""


def _children(folder: Path) -> list[Path]:
    """Entries of `folder` that may hold results, sorted: no dot folders (`.cache`), and no
    symbolic link (a linked folder could pull in files from anywhere)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise StorageError(
                f"{entry}: is a symbolic link; result folders hold plain folders and files",
                fix="copy the results in place of the link",
            )
        found.append(entry)
    return found


def _files_of_suite(folder: Path, suite: str | None) -> list[Located]:
    located = []
    for model in (m for m in _children(folder) if m.is_dir()):
        for aggregator in (a for a in _children(model) if a.is_dir()):
            for entry in _children(aggregator):
                if entry.is_dir() or (entry.name.endswith(".json") and not entry.is_file()):
                    raise StorageError(
                        f"{entry}: is not a plain file, where result files go "
                        "(<model>/<aggregator>/<task>.json)",
                        fix="move it out of the results folder, or remove it",
                    )
                if not entry.name.endswith(".json"):
                    continue  # a lock or another tool's file: not a result by definition
                failed = entry.name.endswith(FAILED_SUFFIX)
                task = entry.name.removesuffix(FAILED_SUFFIX if failed else ".json")
                located.append(Located(entry, suite, model.name, aggregator.name, task, failed))
    return located


def _json_at(folder: Path, depth: int) -> list[Path]:
    """`.json` entries exactly `depth` levels below `folder`, none inside a dot folder."""
    pattern = "/".join(["*"] * (depth - 1) + ["*.json"])
    return [
        p
        for p in folder.glob(pattern)
        if not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
    ]


def find_result_files(folder: Path) -> list[Located]:
    """Every result and failure file of a suite folder or a folder of suite folders, in path
    order; a user error for a folder that does not exist, that mixes both layouts, or that
    holds something unreadable at a result file's place."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise StorageError(
            f"results folder {str(folder)!r} {what}",
            fix="give a suite's results folder (or the folder holding suite folders)",
        )
    suite_level, root_level = _json_at(folder, 3), _json_at(folder, 4)
    if suite_level and root_level:
        raise StorageError(
            f"{folder}: holds result files both as <model>/<aggregator>/<task>.json (e.g. "
            f"{suite_level[0]}) and one level deeper (e.g. {root_level[0]}): which are results "
            "is ambiguous",
            fix="give one suite's folder, or a folder holding only suite folders",
        )
    if suite_level:
        return _files_of_suite(folder, None)
    suites = (s for s in _children(folder) if s.is_dir())
    return [found for suite in suites for found in _files_of_suite(suite, suite.name)]
