"""Tasks: local files (good and bad), equivalence with mteb's task classes, hub failures offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mteb.models.model_meta import ModelMeta

from sbabench.cli import main
from sbabench.run.encoding import CosineSimilarity
from sbabench.run.execute import run_suite
from sbabench.suite import load_suite, parse_suite
from sbabench.tasks import get_task
from sbabench.tasks.bundled import BUNDLED

ROOT = Path(__file__).resolve().parents[2]


class HashEncoder(CosineSimilarity):
    """A deterministic bag-of-character-trigrams encoder (an mteb EncoderProtocol)."""

    mteb_model_meta = ModelMeta.create_empty(overwrites={"name": "test/hash"})

    def encode(self, inputs: Any, **_: Any) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for i in range(max(1, len(text) - 2)):
                out[row, hashlib.md5(text[i : i + 3].encode()).digest()[0] % 64] += 1.0
        return out


def _score(task: Any) -> float:
    scores = task.evaluate(HashEncoder(), "test", encode_kwargs={"batch_size": 8})
    return float(scores["default"]["main_score"])


def _suite_with(tmp_path: Path, entry: str) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: local\nmodels:\n  - {{name: d, source: dense}}\ntasks:\n  - {entry}\n")
    return suite


def test_local_sts_csv_equals_mteb_mock_sts(tmp_path: Path) -> None:
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    mock = MockSTSTask()
    mock.load_data()
    data = mock.dataset["test"]
    (tmp_path / "data").mkdir()
    pd.DataFrame({"s1": data["sentence1"], "s2": data["sentence2"], "gold": data["score"]}).to_csv(
        tmp_path / "data" / "pairs.csv", index=False
    )
    suite = load_suite(
        _suite_with(
            tmp_path,
            "{name: my-sts, type: sts, path: data/pairs.csv, text1: s1, text2: s2, score: gold}",
        )
    )
    assert _score(get_task(suite.tasks[0])) == pytest.approx(_score(MockSTSTask()))


def test_local_pairs_parquet_equals_mteb_mock_pair_classification(tmp_path: Path) -> None:
    from mteb.mocks.mock_tasks.pair_classification import MockPairClassificationTask

    mock = MockPairClassificationTask()
    mock.load_data()
    data = mock.dataset["test"]
    pd.DataFrame(
        {
            "a": data["sentence1"],
            "b": data["sentence2"],
            "is_dup": [bool(v) for v in data["labels"]],
        }
    ).to_parquet(tmp_path / "q.parquet")
    entry = "{name: my-dups, type: pair-classification, path: q.parquet, text1: a, text2: b, label: is_dup}"
    suite = load_suite(_suite_with(tmp_path, entry))
    assert _score(get_task(suite.tasks[0])) == pytest.approx(_score(MockPairClassificationTask()))


def test_local_clustering_jsonl_equals_the_bundled_task_class(tmp_path: Path) -> None:
    bundled = BUNDLED["PangLeePolarityClustering"]()
    bundled.load_data()
    rows = bundled.dataset["test"]
    with (tmp_path / "docs.jsonl").open("w") as handle:
        for text, label in zip(rows["sentences"], rows["labels"], strict=True):
            handle.write(json.dumps({"body": text, "topic": label}) + "\n")
    entry = "{name: my-clusters, type: clustering, path: docs.jsonl, text: body, label: topic}"
    suite = load_suite(_suite_with(tmp_path, entry))
    assert _score(get_task(suite.tasks[0])) == pytest.approx(
        _score(BUNDLED["PangLeePolarityClustering"]())
    )


BAD_FILES = {
    "missing column": (
        "a.csv",
        "s1,s2,gold\nx,y,1\n",
        "score: gold2",
        "missing column(s) score='gold2'",
    ),
    "empty": ("a.csv", "s1,s2,gold\n", "score: gold", "no rows"),
    "NaN score": ("a.csv", "s1,s2,gold\nx,y,1\nz,w,\n", "score: gold", "a.csv: row 3"),
    "text score": ("a.csv", "s1,s2,gold\nx,y,high\n", "score: gold", "not numeric ('high')"),
    "wrong encoding": ("a.csv", None, "score: gold", "not UTF-8 text"),
    "missing file": ("nope.csv", "", "score: gold", "file not found"),
    # the two below passed `validate` and then failed every unit with a ZeroDivisionError
    "one row": ("a.csv", "s1,s2,gold\nx,y,1\n", "score: gold", "1 row(s) and 1 distinct score"),
    "equal scores": (
        "a.csv",
        "s1,s2,gold\nx,y,1\nz,w,1.0\n",
        "score: gold",
        "needs at least two rows with different scores",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_local_sts_files_are_named_with_row_and_column(case: str, tmp_path: Path) -> None:
    name, content, score, message = BAD_FILES[case]
    if content is None:
        (tmp_path / name).write_bytes("s1,s2,gold\ncaf\xe9,x,1\n".encode("latin-1"))
    elif name != "nope.csv":
        (tmp_path / name).write_text(content)
    suite = _suite_with(
        tmp_path, f"{{name: t, type: sts, path: {name}, text1: s1, text2: s2, {score}}}"
    )
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output and f"{suite}:5:" in result.output


def test_one_class_labels_and_schema_mistakes(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text("a,b,dup\nx,y,1\nz,w,1\n")
    cases = {
        "{name: t, type: pair-classification, path: q.csv, text1: a, text2: b, label: dup}": "single class",
        "{name: t, path: q.csv, text1: a, text2: b, label: dup}": "needs `type:`",
        "{name: t, type: sts, path: q.csv, text1: a, text2: b}": "missing: score",
        "{name: LeeDocSTS, split: dev}": "apply to MTEB tasks, not the bundled",
        "{name: t, type: sts, text1: a}": "only apply to local files",
    }
    for entry, message in cases.items():
        result = CliRunner().invoke(main, ["validate", str(_suite_with(tmp_path, entry))])
        assert result.exit_code == 2 and message in result.output, (entry, result.output)


def test_bundled_word_similarity_tasks() -> None:
    simlex, wordsim = BUNDLED["SimLex999"](), BUNDLED["WordSim353"]()
    simlex.load_data()
    wordsim.load_data()
    assert simlex.dataset["test"].num_rows == 999 and wordsim.dataset["test"].num_rows == 353
    assert max(simlex.dataset["test"]["score"]) <= 10


def test_paper_suite_validates_offline() -> None:
    suite = load_suite(ROOT / "suites" / "paper.yaml")
    assert suite.models[0].source == "huggingface" and len(suite.tasks) == 16


def test_hub_task_offline_fails_fast_with_advice_and_writes_no_result(tmp_path: Path) -> None:
    suite = parse_suite("name: hub\nmodels:\n  - {name: d, source: dense}\ntasks: [STSBenchmark]\n")
    summary = run_suite(suite, tmp_path)
    assert summary.exit_code == 1 and summary.models_loaded == 0
    message = summary.failed["d/dense/STSBenchmark"]
    assert "could not reach the dataset" in message and "local task" in message
    assert not (tmp_path / "hub" / "d" / "dense" / "STSBenchmark.json").exists()
    assert (tmp_path / "hub" / "d" / "dense" / "STSBenchmark.error.json").exists()
