"""Issue #23, query latency: the lexical search and the fusion were made faster (own question tokenizer,
bm25s's score columns read without a score for every passage, no ``np.union1d``); they must give exactly
what the library's own path gave before: the same tokens, the same labels and the same float32 scores,
bit for bit. The reference here is the code that shipped before, written out (bm25s's ``tokenize`` and
``get_scores``, a full sort, ``np.union1d``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from shared_data import shared_data_path

from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.corpus.squad import load_squad
from fastdpr.lexical.bm25 import (
    BM25Index,
    BM25Settings,
    QuestionTokenizer,
    _stemmer,
    best_of,
    best_scores,
    bm25s_tokenize,
    build_bm25,
)
from fastdpr.lexical.fusion import RRF_K, _union

ODD_QUESTIONS = ["Москва столица России?", "Die Straße führt über die Brücke", "Η Αθήνα είναι", "東京は日本の首都です",
                 "the of and", "a I x", "THE CITY'S city, city... again: 1600 1600", "naïve café résumé",
                 "don't won't it's", "e-mail x-ray 3D C++ R&D", "   padded   question   "]


@pytest.fixture(scope="module")
def squad() -> tuple[list[Passage], list[str]]:
    passages, questions = load_squad(shared_data_path("squad", "dev-v1.1.json"))
    return passages, [question.question for question in questions]


def _text(passage: Passage) -> str:
    return f"{passage.title}\n{passage.text}"


@pytest.fixture(scope="module")
def squad_bm25(tmp_path_factory: pytest.TempPathFactory, squad: tuple[list[Passage], list[str]]) -> BM25Index:
    target = tmp_path_factory.mktemp("bm25-squad") / "lexical"
    build_bm25([_text(p) for p in squad[0]], target)
    return BM25Index(target, BM25Settings(), len(squad[0]))


def _reference_tokens(questions: Sequence[str]) -> list[list[str]]:
    settings = BM25Settings()
    tokens: list[list[str]] = bm25s_tokenize(list(questions), settings, _stemmer(settings.stemmer), ids=False)
    return tokens


def _reference_best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.flatnonzero(scores > 0)
    order = np.lexsort((labels, -scores[labels]))[:k]
    return labels[order].astype(np.int64), scores[labels][order].astype(np.float32)


def _reference_lexical(index: BM25Index, questions: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    model = index._model
    empty = (np.empty(0, np.int64), np.empty(0, np.float32))
    return [_reference_best(model.get_scores(row), k) if row else empty for row in _reference_tokens(questions)]


def _reference_fuse(dense: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray], k: int,
                    fusion: str, weight: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.union1d(dense[0], lexical[0]).astype(np.int64)
    fused = np.zeros(len(labels), dtype=np.float64)
    for (side_labels, side_scores), side_weight in ((dense, 1.0 - weight), (lexical, weight)):
        if len(side_labels) == 0:
            continue
        where = np.searchsorted(labels, side_labels)
        if fusion == "weighted":
            low, high = float(side_scores.min()), float(side_scores.max())
            norm = (np.ones(len(side_scores)) if high - low <= 0
                    else (side_scores.astype(np.float64) - low) / (high - low))
            fused[where] += side_weight * norm
        else:
            fused[where] += 1.0 / (RRF_K + np.arange(1, len(side_labels) + 1))
    order = np.lexsort((labels, -fused))[:k]
    return labels[order], fused[order].astype(np.float32)


def _same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> bool:
    return (got[0].dtype == np.int64 and got[1].dtype == np.float32 and np.array_equal(got[0], expected[0])
            and np.array_equal(got[1].view(np.uint32), expected[1].astype(np.float32).view(np.uint32)))


def test_question_tokens_are_bm25s_tokenize_on_every_squad_question(squad: tuple[list[Passage], list[str]]) -> None:
    settings = BM25Settings()
    tokenizer = QuestionTokenizer(settings, _stemmer(settings.stemmer))
    questions = squad[1] + ODD_QUESTIONS
    assert [tokenizer(q) for q in questions] == _reference_tokens(questions)
    assert tokenizer("the of and") == [] and tokenizer("Cities") == ["citi"]


def test_lexical_hits_are_bm25s_scores_bit_for_bit(squad_bm25: BM25Index,
                                                   squad: tuple[list[Passage], list[str]]) -> None:
    questions = random.Random(23).sample(squad[1], 1500) + ODD_QUESTIONS + [
        "city", "city city", "Denver Broncos Super Bowl Denver", "xyzzyunknownword", "xyzzyunknownword city"]
    for k in (1, 20, 100, 5000):
        got = squad_bm25.search(questions, k)
        expected = _reference_lexical(squad_bm25, questions, k)
        assert all(_same(g, e) for g, e in zip(got, expected, strict=True)), k
    assert sum(len(labels) for labels, _ in squad_bm25.search(questions, 100)) > 100 * 1000  # not all empty


def test_every_passage_of_a_question_is_scored_as_bm25s_scores_it(squad_bm25: BM25Index) -> None:
    columns = squad_bm25._columns
    assert columns is not None
    model = squad_bm25._model
    for question in ("What year did the Denver Broncos win the Super Bowl?", "city city", "Warsaw"):
        ids = model.get_tokens_ids(squad_bm25.tokens([question])[0])
        labels, values = columns.candidates(ids, None)
        everything = model.get_scores_from_ids(ids)
        assert np.array_equal(labels, np.flatnonzero(everything > 0))
        assert np.array_equal(values.view(np.uint32), everything[labels].view(np.uint32))


def test_bm25_variants_that_score_every_passage_keep_bm25s_path(tmp_path: Path,
                                                                squad: tuple[list[Passage], list[str]]) -> None:
    settings = BM25Settings(method="bm25l")
    build_bm25([_text(p) for p in squad[0][:300]], tmp_path / "lexical", settings)
    index = BM25Index(tmp_path / "lexical", settings, 300)
    assert index._columns is None  # BM25L scores passages without the question's words too
    questions = squad[1][:50]
    expected = [best_scores(index._model.get_scores(row), 10) for row in index.tokens(questions)]
    assert all(_same(g, e) for g, e in zip(index.search(questions, 10), expected, strict=True))


def test_the_selection_keeps_ties_at_the_cut_by_label() -> None:
    labels = np.asarray([2, 4, 5, 9, 11, 12], np.int64)
    values = np.asarray([1.0, 2.0, 0.0, 2.0, 1.0, 1.0], np.float32)
    for k, expected in [(1, [4]), (2, [4, 9]), (3, [4, 9, 2]), (5, [4, 9, 2, 11, 12]), (9, [4, 9, 2, 11, 12])]:
        assert best_of(labels, values, k)[0].tolist() == expected


def test_the_union_is_union1d() -> None:
    rng = np.random.default_rng(23)
    for _ in range(300):
        first = rng.choice(500, int(rng.integers(0, 120)), replace=False)
        second = rng.choice(500, int(rng.integers(0, 120)), replace=False)
        assert np.array_equal(_union(first, second), np.union1d(first, second).astype(np.int64))


@pytest.fixture(scope="module")
def squad_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path,
                squad: tuple[list[Passage], list[str]]) -> Path:
    root = tmp_path_factory.mktemp("hybrid-squad")
    write_corpus(root / "passages.jsonl", squad[0][:600], "jsonl")
    run_cli(["index", tiny_artifact, root / "passages.jsonl", "--out", root / "index", "--lexical", "bm25",
             "--threads", 1])
    return root / "index"


@pytest.mark.parametrize(("fusion", "weight"), [("weighted", None), ("weighted", 0.3), ("rrf", None)])
def test_retriever_hybrid_and_lexical_are_the_reference(squad_index: Path, squad: tuple[list[Passage], list[str]],
                                                        fusion: str, weight: float | None) -> None:
    from fastdpr.lexical.fusion import DEFAULT_WEIGHT
    from fastdpr.search.hybrid import HYBRID_DEPTH
    from fastdpr.search.retriever import Retriever

    questions = [*random.Random(5).sample(squad[1], 200), "the of and", "Москва столица"]
    k = 20
    with Retriever.load(squad_index, threads=1) as retriever:
        index = retriever.hybrid.lexical.parts[0][1]
        lexical = _reference_lexical(index, questions, HYBRID_DEPTH)
        labels, scores = retriever.searcher.search(retriever.encode_questions(questions), HYBRID_DEPTH)
        expected = [_reference_fuse((row_labels, row_scores), row_lexical, k, fusion,
                                    DEFAULT_WEIGHT if weight is None else weight)
                    for row_labels, row_scores, row_lexical in zip(labels, scores, lexical, strict=True)]
        hybrid = retriever.search_batch(questions, k, mode="hybrid", fusion=fusion, weight=weight)
        lexical_hits = retriever.search_batch(questions, k, mode="lexical")
        one_by_one = [retriever.search(question, k, mode="hybrid", fusion=fusion, weight=weight)
                      for question in questions[:20]]
    ids = [str(p.id) for p in squad[0][:600]]
    assert [[h.id for h in row] for row in hybrid] == [[ids[label] for label in row[0]] for row in expected]
    assert [[np.float32(h.score) for h in row] for row in hybrid] == [list(row[1]) for row in expected]
    assert one_by_one == hybrid[:20]
    reference_lexical = _reference_lexical(index, questions, k)
    assert [[(h.id, np.float32(h.score)) for h in row] for row in lexical_hits] == \
        [[(ids[label], score) for label, score in zip(*row, strict=True)] for row in reference_lexical]


def test_ties_at_the_kth_best_are_cut_by_label(tmp_path: Path) -> None:
    # 40 identical passages tie; the candidates kept for the best k must still hold every tied one, so
    # the cut is by label exactly as over all passages.
    texts = [f"filler{i} words" for i in range(30)] + ["cat dog"] * 40 + ["cat"] * 20 + ["dog bird"] * 10
    build_bm25(texts, tmp_path / "lexical")
    index = BM25Index(tmp_path / "lexical", BM25Settings(), len(texts))
    for k in (1, 3, 39, 40, 41, 65, 200):
        for question in ("cat dog", "dog cat cat", "bird dog", "cat"):
            got = index.search([question], k)[0]
            assert _same(got, _reference_lexical(index, [question], k)[0]), (question, k)
    assert index.search(["cat dog"], 3)[0][0].tolist() == [30, 31, 32]
