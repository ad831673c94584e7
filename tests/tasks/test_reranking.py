"""Reranking: local files laid out as mteb lays out reranking data, scored as plain mteb scores
them, per-query items, and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from sbabench.analysis.stats import statistic
from sbabench.cli import main
from sbabench.tasks.reranking import read_ranked, reranking_split
from sbabench.tasks.sources import RankedQuery, aia_bde_reranking
from tests.tasks.scored_twice import dense_suite, through_sbabench_and_mteb

ENTRY = "{name: faq, type: reranking, path: ranked.jsonl, query: q, positive: pos, negative: neg}"


def write_jsonl(path: Path, ranked: list[RankedQuery]) -> None:
    with path.open("w") as out:
        for row in ranked:
            record = {"q": row.query, "pos": list(row.positive), "neg": list(row.negative)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def test_a_local_file_scores_as_plain_mteb_evaluate(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "ranked.jsonl", aia_bde_reranking()[:120])
    result, reference = through_sbabench_and_mteb(tmp_path, ENTRY)
    assert result.main_score == pytest.approx(reference.get_score(), abs=1e-6)
    for metric in ("map_at_1000", "mrr_at_10", "ndcg_at_10"):
        assert result.scores["default"][metric] == pytest.approx(
            reference.scores["test"][0][metric], abs=1e-6
        )
    items = result.items["default"]
    assert items.kind == "reranked" and len(items.predicted) == 120
    mean = statistic(items.kind, np.asarray(items.gold), np.asarray(items.predicted))[0]
    assert round(float(mean), 5) == result.main_score < 1.0


def test_the_layout_is_mtebs_own_conversion_of_reranking_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.text import reranking as mteb_reranking

    from sbabench.tasks.metadata import task_metadata

    ranked = aia_bde_reranking()[:30]

    class OldFormat(mteb_reranking.AbsTaskReranking):
        metadata = task_metadata(
            "OldFormat",
            "Reranking",
            "map_at_1000",
            "d",
            "x",
            "1",
            ["por-Latn"],
            "mit",
            "https://x.org",
        )

    monkeypatch.setattr(mteb_reranking, "OLD_FORMAT_RERANKING_TASKS", ["OldFormat"])
    old = OldFormat()
    rows = {
        "query": [r.query for r in ranked],
        "positive": [list(r.positive) for r in ranked],
        "negative": [list(r.negative) for r in ranked],
    }
    old.transform_old_dataset_format(DatasetDict({"test": Dataset.from_dict(rows)}))
    theirs, ours = old.dataset["default"]["test"], reranking_split(ranked)["default"]["test"]
    for part in ("corpus", "queries"):
        assert theirs[part].to_list() == [
            {k: row[k] for k in theirs[part].column_names} for row in ours[part].to_list()
        ]
    assert dict(theirs["relevant_docs"]) == ours["relevant_docs"]
    assert dict(theirs["top_ranked"]) == ours["top_ranked"]


def test_a_csv_of_single_texts_and_json_lists_reads_as_the_jsonl(tmp_path: Path) -> None:
    ranked = aia_bde_reranking()[:5]
    write_jsonl(tmp_path / "ranked.jsonl", ranked)
    pd.DataFrame(
        {
            "q": [r.query for r in ranked],
            "pos": [r.positive[0] for r in ranked],  # one text per cell
            "neg": [json.dumps(list(r.negative)) for r in ranked],  # a JSON list in a cell
        }
    ).to_csv(tmp_path / "ranked.csv", index=False)
    columns = {"query": "q", "positive": "pos", "negative": "neg"}
    from_csv = read_ranked(tmp_path / "ranked.csv", columns)
    from_jsonl = read_ranked(tmp_path / "ranked.jsonl", columns)
    assert from_jsonl == ranked
    assert [(r.query, r.positive[0], r.negative) for r in from_jsonl] == [
        (r.query, *r.positive, r.negative) for r in from_csv
    ]


BAD = {
    "no negative": ('{"q": "a", "pos": ["b"], "neg": []}', "ranked.jsonl: row 2", "no negative text"),
    "number": ('{"q": "a", "pos": ["b"], "neg": [3]}', "ranked.jsonl: row 2", "a text or a list of texts, got [3]"),
    "empty query": ('{"q": " ", "pos": ["b"], "neg": ["c"]}', "ranked.jsonl: row 2", "empty or non-text query"),
    "a non-text cell": ('{"q": "a", "pos": {"b": 1}, "neg": ["c"]}', "ranked.jsonl: row 2", "got {'b': 1}"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_reranking_rows_are_located(case: str, tmp_path: Path) -> None:
    line, where, message = BAD[case]
    good = '{"q": "x", "pos": ["y"], "neg": ["z"]}'
    (tmp_path / "ranked.jsonl").write_text(f"{good}\n{line}\n")
    result = CliRunner().invoke(main, ["validate", str(dense_suite(tmp_path, ENTRY))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.output and where in result.output, result.output
    assert f"{tmp_path / 'suite.yaml'}:5:" in result.output


def test_a_missing_column_names_the_columns_there_are(tmp_path: Path) -> None:
    (tmp_path / "ranked.jsonl").write_text('{"query": "a", "pos": ["b"], "neg": ["c"]}\n')
    result = CliRunner().invoke(main, ["validate", str(dense_suite(tmp_path, ENTRY))])
    assert result.exit_code == 2 and "missing column(s) query='q'" in result.output
    assert "the file has columns ['query', 'pos', 'neg']" in result.output


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("['Dogs bark.', 'Rain falls.']", "Expecting value (column 2)"),  # Python's repr
        ('["Stocks fell", "Dogs bark."', "Expecting ',' delimiter"),  # a lost bracket
    ],
)
def test_a_csv_list_cell_that_is_not_json_is_refused(
    cell: str, message: str, tmp_path: Path
) -> None:
    # it was read as one text: one negative candidate made of the whole list
    pd.DataFrame(
        {"q": ["x", "what do cats do"], "pos": ["y", "Cats purr."], "neg": ["[deleted] z", cell]}
    ).to_csv(tmp_path / "ranked.csv", index=False)
    entry = ENTRY.replace("ranked.jsonl", "ranked.csv")
    result = CliRunner().invoke(main, ["validate", str(dense_suite(tmp_path, entry))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "ranked.csv: row 3: column 'negative' holds a list of texts that is not JSON" in (
        result.output
    ), result.output
    assert message in result.output and "fix: write the list as JSON" in result.output


def test_a_csv_text_that_begins_with_a_bracket_is_one_text(tmp_path: Path) -> None:
    pd.DataFrame({"q": ["x"], "pos": ["[deleted] y"], "neg": ['[1] "z"']}).to_csv(
        tmp_path / "ranked.csv", index=False
    )
    (row,) = read_ranked(
        tmp_path / "ranked.csv", {"query": "q", "positive": "pos", "negative": "neg"}
    )
    assert row == RankedQuery("x", ("[deleted] y",), ('[1] "z"',))
