"""Tasks by name: the bundled offline tasks, then any MTEB task of a supported type."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from sbabench.errors import TaskDataError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

SUPPORTED_TYPES = ("STS", "Clustering", "PairClassification")
"""MTEB task types sbabench scores (their main scores are MTEB's own)."""


@cache
def _bundled() -> dict[str, type]:
    from sbabench.tasks.bundled import BUNDLED

    return dict(BUNDLED)


def bundled_names() -> list[str]:
    """Names of the offline tasks that ship with installed packages."""
    return list(_bundled())


def known_task(name: str) -> str | None:
    """None if `name` is a usable task, else a sentence saying why not and what to use."""
    if name in _bundled():
        return None
    import mteb

    try:
        task = mteb.get_task(name)
    except KeyError:
        return (
            f"unknown task {name!r}: not a bundled task ({', '.join(bundled_names())}) "
            "and not an MTEB task name (see `sbabench tasks`)"
        )
    if task.metadata.type not in SUPPORTED_TYPES:
        return (
            f"MTEB task {name!r} is of type {task.metadata.type}; sbabench runs "
            f"{', '.join(SUPPORTED_TYPES)} tasks"
        )
    return None


def get_task(name: str) -> AbsTask:
    """A fresh task object (data not loaded yet)."""
    if name in _bundled():
        task: AbsTask = _bundled()[name]()
        return task
    import mteb

    try:
        return mteb.get_task(name)
    except KeyError:
        raise TaskDataError(f"unknown task {name!r}", fix="see `sbabench tasks`") from None
