"""Model specs -> text encoders: load, (optionally) make MoE, tokenise, forward, pool, normalise."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from sbabench.errors import AggregatorError, ModelSpecError
from sbabench.models.sources import resolve_base
from sbabench.moe.base import MoELayer

log = logging.getLogger("sbabench")

if TYPE_CHECKING:
    from sbabench.models.machine_cache import MachineCache
    from sbabench.models.spec import AnyModel, UpcycleModel
    from sbabench.moe.upcycle import UpcycleConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EncoderConfig:
    """How token states become a text embedding."""

    pooling: str = "mean"
    """`mean`, `cls` or `last-token`."""
    normalize: bool = True
    """L2-normalise the pooled embedding."""
    max_length: int = 256
    """Tokens per text (longer texts are truncated)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Prefix per prompt type (`query`, `document`; `default` when the task names none)."""


def sentence_transformers_defaults(path: str) -> EncoderConfig:
    """Pooling, normalisation, max length and prompts from a sentence-transformers folder."""
    folder = Path(path)
    if not folder.is_dir():
        return EncoderConfig()
    pooling, normalize, max_length, prompts = "mean", False, 512, {}
    modules = folder / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
        normalize = any(k.endswith("Normalize") for k in kinds)
    pooling_cfg = folder / "1_Pooling" / "config.json"
    if pooling_cfg.is_file():
        cfg = json.loads(pooling_cfg.read_text())
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_lasttoken"):
            pooling = "last-token"
    bert_cfg = folder / "sentence_bert_config.json"
    if bert_cfg.is_file():
        max_length = int(json.loads(bert_cfg.read_text()).get("max_seq_length", max_length))
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        prompts = {k: v for k, v in json.loads(st_cfg.read_text()).get("prompts", {}).items() if v}
    return EncoderConfig(pooling, normalize, max_length, prompts)


def _local_or_hub_defaults(path: str, revision: str | None) -> EncoderConfig:
    """sentence-transformers defaults from a local folder, or from the hub's cached snapshot."""
    if Path(path).is_dir():
        return sentence_transformers_defaults(path)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            path, revision=revision, allow_patterns=["*.json", "1_Pooling/*"]
        )
    except Exception:  # no hub, no cache: fall back to plain mean pooling, no prompts
        return EncoderConfig()
    return sentence_transformers_defaults(folder)


def pick_device(setting: str) -> torch.device:
    """`auto` -> cuda if available, else cpu; anything else is taken as a torch device."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last-token":
        last = mask.sum(1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class TokenMaskSink(Protocol):
    """Told which tokens of the current batch are real (not padding)."""

    token_mask: torch.Tensor | None


class TextEncoder:
    """A transformer plus tokenizer that turns texts into embedding vectors."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        config: EncoderConfig,
        device: torch.device,
        dtype: torch.dtype,
        moe_layers: Sequence[MoELayer] = (),
        identity: str = "",
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
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

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated token tensors on the encoder's device."""
        batch = self.tokenizer(  # type: ignore[operator]
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (float32, on CPU) of one batch of texts, prompts already applied."""
        batch = self.tokenize(texts)
        if self.recorder is not None:
            self.recorder.token_mask = batch["attention_mask"].reshape(-1).bool()
        states = self.model(**batch).last_hidden_state
        pooled = _pool(states, batch["attention_mask"], self.config.pooling).float()
        self._last_prenorm = torch.linalg.vector_norm(pooled, dim=-1).cpu()
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
        prefix = self.config.prompts.get(prompt_type or "default", "")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for number, start in enumerate(range(0, len(order), batch_size), 1):
            idx = order[start : start + batch_size]
            try:
                vectors = self.embed_batch([prefix + texts[i] for i in idx]).numpy()
            except AggregatorError as exc:
                total = -(-len(order) // batch_size)
                raise AggregatorError(
                    f"{exc.what}, in batch {number} of {total} ({len(idx)} texts)", fix=exc.fix
                ) from None
            self.prenorm.update(
                {texts[i]: float(n) for i, n in zip(idx, self._last_prenorm, strict=True)}
            )
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
            if on_batch:
                on_batch(len(idx))
        return out


def load_transformer(
    path: str, revision: str | None, trust_remote_code: bool
) -> tuple[nn.Module, object]:
    """AutoModel + AutoTokenizer; a clear error when the weights cannot be reached."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code
        )
        model = AutoModel.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelSpecError(
            f"cannot load model {path!r}: {str(exc).splitlines()[0]}",
            fix="give a local folder path, or a hub id with network access"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else ""),
        ) from None
    return model, tokenizer


