"""Run a suite on Ray: the local executor's plan, units computed by Ray actors, results written
by the driver alone.

Every model gets `resources.workers` actors (see `sbabench.run.ray_workers`), each with the
resources its suite entry asks for (`resources: {cpus, gpus}`) and each loading the model once.
The driver gives a model's units, in suite order, to whichever of its actors is free; an actor
computes each with a `UnitComputer` and returns the result (or the failure) to the driver, which
writes the same atomic files the local executor writes. Workers keep their embedding cache and
trained checkpoints in their own node's machine cache (SQLite and atomic files: workers on one
node share them safely): no shared file system.

Faults: an actor whose process dies is restarted by Ray, up to `retries` times, and its unit is
retried on any actor of the model, up to `retries` times; a unit that fails for a user reason (a
bad file, an operator error) is recorded as failed, as locally; a model that cannot be loaded
stops the run (exit 2); Ctrl-C kills the actors and leaves a folder that resumes (only the driver
writes, atomically).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.errors import ModelSpecError, SbabenchError, StorageError
from sbabench.run import import_path
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
from sbabench.run.ray_workers import Cluster, by_model, worker_counts
from sbabench.run.storage import check_writable, stop_when_disk_full
from sbabench.suite import Suite

if TYPE_CHECKING:
    from sbabench.run.results import UnitResult

DEFAULT_RETRIES = 3
"""How many times a unit whose worker died is retried, and a dead worker restarted."""


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
        import_path.adopt_driver_path()  # before anything imports a user operator
        import torch

        from sbabench.models.machine_cache import MachineCache

        torch.manual_seed(suite.settings.seed)
        node = MachineCache().workspace("ray-worker")
        store = open_store(suite, node / "embeddings.sqlite")
        self.computer = UnitComputer(suite, node, store)

    def compute(self, planned: PlannedUnit) -> Reply:
        """One unit's result, or why it failed."""
        import torch

        from sbabench.run.quiet import quiet_libraries

        # As many torch threads as the model's worker has CPUs (Ray sets OMP_NUM_THREADS only
        # from whole CPUs, and other libraries may have changed it since).
        torch.set_num_threads(max(1, int(planned.unit.model.resources.cpus)))
        self.computer.release_other_operators(planned)
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
    # the driver's import path, its current folder last (see `sbabench.run.import_path`)
    env_vars = {import_path.ENV: import_path.driver_path()}
    pythonpath = import_path.worker_pythonpath(os.environ.get("PYTHONPATH"))
    if pythonpath:
        env_vars["PYTHONPATH"] = pythonpath
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


_ASK_AGAIN_S = 0.5
"""How long the driver waits before asking a restarting worker again whether it runs."""


def _actor_class(ray: Any, retries: int) -> Any:
    # Ray restarts a dead worker, but the driver retries its unit (max_task_retries=0): that way
    # the unit may go to whichever worker of the model is free, and its tries are counted once
    return ray.remote(max_restarts=retries, max_task_retries=0)(UnitWorker)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _raised(exc: Exception) -> Failure:
    """A unit's failure from a Ray error that is not a death: the worker's own exception, if any
    (a `RayTaskError`'s `cause`), with Ray's text (and the remote traceback) kept."""
    cause = getattr(exc, "cause", None)
    message = Failure.of(cause).message if isinstance(cause, Exception) else _first_line(exc)
    return Failure(message, f"{type(exc).__name__}: {exc}")


def _cluster(ray: Any) -> Cluster:
    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    return Cluster(nodes, dict(ray.available_resources()))


@dataclass
class _Pool:
    """One model's workers and its units not yet given to one."""

    todo: deque[PlannedUnit]
    actors: list[Any]
    idle: list[tuple[Any, int]] = field(default_factory=list)
    """Started workers with nothing to do, with their process ids."""
    busy: int = 0
    """Units in flight."""
    live: int = 0
    """Workers not known to be gone for good."""
    gone: str = ""
    """Why the last worker gone for good went (the first line of Ray's error)."""


@dataclass(frozen=True)
class _Job:
    """What the driver waits for: a worker to start (`planned` None) or a unit."""

    model_id: str
    actor: Any
    pid: int = 0
    planned: PlannedUnit | None = None


