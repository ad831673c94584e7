"""The geometry recorder: an observer of MoE combination steps that samples real tokens.

Collecting adds no forward pass: it sees each layer's (outputs, weights, combined) as the
unit's own texts are encoded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sbabench.geometry.stats import describe, histogram, load_balance, routing_stats

if TYPE_CHECKING:
    from sbabench.moe.base import Combination

_EPS = 1e-12


def token_stats(
    outputs: torch.Tensor, weights: torch.Tensor, combined: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token geometry of one layer's combination step (float32, on the input's device).

    norms (t*k,); norm_cv_within_token (t,): CV of the k selected outputs' norms of a token (the
    shared-sphere premise); pairwise_cos (t * k(k-1)/2,); collapse (t,): ||operator output|| /
    (s * sum_i p_i ||y_i||), 1 = on the experts' mean sphere; linear_collapse (t,): the same for
    the linear combination; op_angle_deg and op_norm_ratio (t,): operator output vs linear;
    gate_mass (t,); weight_entropy (t,) (normalised by log k).
    """
    y, w, out = outputs.float(), weights.float(), combined.float()
    norms = torch.linalg.vector_norm(y, dim=-1)
    units = y / norms.clamp_min(_EPS).unsqueeze(-1)
    k = y.shape[1]
    upper = torch.triu_indices(k, k, offset=1, device=y.device)
    gram = units @ units.transpose(1, 2)
    pairwise = gram[:, upper[0], upper[1]].reshape(-1)
    mass = w.sum(-1)
    probs = w / mass.clamp_min(_EPS).unsqueeze(-1)
    linear = (y * w.unsqueeze(-1)).sum(1)
    linear_norm = torch.linalg.vector_norm(linear, dim=-1)
    sphere = (mass * (probs * norms).sum(-1)).clamp_min(_EPS)
    out_norm = torch.linalg.vector_norm(out, dim=-1)
    within = norms.std(dim=1, unbiased=False) / norms.mean(dim=1).clamp_min(_EPS)
    u_out = out / out_norm.clamp_min(_EPS).unsqueeze(-1)
    u_lin = linear / linear_norm.clamp_min(_EPS).unsqueeze(-1)
    cos = (u_out * u_lin).sum(-1)
    # atan2(sin, cos) is exact near 0 degrees, where acos(cos) turns rounding into ~0.01 degree.
    sin = torch.linalg.vector_norm(u_out - cos.unsqueeze(-1) * u_lin, dim=-1)
    entropy = (
        -(probs * probs.clamp_min(_EPS).log()).sum(-1) / math.log(k)
        if k > 1
        else torch.zeros_like(mass)
    )
    return {
        "norms": norms.reshape(-1),
        "norm_cv_within_token": within,
        "pairwise_cos": pairwise,
        "collapse": out_norm / sphere,
        "linear_collapse": linear_norm / sphere,
        "op_angle_deg": torch.rad2deg(torch.atan2(sin, cos)),
        "op_norm_ratio": out_norm / linear_norm.clamp_min(_EPS),
        "gate_mass": mass,
        "weight_entropy": entropy,
    }


