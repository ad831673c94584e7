"""Which executor computes a suite's units: this process, or Ray actors. Both share one plan,
one results layout and one summary; `run_suite` and `run_suite_ray` are the executors."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TypedDict, Unpack

from sbabench.errors import SbabenchError
from sbabench.run.execute import RunSummary, run_suite
from sbabench.run.progress import ProgressCallback
from sbabench.suite import Suite


class Executor(StrEnum):
    """Where units are computed."""

    LOCAL = "local"
    """This process (`run_suite`)."""
    RAY = "ray"
    """Ray actors, results written by this process (`run_suite_ray`; needs `sbabench[ray]`)."""


class RunOptions(TypedDict, total=False):
    """What every executor takes besides the suite and the results folder (see `run_suite`)."""

    force: bool
    only: str | None
    shard: tuple[int, int] | None
    progress: ProgressCallback


def run_with(
    executor: Executor | str,
    suite: Suite,
    results_dir: str | Path = "results",
    *,
    ray_address: str | None = None,
    ray_retries: int | None = None,
    **options: Unpack[RunOptions],
) -> RunSummary:
    """Run `suite` with `executor`; `ray_address` and `ray_retries` are Ray's (an address given
    to the local executor is an error rather than ignored)."""
    if Executor(executor) is Executor.LOCAL:
        if ray_address is not None:
            raise SbabenchError(
                f"a Ray address ({ray_address!r}) needs the ray executor",
                fix="pass executor='ray', or no ray_address",
            )
        return run_suite(suite, results_dir, **options)
    from sbabench.run.ray_executor import DEFAULT_RETRIES, run_suite_ray

    retries = DEFAULT_RETRIES if ray_retries is None else ray_retries
    return run_suite_ray(suite, results_dir, address=ray_address, retries=retries, **options)
