"""`sbabench compare` on many items: wall and peak memory of the whole process, one thread vs
the threads it uses, on the quickstart's 9 units grown to N items each.

    python benchmarks/bench_compare_scale.py [--items 16000] [--repeats 2] [--before REF]

The committed baseline (results/baseline/quickstart: 9 units, 3 tasks) is copied with each
task's per-item arrays redrawn to N items (the same seeded draw of the task's items for every
unit, so units still pair; each prediction keeps its item's value, cosines jittered by 0.01), then
`sbabench compare` runs on it as a user runs it, alternately as shipped and with its blocks of
resamples on one thread (the module's thread count patched), `--repeats` times each. Prints each run's wall, peak RSS and the median ratio; the
outputs of the two are checked equal. With `--before REF` (a git commit), that commit's sbabench
package runs the same comparison too, alternated with the others, and its output must be equal.
Also prints the size of one clustering result file.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "results" / "baseline" / "quickstart"
_ONE_THREAD = (
    "import sys\n"
    "import sbabench.tasks.item_statistics as s\n"
    "s._THREADS = 1\n"
    "from sbabench.cli import main\n"
    "sys.argv = ['sbabench', *sys.argv[1:]]\n"
    "main()\n"
)


def grow(folder: Path, items: int) -> Path:
    """The baseline's 9 results with N items per task, under `folder`."""
    sys.path.insert(0, str(ROOT))
    from sbabench.run.results import load_result, save_result

    target = folder / "quickstart"
    shutil.rmtree(target, ignore_errors=True)
    jitter = random.Random(1)
    for path in sorted(BASELINE.rglob("*.json")):
        result = load_result(path)
        assert result is not None, path
        draw = random.Random(path.name)  # the same items for every unit of a task
        grown = {}
        for subset, scores in result.items.items():
            picked = [draw.randrange(len(scores.gold)) for _ in range(items)]
            noise = 0.0 if scores.kind == "clusters" else 0.01
            grown[subset] = scores.model_copy(
                update={
                    "gold": [scores.gold[i] for i in picked],
                    "predicted": [scores.predicted[i] + jitter.gauss(0, noise) for i in picked],
                    "runs": [[run[i] for i in picked] for run in scores.runs],
                }
            )
        out = target / path.relative_to(BASELINE)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_result(out, result.model_copy(update={"items": grown}))
    return target


def _run(args: list[str], path: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and stdout of one child process (`path`: where it imports
    sbabench from)."""
    env = dict(os.environ, PYTHONPATH=str(path)) if path else None
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(
            args, cwd=path or ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed (status {status})")
    return wall, usage.ru_maxrss / 2**20, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", help="a git commit whose sbabench runs the same comparison")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    variants: list[tuple[str, list[str], Path | None]] = [
        ("1 thread", [sys.executable, "-c", _ONE_THREAD, "compare"], None),
        ("shipped", [sys.executable, "-m", "sbabench", "compare"], None),
    ]
    if args.before:
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "sbabench"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        variants.append((args.before[:10], [sys.executable, "-m", "sbabench", "compare"], old))
    folder = grow(work, args.items)
    clusters = folder / "minilm-moe" / "sba" / "MiniNewsgroupsClustering.json"
    print(f"{args.items:,} items per unit, 9 units; one clustering result file: "
          f"{clusters.stat().st_size / 1e6:.2f} MB")  # fmt: skip
    walls: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    outputs: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, command, path in variants:
            wall, peak, text = _run([*command, str(folder)], path)
            walls[name].append(wall)
            outputs[name] = text
            print(f"{name:>10}: {wall:6.2f} s, peak RSS {peak:.2f} GB", flush=True)
    if len(set(outputs.values())) != 1:
        raise SystemExit(f"the outputs differ: {outputs}")
    if args.before:
        print(f"median: {args.before[:10]} {statistics.median(walls[args.before[:10]]):.2f} s")
    ratio = statistics.median(walls["1 thread"]) / statistics.median(walls["shipped"])
    print(f"median: 1 thread {statistics.median(walls['1 thread']):.2f} s, shipped "
          f"{statistics.median(walls['shipped']):.2f} s ({ratio:.2f}x); outputs equal; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
