"""A scripted stand-in for the part of Ray the Ray executor's driver uses: workers whose starts
and deaths a test decides, so that which worker gets which unit is deterministic."""

from __future__ import annotations

from typing import Any

from sbabench.run.compute import Failure
from sbabench.run.plan import PlannedUnit
from sbabench.run.ray_executor import Reply


class Ref:
    """An answer: a value, or an exception `get` raises; never ready if `ready` is False."""

    def __init__(self, outcome: object, ready: bool = True) -> None:
        self.outcome, self.ready = outcome, ready


class _Method:
    def __init__(self, call: Any) -> None:
        self.remote = call


class Worker:
    """A worker whose probes answer `starts` in turn (a pid, or an exception; once they run out
    it never starts again) and whose units die with the exceptions in `deaths` first."""

    def __init__(self, starts: list[object], deaths: list[Exception] | None = None) -> None:
        self.starts, self.deaths = list(starts), list(deaths or [])
        self.running: object = None
        self.killed = False
        self.pid, self.compute = _Method(self._probe), _Method(self._compute)

    def _probe(self) -> Ref:
        if not self.starts:
            return Ref(None, ready=False)
        self.running = self.starts.pop(0)
        return Ref(self.running)

    def _compute(self, planned: PlannedUnit) -> Ref:
        if self.deaths:
            return Ref(self.deaths.pop(0))
        done = f"computed by {self.running}"  # a failure reply: no result file to make up
        return Ref(Reply(None, Failure(done, done)))


class FakeRay:
    """Hands out `workers` as the driver creates actors; answers in submission order."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = list(workers)

    def remote(self, *args: Any, **options: Any) -> Any:
        if options:  # `ray.remote(max_restarts=...)(UnitWorker)`
            return lambda _cls: self
        return self.workers.pop(0)  # `.options(...).remote(suite)`

    def options(self, **_: Any) -> FakeRay:
        return self

    def wait(
        self, refs: list[Ref], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Ref], list[Ref]]:
        ready = [r for r in refs if r.ready][:num_returns]
        if not ready and timeout is None:
            raise AssertionError("the driver would wait forever")
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: Ref) -> object:
        if isinstance(ref.outcome, BaseException):
            raise ref.outcome
        return ref.outcome

    def kill(self, actor: Worker, no_restart: bool = True) -> None:
        actor.killed = True
