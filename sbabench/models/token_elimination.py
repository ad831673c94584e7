"""Attention-based token elimination for BERT-family encoders (our reading of TiltedBERT).

After layer `start_layer` and after every later layer but the last, each text ranks its
surviving tokens by their Attention Context Contribution in that layer, the attention the
other tokens pay them: ACC_j = sum over heads h and real query tokens i of A[h, i, j]. The
text's first token ([CLS]) is always kept, padding never is; the others go on in the order of
their ACC. The share kept falls geometrically with depth under one Tilt-Rate R: a text of n real
tokens enters layer l > start_layer with ceil((1 - R)^(l - start_layer) x n) of them, so the
dropped share grows with depth. Pooling (mean, CLS, ...) runs over the tokens that come out of
the last layer. No training is needed; R = 0 is the unpruned model, run unchanged.

Tokens are dropped between layers (a layer runs whole on what enters it), and the kept tokens
keep their positional order; BERT's positions are added once, at the embeddings, so order and
gaps do not matter to the later layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sbabench.errors import ModelSpecError

IMPLEMENTATION = "sbabench_acc"
"""The attention implementation a pruned model runs with: sdpa, plus the attention each token
receives where a layer's ACC is wanted."""


@dataclass(frozen=True)
class Schedule:
    """How many tokens enter each layer under a Tilt-Rate."""

    tilt_rate: float
    start_layer: int
    num_layers: int

    def prunes_after(self, layer: int) -> bool:
        """Whether tokens are dropped after `layer` (never after the last: nothing runs there)."""
        return self.tilt_rate > 0 and self.start_layer <= layer < self.num_layers - 1

    def kept(self, layer: int, tokens: int) -> int:
        """Tokens of a text with `tokens` real tokens that enter `layer` (at least one)."""
        if self.tilt_rate == 0 or layer <= self.start_layer:
            return tokens
        share = (1.0 - self.tilt_rate) ** (layer - self.start_layer)
        return max(1, math.ceil(round(share * tokens, 9)))


@dataclass(frozen=True)
class LayerCost:
    """What one encoder layer costs per token: the sizes the FLOPs count needs."""

    hidden: int
    ffn: int
    experts_per_token: int = 1
    """Experts each token runs in this layer (1 for a dense FFN, top-k for an MoE layer)."""
    router_experts: int = 0
    """Experts the router scores (0: no router)."""

    def flops(self, n: int) -> float:
        """Multiply-adds x 2 of the layer on a text of n tokens: Q, K, V and output projections
        (8 n d^2), scores and weighted values (4 n^2 d), the router (2 n d E) and the FFN
        (4 n d f per expert a token runs). Norms, softmax and activations are left out."""
        d, f = self.hidden, self.ffn
        attention = 8 * n * d * d + 4 * n * n * d
        ffn = 4 * n * d * f * self.experts_per_token + 2 * n * d * self.router_experts
        return float(attention + ffn)


def flops_fraction(
    lengths: Sequence[int], schedule: Schedule, costs: Sequence[LayerCost]
) -> tuple[float, list[float]]:
    """The share of the encoder's FLOPs that runs, over texts of the given real lengths: in
    total and per layer (analytic, from the schedule; the embeddings and pooling excluded)."""
    per_layer = []
    kept_total = full_total = 0.0
    for layer, cost in enumerate(costs):
        kept = sum(cost.flops(schedule.kept(layer, n)) for n in lengths)
        full = sum(cost.flops(n) for n in lengths)
        per_layer.append(kept / full if full else 1.0)
        kept_total, full_total = kept_total + kept, full_total + full
    return (kept_total / full_total if full_total else 1.0), per_layer


def _attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, *args: Any, **kw: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sdpa; where the layer's ACC is wanted, also each key token's attention received, summed
    over heads and real queries, kept on the module as `sbabench_acc` (batch, tokens)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out = sdpa_attention_forward(module, query, key, *args, **kw)
    if getattr(module, "sbabench_wants_attention", False):
        mask = args[1] if len(args) > 1 else kw.get("attention_mask")
        setattr(module, "sbabench_acc", _received(query, key, mask, kw.get("scaling")))  # noqa: B010
    return out


