"""Figures: forest plot, per-layer geometry, training curves (files that are real PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbabench.analysis.compare import compare_results
from sbabench.analysis.plots import forest_plot, geometry_plots, training_plots, write_figures
from sbabench.run.results import TrainingRecord, load_result
from sbabench.tasks.items import ItemScores
from tests import factories

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PNG = b"\x89PNG"


def _result(aggregator: str, noise: float) -> factories.UnitResult:
    gold = np.random.default_rng(0).random(100)
    predicted = gold + noise * np.random.default_rng(1).normal(size=100)
    items = {"default": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}
    return factories.result(aggregator, items, 1 - noise)


def test_forest_plot_only_with_paired_rows(tmp_path: Path) -> None:
    paired = compare_results([_result("linear", 0.5), _result("sba", 0.2)], n_resamples=100)
    path = forest_plot(paired, tmp_path / "forest.png")
    assert path is not None and path.read_bytes()[:4] == PNG
    alone = compare_results([_result("linear", 0.5)], n_resamples=100)
    assert forest_plot(alone, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_geometry_plots_one_figure_per_model_and_operator(tmp_path: Path) -> None:
    result = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert result is not None
    written = geometry_plots([result], tmp_path)
    assert [p.name for p in written] == ["geometry_minilm-moe__sba.png"]
    assert written[0].read_bytes()[:4] == PNG
    assert geometry_plots([_result("linear", 0.1)], tmp_path / "none") == []


def test_training_plots_draw_each_operators_curves(tmp_path: Path) -> None:
    results = []
    for aggregator, scale in (("linear", 1.0), ("sba", 0.8)):
        result = _result(aggregator, 0.2)
        result.training = TrainingRecord(
            steps=3, loss=[scale, scale / 2, scale / 3], grad_norm=[1.0, 0.5, 0.2]
        )
        results.append(result)
    written = training_plots(results, tmp_path)
    assert [p.name for p in written] == ["training_m.png"]
    assert written[0].read_bytes()[:4] == PNG


def test_training_plots_add_the_load_balancing_loss_when_logged(tmp_path: Path) -> None:
    from PIL import Image

    plain, balanced = _result("linear", 0.2), _result("linear", 0.2)
    plain.training = TrainingRecord(steps=2, loss=[1.0, 0.5], grad_norm=[1.0, 0.5])
    balanced.training = plain.training.model_copy(update={"load_balancing_loss": [1.2, 1.1]})
    widths = []
    for name, result in (("plain", plain), ("balanced", balanced)):
        written = training_plots([result], tmp_path / name)
        widths.append(Image.open(written[0]).size[0])
    assert widths[1] > widths[0] * 1.3  # a third panel


def test_write_figures_puts_the_forest_plot_first_then_the_geometry(tmp_path: Path) -> None:
    stored = load_result(FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json")
    assert stored is not None
    results = [_result("linear", 0.5), _result("sba", 0.2), stored]
    written = write_figures(results, tmp_path / "figures", n_resamples=100)
    assert written == [
        tmp_path / "figures" / "forest.png",
        tmp_path / "figures" / "geometry_minilm-moe__sba.png",
    ]
    assert all(path.read_bytes()[:4] == PNG for path in written)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        p.name for p in written
    )


def test_write_figures_without_pairs_or_geometry_writes_nothing(tmp_path: Path) -> None:
    assert write_figures([_result("linear", 0.5)], tmp_path / "none", n_resamples=100) == []
    assert list((tmp_path / "none").iterdir()) == []
    # a baseline nothing runs against pairs nothing either
    alone = [_result("linear", 0.5), _result("sba", 0.2)]
    assert write_figures(alone, tmp_path / "other", baseline="nope", n_resamples=100) == []


def test_a_result_whose_model_would_leave_the_folder_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sbabench.cli import main
    from sbabench.run.results import save_result

    hostile = _result("sba", 0.2).model_copy(update={"model": "../../../escaped"})
    path = tmp_path / "r" / "s" / "m" / "sba" / "LeeDocSTS.json"
    save_result(path, hostile)
    outcome = CliRunner().invoke(
        main, ["plot", str(tmp_path / "r"), "--output", str(tmp_path / "p")]
    )
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output, outcome.output
    # refused where it is read: its content names another unit than its path
    assert f"{path}: field 'model'" in outcome.output
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob("*escaped*"))


def test_two_systems_that_would_share_a_figure_are_refused(tmp_path: Path) -> None:
    """Names may hold `_`: model `a` with operator `b__c` and model `a__b` with operator `c`
    would both be drawn to `geometry_a__b__c.png`, one over the other."""
    import pytest

    from sbabench.errors import SbabenchError

    baseline = Path(__file__).resolve().parents[2] / "results" / "baseline" / "quickstart"
    one = load_result(baseline / "minilm-moe" / "sba" / "LeeDocSTS.json")
    assert one is not None
    clash = [
        one.model_copy(update={"model": "a", "aggregator": "b__c"}),
        one.model_copy(update={"model": "a__b", "aggregator": "c"}),
    ]
    with pytest.raises(SbabenchError, match="would share the figure a__b__c"):
        geometry_plots(clash, tmp_path)
    assert not list(tmp_path.iterdir())
