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
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError, MissingDependencyError

__all__ = ["LEXICAL_DIR", "LEXICAL_METHODS", "STEMMER_PREFIX", "BM25Build", "BM25Index", "BM25Settings",
           "QuestionTokenizer", "ScoreColumns", "best_of", "best_scores", "build_bm25", "check_question"]

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


def bm25s_tokenize(texts: list[str], settings: BM25Settings, stemmer: Any, ids: bool) -> Any:
    """``bm25s.tokenize`` with the index's settings: how passages are tokenized at build time (questions
    take :class:`QuestionTokenizer`, the same steps without bm25s's per-call setup)."""
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
    tokens = bm25s_tokenize(corpus, settings, _stemmer(settings.stemmer), ids=True)
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
    """A saved BM25 index, opened read-only (memory-mapped). Searching is thread-safe: it only reads the
    score matrix."""

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
        self._columns = ScoreColumns.of(self._model)
        self._question_tokens = QuestionTokenizer(settings, self._stemmer)

    def tokens(self, questions: Sequence[str]) -> list[list[str]]:
        """Each question's tokens as the passages were tokenized (stop words removed, stemmed)."""
        for question in questions:
            check_question(question)
        return [self._question_tokens(question) for question in questions]

    def search(self, questions: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question: labels (int64) and BM25 scores (float32) of at most ``k`` passages with a score
        above zero, best first (ties by label). No hits (empty arrays) for a question with no indexed word."""
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        tokens = self.tokens(questions)
        return [self._best(row, k) for row in tokens]

    def _best(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self._model.get_tokens_ids(tokens)  # bm25s's vocabulary: unknown words are left out
        if self._columns is None:  # a variant whose every passage scores (see ScoreColumns.of)
            return best_scores(self._model.get_scores(tokens), k) if tokens else _no_hits()
        return best_of(*self._columns.candidates(ids, k), k)


def _no_hits() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.float32)


class QuestionTokenizer:
    """One question's tokens exactly as ``bm25s.tokenize`` gives them (lower-case, bm25s's token pattern,
    its stop words left out, stemmed), without its per-call costs.

    Why not ``bm25s.tokenize`` itself: for one question it builds three (disabled) progress bars, a set of
    the stop words and a vocabulary, which cost far more than splitting and stemming the question (timed
    on this machine; the whole search: ``python -m benchmarks hybrid-latency``). The steps are bm25s's
    own, in its order; that the tokens are the same is tested on every SQuAD dev question and on
    non-English text (tests/test_lexical_speed.py).
    """

    def __init__(self, settings: BM25Settings, stemmer: Any) -> None:
        from bm25s.tokenization import _infer_stopwords  # bm25s's own list for the recorded language

        self._lower = settings.lower
        self._split = re.compile(settings.token_pattern).findall
        self._stopwords = frozenset(_infer_stopwords(settings.stopwords) if settings.stopwords else ())
        self._stem = stemmer.stemWords if stemmer is not None else None

    def __call__(self, question: str) -> list[str]:
        """The question's tokens (an empty list when every word is a stop word or too short)."""
        words = [word for word in self._split(question.lower() if self._lower else question)
                 if word not in self._stopwords]
        return list(self._stem(words)) if self._stem is not None and words else words


