"""The fine-tuning stage: train every model x operator under the same budget, then evaluate.

The SBA paper's claim is about training with SBA instead of linear aggregation at identical
cost. Each model x operator starts from the same initial weights and trains with the same steps,
batch size, learning rate, seed and data order; only the aggregation operator differs.
Objectives: `simcse` (unsupervised SimCSE: the same batch encoded twice with dropout, InfoNCE
over in-batch negatives) and `pairs` (contrastive, multiple-negatives ranking loss on
(text1, text2) pairs). Stability is recorded: loss and gradient norm per step; a NaN or inf
stops that model x operator with a clear error.

Routers (`sbabench.moe.routers`): `router: online-kmeans` swaps every router for an online K-means
router before training (its centroids move with the tokens routed to them, no gradient);
`router: loss-free` gives every learned router a per-expert selection bias moved after each step
toward equal load (`sbabench.moe.loss_free`); `aux_loss: c` adds c x the Switch load-balancing
loss of every MoE layer to the objective.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sbabench.atomic import write_atomic, write_bytes_atomic
from sbabench.errors import SbabenchError
from sbabench.run.results import TrainingRecord

_logger = logging.getLogger("sbabench")

if TYPE_CHECKING:
    from sbabench.models.encoder import TextEncoder
    from sbabench.suite import TrainSpec


class TrainingError(SbabenchError):
    """Training diverged (NaN / inf) or its data cannot be used."""


def training_data(spec: TrainSpec, base_dir: Path | None = None) -> list[tuple[str, str]]:
    """(anchor, positive) texts: a text twice for SimCSE, a pair for `pairs`."""
    from sbabench.tasks import sources

    data = spec.data
    if data == "bundled:lee_background":
        texts = sources.lee_background()
        pairs = [(t, t) for t in texts]
    elif data == "bundled:aia-bde-paraphrases":
        first, second, labels = sources.aia_bde_pairs(seed=spec.seed)
        pairs = [(a, b) for a, b, y in zip(first, second, labels, strict=True) if y == 1]
    else:
        from sbabench.tasks.local import read_table

        frame = read_table(Path(data) if base_dir is None else base_dir / data)
        if spec.objective == "pairs":
            if not {"text1", "text2"} <= set(frame.columns):
                raise TrainingError(
                    f"training file {data!r} needs columns text1 and text2 for `pairs`"
                )
            pairs = list(zip(frame["text1"].astype(str), frame["text2"].astype(str), strict=True))
        else:
            if "text" not in frame.columns:
                raise TrainingError(f"training file {data!r} needs a column `text` for `simcse`")
            pairs = [(t, t) for t in frame["text"].astype(str)]
    if spec.objective == "simcse":
        pairs = [(a, a) for a, _ in pairs]
    if len(pairs) < 2:
        raise TrainingError(f"training data {data!r} has fewer than 2 examples")
    return pairs


def trainable_parameters(
    encoder: TextEncoder, which: str, frozen_routers: bool = False
) -> list[torch.nn.Parameter]:
    """`all`, or `moe`: the parameters of the MoE blocks (experts and routers); without the
    routers' with `frozen_routers`."""
    named = dict(encoder.model.named_parameters())
    if frozen_routers:
        routers = _router_parameters(encoder)
        named = {n: p for n, p in named.items() if id(p) not in routers}
    if which == "all":
        return list(named.values())
    blocks = [layer.block for layer in encoder.moe_layers if layer.block]
    chosen = [
        p for name, p in named.items() if any(name.startswith(block + ".") for block in blocks)
    ]
    if not chosen:
        raise TrainingError(
            "`trainable: moe` found no MoE parameters", fix="use `trainable: all` for a dense model"
        )
    return chosen


