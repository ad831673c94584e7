"""Writing several outputs all or none (`atomic.write_all_atomic`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sbabench import atomic


def _files(tmp_path: Path) -> list[tuple[Path, bytes]]:
    return [(tmp_path / "a.txt", b"new a"), (tmp_path / "sub" / "b.txt", b"new b")]


def test_every_file_is_written(tmp_path: Path) -> None:
    atomic.write_all_atomic(_files(tmp_path))
    assert (tmp_path / "a.txt").read_bytes() == b"new a"
    assert (tmp_path / "sub" / "b.txt").read_bytes() == b"new b"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]


def test_a_failed_rename_puts_back_the_files_already_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second rename fails: the first target, already replaced, gets its old content back,
    and no temporary or backup file is left."""
    (tmp_path / "a.txt").write_bytes(b"old a")
    real, calls = os.replace, []

    def failing(src: str, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError) as raised:
        atomic.write_all_atomic(_files(tmp_path))
    monkeypatch.undo()
    assert raised.value.filename == str(tmp_path / "sub" / "b.txt")  # the target, not a temporary
    assert (tmp_path / "a.txt").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt"]  # sub/ made and removed


def test_a_full_disk_names_the_target_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as raised:
        atomic.write_all_atomic(_files(tmp_path))
    assert raised.value.filename == str(tmp_path / "a.txt") and raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_target_that_is_a_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "sub" / "b.txt").mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as raised:
        atomic.write_all_atomic(_files(tmp_path))
    assert raised.value.filename == str(tmp_path / "sub" / "b.txt")
    assert not (tmp_path / "a.txt").exists()


def test_without_hard_links_the_old_file_moves_aside_and_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a hard link to the old file is refused (protected_hardlinks, a file system without
    them), the old file is moved aside instead: written as before, and put back on a failure."""
    (tmp_path / "a.txt").write_bytes(b"old a")

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    atomic.write_all_atomic([(tmp_path / "a.txt", b"new a")])
    assert (tmp_path / "a.txt").read_bytes() == b"new a"
    real, calls = os.replace, []

    def failing(src: str, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 3:  # a aside, a in place, then b fails
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError):
        atomic.write_all_atomic(_files(tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_bytes() == b"new a"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt"]  # sub/ made and removed
