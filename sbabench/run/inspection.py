"""What `sbabench inspect` shows about a model: its MoE layers, which geometry probes can run on
each, and how it turns token states into an embedding. Values only; the CLI draws them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sbabench.errors import SbabenchError
from sbabench.models.encoder import EncoderConfig
from sbabench.models.machine_cache import MachineCache
from sbabench.models.spec import AnyModel


@dataclass(frozen=True)
class LayerReport:
    """One MoE layer as sbabench finds it."""

    name: str
    """Qualified module name of the layer's combination point."""
    family: str
    """The MoE family adapter that found it."""
    experts: int
    """Routed experts in the layer."""
    top_k: int
    """Experts selected per token."""
    renormalized: bool
    """Whether the top-k router weights are renormalised to sum to 1."""
    unavailable: dict[str, str]
    """Per geometry probe that cannot run on this layer, why not (empty: every probe can)."""

    @property
    def probes(self) -> str:
        """ "all", or one "no <probe>: <why>" per probe that cannot run."""
        return "; ".join(f"no {p}: {why}" for p, why in self.unavailable.items()) or "all"


@dataclass(frozen=True)
class ModelReport:
    """One model as loaded for a run (on the CPU)."""

    name: str
    """The model's name in the suite ("inspected" for a hub id or folder)."""
    model_class: str
    """Class name of the transformer under sentence-transformers (BertModel, ...)."""
    parameters: int
    """Parameters of that transformer, experts and routers included."""
    layers: tuple[LayerReport, ...]
    """Its MoE layers in module order (none: a dense model)."""
    config: EncoderConfig
    """Pooling, normalisation, length, prompts and the sentence-transformers modules."""


def inspected_specs(
    target: str | Path,
    model_name: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> list[AnyModel]:
    """The models `inspect` looks at: a suite file's (all, or the one named `model_name`), or
    one hub id / local folder taken as `source: huggingface`."""
    from sbabench.models.spec import HuggingFaceModel
    from sbabench.suite import load_suite
    from sbabench.suite.loader import example_suites

    example = str(target) in example_suites() and not Path(target).exists()
    if str(target).endswith((".yaml", ".yml")) or example:
        specs = [m for m in load_suite(target).models if model_name in (None, m.name)]
        if not specs:
            raise SbabenchError(f"suite {str(target)!r} has no model named {model_name!r}")
        return specs
    try:
        spec = HuggingFaceModel(
            name="inspected",
            source="huggingface",
            path=str(target),
            revision=revision,
            trust_remote_code=trust_remote_code,
        )
    except ValidationError as exc:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise SbabenchError(message, where=str(target), fix="pass --revision <commit>") from None
    return [spec]


def inspect_model(spec: AnyModel, cache: MachineCache | None = None) -> ModelReport:
    """Load `spec` on the CPU as a run would (`cache`: the machine cache, by default this
    machine's) and report its MoE layers and embedding configuration."""
    from sbabench.geometry.probes import support
    from sbabench.models.encoder import build_encoder
    from sbabench.run.quiet import quiet_libraries

    with quiet_libraries():
        encoder = build_encoder(spec, device="cpu", cache=cache or MachineCache())
    model = encoder.model
    layers = []
    for layer in encoder.moe_layers:
        verdicts = support(model, layer)
        layers.append(
            LayerReport(
                name=layer.name,
                family=layer.family,
                experts=layer.num_experts,
                top_k=layer.top_k,
                renormalized=layer.renormalized,
                unavailable={p: why for p, why in verdicts.items() if why != "ok"},
            )
        )
    return ModelReport(
        name=spec.name,
        model_class=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        layers=tuple(layers),
        config=encoder.config,
    )
