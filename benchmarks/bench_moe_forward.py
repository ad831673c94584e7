"""Whole-forward cost of pretrained-style MoE models under sbabench, against the model itself.

For Mixtral- (8 experts, top-2), OLMoE- (64 experts, top-8) and Qwen3-MoE-shaped (64 experts,
top-8) models, randomly initialised, prints the median ms per forward of:
  native        the model's own default experts implementation (transformers' grouped_mm)
  linear        sbabench's experts path (grouped GEMM) with the linear operator
  sba           the same with SBA
  sba-fused     the same with SBA compiled into one kernel (torch.compile; compiled in warm-up)
  linear-loop   sbabench's previous path: a Python loop over experts (before this change)
and the ratios to native. Interleaved medians, one process.

    python benchmarks/bench_moe_forward.py [--device cpu|cuda] [--dtype float32|bfloat16]

Shapes: on CPU small (hidden 256, batch 8 x 128 tokens, 2 layers); on CUDA the issue's
(hidden 1024, batch 32 x 512 tokens, 8 layers).
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from typing import Any

import torch
from bench_operators import _interleaved_medians

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sbabench.aggregators import resolve
from sbabench.moe import attach_moe, set_aggregator
from sbabench.moe import transformers_experts as experts_path


def _shapes(device: str) -> dict[str, Any]:
    if device == "cuda":
        return {"hidden": 1024, "layers": 8, "batch": 32, "tokens": 512, "heads": 16}
    return {"hidden": 256, "layers": 2, "batch": 8, "tokens": 128, "heads": 4}


def _common(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "vocab_size": 1000,
        "hidden_size": s["hidden"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["heads"],
        "max_position_embeddings": 2 * s["tokens"],
    }


def _mixtral(s: dict[str, Any]) -> torch.nn.Module:
    from transformers import MixtralConfig, MixtralModel

    config = MixtralConfig(
        **_common(s), intermediate_size=2 * s["hidden"], num_local_experts=8, num_experts_per_tok=2
    )
    return MixtralModel(config)


def _olmoe(s: dict[str, Any]) -> torch.nn.Module:
    from transformers import OlmoeConfig, OlmoeModel

    config = OlmoeConfig(
        **_common(s), intermediate_size=s["hidden"] // 2, num_experts=64, num_experts_per_tok=8
    )
    return OlmoeModel(config)


def _qwen3_moe(s: dict[str, Any]) -> torch.nn.Module:
    from transformers import Qwen3MoeConfig, Qwen3MoeModel

    config = Qwen3MoeConfig(
        **_common(s),
        intermediate_size=2 * s["hidden"],
        moe_intermediate_size=s["hidden"] // 2,
        num_experts=64,
        num_experts_per_tok=8,
        head_dim=s["hidden"] // s["heads"],
    )
    return Qwen3MoeModel(config)


MODELS: dict[str, Callable[[dict[str, Any]], torch.nn.Module]] = {
    "Mixtral-shaped (8 experts, top-2)": _mixtral,
    "OLMoE-shaped (64 experts, top-8)": _olmoe,
    "Qwen3-MoE-shaped (64 experts, top-8)": _qwen3_moe,
}


def _forward(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state

    return run


def _looped(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], object]:
    """The previous experts path: a Python loop over the selected experts."""
    forward = _forward(model, ids)

    def run() -> object:
        saved = experts_path.grouped_mm_available
        experts_path.grouped_mm_available = lambda _: False  # type: ignore[assignment]
        try:
            return forward()
        finally:
            experts_path.grouped_mm_available = saved

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shapes = _shapes(device.type)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{name}, {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"shapes: {shapes}")
    print("| model | native ms | linear ms | sba ms | sba-fused ms | linear-loop ms | linear/native | sba/linear | sba-fused/linear | loop/native |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, build in MODELS.items():
        torch.manual_seed(0)
        native = build(shapes).to(device=device, dtype=dtype).eval()
        ids = torch.randint(0, 1000, (shapes["batch"], shapes["tokens"]), device=device)
        torch.manual_seed(0)
        patched = build(shapes).to(device=device, dtype=dtype).eval()
        attach_moe(patched)
        linear, sba, fused = (resolve(name).fn for name in ("linear", "sba", "sba-fused"))

        def with_operator(
            fn: Any, forward: Callable[[], object], model: torch.nn.Module = patched
        ) -> Callable[[], object]:
            def run() -> object:
                set_aggregator(model, fn)
                return forward()

            return run

        times = _interleaved_medians(
            {
                "native": _forward(native, ids),
                "linear": with_operator(linear, _forward(patched, ids)),
                "sba": with_operator(sba, _forward(patched, ids)),
                "fused": with_operator(fused, _forward(patched, ids)),
                "loop": with_operator(linear, _looped(patched, ids)),
            },
            device,
            args.repeats,
        )
        ms = {k: v * 1e3 for k, v in times.items()}
        print(
            f"| {label} | {ms['native']:.1f} | {ms['linear']:.1f} | {ms['sba']:.1f} | "
            f"{ms['fused']:.1f} | {ms['loop']:.1f} | {ms['linear'] / ms['native']:.3f} | "
            f"{ms['sba'] / ms['linear']:.3f} | {ms['fused'] / ms['linear']:.3f} | "
            f"{ms['loop'] / ms['native']:.3f} |"
        )


if __name__ == "__main__":
    main()
