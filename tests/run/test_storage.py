"""I/O faults end in one line, a documented exit code, and nothing lost or moved: a results
folder that cannot be written, a full disk, an embedding cache SQLite cannot write to, a result
file from a newer sbabench."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import sbabench
from sbabench.analysis.compare import to_records
from sbabench.cli import main
from sbabench.errors import StorageError
from sbabench.run.embedding_store import EmbeddingStore
from sbabench.run.execute import run_suite
from sbabench.run.results import SCHEMA_VERSION, load_result, result_path, save_result
from sbabench.run.storage import check_writable, stop_when_disk_full
from sbabench.suite import parse_suite
from tests import factories
from tests.faults import refuse_writes_under

DISK_FULL = "; finished units are kept; free space and rerun"


def _suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(factories.TINY_SUITE)
    return path


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")],
)
def test_a_results_folder_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    results = tmp_path / "results"
    cache = results / ".cache" / "embeddings.sqlite"
    EmbeddingStore(cache).close()
    before = {p.name: p.read_bytes() for p in cache.parent.iterdir()}
    refuse_writes_under(monkeypatch, results, code)
    monkeypatch.setattr(
        "sbabench.run.compute.UnitComputer.compute",
        lambda *_: pytest.fail("a unit was computed in a folder that cannot be written"),
    )
    outcome = CliRunner().invoke(
        main, ["run", str(_suite_file(tmp_path)), "--results", str(results)]
    )
    assert outcome.exit_code == 2
    assert _one_line_error(outcome.output) == (
        f"results folder {results / 'tiny'} cannot be written ({reason}); nothing was run: make "
        "it writable, or --results elsewhere"
    )
    # the embedding cache was neither moved aside nor touched
    assert {p.name: p.read_bytes() for p in cache.parent.iterdir()} == before


def test_a_full_disk_ends_the_run_in_one_line_and_a_rerun_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, suite_file = tmp_path / "results", _suite_file(tmp_path)
    # room for the first unit (moe/linear), none from the second (moe/sba) on
    refuse_writes_under(monkeypatch, results / "tiny" / "moe" / "sba", errno.ENOSPC)
    outcome = CliRunner().invoke(main, ["run", str(suite_file), "--results", str(results)])
    target = result_path(results, "tiny", "moe", "sba", "LeeDocSTS")
    assert outcome.exit_code == 2
    assert outcome.output.endswith(
        f"error: no space left on device while writing {target}{DISK_FULL}\n"
    )
    assert "Traceback" not in outcome.output
    kept = load_result(result_path(results, "tiny", "moe", "linear", "LeeDocSTS"))
    assert kept is not None and not target.exists()
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("*.lock"))
    monkeypatch.undo()  # space again: the rerun computes only what is missing
    rerun = run_suite(parse_suite(factories.TINY_SUITE), results)
    assert rerun.exit_code == 0 and rerun.cached == ["moe/linear/LeeDocSTS"]
    assert sorted(rerun.computed) == ["dense/dense/LeeDocSTS", "moe/sba/LeeDocSTS"]


def _full_database_error(tmp_path: Path) -> sqlite3.OperationalError:
    """SQLite's own SQLITE_FULL (a page limit stands in for the disk)."""
    db = sqlite3.connect(tmp_path / "small.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (data BLOB)")
    db.execute("PRAGMA max_page_count = 3")
    try:
        db.executemany("INSERT INTO t VALUES (?)", [(bytes(4000),)] * 10)
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("the page limit did not fill the database")


