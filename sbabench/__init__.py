"""sbabench: benchmark the aggregation step of Mixture-of-Experts embedding models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_suite", "parse_suite", "run_suite"]

if TYPE_CHECKING:
    from sbabench.runner import run_suite
    from sbabench.suite import load_suite, parse_suite


def __getattr__(name: str) -> Any:
    # Lazy: `import sbabench` stays fast; torch/mteb load only when a run needs them.
    if name == "run_suite":
        from sbabench.runner import run_suite

        return run_suite
    if name in ("load_suite", "parse_suite"):
        from sbabench import suite

        return getattr(suite, name)
    raise AttributeError(name)
