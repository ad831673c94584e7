"""Result files: one JSON per unit, every block a pydantic model, written atomically, checked
and migrated when read back.

Version history of the file (`schema_version`):
- 1: the first release; key parts, geometry, training, timing and provenance were plain dicts.
- 2: every block typed; the operator's and the model code's digests are `code_sha256` (see
  `sbabench.digests`, `sbabench.models.code`). Version-1 files load (migrated on read); their
  keys no longer match, so a run recomputes them, while `show` and `compare` read them as they
  are. A version-2 file may carry `replicate` (absent: replicate 0) and NaN / infinities as the
  strings "NaN" / "Infinity".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from sbabench.atomic import write_atomic
from sbabench.digests import key_digest
from sbabench.errors import StorageError
from sbabench.run.keys import KeyParts
from sbabench.suite.replicates import instance_name
from sbabench.tasks.items import ItemScores

SCHEMA_VERSION = 2

Stats = dict[str, float]
"""mean, std, cv and quantiles of a sample (see `sbabench.geometry.stats.describe`)."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoadBalance(_Block):
    """Expert load of one MoE layer over every real token it saw in the unit."""

    tokens: int
    """Real (non-padding) tokens routed."""
    tokens_per_expert: list[int]
    """(token, slot) assignments per expert (sums to tokens x top_k)."""
    max_over_mean: float | None
    """Busiest expert's load / the mean load (1 = perfectly balanced)."""
    cv: float | None
    """Coefficient of variation of the experts' loads."""
    entropy: float
    """Entropy of the load shares / log(experts) (1 = uniform)."""
    idle_experts: int
    """Experts that received no token."""
    experts: int


class LayerGeometry(_Block):
    """Geometry of one MoE layer's combination step on the sampled tokens."""

    tokens: int
    norm: Stats
    """Norms of the selected experts' outputs."""
    norm_cv_within_token: Stats
    """Coefficient of variation of the selected experts' norms within a token."""
    pairwise_cosine: Stats
    pairwise_angle_deg: Stats
    collapse_ratio: Stats
    """||operator output|| / (gate mass x weighted mean norm)."""
    linear_collapse_ratio: Stats
    operator_vs_linear: dict[str, Stats]
    gate_mass: Stats
    weight_entropy: Stats
    routing: dict[str, Any]
    """Expert load fractions, load CV, max/mean - 1, load entropy."""
    histograms: dict[str, dict[str, list[float]]]
    load: LoadBalance | None = None
    """Load over every real token the layer saw (geometry version 5 on; older: `routing` only)."""
    probes: dict[str, dict[str, Any]] | None = None
    """Deeper probes by name (each a result or {"unavailable": reason})."""


class ProbeSettings(BaseModel):
    """The probes a geometry block was computed with, and every probe's settings (each probe's
    settings model says which keys there are)."""

    model_config = ConfigDict(extra="allow")

    probes: list[str] = Field(default_factory=list)
    jacobian_tokens: int = 32
    subspace_dim: int = 8


class EmbeddingGeometry(_Block):
    """Statistics of a task's final embeddings."""

    texts: int
    anisotropy_mean_cosine: float
    effective_rank: float
    prenorm_norm: Stats | None = None
    cosine_to_linear: Stats | None = None


class GeometryBlock(_Block):
    """Versioned geometry of one unit: per MoE layer and of the final embeddings."""

    version: int
    tokens_per_layer: int
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    layers: dict[str, LayerGeometry] = Field(default_factory=dict)
    embeddings: EmbeddingGeometry | None = None
    note: str | None = None


class TrainingRecord(_Block):
    """The fine-tuning log of a unit's model x operator (or why it trained nothing)."""

    steps: int = 0
    loss: list[float] = Field(default_factory=list)
    grad_norm: list[float] = Field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0
    router_load_cv: dict[str, float] = Field(default_factory=dict)
    """Per MoE layer, the expert-load coefficient of variation after training, on the first 64
    training texts, with the train stage's token elimination (never the model's own)."""
    load_balancing_loss: list[float] = Field(default_factory=list)
    """Per step, the Switch load-balancing loss (1 = balanced) when `aux_loss` is set."""
    skipped: str | None = None


