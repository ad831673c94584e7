"""What produced a result: package versions, machine, command line."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("sbabench", "torch", "transformers", "sentence-transformers", "mteb", "numpy")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"


@cache
def git_commit() -> str | None:
    """The commit of the sbabench checkout, if it is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    """GPU name and driver-visible capability, or the CPU model."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return platform.processor() or platform.machine()


def collect(device: torch.device, settings: dict[str, Any]) -> dict[str, Any]:
    """Versions, machine, settings and command line for a result file."""
    return {
        "versions": {name: _version(name) for name in _PACKAGES},
        "python": sys.version.split()[0],
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "settings": settings,
        "command": " ".join(sys.argv),
    }
