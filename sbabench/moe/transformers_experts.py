"""transformers 5.x MoE families through their `ExpertsInterface` hook.

transformers keeps the expert combination of Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2/V3
(and more) in an `*Experts` module whose forward dispatches on
`config._experts_implementation`. We register one more implementation, `sbabench`, that
computes each token's per-slot expert outputs (tokens, k, hidden) and hands them, with the
router's top-k weights, to the module's AggregationPoint. Shared experts (Qwen2-MoE, DeepSeek)
are added by the enclosing block after this step, so they stay outside the aggregation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.experts import ExpertMLPs, Unsupported, float32, mlps
from sbabench.moe.registry import MoEFamily, register

IMPLEMENTATION = "sbabench"
_POINT = "sbabench_combine"


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool
) -> torch.Tensor:
    out = x @ weight if transposed else F.linear(x, weight)
    return out + bias if bias is not None else out


def _slot_outputs(experts: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(tokens, k, hidden) output of every selected expert, one batched call per expert."""
    out = hidden.new_zeros(index.shape[0], index.shape[1], hidden.shape[-1])
    transposed = bool(getattr(experts, "is_transposed", False))
    has_bias = bool(getattr(experts, "has_bias", False))
    for expert in torch.unique(index).tolist():
        if expert >= experts.num_experts:  # expert-parallel sentinel: not on this rank
            continue
        token, slot = torch.nonzero(index == expert, as_tuple=True)
        x = hidden[token]
        if experts.has_gate:
            bias = experts.gate_up_proj_bias[expert] if has_bias else None
            h = experts._apply_gate(_linear(x, experts.gate_up_proj[expert], bias, transposed))
        else:
            bias = experts.up_proj_bias[expert] if has_bias else None
            h = experts.act_fn(_linear(x, experts.up_proj[expert], bias, transposed))
        bias = experts.down_proj_bias[expert] if has_bias else None
        y = _linear(h, experts.down_proj[expert], bias, transposed)
        if getattr(experts, "has_post_expert_norm", False):
            y = experts.post_expert_norm(y)
        out[token, slot] = y.to(out.dtype)
    return out


def sbabench_experts_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """The `sbabench` experts implementation: per-slot outputs -> AggregationPoint."""
    outputs = _slot_outputs(self, hidden_states, top_k_index)
    weights = top_k_weights.masked_fill(top_k_index >= self.num_experts, 0.0)  # type: ignore[operator]
    point: AggregationPoint = getattr(self, _POINT)
    return point(outputs, weights, top_k_index, hidden_states).to(hidden_states.dtype)


def _register() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, sbabench_experts_forward)


def is_experts_module(module: nn.Module) -> bool:
    """A transformers experts module wrapped by `use_experts_implementation`."""
    return (
        hasattr(module, "has_gate")
        and hasattr(module, "down_proj")
        and hasattr(module, "num_experts")
        and hasattr(module, "config")
    )


def _family(module: nn.Module) -> str:
    return type(module).__name__.removesuffix("Experts").lower() or "transformers"


def attach(model: nn.Module) -> list[MoELayer]:
    """Route every transformers experts module of `model` through an AggregationPoint."""
    found = []
    for name, module in model.named_modules():
        if not is_experts_module(module):
            continue
        _register()
        config: Any = module.config
        top_k = int(getattr(config, "num_experts_per_tok", getattr(config, "moe_top_k", 1)))
        renormalized = bool(getattr(config, "norm_topk_prob", True))
        if not hasattr(module, _POINT):
            module.add_module(
                _POINT, AggregationPoint(int(module.num_experts), top_k, renormalized)
            )
        config._experts_implementation_internal = IMPLEMENTATION
        block = name.rpartition(".")[0]  # the experts' parent holds the router too
        found.append(
            MoELayer(
                f"{name}.{_POINT}",
                _family(module),
                int(module.num_experts),
                top_k,
                renormalized,
                block=block,
                adapter=FAMILY,
            )
        )
    return found


def read_experts(model: nn.Module, layer: MoELayer) -> ExpertMLPs:
    """The experts module of `layer` as two-layer MLPs (gated or not, biased, transposed)."""
    experts: Any = model.get_submodule(layer.name.rpartition(".")[0])
    if getattr(experts, "has_post_expert_norm", False):
        raise Unsupported("its experts end in a norm layer: not a two-layer MLP")
    transposed = bool(getattr(experts, "is_transposed", False))
    has_bias = bool(getattr(experts, "has_bias", False))

    def weight(t: torch.Tensor) -> torch.Tensor:  # -> (experts, out, in)
        return (t.transpose(1, 2) if transposed else t).detach().float()

    down = weight(experts.down_proj)
    if experts.has_gate:
        bias = float32(experts.gate_up_proj_bias) if has_bias else None
        return mlps(weight(experts.gate_up_proj), bias, down, experts._apply_gate)
    bias = float32(experts.up_proj_bias) if has_bias else None
    return mlps(weight(experts.up_proj), bias, down, experts.act_fn)


FAMILY = "transformers-experts"

register(
    MoEFamily(
        FAMILY,
        "transformers MoE families with an *Experts module (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, "
        "DeepSeek-V2/V3, GPT-OSS, and others built on transformers' ExpertsInterface)",
        attach,
        read_experts,
    )
)