def _received(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    """sum_h sum_{real i} softmax_j(q_i k_j * scaling + mask) -> (batch, tokens).

    One head at a time, beside sdpa's output: on CPU this is about twice as fast as eager
    attention, which materialises every head's (tokens x tokens) probabilities at once and
    cost more than token elimination saves (benchmarks/bench_token_elimination.py)."""
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    batch, heads, tokens = query.shape[0], query.shape[1], key.shape[2]
    bias = mask[:, 0] if mask is not None else None  # (batch, 1, tokens) additive
    real = None if bias is None else (bias[:, 0] == 0).to(query.dtype)
    acc = query.new_zeros(batch, tokens, dtype=torch.float32)
    for head in range(heads):
        scores = torch.matmul(query[:, head], key[:, head].transpose(1, 2)) * scale
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores.float(), dim=-1)
        acc += (probs if real is None else probs * real[:, :, None]).sum(dim=1)
    return acc


def _layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if (
        not isinstance(layers, nn.ModuleList)
        or not hasattr(model, "embeddings")
        or not all(hasattr(getattr(layer, "attention", None), "self") for layer in layers)
    ):
        raise ModelSpecError(
            f"token_elimination needs a BERT-family encoder (embeddings, encoder.layer[i]"
            f".attention.self); {type(model).__name__} is not one",
            fix="remove `token_elimination` from this model, or use a BERT-family model",
        )
    return layers


def prepare(model: nn.Module, tilt_rate: float, start_layer: int) -> Schedule:
    """Check the model and the options, and route its attention through `sbabench_acc`.

    The implementation is sdpa's in every forward, the plain one included (training runs it,
    and a model trained with elimination is evaluated with it): transformers builds no padding
    mask for an attention implementation it has no mask function for, so sdpa's is registered
    under the same name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    layers = _layers(model)
    if start_layer >= len(layers):
        raise ModelSpecError(
            f"token_elimination.start_layer is {start_layer}, but the model has {len(layers)} "
            "layers",
            fix=f"use a start_layer from 0 to {len(layers) - 1}",
        )
    if tilt_rate > 0:
        AttentionInterface.register(IMPLEMENTATION, _attention)
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
        config: Any = model.config
        config._attn_implementation = IMPLEMENTATION
    return Schedule(tilt_rate, start_layer, len(layers))


def layer_costs(model: nn.Module, moe: dict[int, tuple[int, int]]) -> list[LayerCost]:
    """Every layer's cost sizes; `moe`: layer index -> (top_k, experts) of its MoE."""
    config: Any = model.config
    return [
        LayerCost(
            int(config.hidden_size),
            int(config.intermediate_size),
            moe[i][0] if i in moe else 1,
            moe[i][1] if i in moe else 0,
        )
        for i in range(len(_layers(model)))
    ]


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, tokens) bool -> (batch, 1, 1, tokens) additive attention mask."""
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def _keep(
    hidden: torch.Tensor, mask: torch.Tensor, importance: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text's first token and its `keep - 1` most important others, in positional order."""
    score = importance.float().masked_fill(~mask, float("-inf"))
    score[:, 0] = float("inf")
    width = int(keep.max())
    order = torch.argsort(score, dim=1, descending=True)[:, :width]  # best first
    wanted = torch.arange(width, device=keep.device)[None, :] < keep[:, None]
    wanted &= torch.gather(mask, 1, order)  # never padding
    positions, perm = torch.sort(order, dim=1)  # back to positional order
    gathered = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return gathered, torch.gather(wanted, 1, perm)


def eliminating_forward(
    model: nn.Module,
    features: dict[str, Any],
    schedule: Schedule,
    on_mask: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """The BERT encoder with tokens dropped between layers: `features` gains the surviving
    `token_embeddings` and their `attention_mask`, as the sentence-transformers Transformer
    module would set them. `on_mask` is told each layer's real-token mask before it runs."""
    layers = _layers(model)
    embeddings: Any = model.embeddings
    mask = features["attention_mask"].bool()
    hidden = embeddings(
        input_ids=features["input_ids"], token_type_ids=features.get("token_type_ids")
    )
    lengths = mask.sum(1)
    for index, layer in enumerate(layers):
        block: Any = layer
        attention: Any = block.attention.self
        attention.sbabench_wants_attention = schedule.prunes_after(index)
        if on_mask is not None:
            on_mask(mask.reshape(-1))
        hidden = layer(hidden, _additive(mask, hidden.dtype))
        if not attention.sbabench_wants_attention:
            continue
        importance = attention.sbabench_acc  # (batch, tokens)
        attention.sbabench_wants_attention, attention.sbabench_acc = False, None
        keep = torch.tensor(
            [schedule.kept(index + 1, int(n)) for n in lengths], device=hidden.device
        )
        hidden, mask = _keep(hidden, mask, importance, keep)
    return {**features, "token_embeddings": hidden, "attention_mask": mask.long()}
