"""Deeper geometry probes (opt-in: `geometry: {probes: [...]}` in the suite).

Each is computed per MoE layer on the tokens the GeometryRecorder sampled, with the layer's input
(what the router and the experts saw) kept for them:

- `jacobian`: each expert's input Jacobian J_e(x) (closed form for two-layer MLP experts, see
  sbabench.moe.experts) at `jacobian_tokens` of the sampled tokens. Spectra of the experts a
  token selected (leading singular value, stable rank ||J||_F^2 / s_1^2, the power-law decay
  exponent a of s_i ~ s_1 i^-a over the leading singular values) and the cross-expert alignment
  |<J_i, J_j>_F| / (||J_i||_F ||J_j||_F) for every pair of experts at the same token
  ("functional decorrelation": 0 = unrelated maps, 1 = the same map up to scale).
- `expert-pca`: a router-weighted PCA of the inputs routed to each expert (weights = the
  token's top-k router weight for that expert): effective rank, variance in the top-m
  components, and Grassmann distances between the experts' top-m principal subspaces
  (||principal angles||_2, normalised so 1 = orthogonal subspaces) ("representational overlap"),
  next to the split-half distance of each expert with itself (the sampling-noise floor).
- `router-coupling`: cosine between each router row (or centroid) and the router-weighted mean
  input routed to that expert, against the other experts' mean inputs (the margin says whether
  a router row points at what its expert actually receives).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sbabench.geometry import describe, rank_from_singular

if TYPE_CHECKING:
    from torch import nn

    from sbabench.geometry import GeometryRecorder
    from sbabench.moe.base import MoELayer
    from sbabench.moe.experts import ExpertMLPs

PROBES = ("jacobian", "expert-pca", "router-coupling")
_SPECTRUM_SHOWN = 16
_DECAY_FIT = 32
_EPS = 1e-12
_CHUNK_BYTES = 512 * 2**20


def _matrix(values: np.ndarray) -> list[list[float | None]]:
    """A JSON-friendly matrix (NaN -> None)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


def _off_diagonal_mean(values: np.ndarray) -> float | None:
    off = values[~np.eye(len(values), dtype=bool)]
    off = off[~np.isnan(off)]
    return float(off.mean()) if off.size else None


