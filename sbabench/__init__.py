"""sbabench: benchmark the aggregation step of Mixture-of-Experts embedding models.

The library does everything the CLI does, and prints nothing:

    import sbabench
    suite = sbabench.load_suite("suites/quickstart.yaml")
    summary = sbabench.run_suite(suite, "results", progress=print)
    outcome = sbabench.compare(["results/quickstart"])
    print(outcome.verdict.text)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["compare", "load_suite", "parse_suite", "plan_suite", "run_suite", "run_suite_ray"]

if TYPE_CHECKING:
    from sbabench.analysis.compare import compare
    from sbabench.run.execute import run_suite
    from sbabench.run.plan import plan_suite
    from sbabench.run.ray_executor import run_suite_ray
    from sbabench.suite import load_suite, parse_suite

_LAZY = {
    "compare": "sbabench.analysis.compare",
    "run_suite": "sbabench.run.execute",
    "run_suite_ray": "sbabench.run.ray_executor",
    "plan_suite": "sbabench.run.plan",
    "load_suite": "sbabench.suite",
    "parse_suite": "sbabench.suite",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import sbabench` stays fast; torch/mteb load only when a run needs them.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
