"""Results in mteb's own format: one `mteb.TaskResult` per unit, in mteb's folder layout.

`OUT/<model>/<revision>/<Task>.json` plus `model_meta.json` per model folder, as mteb's
`ResultCache` keeps them (point mteb at OUT as the `results/` folder of a cache). The operator is
folded into the model name, `<model>__<operator>` (e.g. `minilm-moe__sba`); a dense reference
model keeps its own name. The revision is a digest of what built the model (spec, weights, code),
so results of two builds never share a folder; each replicate of a model is one more revision
(`sbabench compare` is where replicates are pooled: mteb has no notion of them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.analysis.names import check_result_names
from sbabench.atomic import write_atomic
from sbabench.digests import key_digest
from sbabench.errors import SbabenchError
from sbabench.paths import confined
from sbabench.run.results import load_results
from sbabench.suite.schema import DENSE

if TYPE_CHECKING:
    from mteb.results import TaskResult

    from sbabench.run.results import UnitResult

UNKNOWN_LANGUAGE = "und-Zyyy"
"""mteb's code for a local task whose language sbabench does not know."""


@dataclass(frozen=True)
class Exported:
    """One file written: the unit and where it went."""

    label: str
    path: Path
    main_score: float


def model_name(result: UnitResult) -> str:
    """The model's name in mteb: the operator folded in, unless the model is dense."""
    if result.aggregator == DENSE:
        return result.model
    return f"{result.model}__{result.aggregator}"


def model_revision(result: UnitResult) -> str:
    """What built the model (spec, weights, code; the replicate, when not 0), short: mteb's
    revision folder. So each replicate is exported as its own result, in its own folder."""
    built = result.key_parts.model.model_dump(mode="json")
    if result.replicate:
        built = {**built, "replicate": result.replicate}
    return key_digest(built)[:16]


def _languages(task: str) -> dict[str, list[str]]:
    """Each subset's languages from the task's metadata ({} for a local task)."""
    from sbabench.tasks import get_task, known_task

    if known_task(task) is not None:  # not bundled, not in mteb: a local file's task
        return {}
    return {k: list(v) for k, v in get_task(task).metadata.hf_subsets_to_langscripts.items()}


def _created(result: UnitResult) -> datetime | None:
    """When the result was made, or None for a `created_at` that is no ISO date (the file is
    data: a damaged date is not worth a traceback)."""
    try:
        return datetime.fromisoformat(result.created_at)
    except ValueError:
        return None


def task_result(result: UnitResult, languages: dict[str, list[str]]) -> TaskResult:
    """The unit as an mteb `TaskResult` (every metric mteb reported, per subset)."""
    from mteb.results import TaskResult

    every = sorted({lang for langs in languages.values() for lang in langs})
    subsets = [
        {
            **values,
            "hf_subset": subset,
            "languages": languages.get(subset) or every or [UNKNOWN_LANGUAGE],
        }
        for subset, values in result.scores.items()
    ]
    return TaskResult(
        dataset_revision=result.key_parts.task.revision or "unknown",
        task_name=result.task,
        mteb_version=result.provenance.versions.get("mteb"),
        scores={result.split: subsets},
        evaluation_time=result.timing_s.total,
        date=_created(result),
    )


def _mteb_json(result: TaskResult) -> str:
    """The file `TaskResult.to_disk` writes (the date as a timestamp), without its rounding of
    scores to six decimals: a reader gets sbabench's numbers exactly."""
    data = result.model_dump(mode="json")
    data["date"] = result.date.timestamp() if result.date else None
    return json.dumps(data, indent=2)


def _model_meta(result: UnitResult, name: str, revision: str) -> dict[str, Any]:
    from mteb.models.model_meta import ModelMeta

    meta = ModelMeta.create_empty(overwrites={"name": name, "revision": revision})
    described = json.loads(json.dumps(meta.to_dict(), default=str))
    spec = result.key_parts.model.spec
    return {**described, "loader_kwargs": {"sbabench": {"model": spec, "suite": result.suite}}}


def export_mteb(results_dir: Path, output: Path) -> list[Exported]:
    """Write every valid result under `results_dir` to `output` in mteb's layout.

    Everything is checked before anything is written: a folder without results, two units
    that would land in the same file (the same model, operator and task in two suites), or a
    name read from a result file that is no safe name (it becomes a path), is an error and
    `output` is left as it was."""
    results = load_results(results_dir) if results_dir.is_dir() else []
    if not results:
        raise SbabenchError(
            f"no sbabench results in {results_dir}",
            fix="give the folder `sbabench run --results` wrote (e.g. results/ or "
            "results/<suite>/)",
        )
    check_result_names(results, [results_dir])
    planned: dict[Path, UnitResult] = {}
    metas: dict[Path, dict[str, Any]] = {}
    for result in results:
        name, revision = model_name(result), model_revision(result)
        folder = confined(output, name, revision)
        target = confined(folder, f"{result.task}.json")
        if target in planned:
            raise SbabenchError(
                f"{planned[target].suite}/{planned[target].label} and "
                f"{result.suite}/{result.label} would both be exported to {target}",
                fix=f"export one suite at a time: {results_dir}/<suite>",
            )
        planned[target] = result
        metas.setdefault(folder, _model_meta(result, name, revision))
    languages = {task: _languages(task) for task in {r.task for r in results}}
    files = {target: task_result(r, languages[r.task]) for target, r in planned.items()}
    for folder, meta in metas.items():
        write_atomic(confined(folder, "model_meta.json"), json.dumps(meta, indent=2))
    written = []
    for target, result in planned.items():
        write_atomic(target, _mteb_json(files[target]))
        written.append(Exported(f"{result.suite}/{result.label}", target, result.main_score))
    return written