class _Driver:
    """Gives each model's units, one at a time, to whichever of its workers is free, and records
    what comes back. A worker gets units only once it has started (a worker still waiting for
    resources holds none back); a unit whose worker died is retried on any worker of its model."""

    def __init__(
        self, ray: Any, suite: Suite, summary: RunSummary, progress: ProgressCallback, retries: int
    ) -> None:
        self.ray, self.suite, self.summary, self.progress = ray, suite, summary, progress
        self.retries = retries
        self.pools: dict[str, _Pool] = {}
        self.pending: dict[Any, _Job] = {}
        self.tries: Counter[str] = Counter()
        self.later: list[tuple[float, str, Any]] = []
        """Workers to ask again whether they run (when, model, actor): they were restarting."""

    def submit(self, todo: list[PlannedUnit], workers: dict[str, int]) -> None:
        """Start `workers[model_id]` workers per model; each takes a unit once it is up."""
        actor_class = _actor_class(self.ray, self.retries)
        for model_id, units in by_model(todo).items():
            need = units[0].unit.model.resources
            options = actor_class.options(num_cpus=need.cpus, num_gpus=need.gpus)
            actors = [options.remote(self.suite) for _ in range(workers[model_id])]
            self.pools[model_id] = _Pool(deque(units), actors, live=len(actors))
            for actor in actors:
                self._probe(model_id, actor)

    def _probe(self, model_id: str, actor: Any) -> None:
        # answers once the worker runs (again, after a restart); fails if it is gone for good
        self.pending[actor.pid.remote()] = _Job(model_id, actor)

    def collect(self) -> None:
        """Record every unit as it comes back, giving each free worker the next unit."""
        while self.pending or self.later:
            ref = self._next()
            if ref is None:
                continue
            job = self.pending.pop(ref)
            pool = self.pools[job.model_id]
            if job.planned is None:
                self._started(ref, job, pool)
            else:
                self._returned(ref, job, job.planned, pool)
            self._dispatch(job.model_id, pool)

    def _next(self) -> Any | None:
        """The next answer to come back (None: none before a worker is due to be asked again)."""
        now = time.monotonic()
        for _, model_id, actor in [item for item in self.later if item[0] <= now]:
            self._probe(model_id, actor)
        self.later = [item for item in self.later if item[0] > now]
        due = min((item[0] for item in self.later), default=None)
        timeout = None if due is None else max(0.0, due - now)
        if not self.pending:
            time.sleep(timeout or 0.0)
            return None
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def _started(self, ref: Any, job: _Job, pool: _Pool) -> None:
        from ray.exceptions import ActorUnavailableError, RayError

        try:
            pool.idle.append((job.actor, self.ray.get(ref)))
        except ActorUnavailableError:  # restarting: ask again in a moment
            self.later.append((time.monotonic() + _ASK_AGAIN_S, job.model_id, job.actor))
        except RayError as exc:  # restarted more often than it may be, or it cannot start
            pool.live -= 1
            pool.gone = _first_line(exc)

    def _returned(self, ref: Any, job: _Job, planned: PlannedUnit, pool: _Pool) -> None:
        from ray.exceptions import RayActorError, RayError

        pool.busy -= 1
        try:
            reply: Reply = self.ray.get(ref)
        except RayActorError as exc:  # the worker died: Ray restarts it if it may
            self._probe(job.model_id, job.actor)
            self._lost(planned, pool, exc)
            return
        except RayError as exc:  # raised past the worker's own handling: the worker lives on
            reply = Reply(None, _raised(exc))
        pool.idle.append((job.actor, job.pid))
        if reply.bad_model and reply.failure is not None:
            raise ModelSpecError(reply.failure.message)
        if reply.result is not None:
            record_result(self.summary, planned, reply.result, self.progress)
            self.summary.models_loaded += int(reply.loaded_model)
        elif reply.failure is not None:
            record_failure(self.summary, planned, reply.failure, self.progress)

    def _lost(self, planned: PlannedUnit, pool: _Pool, exc: Exception) -> None:
        """A unit whose worker died: retried first (on any worker), or failed past `retries`."""
        self.tries[planned.label] += 1
        if self.tries[planned.label] <= self.retries:
            pool.todo.appendleft(planned)
            return
        failure = Failure(
            f"the Ray worker computing it failed {self.tries[planned.label]} times: "
            f"{_first_line(exc)}",
            f"{type(exc).__name__}: {exc}",
        )
        record_failure(self.summary, planned, failure, self.progress)

    def _dispatch(self, model_id: str, pool: _Pool) -> None:
        """Give the model's free workers its next units; let its workers go once it is done."""
        while pool.todo and pool.idle:
            actor, pid = pool.idle.pop()
            planned = pool.todo.popleft()
            self.pending[actor.compute.remote(planned)] = _Job(model_id, actor, pid, planned)
            pool.busy += 1
            self.progress(Event(EventKind.UNIT_STARTED, planned.label, message=f"Ray pid {pid}"))
        if pool.todo and not pool.live:
            self._orphaned(model_id, pool)
        if not pool.todo and not pool.busy:
            self._release(model_id, pool)

    def _orphaned(self, model_id: str, pool: _Pool) -> None:
        message = (
            f"no Ray worker of {model_id} is left to compute it (each died more often than it "
            f"may be restarted, {self.retries} times, or could not start): {pool.gone}"
        )
        failure = Failure(message, message)
        while pool.todo:
            record_failure(self.summary, pool.todo.popleft(), failure, self.progress)

    def _release(self, model_id: str, pool: _Pool) -> None:
        """Kill a finished model's workers, so their resources go to the next model's."""
        for ref in [r for r, job in self.pending.items() if job.model_id == model_id]:
            del self.pending[ref]  # workers never started: their start is moot
        self.later = [item for item in self.later if item[1] != model_id]
        for actor in pool.actors:
            self.ray.kill(actor, no_restart=True)
        pool.actors, pool.idle, pool.live = [], [], 0

    def stop(self) -> None:
        """Kill every worker (their work in flight is lost; nothing was written for it)."""
        for pool in self.pools.values():
            for actor in pool.actors:
                self.ray.kill(actor, no_restart=True)
        self.pending.clear()
        self.later.clear()


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
        workers = worker_counts(suite, plan.todo, _cluster(ray), progress)
        driver = _Driver(ray, suite, summary, progress, retries)
        try:
            driver.submit(plan.todo, workers)
            driver.collect()
        finally:
            driver.stop()
    return in_suite_order(suite, summary)
