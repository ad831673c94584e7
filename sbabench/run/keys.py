"""Unit keys: everything that changes a unit's number, and nothing else, hashed.

A key covers the model (source, every build option, the weights' identity: packaged model
version, hub id + revision, or the content hash of a local folder; and every module of the code
that builds and runs it: see `sbabench.models.code`), the operator (name, validated options, and
its own code: see `sbabench.digests`), the task (name, data source and revision, split, subsets,
columns), the settings that change numbers (dtype, seed), the fine-tuning stage with its code,
sbabench's scoring version and the code that scores (`scoring_code_sha256`). The parts are stored in each result and checked when it is read
back.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from sbabench.aggregators import ResolvedAggregator, resolve
from sbabench.digests import code_modules, key_digest, modules_digest, package_modules
from sbabench.models.code import model_code_sha256
from sbabench.models.router_cache import spec_parts
from sbabench.suite import Suite, TrainSpec, Unit
from sbabench.tasks import task_identity

SCORING_VERSION = 4
"""Bump when the way scores are computed changes; it is part of every unit key."""

_SCORING_CODE = ("sbabench.run.score", "sbabench.run.encoding")
"""Where a unit is scored (mteb's evaluators driven, per-item predictions and geometry
collected): these modules, every module of `_SCORING_PACKAGES`, and what they import, whole, are
in every unit's key (see `scoring_code_sha256`)."""
_SCORING_PACKAGES = ("sbabench.tasks", "sbabench.geometry")
"""Taken module by module, not only as imported: task types, their item statistics and the
geometry probes are registered by name (`"module:function"`), which no import statement shows."""
_KEYED_ELSEWHERE = (
    "sbabench.models",
    "sbabench.moe",
    "sbabench.aggregators",
    "sbabench.run.training",
    "sbabench.tasks.item_statistics",  # compare's statistics: no unit runs them
)
"""Code with a key part of its own (the model's, the operator's, the train stage's): a unit's
scoring digest does not follow it, so editing one operator re-keys only that operator's units."""

_ENCODER_CODE = ("sbabench.models.encoder",)
"""Where a model is built and run (routing and token elimination included): these modules and
every module they import, whole, are in every model's key (see `sbabench.models.code`)."""
_TRAINING_CODE = ("sbabench.run.training", "sbabench.run.session")
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
    scoring_code_sha256: str | None = None
    """Digest of the code that scores a unit (see `scoring_code_sha256`); None in results
    written before it was keyed (they no longer match a planned key: recomputed, from cached
    embeddings)."""

    # replicate 0 and a missing scoring digest are left out of the parts (and so of the key and
    # of result files), so every file written before they existed still reads as valid
    _LEFT_OUT: ClassVar[dict[str, Any]] = {"replicate": 0, "scoring_code_sha256": None}

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of these parts (the unit's key)."""
        return key_digest(self.model_dump(mode="json"))

    def embedding_space(self) -> str:
        """The key of the embeddings a unit uses: its parts without the task and scoring."""
        return key_digest(self._without_task())

    def _without_task(self) -> dict[str, Any]:
        parts = self.model_dump(mode="json")
        scoring = ("task", "scoring_version", "scoring_code_sha256")
        return {k: v for k, v in parts.items() if k not in scoring}

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


@functools.cache
def scoring_code_sha256() -> str:
    """Digest of the code that scores units: `_SCORING_CODE`, every module of
    `_SCORING_PACKAGES`, and every sbabench module they import, whole, except the code keyed
    elsewhere (`_KEYED_ELSEWHERE`). It may take too much code, never too little: a change to
    how a score, a per-item prediction or a geometry statistic is computed re-keys every unit
    (the embedding space leaves it out: a change to scoring code only is re-scored from the
    cached embeddings)."""

    return modules_digest(_scoring_roots(), _keyed_elsewhere)


@functools.cache
def geometry_code_sha256() -> str:
    """Digest of the code that records and summarises geometry (`sbabench.geometry`, and
    `run/score.py`, which assembles the block): geometry stored with a space's embeddings is
    reused only under the same code."""
    roots = [*package_modules("sbabench.geometry"), "sbabench.run.score"]
    return modules_digest(roots, _keyed_elsewhere)


def scoring_code_modules() -> list[str]:
    """The modules `scoring_code_sha256` covers."""
    return code_modules(_scoring_roots(), _keyed_elsewhere)


def _scoring_roots() -> list[str]:
    return [*_SCORING_CODE, *(m for p in _SCORING_PACKAGES for m in package_modules(p))]


def _keyed_elsewhere(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in _KEYED_ELSEWHERE)


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
        scoring_code_sha256=scoring_code_sha256(),
    )
