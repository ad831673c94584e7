"""Resumable runs: warm re-runs, selection, shards, invalidation, kill -9, concurrent runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.run.execute import run_suite
from sbabench.run.plan import in_shard, plan_suite
from sbabench.run.results import load_results
from sbabench.suite import expand, parse_suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = """\
name: tiny
models:
  - name: moe
    source: upcycle
    experts: 4
    layers: [1]
    router: random
aggregators: [linear, sba]
tasks: [LeeDocSTS, PangLeePolarityClustering]
settings: {device: cpu}
"""


def _scores(folder: Path) -> dict[str, float]:
    return {f"{r.model}/{r.aggregator}/{r.task}": r.main_score for r in load_results(folder)}


def test_warm_rerun_loads_no_model_and_cache_reuses_embeddings(tmp_path: Path) -> None:
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert first.exit_code == 0 and len(first.computed) == 4 and first.models_loaded == 1
    warm = run_suite(suite, tmp_path)
    assert warm.models_loaded == 0 and not warm.computed and len(warm.cached) == 4

    # Recomputing with every text in the embedding store needs no model either, same scores.
    again = run_suite(suite, tmp_path, force=True)
    assert again.models_loaded == 0 and len(again.computed) == 4
    assert {r.task + r.aggregator: r.main_score for r in again.results} == {
        r.task + r.aggregator: r.main_score for r in first.results
    }
    assert all(r.timing_s.texts_encoded == 0 for r in again.results)

    listing = CliRunner().invoke(main, ["cache", "--results", str(tmp_path)])
    assert listing.exit_code == 0 and "moe" in listing.output and "sba" in listing.output
    pruned = CliRunner().invoke(
        main, ["cache", "--results", str(tmp_path), "--prune", "--model", "moe"]
    )
    assert pruned.exit_code == 0 and "removed" in pruned.output


def test_dry_run_only_force_and_shards(tmp_path: Path) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(SUITE)
    results = tmp_path / "r"
    dry = CliRunner().invoke(main, ["run", str(suite_file), "--results", str(results), "--dry-run"])
    assert dry.exit_code == 0 and "4 to run, 0 done" in dry.output and not results.exists()

    suite = parse_suite(SUITE)
    run_suite(suite, results, only="*/sba/*")
    plan = plan_suite(suite, results)
    assert sorted(p.unit.label for p in plan.todo) == [
        "moe/linear/LeeDocSTS",
        "moe/linear/PangLeePolarityClustering",
    ]
    forced = run_suite(suite, results, force=True, only="*/sba/LeeDocSTS")
    assert forced.computed == ["moe/sba/LeeDocSTS"]

    labels = [u.label for u in expand(suite)]
    shards = [{label for label in labels if in_shard(label, (i, 3))} for i in (1, 2, 3)]
    assert set().union(*shards) == set(labels) and sum(map(len, shards)) == len(labels)
    bad = CliRunner().invoke(main, ["run", str(suite_file), "--shard", "4/3"])
    assert bad.exit_code == 2 and "bad shard" in bad.output


def test_editing_an_operator_invalidates_exactly_its_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "myops_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = "import torch\n\ndef op(outputs, weights):\n    return (outputs * weights.unsqueeze(-1)).sum(1)\n"
    (package / "ops.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = parse_suite(SUITE.replace("[linear, sba]", "[linear, 'myops_pkg.ops:op']"))
    assert len(run_suite(suite, tmp_path / "r").computed) == 4
    # comments and formatting are not code: nothing to recompute
    (package / "ops.py").write_text(source + "# a comment about the operator\n")
    assert run_suite(suite, tmp_path / "r").computed == []
    (package / "ops.py").write_text(source.replace(".sum(1)", ".sum(1) * 1.0"))
    rerun = run_suite(suite, tmp_path / "r")
    assert sorted(rerun.computed) == [
        "moe/myops_pkg.ops.op/LeeDocSTS",
        "moe/myops_pkg.ops.op/PangLeePolarityClustering",
    ]


def _cli(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}  # type: ignore[dict-item]
    return subprocess.Popen(
        [sys.executable, "-m", "sbabench", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("moment", ["encoding", "scoring"])
def test_kill_9_then_resume_matches_an_uninterrupted_run(moment: str, tmp_path: Path) -> None:
    """Kill while the first unit encodes (marker from the operator), or while a later unit is
    being scored (1.5 s after the first result file appears: the next unit's texts are few and
    short, so the process is then in mteb's scoring and the per-item k-means runs)."""
    suite_text = SUITE.replace("[linear, sba]", "['tests.user_ops:slow_linear', sba]")
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(suite_text)
    marker = tmp_path / "encoding-started"
    interrupted = tmp_path / "interrupted"
    proc = _cli(
        ["run", str(suite_file), "--results", str(interrupted)],
        env={"SBABENCH_TEST_MARKER": str(marker)},
    )
    deadline = time.time() + 180

    def ready() -> bool:
        if moment == "encoding":
            return marker.exists()
        return any(interrupted.rglob("LeeDocSTS.json"))

    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ready(), proc.communicate()
    time.sleep(0.3 if moment == "encoding" else 1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = set(_scores(interrupted))
    assert len(survived) < 4

    suite = parse_suite(suite_text)
    resumed = run_suite(suite, interrupted)
    assert resumed.exit_code == 0
    assert not set(resumed.computed) & survived  # nothing finished before the kill is redone
    clean = run_suite(suite, tmp_path / "clean")
    assert _scores(interrupted) == _scores(tmp_path / "clean")
    assert len(clean.computed) == 4


def test_two_concurrent_runs_compute_every_unit_once(tmp_path: Path) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(SUITE)
    results = tmp_path / "shared"
    procs = [_cli(["run", str(suite_file), "--results", str(results)]) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    computed = [int(re.search(r"(\d+) computed", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sum(computed) == 4, outputs
    assert len(_scores(results)) == 4


def test_ctrl_c_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(SUITE.replace("[linear, sba]", "['tests.user_ops:slow_linear']"))
    marker = tmp_path / "encoding-started"
    proc = _cli(
        ["run", str(suite_file), "--results", str(tmp_path / "r")],
        env={"SBABENCH_TEST_MARKER": str(marker)},
    )
    deadline = time.time() + 180
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
