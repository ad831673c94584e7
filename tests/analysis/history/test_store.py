"""The history store: idempotent records, refusals, merging, retention, concurrency, damage."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.analysis.history.recording import record_results
from sbabench.analysis.history.store import HistoryStore
from sbabench.cli import main
from sbabench.errors import StorageError
from tests.analysis.history.builders import commit, new_repo, sts_result, write_results


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = new_repo(tmp_path / "repo")
    commit(repo, "first", 1_700_000_000)
    return repo


def _record(repo: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["record", *args, "--repo", str(repo), "--machine", "ci"])
    return result.exit_code, result.output


def test_recording_again_is_a_no_op_and_other_content_needs_replace(repo: Path) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1), sts_result(0.5, 1, aggregator="linear"))  # fmt: skip
    history = repo / "results" / "history.sqlite"
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 0 and "2 new" in out, out
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 0 and "0 new, 2 unchanged" in out, out
    write_results(repo / "results", sts_result(1.0, 2))  # another score at the same commit
    before = history.read_bytes()
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 2 and "already recorded at commit" in out and "--replace" in out, out
    assert history.read_bytes() == before  # nothing written
    code, out = _record(repo, str(folder), "--history", str(history), "--replace")
    assert code == 0 and "1 unchanged, 1 replaced" in out, out
    records = HistoryStore(history).records()
    assert len(records) == 2 and {r.sha for r in records} == {commit_of(repo)}
    record = next(r for r in records if r.aggregator == "sba")
    assert record.item_var > 0 and record.n_items == 200 and not record.dirty
    assert HistoryStore(history).items(record) is not None


def commit_of(repo: Path) -> str:
    from tests.analysis.history.builders import git

    return git(repo, "rev-parse", "HEAD")


def test_a_failed_unit_is_listed_not_recorded(repo: Path) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1))
    failed = folder / "m" / "linear" / "T1.error.json"
    failed.parent.mkdir(parents=True)
    failed.write_text('{"error": "boom", "suite": "s"}')
    code, out = _record(repo, str(folder), "--history", str(repo / "h.sqlite"))
    assert code == 0 and "recorded 1 of 2 units" in out and "not recorded: m/linear/T1" in out


def test_history_merges_from_another_file_and_keeps_items_of_the_newest_commits(
    repo: Path,
) -> None:
    ours, theirs = repo / "ours.sqlite", repo / "theirs.sqlite"
    for n in range(3):
        folder = write_results(repo / "results", sts_result(0.1 * n, n))
        record_results([folder], theirs, repo=repo, machine="ci", keep_items=2)
        commit(repo, f"change {n}", 1_700_000_100 + n)
    kept = HistoryStore(theirs)
    records = sorted(kept.records(), key=lambda r: kept.commits()[r.sha][1])
    assert len(records) == 3
    assert kept.items(records[0]) is None  # the oldest commit's items were pruned
    assert all(kept.items(r) is not None for r in records[1:])
    code, out = _record(repo, "--from", str(theirs), "--history", str(ours))
    assert code == 0 and "3 new" in out, out
    code, out = _record(repo, "--from", str(theirs), "--history", str(ours))
    assert code == 0 and "0 new, 3 unchanged" in out, out
    assert len(HistoryStore(ours).commits()) == 3


def test_retention_trims_only_the_machines_it_records_and_says_so(repo: Path) -> None:
    """A record with --keep-items 1 on machine "ci" drops the items of ci's older commits and
    says how many; machine "laptop"'s items, recorded at the same commits, stay."""
    history = repo / "h.sqlite"
    for n in range(3):
        folder = write_results(repo / "results", sts_result(0.1 * n, n))
        for machine in ("laptop", "ci"):
            record_results([folder], history, repo=repo, machine=machine, keep_items=5)
        commit(repo, f"change {n}", 1_700_000_100 + n)
    folder = write_results(repo / "results", sts_result(0.4, 4))
    code, out = _record(repo, str(folder), "--history", str(history), "--keep-items", "1")
    assert code == 0 and "per-item scores of 3 older record(s) dropped" in out, out
    store = HistoryStore(history)
    kept = {m: sum(store.items(r) is not None for r in store.records(m)) for m in ("ci", "laptop")}
    assert kept == {"ci": 1, "laptop": 3}


