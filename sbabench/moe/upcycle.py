"""Drop-upcycling: an MoE built from a dense BERT-like encoder.

Each chosen layer's FFN is copied into E experts; in each expert a fraction r of the
intermediate neurons is re-initialised from the statistics of the original weights
(Nakamura et al., "Drop-Upcycling", ICLR 2025). The router is either a centroid router (k-means
centroids of that layer's FFN inputs on background text, cosine similarity, softmax, top-k;
"Routers Learn the Geometry of Their Experts", arXiv 2605.12476) or a seeded random linear one.
The FFN's output bias is shared by the experts (it is identical in every copy) and added after
the combination, as in NomicBERT-MoE.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.experts import ExpertMLPs, Unsupported, float32, mlps
from sbabench.moe.loss_free import LossFreeBias
from sbabench.moe.registry import MoEFamily, RouterSlot, register
from sbabench.moe.routers import OnlineKMeansRouter

log = logging.getLogger("sbabench")


@dataclass(frozen=True)
class UpcycleConfig:
    """How to turn the dense encoder into an MoE."""

    experts: int = 8
    """Experts per MoE layer."""
    top_k: int = 2
    """Experts selected per token."""
    layers: tuple[int, ...] = ()
    """0-based indices of the layers that become MoE layers."""
    drop_ratio: float = 0.3
    """Fraction of intermediate neurons re-initialised in each expert."""
    router: str = "kmeans"
    """`kmeans` (centroid router), `online-kmeans` (the same centroids, moved online while
    training) or `random` (seeded random linear router)."""
    router_temperature: float = 0.1
    """Softmax temperature of the centroid router's cosine logits."""
    router_decay: float = 0.99
    """`online-kmeans`: decay of the centroids' exponential running mean."""
    renormalize: bool = True
    """Renormalise the top-k weights to sum to 1."""
    router_tokens: int = 4096
    """`kmeans`: background tokens per layer the centroids are fitted on."""
    router_inits: int = 1
    """`kmeans`: k-means initialisations (the best is kept)."""
    seed: int = 0
    """Seed of every random choice (neurons dropped, re-initialised values, k-means)."""


def resolve_layers(layers: str | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """`odd` / `even` / `all` or explicit 0-based indices -> sorted layer indices."""
    if layers == "odd":
        return tuple(range(1, num_layers, 2))
    if layers == "even":
        return tuple(range(0, num_layers, 2))
    if layers == "all":
        return tuple(range(num_layers))
    return tuple(sorted(set(int(i) for i in layers)))


class CentroidRouter(nn.Module):
    """softmax(cos(x, c_e) / temperature) over the experts' centroids c_e."""

    def __init__(self, centroids: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids)
        self.temperature = temperature

    @property
    def rows(self) -> torch.Tensor:
        """(experts, hidden) the centroids."""
        return self.centroids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts) routing probabilities."""
        cos = F.normalize(x, dim=-1) @ F.normalize(self.centroids, dim=-1).T
        return torch.softmax(cos.float() / self.temperature, dim=-1)


class LinearRouter(nn.Module):
    """softmax(W x) with a bias-free linear layer."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts) routing probabilities."""
        return torch.softmax(F.linear(x, self.weight).float(), dim=-1)


