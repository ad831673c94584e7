"""Where users wait: `sbabench compare`, a warm re-run, the upcycled model's router build, and
the very first run on an empty machine cache. Each figure is taken in this one run, whole
process where a user waits for the whole process.

    python benchmarks/bench_speed.py            # about 5 minutes on 2 cores

1. `sbabench compare` on the quickstart's results, vectorised statistics against the
   scikit-learn path (`*_sklearn` in sbabench/tasks/item_statistics.py), same output checked.
2. a warm re-run of the finished quickstart (nothing to compute).
3. building the quickstart's upcycled MoE: empty machine cache with the router build before
   `router_tokens` (8192 tokens, 3 k-means inits) and now (the default), then warm.
4. the quickstart cold into a new results folder: empty machine cache, then warm.
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
_SKLEARN = (
    "import sys\n"
    "from sbabench.tasks import item_statistics as s\n"
    "s.row_v_measure = s.row_v_measure_sklearn\n"
    "s.row_average_precision = s.row_average_precision_sklearn\n"
    "from sbabench.cli import main\n"
    "sys.argv = ['sbabench', *sys.argv[1:]]\n"
    "main()\n"
)


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def _sbabench(*args: str) -> list[str]:
    return [sys.executable, "-m", "sbabench", *args]


def _compare(results: Path, env: dict[str, str]) -> None:
    args = ["compare", str(results / "quickstart"), "--format", "json"]
    fast, fast_out = _timed(_sbabench(*args), env)
    slow, slow_out = _timed([sys.executable, "-c", _SKLEARN, *args], env)
    rows = zip(json.loads(fast_out), json.loads(slow_out), strict=True)
    worst = max(
        abs(a[k] - b[k])
        for a, b in rows
        for k in ("item_delta", "ci_low", "ci_high", "p_value")
        if isinstance(a[k], float)
    )
    print(
        f"1. compare, whole process: scikit-learn path {slow:.2f} s, vectorised {fast:.2f} s "
        f"-> {slow / fast:.1f}x faster (largest difference in CI/p: {worst:.1e})"
    )


def _warm(results: Path, env: dict[str, str]) -> None:
    times = [
        _timed(_sbabench("run", str(SUITE), "--results", str(results)), env)[0] for _ in range(3)
    ]
    print(
        f"2. warm re-run, whole process: {statistics.median(times):.2f} s median of 3 "
        f"({', '.join(f'{t:.2f}' for t in times)})"
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
    """Run the four measurements and print them."""
    with tempfile.TemporaryDirectory() as tmp:
        machine = Path(tmp) / "machine"
        env = {**os.environ, "SBABENCH_CACHE": str(machine), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
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
