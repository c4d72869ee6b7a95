"""``python -m benchmarks.vectors_library N``: the library check behind ``--vectors`` (issue #22), run once
before choosing: faiss-cpu (IVF-SQ8, IVF-SQfp16, IVF-PQ, HNSW-SQ8) and usearch (f16, i8; HNSW opened with
``view()``, a memory map) against hnswlib fp32, on ``N`` SYNTHETIC 768-d vectors shaped like BERT-base
CLS embeddings (:func:`benchmarks.scale_vectors.synthetic_vectors`: unnormalized, a few large dimensions).

Per index: build seconds, file bytes per vector, load time and the RSS it adds (faiss IVF opened with
``IO_FLAG_MMAP_IFC``), search ms per question at k=400 (one question at a time), recall@100 of the
candidates and after re-ranking them by exact dot products, and the ratio of the library's top score to
the true dot product (1.0: the library keeps DPR's unnormalized inner product).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks.scale_vectors import synthetic_vectors

DIM, QUESTIONS, K, DEPTH = 768, 200, 100, 400


def rss() -> int:
    """This process's resident set, bytes."""
    return int(open("/proc/self/statm").read().split()[1]) * 4096


class Check:
    """The corpus, questions and exact top-100 every index is measured against."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.corpus = synthetic_vectors(count, DIM, seed=1)
        self.questions = synthetic_vectors(QUESTIONS, DIM, seed=2)
        self.exact = np.argsort(-(self.questions @ self.corpus.T), axis=1)[:, :K]

    def recall(self, labels: np.ndarray) -> float:
        return float(np.mean([len(set(a[:K]) & set(b)) / K for a, b in zip(labels, self.exact, strict=True)]))

    def reranked(self, labels: np.ndarray) -> np.ndarray:
        rows = []
        for question, found in zip(self.questions, labels, strict=True):
            found = found[found >= 0]
            rows.append(found[np.argsort(-(self.corpus[found] @ question))[:K]])
        return np.array(rows)

    def report(self, name: str, built: float, path: str, load: float, added: int, search: float,
               labels: np.ndarray, top_scores: np.ndarray) -> None:
        true = np.einsum("qd,qd->q", self.questions, self.corpus[labels[:, 0]])
        print(f"{name:22s} build {built:6.1f} s  file {os.path.getsize(path) / self.count:7.1f} B/vector  "
              f"load {load * 1000:6.1f} ms  RSS +{added / self.count:7.1f} B/vector  search {search:5.2f} ms  "
              f"recall@100 candidates {self.recall(labels):.3f} re-ranked {self.recall(self.reranked(labels)):.3f}  "
              f"score/dot {np.median(top_scores / true):.3f}")


def faiss_index(check: Check, name: str, index: Any, nprobe: int | None, workdir: str) -> None:
    import faiss

    started = time.perf_counter()
    if not index.is_trained:
        index.train(check.corpus)
    index.add(check.corpus)
    built = time.perf_counter() - started
    path = f"{workdir}/{name}.faiss"
    faiss.write_index(index, path)
    before, started = rss(), time.perf_counter()
    loaded = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if nprobe else 0)
    load, added = time.perf_counter() - started, rss() - before
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe else None  # type: ignore[call-arg]  # stub
    started = time.perf_counter()
    for question in check.questions:
        loaded.search(question[None], DEPTH, params=params)
    search = (time.perf_counter() - started) / QUESTIONS * 1000
    scores, labels = loaded.search(check.questions, DEPTH, params=params)
    check.report(name, built, path, load, added, search, labels, scores[:, 0])


def usearch_index(check: Check, dtype: str, workdir: str) -> None:
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=DEPTH)
    index.add(np.arange(check.count), check.corpus, threads=2)
    built = time.perf_counter() - started
    path = f"{workdir}/usearch-{dtype}.usearch"
    index.save(path)
    before, started = rss(), time.perf_counter()
    viewed = Index.restore(path, view=True)
    assert viewed is not None
    load, added = time.perf_counter() - started, rss() - before
    started = time.perf_counter()
    for question in check.questions:
        viewed.search(question, DEPTH)
    search = (time.perf_counter() - started) / QUESTIONS * 1000
    matches = viewed.search(check.questions, DEPTH)
    # usearch's ip distance is 1 - dot
    check.report(f"usearch-{dtype}-M16", built, path, load, added, search, matches.keys.astype(np.int64),
                 1 - matches.distances[:, 0])


def main(count: int, workdir: str) -> None:
    import faiss
    import hnswlib

    os.makedirs(workdir, exist_ok=True)
    faiss.omp_set_num_threads(2)
    check = Check(count)
    ip = faiss.METRIC_INNER_PRODUCT
    nlist = 1 << int(np.log2(4 * np.sqrt(count)))
    for nprobe in (16, 64):
        faiss_index(check, f"IVF{nlist}-SQ8-np{nprobe}", faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(DIM), DIM, nlist, faiss.ScalarQuantizer.QT_8bit, ip), nprobe, workdir)
        faiss_index(check, f"IVF{nlist}-PQ96-np{nprobe}",
                    faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, nlist, 96, 8, ip), nprobe, workdir)
    faiss_index(check, f"IVF{nlist}-SQfp16-np64", faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(DIM), DIM, nlist, faiss.ScalarQuantizer.QT_fp16, ip), 64, workdir)
    hnsw_sq = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, 32, ip)  # type: ignore[arg-type]  # stub
    hnsw_sq.hnsw.efSearch = DEPTH
    faiss_index(check, "HNSW32-SQ8", hnsw_sq, None, workdir)
    for dtype in ("f16", "i8"):
        usearch_index(check, dtype, workdir)
    started = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.init_index(count, ef_construction=200, M=32)
    graph.add_items(check.corpus, num_threads=2)
    built = time.perf_counter() - started
    graph.set_ef(DEPTH)
    started = time.perf_counter()
    for question in check.questions:
        graph.knn_query(question[None], k=K)
    search = (time.perf_counter() - started) / QUESTIONS * 1000
    labels, _ = graph.knn_query(check.questions, k=K)
    print(f"{'hnswlib-fp32-M32':22s} build {built:6.1f} s  search {search:5.2f} ms (k=100, ef=400)  "
          f"recall@100 {check.recall(labels):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "/tmp/fastdpr-vectors-library")
