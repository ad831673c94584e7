"""Suite files: the schema (pure), the loader with line locations, and the checks needing I/O."""

from sbabench.suite.loader import load_suite, parse_suite
from sbabench.suite.schema import (
    AggregatorEntry,
    AnyModel,
    GeometrySpec,
    ModelSpec,
    Settings,
    Suite,
    TaskEntry,
    TrainSpec,
    Unit,
    expand,
)

__all__ = [
    "AggregatorEntry",
    "AnyModel",
    "GeometrySpec",
    "ModelSpec",
    "Settings",
    "Suite",
    "TaskEntry",
    "TrainSpec",
    "Unit",
    "expand",
    "load_suite",
    "parse_suite",
]
