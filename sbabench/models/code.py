"""The code a model's numbers depend on, keyed per module (see `sbabench.digests`).

Every module that building, running, routing, training or thinning a model can import counts
whole, with the packages above it. Two parts are cut: the operators (a unit's operator is keyed
by its own code; an MoE model adds `linear`, which its layers run until an operator is set) and,
for a dense model, the MoE family modules (each registers a family; a dense model runs none).
"""

from __future__ import annotations

from sbabench.digests import imports, key_digest, modules_digest, source_digest

_OPERATORS = "sbabench.aggregators"
_DEFAULT_OPERATOR = "sbabench.aggregators.spherical:linear"
_REGISTERS_FAMILY = ("sbabench.moe.registry", "register")
"""What a family module imports (`moe.registry`'s rule: a family is a module that registers)."""


def is_family_module(module: str) -> bool:
    """A module that registers an MoE family."""
    return _REGISTERS_FAMILY in imports(module)


def model_code_sha256(roots: tuple[str, ...], moe: bool) -> str:
    """Digest of `roots` and every module they import (operators cut, and for a dense model,
    `moe` False, the MoE family modules), plus the default operator for an MoE model."""

    def cut(module: str) -> bool:
        operator = module == _OPERATORS or module.startswith(_OPERATORS + ".")
        return operator or (not moe and is_family_module(module))

    modules = modules_digest(roots, cut)
    if not moe:
        return modules
    return key_digest({"modules": modules, "default_operator": source_digest(_DEFAULT_OPERATOR)})
