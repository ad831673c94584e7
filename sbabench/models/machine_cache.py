"""A cache per machine for what depends only on a model and its build options (an upcycled
model's router centroids): every new results folder reuses it.

Where: `$SBABENCH_CACHE`, else the platform's user cache folder (platformdirs). Entries are
content-keyed files `<kind>/<key>.bin` holding a header with the SHA-256 of their payload:
written atomically (temporary file, fsync, rename, so concurrent writers of one key each leave a
whole file), checked on every read (a corrupted or truncated entry is deleted, a one-line
warning logged, and the caller rebuilds it). A folder that cannot be written costs a warning
and the run goes on without the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sbabench.atomic import write_bytes_atomic

log = logging.getLogger("sbabench")

ENV = "SBABENCH_CACHE"
_MAGIC = b"SBABENCH-CACHE-1\n"
_DIGEST = 32


def default_root() -> Path:
    """`$SBABENCH_CACHE`, else the user cache folder of this platform."""
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("sbabench")


@dataclass(frozen=True)
class Entry:
    """One cached artefact."""

    kind: str
    key: str
    path: Path
    bytes: int
    modified: float


@dataclass(frozen=True)
class Listing:
    """The machine cache's entries, for `sbabench cache --machine`."""

    root: Path
    """The cache folder."""
    entries: list[Entry]
    """Every entry left, by kind then key."""
    removed: int | None = None
    """Entries deleted first (None: no clearing asked for)."""

    @property
    def bytes(self) -> int:
        """Size of the entries left."""
        return sum(entry.bytes for entry in self.entries)


class MachineCache:
    """Content-keyed, checked, atomically written entries under one folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()
        self._unwritable = False

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.bin"

    def get(self, kind: str, key: str) -> bytes | None:
        """The payload stored under `key`, or None when absent or damaged (then removed)."""
        path = self._path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("sbabench: cannot read cache entry %s (%s); rebuilding it", path, exc)
            return None
        head, digest, payload = (
            data[: len(_MAGIC)],
            data[len(_MAGIC) : len(_MAGIC) + _DIGEST],
            data[len(_MAGIC) + _DIGEST :],
        )
        if head == _MAGIC and hashlib.sha256(payload).digest() == digest:
            return payload
        log.warning("sbabench: cache entry %s is damaged; rebuilding it", path)
        path.unlink(missing_ok=True)
        return None

    def put(self, kind: str, key: str, payload: bytes) -> None:
        """Store `payload` (a warning, not an error, when the folder cannot be written)."""
        if self._unwritable:
            return
        data = _MAGIC + hashlib.sha256(payload).digest() + payload
        try:
            write_bytes_atomic(self._path(kind, key), data)
        except OSError as exc:
            self._unwritable = True
            log.warning(
                "sbabench: cache folder %s cannot be written (%s); going on without it "
                "(set %s to a writable folder)", self.root, exc.strerror or exc, ENV,
            )  # fmt: skip

    def entries(self) -> list[Entry]:
        """Every entry, by kind then key."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*/*.bin")):
            stat = path.stat()
            found.append(Entry(path.parent.name, path.stem, path, stat.st_size, stat.st_mtime))
        return found

    def clear(self, kind: str | None = None) -> int:
        """Delete every entry (of one kind); returns how many went."""
        removed = 0
        for entry in self.entries():
            if kind is None or entry.kind == kind:
                entry.path.unlink(missing_ok=True)
                removed += 1
        return removed

    def listing(self, clear: bool = False) -> Listing:
        """Every entry, after deleting them all first when `clear`."""
        removed = self.clear() if clear else None
        return Listing(self.root, self.entries(), removed)
