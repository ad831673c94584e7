"""One interface over every MoE family: find the MoE layers, swap their combination step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from sbabench.aggregators import AggregatorFn
from sbabench.aggregators.spherical import linear
from sbabench.errors import AggregatorError


@dataclass(frozen=True)
class Combination:
    """One call of a layer's combination step, as observers see it."""

    layer: str
    """Qualified module name of the AggregationPoint."""
    outputs: torch.Tensor
    """(tokens, k, hidden) outputs of each token's selected experts."""
    weights: torch.Tensor
    """(tokens, k) router weights of those experts."""
    combined: torch.Tensor
    """(tokens, hidden) the operator's result."""
    index: torch.Tensor | None
    """(tokens, k) which experts were selected (None if the adapter cannot tell)."""
    inputs: torch.Tensor | None
    """(tokens, hidden) the layer's input: what the router and the experts saw."""
    num_experts: int = 0
    """Routed experts in the layer (0: unknown)."""


Observer = Callable[[Combination], None]


class AggregationPoint(nn.Module):
    """The combination step of one MoE layer: calls the current operator and its observers.

    Every adapter routes its layer's per-token expert outputs and weights through one of these,
    so swapping the operator or capturing the inputs for geometry needs no second forward pass.
    """

    def __init__(self, num_experts: int, top_k: int, renormalized: bool) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.renormalized = renormalized
        self.aggregator: AggregatorFn = linear
        self.observers: list[Observer] = []
        self.layer_name = ""
        self.operator_name = "linear"

    def forward(
        self,
        outputs: torch.Tensor,
        weights: torch.Tensor,
        index: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Combine (tokens, k, hidden) outputs with (tokens, k) weights (the result in the
        outputs' dtype, whatever the operator computes in).

        `index` names the selected experts and `inputs` (tokens, hidden) is the layer input;
        both only reach the observers.
        """
        combined = self.aggregator(outputs, weights).to(outputs.dtype)
        self._check_finite(outputs, weights, combined)
        if self.observers:
            call = Combination(
                self.layer_name, outputs, weights, combined, index, inputs, self.num_experts
            )
            for observer in self.observers:
                observer(call)
        return combined

    def _check_finite(
        self, outputs: torch.Tensor, weights: torch.Tensor, combined: torch.Tensor
    ) -> None:
        """An operator that turns finite expert outputs into NaN or inf is named, with this layer
        (a NaN coming in, e.g. from a diverging training step, is not the operator's doing)."""
        if bool(torch.isfinite(combined).all()):
            return
        if not (bool(torch.isfinite(outputs).all()) and bool(torch.isfinite(weights).all())):
            return
        bad = int((~torch.isfinite(combined)).any(-1).sum())
        raise AggregatorError(
            f"operator {self.operator_name!r} returned NaN or inf for {bad} of "
            f"{combined.shape[0]} tokens in MoE layer {self.layer_name or '(unnamed)'} "
            "from finite expert outputs",
            fix="guard its divisions, square roots and normalisations (see how the built-in "
            "operators clamp norms with eps), then run again",
        )


@dataclass(frozen=True)
class MoELayer:
    """An MoE layer found in a model."""

    name: str
    """Qualified module name of the layer's combination point."""
    family: str
    """Adapter that found it (upcycled-bert, mixtral, nomic-bert, ...)."""
    num_experts: int
    """Routed experts in the layer."""
    top_k: int
    """Experts selected per token."""
    renormalized: bool
    """Whether the top-k router weights are renormalised to sum to 1."""
    block: str = ""
    """Module name of the whole MoE block (router + experts): what `trainable: moe` trains."""
    adapter: str = ""
    """The registered MoE family (`sbabench.moe.registry`) that found it."""


def aggregation_points(model: nn.Module) -> list[tuple[str, AggregationPoint]]:
    """All combination points in a model, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AggregationPoint)]


def set_aggregator(model: nn.Module, fn: AggregatorFn, name: str = "") -> int:
    """Route every MoE layer of `model` through `fn` (called `name` in error messages); returns
    how many layers were patched."""
    points = aggregation_points(model)
    for layer_name, point in points:
        point.aggregator = fn
        point.operator_name = name or getattr(fn, "__name__", repr(fn))
        point.layer_name = layer_name
    return len(points)


@contextmanager
def observing(model: nn.Module, observer: Observer) -> Iterator[None]:
    """Attach `observer` to every combination point for the duration of the block."""
    points = aggregation_points(model)
    for name, point in points:
        point.layer_name = name
        point.observers.append(observer)
    try:
        yield
    finally:
        for _, point in points:
            point.observers.remove(observer)
