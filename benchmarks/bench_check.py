"""The speed guard: ratios that matter, measured now, against those recorded in guard.json.

    python benchmarks/bench_check.py            # `make bench-check`; about 2-3 min on 2 cores
    python benchmarks/bench_check.py --record   # write today's ratios into guard.json

Each ratio is a speed-up (higher is better) from medians of 3 whole processes (7 for the quick
warm and compare pairs; for the forward pass, 7 in-process rounds), timed round-robin so
machine drift hits both sides alike:
  cold      the import + model load + encode floor (`bench_cold_task.FLOOR`) over a cold
            `sbabench run` of LeeDocSTS with the quickstart's MoE and `linear` (fresh results
            folder, router already in the machine cache). Plain `mteb.evaluate` of the task
            (`bench_cold_task.py`) takes 30-70 s a repeat here, too long for CI; the floor is
            what any run pays, so the ratio moves exactly when sbabench's own share does.
  warm      the CLI's own start (`python -m sbabench --version`: the interpreter, click, rich)
            over a warm re-run of that suite (all results present: planning, keys, nothing
            computed), so the ratio moves with what the re-run adds. Not a bare
            `import sbabench`: at 0.03-0.05 s its jitter alone moved the ratio from 0.024 to
            0.032 between two runs on an idle machine.
  compare   reading the 9 result files of results/baseline/quickstart (`load_results`) over
            `sbabench compare` of them (tables, paired statistics).
  fused     a small Mixtral-shaped forward (2 layers, 8 experts, top-2, 8 x 256 tokens) with `linear` over the same with
            `sba-fused`, float32, after checking that torch.compile really compiled it (a
            silent eager fallback fails the check whatever its speed).
Fails when a ratio falls more than `tolerance` (25%) below its recorded value. Ratios, not
seconds: these machines are shared and noisy. Updating guard.json is a deliberate commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_cold_task import FLOOR, SUITE, _timed

ROOT = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "guard.json"
REPEATS = 3
QUICK_REPEATS = 7
"""The warm and compare pairs take about a second a side: 7 runs each, since a median of 3 of
a 0.03 s `import sbabench` swung by a quarter on an idle machine."""
FUSED_ROUNDS = 7
"""Rounds of the in-process forward pair (each 3 forwards a side): cheap, and the median of 3
swung 1.6-4.1x between two runs under load."""
FUSED = """\
import json, time, torch
from transformers import MixtralConfig, MixtralModel
from sbabench.aggregators import resolve, spherical
from sbabench.moe import attach_moe, set_aggregator
torch.manual_seed(0)
config = MixtralConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    intermediate_size=512, num_local_experts=8, num_experts_per_tok=2)
model = MixtralModel(config).eval()
attach_moe(model)
ids = torch.randint(0, 1000, (8, 256))
def forward(name):
    set_aggregator(model, resolve(name).fn)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return time.perf_counter() - start
forward("linear"), forward("sba-fused")  # warm-up; compiles sba-fused
from torch._dynamo.utils import counters
compiled = spherical._COMPILED.get("sba") not in (None, spherical.sba_single_pass)
graphs = counters["stats"]["unique_graphs"]
rounds = [(forward("linear"), forward("sba-fused")) for _ in range(%d)]
print(json.dumps({"compiled": compiled and graphs > 0, "graphs": graphs, "rounds": rounds}))
"""


def _ratio(fast: list[float], slow: list[float]) -> float:
    """Speed-up of the measured side: median of the reference over median of the measured."""
    return statistics.median(fast) / statistics.median(slow)


def _round_robin(
    pairs: dict[str, tuple[Callable[[], float], Callable[[], float]]], repeats: int
) -> dict[str, tuple[list[float], list[float]]]:
    """(reference, measured) seconds of each pair, `repeats` times, interleaved."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in pairs}
    for _ in range(repeats):
        for name, (reference, measured) in pairs.items():
            times[name][0].append(reference())
            times[name][1].append(measured())
    return times