class TokenEliminationRecord(_Block):
    """What token elimination saved in a unit (analytic FLOPs; the time is `timing_s.encode`)."""

    tilt_rate: float
    start_layer: int
    flops_fraction: float | None
    """Share of the encoder layers' FLOPs that ran (1 = unpruned), over `texts`."""
    flops_fraction_per_layer: list[float] = Field(default_factory=list)
    texts: int = 0
    """The unit's texts encoded in this run (the others came from the embedding cache)."""
    encode_s: float = 0.0
    """Seconds spent encoding those texts."""


class Timing(_Block):
    """Where a unit's time went (seconds), and where its texts came from (counts)."""

    geometry_summary: float = 0.0
    model_load: float = 0.0
    encode: float = 0.0
    score: float = 0.0
    total: float = 0.0
    texts_encoded: int = 0
    texts_from_cache: int = 0
    texts_run_for_geometry_only: int = 0
    """Cached texts run through the model only for the geometry sample."""


class Provenance(_Block):
    """What produced a result: package versions, machine, settings, command line, memory."""

    versions: dict[str, str]
    python: str
    git_commit: str | None
    platform: str
    device: str
    device_name: str
    settings: dict[str, Any]
    command: str
    peak_rss_mb: float | None = None
    cuda_peak_allocated_mb: float | None = None


class UnitResult(BaseModel):
    """The outcome of one model x aggregator x task unit."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    suite: str
    model: str
    aggregator: str
    task: str
    replicate: int = 0
    """Which replicate of the model (0: the suite's seeds as written)."""
    key: str = Field(description="SHA-256 over key_parts: what the score depends on")
    key_parts: KeyParts
    task_type: str
    split: str
    main_score_name: str
    main_score: float
    scores: dict[str, Any] = Field(description="every metric mteb reports, per subset")
    items: dict[str, ItemScores] = Field(
        default_factory=dict,
        description="per-item gold and predictions, per subset (for paired tests)",
    )
    geometry: GeometryBlock | None = None
    token_elimination: TokenEliminationRecord | None = None
    training: TrainingRecord | None = None
    timing_s: Timing
    provenance: Provenance
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def model_id(self) -> str:
        """The model's replicate: `model`, or `model@rR` for replicate R > 0."""
        return instance_name(self.model, self.replicate)

    @property
    def label(self) -> str:
        """`model/aggregator/task` (`model@rR/aggregator/task` for replicate R > 0)."""
        return f"{self.model_id}/{self.aggregator}/{self.task}"

    def without_items(self) -> UnitResult:
        """The result less its per-item arrays (a summary of many large tasks holds no
        per-item data; the arrays stay in the result's file)."""
        return self.model_copy(update={"items": {}})

    @property
    def geometry_layers(self) -> dict[str, dict[str, Any]]:
        """The geometry block's statistics per MoE layer, as plain dicts ({} when none)."""
        if self.geometry is None:
            return {}
        return {
            name: layer.model_dump(exclude={"probes"} if layer.probes is None else set())
            for name, layer in self.geometry.layers.items()
        }


def result_path(root: Path, suite: str, model: str, aggregator: str, task: str) -> Path:
    """results/<suite>/<model>/<aggregator>/<task>.json (`model`: `name@rR` for replicate R)."""
    return root / suite / model / aggregator / f"{task}.json"


def save_result(path: Path, result: UnitResult) -> None:
    """Atomically write a unit's result: indented, except the per-item arrays (`items`), which
    are written last and compact (one number per line made a 16,000-item clustering result
    2.8 MB). NaN and infinities are written as the strings "NaN", "Infinity" (valid JSON that
    reads back as the same floats; pydantic's default, null, would make a diverged unit's file
    unreadable)."""
    data = result.model_dump(mode="python")
    items = data.pop("items")
    text = to_json(data, indent=2, inf_nan_mode="strings").decode("utf-8")
    compact = to_json(items, inf_nan_mode="strings").decode("utf-8")
    write_atomic(path, f'{text.removesuffix("}").rstrip()},\n  "items": {compact}\n}}\n')


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 result as version 2 (renamed code digests, typed blocks)."""
    parts = dict(data["key_parts"])
    model = dict(parts["model"])
    model["code_sha256"] = model.pop("upcycle_code_sha256", None)
    parts["model"] = model
    if parts.get("aggregator"):
        operator = dict(parts["aggregator"])
        operator["code_sha256"] = operator.pop("source_sha256")
        parts["aggregator"] = operator
    return {**data, "key_parts": parts, "schema_version": SCHEMA_VERSION}


_MIGRATIONS = {1: _migrate_v1}


def _refuse_newer(path: Path, data: Any) -> None:
    """A file a newer sbabench wrote is neither read as ours nor overwritten: a user error."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StorageError(
            f"{path}: written by a newer sbabench (schema {version} > {SCHEMA_VERSION}): "
            "upgrade, or --results elsewhere"
        )


