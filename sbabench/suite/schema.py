"""The suite file's schema (pydantic) and its expansion into units. Pure: no I/O, no imports of
mteb or of user code; `sbabench.suite.check` does what needs those."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from sbabench.aggregators import is_user_operator, resolve, user_operator_problem
from sbabench.errors import SbabenchError
from sbabench.geometry.spec import GeometrySpec
from sbabench.models.spec import AnyModel, ModelSpec, RouterTraining, UpcycleModel
from sbabench.paths import name_problem
from sbabench.spec_base import Name, ReplicateCount, StrictModel
from sbabench.suite.replicates import derive_seed, instance_name, randomised, replicate_model
from sbabench.tasks.spec import TaskEntry


class Settings(StrictModel):
    """Run-wide settings."""

    batch_size: int = Field(32, ge=1, le=4096)
    """Texts per forward pass."""
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """`auto` (cuda when available, else cpu), cpu, mps, cuda or cuda:N."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Precision of the model's weights and activations."""
    seed: int = 0
    """Seed of torch and of the statistics' resampling."""
    embedding_cache: Literal["float32", "float16", "off"] = "float32"
    """On-disk embedding cache: vector precision, or off."""


def _aggregator_schema(schema: dict[str, Any]) -> None:
    """In a suite an entry is also a bare operator name, and options may sit beside `name`."""
    entry = {**schema, "additionalProperties": True}
    schema.clear()
    schema["anyOf"] = [
        {"type": "string", "description": "an operator name, with its default options"},
        entry,
    ]
    schema["description"] = entry.pop("description")


class AggregatorEntry(StrictModel):
    """An operator and its options; `label` names it in results when options differ."""

    model_config = ConfigDict(json_schema_extra=_aggregator_schema)

    name: str
    """A built-in operator (`sbabench aggregators` lists them) or `module:function` of your own."""
    label: Name | None = None
    """The operator's name in results and tables (needed when one operator repeats)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The operator's options (also accepted inline, beside `name`)."""

    @model_validator(mode="before")
    @classmethod
    def _from_short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict):
            known = {"name", "label", "options"}
            extra = {k: v for k, v in data.items() if k not in known}
            return {k: v for k, v in data.items() if k in known} | {
                "options": {**data.get("options", {}), **extra}
            }
        return data

    @model_validator(mode="after")
    def _resolves(self) -> AggregatorEntry:
        if is_user_operator(self.name):
            problem = user_operator_problem(self.name)
            if problem is not None:
                raise ValueError(problem + " — fix: write it as 'package.module:function'")
            # imported and probed by `sbabench.suite.check` when a run asks for it
        else:
            try:
                resolve(self.name, self.options)
            except SbabenchError as exc:
                raise ValueError(exc.render().replace("\n  fix:", " — fix:")) from None
        problem = name_problem(self.key)
        if problem is not None:  # the key names a results folder
            raise ValueError(f"operator name {problem} — fix: give the entry a `label`")
        return self

    @property
    def key(self) -> str:
        """The name used in result paths and tables."""
        if self.label:
            return self.label
        return self.name.replace(":", ".") if ":" in self.name else self.name


class TrainSpec(RouterTraining):
    """An optional fine-tuning stage, identical for every operator of a model (the router
    options apply to MoE models; a model's own `train:` entry overrides them for it)."""

    objective: Literal["simcse", "pairs"] = "simcse"
    """`simcse`: unsupervised dropout positives; `pairs`: contrastive on text pairs."""
    data: str = "bundled:lee_background"
    """`bundled:lee_background`, `bundled:aia-bde-paraphrases`, or a local file (text / text1,text2)."""
    steps: int = Field(200, ge=1, le=1_000_000)
    """Optimiser steps (the same for every operator: equal cost)."""
    batch_size: int = Field(32, ge=2, le=65536)
    """Pairs per step (in-batch negatives)."""
    lr: float = Field(2e-5, gt=0, le=1.0)
    """AdamW learning rate."""
    seed: int = 0
    """Seed of the data order and dropout."""
    trainable: Literal["moe", "all"] = "moe"
    """Train the MoE blocks only (experts and routers) or every parameter."""
    max_length: int = Field(128, ge=8, le=8192)
    """Tokens per training text."""
    temperature: float = Field(0.05, gt=0, le=10)
    """Temperature of the contrastive loss."""


def _replicates_form(value: Any) -> str:
    return "until-decided" if isinstance(value, (dict, UntilDecided)) else "count"


