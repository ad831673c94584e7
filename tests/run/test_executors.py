"""Choosing the executor: the local one or Ray's, with Ray's options only where they apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sbabench.errors import SbabenchError
from sbabench.run.execute import RunSummary
from sbabench.run.executors import Executor, run_with
from sbabench.run.ray_executor import DEFAULT_RETRIES
from sbabench.suite import parse_suite
from tests import factories


def _recorder(calls: list[tuple[Any, ...]], name: str) -> Any:
    def record(*args: Any, **kwargs: Any) -> RunSummary:
        calls.append((name, args, kwargs))
        return RunSummary(computed=[name])

    return record


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr("sbabench.run.executors.run_suite", _recorder(seen, "local"))
    monkeypatch.setattr("sbabench.run.ray_executor.run_suite_ray", _recorder(seen, "ray"))
    return seen


def test_each_executor_gets_the_suite_and_its_own_options(
    calls: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    suite = parse_suite(factories.TINY_SUITE)
    shared = {"force": True, "only": "*/sba/*", "shard": (1, 2), "progress": print}
    assert run_with("local", suite, tmp_path, **shared).computed == ["local"]
    assert run_with(Executor.RAY, suite, tmp_path, **shared, ray_address="auto").computed == ["ray"]
    run_with("ray", suite, tmp_path, ray_retries=0)
    assert calls[0] == ("local", (suite, tmp_path), shared)
    assert calls[1] == (
        "ray",
        (suite, tmp_path),
        {**shared, "address": "auto", "retries": DEFAULT_RETRIES},
    )
    assert calls[2][2]["retries"] == 0 and calls[2][2]["address"] is None


def test_a_ray_address_with_the_local_executor_is_refused(
    calls: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    suite = parse_suite(factories.TINY_SUITE)
    with pytest.raises(SbabenchError, match="needs the ray executor"):
        run_with("local", suite, tmp_path, ray_address="auto")
    with pytest.raises(ValueError, match="spark"):
        run_with("spark", suite, tmp_path)
    assert calls == []
