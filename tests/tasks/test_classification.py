"""Classification: mteb's protocol through sbabench equals plain mteb, the kept predictions give
mteb's accuracy exactly, and bad label files are located."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from sbabench.analysis.compare import compare_results
from sbabench.analysis.stats import statistic
from sbabench.cli import main
from sbabench.tasks import get_task
from sbabench.tasks.classification import label_codes
from sbabench.tasks.item_statistics import resample_weights, row_accuracy
from sbabench.tasks.items import ItemScores, collect, prepare
from sbabench.tasks.sources import pang_lee_polarity
from tests import factories
from tests.tasks.scored_twice import dense_suite, through_sbabench_and_mteb
from tests.tasks.test_tasks import HashEncoder

ENTRY = "{name: polarity, type: classification, path: p.csv, text: sentence, label: polarity}"


def suite_file(folder: Path, entry: str = ENTRY) -> Path:
    return dense_suite(folder, entry)


def write_polarity(folder: Path) -> None:
    texts, labels = pang_lee_polarity()
    pd.DataFrame({"sentence": texts, "polarity": labels}).to_csv(folder / "p.csv", index=False)


def _mean_accuracy(items: ItemScores) -> float:
    gold = np.asarray(items.gold)
    return float(np.mean([statistic(items.kind, gold, np.asarray(run))[0] for run in items.runs]))


def test_a_local_file_scores_as_plain_mteb_evaluate(tmp_path: Path) -> None:
    write_polarity(tmp_path)
    result, reference = through_sbabench_and_mteb(tmp_path, ENTRY)
    assert result.main_score == pytest.approx(reference.get_score(), abs=1e-6)
    for metric in ("accuracy", "f1", "f1_weighted", "ap"):
        assert result.scores["default"][metric] == pytest.approx(
            reference.scores["test"][0][metric], abs=1e-6
        )
    items = result.items["default"]
    # 5 folds of 40: each item predicted once, the mean over items is the mean over folds
    assert items.kind == "predictions" and len(items.gold) == 200 and len(items.runs) == 1
    assert _mean_accuracy(items) == pytest.approx(result.main_score, abs=1e-12)
    assert 0.5 < result.main_score < 1.0


def test_the_bundled_task_keeps_each_of_mtebs_ten_runs() -> None:
    task = get_task("PangLeePolarityClassification")
    task.load_data()
    prepare(task)
    scores = task.evaluate(HashEncoder(), "test", encode_kwargs={"batch_size": 64})["default"]
    items = collect(task, HashEncoder(), "test", ["default"], seed=0)["default"]
    assert len(items.runs) == 10 and len(items.gold) == 100 and items.predicted == items.runs[0]
    per_run = [run["accuracy"] for run in scores["scores_per_experiment"]]
    gold = np.asarray(items.gold)
    kept = [float(statistic(items.kind, gold, np.asarray(run))[0]) for run in items.runs]
    assert kept == pytest.approx(per_run, abs=1e-12)
    assert _mean_accuracy(items) == pytest.approx(scores["main_score"], abs=1e-12)
    assert len(set(map(tuple, items.runs))) > 1  # the runs differ: each its own training draw


def test_a_predicted_label_no_test_item_has_is_never_right() -> None:
    items = label_codes("predictions", (["b", "a", "b"], [["b", "c", "a"]]))
    assert items.gold == [1.0, 0.0, 1.0] and items.predicted == [1.0, -1.0, 0.0]


def test_row_accuracy_is_the_share_right_in_each_resample() -> None:
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    index = rng.integers(0, 60, size=(300, 60))
    got = row_accuracy(gold.astype(float), predicted.astype(float), resample_weights(index, 60))
    assert np.allclose(got, (gold[index] == predicted[index]).mean(1), atol=1e-12)


def _classified(aggregator: str, runs: list[np.ndarray], gold: np.ndarray) -> Any:
    items = {
        "default": ItemScores(
            kind="predictions",
            gold=gold.tolist(),
            predicted=runs[0].tolist(),
            runs=[run.tolist() for run in runs],
        )
    }
    score = float(np.mean([np.mean(run == gold) for run in runs]))
    return factories.result(
        aggregator, items, score, task_type="Classification", main_score_name="accuracy"
    )


def test_compare_pairs_classifiers_over_test_items() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 400).astype(float)
    good = [np.where(rng.random(400) < 0.8, gold, (gold + 1) % 3) for _ in range(10)]
    bad = [np.where(rng.random(400) < 0.6, gold, (gold + 1) % 3) for _ in range(10)]
    rows = compare_results(
        [_classified("linear", good, gold), _classified("sba", bad, gold)], n_resamples=500
    ).rows
    (worse,) = [row for row in rows if row.aggregator == "sba"]
    assert worse.p_value is not None and worse.p_value < 0.01
    assert worse.item_delta == pytest.approx(-0.2, abs=0.03)


BAD = {
    "one class": ("sentence,polarity\n" + "x,pos\n" * 6, "single class"),
    "small class": (
        "sentence,polarity\n" + "x,pos\n" * 6 + "y,neg\n" * 3,
        "label 'neg' of column 'polarity' has 3 row(s)",
    ),
    "empty text": ("sentence,polarity\n" + "x,pos\n,neg\n" + "y,neg\n" * 5, "p.csv: row 3"),
    "missing column": ("text,polarity\nx,pos\n", "missing column(s) text='sentence'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_label_files_are_located(case: str, tmp_path: Path) -> None:
    content, message = BAD[case]
    (tmp_path / "p.csv").write_text(content)
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.output and f"{tmp_path / 'suite.yaml'}:5:" in result.output


def test_a_classification_entry_maps_text_and_label(tmp_path: Path) -> None:
    entry = "{name: t, type: classification, path: p.csv, text: sentence}"
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path, entry))])
    assert result.exit_code == 2 and "missing: label" in result.output
