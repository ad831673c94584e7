"""Result files: one JSON per unit, written atomically, validated when read back."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sbabench.per_item import ItemScores

SCHEMA_VERSION = 1


class UnitResult(BaseModel):
    """The outcome of one model x aggregator x task unit."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    suite: str
    model: str
    aggregator: str
    task: str
    key: str = Field(description="SHA-256 over key_parts: what the score depends on")
    key_parts: dict[str, Any]
    task_type: str
    split: str
    main_score_name: str
    main_score: float
    scores: dict[str, Any] = Field(description="every metric mteb reports, per subset")
    items: dict[str, ItemScores] = Field(
        default_factory=dict,
        description="per-item gold and predictions, per subset (for paired tests)",
    )
    geometry: dict[str, Any] | None = Field(
        default=None, description="versioned geometry block: per MoE layer and final embeddings"
    )
    training: dict[str, Any] | None = Field(
        default=None,
        description="fine-tuning log (loss and gradient-norm curves) when the suite trains",
    )
    timing_s: dict[str, float]
    provenance: dict[str, Any]
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def geometry_layers(self) -> dict[str, Any]:
        """The geometry block's statistics per MoE layer ({} when there are none)."""
        return (self.geometry or {}).get("layers") or {}


def result_path(root: Path, suite: str, model: str, aggregator: str, task: str) -> Path:
    """results/<suite>/<model>/<aggregator>/<task>.json."""
    return root / suite / model / aggregator / f"{task}.json"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: Path, text: str) -> None:
    """Write text via a temporary file in the same folder, fsync, then rename over the target."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; results are shared (job arrays, CI), so use the umask's mode.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_result(path: Path, result: UnitResult) -> None:
    """Atomically write a unit's result."""
    write_atomic(path, result.model_dump_json(indent=2))


def load_result(path: Path) -> UnitResult | None:
    """A valid result from `path`, or None if it is missing, truncated, altered or not a result.

    Altered: its stored key must be the digest of its stored key parts.
    """
    try:
        result = UnitResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None
    return result if result.key == key_digest(result.key_parts) else None


def load_results(root: Path) -> list[UnitResult]:
    """Every valid result file below `root` (invalid ones are skipped)."""
    files = (p for p in sorted(root.rglob("*.json")) if not p.name.endswith(".error.json"))
    found = (load_result(p) for p in files)
    return [r for r in found if r is not None]


def key_digest(parts: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the key parts."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
