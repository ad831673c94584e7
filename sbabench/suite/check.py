"""The checks of a suite that need I/O: task names (mteb's registry), local data files, user
operators (imported and run on a probe batch, for `run` only: `validate` reads a suite as data
and runs none of its code), and token-elimination layers against a local model's config. Run
once before a run, and by `validate`."""

from __future__ import annotations

import json
from pathlib import Path

from sbabench.aggregators import is_user_operator, resolve
from sbabench.errors import SbabenchError
from sbabench.models.sources import PACKAGED_MODELS, resolve_base
from sbabench.models.spec import AnyModel, HuggingFaceModel
from sbabench.optional_packages import missing_package
from sbabench.suite.schema import Suite, TaskEntry
from sbabench.tasks import BUNDLED_SOURCES, known_task
from sbabench.tasks.local import local_layout

Problem = tuple[tuple[str | int, ...], str]
"""Where in the suite (a pydantic-style location) and what is wrong."""


def _message(exc: SbabenchError) -> str:
    return exc.render().replace("\n  fix:", " — fix:")


def _task_problem(entry: TaskEntry) -> str | None:
    if entry.is_local:
        try:
            local_layout(str(entry.type), entry.files(), entry.columns())
        except SbabenchError as exc:
            return _message(exc)
        return None
    if entry.name in BUNDLED_SOURCES:
        missing = missing_package(BUNDLED_SOURCES[entry.name], f"bundled task {entry.name!r}")
        if missing is not None:
            return _message(missing)
    problem = known_task(entry.name)
    if problem:
        return problem
    mteb_only = [
        k for k in ("split", "subsets", "dataset_revision") if getattr(entry, k) is not None
    ]
    if mteb_only and entry.name in BUNDLED_SOURCES:
        return f"{', '.join(mteb_only)} apply to MTEB tasks, not the bundled {entry.name!r}"
    return None


_EXPERT_COUNTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
"""Where transformers configs (and NomicBERT-MoE's) keep the routed experts per MoE layer."""


def _local_setting(model: AnyModel, names: tuple[str, ...]) -> int | None:
    """The first of `names` that a packaged or local model's config.json sets to a whole number
    (None: none does, or a hub model, whose config is read when it loads)."""
    path, identity = resolve_base(model.base)
    config = Path(path) / "config.json"
    if identity.startswith("hub:") or not config.is_file():
        return None
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = [settings.get(name) for name in names] if isinstance(settings, dict) else []
    return next((v for v in found if isinstance(v, int) and not isinstance(v, bool)), None)


def _elimination_problem(model: AnyModel) -> Problem | None:
    options = model.token_elimination
    layers = None if options is None else _local_setting(model, ("num_hidden_layers",))
    if options is None or layers is None or options.start_layer < layers:
        return None
    return (
        ("token_elimination", "start_layer"),
        f"start_layer is {options.start_layer}, but the model has {layers} layers "
        f"— fix: use a start_layer from 0 to {layers - 1}",
    )


def _train_elimination_problem(suite: Suite, index: int, model: AnyModel) -> Problem | None:
    """`train.token_elimination.start_layer` (the suite's or the model's own) against the
    model's layers; located where it is written."""
    spec = suite.train_for(model)
    options = None if spec is None else spec.token_elimination
    layers = None if options is None else _local_setting(model, ("num_hidden_layers",))
    if options is None or layers is None or options.start_layer < layers:
        return None
    own = model.train is not None and "token_elimination" in model.train.model_fields_set
    where: tuple[str | int, ...] = ("models", index, "train") if own else ("train",)
    return (
        (*where, "token_elimination", "start_layer"),
        f"start_layer is {options.start_layer}, but model {model.name!r} has {layers} layers "
        f"— fix: use a start_layer from 0 to {layers - 1}",
    )


def _routing_problem(model: AnyModel) -> Problem | None:
    """A pretrained model's routing.top_k against its config's experts (upcycled models are
    checked by their schema; a hub model's when it loads)."""
    top_k = None if model.routing is None else model.routing.top_k
    if not isinstance(top_k, int) or not isinstance(model, HuggingFaceModel):
        return None
    experts = _local_setting(model, _EXPERT_COUNTS)
    if experts is None or top_k <= experts:
        return None
    return (
        ("routing", "top_k"),
        f"top_k is {top_k}, but the model has {experts} experts per MoE layer — fix: use a "
        f"top_k from 1 to {experts}, or all",
    )


def _model_problems(suite: Suite) -> list[Problem]:
    found: list[Problem] = []
    for i, model in enumerate(suite.models):
        packaged = model.base in PACKAGED_MODELS
        missing = missing_package(model.base, "the packaged model") if packaged else None
        if missing is not None:  # the checks below read its config: nothing to read
            found.append((("models", i, "base"), _message(missing)))
            continue
        for problem in (_elimination_problem(model), _routing_problem(model)):
            if problem is not None:
                found.append((("models", i, *problem[0]), problem[1]))
        training = _train_elimination_problem(suite, i, model)
        if training is not None and training[0] not in [where for where, _ in found]:
            found.append(training)  # the suite's own block: once, not once per model
    return found


def problems(suite: Suite, *, import_code: bool = False) -> list[Problem]:
    """Every problem found by reading the suite's data, and (`import_code`: `run` asks for
    it) by importing its user operators, which runs their code; `validate` does not."""
    found: list[Problem] = []
    for i, entry in enumerate(suite.tasks):
        problem = _task_problem(entry)
        if problem:
            found.append((("tasks", i), problem))
    for i, aggregator in enumerate(suite.aggregators):
        if not import_code or not is_user_operator(aggregator.name):
            continue
        try:
            resolve(aggregator.name, aggregator.options)
        except SbabenchError as exc:
            found.append((("aggregators", i), _message(exc)))
    return found + _model_problems(suite)
