"""Aggregation operators: a registry of built-ins plus user operators by import path."""

from __future__ import annotations

import importlib
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

from pydantic import BaseModel, ValidationError

from sbabench.aggregators import builtin as _builtin  # noqa: F401  (registers the built-ins)
from sbabench.aggregators.base import AggregatorFn, AggregatorInfo, registry
from sbabench.digests import modules_digest, source_digest
from sbabench.errors import AggregatorError

__all__ = ["AggregatorFn", "AggregatorInfo", "ResolvedAggregator", "registry", "resolve"]


@dataclass(frozen=True)
class ResolvedAggregator:
    """An operator ready to run: validated options, code fingerprint, and its function."""

    name: str
    """As written in the suite (a registry name or `package.module:function`)."""
    build: Callable[[], AggregatorFn] = field(repr=False)
    """Builds the callable (outputs, weights) -> combined; imports torch."""
    options: Mapping[str, Any]
    """Validated options, defaults filled in."""
    function: str
    """`module:function` of the operator's code (a user operator: its name)."""

    @cached_property
    def fn(self) -> AggregatorFn:
        """The operator function (built on first use, so planning a run needs no torch)."""
        return self.build()

    @cached_property
    def code_sha256(self) -> str:
        """Digest of the operator's code (see `sbabench.digests`). A user operator: its whole
        module and the modules of the user's tree it imports. A built-in: its function, what
        that reaches, and how its options are bound, so that editing another leaves it as is."""
        if is_user_operator(self.name):
            return modules_digest([self.function.partition(":")[0]])
        return source_digest(self.function, f"{__name__}:_bind")


def is_user_operator(name: str) -> bool:
    """`package.module:function` names a user operator."""
    return ":" in name


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def user_operator_problem(name: str) -> str | None:
    """Why `name` is not a well-formed `package.module:function` reference, or None. Read
    without importing anything: importing the module runs its code, which is `run`'s job."""
    module, _, function = name.partition(":")
    parts = module.split(".")
    bad = [p for p in (*parts, function) if not _IDENTIFIER.fullmatch(p) or keyword.iskeyword(p)]
    if name.count(":") != 1 or bad:
        shown = ", ".join(repr(p) for p in bad) or "more than one ':'"
        return (
            f"user operator {name!r} is not 'package.module:function' ({shown}: each part "
            "must be a Python name; no leading dots, no empty parts)"
        )
    return None


def _bind(function: str, options: BaseModel) -> AggregatorFn:
    """A built-in operator's function with its validated options as keyword arguments."""
    module, _, name = function.partition(":")
    fn: AggregatorFn = getattr(importlib.import_module(module), name)
    kwargs = options.model_dump()
    return partial(fn, **kwargs) if kwargs else fn


def _load_user_operator(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    fix = "write it as 'package.module:function' with the package importable (on PYTHONPATH)"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AggregatorError(f"cannot import module {module_name!r}: {exc}", fix=fix) from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AggregatorError(f"{module_name!r} has no callable {attr!r}", fix=fix)
    return fn


def probe(fn: AggregatorFn, name: str) -> None:
    """Call the operator on a small random batch and check shape, dtype and finiteness."""
    import torch

    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(5, 2, 8, generator=generator)
    weights = torch.softmax(torch.randn(5, 2, generator=generator), dim=-1)
    try:
        combined = fn(outputs, weights)
    except Exception as exc:
        raise AggregatorError(
            f"operator {name!r} failed on a probe batch (tokens=5, k=2, hidden=8): {exc!r}",
            fix="its signature must be fn(outputs[T,k,H], weights[T,k], **options) -> [T,H]",
        ) from None
    if not isinstance(combined, torch.Tensor) or tuple(combined.shape) != (5, 8):
        shape = getattr(combined, "shape", type(combined).__name__)
        raise AggregatorError(
            f"operator {name!r} returned {shape} for outputs of shape (5, 2, 8)",
            fix="return a tensor of shape (tokens, hidden)",
        )
    if not torch.isfinite(combined).all():
        raise AggregatorError(f"operator {name!r} returned non-finite values on a probe batch")


def resolve(name: str, options: Mapping[str, Any] | None = None) -> ResolvedAggregator:
    """Turn a suite entry (name + options) into a runnable, validated operator.

    A user operator is imported and run once on a probe batch; a built-in one only has its
    options validated (nothing is imported or read until it runs or its key is needed).
    """
    options = dict(options or {})
    if is_user_operator(name):
        problem = user_operator_problem(name)
        if problem is not None:
            raise AggregatorError(problem, fix="write it as 'package.module:function'")
        fn = _load_user_operator(name)
        bound: AggregatorFn = partial(fn, **options) if options else fn
        probe(bound, name)
        return ResolvedAggregator(name, lambda: bound, options, name)
    info = registry().get(name)
    if info is None:
        known = ", ".join(sorted(registry()))
        raise AggregatorError(
            f"unknown aggregator {name!r}",
            fix=f"use one of: {known}; or a user operator as 'package.module:function'",
        )
    try:
        validated = info.options(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise AggregatorError(
            f"bad options for aggregator {name!r}: {problems}",
            fix=f"valid options: {', '.join(info.options.model_fields) or 'none'}",
        ) from None
    return ResolvedAggregator(
        name, partial(_bind, info.function, validated), validated.model_dump(), info.function
    )
