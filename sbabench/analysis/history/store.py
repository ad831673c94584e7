"""The history store: one SQLite file of recorded units, keyed by (commit, machine, suite,
unit, replicate).

SQLite because the file must be embedded (no server), transactional (a killed `record` leaves
the file as it was) and safe for concurrent writers: every write is one `BEGIN IMMEDIATE`
transaction, and a writer waits up to `BUSY_TIMEOUT_S` for another. The file is created whole
under a temporary name and linked into place, so an existing file is always one sbabench wrote:
an empty, foreign or damaged one is a located error, never reset.

Retention: scores, uncertainty and provenance are kept forever; the per-item arrays (what the
paired test reads) are kept for the newest `KEEP_ITEMS` commits of each unit and replicate on a
machine (by committer date), unless `record --keep-items` says otherwise. A record trims only the
machines it records (a merged file: the machines it holds), and says how many arrays it dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sbabench.atomic import make_folders, remove_empty
from sbabench.errors import StorageError
from sbabench.paths import name_problem
from sbabench.tasks.items import ItemScores

APPLICATION_ID = 0x53424148
"""`PRAGMA application_id` of a history file ("SBAH"): a SQLite file of another tool is refused."""
SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the layout below; a newer file is refused, never rewritten."""
KEEP_ITEMS = 20
"""Commits per unit and machine whose per-item arrays are kept (scores are kept forever)."""
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another one's transaction before it gives up (a user error)."""

_SCHEMA = """
CREATE TABLE commits (
    sha TEXT PRIMARY KEY, date TEXT NOT NULL, subject TEXT NOT NULL
);
CREATE TABLE records (
    sha TEXT NOT NULL, machine TEXT NOT NULL, suite TEXT NOT NULL, model TEXT NOT NULL,
    aggregator TEXT NOT NULL, task TEXT NOT NULL, replicate INTEGER NOT NULL,
    series TEXT NOT NULL, unit_key TEXT NOT NULL, task_type TEXT NOT NULL,
    score_name TEXT NOT NULL, score REAL NOT NULL, item_var REAL NOT NULL,
    n_items INTEGER NOT NULL, dirty INTEGER NOT NULL, device TEXT NOT NULL,
    versions TEXT NOT NULL, content TEXT NOT NULL, recorded_at TEXT NOT NULL, items BLOB,
    PRIMARY KEY (sha, machine, suite, model, aggregator, task, replicate)
);
"""

_FIELDS = [
    *("sha", "machine", "suite", "model", "aggregator", "task", "replicate", "series"),
    *("unit_key", "task_type", "score_name", "score", "item_var", "n_items", "dirty"),
    *("device", "versions", "content", "recorded_at"),
]


@dataclass(frozen=True)
class Record:
    """One unit's outcome at one commit on one machine."""

    sha: str
    """Commit of the repository under test."""
    machine: str
    suite: str
    model: str
    aggregator: str
    task: str
    replicate: int
    series: str
    """Digest of what the score depends on besides code (settings, task and revision, model
    build, scoring version): a new value starts a new series instead of counting as a step."""
    unit_key: str
    """The unit's full key (code digests included)."""
    task_type: str
    score_name: str
    score: float
    item_var: float
    """Variance of the score from resampling its test items (NaN: not estimable)."""
    n_items: int
    dirty: bool
    """The repository's tracked files differed from the commit when it was recorded."""
    device: str
    versions: str
    """Package versions, JSON."""
    content: str
    """Digest of the unit's key, score and items: what makes a second record the same."""
    recorded_at: str
    items: bytes | None = None
    """zlib-compressed JSON of the per-item scores (None: pruned, or not read)."""

    @property
    def unit(self) -> tuple[str, str, str, str]:
        """suite, model, aggregator, task."""
        return (self.suite, self.model, self.aggregator, self.task)

    @property
    def key(self) -> tuple[str, str, str, str, str, str, int]:
        """What a record is stored under: commit, machine, unit, replicate."""
        return (self.sha, self.machine, *self.unit, self.replicate)

    @property
    def label(self) -> str:
        """`model/aggregator/task` (with `@rR` for replicate R > 0)."""
        model = self.model if self.replicate == 0 else f"{self.model}@r{self.replicate}"
        return f"{model}/{self.aggregator}/{self.task}"