class GeometryRecorder:
    """An observer for AggregationPoints that samples real tokens up to a budget per layer."""

    def __init__(
        self,
        budget_tokens: int = 4096,
        per_call: int = 512,
        seed: int = 0,
        keep_inputs: bool = False,
    ) -> None:
        self.budget = budget_tokens
        self.per_call = per_call
        self.seed = seed
        self.keep_inputs = keep_inputs
        """Also keep the sampled tokens' layer inputs, weights and experts (for the probes)."""
        self._kept: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.token_mask: torch.Tensor | None = None
        """(tokens,) bool mask of the current batch's real tokens, set by the encoder."""
        self._samples: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._counts: dict[str, np.ndarray] = {}
        self._load: dict[str, torch.Tensor] = {}
        """(token, slot) counts per expert over every real token seen, per layer."""
        self._load_tokens: dict[str, int] = defaultdict(int)
        self._taken: dict[str, int] = defaultdict(int)
        self._calls: dict[str, int] = defaultdict(int)

    @property
    def complete(self) -> bool:
        """Whether every layer seen so far has its full sample (False before any call)."""
        return bool(self._taken) and min(self._taken.values()) >= self.budget

    @property
    def observed_tokens(self) -> int:
        """Tokens sampled in the layer with the fewest."""
        return min(self._taken.values(), default=0)

    def _count_load(self, call: Combination, rows: torch.Tensor) -> None:
        """Add every real token's selected experts to the layer's load (one bincount; an index
        past the experts, an expert-parallel sentinel, is not counted)."""
        assert call.index is not None
        experts = call.num_experts
        picked = call.index[rows].reshape(-1).clamp(0, experts)
        counts = torch.bincount(picked, minlength=experts + 1)[:experts]
        before = self._load.get(call.layer)
        self._load[call.layer] = counts if before is None else before + counts
        self._load_tokens[call.layer] += int(rows.numel())

    def observe(self, call: Combination) -> None:
        """Count every real token's experts; sample up to `per_call` real tokens of this call
        for the statistics, until the layer's budget is full."""
        layer, outputs, weights, index = call.layer, call.outputs, call.weights, call.index
        with torch.no_grad():
            rows = torch.arange(outputs.shape[0], device=outputs.device)
            mask = self.token_mask
            if mask is not None and mask.numel() == outputs.shape[0]:
                rows = rows[mask.to(outputs.device)]
            if index is not None and call.num_experts:
                self._count_load(call, rows)
            remaining = self.budget - self._taken[layer]
            if remaining <= 0:
                return
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls[layer])
            self._calls[layer] += 1
            take = min(remaining, self.per_call, rows.numel())
            chosen = rows[torch.randperm(rows.numel(), generator=generator)[:take].to(rows.device)]
            stats = token_stats(outputs[chosen], weights[chosen], call.combined[chosen])
            if self.keep_inputs and call.inputs is not None and index is not None:
                kept = self._kept[layer]
                kept["inputs"].append(call.inputs[chosen].float().cpu())
                kept["weights"].append(weights[chosen].float().cpu())
                kept["index"].append(index[chosen].cpu())
            for name, values in stats.items():
                self._samples[layer][name].append(values.cpu())
            if index is not None:
                picked = index[chosen].reshape(-1).cpu().numpy()
                size = max(
                    int(picked.max()) + 1 if picked.size else 0, len(self._counts.get(layer, []))
                )
                counts = np.zeros(size)
                counts[: len(self._counts.get(layer, []))] = self._counts.get(layer, np.zeros(0))
                np.add.at(counts, picked, 1)
                self._counts[layer] = counts
            self._taken[layer] += take

    def probe_sample(self, layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(inputs, weights, index) of the tokens sampled in `layer`, if inputs were kept."""
        kept = self._kept.get(layer)
        if not kept or not kept["inputs"]:
            return None
        return torch.cat(kept["inputs"]), torch.cat(kept["weights"]), torch.cat(kept["index"])

    def layers(self, num_experts: dict[str, int] | None = None) -> dict[str, Any]:
        """Summary statistics and histograms per layer."""
        out: dict[str, Any] = {}
        for layer, samples in self._samples.items():
            data = {name: torch.cat(parts) for name, parts in samples.items()}
            angles = torch.rad2deg(torch.acos(data["pairwise_cos"].clamp(-1, 1)))
            counts = self._counts.get(layer, np.zeros(0))
            if num_experts and layer in num_experts and len(counts) < num_experts[layer]:
                counts = np.pad(counts, (0, num_experts[layer] - len(counts)))
            load = self._load.get(layer)
            out[layer] = {
                "tokens": self._taken[layer],
                "norm": describe(data["norms"]),
                "norm_cv_within_token": describe(data["norm_cv_within_token"]),
                "pairwise_cosine": describe(data["pairwise_cos"]),
                "pairwise_angle_deg": describe(angles),
                "collapse_ratio": describe(data["collapse"]),
                "linear_collapse_ratio": describe(data["linear_collapse"]),
                "operator_vs_linear": {
                    "angle_deg": describe(data["op_angle_deg"]),
                    "norm_ratio": describe(data["op_norm_ratio"]),
                },
                "gate_mass": describe(data["gate_mass"]),
                "weight_entropy": describe(data["weight_entropy"]),
                "routing": routing_stats(counts),
                "load": None
                if load is None
                else load_balance(load.cpu().numpy(), self._load_tokens[layer]),
                "histograms": {
                    "norm": histogram(data["norms"], 40),
                    "pairwise_angle_deg": histogram(angles, 36, 0.0, 180.0),
                    "collapse_ratio": histogram(data["collapse"], 30, 0.0, 1.5),
                },
            }
        return out
