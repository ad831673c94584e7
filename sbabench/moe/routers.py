"""Routers as one interface over every MoE family: read them, swap in an online K-means router,
and collect their probabilities for an auxiliary load-balancing loss.

Online K-means routing ("Routers Learn the Geometry of Their Experts", arXiv 2605.12476): a
parameter-free router. Each expert e keeps a centroid c_e; a token x goes to the top-k experts by
cosine similarity cos(x, c_e), with weights softmax(cos / temperature) over all experts, then
the top k (renormalised to sum to one where the model renormalises). While the model trains,
after each forward pass every centroid moves toward the mean of the L2-normalised real tokens
routed to it in that batch, an exponential running mean:

    c_e <- decay * c_e + (1 - decay) * mean_{x routed to e} x / ||x||

(experts that received no token keep their centroid). The centroids are buffers: no gradient,
no optimiser state, no auxiliary loss. Outside training they do not move.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sbabench.moe.base import MoELayer
from sbabench.moe.registry import router_slot


class LearnsFromTokens(nn.Module):
    """A routing module that learns, without gradient, from the tokens routed while training
    (online K-means centroids, loss-free balancing biases). `token_mask`, while set to a
    (tokens,) bool tensor of the batch being run, keeps padding out of what it learns; its
    persistent buffers are what training moved (they go into the checkpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self.token_mask: torch.Tensor | None = None

    def real(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows of per-token tensors that belong to real tokens (all of them without a
        mask, or with one that is not this batch's: e.g. a layer that saw fewer tokens)."""
        mask = self.token_mask
        if mask is None or mask.numel() != tensors[0].shape[0]:
            return tensors
        keep = mask.to(tensors[0].device)
        return tuple(t[keep] for t in tensors)


class OnlineKMeansRouter(LearnsFromTokens):
    """softmax(cos(x, c_e) / temperature) over centroids c_e updated online while training.

    `forward` returns the (tokens, experts) routing probabilities; `update` (called by forward
    in training mode) moves the centroids. `token_mask`, when set to a (tokens,) bool tensor of
    the batch being run, keeps padding out of the update.
    """

    def __init__(
        self,
        centroids: torch.Tensor,
        temperature: float,
        top_k: int,
        decay: float = 0.99,
        renormalize: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("centroids", centroids.detach().float().clone())
        self.temperature = temperature
        self.top_k = top_k
        self.decay = decay
        self.renormalize = renormalize
        self.updates = 0
        """Batches that moved the centroids."""

    @property
    def rows(self) -> torch.Tensor:
        """(experts, hidden) the current centroids."""
        centroids: torch.Tensor = self.centroids  # type: ignore[assignment]
        return centroids

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts) cos(x, c_e) / temperature."""
        centroids = self.rows
        return (
            F.normalize(x.float(), dim=-1) @ F.normalize(centroids, dim=-1).T
        ) / self.temperature

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, experts) routing probabilities."""
        return torch.softmax(self.logits(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Routing probabilities; in training mode the centroids then move (no gradient)."""
        probs = self.probabilities(x)
        if self.training:
            self.update(x, torch.topk(probs, self.top_k, dim=-1).indices)
        return probs

    @torch.no_grad()
    def update(self, x: torch.Tensor, index: torch.Tensor) -> None:
        """Move each expert's centroid toward the mean normalised token routed to it."""
        units, index = self.real(F.normalize(x.detach().float(), dim=-1), index)
        centroids = self.rows
        experts, k = centroids.shape[0], index.shape[-1]
        flat = index.reshape(-1)
        sums = torch.zeros_like(centroids).index_add_(0, flat, units.repeat_interleave(k, dim=0))
        counts = torch.bincount(flat, minlength=experts).to(centroids.dtype)
        seen = counts > 0
        means = sums / counts.clamp_min(1).unsqueeze(-1)
        moved = self.decay * centroids + (1 - self.decay) * means
        centroids.copy_(torch.where(seen.unsqueeze(-1), moved, centroids))
        self.updates += 1


class OnlineKMeansTopKRouter(OnlineKMeansRouter):
    """The online router in the output format of transformers' `*TopKRouter` modules:
    (logits, top-k weights, top-k indices), the logits being cos / temperature."""

    def forward(self, x: torch.Tensor) -> Any:
        """(logits, scores, indices) as transformers' top-k routers return them."""
        flat = x.reshape(-1, x.shape[-1])
        logits = self.logits(flat)
        probs = torch.softmax(logits, dim=-1)
        weights, index = torch.topk(probs, self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        if self.training:
            self.update(flat, index)
        return logits, weights.to(x.dtype), index


def make_online(
    model: nn.Module, layers: Sequence[MoELayer], temperature: float, decay: float
) -> list[OnlineKMeansRouter]:
    """Put an online K-means router in every layer, its centroids starting from the current
    router's rows (a learned router's weight rows, or a centroid router's centroids) scaled to
    unit length; a layer that already has one keeps it. Returns every layer's online router.

    Unit rows: routing is by cosine, so it is the same either way, but every update averages
    unit vectors, and a raw row's norm would set the step (a row of norm 20 hardly moves, one of
    norm 0.05 jumps to the first token it gets)."""
    routers = []
    for layer in layers:
        slot = router_slot(model, layer)
        current = slot.module
        if not isinstance(current, OnlineKMeansRouter):
            start = F.normalize(slot.rows.detach().float(), dim=-1)
            current = slot.online(start, temperature, decay)
            assert isinstance(current, OnlineKMeansRouter)
            setattr(slot.parent, slot.attribute, current)
        routers.append(current)
    return routers


def online_routers(model: nn.Module) -> list[OnlineKMeansRouter]:
    """Every online K-means router in a model."""
    return [m for m in model.modules() if isinstance(m, OnlineKMeansRouter)]


def token_learners(model: nn.Module) -> list[LearnsFromTokens]:
    """Every module of a model that learns from routed tokens without gradient."""
    return [m for m in model.modules() if isinstance(m, LearnsFromTokens)]


@contextmanager
def token_mask(model: nn.Module, mask: torch.Tensor | None) -> Iterator[None]:
    """Tell the model's token learners which tokens of the batch are real while it runs."""
    learners = token_learners(model)
    for learner in learners:
        learner.token_mask = mask
    try:
        yield
    finally:
        for learner in learners:
            learner.token_mask = None


class RouterProbabilities:
    """Collects each layer's routing probabilities during forward passes (with their graph), for
    the auxiliary load-balancing loss."""

    def __init__(self, model: nn.Module, layers: Sequence[MoELayer]) -> None:
        self.slots = [router_slot(model, layer) for layer in layers]
        self.seen: list[list[torch.Tensor]] = [[] for _ in self.slots]
        self.token_mask: torch.Tensor | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> RouterProbabilities:
        for i, slot in enumerate(self.slots):

            def hook(_: nn.Module, __: Any, output: Any, i: int = i) -> None:
                probs = self.slots[i].probabilities(output)
                mask = self.token_mask
                if mask is not None and mask.numel() == probs.shape[0]:
                    probs = probs[mask.to(probs.device)]
                self.seen[i].append(probs)

            self._handles.append(slot.module.register_forward_hook(hook))
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pop(self) -> list[torch.Tensor]:
        """Each layer's probabilities since the last pop, (tokens, experts) each."""
        taken = [torch.cat(parts) for parts in self.seen if parts]
        self.seen = [[] for _ in self.slots]
        return taken


def load_balancing_loss(
    probabilities: Sequence[torch.Tensor], top_k: Sequence[int]
) -> torch.Tensor:
    """The Switch Transformer auxiliary loss (Fedus et al. 2022), averaged over layers:
    E * sum_e f_e * P_e, with f_e the share of (token, slot) assignments to expert e (top-k of the
    probabilities; no gradient) and P_e the mean routing probability of e. 1 when balanced."""
    losses = []
    for probs, k in zip(probabilities, top_k, strict=True):
        experts = probs.shape[-1]
        index = torch.topk(probs.detach(), k, dim=-1).indices.reshape(-1)
        share = torch.bincount(index, minlength=experts).to(probs.dtype) / index.numel()
        losses.append(experts * (share * probs.float().mean(0)).sum())
    return torch.stack(losses).mean()