@dataclass(frozen=True)
class Added:
    """What adding records did."""

    added: int = 0
    unchanged: int = 0
    """Already recorded with the same content (a no-op)."""
    replaced: int = 0
    pruned: int = 0
    """Older records of the same machines whose per-item scores retention dropped."""

    def summary(self) -> str:
        """One line: what was added, and what retention dropped."""
        text = f"{self.added} new, {self.unchanged} unchanged, {self.replaced} replaced"
        if self.pruned:
            text += f"; per-item scores of {self.pruned} older record(s) dropped (retention)"
        return text


def pack_items(items: dict[str, ItemScores]) -> bytes:
    """Per-item scores as stored: compact JSON, zlib-compressed."""
    data = {name: scores.model_dump() for name, scores in sorted(items.items())}
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), 6)


MAX_MAGNITUDE = 1e9
"""The largest score or items' variance a stored row may hold: scores are correlations, APs or
means of bounded values; a forged 1e308 would overflow the tables' and charts' arithmetic."""

MAX_ITEMS_BYTES = 1 << 28
"""The most a unit's stored items may decompress to (256 MiB: tens of millions of numbers). A
history file is input like any other: a small blob may not inflate into gigabytes."""


def _unpack_items(path: Path, record: Record) -> dict[str, ItemScores]:
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(record.items or b"", MAX_ITEMS_BYTES)
        if inflate.unconsumed_tail:
            raise ValueError(f"they inflate to more than {MAX_ITEMS_BYTES >> 20} MiB")
        data = json.loads(raw)
        items = {name: ItemScores.model_validate(value) for name, value in data.items()}
        for name, scores in items.items():
            _check_items(name, scores)
        return items
    except (zlib.error, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise _damaged(path, f"the items of {record.label} at {record.sha[:12]} ({exc})") from None


def _check_items(name: str, scores: ItemScores) -> None:
    """Lists that agree in length, and numbers within `MAX_MAGNITUDE` (NaN allowed: a diverged
    prediction, which the tests report as untestable)."""
    if len(scores.gold) != len(scores.predicted) or any(len(r) != len(scores.gold) for r in scores.runs):  # fmt: skip
        raise ValueError(f"subset {name!r}: gold, predictions and runs differ in length")
    values = np.asarray([scores.gold, scores.predicted, *scores.runs], dtype=float)
    if np.any(np.abs(values[~np.isnan(values)]) > MAX_MAGNITUDE):
        raise ValueError(f"subset {name!r}: a value beyond {MAX_MAGNITUDE:g}")


def _damaged(path: Path, what: str) -> StorageError:
    return StorageError(
        f"{path}: is not a readable sbabench history: {what}; it was left as it is",
        fix="restore the file from a copy (a CI artefact, the history branch), or give "
        "another --history path; sbabench never resets a history",
    )


class HistoryStore:
    """A history file, opened for reading (`create=False`) or for recording."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._created = False
        """This store made the file (a failed first write removes it again)."""
        self._folders: list[Path] = []
        """The folders it made for the file (removed with it, where empty)."""
        if path.is_symlink():  # a link could point anywhere, or nowhere
            raise StorageError(
                f"{path}: is a symbolic link; a history is a plain file",
                fix="give the history file itself, not a link to it (copy it in place of the link)",
            )
        if not path.exists():
            if not create:
                raise StorageError(
                    f"no history at {path}",
                    fix="record results first (sbabench record RESULTS --history "
                    f"{path}), or give --history the file that holds them",
                )
            self._created, self._folders = _create(path)
        self._check()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; with `write`, inside one immediate transaction, committed at the end
        (rolled back on any error). SQLite's errors become located user errors."""
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            if write:
                connection.execute("BEGIN IMMEDIATE")
            yield connection
            if write:
                connection.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageError(
                    f"{self.path}: another process held the history for over "
                    f"{BUSY_TIMEOUT_S:.0f} s ({exc}); nothing was written",
                    fix="run again when the other `sbabench record` has finished",
                ) from None
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise StorageError(
                    f"{self.path}: cannot write the history ({exc}): the file or its folder is "
                    "read-only; nothing was written",
                    fix="make the file and its folder writable, or give another --history path",
                ) from None
            raise _damaged(self.path, str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, str(exc)) from None
        finally:
            if connection is not None:
                if connection.in_transaction:
                    connection.rollback()
                connection.close()

    def _check(self) -> None:
        if self.path.is_dir() or self.path.stat().st_size == 0:
            raise _damaged(self.path, "it is a folder" if self.path.is_dir() else "it is empty")
        with self._connect() as db:
            application = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if application != APPLICATION_ID:
                raise _damaged(self.path, "it is a SQLite file of another tool")
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: written by a newer sbabench (history schema {version} > "
                    f"{SCHEMA_VERSION}); it was left as it is",
                    fix="upgrade sbabench, or give another --history path",
                )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _damaged(self.path, f"SQLite's check says {check!r}")

    def add(
        self,
        records: Iterable[Record],
        commits: Iterable[tuple[str, str, str]],
        *,
        replace_changed: bool = False,
        keep_items: int = KEEP_ITEMS,
    ) -> Added:
        """Add records (and their commits' date and subject) in one transaction. A record
        already stored with the same content is a no-op; with other content it is a user error
        (nothing is written) unless `replace_changed`."""
        (found,) = self.add_groups(
            [(list(records), list(commits))], replace_changed=replace_changed, keep_items=keep_items
        )
        return found

    def add_groups(
        self,
        groups: Sequence[tuple[Sequence[Record], Sequence[tuple[str, str, str]]]],
        *,
        replace_changed: bool = False,
        keep_items: int = KEEP_ITEMS,
        names: Sequence[str] = (),
    ) -> list[Added]:
        """Several sources' records (each with its commits) in one transaction: all are added
        or, on any refusal, none (a unit two sources give with different content is refused).
        What each group added; the last also counts what retention dropped over the machines
        recorded. `names`: the sources' names for messages."""
        found: list[Added] = []
        machines: set[str] = set()
        written: dict[tuple[object, ...], tuple[str, str]] = {}
        named = [*names, *(f"source {n}" for n in range(len(names) + 1, len(groups) + 1))]
        try:
            with self._connect(write=True) as db:
                for source, (records, commits) in zip(named, groups, strict=False):
                    added = Added()
                    db.executemany("INSERT OR IGNORE INTO commits VALUES (?, ?, ?)", list(commits))  # fmt: skip
                    for record in records:
                        _one_content(self.path, record, source, written)
                        added = _add_one(db, self.path, record, replace_changed, added)
                        machines.add(record.machine)
                    found.append(added)
                pruned = _prune(db, keep_items, machines)
        except BaseException:
            if self._created:  # the file this call made, still empty: removed again
                with suppress(StorageError):
                    if not self.records():
                        self.path.unlink(missing_ok=True)
                        remove_empty(self._folders)
            raise
        self._created = False
        if found:
            found[-1] = replace(found[-1], pruned=pruned)
        return found

    def export(self) -> tuple[list[Record], list[tuple[str, str, str]]]:
        """Every record with its items, each items blob checked (decompressed and read: a
        merged file may come from anywhere) and, with its score, against the record's content
        digest; and every commit."""
        records = self.records(with_items=True)
        for record in records:
            if record.items is not None:
                _unpack_items(self.path, record)
                if content_digest(record.unit_key, record.score, record.items) != record.content:
                    raise StorageError(
                        f"{self.path}: the record of {record.suite}/{record.label} at commit "
                        f"{record.sha[:12]} does not match its own score and per-item scores "
                        "(edited or damaged); nothing was recorded",
                        fix="leave this file out, or record the results it came from again",
                    )
        return records, list(self.commits().values())

    def records(self, machine: str | None = None, *, with_items: bool = False) -> list[Record]:
        """Every record (of `machine`), items left out unless `with_items`."""
        columns = ", ".join([*_FIELDS, "items" if with_items else "NULL"])
        query = f"SELECT {columns} FROM records"
        with self._connect() as db:
            rows = db.execute(
                query + (" WHERE machine = ?" if machine else ""), (machine,) if machine else ()
            ).fetchall()
        return [_record(row, self.path) for row in rows]

    def items(self, record: Record) -> dict[str, ItemScores] | None:
        """The stored per-item scores of `record`'s unit and commit (None: pruned)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT items FROM records WHERE sha=? AND machine=? AND suite=? AND model=? "
                "AND aggregator=? AND task=? AND replicate=?",
                record.key,
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return _unpack_items(self.path, replace(record, items=row[0]))

    def commits(self) -> dict[str, tuple[str, str, str]]:
        """sha -> (sha, committer date, subject) of every recorded commit."""
        with self._connect() as db:
            rows = db.execute("SELECT sha, date, subject FROM commits").fetchall()
        return {row[0]: (row[0], row[1], row[2]) for row in rows}

    def machines(self) -> list[str]:
        """Machines with records, sorted."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT machine FROM records ORDER BY machine").fetchall()
        for (name,) in rows:
            problem = name_problem(name)
            if problem:
                raise _damaged(self.path, f"a record's machine: {problem}")
        return [row[0] for row in rows]


