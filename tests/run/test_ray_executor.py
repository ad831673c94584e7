"""The Ray executor on a local Ray instance: the local executor's units and scores, workers
that never write into the results folder, a killed worker retried, bad input refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from sbabench.cli import main
from sbabench.run.execute import RunSummary, planned_run, run_suite
from sbabench.run.progress import Event, EventKind
from sbabench.run.ray_executor import _Driver, run_suite_ray
from sbabench.run.results import load_results
from sbabench.suite import parse_suite
from tests.factories import TINY_MOE_SUITE, TINY_SUITE, tiny_moe_with_workers
from tests.run.fake_ray import FakeRay, Worker

ROOT = Path(__file__).resolve().parents[2]
SUITE = TINY_SUITE


@pytest.fixture(scope="module")
def writes_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray") / "worker-writes.tsv"


@pytest.fixture(scope="module")
def local_instance(writes_log: Path) -> object:
    """A local Ray instance whose workers log every path they write."""
    env = {
        "PYTHONPATH": str(ROOT),
        "SBABENCH_CACHE": os.environ["SBABENCH_CACHE"],
        "SBABENCH_TEST_WRITES": str(writes_log),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": env,
            "worker_process_setup_hook": "tests.run.ray_hooks.watch_writes",
        },
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The local executor's results of the suite, computed with one torch thread as each Ray
    worker is (`resources: {cpus: 1}`): a thread count changes float sums in the last bits."""
    import torch

    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_suite(parse_suite(SUITE), folder)
    finally:
        torch.set_num_threads(threads)
    assert summary.exit_code == 0
    return _outcome(folder)


def _outcome(folder: Path) -> dict[str, object]:
    """Every unit's scores and per-item predictions, by label."""
    return {
        r.label: (r.main_score, r.scores, {k: v.model_dump() for k, v in r.items.items()})
        for r in load_results(folder)
    }


