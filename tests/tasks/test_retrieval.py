"""Retrieval: local BEIR files scored as plain mteb scores them, per-query items whose mean is
mteb's main score, located errors for bad files, and every file in the unit key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from mteb.results import TaskResult

from sbabench.analysis.compare import compare_results
from sbabench.analysis.export import export_mteb
from sbabench.cli import main
from sbabench.suite import load_suite
from sbabench.tasks import get_task, task_identity
from sbabench.tasks.item_statistics import resample_weights, row_mean
from sbabench.tasks.items import ItemScores, collect, prepare
from sbabench.tasks.retrieval import per_query
from sbabench.tasks.sources import RetrievalData, lee_retrieval
from tests import factories
from tests.tasks.scored_twice import dense_suite, through_sbabench_and_mteb
from tests.tasks.test_tasks import HashEncoder

ENTRY = "{name: lee-local, type: retrieval, corpus: corpus.jsonl, queries: queries.jsonl, qrels: qrels.tsv}"


def write_beir(folder: Path, data: RetrievalData, titles: dict[str, str] | None = None) -> None:
    """BEIR's three files: corpus.jsonl, queries.jsonl, qrels.tsv (with its header)."""
    titles = titles or {}
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for key, text in data.corpus.items():
            out.write(json.dumps({"_id": key, "title": titles.get(key, ""), "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for key, text in data.queries.items():
            out.write(json.dumps({"_id": key, "text": text}) + "\n")
    rows = [f"{q}\t{d}\t{s}" for q, docs in data.relevant.items() for d, s in docs.items()]
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def lee_documents_only() -> RetrievalData:
    """The Lee retrieval task without its 300 background documents (quick to encode)."""
    data = lee_retrieval()
    corpus = {k: v for k, v in data.corpus.items() if k.startswith("lee-")}
    return RetrievalData(corpus, data.queries, data.relevant)


def suite_file(folder: Path, entry: str = ENTRY) -> Path:
    return dense_suite(folder, entry)


def test_local_beir_files_score_as_plain_mteb_evaluate(tmp_path: Path) -> None:
    write_beir(tmp_path, lee_documents_only(), titles={"lee-0": "Democrats", "lee-1": "Sport"})
    result, reference = through_sbabench_and_mteb(tmp_path, ENTRY)
    assert result.main_score == pytest.approx(reference.get_score(), abs=1e-6)
    theirs, ours = reference.scores["test"][0], result.scores["default"]
    for metric in ("ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_5", "precision_at_1"):
        assert ours[metric] == pytest.approx(theirs[metric], abs=1e-6), metric
    items = result.items["default"]
    assert items.kind == "queries" and len(items.predicted) == 48 and set(items.gold) == {1.0}
    # mteb rounds its mean to 5 decimals: the unrounded mean of the kept values rounds to it
    assert round(float(np.mean(items.predicted)), 5) == result.main_score
    (exported,) = export_mteb(tmp_path / "results", tmp_path / "mteb")
    assert TaskResult.from_disk(exported.path).get_score() == result.main_score


def _random_run(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Made-up judgments (graded, several relevant per query) and a ranking with ties."""
    docs = [f"d{j}" for j in range(30)]
    qrels = {
        f"q{i}": {d: int(rng.integers(1, 3)) for d in rng.choice(docs, 3, replace=False)}
        for i in range(25)
    }
    results = {q: {d: float(rng.integers(0, 8)) for d in docs} for q in qrels}
    return qrels, results


@pytest.mark.parametrize(
    "main_score",
    ["ndcg_at_10", "map_at_1000", "mrr_at_10", "recall_at_5", "precision_at_1", "hit_rate_at_3"],
)
def test_the_mean_of_per_query_values_is_mtebs_score(main_score: str) -> None:
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores, make_score_dict

    qrels, results = _random_run(np.random.default_rng(1))
    k_values = [1, 3, 5, 10, 100, 1000]
    evaluated = calculate_retrieval_scores(results, qrels, k_values)
    scores = make_score_dict(
        ndcg=evaluated.ndcg, _map=evaluated.map, recall=evaluated.recall,
        precision=evaluated.precision, mrr=evaluated.mrr, naucs=evaluated.naucs,
        naucs_mrr=evaluated.naucs_mrr, hit_rate=evaluated.hit_rate, task_scores={},
    )  # fmt: skip
    values = per_query(main_score, evaluated.all_scores, qrels, results)
    assert values is not None and set(values) == set(qrels)
    assert np.mean(list(values.values())) == pytest.approx(scores[main_score], abs=5e-6)
    assert 0 < scores[main_score] < 1  # a made-up run that is neither perfect nor hopeless


def test_a_main_score_that_is_not_per_query_keeps_nothing() -> None:
    assert per_query("p-MRR", {}, {}, {}) is None
    assert per_query("ndcg_at_7", {"q": {"ndcg_cut_10": 1.0}}, {}, {}) is None


def test_the_bundled_task_keeps_every_query_through_mtebs_evaluate() -> None:
    task = get_task("LeeDocRetrieval")
    task.load_data()
    prepare(task)
    scores = task.evaluate(HashEncoder(), "test", encode_kwargs={"batch_size": 64})
    items = collect(task, HashEncoder(), "test", list(scores), seed=0)["default"]
    assert len(task.dataset["default"]["test"]["corpus"]) == 350 and len(items.predicted) == 48
    assert round(float(np.mean(items.predicted)), 5) == scores["default"]["main_score"]


def test_row_mean_is_the_weighted_mean_of_each_resample() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(40)
    index = rng.integers(0, 40, size=(200, 40))
    got = row_mean(np.zeros(40), values, resample_weights(index, 40))
    assert np.allclose(got, values[index].mean(1), atol=1e-12)


def _query_result(aggregator: str, values: np.ndarray) -> Any:
    items = {
        "default": ItemScores(kind="queries", gold=[1.0] * len(values), predicted=list(values))
    }
    return factories.result(
        aggregator,
        items,
        float(np.mean(values)),
        task_type="Retrieval",
        main_score_name="ndcg_at_10",
    )


def test_compare_pairs_retrieval_units_over_queries() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(300)
    worse = np.clip(base - rng.uniform(0, 0.2, 300), 0, 1)  # every query a little worse
    same = base.copy()
    rows = compare_results(
        [_query_result("linear", base), _query_result("sba", worse), _query_result("same", same)],
        n_resamples=500,
    ).rows
    by_operator = {row.aggregator: row for row in rows}
    assert by_operator["sba"].p_value is not None and by_operator["sba"].p_value < 0.01
    assert by_operator["sba"].ci_high is not None and by_operator["sba"].ci_high < 0
    assert by_operator["same"].p_value == 1.0


def test_each_of_the_three_files_is_in_the_unit_key(tmp_path: Path) -> None:
    write_beir(tmp_path, lee_documents_only())
    entry = load_suite(suite_file(tmp_path)).tasks[0]
    before = task_identity(entry)
    seen = {json.dumps(before, sort_keys=True)}
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        path = tmp_path / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")  # a blank line: the same data, other bytes
        seen.add(json.dumps(task_identity(entry), sort_keys=True))
        path.write_bytes(original)
    assert len(seen) == 4 and task_identity(entry) == before


def _corrupt(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    path.write_text(path.read_text().replace(old, new, 1))


BAD = {
    "not JSON": ("corpus.jsonl", '{"_id": "lee-1"', '{"_id" "lee-1"', "corpus.jsonl: row 2", "not JSON"),
    "no _id": ("queries.jsonl", '"_id": "q3", ', "", "queries.jsonl: row 4", "field '_id' must be text (missing)"),
    "duplicate _id": ("corpus.jsonl", '"_id": "lee-2"', '"_id": "lee-0"', "corpus.jsonl: row 3", "duplicate _id 'lee-0' (first on row 1)"),
    "empty text": ("queries.jsonl", '"text": "A gay', '"text": " ", "x": "A gay', "queries.jsonl: row", "empty 'text'"),
    "unknown query": ("qrels.tsv", "q5\t", "q555\t", "qrels.tsv: row", "query-id 'q555' is not in the queries file"),
    "unknown document": ("qrels.tsv", "\tlee-5\t", "\tlee-555\t", "qrels.tsv: row", "corpus-id 'lee-555' is not in the corpus file"),
    "judged twice": ("qrels.tsv", "q3\tlee-3\t1", "q3\tlee-3\t1\nq3\tlee-3\t2", "qrels.tsv: row 6", "judged twice (first on row 5)"),
    "fractional score": ("qrels.tsv", "q0\tlee-0\t1", "q0\tlee-0\t0.5", "qrels.tsv: row 2", "not a whole number"),
    "no header": ("qrels.tsv", "query-id\tcorpus-id\tscore\n", "", "qrels.tsv: row 1", "must be the header"),
    "two fields": ("qrels.tsv", "q0\tlee-0\t1", "q0 lee-0\t1", "qrels.tsv: row 2", "2 tab-separated field(s)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_beir_files_are_named_with_file_and_row(case: str, tmp_path: Path) -> None:
    name, old, new, where, message = BAD[case]
    write_beir(tmp_path, lee_documents_only())
    _corrupt(tmp_path, name, old, new)
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.output and where in result.output, result.output
    assert f"{tmp_path / 'suite.yaml'}:5:" in result.output


def test_empty_qrels_and_missing_files_are_refused(tmp_path: Path) -> None:
    write_beir(tmp_path, lee_documents_only())
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tlee-0\t0\n")
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 2 and "no relevant document (no row with score > 0)" in result.output
    (tmp_path / "queries.jsonl").unlink()
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 2 and "queries.jsonl: file not found" in result.output


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: t, type: retrieval, corpus: c.jsonl, queries: q.jsonl}", "missing: qrels"),
        (
            "{name: t, type: retrieval, corpus: c, queries: q, qrels: r, path: p.csv}",
            "does not use path",
        ),
        ("{name: t, type: sts, corpus: c.jsonl, path: a.csv, text1: a, text2: b, score: s}", "does not use corpus"),
        ("{name: t, qrels: r.tsv}", "needs `type:`"),
    ],
)  # fmt: skip
def test_retrieval_entries_name_their_three_files(tmp_path: Path, entry: str, message: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path, entry))])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_the_json_schema_checks_a_retrieval_entry() -> None:
    import jsonschema

    from sbabench.suite.schema import json_schema

    suite = {"name": "s", "models": [{"name": "m", "source": "dense"}]}
    good = {"name": "t", "type": "retrieval", "corpus": "c", "queries": "q", "qrels": "r"}
    jsonschema.validate({**suite, "tasks": [good]}, json_schema())
    without_qrels = {k: v for k, v in good.items() if k != "qrels"}
    for bad in (without_qrels, {**good, "path": "p.csv"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**suite, "tasks": [bad]}, json_schema())


def test_bytes_that_are_not_utf8_are_named_on_their_own_row(tmp_path: Path) -> None:
    # text-mode reading decodes blocks ahead of the line read: the error named row 1 here
    write_beir(tmp_path, lee_documents_only())
    queries = tmp_path / "queries.jsonl"
    lines = queries.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"text": "', b'"text": "caf\xe9 ', 1)  # Latin-1, not UTF-8
    queries.write_bytes(b"".join(lines))
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "queries.jsonl: row 4: not UTF-8 text" in result.output, result.output


def test_a_byte_order_mark_is_not_data(tmp_path: Path) -> None:
    write_beir(tmp_path, lee_documents_only())
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = CliRunner().invoke(main, ["validate", str(suite_file(tmp_path))])
    assert result.exit_code == 0, result.output
