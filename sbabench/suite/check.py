"""The checks of a suite that need I/O: task names (mteb's registry), local data files, user
operators (imported and run on a probe batch), and token-elimination layers against a local
model's config. Run once before a run, and by `validate`."""

from __future__ import annotations

import json
from pathlib import Path

from sbabench.aggregators import is_user_operator, resolve
from sbabench.errors import SbabenchError
from sbabench.models.sources import resolve_base
from sbabench.models.spec import AnyModel
from sbabench.suite.schema import Suite, TaskEntry
from sbabench.tasks import BUNDLED_SOURCES, known_task
from sbabench.tasks.local import load_columns

Problem = tuple[tuple[str | int, ...], str]
"""Where in the suite (a pydantic-style location) and what is wrong."""


def _message(exc: SbabenchError) -> str:
    return exc.render().replace("\n  fix:", " — fix:")


def _task_problem(entry: TaskEntry) -> str | None:
    if entry.is_local:
        try:
            load_columns(Path(str(entry.path)), str(entry.type), entry.columns())
        except SbabenchError as exc:
            return _message(exc)
        return None
    problem = known_task(entry.name)
    if problem:
        return problem
    mteb_only = [
        k for k in ("split", "subsets", "dataset_revision") if getattr(entry, k) is not None
    ]
    if mteb_only and entry.name in BUNDLED_SOURCES:
        return f"{', '.join(mteb_only)} apply to MTEB tasks, not the bundled {entry.name!r}"
    return None


def _local_layers(model: AnyModel) -> int | None:
    """Encoder layers of a packaged or local model, from its config.json (None: a hub model,
    whose config is read when it loads)."""
    path, identity = resolve_base(model.base)
    config = Path(path) / "config.json"
    if identity.startswith("hub:") or not config.is_file():
        return None
    try:
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except (OSError, ValueError):
        return None
    return layers if isinstance(layers, int) else None


def _model_problems(suite: Suite) -> list[Problem]:
    found: list[Problem] = []
    for i, model in enumerate(suite.models):
        options = model.token_elimination
        if options is None:
            continue
        layers = _local_layers(model)
        if layers is not None and options.start_layer >= layers:
            found.append(
                (
                    ("models", i, "token_elimination", "start_layer"),
                    f"start_layer is {options.start_layer}, but the model has {layers} layers "
                    f"— fix: use a start_layer from 0 to {layers - 1}",
                )
            )
    return found


def problems(suite: Suite) -> list[Problem]:
    """Every problem found by reading the suite's data and importing its user code."""
    found: list[Problem] = []
    for i, entry in enumerate(suite.tasks):
        problem = _task_problem(entry)
        if problem:
            found.append((("tasks", i), problem))
    for i, aggregator in enumerate(suite.aggregators):
        if not is_user_operator(aggregator.name):
            continue
        try:
            resolve(aggregator.name, aggregator.options)
        except SbabenchError as exc:
            found.append((("aggregators", i), _message(exc)))
    return found + _model_problems(suite)
