"""User operators for the tests of import-path loading."""

from __future__ import annotations

import torch


def scaled_linear(outputs: torch.Tensor, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """scale * sum_i w_i y_i."""
    return scale * (outputs * weights.unsqueeze(-1)).sum(1)


def wrong_shape(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Forgets to reduce over the experts."""
    return outputs


def nan_out(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Returns NaN."""
    return torch.full_like(outputs[:, 0], float("nan"))


def fails_on_real_batches(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Passes the probe batch (5 tokens) but breaks on real ones: a unit failure."""
    if outputs.shape[0] > 5:
        raise RuntimeError("simulated operator failure")
    return (outputs * weights.unsqueeze(-1)).sum(1)


def slow_linear(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear, but slow, and touches $SBABENCH_TEST_MARKER on real batches: lets tests kill a run mid-encoding."""
    import os
    import time
    from pathlib import Path

    if outputs.shape[0] > 5 and os.environ.get("SBABENCH_TEST_MARKER"):
        Path(os.environ["SBABENCH_TEST_MARKER"]).touch()
        time.sleep(0.05)
    return (outputs * weights.unsqueeze(-1)).sum(1)


def nan_on_real_batches(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Passes the probe, then returns NaN: makes training diverge."""
    combined = (outputs * weights.unsqueeze(-1)).sum(1)
    return combined * float("nan") if outputs.shape[0] > 5 else combined