@pytest.mark.parametrize("damage", ["garbage", "empty", "foreign", "truncated", "folder"])
def test_a_damaged_history_is_a_located_error_and_left_as_it_is(repo: Path, damage: str) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1))
    history = repo / "h.sqlite"
    if damage == "garbage":
        history.write_bytes(b"not a database at all" * 100)
    elif damage == "empty":
        history.write_bytes(b"")
    elif damage == "foreign":
        db = sqlite3.connect(history)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
    elif damage == "truncated":
        record_results([folder], history, repo=repo, machine="ci")
        history.write_bytes(history.read_bytes()[:3000])
    else:
        history.mkdir()
    before = history.read_bytes() if history.is_file() else None
    for command in (["record", str(folder)], ["history"]):
        result = CliRunner().invoke(main, [*command, "--history", str(history), "--repo", str(repo)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert str(history) in result.output
        assert "fix:" in result.output or "is a directory" in result.output  # click's check
        assert "Traceback" not in result.output
    assert (history.read_bytes() if history.is_file() else None) == before


def test_a_missing_history_says_how_to_make_one(repo: Path) -> None:
    result = CliRunner().invoke(main, ["history", "--history", str(repo / "none.sqlite"), "--repo", str(repo)])  # fmt: skip
    assert result.exit_code == 2 and "no history at" in result.output and "sbabench record" in result.output  # fmt: skip
    with pytest.raises(StorageError):
        HistoryStore(repo / "none.sqlite")


def test_concurrent_records_lose_nothing(repo: Path) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1), sts_result(0.3, 2, aggregator="linear"))  # fmt: skip
    history = repo / "shared.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    command = [sys.executable, "-m", "sbabench", "record", str(folder), "--repo", str(repo)]
    writers = [
        subprocess.Popen(
            [*command, "--history", str(history), "--machine", f"m{n}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert all(w.returncode == 0 for w in writers), outputs
    records = HistoryStore(history).records()
    assert sorted({r.machine for r in records}) == ["m0", "m1", "m2", "m3"]
    assert len(records) == 8


def test_a_run_records_only_the_units_it_validated(tmp_path: Path) -> None:
    """`run --record` passes the units it ran or found valid: a file of another unit left in
    the folder (older code, a unit --only skipped) is not recorded at this commit."""
    repo = new_repo(tmp_path / "repo")
    commit(repo, "c0", 1_700_000_000)
    folder = write_results(repo / "results", sts_result(0.0, 1), sts_result(0.0, 1, task="T2"))
    done = record_results([folder], tmp_path / "h.sqlite", repo=repo, units={"m/sba/T1"})
    assert done.units == 1 and done.added.added == 1
    (record,) = HistoryStore(tmp_path / "h.sqlite").records(done.machine)
    assert record.task == "T1"


def test_a_unit_without_a_score_or_a_variance_is_listed_not_recorded(tmp_path: Path) -> None:
    """A NaN score (a diverged model) or constant predictions cannot be a point of a history:
    the unit is named as not recorded, the others are recorded, and the file is not blamed."""
    repo = new_repo(tmp_path / "repo")
    commit(repo, "c0", 1_700_000_000)
    good = sts_result(0.0, 1)
    scores = good.items["default"]
    flat = scores.model_copy(update={"predicted": [1.0] * len(scores.gold)})
    constant = good.model_copy(update={"task": "T2", "items": {"default": flat}, "main_score": float("nan")})  # fmt: skip
    folder = write_results(repo / "results", good, constant)
    out = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", str(tmp_path / "h.sqlite")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "recorded 1 of 2 units" in out.output and "not recorded: m/sba/T2" in out.output
    assert "not a readable" not in out.output


def _forged(repo: Path, tmp_path: Path, sql: str, name: str = "source.sqlite") -> Path:
    """A history recorded normally, then changed by `sql` (as a hostile artefact would be)."""
    folder = write_results(repo / "results", sts_result(0.0, 1))
    source = tmp_path / name
    assert _record(repo, str(folder), "--history", str(source))[0] == 0
    with sqlite3.connect(source) as db:
        db.execute(sql)
    return source


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("UPDATE records SET score = 'abc'", "score is not a number"),
        ("UPDATE records SET model = '../../x'", "model: '../../x' is not a safe name"),
        ("UPDATE records SET machine = 'ci[/x]'", "is not a safe name"),
        ("UPDATE records SET sha = '../../../tmp'", "is not a commit"),
        ("UPDATE records SET score = 1.7e308", "score is 1.7e+308"),
    ],
)
def test_a_forged_row_is_refused_when_merged_and_when_read(
    repo: Path, tmp_path: Path, sql: str, said: str
) -> None:
    source = _forged(repo, tmp_path, sql)
    target = tmp_path / "target.sqlite"
    code, out = _record(repo, "--from", str(source), "--history", str(target))
    assert code == 2 and said in out and "Traceback" not in out, out
    code, out = _history_of(repo, source)
    assert code == 2 and said in out and "Traceback" not in out, out


def _history_of(repo: Path, history: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["history", "--repo", str(repo), "--history", str(history), "--machine", "ci"])  # fmt: skip
    return result.exit_code, result.output


def test_items_that_inflate_past_the_cap_are_refused(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbabench.analysis.history import store

    source = _forged(repo, tmp_path, "UPDATE records SET task_type = task_type")
    monkeypatch.setattr(store, "MAX_ITEMS_BYTES", 100)  # a bomb is this, scaled down
    (record,) = HistoryStore(source).records(with_items=True)
    with pytest.raises(StorageError, match="inflate to more than"):
        HistoryStore(source).items(record)


def test_a_symlinked_history_is_refused(repo: Path, tmp_path: Path) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1))
    link = tmp_path / "h.sqlite"
    link.symlink_to(tmp_path / "nowhere.sqlite")
    code, out = _record(repo, str(folder), "--history", str(link))
    assert code == 2 and "symbolic link" in out and not (tmp_path / "nowhere.sqlite").exists()


