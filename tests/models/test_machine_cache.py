"""The machine cache: shared across results folders, checked on read, never fatal."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sbabench.cli import main
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
    cache.put("kind", "k1", b"payload" * 100)
    assert cache.get("kind", "k1") == b"payload" * 100
    assert cache.get("kind", "absent") is None
    path = tmp_path / "kind" / "k1.bin"
    for damage in (
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:60] + bytes(x ^ 0xFF for x in b[60:80]) + b[80:],  # garbled in the middle
        lambda b: b"X" + b[1:],  # a bad header
    ):
        cache.put("kind", "k1", b"payload" * 100)
        path.write_bytes(damage(path.read_bytes()))
        with caplog.at_level(logging.WARNING, logger="sbabench"):
            assert cache.get("kind", "k1") is None
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
