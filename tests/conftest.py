"""Shared fixtures: offline mode and one dense MiniLM loaded per session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The machine cache (router centroids) of a test session is its own, never the user's.
os.environ["SBABENCH_CACHE"] = tempfile.mkdtemp(prefix="sbabench-test-cache-")
