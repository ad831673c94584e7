"""A suite's task entry: a bundled or MTEB task by name, or a local file (pure: no I/O).

Whether the name exists, and whether a local file holds usable data, is checked once before a
run by `sbabench.suite.check`, which may import mteb and read files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sbabench.spec_base import StrictModel
from sbabench.tasks.types import find, task_types

_ROLES = ("text1", "text2", "score", "text", "label")
_MTEB_ONLY = ("split", "subsets", "dataset_revision")


def _task_schema(schema: dict[str, Any]) -> None:
    """In a suite an entry is also a bare task name."""
    entry = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "description": "a bundled or MTEB task name"}, entry]
    schema["description"] = entry.pop("description")


class TaskEntry(StrictModel):
    """A task: bundled or MTEB by name (with MTEB options), or a local file."""

    model_config = ConfigDict(json_schema_extra=_task_schema)

    name: str = Field(
        min_length=1,
        max_length=120,
        description="task name (bundled, MTEB, or yours for a local file)",
    )
    type: str | None = Field(
        None, description="local files only: the task type (sts, clustering, pair-classification)"
    )
    path: str | None = Field(
        None,
        description="local files only: CSV / TSV / JSONL / Parquet, relative to the suite file",
    )
    text1: str | None = Field(None, description="local files: column of the first text of a pair")
    text2: str | None = Field(None, description="local files: column of the second text of a pair")
    score: str | None = Field(None, description="local STS files: column of the gold similarity")
    text: str | None = Field(None, description="local clustering files: column of the document")
    label: str | None = Field(None, description="local files: column of the class or 0/1 label")
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

    @field_validator("path")
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
        """Whether the task reads a local file."""
        return self.path is not None

    def columns(self) -> dict[str, str]:
        """Role -> column name of a local task."""
        task_type = find(self.type or "")
        roles = task_type.columns if task_type else ()
        return {role: str(getattr(self, role)) for role in roles}

    @model_validator(mode="after")
    def _consistent(self) -> TaskEntry:
        mteb_only = [k for k in _MTEB_ONLY if getattr(self, k) is not None]
        if self.path is None:
            local_keys = [k for k in ("type", *_ROLES) if getattr(self, k)]
            if local_keys:
                raise ValueError(f"{', '.join(local_keys)} only apply to local files: add `path:`")
            return self
        if mteb_only:
            raise ValueError(f"{', '.join(mteb_only)} apply to MTEB tasks, not local files")
        task_type = find(self.type or "")
        if task_type is None:
            raise ValueError(f"a local task needs `type:` ({', '.join(task_types())})")
        needed = task_type.columns
        missing = [role for role in needed if getattr(self, role) is None]
        extra = [r for r in _ROLES if r not in needed and getattr(self, r)]
        if missing:
            raise ValueError(
                f"a {self.type} task maps columns {', '.join(needed)}; missing: {', '.join(missing)}"
            )
        if extra:
            raise ValueError(f"a {self.type} task does not use {', '.join(extra)}")
        return self
