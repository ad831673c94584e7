"""Upcycled models' k-means router centroids in the machine cache, keyed by what they depend on.

The centroids take most of an upcycled model's build time (a forward pass over the background
text and k-means per layer) and are a few kilobytes; they depend only on the model spec, the
base weights and the code that computes them, so one machine builds them once.

Centroids decide a model's routing, so an entry is used only when the machine cache vouches for
it: its checksum holds, it is no link, and this user wrote it (an entry another user owns, which
in a shared folder could be forged, is ignored unless `SBABENCH_SHARED_CACHE=1`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sbabench.digests import key_digest
from sbabench.models.code import model_code_sha256
from sbabench.models.machine_cache import MachineCache
from sbabench.models.sources import weights_identity

if TYPE_CHECKING:
    import torch

    from sbabench.models.spec import AnyModel

log = logging.getLogger("sbabench")

KIND = "routers"
"""The machine-cache folder of router centroids."""
_CENTROID_CODE = ("sbabench.models.encoder",)
"""Where the centroids are computed: these modules and what they import are in the key."""


_IMPLICIT_OPTIONS: dict[str, Any] = {
    "token_elimination": None,
    "routing": None,
    "router_decay": 0.99,
    "router_tokens": 8192,
    "router_inits": 3,
}
"""Model options added after results existed, with the value every older result implicitly
had: left out of the key at that value, so that adding them changed no model key (old results
still pair with new ones in `compare`). For `router_tokens` / `router_inits` that value is the
router build before they existed, not today's default: a model at the new default is another
model (other centroids) and gets another key."""


def spec_parts(spec: AnyModel) -> dict[str, Any]:
    """A model spec's options (not its name, its resources, its replicate count, or its
    train-stage router options, which the train key holds) and its weights' identity."""
    options = spec.model_dump(exclude={"name", "resources", "train", "replicates"})
    for name, implicit in _IMPLICIT_OPTIONS.items():
        if name in options and options[name] == implicit:
            del options[name]
    if options.get("router") == "random":  # no centroids: how they would be fitted is moot
        options.pop("router_tokens", None)
        options.pop("router_inits", None)
    return {
        "spec": options,
        "weights": weights_identity(spec.base, getattr(spec, "revision", None)),
    }


_NOT_IN_CENTROIDS = {"token_elimination", "router_decay", "max_length", "routing"}
"""Upcycle options the k-means centroids do not depend on (the background text is tokenised and
run on the dense model as it is; routing sparsity applies after the router is built)."""


def router_cache_key(spec: AnyModel) -> str:
    """The key of an upcycled model's centroids: its spec, base weights, and the code that
    computes them (upcycling, background text, tokenisation). `kmeans` and `online-kmeans`
    share them: the online router starts from the same centroids."""
    parts = spec_parts(spec)
    options = {k: v for k, v in parts["spec"].items() if k not in _NOT_IN_CENTROIDS}
    if options.get("router") == "online-kmeans":
        options["router"] = "kmeans"
    return key_digest(
        {**parts, "spec": options, "code_sha256": model_code_sha256(_CENTROID_CODE, True)}
    )


def cached_centroids(
    cache: MachineCache | None, key: str, compute: Callable[[], dict[int, torch.Tensor]]
) -> dict[int, torch.Tensor]:
    """Centroids from the machine cache, or computed and stored there."""
    import torch

    payload = cache.get(KIND, key) if cache is not None else None
    if payload is not None:
        try:
            loaded = torch.load(io.BytesIO(payload), weights_only=True)
            return {int(layer): tensor for layer, tensor in loaded.items()}
        except Exception:  # checksummed, so only a foreign format gets here: rebuild it
            log.warning("sbabench: ignoring unreadable router cache entry %s", key)
    centroids = compute()
    if cache is not None:
        buffer = io.BytesIO()
        torch.save({str(layer): tensor for layer, tensor in centroids.items()}, buffer)
        cache.put(KIND, key, buffer.getvalue())
    return centroids
