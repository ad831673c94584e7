"""The Ray executor on one machine: its overhead over the local executor, or how the wall time
of one model's units goes with the number of its Ray workers (`resources.workers`). Each run is
a whole `sbabench run` process (Ray's start-up and shutdown included) from a fresh results
folder and a machine cache holding only the router centroids (warmed once before all), one run
each.

    python benchmarks/bench_ray.py [--suite suites/quickstart.yaml]
    python benchmarks/bench_ray.py --workers 1 2 [--model minilm-moe]

Prints the wall times, their ratios, and how far the runs' scores are apart.
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

import yaml

from sbabench.run.results import UnitResult, load_results

SBABENCH = [sys.executable, "-m", "sbabench"]


def _run(suite: Path, work: Path, name: str, warm_cache: Path, *extra: str) -> float:
    cache = work / f"cache-{name}"
    shutil.copytree(warm_cache, cache)
    env = {**os.environ, "SBABENCH_CACHE": str(cache)}
    command = [*SBABENCH, "run", str(suite), "--results", str(work / name), *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _warm(suite: Path, work: Path) -> Path:
    """A machine cache holding the suite's router centroids (and no worker's embeddings)."""
    warm = work / "warm-cache"
    print(f"warming the machine cache (router centroids) with {suite} ...")
    subprocess.run(
        [*SBABENCH, "run", str(suite), "--results", str(work / "warm")],
        env={**os.environ, "SBABENCH_CACHE": str(warm)},
        check=True,
        capture_output=True,
    )
    shutil.rmtree(warm / "ray-worker", ignore_errors=True)
    return warm


def _gaps(a: dict[str, UnitResult], b: dict[str, UnitResult]) -> str:
    """The largest main-score gap and the largest gap of any mteb metric of two runs."""
    assert a.keys() == b.keys(), "the two runs have different units"
    main_gap = max(abs(a[k].main_score - b[k].main_score) for k in a)
    metric_gap = max(
        abs(float(x) - float(y))
        for k in a
        for subset, values in a[k].scores.items()
        for metric, x in values.items()
        if isinstance(x, int | float) and isinstance(y := b[k].scores[subset][metric], int | float)
    )
    return (f"{len(a)} units; largest main-score gap {main_gap:.2e}, "
            f"largest gap of any mteb metric {metric_gap:.2e}")  # fmt: skip


def _with_workers(suite: Path, work: Path, workers: int, model: str | None) -> Path:
    """The suite with every model's (or only `model`, alone) `resources.workers` set."""
    data = yaml.safe_load(suite.read_text())
    if model is not None:
        data["models"] = [m for m in data["models"] if m["name"] == model]
        assert data["models"], f"no model {model!r} in {suite}"
    for entry in data["models"]:
        entry["resources"] = {**entry.get("resources", {}), "workers": workers}
    variant = work / f"suite-{workers}-workers.yaml"
    variant.write_text(yaml.safe_dump(data, sort_keys=False))
    return variant


def _overhead(suite: Path, work: Path) -> None:
    warm = _warm(suite, work)
    local = _run(suite, work, "local", warm)
    on_ray = _run(suite, work, "ray", warm, "--executor", "ray")
    print(f"local executor: {local:.1f} s wall (whole process)")
    print(f"ray executor:   {on_ray:.1f} s wall (whole process, local Ray instance started)")
    print(f"ratio ray/local: {on_ray / local:.2f}x")
    runs = {name: {r.label: r for r in load_results(work / name)} for name in ("local", "ray")}
    print(_gaps(runs["local"], runs["ray"]))


def _scaling(suite: Path, work: Path, counts: list[int], model: str | None) -> None:
    variants = {n: _with_workers(suite, work, n, model) for n in counts}
    warm = _warm(variants[counts[0]], work)
    walls = {n: _run(variants[n], work, f"ray-{n}", warm, "--executor", "ray") for n in counts}
    first = counts[0]
    for n, wall in walls.items():
        print(f"workers {n}: {wall:.1f} s wall (whole process, local Ray instance started), "
              f"{walls[first] / wall:.2f}x the speed of {first}")  # fmt: skip
    runs = {n: {r.label: r for r in load_results(work / f"ray-{n}")} for n in counts}
    for n in counts[1:]:
        print(f"workers {n} vs {first}: {_gaps(runs[first], runs[n])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("suites/quickstart.yaml"))
    parser.add_argument(
        "--workers", type=int, nargs="+", help="compare Ray runs with these worker counts"
    )
    parser.add_argument("--model", help="with --workers: keep only this model of the suite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.workers:
        _scaling(args.suite, work, args.workers, args.model)
    else:
        _overhead(args.suite, work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
