"""A cache per machine for what depends only on a model and its build options (an upcycled
model's router centroids): every new results folder reuses it.

Where: `$SBABENCH_CACHE`, else the platform's user cache folder (platformdirs). Entries are
content-keyed files `<kind>/<key>.bin` holding a header with the SHA-256 of their payload:
written atomically (temporary file, fsync, rename, so concurrent writers of one key each leave a
whole file), checked on every read (a corrupted or truncated entry is deleted, a one-line
warning logged, and the caller rebuilds it). A folder that cannot be written costs a warning
and the run goes on without the cache.

The folder may be one a person also uses (`SBABENCH_CACHE=~`), so sbabench touches only what
it can prove it wrote: a marker file `.sbabench-cache` is written when it creates the folder
(or adopts an older cache holding nothing but its entries; never a folder holding anything
else), only the kind folders it creates are read, only regular files carrying the header are
entries, and no symbolic link is followed. Entries another user owns are ignored with a warning
unless `SBABENCH_SHARED_CACHE=1` says the cache is shared on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from sbabench.atomic import write_bytes_atomic
from sbabench.errors import SbabenchError

log = logging.getLogger("sbabench")

ENV = "SBABENCH_CACHE"
SHARED_ENV = "SBABENCH_SHARED_CACHE"
"""Set to 1 to use entries other users wrote (a cache shared by a group, on purpose)."""
MARKER = ".sbabench-cache"
"""The file that says a folder is an sbabench machine cache."""
KINDS = ("routers", "code")
"""The kind folders of entries (the only folders read, listed or cleared): router centroids,
and what parsing a source file found (`sbabench.digests`: its digest and imports)."""
WORKSPACES = ("ray-worker",)
"""Other folders sbabench makes in the cache (Ray workers' embedding stores): never cleared."""
_MAGIC = b"SBABENCH-CACHE-1\n"
_DIGEST = 32
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def default_root() -> Path:
    """`$SBABENCH_CACHE`, else the user cache folder of this platform."""
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("sbabench")


def _my_uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _shared() -> bool:
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes")


def _owned(info: os.stat_result) -> bool:
    """Whether an entry is this user's (or the cache is shared on purpose)."""
    return _shared() or info.st_uid == _my_uid()


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


def _read_entry(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes of a regular file read without following a link, or None when absent."""
    try:
        # O_NONBLOCK: a FIFO planted at an entry's name must not hang the run (checked below)
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        return handle.read(), info


def _headered(path: Path) -> bool:
    """Whether a file (not a link) starts with the cache's header."""
    try:  # O_NONBLOCK: opening a FIFO planted there must not wait for a writer
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return False
        return handle.read(len(_MAGIC)) == _MAGIC


def _is_dir(path: Path) -> bool:
    """A real folder (a link to one is not)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _stranger(root: Path) -> str | None:
    """Why `root` does not look like a machine cache, or None when it does (it has the marker,
    or holds nothing but entries and sbabench's own folders: an older cache, adopted)."""
    if not _is_dir(root) and root.is_dir():
        root = root.resolve()  # the setting itself may name a link to a folder
    if not _is_dir(root):
        return "it is not a folder"
    marker = root / MARKER
    if marker.is_symlink() or (marker.exists() and not marker.is_file()):
        return f"its {MARKER} is not a regular file"
    if marker.is_file():
        return None
    for child in sorted(root.iterdir()):
        if child.name in WORKSPACES and _is_dir(child):
            continue
        if child.name not in KINDS or not _is_dir(child):
            return f"it holds {child.name!r}, which sbabench did not write, and no {MARKER} file"
        for item in sorted(child.iterdir()):
            if item.suffix != ".bin" or item.is_symlink() or not _headered(item):
                return (
                    f"it holds {child.name}/{item.name}, which is not a cache entry, "
                    f"and no {MARKER} file"
                )
    return None


def _write_marker(root: Path) -> None:
    """Create the marker unless there is one (O_EXCL: two processes at once make one file)."""
    try:
        fd = os.open(root / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write("This folder is an sbabench machine cache (sbabench cache --machine).\n")


class MachineCache:
    """Content-keyed, checked, atomically written entries under one folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()
        self._unwritable = False
        self._refused: str | None = None
        self._warned_owner = False

    def _path(self, kind: str, key: str) -> Path:
        if kind not in KINDS or not _KEY.fullmatch(key):
            raise ValueError(f"not a machine-cache kind and key: {kind!r}, {key!r}")
        return self.root / kind / f"{key}.bin"

    def check_root(self) -> None:
        """Raise a user error when the folder exists and is not a machine cache; mark an older
        cache holding only entries as one."""
        if not os.path.lexists(self.root):
            return
        try:
            reason = _stranger(self.root)
        except OSError as exc:
            reason = f"it cannot be read ({exc.strerror or exc})"
        if reason is not None:
            raise SbabenchError(
                f"{self.root} does not look like an sbabench machine cache: {reason}",
                where=str(self.root),
                fix=f"point {ENV} at a folder of its own (a new or empty one)",
            )
        # a read-only cache is still read; it is marked when it is next writable
        with contextlib.suppress(OSError):
            _write_marker(self.root)

    def _usable(self) -> bool:
        """Whether the folder is (now) a marked cache; a foreign one warns once."""
        if self._refused is not None:
            return False
        try:
            self.root.mkdir(parents=True)
        except FileExistsError:
            try:
                self.check_root()
            except SbabenchError as exc:
                self._refused = exc.what
                log.warning("sbabench: not using the machine cache: %s", exc.what)
                return False
        else:
            _write_marker(self.root)
        return True

    def _foreign(self, path: Path, info: os.stat_result) -> bool:
        """Whether another user owns an entry (then it is not used: it could be forged)."""
        if _owned(info):
            return False
        if not self._warned_owner:
            self._warned_owner = True
            log.warning(
                "sbabench: ignoring machine-cache entry %s owned by another user (uid %d); "
                "set %s=1 if the cache is shared on purpose", path, info.st_uid, SHARED_ENV,
            )  # fmt: skip
        return True

    def get(self, kind: str, key: str) -> bytes | None:
        """The payload stored under `key`, or None when absent, foreign or damaged (a damaged
        entry of this user's is removed)."""
        path = self._path(kind, key)
        if not os.path.lexists(path) or not self._usable() or not _is_dir(path.parent):
            return None
        try:
            read = _read_entry(path)
        except OSError as exc:
            log.warning("sbabench: cannot read cache entry %s (%s); rebuilding it", path, exc)
            return None
        if read is None or self._foreign(path, read[1]):
            return None
        data = read[0]
        head, digest, payload = (
            data[: len(_MAGIC)],
            data[len(_MAGIC) : len(_MAGIC) + _DIGEST],
            data[len(_MAGIC) + _DIGEST :],
        )
        if head == _MAGIC and hashlib.sha256(payload).digest() == digest:
            return payload
        log.warning("sbabench: cache entry %s is damaged; rebuilding it", path)
        with contextlib.suppress(OSError):  # a read-only cache keeps it; it is never used
            path.unlink(missing_ok=True)
        return None

    def put(self, kind: str, key: str, payload: bytes) -> None:
        """Store `payload` (a warning, not an error, when the folder cannot be written)."""
        path = self._path(kind, key)
        if self._unwritable:
            return
        data = _MAGIC + hashlib.sha256(payload).digest() + payload
        try:
            if not self._usable():
                return
            if path.parent.is_symlink():
                raise OSError(f"{path.parent} is a symbolic link")
            write_bytes_atomic(path, data)
        except OSError as exc:
            self._unwritable = True
            log.warning(
                "sbabench: cache folder %s cannot be written (%s); going on without it "
                "(set %s to a writable folder)", self.root, exc.strerror or exc, ENV,
            )  # fmt: skip

    def entries(self) -> list[Entry]:
        """Every entry: a regular file with the header, in a kind folder, not a link, this
        user's (or a shared cache's); by kind then key."""
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if not _is_dir(folder):
                continue
            try:
                paths = sorted(folder.iterdir())
            except OSError as exc:
                log.warning("sbabench: cannot read cache folder %s (%s)", folder, exc)
                continue
            for path in paths:
                entry = self._entry(kind, path)
                if entry is not None:
                    found.append(entry)
        return found

    def _entry(self, kind: str, path: Path) -> Entry | None:
        """The entry at `path`, or None when it is not one sbabench can prove it wrote."""
        if path.suffix != ".bin" or not _KEY.fullmatch(path.stem):
            return None
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode) or not _headered(path) or self._foreign(path, info):
            return None
        return Entry(kind, path.stem, path, info.st_size, info.st_mtime)

    def clear(self, kind: str | None = None) -> int:
        """Delete every entry (of one kind); returns how many went."""
        self.check_root()
        removed, refused = 0, []
        for entry in self.entries():
            if kind is None or entry.kind == kind:
                try:
                    entry.path.unlink(missing_ok=True)
                except OSError as exc:
                    refused.append(f"{entry.path} ({exc.strerror or exc})")
                    continue
                removed += 1
        if refused:
            raise SbabenchError(
                f"{len(refused)} machine-cache entr(ies) could not be deleted ({removed} were), "
                f"first {refused[0]}",
                where=str(self.root),
                fix="make the cache folder writable (or ask its owner), then clear again",
            )
        return removed

    def listing(self, clear: bool = False) -> Listing:
        """Every entry, after deleting them all first when `clear`; a folder that is not a
        machine cache is a user error."""
        self.check_root()
        removed = self.clear() if clear else None
        return Listing(self.root, self.entries(), removed)

    def store(self, kind: str) -> KindStore:
        """The entries of one kind, as a key -> payload store."""
        if kind not in KINDS:
            raise ValueError(f"not a machine-cache kind: {kind!r}")
        return KindStore(self, kind)

    def workspace(self, name: str) -> Path:
        """A folder of sbabench's own in the cache (`ray-worker`), made when missing."""
        if name not in WORKSPACES:
            raise ValueError(f"not a machine-cache workspace: {name!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.check_root()
        folder = self.root / name
        if folder.is_symlink():
            raise SbabenchError(
                f"{folder} is a symbolic link", where=str(folder), fix="remove the link"
            )
        folder.mkdir(exist_ok=True)
        return folder


@dataclass(frozen=True)
class KindStore:
    """One kind of a machine cache's entries (e.g. `digests.keep_facts_in` takes one)."""

    cache: MachineCache
    kind: str

    def get(self, key: str) -> bytes | None:
        """The payload under `key`, or None (see `MachineCache.get`)."""
        return self.cache.get(self.kind, key)

    def put(self, key: str, payload: bytes) -> None:
        """Store `payload` (see `MachineCache.put`)."""
        self.cache.put(self.kind, key, payload)
