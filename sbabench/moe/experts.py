"""A layer's experts and router as plain tensors, for the geometry probes.

Every supported family's experts are two-layer MLPs, plain or gated:

    plain:  y_e(x) = W_out[e] act(W_in[e] x + b_in[e])
    gated:  y_e(x) = W_out[e] (act(W_in[e] x + b_in[e]) * (W_up[e] x + b_up[e]))

(output biases do not change the Jacobian and are left out). Their input Jacobians have a closed
form, J_e(x) = W_out[e] diag(act'(z)) W_in[e] (plus W_out[e] diag(act(z)) W_up[e] when gated),
so the probes need no autograd through the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sbabench.moe.base import MoELayer


class Unsupported(Exception):
    """A probe cannot read this layer's experts or router; the message says why."""


@dataclass(frozen=True)
class ExpertMLPs:
    """The experts of one MoE layer as stacked weight tensors (float32)."""

    w_in: torch.Tensor
    """(experts, ffn, hidden): the first projection (the gate projection of a gated MLP)."""
    b_in: torch.Tensor | None
    """(experts, ffn)."""
    w_out: torch.Tensor
    """(experts, hidden, ffn)."""
    act: Callable[[torch.Tensor], torch.Tensor]
    """The elementwise activation."""
    w_up: torch.Tensor | None = None
    """(experts, ffn, hidden): the up projection of a gated MLP."""
    b_up: torch.Tensor | None = None
    """(experts, ffn)."""

    @property
    def num_experts(self) -> int:
        """Experts in the layer."""
        return int(self.w_in.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts, hidden): every expert's output, no output bias."""
        z = torch.einsum("efh,th->tef", self.w_in, x)
        if self.b_in is not None:
            z = z + self.b_in
        h = self.act(z)
        if self.w_up is not None:
            up = torch.einsum("efh,th->tef", self.w_up, x)
            h = h * (up + self.b_up if self.b_up is not None else up)
        return torch.einsum("ehf,tef->teh", self.w_out, h)

    def jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts, hidden, hidden): d y_e / d x at each token."""
        z = torch.einsum("efh,th->tef", self.w_in, x)
        if self.b_in is not None:
            z = z + self.b_in
        # The derivative of an elementwise activation is its JVP along a tangent of ones.
        value, slope = torch.func.jvp(self.act, (z,), (torch.ones_like(z),))  # type: ignore[misc]
        if self.w_up is not None:
            up = torch.einsum("efh,th->tef", self.w_up, x)
            if self.b_up is not None:
                up = up + self.b_up
            return (self.w_out * (slope * up).unsqueeze(2)) @ self.w_in + (
                self.w_out * value.unsqueeze(2)
            ) @ self.w_up
        return (self.w_out * slope.unsqueeze(2)) @ self.w_in


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float()


def _upcycled(block: Any) -> ExpertMLPs:
    import torch.nn.functional as F

    return ExpertMLPs(block.w1.detach().float(), _f32(block.b1), block.w2.detach().float(), F.gelu)


def _nomic(block: Any) -> ExpertMLPs:
    adapter = block.experts
    shape = (adapter.num_experts, adapter.ffn, adapter.mlp.w1.shape[-1])
    w1 = adapter.mlp.w1.detach().float().view(shape)
    w2 = adapter.mlp.w2.detach().float().view(shape)
    return ExpertMLPs(w1, None, w2.transpose(1, 2), adapter.activation)


def _transformers(experts: Any) -> ExpertMLPs:
    from transformers.integrations.moe import _default_apply_gate

    if getattr(experts, "has_post_expert_norm", False):
        raise Unsupported("its experts end in a norm layer: not a two-layer MLP")
    transposed = bool(getattr(experts, "is_transposed", False))
    has_bias = bool(getattr(experts, "has_bias", False))

    def weight(t: torch.Tensor) -> torch.Tensor:  # -> (experts, out, in)
        return (t.transpose(1, 2) if transposed else t).detach().float()

    down = weight(experts.down_proj)
    if not experts.has_gate:
        bias = _f32(experts.up_proj_bias) if has_bias else None
        return ExpertMLPs(weight(experts.up_proj), bias, down, experts.act_fn)
    if getattr(type(experts), "_apply_gate", _default_apply_gate) is not _default_apply_gate:
        raise Unsupported(f"{type(experts).__name__} gates its experts in its own way")
    gate, up = weight(experts.gate_up_proj).chunk(2, dim=1)
    b_gate = b_up = None
    if has_bias:
        b_gate, b_up = experts.gate_up_proj_bias.detach().float().chunk(2, dim=-1)
    return ExpertMLPs(gate, b_gate, down, experts.act_fn, up, b_up)


def expert_mlps(model: nn.Module, layer: MoELayer) -> ExpertMLPs:
    """The experts of `layer` (raises Unsupported with the reason when they are not MLPs)."""
    if layer.family == "upcycled-bert":
        return _upcycled(model.get_submodule(layer.block))
    if layer.family == "nomic-bert-moe":
        return _nomic(model.get_submodule(layer.block))
    point_parent = layer.name.rpartition(".")[0]
    return _transformers(model.get_submodule(point_parent))


def router_rows(model: nn.Module, layer: MoELayer, hidden: int) -> torch.Tensor:
    """(experts, hidden): the router's weight rows (or centroids) of `layer`.

    Found by shape among the block's parameters outside its experts, which covers a linear
    gate (`gate.weight`, `router.layer.weight`) and a centroid router alike.
    """
    block = model.get_submodule(layer.block)
    experts_prefix = layer.name.rpartition(".")[0].removeprefix(layer.block).lstrip(".")
    found = [
        (name, p)
        for name, p in block.named_parameters()
        if p.dim() == 2
        and tuple(p.shape) == (layer.num_experts, hidden)
        and not (experts_prefix and name.startswith(experts_prefix + "."))
    ]
    if len(found) != 1:
        names = ", ".join(name for name, _ in found) or "none"
        raise Unsupported(
            f"expected one ({layer.num_experts}, {hidden}) router weight in {layer.block}, "
            f"found {names}"
        )
    return found[0][1].detach().float()
