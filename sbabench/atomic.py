"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: Path, text: str) -> None:
    """Write text via a temporary file in the same folder, fsync, then rename over the target."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target.

    An OSError names `path` (a failed write or fsync names no file; mkstemp names the temporary
    one), so a message can say which file could not be written."""
    try:
        _write(path, data)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _write(path: Path, data: bytes) -> None:
    tmp = _temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all_atomic(files: list[tuple[Path, bytes]]) -> None:
    """Write several files all or none. A target that is a folder is refused first; each file
    is then written and synced to a temporary file beside its target; only when every one is
    written are they renamed over their targets, an existing target kept as a hard link until
    all are in place, so a failure puts every target back as it was. An OSError names the
    target that failed (never a temporary file) and leaves no temporary file behind."""
    for path, _ in files:
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    written: list[tuple[str, Path]] = []
    made: list[Path] = []
    done = False
    try:
        for path, data in files:
            with _naming(path):
                made += make_folders(path.parent)
                written.append((_temporary(path, data), path))
        _replace_all(written)
        done = True
    finally:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        if not done:
            remove_empty(made)


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a call made (`make_folders`' list), innermost first, where empty."""
    for folder in reversed(folders):
        with suppress(OSError):
            folder.rmdir()


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        each.mkdir(exist_ok=True)
    return missing[::-1]


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError inside names `path`."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _temporary(path: Path, data: bytes) -> str:
    """`data` in a new, synced temporary file beside `path`; its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; results are shared (job arrays, CI), so use the umask's mode.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _replace_all(written: list[tuple[str, Path]]) -> None:
    """Rename each temporary file over its target; on a failure, every target done so far is
    put back (the old file from its hard link, or removed where there was none)."""
    done: list[tuple[Path, str | None]] = []
    try:
        for tmp, path in written:
            with _naming(path):
                old = None
                if os.path.lexists(path):
                    old = f"{tmp}.old"
                    try:
                        os.link(path, old, follow_symlinks=False)
                    except OSError:  # no hard link here (protected_hardlinks, a file system
                        os.replace(path, old)  # without them): the old file moves aside instead
                done.append((path, old))
                os.replace(tmp, path)
    except BaseException:
        for path, old in reversed(done):
            if old is not None:
                os.replace(old, path)
            else:
                path.unlink(missing_ok=True)
        raise
    finally:
        for _, old in done:
            if old is not None:
                Path(old).unlink(missing_ok=True)
