"""The machine cache: shared across results folders, checked on read, never fatal."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.models import machine_cache
from sbabench.models.encoder import build_encoder
from sbabench.models.machine_cache import MachineCache
from sbabench.models.spec import UpcycleModel
from tests.faults import refuse_writes_under

ROOT = Path(__file__).resolve().parents[2]
SPEC = UpcycleModel(name="m", source="upcycle", experts=4, layers=[1], seed=4)
CENTROIDS = "encoder.layer.1.output.dense.router.centroids"


def _centroids(cache: MachineCache | None) -> torch.Tensor:
    return build_encoder(SPEC, device="cpu", cache=cache).model.state_dict()[CENTROIDS]


@pytest.fixture(scope="module")
def uncached() -> torch.Tensor:
    """The centroids computed without any cache (the reference every cached build must equal)."""
    return _centroids(None)


def test_entries_round_trip_and_damage_is_detected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MachineCache(tmp_path)
    cache.put("routers", "k1", b"payload" * 100)
    assert cache.get("routers", "k1") == b"payload" * 100
    assert cache.get("routers", "absent") is None
    path = tmp_path / "routers" / "k1.bin"
    for damage in (
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:60] + bytes(x ^ 0xFF for x in b[60:80]) + b[80:],  # garbled in the middle
        lambda b: b"X" + b[1:],  # a bad header
    ):
        cache.put("routers", "k1", b"payload" * 100)
        path.write_bytes(damage(path.read_bytes()))
        with caplog.at_level(logging.WARNING, logger="sbabench"):
            assert cache.get("routers", "k1") is None
        assert "damaged" in caplog.text and not path.exists()
    assert [e.key for e in cache.entries()] == []


def test_a_new_results_folder_reuses_the_machines_router(
    tmp_path: Path, uncached: torch.Tensor
) -> None:
    cache = MachineCache(tmp_path / "machine")
    assert torch.equal(_centroids(cache), uncached)
    (entry,) = cache.entries()
    assert entry.kind == "routers" and entry.bytes > 1000
    assert torch.equal(_centroids(cache), uncached)  # read back, same numbers
    # a corrupted entry is rebuilt: same numbers, a whole entry again
    entry.path.write_bytes(entry.path.read_bytes()[:-100])
    assert torch.equal(_centroids(cache), uncached)
    assert MachineCache(tmp_path / "machine").get("routers", entry.key) is not None


def test_a_read_only_cache_folder_warns_and_the_build_goes_on(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    uncached: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes through the mode: a read-only file system
            refuse_writes_under(monkeypatch, folder, errno.EROFS)
        with caplog.at_level(logging.WARNING, logger="sbabench"):
            assert torch.equal(_centroids(MachineCache(folder / "sub")), uncached)
        assert "cannot be written" in caplog.text
        assert list(folder.iterdir()) == []  # nothing was written, and the build went on
    finally:
        folder.chmod(0o700)


def test_an_unwritable_cache_path_warns_and_the_build_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, uncached: torch.Tensor
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        assert torch.equal(_centroids(MachineCache(blocker / "cache")), uncached)
    assert "cannot be written" in caplog.text


def test_two_processes_building_the_same_router_at_once(
    tmp_path: Path, uncached: torch.Tensor
) -> None:
    code = (
        "import sys, torch\n"
        "from sbabench.models.encoder import build_encoder\n"
        "from sbabench.models.machine_cache import MachineCache\n"
        "from sbabench.models.spec import UpcycleModel\n"
        "spec = UpcycleModel(name='m', source='upcycle', experts=4, layers=[1], seed=4)\n"
        "state = build_encoder(spec, device='cpu', cache=MachineCache()).model.state_dict()\n"
        f"torch.save(state[{CENTROIDS!r}], sys.argv[1])\n"
    )
    env = {**os.environ, "SBABENCH_CACHE": str(tmp_path / "shared"), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"out{i}.pt")], env=env, cwd=ROOT
        )
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for i in range(2):
        assert torch.equal(torch.load(tmp_path / f"out{i}.pt"), uncached)
    shared = MachineCache(tmp_path / "shared")
    (entry,) = shared.entries()
    assert shared.get("routers", entry.key) is not None
    assert not [p for p in (tmp_path / "shared").rglob("*") if p.name.endswith(".tmp")]


def test_cli_lists_and_clears_the_machine_cache(tmp_path: Path) -> None:
    env = {"SBABENCH_CACHE": str(tmp_path)}
    MachineCache(tmp_path).put("routers", "abc123", b"x" * 2000)
    listed = CliRunner().invoke(main, ["cache", "--machine"], env=env)
    assert listed.exit_code == 0 and "routers" in listed.output and "abc123" in listed.output
    cleared = CliRunner().invoke(main, ["cache", "--machine", "--clear"], env=env)
    assert cleared.exit_code == 0 and "removed 1" in cleared.output
    assert MachineCache(tmp_path).entries() == []
    wrong = CliRunner().invoke(main, ["cache", "--clear", "--results", str(tmp_path)])
    assert wrong.exit_code == 2 and "--machine" in wrong.output


def test_the_listing_sums_the_entries_and_clears_them_when_asked(tmp_path: Path) -> None:
    cache = MachineCache(tmp_path)
    cache.put("routers", "abc", b"x" * 2000)
    cache.put("routers", "def", b"y" * 1000)
    header = 17 + 32  # magic line and SHA-256 of the payload
    listing = cache.listing()
    assert listing.root == tmp_path and listing.removed is None
    assert [(e.kind, e.key, e.bytes) for e in listing.entries] == [
        ("routers", "abc", 2000 + header),
        ("routers", "def", 1000 + header),
    ]
    assert listing.bytes == 3000 + 2 * header
    cleared = cache.listing(clear=True)
    assert (cleared.removed, cleared.entries, cleared.bytes) == (2, [], 0)
    assert MachineCache(tmp_path / "never-written").listing().entries == []


def _home_like(tmp_path: Path) -> Path:
    """A folder a person uses, with a cache entry sbabench wrote beside their own files."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "weights.bin").write_bytes(b"a user's weights")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.bin").write_bytes(MAGIC + b"looks like an entry")
    (home / "linked").symlink_to(elsewhere)
    return home


