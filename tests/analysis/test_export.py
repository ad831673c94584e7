"""`sbabench export --format mteb`: files mteb's own TaskResult reads, with sbabench's scores."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from mteb.results import TaskResult

from sbabench.analysis.export import export_mteb, model_revision
from sbabench.cli import main
from sbabench.run.results import UnitResult, result_path, save_result
from tests.factories import key_parts, result


def _unit(aggregator: str, task: str, subsets: dict[str, float], suite: str = "s") -> UnitResult:
    scores = {
        name: {"main_score": value, "cosine_spearman": value, "pearson": value / 2}
        for name, value in subsets.items()
    }
    main = sum(subsets.values()) / len(subsets)
    unit = result(aggregator, {}, main, task=task, model="moe", parts=key_parts(task))
    return unit.model_copy(update={"scores": scores, "suite": suite})


def _save(root: Path, unit: UnitResult) -> None:
    save_result(result_path(root, unit.suite, unit.model, unit.aggregator, unit.task), unit)


def test_every_file_reads_back_in_mteb_with_sbabenchs_main_score(tmp_path: Path) -> None:
    units = [
        _unit("sba", "LeeDocSTS", {"default": 0.4822382192959796}),
        _unit("linear", "LeeDocSTS", {"default": 0.4849443864066647}),
        _unit("sba", "MyLocalTask", {"default": 0.61, "other": 0.3}),  # two subsets: the mean
        _unit("dense", "LeeDocSTS", {"default": 0.5082701726599324}),
    ]
    for unit in units:
        _save(tmp_path / "results", unit)
    written = export_mteb(tmp_path / "results", tmp_path / "out")
    assert len(written) == 4
    by_name = {}
    for item in written:
        read = TaskResult.from_disk(item.path)
        assert read.get_score() == item.main_score  # exactly: no rounding on the way
        by_name[(item.path.parts[-3], read.task_name)] = read
    assert set(by_name) == {
        ("moe__sba", "LeeDocSTS"),
        ("moe__linear", "LeeDocSTS"),
        ("moe__sba", "MyLocalTask"),
        ("moe", "LeeDocSTS"),  # a dense model keeps its own name
    }
    lee = by_name[("moe__sba", "LeeDocSTS")]
    assert lee.scores["test"][0]["languages"] == ["eng-Latn"]  # from the task's metadata
    assert lee.scores["test"][0]["pearson"] == 0.4822382192959796 / 2  # every metric kept
    assert lee.get_score(languages=["eng"]) == units[0].main_score
    local = by_name[("moe__sba", "MyLocalTask")]
    assert local.get_score() == (0.61 + 0.3) / 2
    meta = json.loads((written[0].path.parent / "model_meta.json").read_text())
    assert meta["name"] == written[0].path.parts[-3]
    assert meta["revision"] == written[0].path.parts[-2] == model_revision(units[0])


def test_export_of_a_folder_without_results_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "empty", tmp_path / "missing"):
        outcome = CliRunner().invoke(
            main, ["export", str(source), "--output", str(tmp_path / "out")]
        )
        assert outcome.exit_code == 2
        assert "no sbabench results" in outcome.output and "fix:" in outcome.output
        assert not (tmp_path / "out").exists()


def test_two_suites_with_the_same_unit_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    _save(tmp_path / "r", _unit("sba", "LeeDocSTS", {"default": 0.4}, suite="a"))
    _save(tmp_path / "r", _unit("sba", "LeeDocSTS", {"default": 0.5}, suite="b"))
    outcome = CliRunner().invoke(
        main, ["export", str(tmp_path / "r"), "--output", str(tmp_path / "o")]
    )
    assert outcome.exit_code == 2 and "export one suite at a time" in outcome.output
    assert not (tmp_path / "o").exists()
    outcome = CliRunner().invoke(
        main, ["export", str(tmp_path / "r" / "b"), "--output", str(tmp_path / "o")]
    )
    assert outcome.exit_code == 0, outcome.output
    (path,) = (tmp_path / "o").rglob("LeeDocSTS.json")
    assert TaskResult.from_disk(path).get_score() == 0.5


def test_mtebs_result_cache_loads_the_export(tmp_path: Path) -> None:
    from mteb.cache import ResultCache

    _save(tmp_path / "results", _unit("sba", "LeeDocSTS", {"default": 0.48}))
    _save(tmp_path / "results", _unit("linear", "LeeDocSTS", {"default": 0.49}))
    export_mteb(tmp_path / "results", tmp_path / "cache" / "results")
    loaded = ResultCache(cache_path=tmp_path / "cache").load_results()
    scores = {m.model_name: [t.get_score() for t in m.task_results] for m in loaded.model_results}
    assert scores == {"moe__sba": [0.48], "moe__linear": [0.49]}


def test_retrieval_reranking_and_classification_results_read_back_in_mteb(tmp_path: Path) -> None:
    baseline = Path(__file__).resolve().parents[2] / "results" / "baseline" / "task-types"
    written = export_mteb(baseline, tmp_path / "out")
    tasks = set()
    for item in written:
        read = TaskResult.from_disk(item.path)
        assert read.get_score() == item.main_score
        tasks.add(read.task_name)
    assert tasks == {"LeeDocRetrieval", "AIABDEReranking", "PangLeePolarityClassification"}
    assert len(written) == 9


def test_a_result_file_whose_task_would_leave_the_output_is_refused(tmp_path: Path) -> None:
    unit = _unit("sba", "LeeDocSTS", {"default": 0.4})
    hostile = unit.model_copy(update={"task": "../../x"})
    path = tmp_path / "r" / "s" / "moe" / "sba" / "LeeDocSTS.json"
    save_result(path, hostile)  # written by hand: sbabench never names a file so
    outcome = CliRunner().invoke(
        main, ["export", str(tmp_path / "r"), "--output", str(tmp_path / "o")]
    )
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output, outcome.output
    assert f"{path}: task" in outcome.output and "not a safe name" in outcome.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.json").exists()


def test_a_damaged_date_is_no_traceback(tmp_path: Path) -> None:
    unit = _unit("sba", "LeeDocSTS", {"default": 0.4}).model_copy(update={"created_at": "no date"})
    _save(tmp_path / "r", unit)
    outcome = CliRunner().invoke(
        main, ["export", str(tmp_path / "r"), "--output", str(tmp_path / "o")]
    )
    assert outcome.exit_code == 0 and "Traceback" not in outcome.output, outcome.output
