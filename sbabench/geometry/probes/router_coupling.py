"""The `router-coupling` probe: cosine between each router row (or centroid) and the
router-weighted mean input routed to that expert, against the other experts' mean inputs (the
margin says whether a router row points at what its expert actually receives).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sbabench.geometry.probes.common import EPS, matrix, off_diagonal_mean, routed
from sbabench.geometry.probes.registry import NoSettings, ProbeContext, ProbeInfo, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sbabench.moe.base import MoELayer


def router_coupling_probe(
    rows: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor
) -> dict[str, Any]:
    """Cosine of each router row with the mean input routed to each expert."""
    import torch

    experts = rows.shape[0]
    means = torch.full((experts, x.shape[1]), float("nan"), dtype=torch.float64)
    for e in range(experts):
        xs, w = routed(x, weights, index, e)
        if float(w.sum()) > 0:
            means[e] = (w.unsqueeze(1) * xs).sum(0) / w.sum()
    r = rows.double().cpu()
    r = r / r.norm(dim=1, keepdim=True).clamp_min(EPS)
    m = means / means.norm(dim=1, keepdim=True).clamp_min(EPS)
    cosine = (r @ m.T).numpy()  # [row e, mean input of expert j]
    own = np.diag(cosine)
    off = np.where(np.eye(experts, dtype=bool), np.nan, cosine)
    with np.errstate(invalid="ignore"):
        others = np.nanmean(off, axis=1) if experts > 1 else np.full(experts, np.nan)
    margin = own - others
    return {
        "cosine_own": [None if math.isnan(v) else float(v) for v in own],
        "cosine_own_mean": float(np.nanmean(own)) if not np.isnan(own).all() else None,
        "cosine_other_mean": off_diagonal_mean(cosine),
        "margin_mean": float(np.nanmean(margin)) if not np.isnan(margin).all() else None,
        "matrix": matrix(cosine),
    }


def _hidden(model: nn.Module, layer: MoELayer) -> int:
    from sbabench.moe import expert_mlps
    from sbabench.moe.experts import Unsupported

    try:
        return int(expert_mlps(model, layer).w_in.shape[2])
    except Unsupported:
        return int(getattr(getattr(model, "config", None), "hidden_size", 0))


def _run(context: ProbeContext) -> dict[str, Any]:
    from sbabench.moe.experts import router_rows

    rows = router_rows(context.model, context.layer, context.inputs.shape[1])
    return router_coupling_probe(rows, context.inputs, context.weights, context.index)


def _applies(model: nn.Module, layer: MoELayer) -> None:
    from sbabench.moe.experts import router_rows

    router_rows(model, layer, _hidden(model, layer))


register(
    ProbeInfo(
        "router-coupling",
        "cosine of each router row with the mean input routed to each expert",
        NoSettings,
        _run,
        _applies,
    )
)
