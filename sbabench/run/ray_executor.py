"""Run a suite on Ray: the local executor's plan, units computed by Ray actors, results written
by the driver alone.

Every model gets one actor (so the model loads once per worker), with the resources its suite
entry asks for (`resources: {cpus, gpus}`). Its units queue on that actor in suite order; the
actor computes each with a `UnitComputer` and returns the result (or the failure) to the driver,
which writes the same atomic files the local executor writes. Workers keep their embedding
cache and trained checkpoints in their own node's machine cache: no shared file system.

Faults: an actor whose process dies is restarted by Ray and its unit retried, up to `retries`
times; a unit that fails for a user reason (a bad file, an operator error) is recorded as failed,
as locally; a model that cannot be loaded stops the run (exit 2); Ctrl-C kills the actors and
leaves a folder that resumes (only the driver writes, atomically).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.errors import ModelSpecError, SbabenchError, StorageError
from sbabench.run.compute import Failure, UnitComputer, open_store
from sbabench.run.execute import (
    RunSummary,
    in_suite_order,
    planned_run,
    record_failure,
    record_result,
)
from sbabench.run.plan import PlannedUnit
from sbabench.run.progress import Event, EventKind, ProgressCallback, ignore
from sbabench.run.storage import check_writable, stop_when_disk_full
from sbabench.suite import Suite

if TYPE_CHECKING:
    from sbabench.run.results import UnitResult

DEFAULT_RETRIES = 3
"""How many times a unit whose worker died is retried (Ray restarts the worker each time)."""


@dataclass(frozen=True)
class Reply:
    """What a worker returns for one unit."""

    result: UnitResult | None
    failure: Failure | None = None
    bad_model: bool = False
    """The model cannot be built: bad input for the whole run."""
    loaded_model: bool = False
    """This unit built the worker's model."""


class UnitWorker:
    """A Ray actor computing the units of one model (see `_actor_class`)."""

    def __init__(self, suite: Suite) -> None:
        import torch

        from sbabench.models.machine_cache import default_root

        torch.manual_seed(suite.settings.seed)
        node = default_root() / "ray-worker"
        node.mkdir(parents=True, exist_ok=True)
        store = open_store(suite, node / "embeddings.sqlite")
        self.computer = UnitComputer(suite, node, store)

    def compute(self, planned: PlannedUnit) -> Reply:
        """One unit's result, or why it failed."""
        import torch

        from sbabench.run.quiet import quiet_libraries

        # As many torch threads as the model's worker has CPUs (Ray sets OMP_NUM_THREADS only
        # from whole CPUs, and other libraries may have changed it since).
        torch.set_num_threads(max(1, int(planned.unit.model.resources.cpus)))
        session = self.computer.session(planned)
        was_loaded = session.encoder is not None
        with quiet_libraries():
            try:
                outcome = self.computer.attempt(planned)
            except ModelSpecError as exc:
                return Reply(None, Failure.of(exc), bad_model=True)
            except StorageError as exc:  # the worker's node is full: the unit fails, in one line
                return Reply(None, Failure.of(exc))
        if isinstance(outcome, Failure):
            return Reply(None, outcome)
        return Reply(outcome, loaded_model=not was_loaded and session.encoder is not None)

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SbabenchError(
            "the Ray executor needs Ray, which is not installed",
            fix='pip install "sbabench[ray]"',
        ) from None
    return ray


def _reachable(address: str) -> None:
    """Refuse an address nothing listens on (ray.init would retry it for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    fix = (
        "start a cluster (`ray start --head` prints its address), use --ray-address auto on a "
        "cluster node, or leave --ray-address out to start a local instance"
    )
    if not host or not port.isdigit():
        raise SbabenchError(
            f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto", fix=fix
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise SbabenchError(f"cannot reach a Ray cluster at {address}: {exc}", fix=fix) from None


@contextmanager
def _connected(address: str | None, runtime_env: dict[str, Any] | None) -> Iterator[Any]:
    """Ray, connected: joined at `address`, or a local instance started (and stopped after)."""
    import logging

    ray = _ray()
    if ray.is_initialized():  # the caller connected already (a notebook, a test)
        yield ray
        return
    env_vars = {
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    }
    if "SBABENCH_CACHE" in os.environ:
        env_vars["SBABENCH_CACHE"] = os.environ["SBABENCH_CACHE"]
    env = {
        **(runtime_env or {}),
        "env_vars": {**env_vars, **(runtime_env or {}).get("env_vars", {})},
    }
    if address is not None:
        _reachable(address)
    try:
        ray.init(
            address=address,
            runtime_env=env,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SbabenchError(
            f"cannot connect to Ray{f' at {address}' if address else ''}: {str(exc).splitlines()[0]}",
            fix="check --ray-address (or leave it out to start a local instance)",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_resources(ray: Any, suite: Suite, units: list[PlannedUnit]) -> None:
    """Refuse, before any work, a model whose worker no node of the cluster can host."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for model in {p.unit.model.name: p.unit.model for p in units}.values():
        need = model.resources
        if any(n.get("CPU", 0) >= need.cpus and n.get("GPU", 0) >= need.gpus for n in nodes):
            continue
        index = [m.name for m in suite.models].index(model.name)
        biggest = ", ".join(f"{n.get('CPU', 0):g} CPUs / {n.get('GPU', 0):g} GPUs" for n in nodes)
        raise SbabenchError(
            f"model {model.name!r} asks for {need.cpus:g} CPUs and {need.gpus:g} GPUs per worker; "
            f"no node of the Ray cluster has them (nodes: {biggest or 'none'})",
            where=f"suite {suite.name}: models[{index}].resources",
            fix="lower the model's `resources`, or add a node that has them",
        )


