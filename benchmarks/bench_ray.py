"""The Ray executor's overhead over the local executor on one machine: the whole `sbabench run`
process (Ray's start-up and shutdown included) for a suite, each from a fresh results folder and
a machine cache holding only the router centroids (warmed once before both), one run each.

    python benchmarks/bench_ray.py [--suite suites/quickstart.yaml]

Prints both wall times, their ratio, and how far the two runs' scores are apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sbabench.run.results import load_results

SBABENCH = [sys.executable, "-m", "sbabench"]


def _run(suite: Path, work: Path, name: str, warm_cache: Path, *extra: str) -> float:
    cache = work / f"cache-{name}"
    shutil.copytree(warm_cache, cache)
    env = {**os.environ, "SBABENCH_CACHE": str(cache)}
    command = [*SBABENCH, "run", str(suite), "--results", str(work / name), *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("suites/quickstart.yaml"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    warm = work / "warm-cache"
    print(f"warming the machine cache (router centroids) with {args.suite} ...")
    subprocess.run(
        [*SBABENCH, "run", str(args.suite), "--results", str(work / "warm")],
        env={**os.environ, "SBABENCH_CACHE": str(warm)},
        check=True,
        capture_output=True,
    )
    shutil.rmtree(warm / "ray-worker", ignore_errors=True)
    local = _run(args.suite, work, "local", warm)
    on_ray = _run(args.suite, work, "ray", warm, "--executor", "ray")
    print(f"local executor: {local:.1f} s wall (whole process)")
    print(f"ray executor:   {on_ray:.1f} s wall (whole process, local Ray instance started)")
    print(f"ratio ray/local: {on_ray / local:.2f}x")
    scores = {}
    for name in ("local", "ray"):
        scores[name] = {r.label: r for r in load_results(work / name)}
    assert scores["local"].keys() == scores["ray"].keys(), "the two runs have different units"
    main_gap = max(
        abs(scores["local"][k].main_score - scores["ray"][k].main_score) for k in scores["local"]
    )
    metric_gap = max(
        abs(float(a) - float(b))
        for k in scores["local"]
        for subset, values in scores["local"][k].scores.items()
        for metric, a in values.items()
        if isinstance(a, int | float)
        and isinstance(b := scores["ray"][k].scores[subset][metric], int | float)
    )
    print(f"{len(scores['local'])} units; largest main-score gap {main_gap:.2e}, "
          f"largest gap of any mteb metric {metric_gap:.2e}")  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
