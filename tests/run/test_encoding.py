"""The caching encoder: what it keeps per operator, and for how long."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sbabench.models.encoder import TextEncoder
from sbabench.run.embedding_store import EmbeddingStore
from sbabench.run.encoding import CachingEncoder


class _Model(TextEncoder):
    """A stand-in encoder shared by operators, as a model session's is: it notes each text's
    pre-normalisation norm (here `scale` x the text's length) like the real one."""

    def __init__(self) -> None:  # no model: only what CachingEncoder reads
        self.prenorm: dict[str, float] = {}
        self.scale = 1.0
        self.calls = 0

    def encode(
        self,
        texts: Sequence[str],
        prompt_type: str | None = None,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        self.calls += 1
        self.prenorm.update({t: self.scale * len(t) for t in texts})
        return np.full((len(texts), 2), self.scale, dtype=np.float32)


def test_each_operator_keeps_the_norms_of_the_texts_it_encoded() -> None:
    """Two operators of one model share its encoder: a unit's norms are its operator's, never
    those another operator wrote last for the same text; the shared encoder keeps none."""
    model = _Model()
    linear = CachingEncoder(model, "m", 8)
    linear.embed(["xx", "yyy"])
    model.scale = 2.0
    sba = CachingEncoder(model, "m", 8)
    sba.embed(["xx"])
    assert linear.prenorm == {("default", "xx"): 2.0, ("default", "yyy"): 3.0}
    assert sba.prenorm == {("default", "xx"): 4.0}
    assert model.prenorm == {}


def test_with_a_store_a_unit_ends_without_its_vectors_and_the_next_gets_the_same(
    tmp_path: Path,
) -> None:
    model = _Model()
    store = EmbeddingStore(tmp_path / "e.sqlite")
    encoder = CachingEncoder(model, "m", 8, store=store, space="s")
    encoder.start_unit(None)
    first = encoder.embed(["a", "b"])
    encoder.finish_unit()
    assert encoder.cache == {} and encoder.requested == {}
    encoder.start_unit(None)
    again = encoder.embed(["b", "a"])
    assert model.calls == 1 and encoder.reused_texts == 2  # from the store, not the model
    np.testing.assert_array_equal(again, first[::-1])
    store.close()
    unstored = CachingEncoder(model, "m", 8)
    unstored.start_unit(None)
    unstored.embed(["c"])
    assert unstored.has("c", None)
    unstored.finish_unit()
    assert set(unstored.cache) == {("default", "c")}  # nowhere else to get it back from
    # what a unit's evaluator embedded is what it asked for, kept in memory or not
    unstored.start_unit(None)
    assert not unstored.has("c", None)
