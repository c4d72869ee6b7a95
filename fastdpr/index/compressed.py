"""Compressed passage vectors (``fastdpr index --vectors fp16|int8|pq``, issue #22), served from memory maps.

An fp32 index searches an hnswlib graph that is read whole into memory (~3.3 KB per 768-d passage).
A compressed index replaces the graph with a faiss inverted-file index (IVF) whose lists hold
compressed codes: fp16 (2 bytes a dimension), int8 (faiss's per-dimension 8-bit scalar quantizer: 1
byte a dimension, trained min/max per dimension, so unnormalized DPR vectors keep their scale) or
product quantization (``pq_m`` bytes a vector). The file is opened with ``IO_FLAG_MMAP_IFC``: the lists
stay in the page cache, so a process starts in constant time and needs no more memory than the pages
its searches touch.

Search asks the IVF index for ``rerank`` candidates (the inner product over the codes, with faiss's
``METRIC_INNER_PRODUCT``: DPR's unnormalized dot product), then scores every candidate exactly from the
float32 ``vectors.npy`` (which every index already keeps, for exact search) and returns the best
``k``. The candidates' rows are read with positional reads (:mod:`fastdpr.index.rows`), not through the
memory map, so the process's RSS does not grow towards the whole of ``vectors.npy`` as questions come.
Returned scores are therefore the exact dot products an fp32 index returns (correctly rounded as
:class:`~fastdpr.index.ann.ExactSearcher` computes them), so shards still merge by raw score. Why IVF
and not faiss's HNSW over codes or usearch: ``docs/scale.md#compressed-vectors`` has the measurements.

faiss is an optional dependency (``pip install 'fastdpr[compressed]'``), imported only here, when a
compressed index is built or searched.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import CorpusError, IndexLoadError, MissingDependencyError
from fastdpr.index.ann import as_queries, check_search, correctly_rounded_scores, empty_result, usable_cores
from fastdpr.index.rows import PositionalRows
from fastdpr.index.vector_settings import PQ_NBITS, CompressedFiles, VectorSettings, lists_for

#: Vectors sampled (evenly spaced) to train the quantizers: bounds training time at any corpus size.
TRAIN_SAMPLE = 100_000
_ADD_CHUNK = 20_000
_INSTALL = "pip install 'fastdpr[compressed]'"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError(f"compressed vectors (--vectors fp16/int8/pq) need faiss: {_INSTALL}") from exc
    return faiss


def build_compressed(vectors: np.ndarray, target: Path, settings: VectorSettings, *,
                     codebook: Path | None = None, threads: int | None = None) -> CompressedFiles:
    """Write the faiss index of ``vectors`` (``[n, dim]`` float32, a memory map) to ``target``.

    ``codebook``: another compressed index whose trained quantizers are reused, emptied (every shard of
    a sharded build after the first uses the first shard's, so the shards share one codebook and a last
    shard of a few passages needs no training); None: trained here on up to :data:`TRAIN_SAMPLE` vectors.
    Raises :class:`~fastdpr.common.errors.CorpusError` when there are too few vectors to train a codebook.
    """
    faiss = _faiss()
    started = time.perf_counter()
    count, dim = vectors.shape
    settings.check(dim)
    faiss.omp_set_num_threads(threads if threads is not None else usable_cores())
    if codebook is not None:
        index = faiss.read_index(str(codebook))
        index.reset()  # keep the trained quantizers, drop the first shard's codes
        trained_on = f"the codebook of {codebook.parent.name}"
    else:
        nlist = lists_for(count, settings.nlist)
        need = 2 ** PQ_NBITS if settings.kind == "pq" else nlist
        if count < need:
            raise CorpusError(f"too few passages ({count}) to train a {settings.kind} codebook: need at least "
                              f"{need}" + (" (256 centroids per sub-quantizer); use --vectors int8 or fp16"
                                           if settings.kind == "pq" else ""))
        index = faiss.index_factory(dim, settings.factory(dim, nlist), faiss.METRIC_INNER_PRODUCT)
        rows = np.linspace(0, count - 1, min(count, TRAIN_SAMPLE)).astype(np.int64)
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        trained_on = f"{len(rows)} of {count} vectors, evenly spaced"
    for start in range(0, count, _ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start:start + _ADD_CHUNK], dtype=np.float32))
    faiss.write_index(index, str(target))
    nlist = int(faiss.extract_index_ivf(index).nlist)
    return CompressedFiles(settings=replace(settings, nlist=nlist), file=target.name,
                           factory=settings.factory(dim, nlist),
                           provenance={"library": f"faiss {faiss.__version__}", "trained_on": trained_on,
                                       "build_seconds": round(time.perf_counter() - started, 2)})


class CompressedSearcher:
    """A :class:`~fastdpr.index.ann.Searcher` over a memory-mapped faiss IVF index, re-ranked by exact dot
    products from the float32 vectors. Thread-safe (``nprobe`` is passed per call).

    ``vectors``: the float32 ``[count, dim]`` rows. When it is a ``vectors.npy`` memory-mapped by
    ``np.load`` (as indexes are opened), the candidates' rows are read with ``pread`` and the map itself
    is never touched (``positional_reads=False``: indexed through the map, whose pages then stay in
    the process's RSS; faster once they are all mapped). Any other array is indexed.
    """

    def __init__(self, path: Path, vectors: np.ndarray, files: CompressedFiles, threads: int | None = None,
                 *, positional_reads: bool = True) -> None:
        faiss = _faiss()
        if not path.is_file():
            raise IndexLoadError(f"compressed index {path} is missing")
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:
            raise IndexLoadError(f"cannot load compressed index {path}: {str(exc).splitlines()[0]}") from exc
        count, dim = vectors.shape
        if index.d != dim or index.ntotal != count:
            raise IndexLoadError(f"compressed index {path} holds {index.ntotal} {index.d}-d vectors, "
                                 f"expected {count} {dim}-d")
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self._faiss = faiss
        self._index = index
        self._vectors = vectors
        self._rows = PositionalRows.of(vectors) if positional_reads else None
        self.files = files

    @property
    def count(self) -> int:
        """Number of indexed vectors."""
        return int(self._vectors.shape[0])

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` labels and exact dot-product scores, best first; ``ef`` is checked and ignored (the IVF
        breadth is the manifest's ``nprobe``, the candidates its ``rerank``)."""
        check_search(k, ef)
        array = as_queries(queries, int(self._vectors.shape[1]))
        k = min(k, self.count)
        if k == 0 or array.shape[0] == 0:
            return empty_result(array.shape[0])
        depth = min(max(k, self.files.settings.rerank), self.count)
        candidates = self._candidates(array, depth, k)
        labels = np.empty((len(array), k), dtype=np.int64)
        scores = np.empty((len(array), k), dtype=np.float32)
        for row, (query, found) in enumerate(zip(array, candidates, strict=True)):
            found = found[found >= 0]  # faiss pads with -1 when the probed lists hold fewer than depth
            exact = correctly_rounded_scores(self._vectors, query, found,
                                             self._rows.take if self._rows is not None else None)
            order = np.lexsort((found, -exact))[:k]
            labels[row], scores[row] = found[order], exact[order]
        return labels, scores

    def _candidates(self, queries: np.ndarray, depth: int, k: int) -> np.ndarray:
        # The probed lists may hold fewer than k vectors (small lists, a small index): probe 4x more lists
        # until every question has k candidates, as HNSW search widens ef; all lists hold every vector.
        nprobe, nlist = self.files.settings.nprobe, int(self._faiss.extract_index_ivf(self._index).nlist)
        while True:
            _, candidates = self._index.search(queries, depth, params=self._faiss.SearchParametersIVF(nprobe=nprobe))
            if nprobe >= nlist or (candidates >= 0).sum(axis=1).min() >= k:
                return np.asarray(candidates)
            nprobe = min(nprobe * 4, nlist)

    def close(self) -> None:
        """Close the vectors file's reader (the maps are closed with the searcher)."""
        if self._rows is not None:
            self._rows.close()
