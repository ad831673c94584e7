"""transformers 5.x MoE families through their `ExpertsInterface` hook.

transformers keeps the expert combination of Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2/V3
(and more) in an `*Experts` module whose forward dispatches on
`config._experts_implementation`. We register one more implementation, `sbabench`, that
computes each token's per-slot expert outputs (tokens, k, hidden) and hands them, with the
router's top-k weights, to the module's AggregationPoint. Shared experts (Qwen2-MoE, DeepSeek)
are added by the enclosing block after this step, so they stay outside the aggregation.

The expert outputs come from torch's grouped GEMM over the (token, slot) pairs sorted by expert,
called as transformers' default (`grouped_mm`) implementation calls it, so with the `linear`
operator a model reproduces its own default forward bit for bit (float32 and bfloat16; tested
for every family below, including 64-expert top-8 routing).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.experts import ExpertMLPs, Unsupported, float32, mlps
from sbabench.moe.loss_free import LossFreeBias, LossFreeTopKRouter
from sbabench.moe.registry import MoEFamily, RouterSlot, register
from sbabench.moe.routers import OnlineKMeansTopKRouter

IMPLEMENTATION = "sbabench"
_POINT = "sbabench_combine"


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool
) -> torch.Tensor:
    out = x @ weight if transposed else F.linear(x, weight)
    return out + bias if bias is not None else out


def _grouped_mm(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(rows, in) @ per-group (groups, in, out) -> (rows, out): rows sorted by group, `offsets`
    the cumulative row counts. torch's grouped GEMM, as transformers' default experts path
    calls it (so expert outputs equal the model's own bit for bit)."""
    grouped = getattr(F, "grouped_mm", None) or torch._grouped_mm
    return grouped(x.to(weight.dtype), weight, offs=offsets)