class UpcycledMoE(nn.Module):
    """E two-layer GELU experts y_e = W2_e gelu(W1_e x + b1_e), top-k routing, shared bias.

    Stands in for BertOutput.dense with BertIntermediate replaced by the identity, so the
    layer's residual connection and LayerNorm stay as they were.
    """

    def __init__(
        self,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        bias: torch.Tensor,
        router: nn.Module,
        top_k: int,
        renormalize: bool,
    ) -> None:
        super().__init__()
        self.w1 = nn.Parameter(w1)  # (experts, ffn, hidden)
        self.b1 = nn.Parameter(b1)  # (experts, ffn)
        self.w2 = nn.Parameter(w2)  # (experts, hidden, ffn)
        self.bias = nn.Parameter(bias)  # (hidden,)
        self.router = router
        self.top_k = top_k
        self.renormalize = renormalize
        self.combine = AggregationPoint(w1.shape[0], top_k, renormalize)
        self.balance: LossFreeBias | None = None
        """A loss-free selection bias (`train: {router: loss-free}`), or None."""

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, hidden) -> top-k weights and expert indices, each (tokens, k); with a
        loss-free bias b the top k of probabilities + b are chosen, weighted by probabilities."""
        probs = self.router(x)
        if self.balance is None:
            weights, index = torch.topk(probs, self.top_k, dim=-1)
        else:
            index = self.balance.select(probs, self.top_k)
            weights = probs.gather(-1, index)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return weights.to(x.dtype), index

    def expert_outputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(tokens, k, hidden) outputs of each token's selected experts (a loop over experts)."""
        out = x.new_zeros(index.shape[0], index.shape[1], x.shape[-1])
        for expert in range(self.w1.shape[0]):
            token, slot = torch.nonzero(index == expert, as_tuple=True)
            if token.numel() == 0:
                continue
            hidden = F.gelu(F.linear(x[token], self.w1[expert], self.b1[expert]))
            out[token, slot] = F.linear(hidden, self.w2[expert]).to(out.dtype)  # autocast: bf16 out
        return out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Route, run the selected experts, combine through the aggregation point, add bias."""
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        weights, index = self.route(flat)
        combined = self.combine(self.expert_outputs(flat, index), weights, index, flat)
        return (combined + self.bias).reshape(hidden_states.shape)


def _reinit_like(values: torch.Tensor, source: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(values.shape, generator=gen, dtype=torch.float32)
    return (noise * source.float().std() + source.float().mean()).to(source.dtype)


def _drop_upcycled_experts(
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    config: UpcycleConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ffn = w1.shape[0]
    dropped = round(config.drop_ratio * ffn)
    experts_w1, experts_b1, experts_w2 = [], [], []
    for _ in range(config.experts):
        e_w1, e_b1, e_w2 = w1.clone(), b1.clone(), w2.clone()
        neurons = torch.randperm(ffn, generator=gen)[:dropped]
        e_w1[neurons] = _reinit_like(e_w1[neurons], w1, gen)
        e_b1[neurons] = _reinit_like(e_b1[neurons], b1, gen)
        e_w2[:, neurons] = _reinit_like(e_w2[:, neurons], w2, gen)
        experts_w1.append(e_w1)
        experts_b1.append(e_b1)
        experts_w2.append(e_w2)
    return torch.stack(experts_w1), torch.stack(experts_b1), torch.stack(experts_w2)


def _kmeans_centroids(inputs: torch.Tensor, experts: int, inits: int, seed: int) -> torch.Tensor:
    # sklearn's KMeans is well tested; on L2-normalised inputs it approximates spherical k-means.
    from sklearn.cluster import KMeans

    points = F.normalize(inputs.float(), dim=-1).numpy().astype(np.float64)
    km = KMeans(n_clusters=experts, n_init=inits, random_state=seed).fit(points)
    return torch.from_numpy(km.cluster_centers_).float()


def _bert_layers(model: nn.Module) -> nn.ModuleList:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} is not a BERT-like encoder (no encoder.layer)")
    return layers


def _rows_needed(mask: torch.Tensor, tokens: int) -> int:
    """How many leading rows of a batch hold at least `tokens` real tokens (all rows if fewer)."""
    cumulative = mask.sum(-1).cumsum(0)
    return min(int(torch.searchsorted(cumulative, tokens).item()) + 1, mask.shape[0])


@torch.inference_mode()
def capture_ffn_inputs(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    layers: Sequence[int],
    max_tokens: int,
) -> dict[int, torch.Tensor]:
    """FFN inputs (non-padding tokens) of the given layers of a dense BERT on some batches: the
    first `max_tokens` of each layer, in batch order. The forward pass is what costs, so it
    runs only on the rows that hold those tokens: the last batch is cut to the rows needed and
    the batches after it are not drawn."""
    captured: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    mask_holder: list[torch.Tensor] = []
    handles = []
    bert_layers = _bert_layers(model)
    for i in layers:

        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            captured[i].append(args[0][mask_holder[0]].float())

        intermediate: Any = bert_layers[i].intermediate
        handles.append(intermediate.register_forward_pre_hook(hook))
    taken = 0
    try:
        for batch in batches:
            rows = _rows_needed(batch["attention_mask"], max_tokens - taken)
            batch = {name: tensor[:rows] for name, tensor in batch.items()}
            mask_holder[:] = [batch["attention_mask"].bool()]
            model(**batch)
            taken += int(mask_holder[0].sum())
            if taken >= max_tokens:
                break
    finally:
        for handle in handles:
            handle.remove()
    return {i: torch.cat(chunks)[:max_tokens] for i, chunks in captured.items() if chunks}


def kmeans_centroids(
    model: nn.Module, config: UpcycleConfig, background: Iterable[dict[str, torch.Tensor]]
) -> dict[int, torch.Tensor]:
    """The centroid router of each chosen layer: k-means of the dense model's FFN inputs on
    the first `config.router_tokens` tokens of `background` (tokenised batches of background
    text, drawn lazily). Call before upcycling."""
    inputs = capture_ffn_inputs(model, background, config.layers, config.router_tokens)
    if len(inputs) < len(config.layers) or any(len(x) < config.experts for x in inputs.values()):
        raise ValueError(
            f"the kmeans router needs at least {config.experts} background tokens per layer"
        )
    found = min(len(x) for x in inputs.values())
    if found < config.router_tokens:
        log.warning(
            "sbabench: the background text gave %d tokens per layer, fewer than router_tokens "
            "(%d); the k-means router is fitted on those",
            found,
            config.router_tokens,
        )
    return {
        i: _kmeans_centroids(inputs[i], config.experts, config.router_inits, config.seed + i)
        for i in config.layers
    }


def upcycle_bert(
    model: nn.Module,
    config: UpcycleConfig,
    background: Iterable[dict[str, torch.Tensor]] = (),
    centroids: dict[int, torch.Tensor] | None = None,
) -> list[MoELayer]:
    """Turn the chosen FFNs of a dense BERT into drop-upcycled MoE layers, in place.

    The k-means router uses `centroids` (from `kmeans_centroids`, e.g. cached) or computes
    them from `background`.
    """
    bert_layers = _bert_layers(model)
    gen = torch.Generator().manual_seed(config.seed)
    if config.router in ("kmeans", "online-kmeans") and centroids is None:
        centroids = kmeans_centroids(model, config, background)
    found = []
    for i in config.layers:
        layer: Any = bert_layers[i]
        dense_in: nn.Linear = layer.intermediate.dense
        dense_out: nn.Linear = layer.output.dense
        w1, b1, w2 = _drop_upcycled_experts(
            dense_in.weight.data, dense_in.bias.data, dense_out.weight.data, config, gen
        )
        router: nn.Module
        if config.router == "kmeans":
            assert centroids is not None
            router = CentroidRouter(centroids[i].clone(), config.router_temperature)
        elif config.router == "online-kmeans":
            assert centroids is not None
            router = OnlineKMeansRouter(
                centroids[i], config.router_temperature, config.top_k, config.router_decay
            )
        else:
            hidden = w1.shape[-1]
            weight = torch.randn(config.experts, hidden, generator=gen) / hidden**0.5
            router = LinearRouter(weight)
        moe = UpcycledMoE(
            w1, b1, w2, dense_out.bias.data.clone(), router, config.top_k, config.renormalize
        )
        layer.intermediate = nn.Identity()
        layer.output.dense = moe
        found.append(
            MoELayer(
                f"encoder.layer.{i}.output.dense.combine",
                "upcycled-bert",
                config.experts,
                config.top_k,
                config.renormalize,
                block=f"encoder.layer.{i}.output.dense",
                adapter=FAMILY,
            )
        )
    return found


def attach(model: nn.Module) -> list[MoELayer]:
    """The drop-upcycled layers already in a model (upcycling itself is `upcycle_bert`)."""
    return [
        MoELayer(
            f"{name}.combine",
            "upcycled-bert",
            int(module.w1.shape[0]),
            module.top_k,
            module.combine.renormalized,
            block=name,
            adapter=FAMILY,
        )
        for name, module in model.named_modules()
        if isinstance(module, UpcycledMoE)
    ]


def read_experts(model: nn.Module, layer: MoELayer) -> ExpertMLPs:
    """The copied-and-perturbed FFNs of an upcycled layer."""
    block: Any = model.get_submodule(layer.block)
    return mlps(block.w1.detach().float(), float32(block.b1), block.w2.detach().float(), F.gelu)


def router(model: nn.Module, layer: MoELayer) -> RouterSlot:
    """The upcycled layer's router: centroid, online K-means or random linear."""
    block: Any = model.get_submodule(layer.block)
    current = block.router
    if isinstance(current, OnlineKMeansRouter | CentroidRouter):
        rows = current.rows
    elif isinstance(current, LinearRouter):
        rows = current.weight
    else:
        raise Unsupported(f"unknown router {type(current).__name__}")

    def online(centroids: torch.Tensor, temperature: float, decay: float) -> nn.Module:
        if isinstance(current, CentroidRouter):  # keeps its temperature: starts where it is
            temperature = current.temperature
        return OnlineKMeansRouter(centroids, temperature, block.top_k, decay, block.renormalize)

    def install_bias(rate: float) -> nn.Module:
        if block.balance is None:
            block.balance = LossFreeBias(int(rows.shape[0]), rate, rows.device)
        balance: nn.Module = block.balance
        return balance

    return RouterSlot(block, "router", rows, lambda probs: probs, online, install_bias)


def set_top_k(model: nn.Module, layer: MoELayer, k: int) -> None:
    """The layer takes the top k of its router's softmax, renormalised as it was built."""
    block: Any = model.get_submodule(layer.block)
    block.top_k = k
    if isinstance(block.router, OnlineKMeansRouter):  # its centroids follow the same choice
        block.router.top_k = k


FAMILY = "upcycled-bert"

register(
    MoEFamily(
        FAMILY,
        "drop-upcycled BERT encoders (source: upcycle)",
        attach,
        read_experts,
        router,
        set_top_k,
    )
)
