"""Linear and spherical aggregation operators, vectorised over tokens.

Notation for one token: selected experts i = 1..k with outputs y_i and router weights w_i >= 0;
gate mass s = sum_i w_i; p_i = w_i / s; radii n_i = ||y_i||; unit directions d_i = y_i / n_i.

Degenerate cases (each has a test):
- all weights zero (s = 0): every operator returns the zero vector, as linear does.
- a zero-norm output (n_i = 0, or below `eps`) has no direction: it adds its radius to the
  radius mean and nothing to the direction mean.
- directions whose weighted mean vanishes (e.g. two exactly opposite outputs with equal
  weights): the spherical mean is undefined; we fall back to the direction of the
  highest-weight expert (the first one on ties), which keeps the output finite and
  deterministic.
- float16 / bfloat16: reductions accumulate in float32, per-token scalars are float32, the
  result is returned in the input dtype (the exact variants upcast everything to float32).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

_HALF = (torch.float16, torch.bfloat16)
# Angles come from atan2(sin, cos) rather than acos(cos): exact near 0 and pi, finite gradients.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _scaled_norm(x: torch.Tensor) -> torch.Tensor:
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return scale * torch.linalg.vector_norm(x / scale, dim=-1, keepdim=True)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """||x|| over the last dim (keepdim), in float32 or wider, without overflow.

    Squares overflow for entries beyond ~1e19 in float32; only then (checked once per call, a
    sync the MoE routing already pays) is the slower max-scaled formula used.
    """
    out_dtype = _compute_dtype(x.dtype)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).to(out_dtype)
    if bool(torch.isfinite(norm).all()):
        return norm
    return _scaled_norm(x.to(out_dtype))


def _mass_and_probs(weights: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sum_i w_i with shape (T, 1), and p_i = w_i / s (all zero where s = 0)."""
    mass = weights.sum(-1, keepdim=True)
    return mass, weights / mass.clamp_min(eps)