def jacobian_probe(
    mlps: ExpertMLPs, x: torch.Tensor, index: torch.Tensor, chunk: int | None = None
) -> dict[str, Any]:
    """Spectra of the selected experts' Jacobians and the alignment of all experts' Jacobians.

    Tokens go through in chunks of `chunk` (default: as many as keep one chunk's Jacobians and
    intermediates near 512 MiB).
    """
    experts = mlps.num_experts
    if chunk is None:
        per_token = 4 * experts * x.shape[1] * max(x.shape[1], mlps.w_in.shape[1])
        chunk = max(1, _CHUNK_BYTES // per_token)
    alignment_sum = torch.zeros(experts, experts, dtype=torch.float64)
    selected_alignment: list[torch.Tensor] = []
    singular: list[torch.Tensor] = []
    frobenius: list[torch.Tensor] = []
    k = index.shape[1]
    pairs = torch.triu_indices(k, k, offset=1)
    for start in range(0, x.shape[0], chunk):
        xs, idx = x[start : start + chunk], index[start : start + chunk].to(x.device)
        jac = mlps.jacobians(xs)  # (t, experts, hidden, hidden)
        flat = jac.flatten(2)
        gram = flat @ flat.transpose(1, 2)
        norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
        align = gram.abs() / (norms.unsqueeze(2) * norms.unsqueeze(1)).clamp_min(_EPS)
        alignment_sum += align.sum(0).double().cpu()
        valid = idx.clamp_max(experts - 1)  # an out-of-range sentinel is masked just below
        rows = torch.arange(len(xs), device=x.device).unsqueeze(1)
        if k > 1:
            picked = align[rows, valid[:, pairs[0]], valid[:, pairs[1]]]
            ok = (idx[:, pairs[0]] < experts) & (idx[:, pairs[1]] < experts)
            selected_alignment.append(picked[ok].cpu())
        chosen = jac[rows, valid][idx < experts]  # (selected, hidden, hidden)
        singular.append(torch.linalg.svdvals(chosen).cpu())
        frobenius.append(norms[rows, valid][idx < experts].cpu())
    s = torch.cat(singular).double()
    fro = torch.cat(frobenius).double()
    top = s[:, 0].clamp_min(_EPS)
    fit = min(_DECAY_FIT, s.shape[1])
    log_i = torch.log(torch.arange(1, fit + 1, dtype=torch.float64))
    log_s = torch.log(s[:, :fit].clamp_min(_EPS))
    centred = log_i - log_i.mean()
    # least-squares slope of log s_i on log i; the decay exponent is its negative
    decay = -((log_s - log_s.mean(1, keepdim=True)) * centred).sum(1) / (centred**2).sum()
    alignment = (alignment_sum / x.shape[0]).numpy()
    return {
        "tokens": int(x.shape[0]),
        "sigma_1": describe(top),
        "stable_rank": describe(fro**2 / top**2),
        "decay_exponent": describe(decay),
        "normalised_spectrum": (s[:, :_SPECTRUM_SHOWN] / top.unsqueeze(1)).mean(0).tolist(),
        "alignment_matrix": _matrix(alignment),
        "alignment_mean": _off_diagonal_mean(alignment),
        "alignment_selected_pairs": describe(torch.cat(selected_alignment))
        if selected_alignment
        else None,
    }


def _routed(
    x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor, expert: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs routed to `expert` and their router weights."""
    token, slot = torch.nonzero(index == expert, as_tuple=True)
    return x[token].double(), weights[token, slot].double().clamp_min(0)


def _weighted_pca(xs: torch.Tensor, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Singular values of the weighted, centred rows and the principal directions (columns),
    largest first, from the eigendecomposition of the weighted covariance (float64)."""
    p = w / w.sum()
    centred = xs - (p.unsqueeze(1) * xs).sum(0)
    covariance = (centred * p.unsqueeze(1)).T @ centred
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    singular = eigenvalues.flip(0).clamp_min(0).sqrt()
    return singular.numpy(), vectors.flip(1).numpy()


def _grassmann(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Normalised Grassmann distance (1 = orthogonal) and mean principal angle in degrees."""
    from scipy.linalg import subspace_angles

    theta = subspace_angles(a, b)
    dim = a.shape[1]
    return float(np.linalg.norm(theta) / (math.sqrt(dim) * math.pi / 2)), float(
        np.degrees(theta).mean()
    )


def expert_pca_probe(
    x: torch.Tensor,
    weights: torch.Tensor,
    index: torch.Tensor,
    experts: int,
    dim: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Router-weighted PCA of each expert's inputs and Grassmann distances between subspaces.

    The split-half distance (an expert's subspace from one random half of its tokens against
    the other half) is the sampling-noise floor the distances between experts compare with.
    """
    bases: dict[int, np.ndarray] = {}
    per_expert: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(seed)
    for e in range(experts):
        xs, w = _routed(x, weights, index, e)
        if xs.shape[0] <= dim or float(w.sum()) <= 0:
            per_expert.append({"tokens": int(xs.shape[0]), "note": f"needs more than {dim} tokens"})
            continue
        singular, directions = _weighted_pca(xs, w)
        variance = singular**2
        bases[e] = directions[:, :dim]
        stats: dict[str, Any] = {
            "tokens": int(xs.shape[0]),
            "weight": float(w.sum()),
            "effective_rank": rank_from_singular(singular),
            "top_m_variance": float(variance[:dim].sum() / max(variance.sum(), _EPS)),
        }
        order = torch.randperm(xs.shape[0], generator=generator)
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        if min(len(h) for h in halves) > dim:
            a, b = (_weighted_pca(xs[h], w[h])[1][:, :dim] for h in halves)
            stats["split_half_grassmann"] = _grassmann(a, b)[0]
        per_expert.append(stats)
    distance = np.full((experts, experts), np.nan)
    angle = np.full((experts, experts), np.nan)
    for i in bases:
        for j in bases:
            distance[i, j], angle[i, j] = _grassmann(bases[i], bases[j]) if i != j else (0.0, 0.0)
    ranks = [p["effective_rank"] for p in per_expert if "effective_rank" in p]
    floor = [p["split_half_grassmann"] for p in per_expert if "split_half_grassmann" in p]
    return {
        "subspace_dim": dim,
        "experts": per_expert,
        "effective_rank_mean": float(np.mean(ranks)) if ranks else None,
        "grassmann_matrix": _matrix(distance),
        "grassmann_mean": _off_diagonal_mean(distance),
        "grassmann_split_half_mean": float(np.mean(floor)) if floor else None,
        "principal_angle_mean_deg": _off_diagonal_mean(angle),
    }


def router_coupling_probe(
    rows: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor
) -> dict[str, Any]:
    """Cosine of each router row with the mean input routed to each expert."""
    experts = rows.shape[0]
    means = torch.full((experts, x.shape[1]), float("nan"), dtype=torch.float64)
    for e in range(experts):
        xs, w = _routed(x, weights, index, e)
        if float(w.sum()) > 0:
            means[e] = (w.unsqueeze(1) * xs).sum(0) / w.sum()
    r = rows.double().cpu()
    r = r / r.norm(dim=1, keepdim=True).clamp_min(_EPS)
    m = means / means.norm(dim=1, keepdim=True).clamp_min(_EPS)
    cosine = (r @ m.T).numpy()  # [row e, mean input of expert j]
    own = np.diag(cosine)
    off = np.where(np.eye(experts, dtype=bool), np.nan, cosine)
    with np.errstate(invalid="ignore"):
        others = np.nanmean(off, axis=1) if experts > 1 else np.full(experts, np.nan)
    margin = own - others
    return {
        "cosine_own": [None if math.isnan(v) else float(v) for v in own],
        "cosine_own_mean": float(np.nanmean(own)) if not np.isnan(own).all() else None,
        "cosine_other_mean": _off_diagonal_mean(cosine),
        "margin_mean": float(np.nanmean(margin)) if not np.isnan(margin).all() else None,
        "matrix": _matrix(cosine),
    }


def support(model: nn.Module, layer: MoELayer) -> dict[str, str]:
    """Per probe, "ok" or why it cannot run on `layer` (reads the weights, runs nothing)."""
    from sbabench.moe.experts import Unsupported, expert_mlps, router_rows

    out = dict.fromkeys(PROBES, "ok")
    hidden = int(getattr(getattr(model, "config", None), "hidden_size", 0))
    try:
        hidden = int(expert_mlps(model, layer).w_in.shape[2])
    except Unsupported as exc:
        out["jacobian"] = str(exc)
    try:
        router_rows(model, layer, hidden)
    except Unsupported as exc:
        out["router-coupling"] = str(exc)
    return out


def run_probes(
    probes: list[str],
    recorder: GeometryRecorder,
    model: nn.Module,
    layers: list[MoELayer],
    *,
    jacobian_tokens: int,
    subspace_dim: int,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Probe results per layer name and probe name; a probe that cannot run says why."""
    from sbabench.moe.experts import Unsupported, expert_mlps, router_rows

    out: dict[str, dict[str, Any]] = {}
    device = next(model.parameters()).device
    for layer in layers:
        sample = recorder.probe_sample(layer.name)
        if sample is None:
            continue
        x, weights, index = sample
        results: dict[str, Any] = {}
        for probe in probes:
            try:
                with torch.no_grad():
                    if probe == "jacobian":
                        mlps = expert_mlps(model, layer)
                        # a seeded subset spread over the whole sample, not its first batch
                        generator = torch.Generator().manual_seed(seed)
                        pick = torch.randperm(len(x), generator=generator)[:jacobian_tokens]
                        results[probe] = jacobian_probe(mlps, x[pick].to(device), index[pick])
                    elif probe == "expert-pca":
                        results[probe] = expert_pca_probe(
                            x, weights, index, layer.num_experts, subspace_dim, seed
                        )
                    else:
                        rows = router_rows(model, layer, x.shape[1])
                        results[probe] = router_coupling_probe(rows, x, weights, index)
            except Unsupported as exc:
                results[probe] = {"unavailable": str(exc)}
        out[layer.name] = results
    return out
