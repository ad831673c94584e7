"""How many Ray workers each model gets: `resources.workers` read from a suite, capped by units
and by the cluster, `auto` from its free resources; never part of a unit's key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.models.spec import Resources
from sbabench.run.plan import PlannedUnit, plan_suite
from sbabench.run.progress import Event
from sbabench.run.ray_workers import Cluster, fitting, worker_counts
from sbabench.suite import Suite, parse_suite
from tests.factories import TINY_MOE_SUITE, TINY_SUITE, tiny_moe_with_workers


def _planned(workers: str, units: int) -> tuple[Suite, list[PlannedUnit]]:
    """The tiny MoE with `workers` and three operators, and the first `units` of its units."""
    text = tiny_moe_with_workers(workers).replace("[linear, sba]", "[linear, sba, radius-only]")
    suite = parse_suite(text)
    return suite, plan_suite(suite, Path("unused")).todo[:units]


@pytest.mark.parametrize(
    ("workers", "units", "free_cpus", "expected"),
    [
        ("auto", 3, 2.0, 2),  # what the free CPUs hold
        ("auto", 1, 8.0, 1),  # at most one per unit
        ("auto", 3, 0.5, 1),  # at least one, which waits for room
        ("2", 1, 8.0, 1),  # a worker per unit, no more
        ("3", 3, 0.5, 3),  # a number does not look at what is free now: Ray queues them
    ],
)
def test_worker_counts(workers: str, units: int, free_cpus: float, expected: int) -> None:
    suite, planned = _planned(workers, units)
    notes: list[Event] = []
    cluster = Cluster([{"CPU": 8.0}], {"CPU": free_cpus})
    assert worker_counts(suite, planned, cluster, notes.append) == {"moe": expected}
    assert cluster.free["CPU"] == free_cpus - expected  # claimed, for the models after it
    said = [n.message for n in notes]
    assert said == ([f"suite tiny: models[0].resources.workers is auto: {expected} for moe"]
                    if workers == "auto" else [])  # fmt: skip


def test_a_later_auto_model_counts_what_the_earlier_ones_claimed() -> None:
    text = TINY_SUITE.replace("[LeeDocSTS]", "[LeeDocSTS, WordSim353]")
    text = text.replace("random\n", "random\n    resources: {workers: 2}\n")
    dense = "    source: dense\n"
    suite = parse_suite(text.replace(dense, dense + "    resources: {workers: auto}\n"))
    planned = plan_suite(suite, Path("unused")).todo  # the MoE's 4 units, then dense's 2
    roomy = Cluster([{"CPU": 8.0}], {"CPU": 5.0})
    assert worker_counts(suite, planned, roomy, lambda _: None) == {"moe": 2, "dense": 2}
    crowded = Cluster([{"CPU": 8.0}], {"CPU": 3.0})
    assert worker_counts(suite, planned, crowded, lambda _: None) == {"moe": 2, "dense": 1}
    assert crowded.free["CPU"] == 0.0


def test_more_workers_than_the_cluster_holds_start_what_it_holds_with_a_located_note() -> None:
    suite, planned = _planned("3", 3)
    notes: list[Event] = []
    cluster = Cluster([{"CPU": 1.5}, {"CPU": 1.0}], {"CPU": 2.5})
    assert worker_counts(suite, planned, cluster, notes.append) == {"moe": 2}  # one per node
    [note] = notes
    assert note.message.startswith("suite tiny: models[0].resources.workers: 3 workers of 1 CPUs")
    assert "holds 2: starting 2" in note.message


def test_fitting_counts_whole_workers_of_cpus_and_gpus() -> None:
    assert fitting(Resources(cpus=1, gpus=0.1), {"CPU": 8.0, "GPU": 0.3}) == 3
    assert fitting(Resources(cpus=2, gpus=1), {"CPU": 16.0, "GPU": 8.0}) == 8
    assert fitting(Resources(cpus=2), {"CPU": 7.0}) == 3
    assert fitting(Resources(gpus=1), {"CPU": 8.0}) == 0
    assert fitting(Resources(), {"CPU": -1.0}) == 0


@pytest.mark.parametrize("value", ["0", "-1", "many", "2.5", "true", "2000", "'3'"])
def test_a_bad_workers_value_is_refused_with_its_location(value: str, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(tiny_moe_with_workers(value))
    outcome = CliRunner().invoke(main, ["validate", str(suite)])
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output
    assert f"{suite}:8:35: models[0].resources.workers: workers is how many" in outcome.output
    assert "a whole number from 1 to 1024, or auto" in outcome.output


@pytest.mark.parametrize("value", ["1", "1024", "auto"])
def test_a_good_workers_value_is_read(value: str) -> None:
    workers = parse_suite(tiny_moe_with_workers(value)).models[0].resources.workers
    assert workers == (value if value == "auto" else int(value))


def test_workers_is_in_no_key_so_results_are_reused(tmp_path: Path) -> None:
    plain = plan_suite(parse_suite(TINY_MOE_SUITE), tmp_path).todo
    spread = plan_suite(parse_suite(tiny_moe_with_workers("auto")), tmp_path).todo
    assert [p.label for p in plain] == [p.label for p in spread]
    assert [p.key for p in plain] == [p.key for p in spread]
