"""Auxiliary-loss-free load balancing (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing
Strategy for Mixture-of-Experts"; used by DeepSeek-V3).

Each expert e of a layer gets a bias b_e that is added to its routing score s_e (the router's
softmax probability) for the top-k choice only; the gate weights stay un-biased:

    chosen = top-k_e (s_e + b_e),    weight of a chosen expert = s_e  (renormalised where the
                                                                       family renormalises)

After every training step each bias moves against its expert's load,

    b_e <- b_e + bias_rate * sign(mean_j load_j - load_e),

load_e being the (real token, slot) assignments to e since the previous step. The biases are
buffers: no gradient, no optimiser state, no auxiliary loss. Outside training they do not move,
and selection keeps using them: the trained model routes with its biases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import MoELayer
from sbabench.moe.experts import Unsupported
from sbabench.moe.registry import router_slot
from sbabench.moe.routers import LearnsFromTokens, OnlineKMeansRouter


class LossFreeBias(LearnsFromTokens):
    """One layer's per-expert selection biases b (a buffer) and the load counted since the last
    step; `select` chooses experts, `step` applies the update rule (see the module docstring)."""

    def __init__(self, experts: int, rate: float, device: torch.device | None = None) -> None:
        super().__init__()
        self.rate = rate
        self.register_buffer("bias", torch.zeros(experts, device=device))
        # the load is per step, never a result: not in the state dict or the checkpoint
        self.register_buffer("load", torch.zeros(experts, device=device), persistent=False)
        self.steps = 0
        """Training steps that moved the biases."""

    @property
    def biases(self) -> torch.Tensor:
        """(experts,) the current biases b."""
        bias: torch.Tensor = self.bias  # type: ignore[assignment]
        return bias

    @property
    def counted(self) -> torch.Tensor:
        """(experts,) (token, slot) assignments to each expert since the last step."""
        load: torch.Tensor = self.load  # type: ignore[assignment]
        return load

    def select(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """(tokens, experts) routing scores -> (tokens, k) indices of top-k(scores + b); the
        choice of real tokens is counted while training."""
        index = torch.topk(scores.detach().float() + self.biases, k, dim=-1).indices
        if self.training:
            self._count(index)
        return index

    @torch.no_grad()
    def _count(self, index: torch.Tensor) -> None:
        (real,) = self.real(index)
        load = self.counted
        load += torch.bincount(real.reshape(-1), minlength=load.numel()).to(load.dtype)

    @torch.no_grad()
    def step(self) -> None:
        """b_e <- b_e + rate * sign(mean_j load_j - load_e); the count starts again."""
        load = self.counted
        self.biases.add_(self.rate * torch.sign(load.mean() - load))
        load.zero_()
        self.steps += 1


class LossFreeTopKRouter(nn.Module):
    """A bias-free linear softmax router in the output format of transformers' `*TopKRouter`
    modules, (logits, top-k weights, top-k indices), choosing its top k with a loss-free bias.

    It holds the replaced router's own `weight` parameter (same object, same name in the
    state dict), so gradients, optimisers and checkpoints see the router they saw before."""

    def __init__(
        self, weight: nn.Parameter, top_k: int, renormalize: bool, balance: LossFreeBias
    ) -> None:
        super().__init__()
        self.weight = weight
        self.top_k = top_k
        self.renormalize = renormalize
        self.balance = balance

    def forward(self, x: torch.Tensor) -> Any:
        """(logits, weights, indices): logits W x, weights softmax(logits) at the experts chosen
        by top-k(softmax(logits) + b), renormalised where the model renormalises."""
        logits = F.linear(x.reshape(-1, self.weight.shape[-1]), self.weight)
        probs = torch.softmax(logits.float(), dim=-1)
        index = self.balance.select(probs, self.top_k)
        weights = probs.gather(-1, index)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return logits, weights.to(x.dtype), index


def make_loss_free(model: nn.Module, layers: Sequence[MoELayer], rate: float) -> list[LossFreeBias]:
    """Give every MoE layer's router a loss-free selection bias (starting at zero: routing is
    unchanged until training moves it); a layer that has one keeps it. Raises Unsupported where
    a family's router cannot take a bias."""
    biases = []
    for layer in layers:
        slot = router_slot(model, layer)
        if isinstance(slot.module, OnlineKMeansRouter):
            raise Unsupported(
                "its router is online K-means; loss-free balancing is for learned ones"
            )
        if slot.install_bias is None:
            raise Unsupported(f"the {layer.family} router cannot take a selection bias")
        bias = slot.install_bias(rate)
        assert isinstance(bias, LossFreeBias)
        biases.append(bias)
    return biases


def loss_free_biases(model: nn.Module) -> list[LossFreeBias]:
    """Every loss-free selection bias in a model."""
    return [m for m in model.modules() if isinstance(m, LossFreeBias)]
