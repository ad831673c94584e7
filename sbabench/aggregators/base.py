"""The aggregator contract and its registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict

from sbabench.registry import Registry

if TYPE_CHECKING:
    import torch


class AggregatorFn(Protocol):
    """Combine the selected experts' outputs of each token into one vector.

    Args:
        outputs: (tokens, k, hidden) outputs y_i of the k selected experts.
        weights: (tokens, k) router weights w_i >= 0 of those experts (not necessarily summing to 1).

    Returns:
        (tokens, hidden) combined output, same dtype as `outputs`.
    """

    def __call__(self, outputs: torch.Tensor, weights: torch.Tensor, /) -> torch.Tensor: ...


class NoOptions(BaseModel):
    """Options of an operator that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class AggregatorInfo:
    """A registered operator: its function, one-line summary and option schema."""

    name: str
    """Name used in suites (`aggregators: [sba]`)."""
    function: str
    """`module:function` of the operator; its validated options are passed to it as keyword
    arguments. Named, not imported, so that listing and keying operators needs no torch."""
    summary: str
    """One line for `sbabench aggregators`."""
    options: type[BaseModel] = NoOptions
    """Pydantic model of the operator's options (extra keys forbidden)."""


_REGISTRY: Registry[AggregatorInfo] = Registry("aggregator", lambda info: info.name)


def register(info: AggregatorInfo) -> AggregatorInfo:
    """Add an operator to the registry (names are unique)."""
    return _REGISTRY.register(info)


def registry() -> Mapping[str, AggregatorInfo]:
    """All registered operators by name."""
    return _REGISTRY.entries()