def test_a_bad_source_among_several_merges_nothing(repo: Path, tmp_path: Path) -> None:
    good = _forged(repo, tmp_path, "UPDATE records SET task_type = task_type")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a history")
    target = tmp_path / "target.sqlite"
    code, out = _record(repo, "--from", str(good), "--from", str(bad), "--history", str(target))
    assert code == 2 and "bad.sqlite" in out and not target.exists()


SHORT = {"kind": "sts", "gold": [1.0, 2.0]}


def _blob(value: object) -> str:
    import json
    import zlib

    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return "X'" + zlib.compress(raw).hex() + "'"


@pytest.mark.parametrize(
    ("blob", "said"),
    [
        ("X'00010203'", "the items of"),
        (
            _blob({"default": {"kind": "sts", "gold": [1.0, 2.0], "predicted": [0.5]}}),
            "differ in length",
        ),
        (
            _blob({"default": {"kind": "sts", "gold": [1.0, 2.0], "predicted": [0.5, 1e300]}}),
            "beyond",
        ),
        (_blob(b"[" * 100_000 + b"]" * 100_000), "the items of"),
    ],
)
def test_a_source_whose_items_are_damaged_is_refused_whole(
    repo: Path, tmp_path: Path, blob: str, said: str
) -> None:
    """A merged file's item blobs are read and checked before anything is written: a forged
    blob would otherwise break every later read of the target history."""
    source = _forged(repo, tmp_path, f"UPDATE records SET items = {blob}")
    target = tmp_path / "target.sqlite"
    code, out = _record(repo, "--from", str(source), "--history", str(target))
    assert code == 2 and said in out and "source.sqlite" in out and "Traceback" not in out, out
    assert not target.exists()


def test_sources_and_results_are_recorded_all_or_none(repo: Path, tmp_path: Path) -> None:
    """A second source that conflicts with the target, or RESULTS that cannot be read, leave
    the target as it was: nothing of the first source is merged."""
    folder = write_results(repo / "results", sts_result(0.0, 1))
    target = tmp_path / "target.sqlite"
    assert _record(repo, str(folder), "--history", str(target))[0] == 0
    before = HistoryStore(target).records()
    other = _forged(repo, tmp_path, "UPDATE records SET machine = 'other'")
    conflicting = tmp_path / "conflicting.sqlite"  # another result of the unit, same commit
    record_results([write_results(repo / "r2", sts_result(1.0, 2))], conflicting, repo=repo, machine="ci")  # fmt: skip
    code, out = _record(repo, "--from", str(other), "--from", str(conflicting), "--history", str(target))  # fmt: skip
    assert code == 2 and "other content" in out and "merged" not in out, out
    assert HistoryStore(target).records() == before
    fresh = tmp_path / "fresh.sqlite"  # a history the failed command would have created
    code, out = _record(repo, "--from", str(other), "--from", str(conflicting), "--from", str(target), "--history", str(fresh))  # fmt: skip
    assert code == 2 and not fresh.exists(), out
    code, out = _record(repo, str(tmp_path / "missing"), "--from", str(other), "--history", str(target))  # fmt: skip
    assert code == 2 and "merged" not in out and HistoryStore(target).records() == before


