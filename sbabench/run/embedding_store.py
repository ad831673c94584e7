"""A persistent embedding cache: SQLite, one row per (space, prompt type, text hash).

Why SQLite: it ships with Python, its transactions are atomic (a `kill -9` mid-write leaves the
last committed state, rolled back on the next open), and in WAL mode several processes read and
write one file concurrently. A space is the key of a model x aggregator x settings (see
`keys.embedding_space`); vectors are stored as float32 (default) or float16 bytes, stated per row.
Keep the file on a local disk: SQLite's locking is unreliable on network file systems.

Every row carries a checksum over its space, prompt type, text hash, dtype and bytes, checked on
every read: a damaged row is a miss (recomputed and rewritten, with one warning), never used.
A file SQLite itself reports as corrupt (SQLITE_CORRUPT, SQLITE_NOTADB) is moved aside and the
cache starts anew; any other error (read-only, permission, I/O, locked, full) is not corruption:
the file stays where it is, untouched, and the error is raised (opening: `StorageError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbabench.errors import SbabenchError, StorageError
from sbabench.run.storage import stop_when_disk_full

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY, suite TEXT, model TEXT, aggregator TEXT, created REAL, used REAL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY, space TEXT, kind TEXT, text_sha256 BLOB, dtype TEXT, dim INTEGER,
    data BLOB, checksum BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS embeddings_key ON embeddings (space, kind, text_sha256);
CREATE TABLE IF NOT EXISTS geometry (space TEXT, task TEXT, data TEXT, PRIMARY KEY (space, task));
"""
# Why a rowid table and 16 KiB pages: the first layout (`vectors`, WITHOUT ROWID, 4 KiB pages)
# kept each row in an index b-tree, whose rows may hold only ~1 KB in the page: every float32
# vector of 384 dims spilled to an overflow page of its own, 4.7 KB on disk per 1.5 KB vector.
# A rowid table keeps a row of up to ~16 KB in its page; the unique index holds only the key.
# Measured (3,000 random 384-dim float32 vectors): 4,697 -> 1,966 bytes per vector.
PAGE_SIZE = 16384

_COLUMNS = "space, kind, text_sha256, dtype, dim, data, checksum"


log = logging.getLogger("sbabench")