def test_a_full_embedding_cache_is_a_full_disk_not_a_failed_unit(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    store = EmbeddingStore(path)
    store._db.execute("PRAGMA max_page_count = 8")
    vectors = np.ones((200, 384), dtype=np.float32)
    with pytest.raises(StorageError) as raised:
        store.put("s", "default", [str(i) for i in range(200)], vectors)
    assert str(raised.value) == f"no space left on device while writing {path}{DISK_FULL}"
    assert store.get("s", "default", ["0"]) == {}  # rolled back whole, still readable
    store.close()
    assert not list(tmp_path.glob("*.corrupt-*"))

    from sbabench.run.compute import UnitComputer

    computer = UnitComputer(parse_suite(factories.TINY_SUITE), tmp_path, EmbeddingStore(path))
    full = _full_database_error(tmp_path)
    computer.compute = lambda _: (_ for _ in ()).throw(full)  # type: ignore[method-assign]
    with pytest.raises(StorageError, match=f"while writing {path};"):
        computer.attempt(None)  # type: ignore[arg-type]
    computer.close()


def _read_only_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection of the store opens its file read-only, as on a read-only mount."""
    connect = sqlite3.connect
    monkeypatch.setattr(
        sqlite3, "connect", lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw)
    )


def test_an_embedding_cache_sqlite_cannot_write_is_left_in_place_never_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.sqlite"
    store = EmbeddingStore(path)
    store.put("s", "default", ["a"], np.ones((1, 4), dtype=np.float32))
    store.close()
    plain = sqlite3.connect(path)
    plain.execute("PRAGMA journal_mode=DELETE")  # opening it then needs a write (back to WAL)
    plain.close()
    before = path.read_bytes()
    _read_only_sqlite(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sbabench"), pytest.raises(StorageError) as raised:
        EmbeddingStore(path)
    assert str(raised.value) == (
        f"embedding cache {path} cannot be opened (attempt to write a readonly database); it is "
        "left as it is: make its folder writable, or set `embedding_cache: off` in the suite"
    )
    # an I/O error raised without SQLite's code is not corruption either
    monkeypatch.undo()
    io_error = sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(EmbeddingStore, "_open", lambda self: (_ for _ in ()).throw(io_error))
    with pytest.raises(StorageError, match=r"cannot be opened \(disk I/O error\)"):
        EmbeddingStore(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "e.sqlite"
    ]
    assert "corrupt" not in caplog.text


def test_a_write_refused_to_an_open_cache_raises_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "e.sqlite"
    EmbeddingStore(path).close()
    _read_only_sqlite(monkeypatch)
    store = EmbeddingStore(path)  # a WAL file opens read-only; writing it is what fails
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.register("s", "suite", "m", "a")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.put("s", "default", ["a"], np.ones((1, 4), dtype=np.float32))
    store.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


def _newer(path: Path) -> bytes:
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    return path.read_bytes()


NEWER = "written by a newer sbabench (schema 99 > {0}): upgrade, or --results elsewhere"


def test_compare_and_run_refuse_a_result_file_from_a_newer_sbabench(tmp_path: Path) -> None:
    results = tmp_path / "results"
    path = result_path(results, "tiny", "moe", "linear", "LeeDocSTS")
    save_result(path, factories.result("linear", {}, 0.5))
    before = _newer(path)
    message = f"{path}: {NEWER.format(SCHEMA_VERSION)}"
    compared = CliRunner().invoke(main, ["compare", str(results)])
    assert compared.exit_code == 2 and _one_line_error(compared.output) == message
    ran = CliRunner().invoke(main, ["run", str(_suite_file(tmp_path)), "--results", str(results)])
    assert ran.exit_code == 2 and _one_line_error(ran.output) == message
    assert path.read_bytes() == before  # not overwritten
    assert list(path.parent.iterdir()) == [path]


def test_the_probe_and_the_disk_full_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable(tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe leaves nothing
    refuse_writes_under(monkeypatch, tmp_path / "full", errno.ENOSPC)
    with pytest.raises(StorageError, match=r"^no space left on device while writing .*full"):
        check_writable(tmp_path / "full")
    with (
        pytest.raises(StorageError, match=r"while writing x\.json;"),
        stop_when_disk_full(tmp_path),
    ):
        raise OSError(errno.ENOSPC, "No space left on device", "x.json")
    with (
        pytest.raises(StorageError, match=f"while writing {tmp_path};"),
        stop_when_disk_full(tmp_path),
    ):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(PermissionError), stop_when_disk_full(tmp_path):  # not a full disk
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_nan_result_reads_back_and_compare_writes_valid_json(tmp_path: Path) -> None:
    results = tmp_path / "results"
    items = {
        "test": factories.ItemScores(
            kind="sts", gold=[1.0, 2.0, 3.0], predicted=[1.0, float("nan"), 2.0]
        )
    }
    path = result_path(results, "s", "m", "diverged", "T1")
    save_result(path, factories.result("diverged", items, float("nan")))
    assert '"main_score": "NaN"' in path.read_text()
    loaded = load_result(path)
    assert loaded is not None and np.isnan(loaded.main_score)
    assert np.isnan(loaded.items["test"].predicted[1])
    save_result(
        result_path(results, "s", "m", "linear", "T1"),
        factories.result(
            "linear",
            {
                "test": factories.ItemScores(
                    kind="sts", gold=[1.0, 2.0, 3.0], predicted=[1.0, 2.0, 3.0]
                )
            },
            1.0,
        ),
    )
    outcome = sbabench.compare([results])
    rows = json.loads(json.dumps(to_records(outcome.comparison), allow_nan=False))
    (row,) = [r for r in rows if r["aggregator"] == "diverged"]
    assert row["delta"] is None and "NaN score" in row["note"]


def test_an_unreadable_result_file_is_refused_not_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    path = result_path(results, "tiny", "moe", "linear", "LeeDocSTS")
    save_result(path, factories.result("linear", {}, 0.5))
    before = path.read_bytes()
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    message = f"cannot read {path} (Permission denied); it was left as it is"
    for args in (
        ["compare", str(results)],
        ["run", str(_suite_file(tmp_path)), "--results", str(results)],
    ):
        outcome = CliRunner().invoke(main, args)
        assert outcome.exit_code == 2 and _one_line_error(outcome.output).startswith(message)
    assert real(path) == before


def test_a_refused_write_under_the_results_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    refuse_writes_under(monkeypatch, results / "tiny" / "moe" / "sba", errno.EACCES)
    ran = CliRunner().invoke(main, ["run", str(_suite_file(tmp_path)), "--results", str(results)])
    line = _one_line_error(ran.output)
    assert (
        ran.exit_code == 2 and "moe/sba" in line and "cannot be written (Permission denied)" in line
    )
    assert (results / "tiny" / "moe" / "linear" / "LeeDocSTS.json").is_file()  # kept


@pytest.mark.parametrize("name", ["embeddings.sqlite", "embeddings.sqlite-wal", "checkpoints"])
def test_a_run_does_not_write_through_a_linked_cache_file(tmp_path: Path, name: str) -> None:
    """A link where the embedding cache, SQLite's side file or the checkpoints folder goes
    would make a run write outside its results folder: refused before anything is opened."""
    from click.testing import CliRunner

    from sbabench.cli import main

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "important.db"
    victim.write_bytes(b"user data")
    cache = tmp_path / "r" / ".cache"
    cache.mkdir(parents=True)
    (cache / name).symlink_to(outside if name == "checkpoints" else victim)
    suite = tmp_path / "suite.yaml"
    suite.write_text(factories.TINY_SUITE)
    result = CliRunner().invoke(main, ["run", str(suite), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "symbolic link" in result.output, result.output
    assert victim.read_bytes() == b"user data" and sorted(outside.iterdir()) == [victim]
