"""Encode time under token elimination, against the unpruned model, in one process.

Encodes the 200 mini-newsgroups posts and the 50 Lee documents (batch 32, the model's 256-token
limit) with the packaged MiniLM and prints, per setting, the median seconds of a full encode,
its ratio to the unpruned model, and the analytic share of encoder FLOPs kept:
  unpruned        the model as sentence-transformers runs it (sdpa attention)
  loop            sbabench's layer loop, nothing dropped (start_layer = last layer)
  probabilities   the loop with eager attention in layers 1-4 (what the ACC needs), nothing
                  dropped (tilt_rate 1e-9): the cost of reading the attention probabilities
  R=0.1 ... 0.5   token elimination after layer 1 on
Interleaved medians (round-robin), so machine drift hits all settings alike.

    python benchmarks/bench_token_elimination.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

import torch
from bench_operators import _interleaved_medians

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sbabench.models.encoder import build_encoder
from sbabench.suite import parse_suite
from sbabench.tasks.sources import lee_documents, mini_newsgroups

SETTINGS: dict[str, str | None] = {
    "unpruned": None,
    "loop": "{tilt_rate: 0.5, start_layer: 5}",
    "probabilities": "{tilt_rate: 1.0e-9, start_layer: 1}",
    "R=0.1": "{tilt_rate: 0.1, start_layer: 1}",
    "R=0.2": "{tilt_rate: 0.2, start_layer: 1}",
    "R=0.3": "{tilt_rate: 0.3, start_layer: 1}",
    "R=0.5": "{tilt_rate: 0.5, start_layer: 1}",
}


def _encoder(options: str | None, device: str) -> Any:
    extra = f", token_elimination: {options}" if options else ""
    suite = parse_suite(
        f"name: b\nmodels: [{{name: m, source: dense{extra}}}]\ntasks: [LeeDocSTS]", check=False
    )
    return build_encoder(suite.models[0], device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = mini_newsgroups()[0] + lee_documents()
    encoders = {name: _encoder(options, args.device) for name, options in SETTINGS.items()}
    fns = {name: (lambda e=e: e.encode(texts, batch_size=32)) for name, e in encoders.items()}
    medians = _interleaved_medians(fns, torch.device(args.device), args.repeats, budget_s=1e9)
    base = medians["unpruned"]
    print(
        f"{len(texts)} texts, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print(f"{'setting':<14} {'median s':>9} {'x unpruned':>11} {'FLOPs kept':>11}")
    for name, encoder in encoders.items():
        share = 1.0
        if encoder.elimination is not None:
            share = encoder.flops_fraction([("default", t) for t in texts])[0]
        print(f"{name:<14} {medians[name]:>9.2f} {medians[name] / base:>11.2f} {share:>11.2f}")


if __name__ == "__main__":
    main()