def _checksum(space: str, kind: str, digest: bytes, dtype: str, data: bytes) -> bytes:
    header = f"{space}\0{kind}\0{dtype}\0".encode()
    return hashlib.sha256(header + digest + data).digest()[:16]


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file's content is damaged (not that it cannot reach it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # not raised by SQLite itself: only a plain DatabaseError is its kind
        return type(exc) is sqlite3.DatabaseError
    return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def text_hash(text: str) -> bytes:
    """SHA-256 of the UTF-8 text (the cache never stores the texts themselves)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _migrate_vectors(db: sqlite3.Connection) -> None:
    """Move the rows of a cache written in the first layout (table `vectors`) into
    `embeddings`, in one transaction; rows written before rows had checksums keep none (they
    fail their check when read: a miss, recomputed)."""
    if "vectors" not in _tables(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if "vectors" in _tables(db):  # another process may have moved them while we waited
            columns = {row[1] for row in db.execute("PRAGMA table_info(vectors)")}
            checksum = "checksum" if "checksum" in columns else "NULL"
            db.execute(
                f"INSERT OR REPLACE INTO embeddings ({_COLUMNS}) SELECT space, kind, "
                f"text_sha256, dtype, dim, data, {checksum} FROM vectors"
            )
            db.execute("DROP TABLE vectors")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    # VACUUM gives the old table's pages back (the file shrinks ~2.4x); it fails while another
    # process has the file open, and then the free pages are reused instead.
    with contextlib.suppress(sqlite3.OperationalError):
        db.execute("VACUUM")


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
        self.damaged_rows = 0
        """Rows that failed their checksum since opening (each was treated as a miss)."""
        try:
            with stop_when_disk_full(self.path):
                self._db = self._open_when_free()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise StorageError(
                    f"embedding cache {self.path} cannot be opened ({exc}); it is left as it is: "
                    "make its folder writable, or set `embedding_cache: off` in the suite"
                ) from exc
            self._db = self._start_anew(exc)

    def _open_when_free(self, attempts: int = 8) -> sqlite3.Connection:
        """`_open`, again after a pause while another process holds the file: switching a new
        file to WAL while a second run does the same can be refused at once as locked (SQLite
        does not wait on its busy timeout there), which two runs sharing a folder hit."""
        for attempt in range(attempts):
            try:
                return self._open()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.25 * (attempt + 1))
        raise AssertionError("unreachable")

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect on a new file only
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            _migrate_vectors(db)
            db.execute("SELECT COUNT(*) FROM spaces").fetchone()  # reads the file's pages
        except BaseException:
            db.close()
            raise
        return db

    def _start_anew(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move a file SQLite cannot read aside and open an empty cache in its place."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                source.replace(Path(str(aside) + suffix))
        log.warning(
            "sbabench: embedding cache %s is corrupt (%s); moved to %s and starting anew",
            self.path, exc, aside,
        )  # fmt: skip
        return self._open()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run one statement; a file that turns out corrupt is moved aside, then it is retried."""
        try:
            with stop_when_disk_full(self.path):
                return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise  # locked, read-only, I/O: not corruption
            self._db.close()
            self._db = self._start_anew(exc)
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def register(self, space: str, suite: str, model: str, aggregator: str) -> None:
        """Record who uses a space (for listing and pruning)."""
        now = time.time()
        self._query(
            "INSERT INTO spaces VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(space) DO UPDATE SET used = ?",
            (space, suite, model, aggregator, now, now, now),
        )

    def get(self, space: str, kind: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors (float32) of those texts that have an intact row."""
        found: dict[str, np.ndarray] = {}
        by_hash = {text_hash(t): t for t in texts}
        hashes = list(by_hash)
        damaged = 0
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                "SELECT text_sha256, dtype, dim, data, checksum FROM embeddings "
                f"WHERE space = ? AND kind = ? AND text_sha256 IN ({marks})",
                (space, kind, *chunk),
            )
            for digest, dtype, dim, data, checksum in rows:
                vector = self._intact(space, kind, digest, dtype, dim, data, checksum)
                if vector is None or digest not in by_hash:
                    damaged += 1
                else:
                    found[by_hash[digest]] = vector
        if damaged:
            self.damaged_rows += damaged
            log.warning(
                "sbabench: %d damaged row(s) in embedding cache %s ignored; recomputing them",
                damaged, self.path,
            )  # fmt: skip
        return found

    @staticmethod
    def _intact(
        space: str, kind: str, digest: Any, dtype: Any, dim: Any, data: Any, checksum: Any
    ) -> np.ndarray | None:
        """The row's vector if its checksum, dtype and length hold, else None."""
        if not isinstance(data, bytes) or not isinstance(digest, bytes):
            return None
        if checksum != _checksum(space, kind, digest, str(dtype), data):
            return None
        try:
            vector = np.frombuffer(data, dtype=str(dtype))
        except (TypeError, ValueError):
            return None
        return vector.astype(np.float32) if vector.shape == (dim,) else None

    def put(self, space: str, kind: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors in one transaction (all or nothing)."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")

        def rows() -> Iterator[tuple[Any, ...]]:
            # Made as SQLite asks for them: a task's rows (~1.8 KB each with their keys) never
            # all sit in memory at once.
            for text, vector in zip(texts, vectors, strict=True):
                digest, data = text_hash(text), vector.astype(self.dtype).tobytes()
                checksum = _checksum(space, kind, digest, self.dtype.name, data)
                yield (space, kind, digest, self.dtype.name, int(vector.shape[0]), data, checksum)

        # REPLACE: a row rewritten after a failed checksum must take the damaged one's place.
        with stop_when_disk_full(self.path), self._transaction():
            self._db.executemany(
                f"INSERT OR REPLACE INTO embeddings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows(),
            )

    def get_geometry(self, space: str, task: str) -> dict[str, Any] | None:
        """Geometry statistics recorded when this space's embeddings of `task` were computed."""
        rows = self._query("SELECT data FROM geometry WHERE space = ? AND task = ?", (space, task))
        if not rows:
            return None
        try:
            block: dict[str, Any] = json.loads(rows[0][0])
        except (TypeError, ValueError):
            return None  # a damaged row: the geometry is recorded again
        return block

    def put_geometry(self, space: str, task: str, block: dict[str, Any]) -> None:
        """Keep geometry statistics for units whose embeddings later come from the cache.
        `task` may end in `@<code digest>`: the task's rows recorded under other code go."""
        name = task.partition("@")[0]
        with stop_when_disk_full(self.path), self._transaction():
            self._db.execute(
                "DELETE FROM geometry WHERE space = ? AND (task = ? OR substr(task, 1, ?) = ?)",
                (space, name, len(name) + 1, name + "@"),
            )
            self._db.execute(
                "INSERT INTO geometry VALUES (?, ?, ?)", (space, task, json.dumps(block))
            )

    def _transaction(self) -> _Commit:
        self._db.execute("BEGIN IMMEDIATE")
        return _Commit(self._db)

    def usage(self) -> list[SpaceUsage]:
        """Vectors and bytes per space."""
        rows = self._db.execute(
            "SELECT s.space, s.suite, s.model, s.aggregator, COUNT(v.space), COALESCE(SUM(LENGTH(v.data)), 0), s.used "
            "FROM spaces s LEFT JOIN embeddings v ON v.space = s.space GROUP BY s.space ORDER BY s.suite, s.model"
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
                    "DELETE FROM embeddings WHERE space = ?", (space,)
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
        if not kind:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            self.db.execute("ROLLBACK")


def cache_file(results_dir: Path) -> Path:
    """Where a results folder keeps its embedding cache."""
    return results_dir / ".cache" / "embeddings.sqlite"


@dataclass(frozen=True)
class CacheReport:
    """A results folder's embedding cache, for `sbabench cache`."""

    path: Path
    """The cache file."""
    bytes_on_disk: int
    """Its size (after any pruning; SQLite reuses freed pages rather than shrinking)."""
    usage: list[SpaceUsage]
    """Vectors and bytes per space, by suite then model."""
    removed: int | None = None
    """Vectors pruned (None: no pruning asked for)."""


def report_cache(
    results_dir: Path,
    *,
    prune: bool = False,
    older_than_days: float | None = None,
    model: str | None = None,
    suite: str | None = None,
) -> CacheReport:
    """The embedding cache of `results_dir`, first pruned of the spaces matching every filter
    given when `prune` (which needs at least one filter: never everything by accident)."""
    path = cache_file(results_dir)
    _check_own_cache(path)
    store = EmbeddingStore(path)
    try:
        removed = None
        if prune:
            if older_than_days is None and model is None and suite is None:
                raise SbabenchError(
                    "--prune needs a filter",
                    fix="add --older-than DAYS, --model NAME or --suite NAME",
                )
            removed = store.prune(older_than_days=older_than_days, model=model, suite=suite)
        return CacheReport(path, path.stat().st_size, store.usage(), removed)
    finally:
        store.close()


def _check_own_cache(path: Path) -> None:
    """Refuse a cache file `sbabench cache` cannot prove it wrote: a symbolic link (or one in a
    link folder), not a regular file, or not an SQLite file holding the store's tables. Opening
    one would add those tables to it (or move it aside); pruning follows no link."""
    where = str(path)
    for link in (path.parent, path):
        if link.is_symlink():
            raise SbabenchError(
                f"{link} is a symbolic link; sbabench does not follow links in a cache",
                where=where, fix="replace the link by the folder or file itself",
            )  # fmt: skip
    if not path.is_file():
        raise SbabenchError(
            f"no embedding cache at {where!r}", fix="run a suite first (or pass --results)"
        )
    if _store_tables(path) is None:
        raise SbabenchError(
            "not an sbabench embedding cache (no spaces and embeddings tables)",
            where=where, fix="pass --results a results folder sbabench wrote",
        )  # fmt: skip


def _store_tables(path: Path) -> set[str] | None:
    """The store's tables in an SQLite file, or None when it is not one of sbabench's."""
    with path.open("rb") as handle:
        if handle.read(16) != b"SQLite format 3\0":
            return None
    try:  # read-only: a file that turns out not to be ours is left exactly as it was
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = _tables(db)
            spaces = {row[1] for row in db.execute("PRAGMA table_info(spaces)")}
            rows = {row[1] for row in db.execute("PRAGMA table_info(embeddings)")}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None
    ours = {"space", "kind", "text_sha256", "data"} <= rows or "vectors" in tables
    if {"space", "model", "aggregator"} <= spaces and ours:
        return tables
    return None