MAGIC = b"SBABENCH-CACHE-1\n"


def test_clear_refuses_a_folder_that_is_not_a_cache_and_deletes_nothing(tmp_path: Path) -> None:
    home = _home_like(tmp_path)
    result = CliRunner().invoke(
        main, ["cache", "--machine", "--clear"], env={"SBABENCH_CACHE": str(home)}
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        str(home) in result.output
        and "does not look like an sbabench machine cache" in result.output
    )
    assert "'linked'" in result.output or "'models'" in result.output
    assert (home / "models" / "weights.bin").read_bytes() == b"a user's weights"
    assert (tmp_path / "elsewhere" / "precious.bin").exists()
    assert not (home / ".sbabench-cache").exists()  # never marked


def test_a_foreign_folder_is_not_written_into_by_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = _home_like(tmp_path)
    cache = MachineCache(home)
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        cache.put("routers", "abc", b"x")
    assert "not using the machine cache" in caplog.text and str(home) in caplog.text
    assert sorted(p.name for p in home.iterdir()) == ["linked", "models"]


def test_clear_deletes_only_headered_entries_and_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = MachineCache(root)
    cache.put("routers", "abc", b"x" * 100)
    assert (root / ".sbabench-cache").is_file()  # marked when created
    (root / "routers" / "notes.bin").write_bytes(b"no header: not ours")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "k.bin").write_bytes(MAGIC + b"x")
    (root / "routers" / "linked.bin").symlink_to(outside / "k.bin")
    (root / "linked-kind").symlink_to(outside)
    (root / "models").mkdir()
    (root / "models" / "weights.bin").write_bytes(MAGIC + b"in a folder sbabench never makes")
    assert cache.listing(clear=True).removed == 1
    assert (root / "routers" / "notes.bin").exists() and (outside / "k.bin").exists()
    assert (root / "routers" / "linked.bin").is_symlink()
    assert (root / "models" / "weights.bin").exists()


def test_a_symlinked_kind_folder_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    MachineCache(root).put("routers", "abc", b"x")
    elsewhere = tmp_path / "elsewhere"
    (root / "routers").rename(elsewhere)
    (root / "routers").symlink_to(elsewhere)
    cache = MachineCache(root)
    assert cache.entries() == [] and cache.get("routers", "abc") is None
    assert cache.listing(clear=True).removed == 0
    assert (elsewhere / "abc.bin").exists()


