"""Unit keys: everything that changes a unit's number, and nothing else, hashed.

A key covers the model (source, every build option, the weights' identity: packaged model
version, hub id + revision, or the content hash of a local folder; and every module of the code
that builds and runs it: see `sbabench.models.code`), the operator (name, validated options, and
its own code: see `sbabench.digests`), the task (name, data source and revision, split, subsets,
columns), the settings that change numbers (dtype, seed), the fine-tuning stage with its code,
and sbabench's scoring version. The parts are stored in each result and checked when it is read
back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from sbabench.aggregators import ResolvedAggregator, resolve
from sbabench.digests import key_digest
from sbabench.models.code import model_code_sha256
from sbabench.models.router_cache import spec_parts
from sbabench.suite import Suite, TrainSpec, Unit
from sbabench.tasks import task_identity

SCORING_VERSION = 4
"""Bump when the way scores are computed changes; it is part of every unit key."""

_ENCODER_CODE = ("sbabench.models.encoder",)
"""Where a model is built and run (routing and token elimination included): these modules and
every module they import, whole, are in every model's key (see `sbabench.models.code`)."""
_TRAINING_CODE = ("sbabench.run.training",)
"""Where a model is fine-tuned: these modules and what they import are in every train key."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    _LEFT_OUT: ClassVar[dict[str, Any]] = {}
    """Fields added after keys existed, with the value every older key implicitly had: left out
    of the dumped parts at that value, so older keys (and result files) still hold."""

    @model_serializer(mode="wrap")
    def _without_implicit_values(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        parts: dict[str, Any] = handler(self)
        for name, implicit in self._LEFT_OUT.items():
            if getattr(self, name) == implicit:
                parts.pop(name, None)
        return parts


class ModelKey(_Part):
    """The model half of a key (shared by every task of a model x operator)."""

    spec: dict[str, Any]
    """Every option of the model entry except its name."""
    weights: dict[str, Any]
    """What identifies the weights (packaged version, hub id + revision, folder hash)."""
    code_sha256: str | None = None
    """Digest of the code that builds and runs the encoder."""


class OperatorKey(_Part):
    """The operator: name, validated options, and its own code's digest."""

    name: str
    options: dict[str, Any]
    code_sha256: str


class TaskKey(_Part):
    """The task: name, where its data comes from and which revision, split (and subsets)."""

    name: str
    data: str | None
    revision: str | None
    split: str
    type: str | None = None
    """Local files: the task type."""
    columns: dict[str, str] | None = None
    """Local files: role -> column."""
    subsets: list[str] | None = None
    """MTEB tasks: the evaluated subsets (None: all)."""
    code_sha256: str | None = None
    """Bundled tasks: digest of the code that builds them from their packages' data; left out
    otherwise, so a result written before it existed keeps its key when it is saved again."""

    _LEFT_OUT: ClassVar[dict[str, Any]] = {"code_sha256": None}


class SettingsKey(_Part):
    """The run settings that change numbers."""

    dtype: str
    seed: int
    embedding_cache: str | None = None
    """`float16` when embeddings are rounded to half precision through the cache (it changes
    scores); left out otherwise, so keys from before it was part of the key still hold."""

    _LEFT_OUT: ClassVar[dict[str, Any]] = {"embedding_cache": None}


class TrainKey(_Part):
    """The fine-tuning stage and the training code's digest."""

    spec: dict[str, Any]
    code_sha256: str


class KeyParts(_Part):
    """Everything that changes a unit's score."""

    model: ModelKey
    aggregator: OperatorKey | None
    """None for a dense model."""
    task: TaskKey
    settings: SettingsKey
    scoring_version: int
    train: TrainKey | None = None
    replicate: int = 0
    """Which replicate of the model (its seeds are derived from the suite's and this)."""

    # replicate 0 is left out of the parts (and so of the key and of result files), so every
    # key from before replicates existed still holds
    _LEFT_OUT: ClassVar[dict[str, Any]] = {"replicate": 0}

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of these parts (the unit's key)."""
        return key_digest(self.model_dump(mode="json"))

    def embedding_space(self) -> str:
        """The key of the embeddings a unit uses: its parts without the task and scoring."""
        return key_digest(self._without_task())

    def _without_task(self) -> dict[str, Any]:
        parts = self.model_dump(mode="json")
        return {k: v for k, v in parts.items() if k not in ("task", "scoring_version")}

    def checkpoint_key(self) -> str:
        """The key of a trained model x operator: the parts of its embeddings without the
        model's own `token_elimination`, which is applied at evaluation only (training
        eliminates tokens as `train.token_elimination` says, in the train part): one trained
        model serves every Tilt-Rate it is evaluated at."""
        parts = self._without_task()
        model = parts["model"]
        spec = {k: v for k, v in model["spec"].items() if k != "token_elimination"}
        return key_digest({**parts, "model": {**model, "spec": spec}})

    def with_operator(self, operator: OperatorKey | None) -> KeyParts:
        """The same unit with another operator (e.g. the linear twin of an sba unit)."""
        return self.model_copy(update={"aggregator": operator})


def model_key(unit: Unit) -> ModelKey:
    """The model half of a unit's key."""
    code = model_code_sha256(_ENCODER_CODE, unit.model.is_moe)
    return ModelKey(**spec_parts(unit.model), code_sha256=code)


def operator_key(aggregator: ResolvedAggregator | None) -> OperatorKey | None:
    """The operator's name, validated options and code digest."""
    if aggregator is None:
        return None
    return OperatorKey(
        name=aggregator.name, options=dict(aggregator.options), code_sha256=aggregator.code_sha256
    )


def linear_operator_key() -> OperatorKey:
    """The built-in linear operator's key part."""
    key = operator_key(resolve("linear"))
    assert key is not None
    return key


def train_key(spec: TrainSpec | None) -> TrainKey | None:
    """The fine-tuning spec and the training code's digest (None without a `train:` block)."""
    if spec is None:
        return None
    return TrainKey(spec=spec.model_dump(), code_sha256=model_code_sha256(_TRAINING_CODE, True))


def unit_key_parts(suite: Suite, unit: Unit, aggregator: ResolvedAggregator | None) -> KeyParts:
    """Everything that changes a unit's score."""
    return KeyParts(
        model=model_key(unit),
        aggregator=operator_key(aggregator),
        task=TaskKey(**task_identity(unit.task_entry)),
        settings=SettingsKey(
            dtype=suite.settings.dtype,
            seed=unit.seed,
            embedding_cache="float16" if suite.settings.embedding_cache == "float16" else None,
        ),
        scoring_version=SCORING_VERSION,
        train=train_key(unit.train),
        replicate=unit.replicate,
    )
