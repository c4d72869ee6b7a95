"""Vector search: HNSW measured against exact search, the result contract, loading, and threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hnswlib
import numpy as np
import pytest

import fastdpr.index.ann as ann
from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.index.ann import (
    ExactSearcher,
    HnswSearcher,
    Searcher,
    build_hnsw,
    save_hnsw,
)
from fastdpr.index.defaults import DEFAULT_EF

N, DIM, CLUSTERS = 5000, 64, 40


def _clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    # Points scattered widely around a few centers, with norms that vary: inner product (not cosine)
    # then matters, and neighbours are not trivially the members of the query's own cluster.
    assignment = rng.integers(0, len(centers), size=n)
    points = centers[assignment] + rng.standard_normal((n, centers.shape[1])) * 0.9
    points *= rng.uniform(0.8, 1.2, size=(n, 1))
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    centers = rng.standard_normal((CLUSTERS, DIM)) / np.sqrt(DIM) * 3.0
    return _clustered(rng, N, centers), _clustered(rng, 200, centers)


@pytest.fixture(scope="module")
def index_path(data: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    vectors, _ = data
    path = tmp_path_factory.mktemp("ann") / "hnsw.bin"
    save_hnsw(build_hnsw(vectors, threads=1), path)
    return path


@pytest.fixture(scope="module")
def hnsw(index_path: Path) -> HnswSearcher:
    return HnswSearcher(index_path, dim=DIM, count=N)


@pytest.fixture(scope="module")
def exact(data: tuple[np.ndarray, np.ndarray]) -> ExactSearcher:
    return ExactSearcher(data[0])


def _recall(approx: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(a.tolist()) & set(t.tolist())) for a, t in zip(approx, truth, strict=True))
    return hits / truth.size


def test_both_searchers_satisfy_the_protocol(hnsw: HnswSearcher, exact: ExactSearcher) -> None:
    assert isinstance(hnsw, Searcher)
    assert isinstance(exact, Searcher)
    assert hnsw.count == exact.count == N


def test_hnsw_recall_at_10_against_exact(
    data: tuple[np.ndarray, np.ndarray], hnsw: HnswSearcher, exact: ExactSearcher
) -> None:
    _, queries = data
    truth, _ = exact.search(queries, 10)
    approx, _ = hnsw.search(queries, 10)
    assert approx.shape == truth.shape == (len(queries), 10)
    # Not trivially easy: a tiny ef does measurably worse on this data than the default.
    low, _ = hnsw.search(queries, 10, ef=10)
    assert _recall(approx, truth) >= 0.99 > _recall(low, truth)


@pytest.mark.parametrize("name", ["hnsw", "exact"])
def test_scores_are_dot_products_sorted_descending(
    data: tuple[np.ndarray, np.ndarray], name: str, request: pytest.FixtureRequest
) -> None:
    vectors, queries = data
    searcher = request.getfixturevalue(name)
    labels, scores = searcher.search(queries, 20)
    assert labels.dtype == np.int64 and scores.dtype == np.float32
    dots = np.einsum("qd,qkd->qk", queries.astype(np.float64), vectors[labels].astype(np.float64))
    np.testing.assert_allclose(scores, dots, atol=1e-4, rtol=0)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_matches_a_full_sort_and_blocking_changes_nothing(
    data: tuple[np.ndarray, np.ndarray], exact: ExactSearcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors, queries = data
    # The reference in float64: exact search reports correctly rounded dot products, which a float32
    # BLAS product misses by a few ulps (1.5e-5 at a score of 46 on this data).
    full = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(-full, axis=1, kind="stable")[:, :10]
    labels, scores = exact.search(queries, 10)
    np.testing.assert_array_equal(labels, order)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, order, axis=1).astype(np.float32))
    # Force many corpus blocks (plus a ragged last one) and expect the very same answer.
    monkeypatch.setattr(ann, "_EXACT_BLOCK_ELEMENTS", len(queries) * 333)
    blocked_labels, blocked_scores = exact.search(queries, 10)
    np.testing.assert_array_equal(blocked_labels, labels)
    np.testing.assert_allclose(blocked_scores, scores, atol=1e-5)


def test_save_load_search_equals_before_save_with_ef_set_again(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    vectors, queries = data
    index = build_hnsw(vectors[:2000], threads=1)
    index.set_ef(48)
    before_labels, before_distances = index.knn_query(queries, k=10)
    path = tmp_path / "hnsw.bin"
    save_hnsw(index, path)

    raw = hnswlib.Index(space="ip", dim=DIM)
    raw.load_index(str(path))
    assert raw.ef == 10  # the trap: ef is not saved, so the searcher must set it again

    searcher = HnswSearcher(path, dim=DIM, count=2000, ef=48)
    labels, scores = searcher.search(queries, 10)
    np.testing.assert_array_equal(labels, before_labels.astype(np.int64))
    np.testing.assert_allclose(scores, 1.0 - before_distances, atol=1e-6)


def test_k_above_count_is_clamped(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    vectors, queries = data
    small = vectors[:30]
    path = tmp_path / "small.bin"
    save_hnsw(build_hnsw(small, threads=1), path)
    for searcher in (HnswSearcher(path, dim=DIM, count=30), ExactSearcher(small)):
        labels, scores = searcher.search(queries[:5], 100)
        assert labels.shape == scores.shape == (5, 30)
        assert all(sorted(row.tolist()) == list(range(30)) for row in labels)


def test_ef_below_k_is_raised_to_k(data: tuple[np.ndarray, np.ndarray], hnsw: HnswSearcher) -> None:
    _, queries = data
    low = hnsw.search(queries, 50, ef=5)
    at_k = hnsw.search(queries, 50, ef=50)
    np.testing.assert_array_equal(low[0], at_k[0])
    np.testing.assert_array_equal(low[1], at_k[1])


def test_bad_queries_and_k_are_rejected(hnsw: HnswSearcher, exact: ExactSearcher) -> None:
    for searcher in (hnsw, exact):
        with pytest.raises(FastDPRError, match="shape"):
            searcher.search(np.zeros((2, DIM + 1), dtype=np.float32), 5)
        with pytest.raises(FastDPRError, match="k must be"):
            searcher.search(np.zeros((2, DIM), dtype=np.float32), 0)
        labels, scores = searcher.search(np.zeros((0, DIM), dtype=np.float32), 5)
        assert labels.shape == scores.shape == (0, 0)


def test_both_searchers_take_ef_and_refuse_it_below_1(
    data: tuple[np.ndarray, np.ndarray], hnsw: HnswSearcher, exact: ExactSearcher
) -> None:
    _, queries = data
    for searcher in (hnsw, exact):
        with pytest.raises(FastDPRError, match=r"^ef must be at least 1, got 0$"):
            searcher.search(queries, 5, ef=0)
    # Exact search takes ef only so that callers need not know which searcher they hold: it changes nothing.
    for got, want in zip(exact.search(queries, 10, ef=12), exact.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)


def test_concurrent_searches_with_different_ef_match_sequential(
    data: tuple[np.ndarray, np.ndarray], index_path: Path
) -> None:
    _, queries = data
    # A searcher of its own: other tests must not share (and so mask or cause) ef changes here.
    searcher = HnswSearcher(index_path, dim=DIM, count=N, threads=1)
    efs = [10, 12, 16, 24, 40, 64, 100, 200]
    expected = {ef: searcher.search(queries, 10, ef=ef) for ef in efs}
    start = threading.Barrier(len(efs))

    def run(ef: int) -> list[bool]:
        start.wait()
        outcomes = []
        for offset in range(0, len(queries), 20):
            labels, scores = searcher.search(queries[offset : offset + 20], 10, ef=ef)
            outcomes.append(
                np.array_equal(labels, expected[ef][0][offset : offset + 20])
                and np.array_equal(scores, expected[ef][1][offset : offset + 20])
            )
        return outcomes

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=len(efs)) as pool:
            results = list(pool.map(run, efs))
        assert all(all(r) for r in results)
    assert searcher.ef == DEFAULT_EF  # per-call ef never changes the searcher's default


def test_build_reports_progress_in_chunks(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ann, "BUILD_CHUNK", 400)
    calls: list[tuple[int, int]] = []
    index = build_hnsw(data[0][:1000], m=8, ef_construction=50, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(400, 1000), (800, 1000), (1000, 1000)]
    assert index.get_current_count() == 1000


def test_build_rejects_non_finite_vectors(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors = data[0][:100].copy()
    vectors[42, 3] = np.nan
    with pytest.raises(FastDPRError, match="vector 42"):
        build_hnsw(vectors, threads=1)


def test_hnsw_load_errors(index_path: Path, tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match="missing"):
        HnswSearcher(tmp_path / "nope.bin", dim=DIM, count=N)
    with pytest.raises(IndexLoadError, match=f"holds {N} vectors, expected {N + 1}"):
        HnswSearcher(index_path, dim=DIM, count=N + 1)
    with pytest.raises(IndexLoadError, match=f"holds {DIM}-d vectors, expected 32-d"):
        HnswSearcher(index_path, dim=32, count=N)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(index_path.read_bytes()[: index_path.stat().st_size // 2])
    with pytest.raises(IndexLoadError, match="truncated"):
        HnswSearcher(truncated, dim=DIM, count=N)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(IndexLoadError):
        HnswSearcher(garbage, dim=DIM, count=N)


def test_exact_load_memory_maps_and_refuses_pickles(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    vectors = data[0][:100]
    path = tmp_path / "vectors.npy"
    np.save(path, vectors)
    searcher = ExactSearcher.load(path, dim=DIM, count=100)
    assert isinstance(searcher._vectors, np.memmap)
    np.testing.assert_array_equal(searcher.search(vectors[:3], 1)[0][:, 0], [0, 1, 2])

    with pytest.raises(IndexLoadError, match=r"expected float32 \[101, 64\]"):
        ExactSearcher.load(path, dim=DIM, count=101)
    with pytest.raises(IndexLoadError, match="missing"):
        ExactSearcher.load(tmp_path / "nope.npy", dim=DIM, count=100)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IndexLoadError, match=r"corrupt or not a \.npy"):
        ExactSearcher.load(pickled, dim=DIM, count=1)
