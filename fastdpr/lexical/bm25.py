"""BM25 with ``bm25s``: building it from passages, saving it into an index directory, searching it.

What the manifest records (``lexical`` in an index's ``manifest.json``, see :func:`build_bm25`) is what
a search needs to tokenize questions exactly as the passages were tokenized: lower-casing, bm25s's token
pattern (Unicode word runs of two or more characters), the English stop words of bm25s, and PyStemmer's
English Snowball stemmer, plus the BM25 variant and its ``k1`` and ``b``.

Defined behaviour (tests/test_hybrid.py):

* text in any script is tokenized into Unicode word runs (``\\w\\w+``): Cyrillic, Greek, accented Latin
  match word for word (no accent folding; the English stemmer leaves non-English words as they are);
  scripts written without spaces (Chinese, Japanese) become one token per run, so only the same run
  matches; one-character words are not indexed (bm25s's pattern);
* a question whose words are all stop words (or unknown to the corpus) has no lexical hits: an empty list;
* an empty or blank question is refused (:class:`~fastdpr.common.errors.FastDPRError`, one line).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError, MissingDependencyError

__all__ = ["LEXICAL_DIR", "LEXICAL_METHODS", "STEMMER_PREFIX", "BM25Build", "BM25Index", "BM25Settings", "best_scores",
           "build_bm25", "check_question"]

#: The lexical methods ``fastdpr index --lexical`` knows.
LEXICAL_METHODS = ("bm25",)
#: Where the lexical side lives inside an index (or shard) directory.
LEXICAL_DIR = "lexical"
#: The token pattern of bm25s (its default), recorded in the manifest.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: How the manifest names a PyStemmer stemmer (``"PyStemmer english"``).
STEMMER_PREFIX = "PyStemmer "


@dataclass(frozen=True)
class BM25Settings:
    """How passages and questions are tokenized and scored. Defaults: Anserini's / pyserini's BM25
    (``k1=0.9``, ``b=0.4``, Lucene's variant), which the DPR paper's and pyserini's hybrid figures use;
    chosen before any measurement, not tuned on the evaluation questions."""

    method: str = "lucene"
    k1: float = 0.9
    b: float = 0.4
    lower: bool = True
    token_pattern: str = TOKEN_PATTERN
    stopwords: str | None = "en"
    stemmer: str | None = "english"

    def to_dict(self) -> dict[str, Any]:
        """The manifest's form: ``bm25`` (variant, k1, b) and ``tokenizer`` (parsed back by
        :mod:`fastdpr.index.manifest`)."""
        return {"bm25": {"method": self.method, "k1": self.k1, "b": self.b},
                "tokenizer": {"library": "bm25s.tokenize", "lower": self.lower, "token_pattern": self.token_pattern,
                              "stopwords": self.stopwords,
                              "stemmer": None if self.stemmer is None else f"{STEMMER_PREFIX}{self.stemmer}"}}


@dataclass(frozen=True)
class BM25Build:
    """What :func:`build_bm25` wrote: the files (relative to the target's parent), the passage count, the
    vocabulary size, and the provenance a manifest records (library versions, build time)."""

    files: tuple[str, ...]
    passages: int
    vocabulary: int
    versions: dict[str, str]
    seconds: float


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:  # a runtime dependency: only a broken install gets here
        raise MissingDependencyError(f"the lexical side needs bm25s and PyStemmer ({exc}): "
                                     "pip install bm25s PyStemmer") from exc
    return bm25s


def _stemmer(name: str | None) -> Any:
    if name is None:
        return None
    try:
        import Stemmer
    except ImportError as exc:
        raise MissingDependencyError(f"the lexical side needs PyStemmer ({exc}): pip install PyStemmer") from exc
    return Stemmer.Stemmer(name)


def check_question(question: str) -> None:
    """Refuse an empty or blank question (one line): it has neither words nor a meaning to embed."""
    if not isinstance(question, str) or not question.strip():
        raise FastDPRError("the question is empty")


def _tokenize(texts: list[str], settings: BM25Settings, stemmer: Any, ids: bool) -> Any:
    return _bm25s().tokenize(texts, lower=settings.lower, token_pattern=settings.token_pattern,
                             stopwords=settings.stopwords, stemmer=stemmer, return_ids=ids, show_progress=False)


def build_bm25(texts: Iterable[str], target: Path, settings: BM25Settings | None = None) -> BM25Build:
    """Index ``texts`` (passage ``i`` is label ``i``) with BM25 and save it into the new directory ``target``.

    The tokenized corpus is held in memory while it is indexed: one shard's worth in a sharded build.
    """
    settings = settings or BM25Settings()
    bm25s = _bm25s()
    started = time.perf_counter()
    corpus = list(texts)
    if not corpus:
        raise FastDPRError("no passages to index lexically")
    tokens = _tokenize(corpus, settings, _stemmer(settings.stemmer), ids=True)
    model = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
    model.index(tokens, show_progress=False)
    target.mkdir()
    model.save(str(target), show_progress=False)
    return BM25Build(files=tuple(sorted(f"{target.name}/{path.name}" for path in target.iterdir())),
                     passages=len(corpus), vocabulary=len(tokens.vocab),
                     versions={name: _version(name) for name in ("bm25s", "PyStemmer")},
                     seconds=round(time.perf_counter() - started, 2))


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class BM25Index:
    """A saved BM25 index, opened read-only (memory-mapped). Searching is thread-safe: bm25s only reads
    the score matrix."""

    def __init__(self, directory: Path, settings: BM25Settings, count: int) -> None:
        self.directory = directory
        self.settings = settings
        bm25s = _bm25s()
        self._stemmer = _stemmer(settings.stemmer)
        try:
            self._model = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexLoadError(f"{directory}: cannot open the BM25 index: {exc}") from exc
        self.count = count
        stored = int(self._model.scores["num_docs"])
        if stored != count:
            raise IndexLoadError(f"{directory}: the BM25 index holds {stored} passages, the index {count}")

    def tokens(self, questions: Sequence[str]) -> list[list[str]]:
        """Each question's tokens as the passages were tokenized (stop words removed, stemmed)."""
        for question in questions:
            check_question(question)
        tokenized: list[list[str]] = _tokenize(list(questions), self.settings, self._stemmer, ids=False)
        return tokenized

    def search(self, questions: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question: labels (int64) and BM25 scores (float32) of at most ``k`` passages with a score
        above zero, best first (ties by label). No hits (empty arrays) for a question with no indexed word."""
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        tokens = self.tokens(questions)
        empty = (np.empty(0, np.int64), np.empty(0, np.float32))
        return [best_scores(self._model.get_scores(row), k) if row else empty for row in tokens]


def best_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` passages of a question's BM25 score vector (one score per passage, from bm25s's
    ``get_scores``): labels (int64) and scores (float32) of passages scoring above zero, best first, ties
    by the smaller label.

    Why not bm25s's ``retrieve``: for one question it runs a selection over every passage (an
    ``argpartition`` of the whole vector, most of it zeros) inside a progress bar and, with
    ``n_threads >= 1``, a thread pool made for that one call. Only passages that share a word with the
    question score above zero, so the selection here runs over those alone (measured at 200k passages:
    ``python -m benchmarks hybrid-latency``, docs/hybrid.md).
    """
    labels = np.flatnonzero(scores > 0)
    values = scores[labels]
    if len(labels) > k:
        # Everything tied with the k-th best stays in, so the cut below is by label, never arbitrary.
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        labels, values = labels[keep], values[keep]
    order = np.lexsort((labels, -values))[:k]
    return labels[order].astype(np.int64), values[order].astype(np.float32)
