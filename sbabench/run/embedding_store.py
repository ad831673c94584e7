"""A persistent embedding cache: SQLite, one row per (space, prompt type, text hash).

Why SQLite: it ships with Python, its transactions are atomic (a `kill -9` mid-write leaves the
last committed state, rolled back on the next open), and in WAL mode several processes read and
write one file concurrently. A space is the key of a model x aggregator x settings (see
`keys.embedding_space`); vectors are stored as float32 (default) or float16 bytes, stated per row.
Keep the file on a local disk: SQLite's locking is unreliable on network file systems.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY, suite TEXT, model TEXT, aggregator TEXT, created REAL, used REAL
);
CREATE TABLE IF NOT EXISTS vectors (
    space TEXT, kind TEXT, text_sha256 BLOB, dtype TEXT, dim INTEGER, data BLOB,
    PRIMARY KEY (space, kind, text_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS geometry (space TEXT, task TEXT, data TEXT, PRIMARY KEY (space, task));
"""


def text_hash(text: str) -> bytes:
    """SHA-256 of the UTF-8 text (the cache never stores the texts themselves)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True)
class SpaceUsage:
    """Size of one cached space, for `sbabench cache`."""

    space: str
    suite: str
    model: str
    aggregator: str
    vectors: int
    megabytes: float
    last_used: float


class EmbeddingStore:
    """Read and write cached embedding vectors."""

    def __init__(self, path: str | Path, dtype: str = "float32") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def register(self, space: str, suite: str, model: str, aggregator: str) -> None:
        """Record who uses a space (for listing and pruning)."""
        now = time.time()
        self._db.execute(
            "INSERT INTO spaces VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(space) DO UPDATE SET used = ?",
            (space, suite, model, aggregator, now, now, now),
        )

    def get(self, space: str, kind: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors (float32) of those texts that have one."""
        found: dict[str, np.ndarray] = {}
        by_hash = {text_hash(t): t for t in texts}
        hashes = list(by_hash)
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT text_sha256, dtype, data FROM vectors WHERE space = ? AND kind = ? AND text_sha256 IN ({marks})",
                (space, kind, *chunk),
            )
            for digest, dtype, data in rows:
                found[by_hash[digest]] = np.frombuffer(data, dtype=dtype).astype(np.float32)
        return found

    def put(self, space: str, kind: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors in one transaction (all or nothing)."""
        rows = [
            (
                space,
                kind,
                text_hash(t),
                self.dtype.name,
                int(v.shape[0]),
                v.astype(self.dtype).tobytes(),
            )
            for t, v in zip(texts, vectors, strict=True)
        ]
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?, ?, ?)", rows)

    def get_geometry(self, space: str, task: str) -> dict[str, Any] | None:
        """Geometry statistics recorded when this space's embeddings of `task` were computed."""
        row = self._db.execute(
            "SELECT data FROM geometry WHERE space = ? AND task = ?", (space, task)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put_geometry(self, space: str, task: str, block: dict[str, Any]) -> None:
        """Keep geometry statistics for units whose embeddings later come from the cache."""
        self._db.execute(
            "INSERT OR REPLACE INTO geometry VALUES (?, ?, ?)", (space, task, json.dumps(block))
        )

    def _transaction(self) -> _Commit:
        self._db.execute("BEGIN IMMEDIATE")
        return _Commit(self._db)

    def usage(self) -> list[SpaceUsage]:
        """Vectors and bytes per space."""
        rows = self._db.execute(
            "SELECT s.space, s.suite, s.model, s.aggregator, COUNT(v.space), COALESCE(SUM(LENGTH(v.data)), 0), s.used "
            "FROM spaces s LEFT JOIN vectors v ON v.space = s.space GROUP BY s.space ORDER BY s.suite, s.model"
        )
        return [SpaceUsage(r[0], r[1], r[2], r[3], r[4], r[5] / 1e6, r[6]) for r in rows]

    def prune(
        self,
        *,
        older_than_days: float | None = None,
        model: str | None = None,
        suite: str | None = None,
    ) -> int:
        """Delete the spaces matching every given filter; returns how many vectors went."""
        clauses: list[str] = []
        args: list[float | str] = []
        if older_than_days is not None:
            clauses.append("used < ?")
            args.append(time.time() - older_than_days * 86400)
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        if suite is not None:
            clauses.append("suite = ?")
            args.append(suite)
        where = " AND ".join(clauses) or "1"
        spaces = [r[0] for r in self._db.execute(f"SELECT space FROM spaces WHERE {where}", args)]
        removed = 0
        with self._transaction():
            for space in spaces:
                removed += self._db.execute(
                    "DELETE FROM vectors WHERE space = ?", (space,)
                ).rowcount
                self._db.execute("DELETE FROM spaces WHERE space = ?", (space,))
                self._db.execute("DELETE FROM geometry WHERE space = ?", (space,))
        self._db.execute("VACUUM")
        return removed


class _Commit:
    """Context manager: COMMIT on success, ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