def _radii_and_directions(outputs: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n_i = ||y_i|| with shape (T, k), and d_i = y_i / n_i (zero vector where n_i = 0)."""
    radii = _norm(outputs)
    return radii.squeeze(-1), outputs / radii.clamp_min(eps)


def _top_direction(directions: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The direction of the highest-weight expert of each token (the fallback)."""
    top = probs.argmax(dim=-1)
    return directions[torch.arange(directions.shape[0], device=directions.device), top]


def _normalize_or(vector: torch.Tensor, fallback: torch.Tensor, eps: float) -> torch.Tensor:
    """vector / ||vector||, or `fallback` where ||vector|| < eps."""
    length = _norm(vector)
    return torch.where(length > eps, vector / length.clamp_min(eps), fallback)


def extrinsic_direction(directions: torch.Tensor, probs: torch.Tensor, eps: float) -> torch.Tensor:
    """u = normalize(sum_i p_i d_i): the spherical barycentre computed in the ambient space."""
    mean = torch.einsum("tk,tkh->th", probs, directions)
    return _normalize_or(mean, _top_direction(directions, probs), eps)


def linear(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i y_i: what MoE layers do today. As transformers computes it: the products in the
    promoted dtype of outputs and weights (bf16 outputs with float32 router weights: float32),
    summed over the slots; the AggregationPoint casts the sum to the outputs' dtype."""
    return (outputs * weights.unsqueeze(-1)).sum(dim=1)


def _radius_and_direction(
    outputs: torch.Tensor, weights: torch.Tensor, eps: float, spherical: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gate mass s (T, 1), weighted mean radius r (T, 1) and a unit mean direction u (T, H).

    u = normalize(sum_i c_i y_i) with c_i = p_i / n_i (spherical: the mean of the unit
    directions) or c_i = p_i (the linear direction). Computed as one weighted sum, so the
    (T, k, H) outputs are read twice (norms, sum) and never copied; half precision outputs stay
    half (reductions accumulate in float32), the (T, k) and (T, 1) scalars are float32. Where the
    mean vanishes, u falls back to the highest-weight expert's direction.
    """
    mass, probs = _mass_and_probs(weights.to(_compute_dtype(weights.dtype)), eps)
    radii = _norm(outputs).squeeze(-1)
    radius = (probs * radii).sum(-1, keepdim=True)
    coefficients = probs / radii.clamp_min(eps) if spherical else probs
    mean = torch.einsum("tk,tkh->th", coefficients.to(outputs.dtype), outputs)
    length = _norm(mean)
    top = probs.argmax(dim=-1)
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    fallback = outputs[rows, top] / radii[rows, top].clamp_min(eps).unsqueeze(-1)
    direction = torch.where(length > eps, mean / length.clamp_min(eps), fallback)
    return mass, radius, direction


def sba(outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical Barycentric Aggregation: s * r * u.

    r = sum_i p_i ||y_i|| (weighted mean radius), u = normalize(sum_i p_i y_i / ||y_i||).
    Scaling by the gate mass s makes equal expert outputs give exactly the linear result, also
    for routers whose top-k weights do not sum to 1.
    """
    mass, radius, direction = _radius_and_direction(outputs, weights, eps, spherical=True)
    return (mass * radius * direction).to(outputs.dtype)


def sba_single_pass(
    outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """SBA as one expression for a compiler to fuse (the `sba-fused` operator).

    The same quantities as `sba`, written without host syncs or data-dependent branches, so
    that `torch.compile` makes one kernel of it that reads each token's (k, hidden) outputs from
    memory once (the norms and the weighted sum then run on data already in cache): half
    precision is computed in float32 throughout and the norms are always max-scaled (no
    overflow check needed). Run eagerly it is correct but not faster (the upcast is a copy).
    """
    dtype = _compute_dtype(outputs.dtype)
    y, w = outputs.to(dtype), weights.to(dtype)
    mass = w.sum(-1, keepdim=True)
    probs = w / mass.clamp_min(eps)
    radii = _scaled_norm(y).squeeze(-1)
    radius = (probs * radii).sum(-1, keepdim=True)
    mean = ((probs / radii.clamp_min(eps)).unsqueeze(-1) * y).sum(1)
    length = _scaled_norm(mean)
    top = probs.argmax(dim=-1, keepdim=True)
    fallback = y.gather(1, top.unsqueeze(-1).expand(-1, 1, y.shape[-1])).squeeze(1)
    fallback = fallback / radii.gather(1, top).clamp_min(eps)
    direction = torch.where(length > eps, mean / length.clamp_min(eps), fallback)
    return (mass * radius * direction).to(outputs.dtype)


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def sba_fused(outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`sba_single_pass` through `torch.compile`: compiled once per process on first use (with
    dynamic token counts; recompiled per dtype). Where torch.compile cannot run (no C compiler,
    an unsupported device) it warns once and runs the same expression eagerly."""
    compiled = _COMPILED.get("sba")
    if compiled is not None:
        return compiled(outputs, weights, eps)
    compiled = torch.compile(sba_single_pass, dynamic=True, fullgraph=True)
    try:
        out = compiled(outputs, weights, eps)
    except Exception as exc:  # the compiler's own failure: the same expression, eagerly
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        logging.getLogger("sbabench").warning(
            "sbabench: torch.compile failed (%s); sba-fused runs eagerly", first
        )
        _COMPILED["sba"] = sba_single_pass
        return sba_single_pass(outputs, weights, eps)
    _COMPILED["sba"] = compiled
    return out


def radius_only(outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Ablation: the linear direction normalize(sum_i w_i y_i) with SBA's radius s * r."""
    mass, radius, direction = _radius_and_direction(outputs, weights, eps, spherical=False)
    return (mass * radius * direction).to(outputs.dtype)


def direction_only(outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Ablation: SBA's direction u with the linear radius ||sum_i w_i y_i||."""
    _, _, direction = _radius_and_direction(outputs, weights, eps, spherical=True)
    radius = _norm(linear(outputs, weights))
    return (radius * direction).to(outputs.dtype)


def _valid_probs(probs: torch.Tensor, radii: torch.Tensor, eps: float) -> torch.Tensor:
    """p_i restricted to experts with a direction (n_i > eps), renormalised to sum to 1."""
    masked = probs * (radii > eps)
    return masked / masked.sum(-1, keepdim=True).clamp_min(eps)


def karcher_direction(
    directions: torch.Tensor, probs: torch.Tensor, eps: float, iters: int, tol: float
) -> torch.Tensor:
    """Weighted Frechet (Karcher) mean on the unit sphere by fixed-point iteration.

    u <- exp_u(sum_i p_i log_u(d_i)), log_u(d) = theta (d - cos(theta) u) / ||d - cos(theta) u||,
    exp_u(v) = cos(||v||) u + sin(||v||) v / ||v||; starts at the extrinsic mean and stops after
    `iters` steps or when the largest step is below `tol`.
    """
    u = extrinsic_direction(directions, probs, eps)
    for _ in range(iters):
        cos = torch.einsum("tkh,th->tk", directions, u)
        tangent = directions - cos.unsqueeze(-1) * u.unsqueeze(1)
        sin = _norm(tangent)
        theta = torch.atan2(sin.squeeze(-1), cos)
        log = theta.unsqueeze(-1) * tangent / sin.clamp_min(eps)
        step = torch.einsum("tk,tkh->th", probs, log)
        length = _norm(step)
        u = torch.cos(length) * u + torch.sin(length) * step / length.clamp_min(eps)
        u = u / _norm(u).clamp_min(eps)
        if float(length.detach().max()) < tol:
            break
    return u


def sba_karcher(
    outputs: torch.Tensor,
    weights: torch.Tensor,
    eps: float = 1e-6,
    iters: int = 20,
    tol: float = 1e-6,
) -> torch.Tensor:
    """SBA with the intrinsic barycentre: s * r * karcher_mean(d_i; p_i)."""
    dtype = outputs.dtype
    y, w = outputs.to(_compute_dtype(dtype)), weights.to(_compute_dtype(dtype))
    mass, probs = _mass_and_probs(w, eps)
    radii, directions = _radii_and_directions(y, eps)
    radius = (probs * radii).sum(-1, keepdim=True)
    direction = karcher_direction(directions, _valid_probs(probs, radii, eps), eps, iters, tol)
    return (mass * radius * direction).to(dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float) -> torch.Tensor:
    """Geodesic interpolation from unit a (t=0) to unit b (t=1); t has shape (T, 1)."""
    cos = (a * b).sum(-1, keepdim=True)
    sin = _norm(b - cos * a)
    theta = torch.atan2(sin, cos)
    curved = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / sin.clamp_min(eps)
    chord = _normalize_or((1 - t) * a + t * b, a, eps)
    return torch.where(sin > eps, curved, chord)


def slerp(outputs: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """s * r * slerp direction; exact weighted geodesic mean for k = 2.

    For k > 2 the direction is built incrementally: experts sorted by weight (descending),
    u_1 = d_1, u_j = slerp(u_{j-1}, d_j, p_j / (p_1 + ... + p_j)). This is exact for k = 2 and an
    order-dependent approximation of the Karcher mean beyond; use `sba-karcher` for the exact one.
    """
    dtype = outputs.dtype
    y, w = outputs.to(_compute_dtype(dtype)), weights.to(_compute_dtype(dtype))
    mass, probs = _mass_and_probs(w, eps)
    radii, directions = _radii_and_directions(y, eps)
    radius = (probs * radii).sum(-1, keepdim=True)
    valid = _valid_probs(probs, radii, eps)
    # Experts with a direction first, heaviest first, so that u starts on a real direction.
    order = torch.argsort(valid + 2.0 * (radii > eps), dim=-1, descending=True)
    valid = valid.gather(1, order)
    directions = directions.gather(1, order.unsqueeze(-1).expand_as(directions))
    u = directions[:, 0]
    acc = valid[:, :1]
    for j in range(1, directions.shape[1]):
        acc = acc + valid[:, j : j + 1]
        t = valid[:, j : j + 1] / acc.clamp_min(eps)
        u = _slerp(u, directions[:, j], t, eps)
    return (mass * radius * u).to(dtype)
