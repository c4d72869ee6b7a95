"""The shorter paths a single question takes (issue #21), each giving exactly what the general path gives:
a lone input through tokenization and the encoder (same encoding, model inputs and vector, bit for bit),
and an unsharded index's hits without the shard merge (same labels, same order, ties included)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastdpr.index.load import ShardedSearcher, merge_top_k
from fastdpr.model.artifact import Artifact
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import SpecTokenizer

QUESTIONS = ["who wrote the iliad", "what does the yield statement do?", "x", "a" * 600]
PASSAGES = [("Iliad", "An epic poem attributed to Homer."), ("", "A passage without a title."),
            ("Long", "word " * 400)]


def _tokenizer(artifact: Artifact, side: Side, token_types: str) -> SpecTokenizer:
    spec = replace(artifact.spec, token_types=token_types)  # type: ignore[arg-type]
    return SpecTokenizer(artifact.tokenizer_path(side), spec, side)


@pytest.mark.parametrize("token_types", ["zeros", "pair"])
@pytest.mark.parametrize("side", ["question", "context"])
def test_one_input_has_the_batch_paths_encoding_and_feeds(tiny_artifact: Path, side: Side, token_types: str) -> None:
    tokenizer = _tokenizer(Artifact.load(tiny_artifact), side, token_types)
    inputs: list[object] = list(QUESTIONS) if side == "question" else list(PASSAGES)
    batch = tokenizer.encode(inputs)  # type: ignore[arg-type]
    for item, in_batch in zip(inputs, batch, strict=True):
        (alone,) = tokenizer.encode([item])  # type: ignore[list-item]
        assert alone.ids == in_batch.ids and alone.type_ids == in_batch.type_ids
        single = tokenizer.feeds([alone])
        # The batch path for one row: a batch of two padded to the longer, cut back to this row.
        padded = tokenizer.feeds([alone, tokenizer.encode([inputs[0]])[0]])  # type: ignore[list-item]
        width = len(alone.ids)
        for name, array in single.items():
            assert array.dtype == np.int64 and array.shape == (1, width)
            assert np.array_equal(array[0], padded[name][0, :width]), name


def test_a_lone_question_is_the_batch_paths_vector(tiny_artifact: Path) -> None:
    encoder = Artifact.load(tiny_artifact).encoder("question", "int8", threads=1)
    batched = encoder.encode_questions(QUESTIONS)
    alone = np.concatenate([encoder.encode_questions([q]) for q in QUESTIONS])
    assert alone.dtype == np.float32 and alone.shape == batched.shape
    assert np.array_equal(alone, batched)


class _FixedSearcher:
    """A searcher that returns the hits it was given (best first, as every searcher does)."""

    def __init__(self, labels: list[list[int]], scores: list[list[float]]) -> None:
        self.labels = np.array(labels, dtype=np.int64)
        self.scores = np.array(scores, dtype=np.float32)
        self.count = 10

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.labels[:, :k], self.scores[:, :k]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("scores", [[[0.9, 0.5, 0.4], [0.8, 0.7, 0.1]],  # no ties: returned as they come
                                    [[0.9, 0.5, 0.5], [0.8, 0.8, 0.8]]])  # ties: ordered by label, as merged
def test_one_shard_gives_the_merged_order(scores: list[list[float]]) -> None:
    labels = [[4, 9, 2], [7, 3, 5]]
    searcher = ShardedSearcher([(0, _FixedSearcher(labels, scores))], ef=10)
    got_labels, got_scores = searcher.search(np.zeros((2, 4), dtype=np.float32), 3)
    want_labels, want_scores = merge_top_k([np.array(labels)], [np.array(scores, dtype=np.float32)], 3)
    assert np.array_equal(got_labels, want_labels) and np.array_equal(got_scores, want_scores)
    assert got_labels.dtype == np.int64 and got_scores.dtype == np.float32


def test_a_retriever_with_passages_in_memory_gives_the_same_hits(tiny_index: Path) -> None:
    from fastdpr.search.retriever import Retriever

    with Retriever.load(tiny_index, threads=1) as on_disk, \
            Retriever.load(tiny_index, threads=1, passages_in_memory=True) as in_memory:
        for question in QUESTIONS:
            assert in_memory.search(question, k=20) == on_disk.search(question, k=20)