class UntilDecided(StrictModel):
    """`replicates: {min: 2, max: 10}`: replicates in rounds until every operator's comparison
    with the baseline operator is decided (`sbabench run` runs such a suite sequentially; see
    docs/replicates.md)."""

    min: ReplicateCount = 2
    """Replicates of the first round (at least 2: a test over replicates needs two)."""
    max: ReplicateCount
    """Replicates at most."""
    step: ReplicateCount = 1
    """Replicates added per round."""
    effect: float | None = Field(None, gt=0, le=1)
    """The difference of interest: a comparison whose interval lies within +-effect is decided
    (none: only a significant difference decides one)."""
    baseline: Name = "linear"
    """The operator every other operator is compared with (an aggregator's name or label)."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Level of each model's comparisons over all rounds together."""

    @model_validator(mode="after")
    def _ordered(self) -> UntilDecided:
        if self.min < 2:
            raise ValueError("min must be at least 2: a test over replicates needs two")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Suite(StrictModel):
    """A benchmark suite: every model x aggregator x task is one unit."""

    name: Name
    """The suite's name: results go to <results>/<name>/."""
    models: list[ModelSpec] = Field(min_length=1)
    """The models: upcycled MoEs, pretrained MoEs (`huggingface`) and dense reference rows."""
    aggregators: list[AggregatorEntry] = Field(default_factory=list)
    """The operators each MoE model is evaluated with: a name, or {name, label, options}."""
    tasks: list[TaskEntry] = Field(min_length=1)
    """The tasks: a bundled or MTEB task name, or a local file entry."""
    settings: Settings = Field(default_factory=Settings)
    """Batch size, device, precision, seed and the embedding cache."""
    train: TrainSpec | None = None
    """Fine-tune each model x operator before evaluating it (same budget for all)."""
    geometry: GeometrySpec = Field(default_factory=GeometrySpec)
    """Geometry statistics of every MoE unit, and the opt-in probes."""
    replicates: Annotated[
        Annotated[ReplicateCount, Tag("count")] | Annotated[UntilDecided, Tag("until-decided")],
        Discriminator(_replicates_form),
    ] = 1
    """Independent replicates of every model with something random (upcycled, or trained): each
    re-derives every seed sbabench uses from (the suite's seed, the replicate); `compare` then
    tests across replicates as well as items. A model's own `replicates` wins. Or
    `{min: 2, max: 10}`: rounds of replicates until decided."""
    _notes: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _geometry_tokens_setting(cls, data: Any) -> Any:
        """`settings: {geometry_tokens: N}` (the older spelling) means `geometry: {tokens: N}`."""
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            return data
        if "geometry_tokens" not in data["settings"]:
            return data
        settings = dict(data["settings"])
        tokens = settings.pop("geometry_tokens")
        geometry = data.get("geometry") or {}
        if not isinstance(geometry, dict):
            return data
        if "tokens" in geometry:
            raise ValueError("settings.geometry_tokens and geometry.tokens are both set; keep one")
        return {**data, "settings": settings, "geometry": {**geometry, "tokens": tokens}}

    @field_validator("tasks")
    @classmethod
    def _tasks_unique(cls, tasks: list[TaskEntry]) -> list[TaskEntry]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        return tasks

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        keys = [a.key for a in self.aggregators]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"aggregators must have distinct names, got {keys}; give repeated operators a label"
            )
        if isinstance(self.replicates, UntilDecided) and self.replicates.baseline not in keys:
            raise ValueError(
                f"replicates.baseline {self.replicates.baseline!r} is not among the suite's "
                f"aggregators ({', '.join(keys) or 'none'}); name one of them"
            )
        if any(m.is_moe for m in self.models) and not self.aggregators:
            raise ValueError(
                "the suite has an MoE model but no aggregators; add e.g. [linear, sba]"
            )
        self._router_training_fits()
        return self

    def _router_training_fits(self) -> None:
        for model in self.models:
            if model.train is not None and model.train.model_fields_set and self.train is None:
                raise ValueError(
                    f"model {model.name!r} has router options in `train:` but the suite has no "
                    "`train:` block (add one, or remove the model's `train:`)"
                )
            spec = self.train_for(model)
            online_model = isinstance(model, UpcycleModel) and model.router == "online-kmeans"
            if spec is None or not model.is_moe:
                continue
            if online_model and spec.router in ("learned", "frozen", "loss-free"):
                raise ValueError(
                    f"model {model.name!r}: router online-kmeans has no weights to learn, but "
                    f"train.router is {spec.router} (give the model `train: {{router: online-kmeans}}`, "
                    "or use router: kmeans)"
                )
            if spec.aux_loss > 0 and (spec.router in ("online-kmeans", "frozen") or online_model):
                raise ValueError(
                    f"model {model.name!r}: aux_loss needs a router trained by gradient, and its "
                    "router is frozen or online-kmeans (give the model `train: {aux_loss: 0}`)"
                )

    def replicates_of(self, model: AnyModel) -> int:
        """How many replicates of `model` run: its own or the suite's count, or 1 when nothing
        in it is random (N copies would be identical)."""
        wanted = model.replicates or self.replicate_count
        return wanted if randomised(model, self.train_for(model) is not None) else 1

    def replicate_notes(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(location, one line) for each model asked for replicates that has nothing random."""
        notes = []
        for index, model in enumerate(self.models):
            wanted = model.replicates or self.replicate_count
            if wanted > 1 and self.replicates_of(model) == 1:
                where: tuple[str | int, ...] = ("models", index)
                if model.replicates:
                    where = (*where, "replicates")
                notes.append(
                    (
                        where,
                        f"model {model.name!r} has nothing random (a pretrained or dense model "
                        f"without a train stage): it runs once, not {wanted} times",
                    )
                )
        return notes

    @property
    def replicate_count(self) -> int:
        """The suite's replicates: its count, or a sequential design's maximum."""
        return self.replicates if isinstance(self.replicates, int) else self.replicates.max

    @property
    def notes(self) -> list[str]:
        """Located one-line notes the loader found (e.g. replicates that cannot differ)."""
        return list(self._notes)

    def train_for(self, model: AnyModel) -> TrainSpec | None:
        """The train stage of `model`: the suite's `train:` with the model's own router options."""
        if self.train is None:
            return None
        if model.train is None or not model.train.model_fields_set:
            return self.train
        own = model.train.model_dump(include=model.train.model_fields_set)
        try:
            merged = {**self.train.model_dump(), **own}
            return TrainSpec.model_validate(merged, context={"merged": True})
        except ValueError as exc:
            raise ValueError(f"model {model.name!r}: train: {exc}") from None


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The suite file's JSON Schema, generated from the models above (every field described).

    Editors that speak the YAML language server complete and check a suite that begins with
    `# yaml-language-server: $schema=schema.json`; `sbabench schema` prints this."""
    schema = Suite.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "sbabench suite"}


