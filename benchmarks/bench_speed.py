"""Where users wait: `sbabench compare`, a warm re-run, the upcycled model's router build, and
the very first run on an empty machine cache. Each figure is taken in this one run, whole
process where a user waits for the whole process.

    python benchmarks/bench_speed.py            # about 5 minutes on 2 cores
    python benchmarks/bench_speed.py compare    # figure 1 alone, on results/baseline
    python benchmarks/bench_speed.py warm [RESULTS]  # figure 2 alone, on a finished quickstart
    python benchmarks/bench_speed.py replicates [RESULTS]  # compare over replicates (below)

1. `sbabench compare` on the quickstart's results, three ways, same output checked: as before
   issue 16 (scikit-learn per resample, `*_sklearn` in sbabench/tasks/item_statistics.py, and
   scipy.stats for the null distributions), vectorised statistics with scipy.stats, and now
   (vectorised, `sbabench/analysis/null_distributions.py`: no scipy.stats import).
2. a warm re-run of the finished quickstart (nothing to compute), median of 5, beside the CLI's
   own start (`sbabench --version`) and the same re-run with an empty machine cache each time
   (every source file parsed to key the units: the re-run before the machine cache kept the
   parsed code).
3. building the quickstart's upcycled MoE: empty machine cache with the router build before
   `router_tokens` (8192 tokens, 3 k-means inits) and now (the default), then warm.
4. the quickstart cold into a new results folder: empty machine cache, then warm.

`replicates`: `sbabench compare` of a finished `suites/quickstart-replicates.yaml` (5 replicates
of the 6 MoE units and the 3 dense units: 33 result files, the two-level test) beside `compare`
of the finished quickstart (9 files, one replicate), medians of 5, round-robin.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "suites" / "quickstart.yaml"
# scipy.stats for the null distributions, as compare computed them before issue 16
_SCIPY = (
    "import sys\n"
    "import numpy as np\n"
    "from scipy import stats as sps\n"
    "from sbabench.analysis import null_distributions as null\n"
    "null.chi2_sf = lambda x, df: float(sps.chi2.sf(x, df))\n"
    "null.normal_two_sided_p = lambda z: float(2 * sps.norm.sf(abs(z)))\n"
    "null.range_ppf = lambda p, k: float(sps.studentized_range.ppf(p, k, np.inf))\n"
)
# ... and scikit-learn called once per resample
_SKLEARN = (
    "from sbabench.tasks import item_statistics as s\n"
    "s.row_v_measure = s.row_v_measure_sklearn\n"
    "s.row_average_precision = s.row_average_precision_sklearn\n"
)
_MAIN = "from sbabench.cli import main\nsys.argv = ['sbabench', *sys.argv[1:]]\nmain()\n"


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def _sbabench(*args: str) -> list[str]:
    return [sys.executable, "-m", "sbabench", *args]


def _compare(results: Path, env: dict[str, str], repeats: int = 3) -> None:
    args = ["compare", str(results / "quickstart"), "--format", "json"]
    ways = {
        "before": [sys.executable, "-c", _SCIPY + _SKLEARN + _MAIN, *args],
        "scipy": [sys.executable, "-c", _SCIPY + _MAIN, *args],
        "now": _sbabench(*args),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, list[dict[str, object]]] = {}
    for _ in range(repeats):  # round robin: drift hits all three alike
        for name, command in ways.items():
            seconds, out = _timed(command, env)
            times[name].append(seconds)
            outputs[name] = json.loads(out)
    worst = max(
        abs(a[k] - b[k])
        for other in ("before", "scipy")
        for a, b in zip(outputs["now"], outputs[other], strict=True)
        for k in ("item_delta", "ci_low", "ci_high", "p_value", "p_holm", "steiger_p")
        if isinstance(a[k], float) and isinstance(b[k], float)
    )
    before, scipy, now = (statistics.median(times[k]) for k in ways)
    print(
        f"1. compare, whole process, medians of {repeats}: before (scikit-learn per resample, "
        f"scipy.stats) {before:.2f} s, vectorised with scipy.stats {scipy:.2f} s, now "
        f"{now:.2f} s ({', '.join(f'{t:.2f}' for t in times['now'])}) -> {before / now:.1f}x "
        f"faster than before (largest difference in CI/p: {worst:.1e})"
    )


def _warm(results: Path, env: dict[str, str], repeats: int = 5) -> None:
    run = _sbabench("run", str(SUITE), "--results", str(results))
    _timed(run, env)  # the machine cache's parsed code written, if it was not
    times: dict[str, list[float]] = {"start": [], "warm": [], "parsing": []}
    with tempfile.TemporaryDirectory() as empty:
        for repeat in range(repeats):  # round-robin: a load swing hits all three alike
            times["start"].append(_timed(_sbabench("--version"), env)[0])
            times["warm"].append(_timed(run, env)[0])
            fresh = {**env, "SBABENCH_CACHE": f"{empty}/{repeat}"}
            times["parsing"].append(_timed(run, fresh)[0])
    start, warm, parsing = (statistics.median(times[k]) for k in ("start", "warm", "parsing"))
    print(
        f"2. warm re-run, whole process, medians of {repeats}: {warm:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in times['warm'])}); with an empty machine cache "
        f"(every module parsed) {parsing:.2f} s; `sbabench --version` {start:.2f} s"
    )


def _replicates(results: Path, env: dict[str, str], repeats: int = 5) -> None:
    folders = {"replicates": results / "quickstart-replicates", "one": results / "quickstart"}
    times: dict[str, list[float]] = {name: [] for name in folders}
    for _ in range(repeats):
        for name, folder in folders.items():
            times[name].append(_timed(_sbabench("compare", str(folder)), env)[0])
    many, one = (statistics.median(times[k]) for k in ("replicates", "one"))
    files = len(list(folders["replicates"].rglob("*.json")))
    print(
        f"compare over replicates ({files} JSON files), whole process, median of {repeats}: "
        f"{many:.2f} s ({', '.join(f'{t:.2f}' for t in times['replicates'])}); the quickstart "
        f"(one replicate, 9 units) {one:.2f} s"
    )


def _router(cache: Path, repeats: int = 3) -> None:
    from sbabench.models.encoder import build_encoder
    from sbabench.models.machine_cache import MachineCache
    from sbabench.models.spec import UpcycleModel
    from sbabench.suite import load_suite

    spec = next(m for m in load_suite(SUITE).models if isinstance(m, UpcycleModel))
    before = spec.model_copy(update={"router_tokens": 8192, "router_inits": 3})
    build_encoder(before, "cpu")  # imports (sklearn too) and the model files warm, for all alike
    times: dict[str, list[float]] = {"before": [], "now": [], "warm": []}
    for repeat in range(repeats):  # round robin: drift hits all three alike
        for name, model in (("before", before), ("now", spec), ("warm", spec)):
            folder = cache / f"{'now' if name == 'warm' else name}-{repeat}"  # warm: now's entry
            start = time.perf_counter()
            build_encoder(model, "cpu", cache=MachineCache(folder))
            times[name].append(time.perf_counter() - start)
    old, new, warm = (statistics.median(times[k]) for k in ("before", "now", "warm"))
    print(
        f"3. upcycled MoE build, in-process (imports and model files warm), medians of {repeats}: "
        f"empty machine cache, router as before (8192 tokens, 3 k-means inits) {old:.2f} s, "
        f"now ({spec.router_tokens} tokens, {spec.router_inits} init) {new:.2f} s; warm machine "
        f"cache {warm:.2f} s. Router build alone (empty - warm): before {old - warm:.2f} s, now "
        f"{new - warm:.2f} s -> {(old - warm) / (new - warm):.1f}x faster"
    )


def main() -> None:
    """Run the four measurements (or, with the argument `compare`, the first) and print them."""
    with tempfile.TemporaryDirectory() as tmp:
        machine = Path(tmp) / "machine"
        env = {**os.environ, "SBABENCH_CACHE": str(machine), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        if sys.argv[1:] == ["compare"]:
            _compare(ROOT / "results" / "baseline", env, repeats=5)
            return
        if sys.argv[1:2] == ["replicates"]:
            results = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "results"
            _replicates(results, env)
            return
        if sys.argv[1:2] == ["warm"]:
            results = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "results"
            _warm(results, env)
            return
        first, _ = _timed(_sbabench("run", str(SUITE), "--results", f"{tmp}/r1"), env)
        again, _ = _timed(_sbabench("run", str(SUITE), "--results", f"{tmp}/r2"), env)
        _compare(Path(tmp) / "r1", env)
        _warm(Path(tmp) / "r1", env)
        os.environ["SBABENCH_CACHE"] = str(Path(tmp) / "router-only")
        _router(Path(tmp) / "router-only")
        print(
            f"4. quickstart cold into a new results folder: empty machine cache {first:.1f} s, "
            f"warm machine cache {again:.1f} s"
        )


if __name__ == "__main__":
    main()
