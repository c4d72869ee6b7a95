"""Lexical and hybrid retrieval for the :class:`~fastdpr.search.retriever.Retriever` (issue #23).

``mode="dense"`` is the retriever's own path (question embedding, HNSW or exact search). ``"lexical"``
ranks by BM25 alone (the index's lexical side, :mod:`fastdpr.index.lexical_side`). ``"hybrid"`` takes
the best :data:`HYBRID_DEPTH` (or ``k``, when larger) passages of each and fuses the two lists
(:func:`fastdpr.lexical.fusion.fuse`: min-max normalised weighted sum by default, or RRF).

The lexical side is opened at the first lexical or hybrid search, not at load: dense-only users pay
nothing, and an index built without ``--lexical bm25`` fails then, in one line that names the option.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdpr.common.errors import FastDPRError
from fastdpr.index.lexical_side import LexicalSide, open_lexical_side
from fastdpr.index.load import Shard
from fastdpr.lexical.bm25 import check_question
from fastdpr.lexical.fusion import DEFAULT_WEIGHT, FUSIONS, fuse

__all__ = ["DENSE", "HYBRID_DEPTH", "MODES", "HybridSearch", "Ranking", "check_mode"]

#: How the retriever ranks: embeddings, BM25, or both fused.
MODES = ("dense", "lexical", "hybrid")
#: Candidates taken from each side before fusion (at least ``k``).
HYBRID_DEPTH = 100

#: Dense search of questions: (questions, depth) -> labels, scores ``[len(questions), depth]``.
DenseSearch = Callable[[Sequence[str], int], tuple[np.ndarray, np.ndarray]]
Ranked = list[tuple[np.ndarray, np.ndarray]]


def check_mode(mode: str, fusion: str = "weighted", weight: float | None = None) -> None:
    """Refuse an unknown mode or fusion, or a weight outside 0..1 (one line)."""
    if mode not in MODES:
        raise FastDPRError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if fusion not in FUSIONS:
        raise FastDPRError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise FastDPRError(f"the lexical weight must be within 0..1, got {weight}")


@dataclass(frozen=True)
class Ranking:
    """How a search ranks passages: ``mode``, and for ``hybrid`` the ``fusion`` and the lexical ``weight``
    (None: :data:`~fastdpr.lexical.fusion.DEFAULT_WEIGHT`). Checked when made (:func:`check_mode`): the
    CLI, the Python API and ``fastdpr serve`` take the same values with the same defaults."""

    mode: str = "dense"
    fusion: str = "weighted"
    weight: float | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode, self.fusion, self.weight)


#: The default ranking: embeddings only.
DENSE = Ranking()


class HybridSearch:
    """The lexical side of one loaded index (opened on first use, thread-safe) and the fusion."""

    def __init__(self, root: Path, shards: Sequence[Shard]) -> None:
        self._root = root
        self._shards = list(shards)
        self._lexical: LexicalSide | None = None
        self._lock = threading.Lock()

    @property
    def lexical(self) -> LexicalSide:
        """The index's lexical side (:class:`~fastdpr.common.errors.IndexLoadError` when it has none)."""
        with self._lock:
            if self._lexical is None:
                self._lexical = open_lexical_side(self._root, self._shards)
            return self._lexical

    def search(self, questions: Sequence[str], k: int, mode: str, dense: DenseSearch, *, fusion: str = "weighted",
               weight: float | None = None) -> Ranked:
        """Per question: labels and scores, best first, by ``mode`` ``lexical`` (BM25 scores; fewer than
        ``k``, or none, when fewer passages share a word with the question) or ``hybrid`` (fused scores)."""
        check_mode(mode, fusion, weight)
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        for question in questions:
            check_question(question)
        lexical = self.lexical.search(questions, k if mode == "lexical" else max(k, HYBRID_DEPTH))
        if mode == "lexical":
            return lexical
        if mode != "hybrid":
            raise FastDPRError(f"HybridSearch does not do {mode!r} search")
        labels, scores = dense(questions, max(k, HYBRID_DEPTH))
        w = DEFAULT_WEIGHT if weight is None else weight
        return [fuse((row_labels, row_scores), lexical_row, k, fusion=fusion, weight=w)
                for row_labels, row_scores, lexical_row in zip(labels, scores, lexical, strict=True)]
