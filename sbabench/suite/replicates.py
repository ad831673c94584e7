"""Replicates: a model rebuilt (and retrained) with other seeds for everything sbabench
randomises, so a verdict can account for that variance, not only for the test items'.

Replicate 0 is the suite as written: every seed unchanged, so results from before replicates
existed stay valid. Replicate r > 0 replaces each seed s by `derive_seed(s, r)`, a 31-bit
number hashed from (s, r): the upcycled model's `seed` (its dropped neurons, its random router
or its k-means initialisation), the train stage's `seed` (data order, dropout, router
initialisation) and `settings.seed` (the geometry sample, clustering's seeded k-means runs).
Every operator of one replicate shares these seeds, so operator comparisons stay paired within
a replicate. Pure: no I/O.
"""

from __future__ import annotations

import hashlib

from sbabench.models.spec import AnyModel, UpcycleModel


def derive_seed(seed: int, replicate: int) -> int:
    """The seed replicate `replicate` uses where the suite says `seed` (replicate 0: `seed`)."""
    if replicate == 0:
        return seed
    digest = hashlib.sha256(f"sbabench-replicate:{seed}:{replicate}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def randomised(model: AnyModel, trained: bool) -> list[str]:
    """What sbabench randomises in building (and, if `trained`, training) `model`; empty:
    nothing."""
    parts = []
    if isinstance(model, UpcycleModel):
        parts.append("upcycling (re-initialised neurons, router)")
    if trained:
        parts.append("training (data order, dropout)")
    return parts


def replicate_model(model: AnyModel, replicate: int) -> AnyModel:
    """`model` as replicate `replicate` builds it (its name unchanged)."""
    if replicate == 0 or not isinstance(model, UpcycleModel):
        return model
    return model.model_copy(update={"seed": derive_seed(model.seed, replicate)})


def instance_name(model: str, replicate: int) -> str:
    """A model's replicate as it appears in unit labels and result paths: `model` for
    replicate 0, `model@rR` for replicate R."""
    return model if replicate == 0 else f"{model}@r{replicate}"


def parse_instance(name: str) -> tuple[str, int]:
    """The inverse of `instance_name`: `model@rR` -> (model, R), `model` -> (model, 0)."""
    model, at, replicate = name.rpartition("@r")
    if at and replicate.isdigit():
        return model, int(replicate)
    return name, 0
