"""MoE adapters: find a model's MoE layers and route their combination step through an operator.

Each family is a module that registers itself in `sbabench.moe.registry`; importing this
package registers the built-in ones.
"""

from __future__ import annotations

from torch import nn

from sbabench.errors import ModelSpecError
from sbabench.moe import nomic, transformers_experts, upcycle  # noqa: F401  (register families)
from sbabench.moe.base import MoELayer, aggregation_points, observing, set_aggregator
from sbabench.moe.registry import describe, expert_mlps, families

__all__ = [
    "MoELayer",
    "aggregation_points",
    "attach_moe",
    "expert_mlps",
    "observing",
    "set_aggregator",
]


def attach_moe(model: nn.Module) -> list[MoELayer]:
    """Install aggregation points in every MoE layer a registered family recognises; an error if
    there is none (a model is never run as if dense)."""
    layers = [layer for family in families().values() for layer in family.attach(model)]
    if not layers and not aggregation_points(model):
        raise ModelSpecError(
            f"found no MoE layer in {type(model).__name__}: sbabench will not run it as if dense",
            fix="use source: dense for a dense model; supported MoE families: "
            + "; ".join(describe()),
        )
    return layers