def _processes(tmp: Path, env: dict[str, str]) -> dict[str, tuple[list[float], list[float]]]:
    """Timings of the whole-process pairs: cold, warm, compare."""
    python, suite = sys.executable, tmp / "cold.yaml"
    suite.write_text(SUITE)
    run = [python, "-m", "sbabench", "run", str(suite), "--results"]
    _timed([*run, str(tmp / "warm")], env)  # builds the router; the warm re-runs read this
    runs = iter(range(REPEATS))
    baseline = str(ROOT / "results" / "baseline" / "quickstart")
    read = f"from pathlib import Path; from sbabench.run.results import load_results; load_results(Path({baseline!r}))"
    cold = _round_robin(
        {
            "cold": (
                lambda: _timed([python, "-c", FLOOR], env),
                lambda: _timed([*run, str(tmp / f"cold{next(runs)}")], env),
            ),
        },
        REPEATS,
    )
    return cold | _round_robin(
        {
            "warm": (
                lambda: _timed([python, "-m", "sbabench", "--version"], env),
                lambda: _timed([*run, str(tmp / "warm")], env),
            ),
            "compare": (
                lambda: _timed([python, "-c", read], env),
                lambda: _timed([python, "-m", "sbabench", "compare", baseline], env),
            ),
        },
        QUICK_REPEATS,
    )


def _fused(env: dict[str, str]) -> tuple[list[float], list[float]]:
    """(linear, sba-fused) seconds of 3 forwards, FUSED_ROUNDS rounds; exits if nothing
    compiled."""
    out = subprocess.run([sys.executable, "-c", FUSED % FUSED_ROUNDS], env=env, cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the sba-fused forward failed:\n{out.stderr[-3000:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if not found["compiled"]:
        raise SystemExit(
            "FAIL fused: sba-fused ran eagerly (torch.compile fell back or compiled no graph: "
            f"{found['graphs']} graphs); its log:\n{out.stderr[-3000:]}"
        )
    linear, fused = zip(*found["rounds"], strict=True)
    return list(linear), list(fused)


def measure() -> dict[str, float]:
    """Every guarded ratio, measured now (printing the timings behind each)."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = {**os.environ, "SBABENCH_CACHE": str(tmp / "machine"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
        times = _processes(tmp, env)
        times["fused"] = _fused(env)
    for name, (reference, measured) in times.items():
        shown = " / ".join(", ".join(f"{t:.2f}" for t in side) for side in (reference, measured))
        print(f"{name:<8} reference / measured seconds: {shown}")
    return {name: _ratio(*sides) for name, sides in times.items()}


def judge(measured: dict[str, float], guard: dict[str, object]) -> list[str]:
    """The failures: each ratio more than the tolerance below its recorded value."""
    tolerance = float(guard["tolerance"])  # type: ignore[arg-type]
    recorded: dict[str, dict[str, float]] = guard["ratios"]  # type: ignore[assignment]
    failures = []
    for name, entry in recorded.items():
        floor = entry["ratio"] * (1 - tolerance)
        value = measured[name]
        verdict = "ok" if value >= floor else "FAIL"
        print(f"{verdict:<4} {name:<8} {value:6.3f}x   recorded {entry['ratio']:.3f}x   "
              f"fails below {floor:.3f}x")  # fmt: skip
        if value < floor:
            failures.append(
                f"{name}: measured {value:.3f}x, more than {tolerance:.0%} below the recorded "
                f"{entry['ratio']:.3f}x (fails below {floor:.3f}x)"
            )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the ratios to guard.json")
    args = parser.parse_args()
    start = time.perf_counter()
    guard = json.loads(GUARD.read_text())
    measured = measure()
    if args.record:
        for name, value in measured.items():
            guard["ratios"][name]["ratio"] = round(value, 3)
        GUARD.write_text(json.dumps(guard, indent=2) + "\n")
        print(f"recorded in {GUARD.relative_to(ROOT)}: commit it, saying why the ratios moved")
        return
    failures = judge(measured, guard)
    print(f"bench-check: {time.perf_counter() - start:.0f} s, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    if failures:
        raise SystemExit(
            "bench-check failed:\n  " + "\n  ".join(failures) + "\nIf the slowdown is a "
            "deliberate trade, run `python benchmarks/bench_check.py --record` and commit "
            "benchmarks/guard.json with the reason (like refreshing results/baseline)."
        )


if __name__ == "__main__":
    main()
