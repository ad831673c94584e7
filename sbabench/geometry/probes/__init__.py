"""Deeper geometry probes, one module each, registered in `registry` (opt-in: `geometry: {probes: [...]}` in the suite).

Each is computed per MoE layer on the tokens the GeometryRecorder sampled, with the layer's input
(what the router and the experts saw) kept for them. See each module for its definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sbabench.geometry.probes import expert_pca, jacobian, router_coupling  # noqa: F401
from sbabench.geometry.probes.registry import ProbeContext, ProbeInfo, probes, register

if TYPE_CHECKING:
    from pydantic import BaseModel
    from torch import nn

    from sbabench.geometry.recorder import GeometryRecorder
    from sbabench.moe.base import MoELayer

__all__ = ["ProbeContext", "ProbeInfo", "probes", "register", "run_probes", "support"]


def support(model: nn.Module, layer: MoELayer) -> dict[str, str]:
    """Per probe, "ok" or why it cannot run on `layer` (reads the weights, runs nothing)."""
    from sbabench.moe.experts import Unsupported

    out = {}
    for name, info in probes().items():
        try:
            if info.applies is not None:
                info.applies(model, layer)
            out[name] = "ok"
        except Unsupported as exc:
            out[name] = str(exc)
    return out


def run_probes(
    requested: dict[str, BaseModel],
    recorder: GeometryRecorder,
    model: nn.Module,
    layers: list[MoELayer],
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Probe results per layer name and probe name (`requested`: probe -> its settings); a
    probe that cannot run says why."""
    import torch

    from sbabench.moe.experts import Unsupported

    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        sample = recorder.probe_sample(layer.name)
        if sample is None:
            continue
        results: dict[str, Any] = {}
        for name, settings in requested.items():
            context = ProbeContext(model, layer, *sample, seed=seed, settings=settings)
            try:
                with torch.no_grad():
                    results[name] = probes()[name].run(context)
            except Unsupported as exc:
                results[name] = {"unavailable": str(exc)}
        out[layer.name] = results
    return out