_TEXT = ("sha", "machine", "suite", "model", "aggregator", "task", "series", "unit_key",
         "task_type", "score_name", "device", "versions", "content", "recorded_at")  # fmt: skip
_NAMES = ("machine", "suite", "model", "aggregator", "task")


def _record(row: tuple[object, ...], path: Path) -> Record:
    """A stored row as a record, its values checked: a history may come from elsewhere
    (`record --from`), and a row of the wrong kinds would fail far from here."""
    values = dict(zip([*_FIELDS, "items"], row, strict=True))
    where = f"record {values.get('suite')!r}/{values.get('model')!r}/{values.get('task')!r}"
    for name in _TEXT:
        if not isinstance(values[name], str):
            raise _damaged(path, f"{where}: {name} is not text")
    for name in _NAMES:
        problem = name_problem(values[name])
        if problem:
            raise _damaged(path, f"{where}: {name}: {problem}")
    if not re.fullmatch(r"[0-9a-f]{40}", str(values["sha"])):
        raise _damaged(path, f"{where}: {values['sha']!r} is not a commit")
    for name in ("score", "item_var"):
        number = values[name]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _damaged(path, f"{where}: {name} is not a number")
        if not math.isfinite(number) or abs(number) > MAX_MAGNITUDE or (name == "item_var" and number < 0):  # fmt: skip
            raise _damaged(path, f"{where}: {name} is {number!r}")
    for name in ("replicate", "n_items", "dirty"):
        if not isinstance(values[name], int) or int(values[name]) < 0:  # type: ignore[call-overload]
            raise _damaged(path, f"{where}: {name} is not a count")
    if values["items"] is not None and not isinstance(values["items"], bytes):
        raise _damaged(path, f"{where}: its items are not a stored blob")
    values["score"] = float(values["score"])  # type: ignore[arg-type]
    values["item_var"] = float(values["item_var"])  # type: ignore[arg-type]
    values["dirty"] = bool(values["dirty"])
    return Record(**values)  # type: ignore[arg-type]