def _unit_workers() -> set[int]:
    """Process ids of the live UnitWorker actors (Ray names their processes after the class)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"UnitWorker" in command:
            found.add(int(entry.name))
    return found


def test_a_suite_through_ray_writes_the_local_executors_units_and_scores(
    local_instance: object, local_reference: dict[str, object], tmp_path: Path, writes_log: Path
) -> None:
    events: list[Event] = []
    summary = run_suite_ray(parse_suite(SUITE), tmp_path, progress=events.append)
    assert summary.exit_code == 0 and len(summary.computed) == 3, summary.failed
    assert summary.models_loaded == 2
    assert _outcome(tmp_path) == local_reference
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.PLANNED and kinds.count(EventKind.UNIT_FINISHED) == 3
    assert any(e.kind is EventKind.UNIT_STARTED and "moe/" in e.label for e in events)
    # workers wrote (their own caches), never into the results folder; no lock files either
    written = [line.split("\t")[1] for line in writes_log.read_text().splitlines()]
    assert any("ray-worker" in path for path in written)
    assert not [p for p in written if Path(p).resolve().is_relative_to(tmp_path.resolve())]
    assert not list(tmp_path.rglob("*.lock"))
    # a resume computes nothing
    again = run_suite_ray(parse_suite(SUITE), tmp_path)
    assert not again.computed and len(again.cached) == 3


def test_a_worker_killed_mid_unit_is_restarted_and_the_results_are_complete_and_identical(
    local_instance: object, local_reference: dict[str, object], tmp_path: Path
) -> None:
    killed: set[int] = set()
    finished_by: dict[str, set[int]] = {}

    def kill_on_first_result(event: Event) -> None:
        if event.kind is EventKind.UNIT_FINISHED:
            finished_by[event.label] = _unit_workers()
        if event.kind is EventKind.UNIT_FINISHED and event.label == "moe/linear/LeeDocSTS":
            killed.update(_unit_workers())  # moe/sba is being computed by one of them now
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    summary = run_suite_ray(parse_suite(SUITE), tmp_path, progress=kill_on_first_result)
    assert killed, "no worker process found to kill"
    assert summary.exit_code == 0 and len(summary.computed) == 3, summary.failed
    assert _outcome(tmp_path) == local_reference
    # the unit in flight was computed again, by a restarted worker process
    assert finished_by["moe/sba/LeeDocSTS"] - killed


_NO_CACHE = ("{device: cpu}", '{device: cpu, embedding_cache: "off"}')
"""No embedding cache: each worker must build the model and encode, so a unit takes seconds
(cached embeddings from the other tests would let one worker finish both units at once)."""


def _computed_by(events: list[Event]) -> dict[str, str]:
    """Which worker process each unit was last given to (its `UNIT_STARTED` message)."""
    return {e.label: e.message for e in events if e.kind is EventKind.UNIT_STARTED}


def test_two_workers_of_one_model_share_its_units_and_give_the_local_scores(
    local_instance: object, local_reference: dict[str, object], tmp_path: Path
) -> None:
    suite = tiny_moe_with_workers(2).replace(*_NO_CACHE)  # both units take seconds
    events: list[Event] = []
    summary = run_suite_ray(parse_suite(suite), tmp_path, progress=events.append)
    assert summary.exit_code == 0 and len(summary.computed) == 2, summary.failed
    by = _computed_by(events)
    assert set(by) == {"moe/linear/LeeDocSTS", "moe/sba/LeeDocSTS"}
    assert len(set(by.values())) == 2, by  # two processes, one unit each
    assert summary.models_loaded == 2  # each worker built the model once
    reference = {k: v for k, v in local_reference.items() if k.startswith("moe/")}
    assert _outcome(tmp_path) == reference
    # `workers` is in no key: the same model with one worker finds both units done
    again = run_suite_ray(parse_suite(TINY_MOE_SUITE), tmp_path)
    assert not again.computed and len(again.cached) == 2


def _drive(workers: list[Worker], root: Path, retries: int) -> tuple[RunSummary, list[str]]:
    """The driver over scripted workers for the tiny MoE's two units: the summary, and each
    unit given to a worker as `label pid`."""
    suite = parse_suite(tiny_moe_with_workers(len(workers)))
    events: list[Event] = []
    plan, summary = planned_run(suite, root, False, None, None, events.append)
    driver = _Driver(FakeRay(workers), suite, summary, events.append, retries)
    driver.submit(plan.todo, {"moe": len(workers)})
    driver.collect()
    given = [f"{e.label} {e.message}" for e in events if e.kind is EventKind.UNIT_STARTED]
    return summary, given


LINEAR, SBA = "moe/linear/LeeDocSTS", "moe/sba/LeeDocSTS"


def test_a_unit_whose_worker_died_for_good_goes_to_another_worker(tmp_path: Path) -> None:
    dies = Worker([101, ActorDiedError()], deaths=[ActorDiedError()])
    lives = Worker([202])
    summary, given = _drive([dies, lives], tmp_path, retries=1)
    assert given == [f"{LINEAR} Ray pid 101", f"{SBA} Ray pid 202", f"{LINEAR} Ray pid 202"]
    assert summary.failed == {LINEAR: "computed by 202", SBA: "computed by 202"}
    assert dies.killed and lives.killed  # the model's workers go once its units are done


def test_a_unit_is_tried_at_most_retries_plus_one_times(tmp_path: Path) -> None:
    restarts = Worker([101, 102, 103, 104], deaths=[ActorUnavailableError("killed", None)] * 3)
    summary, given = _drive([restarts], tmp_path, retries=2)
    assert given == [f"{LINEAR} Ray pid {pid}" for pid in (101, 102, 103)] + [f"{SBA} Ray pid 104"]
    assert summary.failed[LINEAR].startswith("the Ray worker computing it failed 3 times")
    assert summary.failed[SBA] == "computed by 104"


def test_a_restarting_worker_is_asked_again_and_one_that_never_starts_holds_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sbabench.run.ray_executor._ASK_AGAIN_S", 0.01)
    never = Worker([])  # waits for resources the whole run
    restarting = Worker([ActorUnavailableError("restarting", None), 202])
    summary, given = _drive([never, restarting], tmp_path, retries=1)
    assert given == [f"{LINEAR} Ray pid 202", f"{SBA} Ray pid 202"]
    assert summary.exit_code == 1 and set(summary.failed.values()) == {"computed by 202"}
    assert never.killed


def test_units_left_when_every_worker_is_gone_fail_with_a_reason(tmp_path: Path) -> None:
    summary, given = _drive([Worker([ActorDiedError()])], tmp_path, retries=1)
    assert not given and set(summary.failed) == {LINEAR, SBA}
    assert summary.failed[SBA].startswith("no Ray worker of moe is left to compute it")
    assert summary.failed[SBA].endswith(": The actor died unexpectedly before finishing this task.")


def test_a_unit_that_raised_in_its_worker_fails_at_once_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    raised = RayTaskError("compute", "Traceback ...\nValueError: boom", ValueError("boom"))
    summary, given = _drive([Worker([101], deaths=[raised])], tmp_path, retries=3)
    assert given == [f"{LINEAR} Ray pid 101", f"{SBA} Ray pid 101"]  # not retried
    assert summary.failed == {LINEAR: "ValueError: boom", SBA: "computed by 101"}


@pytest.mark.slow
def test_a_killed_workers_unit_is_retried_in_another_process_and_the_scores_hold(
    local_instance: object, local_reference: dict[str, object], tmp_path: Path
) -> None:
    killed: list[str] = []

    def kill_the_first_worker(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.UNIT_STARTED and not killed:
            killed.append(event.message)
            time.sleep(1)  # the unit is under way
            os.kill(int(event.message.removeprefix("Ray pid ")), signal.SIGKILL)

    events: list[Event] = []
    suite = parse_suite(tiny_moe_with_workers(2).replace(*_NO_CACHE))
    summary = run_suite_ray(suite, tmp_path, progress=kill_the_first_worker, retries=1)
    assert summary.exit_code == 0 and len(summary.computed) == 2, summary.failed
    started = [e for e in events if e.kind is EventKind.UNIT_STARTED]
    assert len(started) == 3 and started[0].message == killed[0]
    retried = [e for e in started[1:] if e.label == started[0].label]
    assert retried and retried[0].message != killed[0]  # another process computed it
    reference = {k: v for k, v in local_reference.items() if k.startswith("moe/")}
    assert _outcome(tmp_path) == reference


@pytest.mark.slow
def test_a_worker_that_dies_more_often_than_retried_fails_its_unit_and_a_resume_completes_it(
    local_instance: object, local_reference: dict[str, object], tmp_path: Path
) -> None:
    def kill(event: Event) -> None:
        if event.kind is EventKind.UNIT_FINISHED and event.label == "moe/linear/LeeDocSTS":
            for pid in _unit_workers():
                os.kill(pid, signal.SIGKILL)

    # the MoE alone: killing every worker must not also catch a dense worker still computing
    moe_only = parse_suite(TINY_MOE_SUITE)
    assert [m.name for m in moe_only.models] == ["moe"]
    summary: RunSummary = run_suite_ray(moe_only, tmp_path, progress=kill, retries=0)
    assert list(summary.failed) == ["moe/sba/LeeDocSTS"]
    assert "the Ray worker computing it failed 1 times" in summary.failed["moe/sba/LeeDocSTS"]
    assert (tmp_path / "tiny" / "moe" / "sba" / "LeeDocSTS.error.json").is_file()
    resumed = run_suite_ray(moe_only, tmp_path)
    assert resumed.computed == ["moe/sba/LeeDocSTS"] and resumed.exit_code == 0
    reference = {k: v for k, v in local_reference.items() if k.startswith("moe/")}
    assert _outcome(tmp_path) == reference


def test_bad_ray_input_is_refused_before_any_work(local_instance: object, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        SUITE.replace("    source: dense\n", "    source: dense\n    resources: {gpus: 1}\n")
    )
    outcome = CliRunner().invoke(
        main, ["run", str(suite), "--executor", "ray", "--results", str(tmp_path / "r")]
    )
    assert outcome.exit_code == 2
    assert (
        "asks for 1 CPUs and 1 GPUs" in outcome.output and "models[1].resources" in outcome.output
    )
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))


def test_an_unreachable_ray_address_is_a_message_not_a_hang(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    code = (
        "import sys; from sbabench.cli import main; "
        f"sys.argv = ['sbabench', 'run', {str(suite)!r}, '--executor', 'ray', "
        f"'--ray-address', '127.0.0.1:9', '--results', {str(tmp_path / 'r')!r}]; main()"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr and time.monotonic() - start < 60
    assert not (tmp_path / "r" / "tiny").exists()


def test_without_ray_installed_the_message_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    outcome = CliRunner().invoke(
        main, ["run", str(suite), "--executor", "ray", "--results", str(tmp_path)]
    )
    assert outcome.exit_code == 2 and 'pip install "sbabench[ray]"' in outcome.output


@pytest.mark.slow
def test_ctrl_c_stops_the_ray_run_and_leaves_a_folder_that_resumes(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    results = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbabench", "run", str(suite), "--executor", "ray",
         "--results", str(results)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(results.rglob("LeeDocSTS.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    survived = {r.label for r in load_results(results)}
    assert 1 <= len(survived) < 3
    resumed = run_suite(parse_suite(SUITE), results)
    assert not set(resumed.computed) & survived and resumed.exit_code == 0
    assert len(resumed.computed) + len(survived) == 3


def test_the_library_offers_the_ray_executor() -> None:
    import sbabench

    assert sbabench.run_suite_ray is run_suite_ray
