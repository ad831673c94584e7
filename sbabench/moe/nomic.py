"""NomicBERT-MoE (nomic-ai/nomic-embed-text-v2-moe, remote code "nomic-bert-2048").

Layout, from the architecture's public description: every odd layer's MLP is a
`NomicMoELayer` with `router` (a bias-free linear `layer`, softmax over all experts, then
top-k; the top-k weights are NOT renormalised) and `experts` (`mlp.w1` and `mlp.w2` packed as
(experts * ffn, hidden), GELU, the weighted sum over the top-k, then one shared `bias`).
We swap `experts` for an adapter that keeps the same `mlp` module and `bias` parameter (so the
parameter names, and a loaded checkpoint, are unchanged) and sends the per-slot expert outputs
through an AggregationPoint before the shared bias is added.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.experts import ExpertMLPs, Unsupported, mlps
from sbabench.moe.registry import MoEFamily, register


def is_nomic_moe_layer(module: nn.Module) -> bool:
    """A NomicMoELayer: a router with a linear `layer` and experts with packed `mlp.w1/w2`."""
    experts = getattr(module, "experts", None)
    router = getattr(module, "router", None)
    mlp = getattr(experts, "mlp", None)
    return (
        router is not None
        and isinstance(getattr(router, "layer", None), nn.Module)
        and isinstance(getattr(mlp, "w1", None), torch.Tensor)
        and isinstance(getattr(mlp, "w2", None), torch.Tensor)
        and isinstance(getattr(experts, "bias", None), torch.Tensor)
    )


class NomicExpertsAdapter(nn.Module):
    """Drop-in for NomicExperts whose combination step is an AggregationPoint."""

    def __init__(self, original: nn.Module, top_k: int) -> None:
        super().__init__()
        mlp: Any = original.mlp
        self.mlp = mlp
        self.bias = original.bias
        self.num_experts = int(
            getattr(original, "moe_num_experts", 0) or getattr(mlp, "moe_num_experts", 0)
        )
        if not self.num_experts:
            raise ValueError("cannot tell the number of experts of a NomicExperts module")
        self.ffn = mlp.w1.shape[0] // self.num_experts
        self.activation = getattr(mlp, "activation_fn", F.gelu)
        self.combine = AggregationPoint(self.num_experts, top_k, renormalized=False)

    def expert_outputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(tokens, k, hidden): gelu(x W1_e^T) W2_e for each selected expert e."""
        shape = (self.num_experts, self.ffn, x.shape[-1])
        w1, w2 = self.mlp.w1.view(shape), self.mlp.w2.view(shape)
        out = x.new_zeros(index.shape[0], index.shape[1], x.shape[-1])
        for expert in torch.unique(index).tolist():
            token, slot = torch.nonzero(index == expert, as_tuple=True)
            out[token, slot] = (self.activation(x[token] @ w1[expert].T) @ w2[expert]).to(out.dtype)
        return out

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """Accepts (x, top_weights, top_experts) or (x, weights, top_weights, top_experts)."""
        top_weights, top_experts = args[-2], args[-1]
        flat = x.reshape(-1, x.shape[-1])
        outputs = self.expert_outputs(flat, top_experts)
        combined = self.combine(outputs, top_weights, top_experts, flat)
        return combined.reshape(x.shape) + self.bias


def attach(model: nn.Module) -> list[MoELayer]:
    """Swap the experts of every NomicMoELayer for the adapter."""
    found = []
    for name, module in model.named_modules():
        if not is_nomic_moe_layer(module):
            continue
        router: Any = module.router
        top_k = int(getattr(router, "moe_top_k", 0) or getattr(router, "top_k", 0) or 2)
        experts: Any = module.experts
        if not isinstance(experts, NomicExpertsAdapter):
            module.experts = NomicExpertsAdapter(experts, top_k)
            experts = module.experts
        found.append(
            MoELayer(
                f"{name}.experts.combine",
                "nomic-bert-moe",
                experts.num_experts,
                top_k,
                False,
                block=name,
                adapter=FAMILY,
            )
        )
    return found


def read_experts(model: nn.Module, layer: MoELayer) -> ExpertMLPs:
    """The packed `mlp.w1/w2` of `layer` as (experts, ffn, hidden) MLPs."""
    adapter: Any = model.get_submodule(layer.block).experts
    shape = (adapter.num_experts, adapter.ffn, adapter.mlp.w1.shape[-1])
    w1 = adapter.mlp.w1.detach().float().view(shape)
    w2 = adapter.mlp.w2.detach().float().view(shape)
    return mlps(w1, None, w2.transpose(1, 2), adapter.activation)


def set_top_k(model: nn.Module, layer: MoELayer, k: int) -> None:
    """The router takes the top k of its softmax over every expert (never renormalised)."""
    router: Any = model.get_submodule(layer.block).router
    for attribute in ("moe_top_k", "top_k"):
        if isinstance(getattr(router, attribute, None), int):
            setattr(router, attribute, k)
            return
    raise Unsupported(f"its router ({type(router).__name__}) has no top-k to set")


FAMILY = "nomic-bert-moe"

register(
    MoEFamily(
        FAMILY,
        "NomicBERT-MoE (nomic-ai/nomic-embed-text-v2-moe, trust_remote_code)",
        attach,
        read_experts,
        set_top_k=set_top_k,
    )
)