DENSE = "dense"
"""The aggregator key of a dense model's units."""


@dataclass(frozen=True)
class Unit:
    """One model x aggregator x task combination."""

    model: AnyModel
    """The model spec."""
    aggregator: AggregatorEntry | None
    """The operator; None for a dense model."""
    task: str
    """The task name."""
    task_entry: TaskEntry
    """The task's full entry (local file, MTEB options)."""
    replicate: int
    """Which replicate of the model (0: the suite's seeds as written)."""
    train: TrainSpec | None
    """The model's train stage as this replicate runs it (None: no training)."""
    seed: int
    """`settings.seed` as this replicate uses it."""

    @property
    def aggregator_key(self) -> str:
        """The aggregator's name in paths and tables (`dense` for dense models)."""
        return self.aggregator.key if self.aggregator else DENSE

    @property
    def model_id(self) -> str:
        """The model's replicate: `model` (replicate 0) or `model@rR`; one loaded model each."""
        return instance_name(self.model.name, self.replicate)

    @property
    def label(self) -> str:
        """`model/aggregator/task` (`model@rR/aggregator/task` for replicate R > 0)."""
        return f"{self.model_id}/{self.aggregator_key}/{self.task}"


def _replicate_train(train: TrainSpec | None, replicate: int) -> TrainSpec | None:
    """The train stage as replicate `replicate` runs it (its seed re-derived)."""
    if train is None or replicate == 0:
        return train
    return train.model_copy(update={"seed": derive_seed(train.seed, replicate)})


def expand(suite: Suite) -> list[Unit]:
    """Every unit of the suite, grouped by model, replicate, then aggregator (so each model's
    replicate loads once)."""
    units: list[Unit] = []
    for model in suite.models:
        aggregators: list[AggregatorEntry | None] = (
            list(suite.aggregators) if model.is_moe else [None]
        )
        for replicate in range(suite.replicates_of(model)):
            spec = replicate_model(model, replicate)
            train = _replicate_train(suite.train_for(model), replicate)
            seed = derive_seed(suite.settings.seed, replicate)
            for aggregator in aggregators:
                units.extend(
                    Unit(spec, aggregator, task.name, task, replicate, train, seed)
                    for task in suite.tasks
                )
    return units