@dataclass(frozen=True)
class ScoreColumns:
    """bm25s's precomputed score matrix (one column per term: the passages holding it, ascending, and
    their BM25 contribution), as plain arrays over the memory map.

    A question's score of a passage is the sum of its terms' columns, added in the question's term order
    in float32, as bm25s's ``get_scores`` adds them (``np.add.at`` into a zero vector): the sums here are
    bitwise bm25s's (tested). What differs is the work around it: only the question's columns are read
    and only the passages in them are selected from, without a score for every passage of the index.
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    num_docs: int
    dtype: np.dtype[Any]

    @classmethod
    def of(cls, model: Any) -> ScoreColumns | None:
        """The columns of a loaded bm25s model; None for variants that give every passage a score (BM25L,
        BM25+: a passage without the question's words still scores above zero), which keep bm25s's path."""
        if getattr(model, "nonoccurrence_array", None) is not None:
            return None
        scores = model.scores
        # np.memmap slicing runs Python code per slice (__getitem__, __array_finalize__); plain views of
        # the same mapping do not.
        return cls(data=np.asarray(scores["data"]).view(np.ndarray),
                   indices=np.asarray(scores["indices"]).view(np.ndarray),
                   indptr=np.asarray(scores["indptr"]).view(np.ndarray),
                   num_docs=int(scores["num_docs"]), dtype=np.dtype(model.dtype))

    def candidates(self, ids: Sequence[int], k: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Labels (ascending) and scores of passages scoring above zero with the term ``ids`` (a term may
        repeat: it counts as often as it occurs, as in bm25s): all of them (``k`` None), or a subset that
        holds every passage of the best ``k`` and all tied with the k-th, which :func:`best_of` then
        selects from exactly as from all of them."""
        if not ids:
            return np.empty(0, np.int64), np.empty(0, self.dtype)
        spans = [(int(self.indptr[t]), int(self.indptr[t + 1])) for t in ids]
        if len(spans) == 1:
            start, end = spans[0]
            return self.indices[start:end].astype(np.int64), self.data[start:end] + self.dtype.type(0)
        total = np.zeros(self.num_docs, dtype=self.dtype)
        for start, end in spans:
            # ufunc.at on plain arrays: on np.memmap slices (what bm25s passes) numpy takes its slow generic
            # path, several times slower (timed on this machine; docs/hybrid.md).
            np.add.at(total, self.indices[start:end], self.data[start:end])
        # Only passages above zero are ever selected (best_of), and a boolean mask is far faster to take
        # nonzero() of than the float vector itself.
        floor = self.dtype.type(0)
        start, end = max(spans, key=lambda span: span[1] - span[0])
        if k is not None and end - start > k:
            # The passages of one term are distinct, so the k-th best of their totals is at most the k-th
            # best of all: every passage of the best k scores at least that much. With a common term in
            # the question this keeps a few hundred passages of tens of thousands (k=100 at 200k synthetic
            # passages: median 197 of 65,124), and nonzero() of a mask that sparse is quick.
            ones = total[self.indices[start:end]]
            floor = max(floor, np.partition(ones, len(ones) - k)[len(ones) - k])
            labels = np.flatnonzero(total >= floor) if floor > 0 else np.flatnonzero(total > 0)
        else:
            labels = np.flatnonzero(total > 0)
        return labels, total[labels]


def best_of(labels: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of passages ``labels`` scoring ``values``: labels (int64) and scores (float32) of
    those scoring above zero, best first, ties by the smaller label. Everything tied with the k-th best
    stays in until the final sort, so the cut is by label, never arbitrary."""
    keep = values > 0
    if not keep.all():
        labels, values = labels[keep], values[keep]
    if len(labels) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        labels, values = labels[keep], values[keep]
    order = np.lexsort((labels, -values))[:k]
    return labels[order].astype(np.int64), values[order].astype(np.float32)


def best_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` passages of a question's BM25 score vector (one score per passage, from bm25s's
    ``get_scores``): labels (int64) and scores (float32) of passages scoring above zero, best first, ties
    by the smaller label (:func:`best_of` over the passages scoring above zero).

    Why not bm25s's ``retrieve``: for one question it runs a selection over every passage (an
    ``argpartition`` of the whole vector, most of it zeros) inside a progress bar and, with
    ``n_threads >= 1``, a thread pool made for that one call (measured at 200k passages:
    ``python -m benchmarks hybrid-latency``, docs/hybrid.md).
    """
    labels = np.flatnonzero(scores > 0)
    return best_of(labels, scores[labels], k)
