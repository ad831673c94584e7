"""Retrieval: mteb's retrieval evaluator, with each query's score kept for paired tests.

mteb ranks the corpus for every query (queries and documents embedded with the model's query
and document prompts), has pytrec_eval score each query, and averages. `keep_per_query` keeps
the per-query value of the task's main score (nDCG@10 for most tasks) from mteb's own
`task_specific_scores` hook, which mteb calls with those per-query metrics: the paired bootstrap
then resamples queries, and the mean over the queries is mteb's main score (which mteb rounds to
5 decimals). Reranking is scored the same way (mteb 2 runs it as retrieval over each query's
candidates).

A local retrieval task reads a BEIR folder's three files:
  {name: my-search, type: retrieval, corpus: corpus.jsonl, queries: queries.jsonl,
   qrels: qrels/test.tsv}
corpus lines are {"_id", "title", "text"}, query lines {"_id", "text"}, and the qrels a TSV with
the header `query-id corpus-id score`. Problems are reported with the file and row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from sbabench.errors import TaskDataError
from sbabench.tasks.items import ItemScores, keep
from sbabench.tasks.local import LocalLayout
from sbabench.tasks.sources import RetrievalData
from sbabench.tasks.types import find

_PYTREC = {
    "ndcg_at": "ndcg_cut_",
    "map_at": "map_cut_",
    "recall_at": "recall_",
    "precision_at": "P_",
    "hit_rate_at": "success_",
}
"""mteb's name of a metric at k -> pytrec_eval's per-query key (`ndcg_at_10` -> `ndcg_cut_10`)."""


def _reciprocal_ranks(
    qrels: Mapping[str, Mapping[str, int]],
    results: Mapping[str, Mapping[str, float]],
    k: int,
    skip_first: bool,
) -> dict[str, float]:
    """Each query's MRR@k, by mteb's own `mrr` over the results as mteb scores them (MRR is not
    among the per-query metrics mteb passes on)."""
    from mteb._evaluators.retrieval_metrics import mrr

    if skip_first:  # as mteb's calculate_retrieval_scores drops each query's first hit
        results = {
            qid: dict(sorted(scores.items(), key=lambda x: x[1], reverse=True)[1:])
            for qid, scores in results.items()
        }
    return dict(zip(results, mrr(qrels, results, [k])[f"MRR@{k}"], strict=True))


def per_query(
    main_score: str,
    scores: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    results: Mapping[str, Mapping[str, float]],
    skip_first: bool = False,
) -> dict[str, float] | None:
    """Query id -> its value of `main_score` (None: a main score that is not a per-query mean
    at k, such as a task-specific one)."""
    metric, _, k = main_score.rpartition("_")
    if not k.isdigit():
        return None
    if metric == "mrr_at":
        return _reciprocal_ranks(qrels, results, int(k), skip_first)
    key = f"{_PYTREC[metric]}{k}" if metric in _PYTREC else None
    if key is None or any(key not in values for values in scores.values()):
        return None
    return {qid: float(values[key]) for qid, values in scores.items()}


def keep_per_query(task: Any) -> None:
    """Make `task` keep, per subset, each query's value of its main score as mteb scores it."""
    inner = task.task_specific_scores
    registered = find(str(task.metadata.type))
    assert registered is not None
    main_score = str(task.metadata.main_score)

    def task_specific_scores(
        scores: dict[str, dict[str, float]],
        qrels: dict[str, dict[str, int]],
        results: dict[str, dict[str, float]],
        hf_split: str,
        hf_subset: str,
    ) -> dict[str, float]:
        values = per_query(main_score, scores, qrels, results, task.skip_first_result)
        if values:
            ids = sorted(values)  # the same order in every result, whatever order mteb ran them
            relevant = [float(sum(r > 0 for r in qrels.get(q, {}).values())) for q in ids]
            predicted = [values[q] for q in ids]
            keep(
                task,
                hf_subset,
                ItemScores(kind=registered.item_kind, gold=relevant, predicted=predicted),
            )
        specific: dict[str, float] = inner(
            scores, qrels, results, hf_split=hf_split, hf_subset=hf_subset
        )
        return specific

    task.task_specific_scores = task_specific_scores


def retrieval_split(data: RetrievalData, top_ranked: dict[str, list[str]] | None = None) -> Any:
    """One `test` split of a retrieval task in mteb's layout (documents have no titles here)."""
    return split_of(
        {doc: ("", text) for doc, text in data.corpus.items()},
        data.queries,
        data.relevant,
        top_ranked,
    )


def split_of(
    corpus: Mapping[str, tuple[str, str]],
    queries: Mapping[str, str],
    relevant: Mapping[str, Mapping[str, int]],
    top_ranked: dict[str, list[str]] | None = None,
) -> Any:
    """mteb's `{"default": {"test": RetrievalSplitData}}` of documents (id -> (title, text)),
    queries (id -> text), relevance judgments and (reranking) each query's candidates."""
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    documents = Dataset.from_dict(
        {
            "id": list(corpus),
            "title": [title for title, _ in corpus.values()],
            "text": [text for _, text in corpus.values()],
        }
    )
    split = RetrievalSplitData(
        corpus=documents,
        queries=Dataset.from_dict({"id": list(queries), "text": list(queries.values())}),
        # copies: mteb filters the judgments of each evaluation in place
        relevant_docs={q: dict(docs) for q, docs in relevant.items()},
        top_ranked=None if top_ranked is None else {q: list(d) for q, d in top_ranked.items()},
    )
    return {"default": {"test": split}}


# --- local BEIR files ------------------------------------------------------------------------