def prepare_routers(encoder: TextEncoder, spec: TrainSpec) -> None:
    """Apply the spec's router choice before training starts (and before the initial weights
    are kept): `online-kmeans` swaps every MoE layer's router for an online one, `loss-free`
    gives every router a selection bias (zero: routing is unchanged until training moves it)."""
    from sbabench.moe.experts import Unsupported
    from sbabench.moe.loss_free import make_loss_free
    from sbabench.moe.routers import make_online, online_routers

    if not encoder.moe_layers:
        return
    model, layers = encoder.model, encoder.moe_layers
    try:
        if spec.router in ("learned", "frozen", "loss-free") and online_routers(model):
            raise TrainingError(
                f"train.router is {spec.router} but the model's routers are online K-means "
                "(no weights)",
                fix="use `router: kmeans` on the model, or `train: {router: online-kmeans}`",
            )
        if spec.router == "online-kmeans":
            make_online(model, layers, spec.router_temperature, spec.router_decay)
        elif spec.router == "loss-free":
            make_loss_free(model, layers, spec.bias_rate)
    except Unsupported as exc:
        raise TrainingError(
            f"router: {spec.router} cannot be used with this model: {exc}",
            fix="supported: upcycled models and transformers MoE families with a bias-free "
            "softmax top-k router (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE); give this model its "
            "own `train: {router: learned}`",
        ) from None


def _router_parameters(encoder: TextEncoder) -> set[int]:
    """ids of every MoE layer's router parameters."""
    from sbabench.moe.experts import Unsupported
    from sbabench.moe.registry import router_slot

    try:
        slots = [router_slot(encoder.model, layer) for layer in encoder.moe_layers]
    except Unsupported as exc:
        raise TrainingError(
            f"router: frozen needs the model's routers, and this model cannot give them: {exc}",
            fix="remove `router: frozen` for this model",
        ) from None
    return {id(p) for slot in slots for p in slot.module.parameters()}


def _embed(encoder: TextEncoder, texts: list[str], max_length: int, aux: Any) -> torch.Tensor:
    """Normalised embeddings of a batch; online routers and the auxiliary-loss collector are
    told which tokens are real."""
    from sbabench.moe.routers import token_mask

    features = encoder.tokenize(texts, max_length=max_length)
    mask = features["attention_mask"].reshape(-1).bool()
    if aux is not None:
        aux.token_mask = mask
    with token_mask(encoder.model, mask):
        return F.normalize(encoder.forward(features).float(), dim=-1)


class _Batches:
    """The same shuffled order of training pairs for every operator, batch after batch."""

    def __init__(self, pairs: list[tuple[str, str]], size: int, seed: int) -> None:
        self.pairs, self.size = pairs, size
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self) -> tuple[list[str], list[str]]:
        """(anchors, positives) of the next batch; a new epoch is shuffled when one runs out."""
        if len(self.order) < self.size:
            self.order += self.rng.sample(range(len(self.pairs)), len(self.pairs))
        batch, self.order = self.order[: self.size], self.order[self.size :]
        return [self.pairs[i][0] for i in batch], [self.pairs[i][1] for i in batch]


def _contrastive_loss(
    encoder: TextEncoder, anchors: list[str], positives: list[str], spec: TrainSpec, aux: Any
) -> tuple[torch.Tensor, float | None]:
    """InfoNCE with in-batch negatives (bf16 autocast on a GPU), plus aux_loss x the
    load-balancing loss when asked for; returns the total and the load-balancing term."""
    from sbabench.moe.routers import load_balancing_loss

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=encoder.device.type == "cuda"):
        a = _embed(encoder, anchors, spec.max_length, aux)
        b = _embed(encoder, positives, spec.max_length, aux)
        logits = a @ b.T / spec.temperature
        loss = F.cross_entropy(logits.float(), torch.arange(len(anchors), device=logits.device))
    if aux is None:
        return loss, None
    balance = load_balancing_loss(aux.pop(), [layer.top_k for layer in encoder.moe_layers])
    return loss + spec.aux_loss * balance, float(balance.detach())