def test_an_older_cache_of_entries_only_is_adopted(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / "routers").mkdir(parents=True)
    (root / "routers" / "abc.bin").write_bytes(MAGIC + b"\0" * 32)
    (root / "ray-worker").mkdir()
    listing = MachineCache(root).listing()
    assert [e.key for e in listing.entries] == ["abc"]
    assert (root / ".sbabench-cache").is_file()


def test_entries_of_another_user_are_ignored_unless_the_cache_is_shared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = MachineCache(tmp_path)
    cache.put("routers", "abc", b"forged centroids")
    monkeypatch.setattr(machine_cache, "_my_uid", lambda: os.getuid() + 1)  # now someone else's
    monkeypatch.delenv("SBABENCH_SHARED_CACHE", raising=False)
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        assert MachineCache(tmp_path).get("routers", "abc") is None
        assert MachineCache(tmp_path).listing(clear=True).removed == 0
    assert "owned by another user" in caplog.text and "SBABENCH_SHARED_CACHE" in caplog.text
    assert (tmp_path / "routers" / "abc.bin").exists()
    monkeypatch.setenv("SBABENCH_SHARED_CACHE", "1")
    assert MachineCache(tmp_path).get("routers", "abc") == b"forged centroids"


def test_a_forged_router_entry_of_another_user_is_not_used(
    tmp_path: Path, uncached: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = MachineCache(tmp_path)
    assert torch.equal(_centroids(cache), uncached)
    (entry,) = cache.entries()
    forged = io.BytesIO()
    torch.save({"1": torch.zeros_like(uncached)}, forged)
    cache.put("routers", entry.key, forged.getvalue())
    monkeypatch.setattr(machine_cache, "_my_uid", lambda: os.getuid() + 1)
    monkeypatch.delenv("SBABENCH_SHARED_CACHE", raising=False)
    assert torch.equal(_centroids(MachineCache(tmp_path)), uncached)


def test_a_read_only_older_cache_is_listed_without_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "old"
    (root / "routers").mkdir(parents=True)
    (root / "routers" / "abc.bin").write_bytes(MAGIC + b"\0" * 32)
    refuse_writes_under(monkeypatch, root, errno.EROFS)
    assert [e.key for e in MachineCache(root).listing().entries] == ["abc"]
    assert not (root / ".sbabench-cache").exists()


def test_a_fifo_planted_in_a_cache_folder_does_not_hang_the_listing(tmp_path: Path) -> None:
    import os

    cache = tmp_path / "c"
    (cache / "routers").mkdir(parents=True)
    os.mkfifo(cache / "routers" / "f.bin")
    result = CliRunner().invoke(main, ["cache", "--machine"], env={"SBABENCH_CACHE": str(cache)})
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def _refuse_unlinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting a file fails as in a read-only folder (root, which runs CI, ignores modes)."""

    def unlink(path: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(Path, "unlink", unlink)


def test_a_damaged_entry_in_a_read_only_cache_is_not_used_and_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MachineCache(tmp_path)
    cache.put("code", "k1", b"payload")
    path = tmp_path / "code" / "k1.bin"
    path.write_bytes(b"X" + path.read_bytes()[1:])
    _refuse_unlinks(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        assert cache.get("code", "k1") is None
    assert "damaged" in caplog.text and path.exists()


def test_clear_in_a_read_only_cache_says_what_it_could_not_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "c"
    MachineCache(cache).put("code", "k1", b"payload")
    _refuse_unlinks(monkeypatch)
    result = CliRunner().invoke(
        main, ["cache", "--machine", "--clear"], env={"SBABENCH_CACHE": str(cache)}
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "1 machine-cache entr(ies) could not be deleted (0 were)" in result.output
    assert "k1.bin (Permission denied)" in result.output and "writable" in result.output


def test_a_fifo_planted_at_an_entrys_name_does_not_hang_a_read(tmp_path: Path) -> None:
    import threading

    cache = MachineCache(tmp_path)
    cache.put("code", "k0", b"payload")  # the folder and its marker, as a run leaves them
    os.mkfifo(tmp_path / "code" / "k1.bin")
    found: list[bytes | None] = []
    reader = threading.Thread(target=lambda: found.append(cache.get("code", "k1")), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive() and found == [None]
