"""The disk under a results folder: a folder that cannot be written is refused before any work,
and a full disk ends a run with one line. Either way nothing is lost: result files are written
atomically, so every finished unit is kept and a rerun resumes.

Why a probe first: a read-only or unwritable folder would otherwise fail only after a model was
loaded and a unit computed, with a traceback; a probe costs one empty file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sbabench.errors import StorageError

_FULL = (errno.ENOSPC, errno.EDQUOT)
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return False


def disk_full(path: Path | str) -> StorageError:
    """The one-line error of a full disk met while writing `path`."""
    return StorageError(
        f"no space left on device while writing {path}; finished units are kept; "
        "free space and rerun"
    )


@contextmanager
def stop_when_disk_full(path: Path) -> Iterator[None]:
    """Turn a full disk met inside the block into `disk_full` (naming the file the error names,
    else `path`); every other error passes unchanged."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if isinstance(exc, OSError) and _refused_under(exc, path):
            raise StorageError(
                f"{exc.filename} cannot be written ({exc.strerror}); finished units are kept: "
                "make it writable and rerun"
            ) from exc
        if not is_disk_full(exc):
            raise
        named = exc.filename if isinstance(exc, OSError) and exc.filename else path
        raise disk_full(named) from exc


def _refused_under(exc: OSError, folder: Path) -> bool:
    """Whether `exc` is a permission / read-only error on a file under `folder` (a sub-folder
    made by another user, say, that the up-front probe of the results folder cannot see)."""
    if exc.errno not in _REFUSED or not exc.filename:
        return False
    return Path(str(exc.filename)).resolve().is_relative_to(Path(folder).resolve())


def check_writable(*folders: Path) -> None:
    """Create each folder and write (then remove) an empty file in it; raise `StorageError` in
    one line for the first that cannot be written."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".sbabench-probe.", dir=folder)
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(exc.filename or folder) from exc
            reason = exc.strerror or type(exc).__name__
            raise StorageError(
                f"results folder {folder} cannot be written ({reason}); nothing was run: make "
                "it writable, or --results elsewhere"
            ) from exc