def _step(
    loss: torch.Tensor,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    step: int,
) -> float:
    """One optimiser step with clipped gradients; a NaN or inf loss or norm is divergence."""
    if not torch.isfinite(loss):
        raise TrainingError(f"training diverged: loss is {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=1.0))
    if not math.isfinite(norm):
        raise TrainingError(f"training diverged: gradient norm is {norm} at step {step}")
    optimizer.step()
    return norm


def _only_trainable(encoder: TextEncoder, params: list[torch.nn.Parameter]) -> None:
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)


def train(encoder: TextEncoder, spec: TrainSpec, base_dir: Path | None = None) -> TrainingRecord:
    """Train `encoder` in place with its current aggregation operator; returns the log.

    Every operator sees the same data order (`_Batches`) and the same dropout masks (the seed).
    """
    pairs = training_data(spec, base_dir)
    prepare_routers(encoder, spec)
    with _training_elimination(encoder, spec):
        log = _train_steps(encoder, spec, pairs)
        # measured as trained: the log is cached under the checkpoint key, which leaves the
        # model's own (evaluation) token_elimination out, so nothing in it may depend on that
        log.router_load_cv = _router_load(encoder, [a for a, _ in pairs[:64]])
    return log


@contextmanager
def _training_elimination(encoder: TextEncoder, spec: TrainSpec) -> Iterator[None]:
    """Training runs with `train.token_elimination`'s schedule, or none: the model's own
    `token_elimination` is what it is evaluated with, and is put back afterwards."""
    from sbabench.errors import ModelSpecError
    from sbabench.models import token_elimination

    own = encoder.elimination
    wanted = spec.token_elimination
    config: Any = encoder.model.config
    attention = config._attn_implementation  # put back after: train-stage elimination only
    try:
        encoder.elimination = (
            None
            if wanted is None
            else token_elimination.prepare(encoder.model, wanted.tilt_rate, wanted.start_layer)
        )
    except ModelSpecError as exc:
        raise TrainingError(
            f"train.token_elimination cannot be used with this model: {exc.what}",
            fix="remove `token_elimination` from the train stage (or give this model its own "
            "`train: {token_elimination: null}`)",
        ) from None
    try:
        yield
    finally:
        encoder.elimination = own
        config._attn_implementation = attention


def _train_steps(
    encoder: TextEncoder, spec: TrainSpec, pairs: list[tuple[str, str]]
) -> TrainingRecord:
    """The optimiser loop: `spec.steps` steps over `pairs`, logged."""
    from sbabench.moe.loss_free import loss_free_biases

    params = trainable_parameters(encoder, spec.trainable, spec.router == "frozen")
    _only_trainable(encoder, params)
    optimizer = torch.optim.AdamW(params, lr=spec.lr)
    batches = _Batches(pairs, spec.batch_size, spec.seed)
    torch.manual_seed(spec.seed)
    log = TrainingRecord(trainable_parameters=sum(p.numel() for p in params))
    biases = loss_free_biases(encoder.model)
    start = time.perf_counter()
    encoder.model.train()
    try:
        with _aux_collector(encoder, spec) as aux:
            for step in range(spec.steps):
                loss, balance = _contrastive_loss(encoder, *batches.next(), spec, aux)
                log.grad_norm.append(_step(loss, params, optimizer, step))
                for bias in biases:  # after the step, from the load of its batches
                    bias.step()
                log.loss.append(float(loss.detach()))
                if balance is not None:
                    log.load_balancing_loss.append(balance)
                log.steps = step + 1
    finally:
        encoder.model.eval()
        _only_trainable(encoder, [])
    log.seconds = time.perf_counter() - start
    return log


