"""I/O faults on purpose: a folder whose file system refuses writes, even to root.

Root writes through any permission bits, so a chmod-ed folder proves nothing in a root container;
patching the system calls that create files and folders makes the refusal real for everyone.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def refuse_writes_under(
    monkeypatch: pytest.MonkeyPatch, folder: Path, code: int = errno.EROFS
) -> None:
    """Make opening a file for writing, or creating a folder, below `folder` raise OSError
    `code` (EROFS: a read-only file system, EACCES: no permission, ENOSPC: a full disk)."""
    real_open, real_mkdir = os.open, os.mkdir
    inside = str(folder.resolve())

    def _below(path: Any) -> bool:
        return os.path.abspath(os.fsdecode(path)).startswith(inside)

    def refuse(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITES and _below(path):
            raise refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if _below(path):
            raise refuse(path)
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
