"""Geometry statistics: the evidence for or against SBA's premise on the model at hand.

Per MoE layer, on a seeded sample of real (non-padding) tokens observed during the unit's own
encoding (so collecting them adds no forward pass): norm concentration of the selected experts'
outputs, angles between them, the collapse ratio ||sum_i w_i y_i|| / (s * sum_i p_i ||y_i||)
(1 = no collapse), how far the operator's output is from the linear one, and routing (expert
load, imbalance, entropy, gate mass). On the final embeddings: pre-normalisation norms,
anisotropy (mean pairwise cosine), effective rank, and the mean cosine to the linear
operator's embeddings of the same texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from sbabench.geometry.spec import GeometrySpec

GEOMETRY_VERSION = 6
"""5: `load` (expert load over every real token the layer saw) added. 6: the router-coupling
probe adds score vs activation and router-row similarity."""
EMBEDDING_SAMPLE = 2000
"""A task's final embeddings enter its statistics up to this many texts (the first asked for)."""
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_EPS = 1e-12


def describe(values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, std, coefficient of variation and quantiles of a 1-D sample."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {}
    mean, std = float(x.mean()), float(x.std())
    out = {"mean": mean, "std": std, "cv": std / mean if mean else float("nan")}
    for q, v in zip(_QUANTILES, np.quantile(x, _QUANTILES), strict=True):
        out[f"q{round(q * 100):02d}"] = float(v)
    return out


def histogram(
    values: torch.Tensor | np.ndarray, bins: int, lo: float | None = None, hi: float | None = None
) -> dict[str, list[float]]:
    """Bin edges and counts (for plots)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {"edges": [], "counts": []}
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}


def routing_stats(counts: np.ndarray) -> dict[str, Any]:
    """Load fractions, imbalance (CV and max/mean - 1) and normalised entropy of expert loads."""
    total = counts.sum()
    if total == 0:
        return {}
    load = counts / total
    mean = load.mean()
    nonzero = load[load > 0]
    entropy = (
        float(-(nonzero * np.log(nonzero)).sum() / math.log(len(load))) if len(load) > 1 else 0.0
    )
    return {
        "load": load.tolist(),
        "load_cv": float(load.std() / mean),
        "load_max_over_mean_minus_1": float(load.max() / mean - 1),
        "load_entropy": entropy,
    }


def load_balance(counts: np.ndarray, tokens: int) -> dict[str, Any]:
    """Load balance of one MoE layer from its (token, slot) counts per expert over `tokens` real
    tokens: each expert's count, max/mean load, CV, normalised routing entropy (1 = uniform) and
    the experts that received no token."""
    counts = np.asarray(counts, dtype=np.int64)
    routing = routing_stats(counts.astype(np.float64))  # {} when no token was routed
    return {
        "tokens": int(tokens),
        "tokens_per_expert": counts.tolist(),
        "max_over_mean": routing["load_max_over_mean_minus_1"] + 1 if routing else None,
        "cv": routing.get("load_cv"),
        "entropy": routing.get("load_entropy", 0.0),
        "idle_experts": int((counts == 0).sum()),
        "experts": len(counts),
    }


def effective_rank(vectors: np.ndarray) -> float:
    """exp(entropy of the normalised singular values) (Roy & Vetterli 2007)."""
    return rank_from_singular(
        np.linalg.svd(np.asarray(vectors, dtype=np.float64), compute_uv=False)
    )


def rank_from_singular(singular: np.ndarray) -> float:
    """The effective rank of a matrix given its singular values."""
    singular = np.clip(np.asarray(singular, dtype=np.float64), 0, None)
    p = singular / max(singular.sum(), _EPS)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_stats(
    vectors: np.ndarray,
    prenorm_norms: Sequence[float],
    linear_vectors: np.ndarray | None = None,
    max_texts: int = EMBEDDING_SAMPLE,
) -> dict[str, Any]:
    """Statistics of a task's final embeddings (rows: texts, at most `max_texts`)."""
    x = np.asarray(vectors[:max_texts], dtype=np.float64)
    units = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), _EPS, None)
    n = len(units)
    cos = units @ units.T
    anisotropy = float((cos.sum() - np.trace(cos)) / (n * (n - 1))) if n > 1 else float("nan")
    out: dict[str, Any] = {
        "texts": n,
        "anisotropy_mean_cosine": anisotropy,
        "effective_rank": effective_rank(x),
        "prenorm_norm": describe(np.asarray(prenorm_norms)) if len(prenorm_norms) else None,
    }
    if linear_vectors is not None:
        y = np.asarray(linear_vectors[:max_texts], dtype=np.float64)
        y = y / np.clip(np.linalg.norm(y, axis=1, keepdims=True), _EPS, None)
        out["cosine_to_linear"] = describe((units * y).sum(1))
    return out


def reusable(block: dict[str, Any] | None, spec: GeometrySpec) -> bool:
    """Whether a stored geometry block is of this version and holds what `spec` asks for."""
    return (block or {}).get("version") == GEOMETRY_VERSION and covers(block, spec)


def covers(block: dict[str, Any] | None, spec: GeometrySpec) -> bool:
    """Whether a geometry block observed MoE layers and holds `spec`'s probes, computed with
    the same probe settings."""
    layers = (block or {}).get("layers") or {}
    if not layers:
        return False
    if not spec.probes:
        return True
    recorded = (block or {}).get("probes") or {}
    same = all(
        recorded.get(field) == value
        for settings in spec.requested().values()
        for field, value in settings.model_dump().items()
    )
    return same and all(
        set(spec.probes) <= set(layer.get("probes") or {}) for layer in layers.values()
    )
