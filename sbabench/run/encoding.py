"""An mteb EncoderProtocol that embeds each unique text once and serves it from memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mteb.models.model_meta import ModelMeta

from sbabench.geometry.recorder import GeometryRecorder
from sbabench.models.encoder import TextEncoder
from sbabench.moe.base import observing
from sbabench.run.embedding_store import EmbeddingStore


class CosineSimilarity:
    """The similarity half of mteb's EncoderProtocol: cosine, as every task here scores."""

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity matrix."""
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T

    def similarity_pairwise(self, a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity of corresponding rows."""
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        return torch.nn.functional.cosine_similarity(a, b, dim=-1)


class CachingEncoder(CosineSimilarity):
    """Serve mteb's evaluators from a per-(prompt type, text) embedding cache.

    Lookups go memory -> on-disk store (if any) -> the model.

    mteb's evaluators ask for every pair side and every document; tasks repeat texts (LeeDocSTS
    has 50 distinct documents in 2 x 1225 pair sides), so only unseen texts reach the model.
    """

    def __init__(
        self,
        encoder: TextEncoder | Callable[[], TextEncoder],
        name: str,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
        on_texts: Callable[[int], None] | None = None,
        store: EmbeddingStore | None = None,
        space: str = "",
    ) -> None:
        self._encoder = encoder
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.on_texts = on_texts
        self.cache: dict[tuple[str, str], np.ndarray] = {}
        self.store = store
        self.space = space
        self.encoded_texts = 0
        self.reused_texts = 0
        self.recorder: GeometryRecorder | None = None
        self._observe_cached = False
        self._observed: set[tuple[str, str]] = set()
        self.observed_texts = 0
        """Cached texts run through the model only for the geometry sample."""
        self.prenorm: dict[tuple[str, str], float] = {}
        """Pre-normalisation norm of each (prompt type, text) this operator ran through the
        model in this process."""
        self.requested: dict[tuple[str, str], None] = {}
        """(prompt type, text) of every text asked for since start_unit, in order."""
        self.encode_seconds = 0.0
        self._meta = ModelMeta.create_empty(overwrites={"name": f"sbabench/{name}"})

    def start_unit(self, recorder: GeometryRecorder | None, observe_cached: bool = False) -> None:
        """Begin a new unit: forget which texts were asked for; observe geometry with `recorder`.

        `observe_cached`: texts served from a cache are still run through the model, in the
        order asked for, until `recorder` has its sample (the vectors are not used again):
        geometry needs the model to see the task's tokens, which no cache holds.
        """
        self.recorder = recorder
        self.requested = {}
        self._observe_cached = observe_cached and recorder is not None
        self._observed = set()

    def finish_unit(self) -> None:
        """End the unit: stop observing and, with an embedding store, forget the unit's vectors
        (the store serves the same rounded vectors to a later unit that asks for them: memory
        holds one task's embeddings, not every task's of this model x operator)."""
        self.start_unit(None)
        if self.store is not None:
            self.cache = {}

    @property
    def loaded_encoder(self) -> TextEncoder | None:
        """The text encoder if it has been built (never builds it)."""
        return self._encoder if isinstance(self._encoder, TextEncoder) else None

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, built on first use (a fully cached unit never loads the model)."""
        if not isinstance(self._encoder, TextEncoder):
            self._encoder = self._encoder()
        return self._encoder

    @property
    def mteb_model_meta(self) -> ModelMeta:
        """mteb's description of this model (mostly empty: it is not a hub model)."""
        return self._meta

    def encode(self, inputs: Any, *, prompt_type: Any = None, **_: Any) -> np.ndarray:
        """Embed a DataLoader of text batches; only texts not seen before are encoded."""
        texts: list[str] = [t for batch in inputs for t in batch["text"]]
        kind = getattr(prompt_type, "value", prompt_type) or "default"
        self.requested.update(dict.fromkeys((kind, t) for t in texts))
        missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self.cache))
        if missing and self.store is not None:
            stored = self.store.get(self.space, kind, missing)
            self.cache.update({(kind, t): v for t, v in stored.items()})
            self.reused_texts += len(stored)
            missing = [t for t in missing if t not in stored]
        if missing:
            if self.on_texts:
                self.on_texts(len(missing))
            vectors = self._run_model(missing, kind)
            if self.store is not None:
                # Round fresh vectors as stored ones are, so a score never depends on which it got.
                rounded = vectors.astype(self.store.dtype, copy=False)  # no copy: float32
                vectors = rounded.astype(np.float32, copy=False)
                self.store.put(self.space, kind, missing, vectors)
            self.cache.update({(kind, t): v for t, v in zip(missing, vectors, strict=True)})
            self.encoded_texts += len(missing)
        if self._observe_cached:
            self._observe(texts, kind)
        return self.vectors([(kind, t) for t in texts])

    def vectors(self, keys: list[tuple[str, str]]) -> np.ndarray:
        """The cached embeddings of (prompt type, text) keys, one row each."""
        return np.stack([self.cache[key] for key in keys])

    def _run_model(self, texts: list[str], kind: str) -> np.ndarray:
        """Encode with the model (built on first use), observed by the unit's recorder."""
        encoder = self.encoder  # may build the model: timed as model_load, not encode
        start = time.perf_counter()
        if self.recorder is not None:
            encoder.recorder = self.recorder
            with observing(encoder.model, self.recorder.observe):
                vectors = encoder.encode(texts, kind, self.batch_size, self.on_batch)
            encoder.recorder = None
            self._observed.update((kind, t) for t in texts)
        else:
            vectors = encoder.encode(texts, kind, self.batch_size, self.on_batch)
        self.encode_seconds += time.perf_counter() - start
        # The encoder notes each text's norm, whatever operator ran: take this operator's out.
        norms = encoder.prenorm
        self.prenorm.update({(kind, t): norms.pop(t) for t in texts if t in norms})
        return vectors

    def _observe(self, texts: list[str], kind: str) -> None:
        """Run cached texts through the model, a batch at a time, until the sample is complete."""
        assert self.recorder is not None
        pending = [t for t in dict.fromkeys(texts) if (kind, t) not in self._observed]
        # The batches a fresh encode of these texts runs first (longest first, as
        # `TextEncoder.encode` orders them): the unit's geometry sample is then the one it gets
        # when nothing is cached, and its batches carry the least padding.
        pending.sort(key=len, reverse=True)
        if pending and not self.recorder.complete and self.on_texts:
            self.on_texts(len(pending))  # an upper bound: it stops once the sample is full
        for start in range(0, len(pending), self.batch_size):
            if self.recorder.complete:
                return
            chunk = pending[start : start + self.batch_size]
            self._run_model(chunk, kind)
            self.observed_texts += len(chunk)

    def has(self, text: str, prompt_type: Any) -> bool:
        """Whether `text` was asked for with this prompt type in this unit (what mteb's
        evaluator embedded), whatever kept its vector."""
        kind = getattr(prompt_type, "value", prompt_type) or "default"
        return (kind, text) in self.requested

    def embed(self, texts: list[str], prompt_type: Any = None) -> np.ndarray:
        """Embeddings of plain texts (cached ones reused)."""
        return self.encode([{"text": texts}], prompt_type=prompt_type)