def content_digest(unit_key: str, score: float, packed_items: bytes) -> str:
    """What a record's content is: its unit key, its score and its packed per-item scores
    (two records of one unit with the same content are the same result)."""
    digest = hashlib.sha256()
    for part in (unit_key, repr(float(score)), hashlib.sha256(packed_items).hexdigest()):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _one_content(
    path: Path, record: Record, source: str, written: dict[tuple[object, ...], tuple[str, str]]
) -> None:
    """Refuse a unit that two sources of one call give with different content (--replace
    would keep whichever came last, silently)."""
    key = record.key
    first, content = written.setdefault(key, (source, record.content))
    if content != record.content:
        raise StorageError(
            f"{path}: {record.suite}/{record.label} at commit {record.sha[:12]} on machine "
            f"{record.machine!r} comes from {first} and from {source} with different content; "
            "nothing was recorded",
            fix="record the sources one at a time (with --replace, the later one is kept), or "
            "leave out the one that is wrong",
        )


def _add_one(
    db: sqlite3.Connection, path: Path, record: Record, replace_changed: bool, added: Added
) -> Added:
    where = (
        "sha=? AND machine=? AND suite=? AND model=? AND aggregator=? AND task=? AND replicate=?"
    )
    key = record.key
    row = db.execute(f"SELECT content, dirty FROM records WHERE {where}", key).fetchone()
    if row is not None and row[0] == record.content:
        if row[1] and not record.dirty:  # the same result from a clean tree clears the mark
            db.execute(f"UPDATE records SET dirty = 0 WHERE {where}", key)
            return replace(added, replaced=added.replaced + 1)
        if record.items is not None:  # per-item scores pruned here and not in the source
            db.execute(f"UPDATE records SET items = ? WHERE {where} AND items IS NULL", (record.items, *key))  # fmt: skip
        return replace(added, unchanged=added.unchanged + 1)
    if row is not None and not replace_changed:
        raise StorageError(
            f"{path}: {record.suite}/{record.label} is already recorded at commit "
            f"{record.sha[:12]} on machine {record.machine!r} with other content (another "
            "score or other items); nothing was recorded",
            fix="pass --replace to overwrite it (e.g. after a dirty or broken run), or "
            "--machine to record it under another machine",
        )
    values = [getattr(record, name) for name in _FIELDS] + [record.items]
    values[_FIELDS.index("dirty")] = int(record.dirty)
    db.execute(f"INSERT OR REPLACE INTO records VALUES ({', '.join('?' * len(values))})", values)
    if row is None:
        return replace(added, added=added.added + 1)
    return replace(added, replaced=added.replaced + 1)


