"""The probe registry: each deeper geometry probe with its settings model.

A probe is one module that registers a `ProbeInfo`: its name, a pydantic model of its settings
(read from the suite's `geometry:` block), the function computing it per MoE layer, and
optionally a check of whether it applies to a layer. Probe modules import torch only inside
their functions, so validating a suite stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from sbabench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sbabench.moe.base import MoELayer


class NoSettings(BaseModel):
    """Settings of a probe that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ProbeContext:
    """What a probe sees of one MoE layer."""

    model: nn.Module
    layer: MoELayer
    inputs: torch.Tensor
    """(tokens, hidden) the sampled tokens' layer inputs (what the router and experts saw)."""
    weights: torch.Tensor
    """(tokens, k) their router weights."""
    index: torch.Tensor
    """(tokens, k) their selected experts."""
    seed: int
    settings: Any
    """The probe's settings model, filled from the suite."""


@dataclass(frozen=True)
class ProbeInfo:
    """A registered probe."""

    name: str
    """Name in `geometry: {probes: [...]}`."""
    summary: str
    """One line for docs and `inspect`."""
    settings: type[BaseModel]
    """Its settings: each field is a key of the suite's `geometry:` block."""
    run: Callable[[ProbeContext], dict[str, Any]]
    """Compute it for one layer (raises `Unsupported` when it cannot apply)."""
    applies: Callable[[nn.Module, MoELayer], None] | None = None
    """Raise `Unsupported` with the reason if it cannot run on a layer (reads, runs nothing)."""
    check: Callable[[Any, int], str | None] | None = None
    """A problem with its settings given the sampled tokens per layer, or None."""


def _settings_are_new(known: Mapping[str, ProbeInfo], info: ProbeInfo) -> None:
    taken = {f for p in known.values() for f in p.settings.model_fields}
    shared = taken & set(info.settings.model_fields)
    if shared:
        raise ValueError(f"probe {info.name!r}: settings {sorted(shared)} belong to another probe")


_REGISTRY: Registry[ProbeInfo] = Registry("probe", lambda info: info.name, _settings_are_new)


def register(info: ProbeInfo) -> ProbeInfo:
    """Add a probe (names are unique; a setting's name belongs to one probe)."""
    return _REGISTRY.register(info)


def unregister(name: str) -> None:
    """Remove a probe (for tests that register their own)."""
    _REGISTRY.unregister(name)


def probes() -> Mapping[str, ProbeInfo]:
    """Every registered probe by name, in registration order."""
    return _REGISTRY.entries()


def setting_owners() -> dict[str, str]:
    """Setting name -> the probe it belongs to."""
    return {field: p.name for p in probes().values() for field in p.settings.model_fields}
