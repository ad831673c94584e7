"""Names read back from result files, checked before they become parts of paths.

A results folder is data: a file in it may have been written by anyone, so `export` and `plot`
check each name they put in a path (`suite`, `model`, `aggregator`, `task`) against the one
pattern suites are held to (`sbabench.paths.NAME_PATTERN`) and name the file and field of one
that fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from sbabench.errors import SbabenchError
from sbabench.paths import NAME_RULE, name_problem
from sbabench.run.results import UnitResult

FIELDS = ("suite", "model", "aggregator", "task")
"""The fields of a result file that become parts of paths."""


def check_result_names(results: Iterable[UnitResult], folders: Sequence[Path]) -> None:
    """Raise a user error naming the file (found under `folders`) and field of the first
    result whose path-forming name is not a safe name."""
    for result in results:
        for field in FIELDS:
            problem = name_problem(getattr(result, field))
            if problem is not None:
                source = _source_file(result, folders)
                raise SbabenchError(
                    f"result field {field!r}: {problem}",
                    where=f"{source}: {field}" if source else f"{result.suite}/{result.label}",
                    fix=f"a result file sbabench wrote has names of {NAME_RULE}: remove or "
                    "fix that file",
                )


def _source_file(result: UnitResult, folders: Sequence[Path]) -> Path | None:
    """The file under `folders` holding `result` (its key and names), or None."""
    for folder in folders:
        files = [folder] if folder.is_file() else sorted(folder.rglob("*.json"))
        for path in files:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (
                isinstance(data, dict)
                and data.get("key") == result.key
                and all(data.get(field) == getattr(result, field) for field in FIELDS)
            ):
                return path
    return None
