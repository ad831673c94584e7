"""The packaged data: sizes, label hygiene, hard negatives."""

from __future__ import annotations

import subprocess
import sys

from sbabench.tasks import get_task, known_task, sources


def test_lee_sizes() -> None:
    assert len(sources.lee_documents()) == 50
    pairs = sources.lee_similarities()
    assert len(pairs) == 1225
    assert all(0.0 <= s <= 1.0 and i < j for i, j, s in pairs)


def test_gensim_data_is_found_without_importing_gensim() -> None:
    code = (
        "import sys\n"
        "from sbabench.tasks import sources\n"
        "print(sources.gensim_file('lee_background.cor'), 'gensim' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from gensim.test.utils import datapath

    assert out.stdout.split() == [datapath("lee_background.cor"), "False"]


def test_newsgroups_headers_are_stripped() -> None:
    texts, labels = sources.mini_newsgroups()
    assert len(texts) == 200 and set(labels) == {"alt.atheism", "sci.space"}
    assert not any("Newsgroups:" in t for t in texts)
    assert all(t.strip() for t in texts)


def test_polarity_is_balanced() -> None:
    texts, labels = sources.pang_lee_polarity()
    assert len(texts) == 200 and labels.count("pos") == labels.count("neg") == 100


def test_aia_bde_pairs_are_balanced_with_hard_negatives() -> None:
    entries = sources.aia_bde_entries()
    assert len(entries) == 855
    first, second, labels = sources.aia_bde_pairs(seed=0)
    assert sum(labels) * 2 == len(labels) == 1680
    paraphrases: dict[str, set[str]] = {}
    domains: dict[str, set[str]] = {}
    for e in entries:
        paraphrases.setdefault(e.question, set()).update(e.variants)
        domains.setdefault(e.question, set()).add(e.domain)
    owners = {v: e for e in entries for v in e.variants}
    for a, b, label in zip(first, second, labels, strict=True):
        if label:
            assert b in paraphrases[a]
        else:
            assert b not in paraphrases[a]
            assert owners[b].domain in domains[a]
    assert sources.aia_bde_pairs(seed=0) == (first, second, labels)


def test_task_names() -> None:
    assert known_task("LeeDocSTS") is None
    assert known_task("STSBenchmark") is None  # an MTEB task (needs the hub to run)
    problem = known_task("NoSuchTaskXYZ")
    assert problem is not None and "unknown task" in problem
    summaries = known_task("SummEval")
    assert summaries is not None and "type Summarization; sbabench runs STS" in summaries
    for name in ("ArguAna", "SciFact", "NFCorpus", "SciDocsRR", "Banking77Classification"):
        assert known_task(name) is None, name  # issue 33: retrieval, reranking, classification
    assert get_task("AIABDEDuplicates").metadata.main_score == "max_ap"
