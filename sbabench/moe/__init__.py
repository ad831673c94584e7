"""MoE adapters: find a model's MoE layers and route their combination step through an operator."""

from __future__ import annotations

from torch import nn

from sbabench.errors import ModelSpecError
from sbabench.moe import nomic, transformers_experts
from sbabench.moe.base import MoELayer, aggregation_points, observing, set_aggregator

__all__ = [
    "SUPPORTED_FAMILIES",
    "MoELayer",
    "aggregation_points",
    "attach_moe",
    "observing",
    "set_aggregator",
]

SUPPORTED_FAMILIES = (
    "transformers MoE families with an *Experts module (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, "
    "DeepSeek-V2/V3, GPT-OSS, and others built on transformers' ExpertsInterface)",
    "NomicBERT-MoE (nomic-ai/nomic-embed-text-v2-moe, trust_remote_code)",
    "drop-upcycled BERT encoders (source: upcycle)",
)


def attach_moe(model: nn.Module) -> list[MoELayer]:
    """Install aggregation points in every MoE layer we recognise; error if there is none."""
    layers = transformers_experts.attach(model) + nomic.attach(model)
    if not layers and not aggregation_points(model):
        families = "; ".join(SUPPORTED_FAMILIES)
        raise ModelSpecError(
            f"found no MoE layer in {type(model).__name__}: sbabench will not run it as if dense",
            fix=f"use source: dense for a dense model; supported MoE families: {families}",
        )
    return layers
