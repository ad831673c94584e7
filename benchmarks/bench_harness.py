"""sbabench against the script a researcher would write, and against its own limits.

Prints, from one run on this machine:
  1. end to end: the quickstart suite through `sbabench run` (cold caches) vs the same models x
     operators x tasks through `mteb.evaluate` with the same encoder, built per model x operator,
     encoding every text mteb asks for in mteb's order; scores must agree to 1e-6;
  2. a warm re-run of the finished suite through the CLI (median of 3; no model may load);
  3. geometry statistics overhead on encode time (default sample size), and the cost of the
     opt-in probes (jacobian, expert-pca, router-coupling) at their defaults;
  4. throughput of the upcycled MoE (linear) vs the dense model, with their FLOP ratio;
  5. peak resident memory of the cold run;
  6. building the upcycled MoE with a cold and a warm k-means router cache.
Usage: python benchmarks/bench_harness.py [--repeats 5] [--skip-end-to-end]  (skips 1, 2, 5)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from sbabench.geometry.probes import run_probes
from sbabench.geometry.recorder import GeometryRecorder
from sbabench.geometry.spec import GeometrySpec
from sbabench.models.encoder import TextEncoder, build_encoder
from sbabench.models.machine_cache import MachineCache
from sbabench.models.spec import DenseModel, UpcycleModel
from sbabench.moe import observing, set_aggregator
from sbabench.run.encoding import CosineSimilarity
from sbabench.run.execute import run_suite
from sbabench.run.quiet import quiet_libraries
from sbabench.suite import load_suite
from sbabench.tasks import get_task
from sbabench.tasks.sources import lee_background

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "suites" / "quickstart.yaml"


class PlainEncoder(CosineSimilarity):
    """What a hand-written mteb script does: encode each batch mteb hands over, as it comes."""

    def __init__(self, encoder: TextEncoder) -> None:
        from mteb.models.model_meta import ModelMeta

        self.encoder = encoder
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={"name": "plain/script"})

    def encode(self, inputs: Any, *, prompt_type: Any = None, **_: Any) -> np.ndarray:
        kind = getattr(prompt_type, "value", prompt_type) or "default"
        prompt = self.encoder.config.prompts.get(kind, "")
        return np.concatenate(
            [self.encoder.embed_batch(list(b["text"]), prompt).numpy() for b in inputs]
        )


def plain_mteb(suite_path: Path) -> tuple[float, dict[str, float]]:
    """The hand-written baseline: build each model x operator, run mteb.evaluate on the tasks."""
    import mteb

    suite = load_suite(suite_path)
    scores: dict[str, float] = {}
    start = time.perf_counter()
    for spec in suite.models:
        operators = [a for a in suite.aggregators] if spec.is_moe else [None]
        for operator in operators:
            from sbabench.aggregators import resolve

            encoder = build_encoder(spec, suite.settings.device, suite.settings.dtype)
            if operator is not None:
                set_aggregator(encoder.model, resolve(operator.name, operator.options).fn)
            tasks = [get_task(t) for t in suite.tasks]
            result = mteb.evaluate(
                PlainEncoder(encoder), tasks, cache=None, show_progress_bar=False,
                encode_kwargs={"batch_size": suite.settings.batch_size},
            )  # fmt: skip
            for task_result in result.task_results:
                main = task_result.scores["test"][0]["main_score"]
                scores[
                    f"{spec.name}/{operator.key if operator else 'dense'}/{task_result.task_name}"
                ] = float(main)
    return time.perf_counter() - start, scores


def flops_per_token(
    hidden: int, ffn: int, layers: int, moe_layers: int, k: int, experts: int, seq: float
) -> float:
    """Multiply-adds x 2 of a BERT encoder per token: projections, attention, FFN (k experts in MoE layers)."""
    attention = 2 * (4 * hidden * hidden) + 2 * (2 * seq * hidden)
    dense_ffn = 2 * (2 * hidden * ffn)
    moe_ffn = k * dense_ffn + 2 * hidden * experts
    return layers * attention + (layers - moe_layers) * dense_ffn + moe_layers * moe_ffn


def _interleaved(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-end-to-end", action="store_true", help="only sections 3 and 4")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads="
          f"{torch.get_num_threads()}, torch={torch.__version__}, python={platform.python_version()}")  # fmt: skip

    if not args.skip_end_to_end:
        end_to_end()
    per_encode(args.repeats)
    model_build()


def model_build() -> None:
    """Section 6."""
    spec = UpcycleModel(name="quickstart-moe", source="upcycle")
    with quiet_libraries(), tempfile.TemporaryDirectory() as tmp:
        timings = []
        for _ in range(3):  # cold, then warm twice
            start = time.perf_counter()
            build_encoder(spec, "cpu", cache=MachineCache(Path(tmp)))
            timings.append(time.perf_counter() - start)
    print(f"\n6. building the upcycled MoE: cold router cache {timings[0]:.2f} s, "
          f"warm {min(timings[1:]):.2f} s (imports already loaded)")  # fmt: skip


def end_to_end() -> None:
    """Sections 1, 2 and 5."""
    with quiet_libraries(), tempfile.TemporaryDirectory() as tmp:
        get_task("LeeDocSTS").load_data()  # imports and first data read out of both timings
        start = time.perf_counter()
        summary = run_suite(load_suite(SUITE), Path(tmp) / "results")
        sbabench_s = time.perf_counter() - start
        ours = {f"{r.model}/{r.aggregator}/{r.task}": r.main_score for r in summary.results}
        peak_mb = max(r.provenance.get("peak_rss_mb", 0.0) for r in summary.results)
        plain_s, theirs = plain_mteb(SUITE)
        diffs = [abs(ours[k] - theirs[k]) for k in theirs]
        print("\n1. end to end, quickstart suite (9 units), cold caches")
        print(f"   sbabench run: {sbabench_s:7.1f} s   mteb.evaluate script: {plain_s:7.1f} s   "
              f"speed-up: {plain_s / sbabench_s:.2f}x")  # fmt: skip
        print(
            f"   max |score difference| over {len(diffs)} units: {max(diffs):.2e} (same scores to 1e-6: {max(diffs) < 1e-6})"
        )
        for key in sorted(theirs):
            print(f"     {key:<48} sbabench {ours[key]:.6f}  mteb script {theirs[key]:.6f}")

        warm = []
        for _ in range(3):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "sbabench", "run", str(SUITE), "--results", str(Path(tmp) / "results")],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            warm.append(time.perf_counter() - start)
        loaded = "0 model(s) loaded" in out.stdout
        print(
            f"\n2. warm re-run through the CLI: median {statistics.median(warm):.2f} s of 3, no model loaded: {loaded}"
        )
        print(f"\n5. peak resident memory of the cold run (whole process): {peak_mb:.0f} MB")


def per_encode(repeats: int) -> None:
    """Sections 3 and 4."""
    spec = UpcycleModel(name="quickstart-moe", source="upcycle")
    moe = build_encoder(spec, "cpu")
    dense = build_encoder(DenseModel(name="dense", source="dense"), "cpu")
    texts = lee_background()[:128]

    def encode_with_geometry(probes: bool = False) -> None:
        recorder = GeometryRecorder(4096, keep_inputs=probes)
        moe.recorder = recorder
        with observing(moe.model, recorder.observe):
            moe.encode(texts, batch_size=32)
        moe.recorder = None
        recorder.layers()
        if probes:
            run_probes(
                GeometrySpec(probes=tuple(probes()), jacobian_tokens=32).requested(),
            recorder, moe.model, moe.moe_layers,
            )  # fmt: skip

    timings = _interleaved(
        {
            "moe": lambda: moe.encode(texts, batch_size=32),
            "moe+geometry": encode_with_geometry,
            "moe+geometry+probes": lambda: encode_with_geometry(probes=True),
            "dense": lambda: dense.encode(texts, batch_size=32),
        },
        repeats,
    )
    print(f"\n3. geometry statistics (4096 tokens per layer) on encode time, {len(texts)} texts: "
          f"{timings['moe+geometry'] / timings['moe']:.3f}x ({timings['moe'] * 1e3:.0f} ms -> {timings['moe+geometry'] * 1e3:.0f} ms)")  # fmt: skip
    print(f"   with the three probes (opt-in; 32 Jacobian tokens, m = 8, {len(moe.moe_layers)} layers): "
          f"{timings['moe+geometry+probes'] / timings['moe']:.2f}x ({timings['moe+geometry+probes'] * 1e3:.0f} ms)")  # fmt: skip
    tokens = sum(
        int(moe.tokenize(texts[i : i + 32])["attention_mask"].sum())
        for i in range(0, len(texts), 32)
    )
    seq = tokens / len(texts)
    cfg = moe.model.config
    flop_ratio = flops_per_token(
        cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 3, 2, 8, seq
    ) / flops_per_token(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 0, 2, 8, seq)
    print(f"\n4. throughput on {len(texts)} texts ({tokens} real tokens, mean length {seq:.0f}):")
    print(f"   dense {tokens / timings['dense']:.0f} tokens/s, upcycled MoE (linear) {tokens / timings['moe']:.0f} tokens/s: "
          f"time ratio MoE/dense {timings['moe'] / timings['dense']:.2f}x, FLOP ratio {flop_ratio:.2f}x (the expected limit)")  # fmt: skip


if __name__ == "__main__":
    main()
