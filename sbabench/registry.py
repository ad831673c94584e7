"""The one registry class behind every extension point: operators, task types, geometry probes
and MoE families each keep one `Registry`, and nothing else lists them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries in registration order; a name is registered once."""

    def __init__(
        self,
        kind: str,
        name: Callable[[T], str],
        check: Callable[[Mapping[str, T], T], None] | None = None,
    ) -> None:
        self.kind = kind
        """What the entries are, for error messages ("aggregator", "task type", ...)."""
        self._name = name
        self._check = check
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Add an entry; its name must be new (and `check` may refuse other clashes)."""
        name = self._name(entry)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        if self._check is not None:
            self._check(self.entries(), entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register their own)."""
        self._entries.pop(name, None)

    def entries(self) -> Mapping[str, T]:
        """Every entry by name, in registration order (a copy)."""
        return dict(self._entries)