def test_a_read_only_history_says_so_and_is_not_called_damaged(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite opening the file read-only (as it does for a file or folder without write
    permission; opened so here, since root writes through permissions)."""
    from sbabench.analysis.history import store

    folder = write_results(repo / "results", sts_result(0.0, 1))
    history = tmp_path / "h.sqlite"
    assert _record(repo, str(folder), "--history", str(history))[0] == 0
    commit(repo, "next", 1_700_000_500)
    before = history.read_bytes()
    connect = sqlite3.connect
    monkeypatch.setattr(
        store.sqlite3, "connect", lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw)
    )
    code, out = _record(repo, str(folder), "--history", str(history))
    monkeypatch.undo()
    assert code == 2 and "read-only" in out and "not a readable" not in out, out
    assert history.read_bytes() == before


def test_a_clean_record_of_the_same_result_clears_the_dirty_mark(repo: Path) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1))
    history = repo / "h.sqlite"
    (repo / "log.txt").write_text("edited\n")  # a tracked file changed: a dirty tree
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 0 and "(dirty tree)" in out
    (repo / "log.txt").write_text("first\n")  # as committed again
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 0 and "1 replaced" in out, out
    assert [r.dirty for r in HistoryStore(history).records()] == [False]
    (repo / "log.txt").write_text("edited\n")  # a dirty record never overwrites a clean one
    code, out = _record(repo, str(folder), "--history", str(history))
    assert code == 0 and "1 unchanged" in out
    assert [r.dirty for r in HistoryStore(history).records()] == [False]


def test_two_sources_with_other_content_for_one_unit_are_refused_even_with_replace(
    repo: Path, tmp_path: Path
) -> None:
    one, other, target = tmp_path / "one.sqlite", tmp_path / "other.sqlite", tmp_path / "t.sqlite"
    record_results([write_results(repo / "r1", sts_result(0.0, 1))], one, repo=repo, machine="ci")
    record_results([write_results(repo / "r2", sts_result(1.0, 2))], other, repo=repo, machine="ci")
    code, out = _record(repo, "--from", str(one), "--from", str(other), "--history", str(target), "--replace")  # fmt: skip
    assert code == 2 and "comes from" in out and "one.sqlite" in out and "other.sqlite" in out, out
    assert "nothing was recorded" in out and not target.exists()
    # the same content from both is one record
    code, out = _record(repo, "--from", str(one), "--from", str(one), "--history", str(target))
    assert code == 0 and len(HistoryStore(target).records()) == 1, out


def test_a_source_whose_score_does_not_match_its_content_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    """A record's content digest covers its score and per-item scores: a source edited to
    carry another score under the old digest (so it would pass as "the same result") is
    refused before anything is written."""
    forged = _forged(repo, tmp_path, "UPDATE records SET score = score + 0.01")
    target = tmp_path / "target.sqlite"
    code, out = _record(repo, "--from", str(forged), "--history", str(target))
    assert code == 2 and "does not match its own score" in out and not target.exists(), out


def test_a_source_that_is_the_target_is_skipped_and_pruned_items_are_filled_in(
    repo: Path, tmp_path: Path
) -> None:
    folder = write_results(repo / "results", sts_result(0.0, 1))
    target = tmp_path / "target.sqlite"
    assert _record(repo, str(folder), "--history", str(target))[0] == 0
    code, out = _record(repo, str(folder), "--from", str(target), "--history", str(target), "--replace")  # fmt: skip
    assert code == 0 and "skipped --from" in out and "comes from" not in out, out
    pruned = _forged(repo, tmp_path, "UPDATE records SET items = NULL", "pruned.sqlite")
    fresh = tmp_path / "fresh.sqlite"
    code, out = _record(repo, "--from", str(pruned), "--from", str(target), "--history", str(fresh))  # fmt: skip
    assert code == 0, out
    (record,) = HistoryStore(fresh).records()
    assert HistoryStore(fresh).items(record) is not None


def test_a_refused_record_into_a_new_folder_leaves_no_folder_behind(
    repo: Path, tmp_path: Path
) -> None:
    good = _forged(repo, tmp_path, "UPDATE records SET task_type = task_type")
    target = tmp_path / "new" / "sub" / "h.sqlite"
    code, out = _record(repo, "--from", str(good), "--history", str(target))
    assert code == 0 and target.exists(), out  # the folders are made when the record lands
    other = tmp_path / "other" / "sub" / "h.sqlite"
    conflicting = tmp_path / "conflicting.sqlite"
    record_results([write_results(repo / "r2", sts_result(1.0, 2))], conflicting, repo=repo, machine="ci")  # fmt: skip
    code, out = _record(repo, "--from", str(good), "--from", str(conflicting), "--history", str(other))  # fmt: skip
    assert code == 2 and not (tmp_path / "other").exists(), out
