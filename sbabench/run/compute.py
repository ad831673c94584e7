"""Computing units, one at a time, with nothing written but caches: what every executor runs.

A `UnitComputer` keeps each model loaded across its units and one embedding cache per model x
operator; it returns each unit's result (or raises). Where results go, and who may compute a
unit, is the executor's business: the local executor (`sbabench.run.execute`) locks and writes
in the results folder; a Ray worker (`sbabench.run.ray_executor`) returns results to the driver.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sbabench.errors import SbabenchError
from sbabench.paths import confined
from sbabench.run.progress import Event, EventKind, ProgressCallback, ignore

if TYPE_CHECKING:
    from sbabench.run.embedding_store import EmbeddingStore
    from sbabench.run.encoding import CachingEncoder
    from sbabench.run.plan import PlannedUnit
    from sbabench.run.results import UnitResult
    from sbabench.run.session import ModelSession
    from sbabench.suite import Suite


@dataclass(frozen=True)
class Failure:
    """Why a unit failed: a message for people and the traceback for the error file."""

    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure an exception describes (an sbabench error renders its own message)."""
        message = exc.render() if isinstance(exc, SbabenchError) else f"{type(exc).__name__}: {exc}"
        return cls(message, "".join(traceback.format_exception(exc)))


CACHE_FILES = (
    "embeddings.sqlite",
    "embeddings.sqlite-wal",
    "embeddings.sqlite-shm",
    "embeddings.sqlite-journal",
    "checkpoints",
)
"""What sbabench writes in a cache folder (SQLite writes its side files itself)."""


def checked_cache(folder: Path) -> Path:
    """`folder` (a results folder's `.cache`), once no link stands where sbabench (or SQLite)
    writes in it: a linked embedding cache, side file or checkpoints folder would make a run
    write outside the results folder."""
    for name in CACHE_FILES:
        confined(folder.parent, folder.name, name)
    return folder


def open_store(suite: Suite, path: Path) -> EmbeddingStore | None:
    """The suite's embedding cache at `path` (None when the suite turns it off); its folder is
    checked first (`checked_cache`)."""
    from sbabench.run.embedding_store import EmbeddingStore

    checked_cache(path.parent)
    if suite.settings.embedding_cache == "off":
        return None
    return EmbeddingStore(path, suite.settings.embedding_cache)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl, Windows)."""
    import ctypes
    import ctypes.util

    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def give_back_freed_memory(collect: bool = False) -> None:
    """Hand the pages that freed memory left in the C heap back to the system (glibc only);
    with `collect`, first free what reference cycles still hold (a released model's).

    Why by hand: a task's embeddings come as many vectors of ~1.5 KB each, allocated among
    longer-lived small objects; once freed, glibc keeps their pages (the process's memory does
    not shrink), and the next model's vectors come on top. `malloc_trim` returns every whole
    free page. No library offers it. A full collection costs ~0.3 s once torch, transformers
    and mteb are imported (it walks all their objects), so it is paid only where it frees
    something: a model's modules hold cycles, an operator's embeddings do not."""
    if collect:
        import gc

        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _encoder_key(planned: PlannedUnit) -> tuple[str, str]:
    """(model, operator): what one embedding cache in memory serves."""
    return planned.unit.model_id, planned.unit.aggregator_key


class UnitComputer:
    """Computes units of a suite, keeping models loaded and embeddings cached between them.

    `cache`: where trained checkpoints are kept; `store`: the embedding cache (or None)."""

    def __init__(
        self,
        suite: Suite,
        cache: Path,
        store: EmbeddingStore | None,
        progress: ProgressCallback = ignore,
    ) -> None:
        self.suite, self.cache, self.store, self.progress = suite, cache, store, progress
        self._sessions: dict[str, ModelSession] = {}
        self._encoders: dict[tuple[str, str], CachingEncoder] = {}
        self._released_model = False
        """Whether a model was released since the last full collection."""

    def session(self, planned: PlannedUnit) -> ModelSession:
        """The model session of the unit's model (its model is built when first needed)."""
        from sbabench.run.session import ModelSession

        name = planned.unit.model_id
        if name not in self._sessions:
            if self._released_model:  # before the next model comes on top of the last one
                give_back_freed_memory(collect=True)
                self._released_model = False
            self._sessions[name] = ModelSession(self.suite, planned.unit, self.cache)
        return self._sessions[name]

    def encoder(self, planned: PlannedUnit) -> CachingEncoder:
        """The embedding cache of the unit's model x operator, reporting encoding progress."""
        from sbabench.run.encoding import CachingEncoder

        key = _encoder_key(planned)
        if key not in self._encoders:
            space = planned.key_parts.embedding_space()
            if self.store is not None:
                self.store.register(space, self.suite.name, *key)
            self._encoders[key] = CachingEncoder(
                self.session(planned).with_aggregator(planned),
                planned.unit.model_id,
                self.suite.settings.batch_size,
                on_batch=lambda n: self.progress(Event(EventKind.BATCH, count=n)),
                on_texts=lambda n: self.progress(Event(EventKind.TEXTS, count=n)),
                store=self.store,
                space=space,
            )
        return self._encoders[key]

    def compute(self, planned: PlannedUnit) -> UnitResult:
        """The unit's result; raises what scoring raises."""
        from sbabench.run.score import score_unit

        self.progress(Event(EventKind.UNIT_STARTED, planned.label))

        def phase(note: str) -> None:
            self.progress(Event(EventKind.PHASE, planned.label, message=note))

        encoder, session = self.encoder(planned), self.session(planned)
        return score_unit(self.suite, planned, encoder, session, self.store, phase)

    def attempt(self, planned: PlannedUnit) -> UnitResult | Failure:
        """The unit's result, or why it failed. A model that cannot be built is not one unit's
        failure but bad input for the whole run: its `ModelSpecError` propagates; so does a full
        disk (`StorageError`), which every later unit would meet too."""
        from sbabench.errors import ModelSpecError, StorageError
        from sbabench.run.storage import stop_when_disk_full

        try:
            with stop_when_disk_full(self.store.path if self.store is not None else self.cache):
                return self.compute(planned)
        except (ModelSpecError, StorageError):
            raise
        except Exception as exc:  # the unit fails, the others go on
            return Failure.of(exc)

    def release_encoder(self, planned: PlannedUnit) -> None:
        """Forget what the unit's model x operator holds in memory (call it after the last
        unit that reads it: without an embedding store, every vector it encoded)."""
        self._forget(lambda model, operator: (model, operator) == _encoder_key(planned))

    def release_other_operators(self, planned: PlannedUnit) -> None:
        """Forget what the unit's model holds for its other operators (for an executor that
        gets units one at a time, in the suite's order: grouped by operator)."""
        mine, operator = _encoder_key(planned)
        self._forget(lambda model, other: model == mine and other != operator)

    def release(self, model: str) -> bool:
        """Forget a model's session and encoders (freeing its memory); whether it was loaded.

        What its modules' reference cycles hold is collected before the next model is loaded
        (`session`), not here: after a run's last model nothing follows that needs it."""
        session = self._sessions.pop(model, None)
        self._released_model |= session is not None
        self._forget(lambda name, _: name == model)
        return session is not None and session.encoder is not None

    def _forget(self, which: Callable[[str, str], bool]) -> None:
        """Drop the encoders `which(model, operator)` picks; give the memory back if any went."""
        keys = [key for key in self._encoders if which(*key)]
        for key in keys:
            del self._encoders[key]
        if keys:
            give_back_freed_memory()

    def close(self) -> None:
        """Close the embedding cache."""
        if self.store is not None:
            self.store.close()
