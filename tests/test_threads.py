"""A Retriever shared by many threads returns what sequential calls return.

hnswlib keeps ``ef`` in the index rather than in the query, so mixed ``ef`` values from concurrent
threads are the dangerous case: the tests check (first) that the chosen ``ef`` values really change the
results on these indexes, so a search that ran with another thread's ``ef`` would be caught. The tiny
index here is built with a deliberately sparse graph (m=4, ef_construction=8, one thread: the same graph
every run), on which a small ``ef`` misses neighbours; on the session's default graph (m=32, built by
two threads, so not the same graph every run) ``ef=1`` sometimes found every question's top hit and the
check could not tell.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.squad import load_squad_questions
from fastdpr.search.retriever import Hit, Retriever

THREADS = 8
ROUNDS = 6
T = TypeVar("T")

Key = tuple[tuple[str, float], ...]


def key(hits: list[Hit]) -> Key:
    return tuple((h.id, h.score) for h in hits)


def run_together(tasks: list[Callable[[], T]]) -> list[T]:
    """Run every task on its own thread, all released at once by a barrier."""
    barrier = threading.Barrier(len(tasks))

    def start(task: Callable[[], T]) -> T:
        barrier.wait()
        return task()

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(start, task) for task in tasks]
        return [f.result(timeout=300) for f in futures]


@pytest.fixture(scope="module")
def ef_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> Path:
    """The pydoc corpus indexed by the tiny artifact with a sparse graph on which ``ef`` matters."""
    from fastdpr.index.build import IndexOptions, build_index

    out = tmp_path_factory.mktemp("idx") / "sparse-graph"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(
        question_precision="int8", progress=False, hnsw_m=4, ef_construction=8, threads=1))
    return out


def tiny_questions() -> list[str]:
    return [p.title for p in pydoc_topic_passages()[::23]][:24]


# (k, ef) per thread: several ef values, some below k (raised to k), and None (the index's ef).
PLANS: list[tuple[int, int | None]] = [(1, 1), (1, 300), (3, 8), (5, None), (10, 10), (10, 64), (20, 5), (50, 400)]


def check_concurrent_single_searches(retriever: Retriever, questions: list[str]) -> None:
    expected = {(q, k, ef): key(retriever.search(q, k, ef=ef)) for q in questions for k, ef in PLANS}
    # The ef values must matter here, or a search run at the wrong ef would go unnoticed.
    changed = sum(expected[(q, 1, 1)] != expected[(q, 1, 300)] for q in questions)
    assert changed >= 3, f"ef changes only {changed} results; the test could not catch an ef race"

    def worker(plan: tuple[int, int | None], seed: int) -> list[bool]:
        k, ef = plan
        order = questions * ROUNDS
        random.Random(seed).shuffle(order)
        return [key(retriever.search(q, k, ef=ef)) == expected[(q, k, ef)] for q in order]

    outcomes = run_together([lambda p=plan, s=i: worker(p, s) for i, plan in enumerate(PLANS)])
    assert len(outcomes) == THREADS
    mismatches = sum(not ok for outcome in outcomes for ok in outcome)
    assert mismatches == 0, f"{mismatches} of {sum(map(len, outcomes))} concurrent searches differ from sequential"


def check_concurrent_batches(retriever: Retriever, questions: list[str]) -> None:
    batches = [questions[i::4] for i in range(4)]
    plans = list(itertools.product(range(len(batches)), [(5, 5), (20, None)]))
    assert len(plans) == THREADS
    expected = {(b, k, ef): [key(h) for h in retriever.search_batch(batches[b], k=k, ef=ef)]
                for b, (k, ef) in plans}

    def worker(b: int, k: int, ef: int | None) -> bool:
        return all([key(h) for h in retriever.search_batch(batches[b], k=k, ef=ef)] == expected[(b, k, ef)]
                   for _ in range(ROUNDS))

    assert run_together([lambda b=b, k=k, ef=ef: worker(b, k, ef) for b, (k, ef) in plans]) == [True] * THREADS


def test_threads_searching_with_different_k_and_ef_match_sequential(ef_index: Path) -> None:
    with Retriever.load(ef_index) as retriever:
        check_concurrent_single_searches(retriever, tiny_questions())


def test_search_batch_from_threads_matches_sequential(ef_index: Path) -> None:
    with Retriever.load(ef_index) as retriever:
        check_concurrent_batches(retriever, tiny_questions())


def test_search_vectors_from_threads_with_mixed_ef_match_sequential(ef_index: Path) -> None:
    # Without question encoding in between, the threads spend nearly all their time inside hnswlib, so
    # this is where a search running at another thread's ef would show most often.
    questions = tiny_questions()
    with Retriever.load(ef_index) as retriever:
        vectors = retriever.encode_questions(questions)
        expected = {(i, k, ef): key(retriever.search_vectors(vectors[i:i + 1], k, ef=ef)[0])
                    for i in range(len(questions)) for k, ef in PLANS}

        def worker(k: int, ef: int | None) -> int:
            wrong = 0
            for _ in range(40):
                for i in range(len(questions)):
                    wrong += key(retriever.search_vectors(vectors[i:i + 1], k, ef=ef)[0]) != expected[(i, k, ef)]
            return wrong

        assert run_together([lambda k=k, ef=ef: worker(k, ef) for k, ef in PLANS]) == [0] * THREADS


def test_exact_search_from_threads_matches_sequential(ef_index: Path) -> None:
    questions = tiny_questions()[:12]
    with Retriever.load(ef_index, exact=True) as retriever:
        expected = {(q, k): key(retriever.search(q, k)) for q in questions for k in (1, 10, 100)}

        def worker(k: int) -> bool:
            return all(key(retriever.search(q, k)) == expected[(q, k)] for q in questions * 2)

        assert run_together([lambda k=k: worker(k) for k in (1, 10, 100) * 3][:THREADS]) == [True] * THREADS


def test_separate_retrievers_with_different_ef_in_threads(ef_index: Path) -> None:
    questions = tiny_questions()[:12]
    retrievers = {ef: Retriever.load(ef_index, ef=ef) for ef in (1, 400)}
    try:
        expected = {(ef, q): key(r.search(q, 1)) for ef, r in retrievers.items() for q in questions}
        assert any(expected[(1, q)] != expected[(400, q)] for q in questions)

        def worker(ef: int) -> bool:
            return all(key(retrievers[ef].search(q, 1)) == expected[(ef, q)] for q in questions * ROUNDS)

        assert run_together([lambda ef=ef: worker(ef) for ef in (1, 400) * 4]) == [True] * THREADS
    finally:
        for r in retrievers.values():
            r.close()


@pytest.mark.slow
def test_threads_on_the_squad_index(minilm_squad_index: Path, squad_path: Path) -> None:
    questions = [q.question for q in random.Random(1).sample(load_squad_questions(squad_path), 16)]
    with Retriever.load(minilm_squad_index) as retriever:
        check_concurrent_single_searches(retriever, questions)
        check_concurrent_batches(retriever, questions)