def _prune(db: sqlite3.Connection, keep: int, machines: set[str]) -> int:
    """Drop the items of all but the newest `keep` commits of each unit and replicate on
    `machines` (the ones just recorded: another machine's history is its own recorder's to
    trim), by committer time, time zones accounted for, then by when they were recorded.
    Returns how many records lost their items."""
    dropped = 0
    for machine in sorted(machines):
        dropped += _prune_machine(db, keep, machine)
    return dropped


def _prune_machine(db: sqlite3.Connection, keep: int, machine: str) -> int:
    done = db.execute(
        """
        UPDATE records SET items = NULL WHERE items IS NOT NULL AND rowid IN (
            SELECT rowid FROM (
                SELECT records.rowid AS rowid, ROW_NUMBER() OVER (
                    PARTITION BY machine, suite, model, aggregator, task, replicate
                    ORDER BY julianday(commits.date) DESC, records.recorded_at DESC
                ) AS newest
                FROM records JOIN commits ON commits.sha = records.sha
                WHERE records.machine = ?
            ) WHERE newest > ?
        )
        """,
        (machine, keep),
    )
    return done.rowcount


def _create(path: Path) -> tuple[bool, list[Path]]:
    """A new, empty history at `path`, made whole under a temporary name and linked into
    place (a concurrent creator's file wins; an existing file is never touched). Whether this
    call's file is the one in place, and the folders it made for it."""
    folders: list[Path] = []
    try:
        folders = make_folders(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        remove_empty(folders)
        raise StorageError(
            f"cannot create the history {path} ({exc.strerror or type(exc).__name__})",
            fix="give --history a file in a writable folder",
        ) from None
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would keep a shared history private
        db = sqlite3.connect(tmp)
        try:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.commit()
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process created it first: theirs is as good
            return False, []
        return True, folders
    finally:
        Path(tmp).unlink(missing_ok=True)