def torch_dtype(name: str) -> torch.dtype:
    """`float32` / `float16` / `bfloat16` -> torch dtype."""
    return _DTYPES[name]


def background_centroids(
    model: nn.Module, tokenizer: object, config: EncoderConfig, upcycle: UpcycleConfig
) -> dict[int, torch.Tensor]:
    """k-means centroids of each chosen layer's FFN inputs on the background text."""
    from sbabench.moe.upcycle import kmeans_centroids
    from sbabench.tasks.sources import lee_background

    docs = lee_background()
    bg = TextEncoder(
        model, tokenizer, replace(config, max_length=128), torch.device("cpu"), torch.float32
    )
    batches = [bg.tokenize(docs[i : i + 32]) for i in range(0, len(docs), 32)]
    return kmeans_centroids(model, upcycle, batches)


def _upcycled_layers(
    spec: UpcycleModel,
    model: nn.Module,
    tokenizer: object,
    config: EncoderConfig,
    cache: MachineCache | None,
) -> list[MoELayer]:
    """Turn the spec's layers of a dense BERT into drop-upcycled MoE layers."""
    from sbabench.models.router_cache import cached_centroids, router_cache_key
    from sbabench.moe.upcycle import UpcycleConfig, resolve_layers, upcycle_bert

    num_layers = len(model.encoder.layer)  # type: ignore[union-attr,arg-type]
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
        renormalize=spec.renormalize,
        seed=spec.seed,
    )
    model.eval()
    centroids = None
    if spec.router == "kmeans":
        compute = partial(background_centroids, model, tokenizer, config, upcycle)
        centroids = cached_centroids(cache, router_cache_key(spec), compute)
    return upcycle_bert(model, upcycle, centroids=centroids)


def build_encoder(
    spec: AnyModel,
    device: str = "auto",
    dtype: str = "float32",
    cache: MachineCache | None = None,
) -> TextEncoder:
    """Load the spec's encoder: dense as is, upcycled into an MoE, or a hub MoE with its
    MoE layers found and patched (an error if it has none). `cache`: where the upcycled
    models' k-means router centroids are kept (None: computed every time)."""
    from sbabench.models.spec import HuggingFaceModel, UpcycleModel
    from sbabench.moe import attach_moe

    path, identity = resolve_base(spec.base)
    revision = spec.revision if isinstance(spec, HuggingFaceModel) else None
    remote = spec.trust_remote_code if isinstance(spec, HuggingFaceModel) else False
    model, tokenizer = load_transformer(path, revision, trust_remote_code=remote)
    config = _local_or_hub_defaults(path, revision)
    if spec.max_length:
        config = replace(config, max_length=spec.max_length)
    layers: list[MoELayer] = []
    if isinstance(spec, HuggingFaceModel):
        config = replace(
            config,
            pooling=spec.pooling or config.pooling,
            normalize=config.normalize if spec.normalize is None else spec.normalize,
            prompts={str(k): v for k, v in spec.prompts.items()}
            if spec.prompts
            else config.prompts,
        )
        layers = attach_moe(model)
    elif isinstance(spec, UpcycleModel):
        layers = _upcycled_layers(spec, model, tokenizer, config, cache)
    return TextEncoder(
        model, tokenizer, config, pick_device(device), torch_dtype(dtype), layers, identity
    )
