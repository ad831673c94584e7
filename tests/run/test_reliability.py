"""A damaged embedding cache never yields a wrong number: garbled anywhere, the run recomputes
what it cannot trust and the scores equal a clean run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sbabench.run.execute import run_suite
from sbabench.run.results import load_results
from sbabench.suite import parse_suite

SUITE = """\
name: rel
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1], router: random}
aggregators: [linear]
tasks: [LeeDocSTS, PangLeePolarityClustering]
settings: {device: cpu}
geometry: {tokens: 0}
"""


def _scores(folder: Path) -> dict[str, float]:
    return {r.label: r.main_score for r in load_results(folder)}


def _garble(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    start = {"header": 0, "middle": len(data) // 2, "end": max(0, len(data) - 4096)}[where]
    for i in range(start, min(len(data), start + 4096)):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    summary = run_suite(parse_suite(SUITE), folder)
    assert summary.exit_code == 0 and len(summary.computed) == 2
    return folder


@pytest.mark.parametrize("where", ["header", "middle", "end"])
def test_garbled_embedding_cache_gives_the_clean_scores(
    clean: Path, tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "r"
    shutil.copytree(clean, folder)
    cache = folder / ".cache" / "embeddings.sqlite"
    for extra in (Path(f"{cache}-wal"), Path(f"{cache}-shm")):
        extra.unlink(missing_ok=True)  # a closed store has checkpointed its WAL
    _garble(cache, where)
    for result in folder.glob("rel/*/*/*.json"):
        result.unlink()
    summary = run_suite(parse_suite(SUITE), folder)
    assert summary.exit_code == 0, summary.failed
    assert _scores(folder) == _scores(clean)
