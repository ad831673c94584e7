"""A cache of upcycled models' k-means router centroids, keyed by what they depend on.

The centroids take most of an upcycled model's build time (a forward pass over the background
text and k-means per layer) and are a few kilobytes, so they are kept on disk.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.atomic import write_bytes_atomic
from sbabench.digests import key_digest, source_digest
from sbabench.models.sources import weights_identity

if TYPE_CHECKING:
    import torch

    from sbabench.models.spec import AnyModel

log = logging.getLogger("sbabench")

_CENTROID_CODE = ("sbabench.models.encoder", "background_centroids")
"""The function that computes the centroids: its code (and what it calls) is in the key."""


def spec_parts(spec: AnyModel) -> dict[str, Any]:
    """A model spec's options (not its name) and its weights' identity."""
    return {
        "spec": spec.model_dump(exclude={"name"}),
        "weights": weights_identity(spec.base, getattr(spec, "revision", None)),
    }


def router_cache_key(spec: AnyModel) -> str:
    """The key of an upcycled model's centroids: its spec, base weights, and the code that
    computes them (upcycling, background text, tokenisation)."""
    return key_digest({**spec_parts(spec), "code_sha256": source_digest(*_CENTROID_CODE)})


def cached_centroids(
    folder: Path | None, key: str, compute: Callable[[], dict[int, torch.Tensor]]
) -> dict[int, torch.Tensor]:
    """Centroids from `folder/<key>.pt`, or computed and stored there."""
    import torch

    path = folder / f"{key}.pt" if folder is not None else None
    if path is not None and path.is_file():
        try:
            loaded = torch.load(path, weights_only=True)
            return {int(layer): tensor for layer, tensor in loaded.items()}
        except Exception:  # a torn or foreign file: recompute and replace it
            log.warning("ignoring unreadable router cache %s", path)
    centroids = compute()
    if path is not None:
        buffer = io.BytesIO()
        torch.save({str(layer): tensor for layer, tensor in centroids.items()}, buffer)
        write_bytes_atomic(path, buffer.getvalue())
    return centroids
