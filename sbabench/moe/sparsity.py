"""Routing sparsity: route each token of every MoE layer to k experts instead of the model's own
top-k (a model's `routing: {top_k: K}` or `{top_k: all}`).

Every family keeps its own rule for choosing and weighting the k experts (`MoEFamily.set_top_k`);
only k changes. `all` is k = the layer's number of experts, which, family by family, means:

- upcycled (drop-upcycled BERT): the softmax over every expert, p_e = softmax_e(router scores),
  renormalised or not (a sum of one either way): y = sum_e p_e y_e, the full softmax mixture.
- NomicBERT-MoE: the softmax over every expert, never renormalised: the full softmax mixture.
- Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE: the softmax over every expert (`norm_topk_prob`
  divides by a sum of one): the full softmax mixture (Qwen2-MoE's shared expert is added as
  before).
- GPT-OSS: the softmax over the top-k logits, so over all logits (router bias included).
- DeepSeek-V2: the softmax over every expert times `routed_scaling_factor`; with
  group-limited routing, experts outside the chosen groups get weight 0.
- DeepSeek-V3: every expert weighted by its sigmoid score, normalised to sum one where
  `norm_topk_prob`, times `routed_scaling_factor`: not a softmax. Its group limit masks only
  the scores that choose experts (the weights come from the unmasked scores), and at k = all
  every expert is chosen, so the limit has no effect (transformers 5.23's modeling_deepseek_v3).

At the model's own top-k nothing changes, so with `linear` the forward is the model's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from sbabench.errors import ModelSpecError
from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.experts import Unsupported
from sbabench.moe.registry import families


def layer_top_k(layer: MoELayer, top_k: int | str) -> int:
    """The k a `routing.top_k` of `top_k` means in `layer` (`all`: its number of experts);
    a ModelSpecError when it is outside 1..experts."""
    k = layer.num_experts if top_k == "all" else int(top_k)
    if not 1 <= k <= layer.num_experts:
        raise ModelSpecError(
            f"routing.top_k is {top_k}, but MoE layer {layer.name} has {layer.num_experts} experts",
            fix=f"use a top_k from 1 to {layer.num_experts}, or all",
        )
    return k


def set_top_k(model: nn.Module, layers: Sequence[MoELayer], top_k: int | str) -> list[MoELayer]:
    """Route every token of every layer to `top_k` experts (a number, or `all`) by its family's
    rule; returns the layers as they now are. A ModelSpecError where k does not fit a layer or
    its family cannot change it."""
    changed = []
    for layer in layers:
        k = layer_top_k(layer, top_k)
        family = families().get(layer.adapter)
        try:
            if family is None or family.set_top_k is None:
                raise Unsupported(f"the {layer.family} family's top-k is fixed")
            family.set_top_k(model, layer, k)
        except Unsupported as exc:
            raise ModelSpecError(
                f"cannot change the top-k of MoE layer {layer.name}: {exc}",
                fix="remove `routing:` from this model",
            ) from None
        point = model.get_submodule(layer.name)
        assert isinstance(point, AggregationPoint)
        point.top_k = k
        changed.append(replace(layer, top_k=k))
    return changed