def _actor_class(ray: Any, retries: int) -> Any:
    return ray.remote(max_restarts=retries, max_task_retries=retries)(UnitWorker)


class _Driver:
    """Submits each model's units to its actor and records what comes back."""

    def __init__(
        self, ray: Any, suite: Suite, summary: RunSummary, progress: ProgressCallback, retries: int
    ) -> None:
        self.ray, self.suite, self.summary, self.progress = ray, suite, summary, progress
        self.retries = retries
        self.actors: dict[str, Any] = {}
        self.pending: dict[Any, PlannedUnit] = {}
        self.queues: dict[str, list[PlannedUnit]] = {}

    def submit(self, todo: list[PlannedUnit]) -> None:
        """One actor per model; all its units queued on it in suite order."""
        actor_class = _actor_class(self.ray, self.retries)
        for name, group in groupby(todo, key=lambda p: p.unit.model_id):
            units = list(group)
            need = units[0].unit.model.resources
            actor = actor_class.options(num_cpus=need.cpus, num_gpus=need.gpus).remote(self.suite)
            self.actors[name] = actor
            self.queues[name] = units
            for planned in units:
                self.pending[actor.compute.remote(planned)] = planned
        self._computing()

    def _computing(self) -> None:
        heads = [units[0].label for units in self.queues.values() if units]
        if heads:
            self.progress(Event(EventKind.UNIT_STARTED, ", ".join(heads)))

    def collect(self) -> None:
        """Record every unit as it comes back."""
        while self.pending:
            (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
            planned = self.pending.pop(ref)
            self.queues[planned.unit.model_id].remove(planned)
            reply = self._reply(ref, planned)
            if reply.bad_model and reply.failure is not None:
                raise ModelSpecError(reply.failure.message)
            if reply.result is not None:
                record_result(self.summary, planned, reply.result, self.progress)
                self.summary.models_loaded += int(reply.loaded_model)
            elif reply.failure is not None:
                record_failure(self.summary, planned, reply.failure, self.progress)
            self._computing()

    def _reply(self, ref: Any, planned: PlannedUnit) -> Reply:
        from ray.exceptions import RayError

        try:
            reply: Reply = self.ray.get(ref)
        except RayError as exc:  # the worker died more often than it may be restarted
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return Reply(
                None,
                Failure(
                    f"the Ray worker computing it failed {self.retries + 1} times: {first}",
                    f"{type(exc).__name__}: {exc}",
                ),
            )
        return reply

    def stop(self) -> None:
        """Kill every actor (their work in flight is lost; nothing was written for it)."""
        for actor in self.actors.values():
            self.ray.kill(actor, no_restart=True)
        self.pending.clear()


def run_suite_ray(
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    force: bool = False,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
    progress: ProgressCallback = ignore,
    address: str | None = None,
    retries: int = DEFAULT_RETRIES,
    runtime_env: dict[str, Any] | None = None,
) -> RunSummary:
    """`run_suite` on Ray: the same plan, results and summary, computed by Ray actors.

    `address`: None starts a local Ray instance (stopped afterwards), `auto` joins the running
    cluster, `HOST:PORT` or `ray://HOST:PORT` joins that one. `retries`: how often a unit whose
    worker process died is retried. `runtime_env` is passed to `ray.init`."""
    root = Path(results_dir)
    plan, summary = planned_run(suite, root, force, only, shard, progress)
    if not plan.todo:
        return summary
    with _connected(address, runtime_env) as ray, stop_when_disk_full(root):
        _check_resources(ray, suite, plan.todo)
        check_writable(root / suite.name)  # after the cluster checks: they create nothing
        progress(Event(EventKind.PLANNED, count=len(plan.todo)))
        driver = _Driver(ray, suite, summary, progress, retries)
        try:
            driver.submit(plan.todo)
            driver.collect()
        finally:
            driver.stop()
    return in_suite_order(suite, summary)
