"""Fusing a dense and a lexical hit list into one ranking (``mode="hybrid"``).

``weighted`` (the default), as the DPR paper and pyserini's hybrid searcher fuse: each list's scores are
min-max normalised over that list (its best passage 1, its last 0), a passage missing from a list gets
that list's lowest value (0, pyserini's fill), and the fused score is ``(1 - w) * dense + w * lexical``.
``w`` is :data:`DEFAULT_WEIGHT` unless the caller gives one; it was chosen on held-out SQuAD questions
that the published evaluation excludes (``python -m benchmarks hybrid``, docs/hybrid.md).

``rrf``: reciprocal rank fusion, ``1 / (60 + rank)`` summed over the lists (rank from 1; Cormack et al.
2009's constant), parameter-free. A list with no hits (a stop-word-only question has no lexical hits)
adds nothing, so the fused ranking is the other list's: hybrid falls back to dense.

Ties are broken by the smaller label, so results are deterministic.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_WEIGHT", "FUSIONS", "RRF_K", "fuse"]

#: The lexical weight of ``weighted`` fusion, chosen on the tuning split of SQuAD dev (1,000 questions,
#: seed 23) with the packaged MiniLM as DPR pair: benchmarks/results/hybrid-x86-avx2/hybrid.json, "tuning"
#: (best Top-20 there, 98.5%, shared by 0.5, 0.6 and 0.65; 0.6 has the best mean over every k).
DEFAULT_WEIGHT = 0.6
FUSIONS = ("weighted", "rrf")
RRF_K = 60

Hits = tuple[np.ndarray, np.ndarray]


def _normalised(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return scores.astype(np.float64)
    low, high = float(scores.min()), float(scores.max())
    if high - low <= 0:
        return np.ones(len(scores), dtype=np.float64)
    return (scores.astype(np.float64) - low) / (high - low)


def _union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The sorted distinct labels of both lists (what ``np.union1d`` gives). Why not ``union1d``: numpy 2's
    ``unique`` hashes first and sorts after, which for two lists of 100 labels cost several times a sort
    (timed on this machine; docs/hybrid.md)."""
    labels = np.concatenate((first, second)).astype(np.int64)
    labels.sort()
    if len(labels) > 1:
        labels = labels[np.concatenate(([True], labels[1:] != labels[:-1]))]
    return labels


def fuse(dense: Hits, lexical: Hits, k: int, *, fusion: str = "weighted", weight: float = DEFAULT_WEIGHT) -> Hits:
    """The best ``k`` of the union of two hit lists (labels, scores; each best first) by ``fusion``.

    Returns labels (int64) and fused scores (float32), best first.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the lexical weight must be within 0..1, got {weight}")
    labels = _union(dense[0], lexical[0])
    fused = np.zeros(len(labels), dtype=np.float64)
    for (side_labels, side_scores), side_weight in ((dense, 1.0 - weight), (lexical, weight)):
        if len(side_labels) == 0:
            continue
        where = np.searchsorted(labels, side_labels)
        if fusion == "weighted":
            fused[where] += side_weight * _normalised(side_scores)
        else:
            fused[where] += 1.0 / (RRF_K + np.arange(1, len(side_labels) + 1))
    order = np.lexsort((labels, -fused))[:k]
    return labels[order], fused[order].astype(np.float32)
