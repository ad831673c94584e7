"""The `jacobian` probe: each expert's input Jacobian J_e(x) (closed form for two-layer MLP
experts, see sbabench.moe.experts) at `jacobian_tokens` of the sampled tokens. Spectra of the
experts a token selected (leading singular value, stable rank ||J||_F^2 / s_1^2, the power-law
decay exponent a of s_i ~ s_1 i^-a over the leading singular values) and the cross-expert
alignment |<J_i, J_j>_F| / (||J_i||_F ||J_j||_F) for every pair of experts at the same token
("functional decorrelation": 0 = unrelated maps, 1 = the same map up to scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sbabench.geometry.probes.common import EPS, matrix, off_diagonal_mean
from sbabench.geometry.probes.registry import ProbeContext, ProbeInfo, register
from sbabench.geometry.stats import describe

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sbabench.moe.base import MoELayer
    from sbabench.moe.experts import ExpertMLPs

_SPECTRUM_SHOWN = 16
_DECAY_FIT = 32
_CHUNK_BYTES = 512 * 2**20


class JacobianSettings(BaseModel):
    """Settings of the `jacobian` probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    jacobian_tokens: int = Field(
        32, ge=1, le=100_000, description="sampled tokens at which every expert's Jacobian is taken"
    )


@dataclass
class _Sums:
    """What the chunks of tokens add up to."""

    experts: int
    alignment: Any = None
    """(experts, experts) sum over tokens of |<J_i, J_j>_F| / (||J_i||_F ||J_j||_F)."""
    selected_alignment: list[Any] = field(default_factory=list)
    singular: list[Any] = field(default_factory=list)
    frobenius: list[Any] = field(default_factory=list)


def _add_chunk(sums: _Sums, mlps: ExpertMLPs, xs: torch.Tensor, idx: torch.Tensor) -> None:
    """Jacobians of every expert at a chunk of tokens: alignment, and the selected ones' spectra."""
    import torch

    experts, k = sums.experts, idx.shape[1]
    jac = mlps.jacobians(xs)  # (t, experts, hidden, hidden)
    flat = jac.flatten(2)
    gram = flat @ flat.transpose(1, 2)
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    align = gram.abs() / (norms.unsqueeze(2) * norms.unsqueeze(1)).clamp_min(EPS)
    sums.alignment += align.sum(0).double().cpu()
    valid = idx.clamp_max(experts - 1)  # an out-of-range sentinel is masked just below
    rows = torch.arange(len(xs), device=xs.device).unsqueeze(1)
    if k > 1:
        pairs = torch.triu_indices(k, k, offset=1)
        picked = align[rows, valid[:, pairs[0]], valid[:, pairs[1]]]
        ok = (idx[:, pairs[0]] < experts) & (idx[:, pairs[1]] < experts)
        sums.selected_alignment.append(picked[ok].cpu())
    chosen = jac[rows, valid][idx < experts]  # (selected, hidden, hidden)
    sums.singular.append(torch.linalg.svdvals(chosen).cpu())
    sums.frobenius.append(norms[rows, valid][idx < experts].cpu())


def _summary(sums: _Sums, tokens: int) -> dict[str, Any]:
    """Spectra statistics of the selected experts and the mean alignment matrix."""
    import torch

    s = torch.cat(sums.singular).double()
    fro = torch.cat(sums.frobenius).double()
    top = s[:, 0].clamp_min(EPS)
    fit = min(_DECAY_FIT, s.shape[1])
    log_i = torch.log(torch.arange(1, fit + 1, dtype=torch.float64))
    log_s = torch.log(s[:, :fit].clamp_min(EPS))
    centred = log_i - log_i.mean()
    # least-squares slope of log s_i on log i; the decay exponent is its negative
    decay = -((log_s - log_s.mean(1, keepdim=True)) * centred).sum(1) / (centred**2).sum()
    alignment = (sums.alignment / tokens).numpy()
    return {
        "tokens": tokens,
        "sigma_1": describe(top),
        "stable_rank": describe(fro**2 / top**2),
        "decay_exponent": describe(decay),
        "normalised_spectrum": (s[:, :_SPECTRUM_SHOWN] / top.unsqueeze(1)).mean(0).tolist(),
        "alignment_matrix": matrix(alignment),
        "alignment_mean": off_diagonal_mean(alignment),
        "alignment_selected_pairs": describe(torch.cat(sums.selected_alignment))
        if sums.selected_alignment
        else None,
    }


def jacobian_probe(
    mlps: ExpertMLPs, x: torch.Tensor, index: torch.Tensor, chunk: int | None = None
) -> dict[str, Any]:
    """Spectra of the selected experts' Jacobians and the alignment of all experts' Jacobians.

    Tokens go through in chunks of `chunk` (default: as many as keep one chunk's Jacobians and
    intermediates near 512 MiB).
    """
    import torch

    experts = mlps.num_experts
    if chunk is None:
        per_token = 4 * experts * x.shape[1] * max(x.shape[1], mlps.w_in.shape[1])
        chunk = max(1, _CHUNK_BYTES // per_token)
    sums = _Sums(experts, alignment=torch.zeros(experts, experts, dtype=torch.float64))
    for start in range(0, x.shape[0], chunk):
        xs, idx = x[start : start + chunk], index[start : start + chunk].to(x.device)
        _add_chunk(sums, mlps, xs, idx)
    return _summary(sums, int(x.shape[0]))


def _run(context: ProbeContext) -> dict[str, Any]:
    import torch

    from sbabench.moe import expert_mlps

    mlps = expert_mlps(context.model, context.layer)
    # a seeded subset spread over the whole sample, not its first batch
    generator = torch.Generator().manual_seed(context.seed)
    pick = torch.randperm(len(context.inputs), generator=generator)[
        : context.settings.jacobian_tokens
    ]
    device = next(context.model.parameters()).device
    return jacobian_probe(mlps, context.inputs[pick].to(device), context.index[pick])


def _applies(model: nn.Module, layer: MoELayer) -> None:
    from sbabench.moe import expert_mlps

    expert_mlps(model, layer)


def _check(settings: JacobianSettings, tokens: int) -> str | None:
    if settings.jacobian_tokens > tokens:
        return f"jacobian_tokens ({settings.jacobian_tokens}) cannot exceed tokens ({tokens})"
    return None


register(
    ProbeInfo(
        "jacobian",
        "spectra and cross-expert alignment of the experts' input Jacobians",
        JacobianSettings,
        _run,
        _applies,
        _check,
    )
)
