"""The MoE-family registry: every family sbabench can patch, in one place.

A family is one module that registers a `MoEFamily`: how to find and patch its MoE layers in a
model (`attach`), how to read its experts as two-layer MLPs for the geometry probes, and where
its router lives (`router`: online K-means routing, loss-free balancing, the auxiliary loss,
frozen routers) and how to change its top-k (`set_top_k`: routing sparsity).
`attach_moe` iterates the registry; nothing else switches on a family's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sbabench.moe.experts import Unsupported
from sbabench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sbabench.moe.base import MoELayer
    from sbabench.moe.experts import ExpertMLPs


@dataclass(frozen=True)
class RouterSlot:
    """Where one MoE layer's router lives and how to read it (what a family tells sbabench)."""

    parent: nn.Module
    """The module holding the router."""
    attribute: str
    """Its attribute name on `parent`."""
    rows: torch.Tensor
    """(experts, hidden) the router's direction per expert (weight rows or centroids)."""
    probabilities: Callable[[Any], torch.Tensor]
    """The router's forward output -> (tokens, experts) routing probabilities."""
    online: Callable[[torch.Tensor, float, float], nn.Module]
    """(centroids, temperature, decay) -> an online K-means router in this slot's format."""
    install_bias: Callable[[float], nn.Module] | None = None
    """(bias rate) -> the layer's loss-free selection bias (`sbabench.moe.loss_free`), put in
    place on first call (raises Unsupported where this router cannot take one); None: the
    family's routers never can."""

    @property
    def module(self) -> nn.Module:
        """The router module itself."""
        module: nn.Module = getattr(self.parent, self.attribute)
        return module


@dataclass(frozen=True)
class MoEFamily:
    """One family of MoE layers."""

    name: str
    """Registry name; every `MoELayer` it finds carries it as `adapter`."""
    description: str
    """One line for error messages and docs."""
    attach: Callable[[nn.Module], list[MoELayer]]
    """Route every layer of this family in a model through an AggregationPoint; [] if none."""
    expert_mlps: Callable[[nn.Module, MoELayer], ExpertMLPs] | None = None
    """The layer's experts as two-layer MLPs (raises Unsupported); None: not readable."""
    router: Callable[[nn.Module, MoELayer], RouterSlot] | None = None
    """The layer's router (raises Unsupported); None: the family cannot expose it (no online
    K-means router, no auxiliary loss)."""
    set_top_k: Callable[[nn.Module, MoELayer, int], None] | None = None
    """Route each token of the layer to its top k experts, chosen and weighted by the family's
    own rule (k = the layer's experts: every expert; raises Unsupported); None: k is fixed."""


_REGISTRY: Registry[MoEFamily] = Registry("MoE family", lambda family: family.name)


def register(family: MoEFamily) -> MoEFamily:
    """Add a family (names are unique)."""
    return _REGISTRY.register(family)


def unregister(name: str) -> None:
    """Remove a family (for tests that register their own)."""
    _REGISTRY.unregister(name)


def families() -> Mapping[str, MoEFamily]:
    """Every registered family by name, in registration order."""
    return _REGISTRY.entries()


def expert_mlps(model: nn.Module, layer: MoELayer) -> ExpertMLPs:
    """The experts of `layer` (raises Unsupported with the reason when they are not MLPs)."""
    family = families().get(layer.adapter)
    if family is None or family.expert_mlps is None:
        raise Unsupported(f"the {layer.adapter or 'unknown'} adapter cannot read its experts")
    return family.expert_mlps(model, layer)


def router_slot(model: nn.Module, layer: MoELayer) -> RouterSlot:
    """The router of `layer` (raises Unsupported when its family cannot expose it)."""
    family = families().get(layer.adapter)
    if family is None or family.router is None:
        raise Unsupported(f"the {layer.adapter or 'unknown'} family does not expose its router")
    return family.router(model, layer)


def describe() -> list[str]:
    """One line per registered family."""
    return [family.description for family in families().values()]