def _read(path: Path) -> bytes:
    """The file's bytes; a file that exists but cannot be read is a user error, not corruption
    (it must not be recomputed over, nor silently left out of a comparison)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise
    except OSError as exc:
        raise StorageError(
            f"cannot read {path} ({exc.strerror or type(exc).__name__}); it was left as it is: "
            "make it readable, or --results elsewhere"
        ) from exc


MAX_DEPTH = 32
"""Deepest nesting of lists and objects a result file may hold outside `items` (a real one
holds about 8): deeper is refused before pydantic or a report recurses into it."""


class InvalidResult(ValueError):
    """Why a file is not a readable result (a sentence, naming the field where there is one)."""


def _depth(value: Any) -> int:
    """Nesting depth of lists and objects, without recursion (a hostile file can nest deeper
    than Python's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            children = node.values() if isinstance(node, dict) else node
            stack += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return deepest


def _decoded(path: Path) -> dict[str, Any]:
    """The file's JSON object, its nesting bounded (`MAX_DEPTH`) and its key checked."""
    try:
        data = json.loads(_read(path))
    except RecursionError:
        raise InvalidResult(f"nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidResult(f"not valid JSON ({exc})") from None
    _refuse_newer(path, data)
    if not isinstance(data, dict):
        raise InvalidResult(f"holds a JSON {type(data).__name__}, not a result object")
    rest = {k: v for k, v in data.items() if k != "items"}  # items: pydantic checks list[float]
    if _depth(rest) > MAX_DEPTH:
        raise InvalidResult(f"nested deeper than {MAX_DEPTH} levels")
    if data.get("key") != key_digest(data.get("key_parts", {})):
        raise InvalidResult("field 'key' is not the digest of 'key_parts' (altered or damaged)")
    return data


def parse_result(path: Path) -> UnitResult:
    """The result in `path`, migrated; `InvalidResult` says why it is not one.

    Altered: its stored key must be the digest of its stored key parts (checked on the parts as
    written, before any migration). A file with a newer `schema_version` than ours, or one that
    exists but cannot be read, raises `StorageError`."""
    data = _decoded(path)
    version = data.get("schema_version", 1)
    try:
        while version in _MIGRATIONS:
            data = _MIGRATIONS[version](data)
            version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise InvalidResult(f"field 'schema_version' is {version!r}: no migration from it")
        return UnitResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidResult(f"field {where!r}: {first['msg']}") from None
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidResult(f"not a result of a schema sbabench reads ({exc!r})") from None


def load_result(path: Path) -> UnitResult | None:
    """A valid result from `path`, or None if it is missing, truncated, altered or not a
    result (a run recomputes it). `StorageError` as `parse_result`."""
    try:
        return parse_result(path)
    except (InvalidResult, OSError):
        return None


def read_result(path: Path) -> UnitResult:
    """The result in `path`, or a located user error (what `compare` reads: a file that is not
    a result is never skipped there)."""
    try:
        return parse_result(path)
    except InvalidResult as exc:
        raise StorageError(
            f"{path}: {exc}: not a result sbabench can read",
            fix="re-run the unit (sbabench run --force), or remove the file if it is not a result",
        ) from None
    except OSError as exc:
        raise StorageError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__})",
            fix="make it a readable result file, or re-run the unit",
        ) from None


def load_results(root: Path) -> list[UnitResult]:
    """Every valid result file below `root` (invalid ones are skipped)."""
    files = (p for p in sorted(root.rglob("*.json")) if not p.name.endswith(".error.json"))
    found = (load_result(p) for p in files)
    return [r for r in found if r is not None]
