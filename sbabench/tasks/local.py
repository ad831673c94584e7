"""Tasks from local files (CSV, JSONL, Parquet), scored by mteb's own task classes.

A local task names its file (relative to the suite file), its type and its columns:
  {name: my-sts, type: sts, path: data/pairs.csv, text1: s1, text2: s2, score: gold}
  {name: my-clusters, type: clustering, path: data/docs.jsonl, text: body, label: topic}
  {name: my-dups, type: pair-classification, path: data/q.parquet, text1: a, text2: b, label: is_dup}
or, for a type that reads several files, each of them (see its module):
  {name: my-search, type: retrieval, corpus: c.jsonl, queries: q.jsonl, qrels: qrels.tsv}
Bad files fail with the file, row and column at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.digests import file_sha256, key_digest
from sbabench.errors import TaskDataError
from sbabench.tasks.types import find

if TYPE_CHECKING:
    import pandas as pd
    from mteb.abstasks.abstask import AbsTask

_READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV / TSV / JSONL / Parquet into a frame; errors name the file and how to fix it."""
    import pandas as pd

    kind = _READERS.get(path.suffix.lower())
    where = str(path)
    if kind is None:
        raise TaskDataError(
            f"unsupported file type {path.suffix!r}",
            where=where,
            fix="use .csv, .tsv, .jsonl or .parquet",
        )
    if not path.is_file():
        raise TaskDataError(
            "file not found", where=where, fix="paths are relative to the suite file"
        )
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(
                path,
                sep="," if kind == "csv" else "\t",
                encoding="utf-8",
                dtype=object,
                keep_default_na=True,
            )
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TaskDataError(
            f"not UTF-8 text (byte {exc.start}, line {line})",
            where=where,
            fix="re-save the file as UTF-8",
        ) from None
    except (ValueError, OSError) as exc:
        raise TaskDataError(f"cannot parse the file: {exc}", where=where) from None
    if frame.empty:
        raise TaskDataError("the file has no rows", where=where)
    return frame


def row_label(path: Path, position: int) -> str:
    """`file: row N` of the frame row at `position`, as a person counts rows in the file (a
    CSV or TSV has a header line first)."""
    offset = 2 if path.suffix.lower() in (".csv", ".tsv") else 1
    return f"{path}: row {position + offset}"


def _binary_labels(task_type: str) -> bool:
    registered = find(task_type)
    return registered is not None and registered.binary_label


def _no_empty(values: pd.Series, name: str, frame: pd.DataFrame, path: Path) -> None:
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        first = int(empty.to_numpy().nonzero()[0][0])
        raise TaskDataError(
            f"empty or NaN value in column {name!r} ({int(empty.sum())} row(s))",
            where=row_label(path, first),
            fix="fill or drop those rows",
        )


def _scores(values: pd.Series, name: str, frame: pd.DataFrame, path: Path) -> list[float]:
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna()
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise TaskDataError(
            f"score column {name!r} is not numeric ({values.iloc[first]!r})",
            where=row_label(path, first),
        )
    return list(numbers.astype(float).tolist())


def _binary(values: pd.Series, name: str, frame: pd.DataFrame, path: Path) -> list[int]:
    import pandas as pd

    labels = values.map(lambda v: {"true": 1, "false": 0}.get(str(v).strip().lower(), v))
    numbers = pd.to_numeric(labels, errors="coerce")
    bad = ~numbers.isin([0, 1])
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise TaskDataError(
            f"label column {name!r} must be 0/1 or true/false, got {values.iloc[first]!r}",
            where=row_label(path, first),
        )
    return list(numbers.astype(int).tolist())


def has_columns(frame: pd.DataFrame, columns: Mapping[str, str], path: Path) -> None:
    """Refuse a file that lacks a mapped column, naming the columns it has."""
    missing = [f"{role}={name!r}" for role, name in columns.items() if name not in frame.columns]
    if missing:
        raise TaskDataError(
            f"missing column(s) {', '.join(missing)}",
            where=str(path),
            fix=f"the file has columns {list(frame.columns)}; map them in the suite",
        )


