"""The suite's `geometry:` block: what is recorded about each MoE unit's geometry (pure).

Besides `tokens` and `probes`, the block holds the settings of the probes it asks for; which
keys exist, and what values they take, is each probe's settings model (see
`sbabench.geometry.probes.registry`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sbabench.geometry.probes.registry import probes as registered
from sbabench.geometry.probes.registry import setting_owners


def _known_probe(name: str) -> str:
    if name not in registered():
        raise ValueError(f"unknown probe {name!r}; use any of: {', '.join(registered())}")
    return name


ProbeName = Annotated[str, AfterValidator(_known_probe)]
"""The name of a registered probe."""


def _geometry_schema(schema: dict[str, Any]) -> None:
    """The block's keys are its own and the registered probes' settings; nothing else."""
    properties = schema["properties"]
    for probe in registered().values():
        for key, value in probe.settings.model_json_schema()["properties"].items():
            properties.setdefault(key, value)
    properties["probes"]["items"] = {"enum": sorted(registered())}
    schema["additionalProperties"] = False


class GeometrySpec(BaseModel):
    """Geometry statistics recorded with every MoE unit, and the opt-in deeper probes."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra=_geometry_schema,
    )

    tokens: int = Field(
        4096, ge=0, le=1_000_000, description="tokens sampled per MoE layer (0: no geometry)"
    )
    probes: tuple[ProbeName, ...] = Field(
        (), description="deeper probes: jacobian, expert-pca, router-coupling (opt-in)"
    )
    # Every other key is a probe's setting: its name, default and bounds are the probe's own
    # settings model (e.g. `jacobian_tokens`, `subspace_dim`), validated in `_consistent`.

    @model_validator(mode="after")
    def _consistent(self) -> GeometrySpec:
        known = registered()
        if len(set(self.probes)) != len(self.probes):
            raise ValueError(f"probes must not repeat, got {list(self.probes)}")
        if self.probes and self.tokens == 0:
            raise ValueError("probes need sampled tokens: set `tokens` above 0")
        owners = setting_owners()
        strangers = [k for k in self.model_extra or {} if k not in owners]
        if strangers:
            raise ValueError(
                f"unknown key(s) {strangers} in geometry (probe settings: {', '.join(owners)})"
            )
        for owner in {owners[k] for k in self.model_extra or {}}:
            self.settings(owner)
        for name in self.probes:
            check = known[name].check
            problem = check(self.settings(name), self.tokens) if check else None
            if problem:
                raise ValueError(problem)
        return self

    def _values(self) -> dict[str, Any]:
        """Every probe setting: each probe's defaults, then what the block sets."""
        defaults = {
            key: field.default
            for probe in registered().values()
            for key, field in probe.settings.model_fields.items()
        }
        return {**defaults, **(self.model_extra or {})}

    def settings(self, probe: str) -> BaseModel:
        """The settings model of one probe, filled from this block."""
        model = registered()[probe].settings
        values = self._values()
        try:
            return model(**{k: values[k] for k in model.model_fields if k in values})
        except ValidationError as exc:
            raise ValueError(f"{probe}: {exc.errors(include_url=False)[0]['msg']}") from None

    def requested(self) -> dict[str, BaseModel]:
        """Each requested probe with its settings."""
        return {name: self.settings(name) for name in self.probes}

    def recorded(self) -> dict[str, Any]:
        """What a geometry block records of this spec: the probes and every probe setting."""
        return {"probes": list(self.probes), **self._values()}
