"""The `expert-pca` probe: a router-weighted PCA of the inputs routed to each expert (weights =
the token's top-k router weight for that expert): effective rank, variance in the top-m
components, and Grassmann distances between the experts' top-m principal subspaces
(||principal angles||_2, normalised so 1 = orthogonal subspaces) ("representational overlap"),
next to the split-half distance of each expert with itself (the sampling-noise floor).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sbabench.geometry.probes.common import EPS, matrix, off_diagonal_mean, routed
from sbabench.geometry.probes.registry import ProbeContext, ProbeInfo, register
from sbabench.geometry.stats import rank_from_singular

if TYPE_CHECKING:
    import torch


class ExpertPcaSettings(BaseModel):
    """Settings of the `expert-pca` probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    subspace_dim: int = Field(
        8, ge=1, le=4096, description="principal components per expert for the Grassmann distances"
    )


def _weighted_pca(xs: torch.Tensor, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Singular values of the weighted, centred rows and the principal directions (columns),
    largest first, from the eigendecomposition of the weighted covariance (float64)."""
    import torch

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
    import torch

    bases: dict[int, np.ndarray] = {}
    per_expert: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(seed)
    for e in range(experts):
        xs, w = routed(x, weights, index, e)
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
            "top_m_variance": float(variance[:dim].sum() / max(variance.sum(), EPS)),
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
        "grassmann_matrix": matrix(distance),
        "grassmann_mean": off_diagonal_mean(distance),
        "grassmann_split_half_mean": float(np.mean(floor)) if floor else None,
        "principal_angle_mean_deg": off_diagonal_mean(angle),
    }


def _run(context: ProbeContext) -> dict[str, Any]:
    return expert_pca_probe(
        context.inputs,
        context.weights,
        context.index,
        context.layer.num_experts,
        context.settings.subspace_dim,
        context.seed,
    )


register(
    ProbeInfo(
        "expert-pca",
        "router-weighted PCA of each expert's inputs and Grassmann distances between experts",
        ExpertPcaSettings,
        _run,
    )
)