def load_columns(path: Path, task_type: str, columns: dict[str, str]) -> dict[str, list[Any]]:
    """The mapped columns of a local task file, validated for its type."""
    frame = read_table(path)
    has_columns(frame, columns, path)
    out: dict[str, list[Any]] = {}
    for role, name in columns.items():
        values = frame[name]
        _no_empty(values, name, frame, path)
        if role == "score":
            out[role] = _scores(values, name, frame, path)
        elif role == "label" and _binary_labels(task_type):
            out[role] = _binary(values, name, frame, path)
        else:
            out[role] = values.astype(str).tolist()
    if "score" in out and len(set(out["score"])) < 2:
        raise TaskDataError(
            f"score column {columns['score']!r} needs at least two rows with different scores "
            f"to be scored (a Spearman correlation); it has {len(out['score'])} row(s) and "
            f"{len(set(out['score']))} distinct score(s)",
            where=str(path),
            fix="add rows, or check that the score column is the gold similarity",
        )
    if "label" in out and len(set(out["label"])) < 2:
        raise TaskDataError(
            f"label column {columns['label']!r} has a single class ({out['label'][0]!r})",
            where=str(path),
            fix="a task with labels (pair classification, clustering, classification) needs at "
            "least two classes",
        )
    return out


@dataclass(frozen=True)
class LocalLayout:
    """How a local task's files become an mteb task of one type."""

    base: type
    """The mteb task class that scores it."""
    dataset: Callable[[], Any]
    """Builds the task's `dataset` in the layout mteb's task class reads."""
    mteb_type: str
    main_score: str
    attributes: dict[str, Any]
    """Class attributes the mteb task class needs."""


def single_split(rows: dict[str, list[Any]]) -> Callable[[], Any]:
    """A `dataset` of one `test` split holding `rows` (the table task types)."""

    def build() -> Any:
        from datasets import Dataset, DatasetDict

        return DatasetDict({"test": Dataset.from_dict(rows)})

    return build


def sts_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """An STS task: pairs with a gold similarity."""
    from mteb.abstasks.sts import AbsTaskSTS

    data = load_columns(files["path"], "sts", columns)
    rows = {"sentence1": data["text1"], "sentence2": data["text2"], "score": data["score"]}
    limits = {"min_score": min(data["score"]), "max_score": max(data["score"])}
    return LocalLayout(AbsTaskSTS, single_split(rows), "STS", "cosine_spearman", limits)


def clustering_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """A clustering task: documents with a class label."""
    from mteb.abstasks.clustering import AbsTaskClustering

    data = load_columns(files["path"], "clustering", columns)
    rows = {"sentences": data["text"], "labels": data["label"]}
    extra = {"max_fraction_of_documents_to_embed": None}
    return LocalLayout(AbsTaskClustering, single_split(rows), "Clustering", "v_measure", extra)


def pairs_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """A pair-classification task: pairs with a 0/1 label."""
    from mteb.abstasks.pair_classification import AbsTaskPairClassification

    data = load_columns(files["path"], "pair-classification", columns)
    rows = {"sentence1": data["text1"], "sentence2": data["text2"], "labels": data["label"]}
    base = AbsTaskPairClassification
    return LocalLayout(base, single_split(rows), "PairClassification", "max_ap", {})


def local_identity(files: Mapping[str, Path]) -> tuple[str, str]:
    """Where a local task's data comes from and its revision (the files' SHA-256): one table
    is `file:<name>` and its digest, as before tasks read several files; several files are
    each named and each digested, so a change to any of them changes the key."""
    if list(files) == ["path"]:
        return f"file:{files['path'].name}", file_sha256(files["path"])
    named = ",".join(f"{role}={path.name}" for role, path in files.items())
    return f"files:{named}", key_digest({role: file_sha256(path) for role, path in files.items()})


def local_layout(task_type: str, files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """Read and check a local task's files (every problem located in its file)."""
    registered = find(task_type)
    if registered is None or registered.local_layout is None:
        raise TaskDataError(f"task type {task_type!r} cannot be read from a local file")
    layout: LocalLayout = registered.local_layout_fn()(files, columns)
    return layout


def build_task(
    name: str, task_type: str, files: Mapping[str, Path], columns: dict[str, str]
) -> AbsTask:
    """An mteb task object over a local task's files (same scoring as MTEB's task classes)."""
    from sbabench.tasks.metadata import task_metadata

    layout = local_layout(task_type, files, columns)
    source, revision = local_identity(files)
    first = next(iter(files.values()))
    described = ", ".join(path.name for path in files.values())
    metadata = task_metadata(
        name, layout.mteb_type, layout.main_score, f"Local {task_type} task from {described}.",
        source, revision[:16], ["eng-Latn"], "not specified", f"file://{first}",
    )  # fmt: skip
    build = layout.dataset

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = build()
        self.data_loaded = True

    attributes = {"metadata": metadata, "load_data": load_data, **layout.attributes}
    cls = type(f"Local_{name}", (layout.base,), attributes)
    task: AbsTask = cls()
    return task
