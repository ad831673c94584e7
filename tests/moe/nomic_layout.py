"""A tiny, randomly initialised module tree with NomicBERT-MoE's layout and parameter names.

Written from the architecture's public description (nomic-embed-text-v2-moe): post-LN blocks,
MoE MLP on odd layers, router = bias-free linear `layer` + softmax over all experts + top-k (no
renormalisation), experts = packed `mlp.w1` / `mlp.w2` of shape (experts * ffn, hidden), GELU,
weighted sum over the top-k, then one shared `bias`. The reference forward is the upstream
behaviour the adapter must reproduce with `linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NomicRouter(nn.Module):
    def __init__(self, hidden: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.moe_top_k = top_k
        self.layer = nn.Linear(hidden, experts, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = self.layer(x.reshape(-1, x.shape[-1])).softmax(dim=-1, dtype=torch.float32)
        top_weights, top_experts = torch.topk(weights, self.moe_top_k, dim=-1)
        return weights.to(x.dtype), top_weights.to(x.dtype), top_experts


class NomicExpertMLP(nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int) -> None:
        super().__init__()
        self.moe_num_experts = experts
        self.ffn_hidden_size = ffn
        self.w1 = nn.Parameter(torch.randn(experts * ffn, hidden) * 0.2)
        self.w2 = nn.Parameter(torch.randn(experts * ffn, hidden) * 0.2)
        self.activation_fn = F.gelu

    def forward(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        shape = (self.moe_num_experts, self.ffn_hidden_size, x.shape[-1])
        return self.activation_fn(x @ self.w1.view(shape)[expert].T) @ self.w2.view(shape)[expert]


class NomicExperts(nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int) -> None:
        super().__init__()
        self.moe_num_experts = experts
        self.mlp = NomicExpertMLP(hidden, ffn, experts)
        self.bias = nn.Parameter(torch.randn(hidden) * 0.1)

    def forward(
        self,
        x: torch.Tensor,
        weights: torch.Tensor,
        top_weights: torch.Tensor,
        top_experts: torch.Tensor,
    ) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.zeros_like(flat)
        for expert in range(self.moe_num_experts):
            token, slot = torch.where(top_experts == expert)
            if token.numel():
                out.index_add_(
                    0, token, self.mlp(flat[token], expert) * top_weights[token, slot, None]
                )
        return out.reshape(x.shape) + self.bias


class NomicMoELayer(nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.router = NomicRouter(hidden, experts, top_k)
        self.experts = NomicExperts(hidden, ffn, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, top_weights, top_experts = self.router(x)
        return self.experts(x, weights, top_weights, top_experts)


class Block(nn.Module):
    def __init__(self, hidden: int, moe: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden, 4, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.mlp: nn.Module = (
            NomicMoELayer(hidden, 2 * hidden, 8, 2)
            if moe
            else nn.Sequential(
                nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden)
            )
        )
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.mlp(x))


class TinyNomicMoE(nn.Module):
    """Four post-LN blocks, MoE on the odd ones, 8 experts, top-2."""

    def __init__(self, vocab: int = 50, hidden: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(hidden, moe=i % 2 == 1) for i in range(layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return x