def _where(path: Path, row: int) -> str:
    return f"{path}: row {row}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(row, line) of a UTF-8 text file's non-blank lines (a leading BOM dropped); rows count
    from 1."""
    if not path.is_file():
        raise TaskDataError(
            "file not found", where=str(path), fix="paths are relative to the suite file"
        )
    with path.open("rb") as handle:
        # decoded a line at a time: a text-mode file decodes whole blocks ahead of the line read,
        # so its error would name the row after the last one read, not the one at fault
        for row, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if row == 1 else "utf-8")  # a leading BOM
            except UnicodeDecodeError as exc:
                raise TaskDataError(
                    f"not UTF-8 text (byte {exc.start + 1} of the row)",
                    where=_where(path, row),
                    fix="re-save the file as UTF-8",
                ) from None
            if line.strip():
                yield row, line.rstrip("\n").rstrip("\r")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row, object) of every line of a JSONL file."""
    for row, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskDataError(
                f"not JSON: {exc.msg} (column {exc.colno})",
                where=_where(path, row),
                fix="each line of a BEIR JSONL file is one JSON object",
            ) from None
        if not isinstance(record, dict):
            raise TaskDataError(
                f"a line is a JSON object, got {type(record).__name__}", where=_where(path, row)
            )
        yield row, record


def _field(record: dict[str, Any], name: str, path: Path, row: int, required: bool) -> str:
    value = record.get(name)
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        got = "missing" if name not in record else f"got {value!r}"
        raise TaskDataError(
            f"field {name!r} must be text ({got})",
            where=_where(path, row),
            fix=f"give every line a {name!r}",
        )
    return str(value).strip()


def _read_texts(path: Path, with_title: bool) -> dict[str, tuple[str, str]]:
    """id -> (title, text) of a BEIR corpus or queries file; ids unique, texts not empty."""
    found: dict[str, tuple[str, str]] = {}
    first_row: dict[str, int] = {}
    for row, record in _records(path):
        key = _field(record, "_id", path, row, required=True)
        title = _field(record, "title", path, row, required=False) if with_title else ""
        text = _field(record, "text", path, row, required=True)
        if not key or not (text or title):
            empty = "_id" if not key else "text"
            raise TaskDataError(
                f"empty {empty!r}", where=_where(path, row), fix="fill or drop the line"
            )
        if key in found:
            raise TaskDataError(
                f"duplicate _id {key!r} (first on row {first_row[key]})",
                where=_where(path, row),
                fix="give every line its own _id",
            )
        found[key], first_row[key] = (title, text), row
    if not found:
        raise TaskDataError("the file has no rows", where=str(path))
    return found


_QRELS_HEADER = ["query-id", "corpus-id", "score"]


def _qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(row, query id, document id, score) of a BEIR qrels TSV (its header checked)."""
    lines = _lines(path)
    header = next(lines, None)
    if header is None or header[1].split("\t") != _QRELS_HEADER:
        raise TaskDataError(
            "the first line must be the header query-id<TAB>corpus-id<TAB>score",
            where=_where(path, header[0] if header else 1),
            fix="BEIR's qrels/test.tsv layout: a header, then one judgment per line",
        )
    for row, line in lines:
        cells = [cell.strip() for cell in line.split("\t")]
        if len(cells) != 3:
            raise TaskDataError(
                f"{len(cells)} tab-separated field(s), expected 3 (query-id, corpus-id, score)",
                where=_where(path, row),
            )
        try:
            score = float(cells[2])
        except ValueError:
            score = float("nan")
        if not score.is_integer():
            raise TaskDataError(
                f"score {cells[2]!r} is not a whole number", where=_where(path, row),
                fix="relevance grades are integers (0 = not relevant)",
            )  # fmt: skip
        yield row, cells[0], cells[1], int(score)


def read_qrels(
    path: Path, queries: Mapping[str, Any], corpus: Mapping[str, Any]
) -> dict[str, dict[str, int]]:
    """query id -> document id -> score, every id known, every pair once, some score > 0."""
    judged: dict[str, dict[str, int]] = {}
    first_row: dict[tuple[str, str], int] = {}
    for row, query, doc, score in _qrels_rows(path):
        for name, value, known in (("query-id", query, queries), ("corpus-id", doc, corpus)):
            if value not in known:
                source = "queries" if name == "query-id" else "corpus"
                raise TaskDataError(
                    f"{name} {value!r} is not in the {source} file",
                    where=_where(path, row),
                    fix=f"add it to the {source} file, or drop the row",
                )
        if (query, doc) in first_row:
            raise TaskDataError(
                f"query {query!r} and document {doc!r} judged twice (first on row "
                f"{first_row[query, doc]})",
                where=_where(path, row),
                fix="keep one judgment per pair",
            )
        first_row[query, doc] = row
        judged.setdefault(query, {})[doc] = score
    if not any(score > 0 for docs in judged.values() for score in docs.values()):
        raise TaskDataError(
            "the qrels hold no relevant document (no row with score > 0)",
            where=str(path),
            fix="judge at least one query-document pair relevant (score > 0); a query judged only 0 "
            "scores 0 on every metric, as in mteb",
        )
    return judged


def retrieval_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """A retrieval task over BEIR files: corpus, queries and their relevance judgments."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    corpus = _read_texts(files["corpus"], with_title=True)
    queries = {key: text for key, (_, text) in _read_texts(files["queries"], False).items()}
    qrels = read_qrels(files["qrels"], queries, corpus)
    dataset = partial(split_of, corpus, queries, qrels)
    return LocalLayout(AbsTaskRetrieval, dataset, "Retrieval", "ndcg_at_10", {})
