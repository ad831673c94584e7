"""Unit keys: everything that changes a unit's result, hashed.

A key covers the model (source, every option, the weights' identity: packaged model version,
hub id + revision, or the content hash of a local folder; for upcycled models the source of the
upcycling code), the aggregator (name, options, hash of its source code), the task (name,
dataset revision, split), the settings that change numbers (dtype, seed) and sbabench's scoring
version. Caches in comparable harnesses have returned another model's results because their
keys missed part of this; the parts are stored in each result and checked on reading.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.results import key_digest
from sbabench.tasks import task_identity

if TYPE_CHECKING:
    from sbabench.aggregators import ResolvedAggregator
    from sbabench.suite import Suite, Unit

SCORING_VERSION = 4
"""Bump when the way scores are computed changes; it is part of every unit key."""

_PACKAGE = Path(__file__).resolve().parent


@cache
def folder_content_hash(folder: str) -> str:
    """SHA-256 over the relative paths and bytes of every file in a local model folder."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@cache
def _source_hash(*relative: str) -> str:
    digest = hashlib.sha256()
    for name in relative:
        digest.update((_PACKAGE / name).read_bytes())
    return digest.hexdigest()


def model_identity(base: str, revision: str | None) -> dict[str, Any]:
    """What identifies a model's weights (packaged version, hub id + revision, folder hash)."""
    from sbabench.model_sources import PACKAGED_MODELS

    if base in PACKAGED_MODELS:
        from importlib import metadata

        return {"packaged": base, "version": metadata.version(base)}
    path = Path(base).expanduser()
    if path.is_dir():
        return {
            "local": str(path.resolve()),
            "content_sha256": folder_content_hash(str(path.resolve())),
        }
    return {"hub": base, "revision": revision}


def _spec_parts(spec: Any) -> dict[str, Any]:
    """A model spec's options (not its name) and its weights' identity."""
    return {
        "spec": spec.model_dump(exclude={"name"}),
        "weights": model_identity(spec.base, getattr(spec, "revision", None)),
    }


def model_parts(unit: Unit) -> dict[str, Any]:
    """The model half of a key (shared by every task of a model x aggregator)."""
    spec = unit.model
    parts = _spec_parts(spec)
    if spec.source == "upcycle":
        parts["upcycle_code_sha256"] = _source_hash("moe/upcycle.py", "tasks/sources.py")
    return parts


def router_cache_key(spec: Any) -> str:
    """The key of an upcycled model's cached k-means router: its spec, base weights, and the
    code that builds it (upcycling, background text, tokenisation)."""
    code = _source_hash("moe/upcycle.py", "tasks/sources.py", "models.py")
    return key_digest({**_spec_parts(spec), "code_sha256": code})


def aggregator_parts(aggregator: ResolvedAggregator | None) -> dict[str, Any] | None:
    """The operator's name, validated options and source-code hash."""
    if aggregator is None:
        return None
    return {
        "name": aggregator.name,
        "options": dict(aggregator.options),
        "source_sha256": aggregator.source_hash,
    }


def train_parts(suite: Suite) -> dict[str, Any] | None:
    """The fine-tuning spec and the training code's hash (None without a `train:` block)."""
    if suite.train is None:
        return None
    return {"spec": suite.train.model_dump(), "code_sha256": _source_hash("training.py")}


def unit_key_parts(
    suite: Suite, unit: Unit, aggregator: ResolvedAggregator | None
) -> dict[str, Any]:
    """Everything that changes a unit's score."""
    parts = {
        "model": model_parts(unit),
        "aggregator": aggregator_parts(aggregator),
        "task": task_identity(unit.task_entry),
        "settings": suite.settings.model_dump(include={"dtype", "seed"}),
        "scoring_version": SCORING_VERSION,
    }
    train = train_parts(suite)
    if train is not None:
        parts["train"] = train
    return parts


def embedding_space(parts: dict[str, Any]) -> str:
    """The key of the embeddings a unit uses: its parts without the task and scoring."""
    return key_digest(
        {k: parts[k] for k in ("model", "aggregator", "settings", "train") if k in parts}
    )


def checkpoint_key(parts: dict[str, Any]) -> str:
    """The key of a trained model x operator."""
    return key_digest(
        {k: parts[k] for k in ("model", "aggregator", "train", "settings") if k in parts}
    )
