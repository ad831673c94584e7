"""The SQLite embedding store: round trips, precision, isolation, listing and pruning."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sbabench.errors import SbabenchError
from sbabench.run.embedding_store import EmbeddingStore, cache_file, report_cache, text_hash


def _vectors(n: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_round_trip_is_exact_in_float32_and_rounded_in_float16(tmp_path: Path) -> None:
    texts = ["a", "b", "ünïcode", ""]
    vectors = _vectors(len(texts))
    store = EmbeddingStore(tmp_path / "e.sqlite")
    store.put("space", "query", texts, vectors)
    found = store.get("space", "query", [*texts, "missing"])
    assert set(found) == set(texts)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_array_equal(found[text], vector)
    half = EmbeddingStore(tmp_path / "h.sqlite", "float16")
    half.put("space", "query", texts, vectors)
    got = half.get("space", "query", texts)["a"]
    np.testing.assert_array_equal(got, vectors[0].astype(np.float16).astype(np.float32))
    assert got.dtype == np.float32
    store.close()
    half.close()


def test_a_put_that_fails_midway_stores_nothing(tmp_path: Path) -> None:
    """Rows are made as SQLite asks for them, inside the one transaction: a failure on the
    way rolls every row back."""
    store = EmbeddingStore(tmp_path / "e.sqlite")
    with pytest.raises(ValueError):
        store.put("space", "query", ["a", "b"], _vectors(3))
    texts = [f"t{i}" for i in range(600)]
    vectors = [*_vectors(599), "not a vector"]  # the last row cannot be made
    with pytest.raises(AttributeError):
        store.put("space", "query", texts, vectors)  # type: ignore[arg-type]
    assert store.get("space", "query", texts) == {}
    in_transaction: list[bool] = []

    class Watched(list[str]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            in_transaction.append(store._db.in_transaction)
            return super().__iter__()

    store.put("space", "query", Watched(texts), _vectors(600))
    assert in_transaction == [True]  # the rows were made inside the transaction, not before
    assert len(store.get("space", "query", texts)) == 600
    store.close()


def test_spaces_and_prompt_types_are_separate(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "e.sqlite")
    store.put("one", "query", ["t"], _vectors(1, seed=1))
    store.put("two", "query", ["t"], _vectors(1, seed=2))
    assert not np.array_equal(
        store.get("one", "query", ["t"])["t"], store.get("two", "query", ["t"])["t"]
    )
    assert store.get("one", "document", ["t"]) == {}
    # a second put of the same text replaces the row (how a damaged row is rewritten)
    store.put("one", "query", ["t"], _vectors(1, seed=9))
    np.testing.assert_array_equal(store.get("one", "query", ["t"])["t"], _vectors(1, seed=9)[0])
    store.close()


def test_a_reopened_store_keeps_its_rows_and_geometry(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    store = EmbeddingStore(path)
    store.put("s", "default", ["x", "y"], _vectors(2))
    store.put_geometry("s", "Task", {"version": 4, "layers": {}})
    store.close()
    again = EmbeddingStore(path)
    assert set(again.get("s", "default", ["x", "y"])) == {"x", "y"}
    assert again.get_geometry("s", "Task") == {"version": 4, "layers": {}}
    assert again.get_geometry("s", "Other") is None
    # geometry recorded under other code (another `@digest`) is replaced, not kept beside it
    again.put_geometry("s", "Task@new", {"version": 5})
    again.put_geometry("s", "Task_2@x", {"version": 5})
    rows = again._db.execute("SELECT task FROM geometry WHERE space = 's'").fetchall()
    assert sorted(r[0] for r in rows) == ["Task@new", "Task_2@x"]
    again.close()


def test_usage_and_pruning(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "e.sqlite")
    store.register("s1", "suite", "moe", "sba")
    store.register("s2", "suite", "dense", "dense")
    store.put("s1", "default", ["a", "b"], _vectors(2))
    store.put("s2", "default", ["a"], _vectors(1))
    usage = {u.model: u for u in store.usage()}
    assert usage["moe"].vectors == 2 and usage["dense"].vectors == 1
    assert usage["moe"].megabytes > 0
    assert store.prune(model="moe") == 2
    assert [u.model for u in store.usage()] == ["dense"]
    assert store.get("s1", "default", ["a"]) == {}
    assert store.prune(older_than_days=1) == 0  # just used
    store.close()


def test_a_damaged_row_is_a_miss_with_a_warning_never_a_wrong_vector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.sqlite"
    store = EmbeddingStore(path)
    store.put("s", "default", ["a", "b", "c"], _vectors(3))
    raw = sqlite3.connect(path)
    raw.execute(
        "UPDATE embeddings SET data = zeroblob(24) WHERE text_sha256 = ?", (text_hash("a"),)
    )
    raw.execute("UPDATE embeddings SET dtype = 'float16' WHERE text_sha256 = ?", (text_hash("b"),))
    raw.commit()
    raw.close()
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        found = store.get("s", "default", ["a", "b", "c"])
    assert set(found) == {"c"} and store.damaged_rows == 2
    assert "2 damaged row(s)" in caplog.text
    store.put("s", "default", ["a", "b"], _vectors(3)[:2])  # recomputed and rewritten
    np.testing.assert_array_equal(store.get("s", "default", ["a"])["a"], _vectors(3)[0])
    store.close()


def test_a_file_sqlite_cannot_read_is_moved_aside_and_the_cache_starts_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.sqlite"
    store = EmbeddingStore(path)
    store.put("s", "default", ["a"], _vectors(1))
    store.close()
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)  # the header
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        again = EmbeddingStore(path)
    assert "corrupt" in caplog.text and list(tmp_path.glob("e.sqlite.corrupt-*"))
    assert again.get("s", "default", ["a"]) == {}
    again.put("s", "default", ["a"], _vectors(1))
    assert set(again.get("s", "default", ["a"])) == {"a"}
    again.close()


_FIRST_LAYOUT = """
CREATE TABLE spaces (
    space TEXT PRIMARY KEY, suite TEXT, model TEXT, aggregator TEXT, created REAL, used REAL
);
CREATE TABLE vectors (
    space TEXT, kind TEXT, text_sha256 BLOB, dtype TEXT, dim INTEGER, data BLOB, checksum BLOB,
    PRIMARY KEY (space, kind, text_sha256)
) WITHOUT ROWID;
CREATE TABLE geometry (space TEXT, task TEXT, data TEXT, PRIMARY KEY (space, task));
"""


def test_a_cache_in_the_first_layout_is_migrated_and_shrinks(tmp_path: Path) -> None:
    """Rows of the first (WITHOUT ROWID) layout are read back after the move, and the file
    holds a 384-dim float32 vector in well under the 4.7 KB the first layout took."""
    from sbabench.run.embedding_store import _checksum

    path, texts = tmp_path / "old.sqlite", [f"text {i}" for i in range(400)]
    vectors = _vectors(len(texts), dim=384)
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(_FIRST_LAYOUT)
    rows = []
    for text, vector in zip(texts, vectors, strict=True):
        data, digest = vector.tobytes(), text_hash(text)
        rows.append(
            (
                "s",
                "none",
                digest,
                "float32",
                384,
                data,
                _checksum("s", "none", digest, "float32", data),
            )
        )
    old.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    old.close()
    before = path.stat().st_size
    assert before / len(texts) > 4000
    store = EmbeddingStore(path)
    found = store.get("s", "none", texts)
    np.testing.assert_array_equal(np.stack([found[t] for t in texts]), vectors)
    store.close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "vectors" not in tables
    assert path.stat().st_size / len(texts) < 2200
    fresh = EmbeddingStore(tmp_path / "new.sqlite")
    fresh.put("s", "none", texts, vectors)
    fresh._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (tmp_path / "new.sqlite").stat().st_size / len(texts) < 2200
    fresh.close()


def _cached_results(tmp_path: Path) -> Path:
    """A results folder whose cache holds 2 vectors of suite a / moe and 1 of suite b / dense."""
    store = EmbeddingStore(cache_file(tmp_path / "results"))
    store.register("s1", "a", "moe", "sba")
    store.register("s2", "b", "dense", "dense")
    store.put("s1", "default", ["x", "y"], _vectors(2))
    store.put("s2", "default", ["x"], _vectors(1))
    store.close()
    return tmp_path / "results"


def test_the_cache_report_lists_each_space_and_the_file_size(tmp_path: Path) -> None:
    results = _cached_results(tmp_path)
    report = report_cache(results)
    assert report.path == results / ".cache" / "embeddings.sqlite"
    assert report.bytes_on_disk == report.path.stat().st_size > 0
    assert report.removed is None
    assert [(u.suite, u.model, u.aggregator, u.vectors) for u in report.usage] == [
        ("a", "moe", "sba", 2),
        ("b", "dense", "dense", 1),
    ]
    assert report.usage[0].megabytes == pytest.approx(2 * 6 * 4 / 1e6)


def test_the_cache_report_prunes_only_what_the_filters_match(tmp_path: Path) -> None:
    results = _cached_results(tmp_path)
    assert report_cache(results, prune=True, older_than_days=1).removed == 0  # just used
    pruned = report_cache(results, prune=True, suite="a")
    assert pruned.removed == 2
    assert [u.model for u in pruned.usage] == ["dense"]
    with pytest.raises(SbabenchError, match="--prune needs a filter"):
        report_cache(results, prune=True)
    assert [u.model for u in report_cache(results).usage] == ["dense"]


def test_a_results_folder_without_a_cache_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SbabenchError, match="no embedding cache at") as caught:
        report_cache(tmp_path)
    assert not (tmp_path / ".cache").exists()
    assert "run a suite first" in caught.value.render()


def test_the_cache_command_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    user_db = tmp_path / "results" / ".cache" / "embeddings.sqlite"
    user_db.parent.mkdir(parents=True)
    db = sqlite3.connect(user_db)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()
    before = user_db.read_bytes()
    with pytest.raises(SbabenchError, match="not an sbabench embedding cache") as caught:
        report_cache(tmp_path / "results", prune=True, suite="a")
    assert str(user_db) in caught.value.render()
    assert user_db.read_bytes() == before  # no tables added, nothing moved aside
    user_db.write_text("a user's text file")
    with pytest.raises(SbabenchError, match="not an sbabench embedding cache"):
        report_cache(tmp_path / "results")
    assert user_db.read_text() == "a user's text file"


def test_the_cache_command_follows_no_link(tmp_path: Path) -> None:
    real = _cached_results(tmp_path)
    for linked in ("file", "folder"):
        results = tmp_path / f"via-{linked}"
        if linked == "file":
            (results / ".cache").mkdir(parents=True)
            cache_file(results).symlink_to(cache_file(real))
        else:
            results.mkdir()
            (results / ".cache").symlink_to(real / ".cache")
        with pytest.raises(SbabenchError, match="symbolic link"):
            report_cache(results, prune=True, suite="a")
    assert [u.suite for u in report_cache(real).usage] == ["a", "b"]


def test_prune_leaves_a_look_alike_user_database_exactly_as_it_was(tmp_path: Path) -> None:
    """A user's SQLite file with tables of the same names is not opened for writing (not
    even switched to WAL) before it is refused."""
    import sqlite3

    from click.testing import CliRunner

    from sbabench.cli import main

    cache = tmp_path / "r" / ".cache"
    cache.mkdir(parents=True)
    path = cache / "embeddings.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE spaces (a TEXT); CREATE TABLE embeddings (b TEXT);")
    db.commit()
    db.close()
    before = path.read_bytes()
    result = CliRunner().invoke(main, ["cache", "--prune", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert path.read_bytes() == before


def test_a_store_another_run_is_creating_is_opened_once_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs sharing a results folder switch a new cache file to WAL at once: SQLite may
    refuse one as locked without waiting; it is opened again after a pause."""
    from sbabench.run import embedding_store

    real = embedding_store.EmbeddingStore._open
    refusals = iter([True, True])

    def busy(self: embedding_store.EmbeddingStore) -> sqlite3.Connection:
        if next(refusals, False):
            raise sqlite3.OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(embedding_store.EmbeddingStore, "_open", busy)
    monkeypatch.setattr(embedding_store.time, "sleep", lambda _: None)
    store = embedding_store.EmbeddingStore(tmp_path / "e.sqlite")
    store.close()
