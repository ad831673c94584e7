"""Reranking: rank each query's candidate texts, scored per query by mteb (MAP, MRR).

mteb 2 runs reranking as retrieval restricted to each query's candidates (`top_ranked`), so the
retrieval keeper (`sbabench.tasks.retrieval.keep_per_query`) keeps each query's value of the
main score (MAP@1000 for most reranking tasks) and compare bootstraps queries.

A local reranking task is one table, a query per row with its relevant and irrelevant texts:
  {name: my-rerank, type: reranking, path: ranked.jsonl, query: q, positive: pos, negative: neg}
`positive` and `negative` hold a list of texts (JSONL, Parquet) or one text (a CSV cell may also
hold a JSON list). Candidates get mteb's own ids (`apositive_<query>_<i>`, `negative_...`), the
layout mteb gives the reranking datasets it converts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from sbabench.errors import TaskDataError
from sbabench.tasks.local import LocalLayout, has_columns, read_table, row_label
from sbabench.tasks.retrieval import split_of
from sbabench.tasks.sources import RankedQuery


def reranking_split(ranked: list[RankedQuery]) -> Any:
    """mteb's retrieval layout of queries each with their own candidates (one `test` split)."""
    corpus: dict[str, tuple[str, str]] = {}
    queries: dict[str, str] = {}
    relevant: dict[str, dict[str, int]] = {}
    candidates: dict[str, list[str]] = {}
    for i, row in enumerate(ranked):
        query = f"test_query{i}"
        queries[query] = row.query
        # "a" first: a tie between a positive and a negative ranks the positive first, as in
        # mteb's conversion of reranking datasets
        graded = [("apositive", text, 1) for text in row.positive]
        graded += [("negative", text, 0) for text in row.negative]
        counts: dict[str, int] = {}
        for prefix, text, grade in graded:
            counts[prefix] = counts.get(prefix, -1) + 1
            doc = f"{prefix}_{query}_{counts[prefix]:05d}"
            corpus[doc] = ("", text)
            relevant.setdefault(query, {})[doc] = grade
            candidates.setdefault(query, []).append(doc)
    return split_of(corpus, queries, relevant, candidates)


_QUOTED_LIST = re.compile(r"\s*\[\s*[\"']")
"""A cell that begins as a list of quoted texts: `["` or `['`."""


def _texts(value: Any, name: str, where: str) -> tuple[str, ...]:
    """A cell's texts: a list of texts, one text, or (CSV) a JSON list of texts."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            # a text that happens to begin with "[" ("[deleted] ...") is kept as one text, but
            # not a list of quoted texts that is not JSON: a bracket or quote lost, or Python's
            # repr (pandas writes list columns so): taken as one text, it would be one candidate
            if _QUOTED_LIST.match(value):
                raise TaskDataError(
                    f"column {name!r} holds a list of texts that is not JSON: {exc.msg} "
                    f"(column {exc.colno})",
                    where=where,
                    fix='write the list as JSON: ["first text", "second text"] (double quotes)',
                ) from None
    items = [value] if isinstance(value, str) else value
    if isinstance(items, dict) or not hasattr(items, "__iter__"):
        items = None  # a number, NaN (an empty CSV cell), a mapping: not texts
    if items is None or not all(isinstance(t, str) for t in items):
        raise TaskDataError(
            f"column {name!r} must hold a text or a list of texts, got {value!r}",
            where=where,
        )
    texts = tuple(t.strip() for t in items if t.strip())
    if not texts:
        raise TaskDataError(
            f"no {name} text: a reranking query needs at least one relevant and one irrelevant text",
            where=where,
            fix="fill the cell or drop the row",
        )
    return texts


def read_ranked(path: Path, columns: Mapping[str, str]) -> list[RankedQuery]:
    """The rows of a local reranking file, each checked (file and row in every error)."""
    frame = read_table(path)
    has_columns(frame, columns, path)
    ranked = []
    for position, row in enumerate(frame.to_dict("records")):
        where = row_label(path, position)
        query = row[columns["query"]]
        if not isinstance(query, str) or not query.strip():
            raise TaskDataError(
                f"empty or non-text query in column {columns['query']!r}", where=where
            )
        positive = _texts(row[columns["positive"]], "positive", where)
        negative = _texts(row[columns["negative"]], "negative", where)
        ranked.append(RankedQuery(query.strip(), positive, negative))
    return ranked


def reranking_layout(files: Mapping[str, Path], columns: dict[str, str]) -> LocalLayout:
    """A reranking task over one table of queries with their candidates."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    dataset = partial(reranking_split, read_ranked(files["path"], columns))
    return LocalLayout(AbsTaskRetrieval, dataset, "Reranking", "map_at_1000", {})
