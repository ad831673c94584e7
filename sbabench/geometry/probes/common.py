"""Helpers shared by the probes: JSON-friendly matrices and the inputs routed to an expert."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EPS = 1e-12


def matrix(values: np.ndarray) -> list[list[float | None]]:
    """A JSON-friendly matrix (NaN -> None)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


def off_diagonal_mean(values: np.ndarray) -> float | None:
    """Mean of the finite off-diagonal entries (None if there are none)."""
    off = values[~np.eye(len(values), dtype=bool)]
    off = off[~np.isnan(off)]
    return float(off.mean()) if off.size else None


def routed(
    x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor, expert: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs routed to `expert` and their router weights."""
    import torch

    token, slot = torch.nonzero(index == expert, as_tuple=True)
    return x[token].double(), weights[token, slot].double().clamp_min(0)
