"""A layer's experts and router as plain tensors, for the geometry probes.

Every supported family's experts are two-layer MLPs, y_e(x) = W_out[e] g(W_in[e] x + b_in[e]),
where g is the activation (plain MLPs) or the gate (gated MLPs: W_in stacks the gate and up
projections and g combines each pair, e.g. silu(gate) * up); output biases do not change the
Jacobian and are left out. Each pre-activation z_j feeds exactly one hidden unit o(j), so the
input Jacobian has the closed form

    J_e(x) = W_out[e][:, o] diag(d) W_in[e],   d_j = sum_f dg_f / dz_j   (one VJP of g),

found without autograd through the model; o is read once per layer from g's Jacobian at a few
points (a gate that mixes units is refused).
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
    """(experts, pre-activations, hidden): the first projection (gate and up, when gated)."""
    b_in: torch.Tensor | None
    """(experts, pre-activations)."""
    w_out: torch.Tensor
    """(experts, hidden, ffn)."""
    g: Callable[[torch.Tensor], torch.Tensor]
    """(..., pre-activations) -> (..., ffn): the activation or the gate."""
    owner: torch.Tensor
    """(pre-activations,): the hidden unit each pre-activation feeds (see `unit_owners`)."""

    @property
    def num_experts(self) -> int:
        """Experts in the layer."""
        return int(self.w_in.shape[0])

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.einsum("ezh,th->tez", self.w_in, x)
        return z + self.b_in if self.b_in is not None else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts, hidden): every expert's output, no output bias."""
        return torch.einsum("ehf,tef->teh", self.w_out, self.g(self._pre(x)))

    def jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts, hidden, hidden): d y_e / d x at each token."""
        z = self._pre(x)
        _, pullback = torch.func.vjp(self.g, z)  # type: ignore[misc]
        (slope,) = pullback(
            torch.ones(*z.shape[:-1], self.w_out.shape[-1], dtype=z.dtype, device=z.device)
        )
        return (self.w_out[:, :, self.owner] * slope.unsqueeze(2)) @ self.w_in


def unit_owners(
    g: Callable[[torch.Tensor], torch.Tensor], pre: int, ffn: int, device: torch.device
) -> torch.Tensor:
    """(pre,) the hidden unit each pre-activation of `g` feeds, read from g's Jacobian at a few
    points; raises Unsupported when one feeds several units or none shows up."""
    generator = torch.Generator().manual_seed(0)
    points = [torch.full((pre,), 0.5), torch.full((pre,), -0.5)]
    points += [torch.randn(pre, generator=generator) for _ in range(2)]
    seen = torch.zeros(ffn, pre, dtype=torch.bool, device=device)
    for z in points:
        jac = torch.func.jacrev(g)(z.to(device))
        if tuple(jac.shape) != (ffn, pre):
            raise Unsupported(f"its activation maps {pre} values to {tuple(jac.shape)}, not {ffn}")
        seen |= jac != 0
    feeds = seen.sum(0)
    if (feeds > 1).any():
        raise Unsupported("its gate mixes hidden units: the closed-form Jacobian does not apply")
    if (feeds == 0).any():
        raise Unsupported("some pre-activations showed no effect on any hidden unit")
    return seen.int().argmax(0)


def mlps(
    w_in: torch.Tensor, b_in: torch.Tensor | None, w_out: torch.Tensor, g: Callable[..., Any]
) -> ExpertMLPs:
    """Experts from stacked weights: w_in (experts, pre, in), w_out (experts, out, hidden)."""
    owner = unit_owners(g, w_in.shape[1], w_out.shape[-1], w_in.device)
    return ExpertMLPs(w_in, b_in, w_out, g, owner)


def float32(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached float32 copy (None stays None)."""
    return None if t is None else t.detach().float()


def router_rows(model: nn.Module, layer: MoELayer, hidden: int) -> torch.Tensor:
    """(experts, hidden): the router's weight rows (or centroids) of `layer`.

    Found by shape among the block's parameters outside its experts, which covers a linear
    gate (`gate.weight`, `router.layer.weight`) and a centroid router alike, and among its
    `centroids` buffers (an online K-means router).
    """
    block = model.get_submodule(layer.block)
    experts_prefix = layer.name.rpartition(".")[0].removeprefix(layer.block).lstrip(".")
    centroids = [(n, b) for n, b in block.named_buffers() if n.endswith("centroids")]
    found = [
        (name, p)
        for name, p in [*block.named_parameters(), *centroids]
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