def grouped_mm_available(weight: torch.Tensor) -> bool:
    """Whether torch's grouped GEMM runs for these expert weights: torch >= 2.9 on CPU, and on
    CUDA compute capability 8.0 or newer (older GPUs take the per-expert loop)."""
    if not (hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")):
        return False
    if weight.device.type == "cuda":
        return torch.cuda.get_device_capability(weight.device) >= (8, 0)
    return weight.device.type == "cpu"


def _projection(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    experts: torch.Tensor,
    offsets: torch.Tensor,
    transposed: bool,
) -> torch.Tensor:
    """One grouped linear layer over expert-sorted rows (`experts`: each row's expert)."""
    out = _grouped_mm(x, weight if transposed else weight.transpose(-2, -1), offsets)
    return out.add_(bias[experts]) if bias is not None else out


def _zero(rows: torch.Tensor, sentinel: torch.Tensor | None) -> torch.Tensor:
    """The rows, with those of sentinel pairs (which the grouped GEMM leaves unset) zeroed."""
    return rows if sentinel is None else rows.masked_fill(sentinel, 0.0)


def _grouped_slot_outputs(experts: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(tokens, k, hidden): every (token, slot) expert output from two grouped GEMMs over the
    (token, slot) pairs sorted by expert; no loop over experts, no host sync. Pairs routed to an
    expert-parallel sentinel (index >= num_experts) get zeros."""
    tokens, k = index.shape
    num_experts = int(experts.num_experts)
    flat = index.reshape(-1)
    order_experts, order = torch.sort(flat)
    rows = hidden[order // k]
    # histc, not bincount: no host sync; sentinels fall outside [0, num_experts - 1] and the
    # grouped GEMM leaves their (tail) rows alone
    counts = torch.histc(
        order_experts.float() if hidden.device.type in ("cpu", "mps") else order_experts.int(),
        bins=num_experts, min=0, max=num_experts - 1,
    )  # fmt: skip
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    # Only expert-parallel shards see sentinels; masking costs two copies, so only there.
    sentinel = None
    ids = order_experts
    if getattr(experts, "_is_expert_parallel", False):
        sentinel = (order_experts >= num_experts).unsqueeze(-1)
        ids = order_experts.clamp(max=num_experts - 1)
    transposed = bool(getattr(experts, "is_transposed", False))
    has_bias = bool(getattr(experts, "has_bias", False))
    if experts.has_gate:
        bias = experts.gate_up_proj_bias if has_bias else None
        up = _projection(rows, experts.gate_up_proj, bias, ids, offsets, transposed)
        h = experts._apply_gate(_zero(up, sentinel))
    else:
        bias = experts.up_proj_bias if has_bias else None
        up = _projection(rows, experts.up_proj, bias, ids, offsets, transposed)
        h = experts.act_fn(_zero(up, sentinel))
    bias = experts.down_proj_bias if has_bias else None
    y = _projection(h, experts.down_proj, bias, ids, offsets, transposed)
    if getattr(experts, "has_post_expert_norm", False):
        y = experts.post_expert_norm(y)
    y = _zero(y, sentinel)
    out = torch.empty_like(y)
    out[order] = y  # back to (token, slot) order
    return out.view(tokens, k, -1)


def _looped_slot_outputs(experts: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(tokens, k, hidden) output of every selected expert, one batched call per expert: the
    fallback where torch's grouped GEMM cannot run (CUDA before compute capability 8.0). It
    loops over the selected experts with a host sync each, and its expert outputs can differ
    from the grouped kernel's in the last bits."""
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


def _slot_outputs(experts: Any, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(tokens, k, hidden) output of every selected expert."""
    weight = experts.gate_up_proj if experts.has_gate else experts.up_proj
    if grouped_mm_available(weight):
        return _grouped_slot_outputs(experts, hidden, index)
    return _looped_slot_outputs(experts, hidden, index)


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


def router(model: nn.Module, layer: MoELayer) -> RouterSlot:
    """The block's softmax top-k router (`gate` or `router`: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE
    and others whose `*TopKRouter` is a bias-free linear layer returning (logits, top-k weights,
    top-k indices)). Group-limited or biased routers (DeepSeek-V3, GPT-OSS) are not exposed, so
    they get no online K-means router, loss-free bias or auxiliary loss."""
    block: Any = model.get_submodule(layer.block)
    for attribute in ("gate", "router"):
        current = getattr(block, attribute, None)
        if isinstance(current, OnlineKMeansTopKRouter | LossFreeTopKRouter):
            return _slot(block, attribute, current, current.top_k, current.renormalize)
        name = type(current).__name__
        weight = getattr(current, "weight", None)
        if (
            name.endswith("TopKRouter")
            and isinstance(weight, torch.Tensor)
            and weight.dim() == 2
            and getattr(current, "bias", None) is None
        ):
            top_k = int(getattr(current, "top_k", layer.top_k))
            return _slot(block, attribute, current, top_k, layer.renormalized)
    raise Unsupported(
        f"its router is not a bias-free softmax top-k router ({type(block).__name__})"
    )


def _slot(
    block: nn.Module, attribute: str, current: Any, top_k: int, renormalize: bool
) -> RouterSlot:
    """A softmax top-k router's slot: a plain `*TopKRouter`, or one sbabench put in its place."""
    rows = current.rows if isinstance(current, OnlineKMeansTopKRouter) else current.weight

    def online(centroids: torch.Tensor, temperature: float, decay: float) -> nn.Module:
        return OnlineKMeansTopKRouter(centroids, temperature, top_k, decay, renormalize)

    def install_bias(rate: float) -> nn.Module:
        if isinstance(current, LossFreeTopKRouter):
            return current.balance
        balance = LossFreeBias(int(rows.shape[0]), rate, rows.device)
        setattr(block, attribute, LossFreeTopKRouter(current.weight, top_k, renormalize, balance))
        return balance

    return RouterSlot(
        block,
        attribute,
        rows,
        lambda out: torch.softmax(out[0].float(), dim=-1),
        online,
        install_bias,
    )


def set_top_k(model: nn.Module, layer: MoELayer, k: int) -> None:
    """The block's router takes its top k by its own rule (which `all` then means per family:
    `sbabench.moe.sparsity`); a block that keeps a top_k of its own gets k too."""
    block: Any = model.get_submodule(layer.block)
    owners = [getattr(block, a, None) for a in ("gate", "router")]
    routers = [r for r in owners if isinstance(getattr(r, "top_k", None), int)]
    if not routers:
        raise Unsupported(f"its router keeps no top_k ({type(block).__name__})")
    for holder in [*routers, block]:
        if isinstance(getattr(holder, "top_k", None), int):
            holder.top_k = k


FAMILY = "transformers-experts"

register(
    MoEFamily(
        FAMILY,
        "transformers MoE families with an *Experts module (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, "
        "DeepSeek-V2/V3, GPT-OSS, and others built on transformers' ExpertsInterface)",
        attach,
        read_experts,
        router,
        set_top_k,
    )
)
