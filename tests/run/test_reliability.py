"""A damaged embedding cache never yields a wrong number: garbled anywhere, the run recomputes
what it cannot trust and the scores equal a clean run's."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
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


ROOT = Path(__file__).resolve().parents[2]


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


KILL_SUITE = """\
name: kills
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1], router: random}
  - {name: dense, source: dense}
aggregators: [linear, sba]
tasks: [LeeDocSTS, PangLeePolarityClustering]
settings: {device: cpu}
"""


def _start(suite: Path, results: Path) -> subprocess.Popen[str]:
    """`sbabench run` in its own process; its output goes to a log beside the suite (a pipe
    nobody reads could fill up and stall it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    log = (suite.parent / f"{results.name}.log").open("a")
    return subprocess.Popen(
        [sys.executable, "-m", "sbabench", "run", str(suite), "--results", str(results)],
        cwd=ROOT, env=env, text=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.slow
def test_ten_random_kills_then_resume_give_the_uninterrupted_scores(tmp_path: Path) -> None:
    """SIGKILL at seeded random moments, resume each time; then one run to the end."""
    suite = tmp_path / "kills.yaml"
    suite.write_text(KILL_SUITE)
    clean = run_suite(parse_suite(KILL_SUITE), tmp_path / "clean")
    assert clean.exit_code == 0 and len(clean.computed) == 6
    rng = random.Random(0)
    folder = tmp_path / "killed"
    kills = restarts = 0
    while kills < 10:
        proc = _start(suite, folder)
        try:
            proc.wait(timeout=rng.uniform(4.0, 25.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:  # finished before the kill: start over in a fresh folder (a new one every time:
            # reusing a finished folder would finish at once again, forever)
            restarts += 1
            folder = tmp_path / f"killed-{restarts}"
    final = _start(suite, folder)
    assert final.wait(timeout=900) == 0, (tmp_path / f"{folder.name}.log").read_text()[-2000:]
    assert _scores(folder) == _scores(tmp_path / "clean")
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_two_concurrent_runs_one_killed_the_other_completes_every_unit(tmp_path: Path) -> None:
    suite = tmp_path / "kills.yaml"
    suite.write_text(KILL_SUITE)
    clean = run_suite(parse_suite(KILL_SUITE), tmp_path / "clean")
    folder = tmp_path / "shared"
    victim, survivor = _start(suite, folder), _start(suite, folder)
    time.sleep(12)  # both have planned and locked some units
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finished = {r.label: r.created_at for r in load_results(folder)}  # by either, so far
    assert survivor.wait(timeout=900) == 0, (tmp_path / "shared.log").read_text()[-2000:]
    assert _scores(folder) == _scores(tmp_path / "clean") and len(clean.computed) == 6
    # no unit computed twice: every result that existed at the kill is the one kept, and the
    # survivor computed only the others (the killed run's unfinished unit included)
    after = {r.label: r.created_at for r in load_results(folder)}
    assert {label: after[label] for label in finished} == finished
    log = (tmp_path / "shared.log").read_text()
    computed, cached = map(int, re.findall(r"(\d+) computed, (\d+) cached", log)[-1])
    assert computed + cached == 6 and cached <= len(finished)  # cached: the killed run's
