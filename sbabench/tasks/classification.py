"""Classification: mteb's logistic-regression protocol, with every test item's predicted label
kept for paired tests.

mteb trains a logistic regression on the embeddings of a few training items per label (8, drawn
with its own seed), predicts every test item, and repeats this 10 times; the main score is the
mean accuracy of the 10 runs. `keep_predictions` keeps each run's predicted labels as mteb makes
them, so the per-item statistic (accuracy averaged over the runs, `row_accuracy`) is mteb's
main score exactly, and the paired bootstrap resamples test items.

Why a bootstrap over test items and not McNemar's test: McNemar needs one right-or-wrong outcome
per item and system, but mteb's score averages 10 classifiers, so an item is right in a fraction
of the runs; a bootstrap tests the very number mteb reports, gives a confidence interval as well
as a p-value, and is the test every other task type, the CI gate and the two-level test over
replicates already use.

A local classification task is one labelled file, {type: classification, path, text, label},
scored with mteb's protocol for a dataset without a training split: 5-fold cross-validation
(mteb's seed), each fold's classifier trained on 8 items per label of the other folds. Every
item is then predicted once; the kept predictions are one run, whose accuracy is the mean of the
folds' accuracies when the folds are equal in size (mteb averages per fold).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sbabench.errors import TaskDataError
from sbabench.tasks.items import ItemScores, keep
from sbabench.tasks.local import LocalLayout, load_columns, single_split
from sbabench.tasks.types import find

Labelled = tuple[list[Any], list[list[Any]]]
"""The gold label of each test item, and each run's predicted labels of them."""


def label_codes(kind: str, labelled: Labelled) -> ItemScores:
    """Labels as class indices (sorted gold labels; a predicted label no test item has: -1)."""
    gold, runs = labelled
    index = {label: float(i) for i, label in enumerate(sorted(set(map(str, gold))))}
    coded = [[index.get(str(label), -1.0) for label in run] for run in runs]
    gold_codes = [index[str(label)] for label in gold]
    return ItemScores(kind=kind, gold=gold_codes, predicted=coded[0], runs=coded)


def _test_items(task: Any, data: Any, split: str, runs: list[list[Any]]) -> Labelled:
    """Train/test protocol: every run predicted every test item, in order."""
    return list(data[split][task.label_column_name]), [list(run) for run in runs]


def _folded_items(task: Any, data: Any, split: str, runs: list[list[Any]]) -> Labelled:
    """Cross-validation: each fold's run predicted its held-out items, the folds drawn as mteb
    draws them (KFold, shuffled with the task's seed)."""
    from sklearn.model_selection import KFold

    gold = list(data[task.train_split][task.label_column_name])
    folds = KFold(n_splits=task.n_splits, shuffle=True, random_state=task.seed)
    predicted: list[Any] = [None] * len(gold)
    for (_, held_out), run in zip(folds.split(range(len(gold))), runs, strict=True):
        for item, label in zip(held_out, run, strict=True):
            predicted[item] = label
    return gold, [predicted]


def _kept(
    task: Any,
    evaluate: Callable[..., Any],
    runs: list[list[Any]],
    items: Callable[[Any, Any, str, list[list[Any]]], Labelled],
) -> Callable[..., Any]:
    """`evaluate` (one subset) that keeps the runs' predictions of that subset as items."""
    registered = find(str(task.metadata.type))
    assert registered is not None

    def evaluate_subset(model: Any, data: Any, **kwargs: Any) -> Any:
        runs.clear()
        scores = evaluate(model, data, **kwargs)
        labelled = items(task, data, kwargs["hf_split"], runs)
        keep(task, kwargs["hf_subset"], label_codes(registered.item_kind, labelled))
        return scores

    return evaluate_subset


def keep_predictions(task: Any) -> None:
    """Make `task` keep, per subset, the labels each of mteb's classifier runs predicted."""
    runs: list[list[Any]] = []
    run_experiment = task._run_experiment

    def run_and_keep(*args: Any, **kwargs: Any) -> Any:
        scores, predicted = run_experiment(*args, **kwargs)
        runs.append(list(predicted))
        return scores, predicted

    # mteb looks these up on the task object each time, so the instance's copies are used
    task._run_experiment = run_and_keep
    task._evaluate_subset = _kept(task, task._evaluate_subset, runs, _test_items)
    task._evaluate_subset_cross_validation = _kept(
        task, task._evaluate_subset_cross_validation, runs, _folded_items
    )


FOLDS = 5
"""mteb's folds of cross-validation (`AbsTaskClassification.n_splits`)."""


def _enough_per_class(labels: list[str], path: Path, column: str) -> None:
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    small = {label: n for label, n in counts.items() if n < FOLDS}
    if small:
        label, n = next(iter(small.items()))
        raise TaskDataError(
            f"label {label!r} of column {column!r} has {n} row(s); mteb's {FOLDS}-fold "
            f"cross-validation needs at least {FOLDS} rows of every label ({len(small)} "
            "label(s) short)",
            where=str(path),
            fix="add rows to the small labels, or merge or drop them",
        )


def classification_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """A classification task over one labelled file, scored by mteb's cross-validation."""
    from mteb.abstasks.classification import AbsTaskClassification

    data = load_columns(files["path"], "classification", columns)
    _enough_per_class(data["label"], files["path"], columns["label"])
    # integer labels: mteb's average precision of a two-class task refuses text labels
    codes = {label: i for i, label in enumerate(sorted(set(data["label"])))}
    rows = {"text": data["text"], "label": [codes[label] for label in data["label"]]}
    attributes = {"is_cross_validation": True, "train_split": "test", "n_splits": FOLDS}
    base = AbsTaskClassification
    return LocalLayout(base, single_split(rows), "Classification", "accuracy", attributes)
