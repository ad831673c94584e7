"""The `router-coupling` probe: how a layer's router and its experts are coupled.

- cosine between each router row (or centroid) and the router-weighted mean input routed to
  that expert, against the other experts' mean inputs (the margin says whether a router row
  points at what its expert actually receives);
- score vs activation ("Routers Learn the Geometry of Their Experts"): over the sampled
  (token, selected expert) pairs, Spearman's correlation between the router's weight for the
  expert and the expert's activation strength on the token, the norm of its hidden activation
  g(W_in x + b_in) before the down projection (the paper finds it positive), pooled over every
  pair and within each expert (mean over experts);
- router-direction similarity: the mean |cosine| between distinct router rows (the paper finds
  an auxiliary balancing loss makes them about 3x more similar).
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
    from sbabench.moe.experts import ExpertMLPs


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


def router_row_similarity(rows: torch.Tensor) -> float | None:
    """Mean |cosine| between distinct router rows (None with one expert)."""
    r = rows.double().cpu()
    r = r / r.norm(dim=1, keepdim=True).clamp_min(EPS)
    return off_diagonal_mean((r @ r.T).abs().numpy())


def score_vs_activation(
    mlps: ExpertMLPs, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor
) -> dict[str, Any]:
    """Spearman's rho of the router weight and ||g(W_in[e] x + b_in[e])||, the expert's hidden
    activation norm, over the sampled (token, selected expert) pairs: pooled over every pair,
    and within each expert (the mean over experts with 3 or more pairs), since differences
    between experts can swamp, or reverse, the relation within each. None where fewer than 3
    pairs or a constant side leave no correlation."""
    import torch

    scores, strengths = [], []
    for e in range(mlps.num_experts):
        token, slot = torch.nonzero(index == e, as_tuple=True)
        if token.numel() == 0:
            continue
        xs = x[token].float().to(mlps.w_in.device)
        pre = xs @ mlps.w_in[e].T + (mlps.b_in[e] if mlps.b_in is not None else 0.0)
        strengths.append(mlps.g(pre).norm(dim=-1).double().cpu().numpy())
        scores.append(weights[token, slot].double().cpu().numpy())
    pairs = sum(len(s) for s in scores)
    pooled = _spearman(np.concatenate(scores), np.concatenate(strengths)) if scores else None
    within = [_spearman(a, b) for a, b in zip(scores, strengths, strict=True)]
    finite = [r for r in within if r is not None]
    return {
        "score_activation_spearman": pooled,
        "score_activation_spearman_within": float(np.mean(finite)) if finite else None,
        "score_activation_pairs": pairs,
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho, or None for fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _hidden(model: nn.Module, layer: MoELayer) -> int:
    from sbabench.moe import expert_mlps
    from sbabench.moe.experts import Unsupported

    try:
        return int(expert_mlps(model, layer).w_in.shape[2])
    except Unsupported:
        return int(getattr(getattr(model, "config", None), "hidden_size", 0))


def _run(context: ProbeContext) -> dict[str, Any]:
    from sbabench.moe import expert_mlps
    from sbabench.moe.experts import Unsupported, router_rows

    rows = router_rows(context.model, context.layer, context.inputs.shape[1])
    out = router_coupling_probe(rows, context.inputs, context.weights, context.index)
    out["router_row_abs_cosine_mean"] = router_row_similarity(rows)
    try:
        mlps = expert_mlps(context.model, context.layer)
    except Unsupported as exc:  # the router part stands; say why the activations are missing
        out["score_activation_spearman"] = out["score_activation_spearman_within"] = None
        out["score_activation_unavailable"] = str(exc)
        return out
    return {**out, **score_vs_activation(mlps, context.inputs, context.weights, context.index)}


def _applies(model: nn.Module, layer: MoELayer) -> None:
    from sbabench.moe.experts import router_rows

    router_rows(model, layer, _hidden(model, layer))


register(
    ProbeInfo(
        "router-coupling",
        "router rows vs the mean input each expert receives; router weight vs expert "
        "activation (Spearman); mean |cosine| between router rows",
        NoSettings,
        _run,
        _applies,
    )
)
