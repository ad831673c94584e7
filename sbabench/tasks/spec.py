"""A suite's task entry: a bundled or MTEB task by name, or a local file (pure: no I/O).

Whether the name exists, and whether a local file holds usable data, is checked once before a
run by `sbabench.suite.check`, which may import mteb and read files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sbabench.spec_base import Name, StrictModel
from sbabench.tasks.types import find, task_types

_ROLES = ("text1", "text2", "score", "text", "label", "query", "positive", "negative")
_FILES = ("path", "corpus", "queries", "qrels")
_MTEB_ONLY = ("split", "subsets", "dataset_revision")


def _type_rules() -> list[dict[str, Any]]:
    """One JSON Schema rule per task type read from local files: an entry of that `type:`
    names the files and columns it reads and no other (spellings as registered; sbabench also
    accepts them in any case)."""
    rules = []
    for task_type in task_types().values():
        if task_type.local_layout is None:
            continue
        used = (*task_type.files, *task_type.columns)
        unused = [field for field in (*_FILES, *_ROLES) if field not in used]
        spellings = [task_type.name, *task_type.aliases, *task_type.mteb_types]
        rules.append(
            {
                "if": {
                    "properties": {
                        "type": {"enum": spellings, "description": f"a {task_type.name} task"}
                    },
                    "required": ["type"],
                },
                "then": {
                    "required": list(used),
                    "not": {"anyOf": [{"required": [field]} for field in unused]},
                },
            }
        )
    return rules


def _task_schema(schema: dict[str, Any]) -> None:
    """In a suite an entry is also a bare task name; a local entry's fields follow its type."""
    entry = {**schema, "allOf": _type_rules()}
    schema.clear()
    schema["anyOf"] = [{"type": "string", "description": "a bundled or MTEB task name"}, entry]
    schema["description"] = entry.pop("description")


class TaskEntry(StrictModel):
    """A task: bundled or MTEB by name (with MTEB options), or a local file."""

    model_config = ConfigDict(json_schema_extra=_task_schema)

    name: Name = Field(description="task name (bundled, MTEB, or yours for a local file)")
    type: str | None = Field(
        None,
        description="local files only: the task type (sts, clustering, pair-classification, "
        "retrieval, reranking, classification)",
    )
    path: str | None = Field(
        None,
        description="local files only: CSV / TSV / JSONL / Parquet, relative to the suite file",
    )
    corpus: str | None = Field(
        None,
        description="local retrieval: the corpus, JSONL of {_id, title, text} (BEIR's "
        "corpus.jsonl), relative to the suite file",
    )
    queries: str | None = Field(
        None,
        description="local retrieval: the queries, JSONL of {_id, text} (BEIR's queries.jsonl)",
    )
    qrels: str | None = Field(
        None,
        description="local retrieval: the judgments, TSV with a query-id, corpus-id, score "
        "header (BEIR's qrels/test.tsv)",
    )
    text1: str | None = Field(None, description="local files: column of the first text of a pair")
    text2: str | None = Field(None, description="local files: column of the second text of a pair")
    score: str | None = Field(None, description="local STS files: column of the gold similarity")
    text: str | None = Field(None, description="local clustering files: column of the document")
    label: str | None = Field(None, description="local files: column of the class or 0/1 label")
    query: str | None = Field(None, description="local reranking files: column of the query")
    positive: str | None = Field(
        None, description="local reranking files: column of the relevant text(s) (a text or a list)"
    )
    negative: str | None = Field(
        None,
        description="local reranking files: column of the irrelevant text(s) (a text or a list)",
    )
    split: str | None = Field(
        None, description="MTEB tasks only: the split to evaluate (default: the first eval split)"
    )
    subsets: tuple[str, ...] | None = Field(
        None, description="MTEB tasks only: the subsets / languages to evaluate (default: all)"
    )
    dataset_revision: str | None = Field(
        None, description="MTEB tasks only: the dataset revision (default: the one mteb pins)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator(*_FILES)
    @classmethod
    def _relative_to_suite(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base = Path((info.context or {}).get("base_dir", "."))
        return str((base / value).resolve())

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = find(value)
        if found is None:
            raise ValueError(f"unknown task type {value!r}; use one of: {', '.join(task_types())}")
        return found.name

    @property
    def is_local(self) -> bool:
        """Whether the task reads local files."""
        return any(getattr(self, field) is not None for field in _FILES)

    def files(self) -> dict[str, Path]:
        """File field -> path of a local task, in its type's order."""
        task_type = find(self.type or "")
        fields = task_type.files if task_type else ()
        return {field: Path(str(getattr(self, field))) for field in fields}

    def columns(self) -> dict[str, str]:
        """Role -> column name of a local task."""
        task_type = find(self.type or "")
        roles = task_type.columns if task_type else ()
        return {role: str(getattr(self, role)) for role in roles}

    @model_validator(mode="after")
    def _consistent(self) -> TaskEntry:
        if not self.is_local:
            local_keys = [k for k in ("type", *_ROLES) if getattr(self, k)]
            if local_keys:
                raise ValueError(
                    f"{', '.join(local_keys)} only apply to local files: add `path:` (or, for "
                    "a retrieval task, `corpus:`, `queries:` and `qrels:`)"
                )
            return self
        mteb_only = [k for k in _MTEB_ONLY if getattr(self, k) is not None]
        if mteb_only:
            raise ValueError(f"{', '.join(mteb_only)} apply to MTEB tasks, not local files")
        task_type = find(self.type or "")
        if task_type is None:
            raise ValueError(f"a local task needs `type:` ({', '.join(task_types())})")
        _needs(self, task_type.name, "reads files", task_type.files, _FILES)
        _needs(self, task_type.name, "maps columns", task_type.columns, _ROLES)
        return self


def _needs(
    entry: TaskEntry, type_name: str, verb: str, needed: tuple[str, ...], known: tuple[str, ...]
) -> None:
    """Refuse an entry of `type_name` missing one of the fields it needs, or naming another."""
    missing = [field for field in needed if getattr(entry, field) is None]
    extra = [field for field in known if field not in needed and getattr(entry, field)]
    if missing:
        raise ValueError(
            f"a {type_name} task {verb} {', '.join(needed)}; missing: {', '.join(missing)}"
        )
    if extra:
        raise ValueError(f"a {type_name} task does not use {', '.join(extra)}")