@contextmanager
def _aux_collector(encoder: TextEncoder, spec: TrainSpec) -> Iterator[Any]:
    """The routers' probabilities during training, when the spec has an auxiliary loss."""
    from sbabench.moe.experts import Unsupported
    from sbabench.moe.routers import RouterProbabilities

    if spec.aux_loss <= 0 or not encoder.moe_layers:
        yield None
        return
    try:
        collector = RouterProbabilities(encoder.model, encoder.moe_layers)
    except Unsupported as exc:
        raise TrainingError(
            f"aux_loss needs the routers' probabilities, and this model cannot give them: {exc}",
            fix="set aux_loss: 0 for this model (its own `train:` entry)",
        ) from None
    with collector:
        yield collector


def _router_load(encoder: TextEncoder, texts: list[str]) -> dict[str, float]:
    from sbabench.geometry.recorder import GeometryRecorder
    from sbabench.moe import observing

    if not encoder.moe_layers:
        return {}
    recorder = GeometryRecorder(budget_tokens=4096)
    encoder.recorder = recorder
    with observing(encoder.model, recorder.observe):
        encoder.encode(texts, batch_size=32)
    encoder.recorder = None
    layers = recorder.layers({layer.name: layer.num_experts for layer in encoder.moe_layers})
    return {
        name: float((stats.get("load") or {}).get("cv") or float("nan"))
        for name, stats in layers.items()
    }


def checkpoint_paths(folder: Path, key: str) -> tuple[Path, Path]:
    """Where the trained parameters and the training log of a key live."""
    return folder / f"{key}.pt", folder / f"{key}.json"


def save_checkpoint(
    folder: Path, key: str, encoder: TextEncoder, spec: TrainSpec, log: TrainingRecord
) -> None:
    """Trainable parameters (atomically) and the log."""
    weights, log_path = checkpoint_paths(folder, key)
    folder.mkdir(parents=True, exist_ok=True)
    from sbabench.moe.routers import LearnsFromTokens

    names = {id(p) for p in trainable_parameters(encoder, spec.trainable, spec.router == "frozen")}
    state = {n: p.detach().cpu() for n, p in encoder.model.named_parameters() if id(p) in names}
    for name, module in encoder.model.named_modules():  # online centroids, loss-free biases:
        if isinstance(module, LearnsFromTokens):  # learned without gradient, kept all the same
            state.update({f"{name}.{b}": t.detach().cpu() for b, t in module.state_dict().items()})
    # torch.save to a path reports a full disk as a RuntimeError and leaves a half-written file
    # under a fixed name (shared by concurrent shards): serialise in memory, write atomically
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(weights, buffer.getvalue())
    write_atomic(log_path, log.model_dump_json())


def load_log(folder: Path, key: str) -> TrainingRecord | None:
    """A cached training log, if its checkpoint is complete."""
    weights, log_path = checkpoint_paths(folder, key)
    if not (weights.is_file() and log_path.is_file()):
        return None
    try:
        return TrainingRecord.model_validate_json(log_path.read_text())
    except ValueError:
        return None


def load_checkpoint(folder: Path, key: str, encoder: TextEncoder) -> TrainingRecord | None:
    """Load cached trained parameters into `encoder`; returns the log, or None if not cached."""
    log = load_log(folder, key)
    if log is None:
        return None
    weights = checkpoint_paths(folder, key)[0]
    try:  # weights_only: a checkpoint is tensors; unpickling anything else could run code
        state = torch.load(weights, map_location=encoder.device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        _logger.warning(
            "sbabench: ignoring unreadable checkpoint %s (%s); training again", weights, exc
        )
        return None
    own = encoder.model.state_dict()
    fits = isinstance(state, dict) and all(
        isinstance(v, torch.Tensor) and k in own and v.shape == own[k].shape
        for k, v in state.items()
    )
    if not fits:  # checked before loading: a failed load_state_dict leaves some tensors copied
        _logger.warning(
            "sbabench: ignoring checkpoint %s: not this model's parameters; training again", weights
        )
        return None
    encoder.model.load_state_dict(state, strict=False)
    return log
