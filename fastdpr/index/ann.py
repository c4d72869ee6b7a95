"""Maximum inner product search: an HNSW index (hnswlib) and an exact brute-force baseline.

Both searchers return ``(labels int64 [q, k], scores float32 [q, k])`` with scores equal to the dot
product and each row sorted by score, descending. Labels are row numbers of the indexed vectors, which
are also the labels of the passage store (:mod:`fastdpr.index.store`).

Every searcher of the package, these two and the sharded ones built on them
(:class:`fastdpr.index.load.ShardedSearcher`, :class:`fastdpr.cluster.search.RayShardedSearcher`),
implements :class:`Searcher`, and the retrieval code knows no other type:

* ``k`` must be at least 1, and ``ef``, when given, too (:func:`check_search`, the one place that
  says so). ``k`` larger than the number of indexed vectors is clamped to it: the result then has
  ``count`` columns rather than ``k`` (never padding such as ``-1`` labels, which callers would have
  to filter).
* ``ef`` is the HNSW search breadth of one call; exact search accepts and ignores it, so callers
  never ask which kind of searcher they hold.
* Queries must be ``[q, dim]``; they are converted to C-contiguous float32.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import hnswlib
import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M

#: Rows added per ``add_items`` call while building: the unit of progress reporting. Each call
#: starts and joins its own worker threads, so chunks should be large enough to keep them busy.
BUILD_CHUNK = 10_000

#: Upper bound on query x corpus-chunk score matrix elements in exact search (64 MB of float32).
_EXACT_BLOCK_ELEMENTS = 1 << 24

# hnswlib's saveIndex header (hnswalg.h, stable since 0.5): six size_t fields, int maxlevel_,
# uint32 enterpoint_node_, three size_t (maxM_, maxM0_, M_), double mult_, size_t ef_construction_.
_HNSW_HEADER = struct.Struct("<6QiI3QdQ")
_HNSW_LABEL_BYTES = 8  # labeltype is size_t


@runtime_checkable
class Searcher(Protocol):
    """What the retrieval code needs from a vector index: one index, local shards or Ray shards."""

    @property
    def count(self) -> int:
        """Number of indexed vectors."""
        ...

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` labels (int64) and dot-product scores (float32), best first, per query row.

        ``ef``: the HNSW search breadth for this call (default: the searcher's own; raised to ``k``);
        ignored by exact search. Both are checked by :func:`check_search` before any work.
        """
        ...

    def close(self) -> None:
        """Release what the searcher holds outside this process (Ray actors); a no-op for the others."""
        ...


def usable_cores() -> int:
    """Cores this process may run on (what every builder and searcher uses when given no thread count)."""
    # Cores this process may run on (affinity / taskset), not hnswlib's hardware_concurrency, which
    # counts every core of the machine and oversubscribes a pinned process.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """``queries`` as C-contiguous float32 ``[q, dim]``, or a one-line error naming the shape."""
    array = np.ascontiguousarray(queries, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise FastDPRError(f"queries must have shape [q, {dim}], got {list(np.shape(queries))}")
    return array


def check_search(k: int, ef: int | None) -> None:
    """Refuse a search depth ``k`` or a search breadth ``ef`` below 1 with a one-line
    :class:`~fastdpr.common.errors.FastDPRError`.

    The one statement of the rule: every :class:`Searcher` calls it first, a sharded one before it
    asks any shard (over Ray, before anything leaves the driver, so the error is this line and not a
    remote traceback), and exact search too although it ignores ``ef``, so a call is refused or
    accepted the same whichever searcher a retriever holds.
    """
    if k < 1:
        raise FastDPRError(f"k must be at least 1, got {k}")
    if ef is not None and ef < 1:
        raise FastDPRError(f"ef must be at least 1, got {ef}")


def empty_result(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """What a search returns for ``rows`` queries when there is nothing to find (k clamped to 0)."""
    return np.zeros((rows, 0), dtype=np.int64), np.zeros((rows, 0), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------
# Building


def build_hnsw(
    vectors: np.ndarray,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    seed: int = 100,
) -> hnswlib.Index:
    """Builds an inner-product HNSW index over ``vectors`` (``[n, dim]``), labels ``0..n-1``.

    Vectors are added in chunks of :data:`BUILD_CHUNK` rows (so a memory-mapped array is never
    copied whole) and ``on_progress(done, total)`` is called after each chunk. ``threads=None`` uses
    every core the process may run on. With more than one thread the graph depends on thread
    scheduling; ``threads=1`` gives the same index for the same input and ``seed``.

    Raises :class:`~fastdpr.common.errors.FastDPRError` on a wrong shape or non-finite values (one NaN
    silently corrupts the neighbourhoods of everything linked to it).
    """
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise FastDPRError(f"vectors must have shape [n, dim], got {list(vectors.shape)}")
    if m < 2 or ef_construction < 1:
        raise FastDPRError(
            f"need m >= 2 and ef_construction >= 1, got m={m}, ef_construction={ef_construction}"
        )
    total, dim = vectors.shape
    workers = threads if threads is not None else usable_cores()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=total, ef_construction=ef_construction, M=m, random_seed=seed)
    for start in range(0, total, BUILD_CHUNK):
        stop = min(start + BUILD_CHUNK, total)
        chunk = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise FastDPRError(f"vector {bad} contains NaN or infinity")
        index.add_items(chunk, np.arange(start, stop, dtype=np.int64), num_threads=workers)
        if on_progress is not None:
            on_progress(stop, total)
    return index


def extend_hnsw(
    source: Path,
    dim: int,
    elements: int,
    *,
    delete: np.ndarray,
    vectors: np.ndarray,
    first_label: int,
    threads: int | None = None,
) -> hnswlib.Index:
    """A saved graph of ``elements`` elements, loaded with room for ``len(vectors)`` more: the graph
    labels ``delete`` marked deleted (they keep routing searches and are never returned), then
    ``vectors`` added under labels ``first_label, first_label + 1, ...``.

    Insertion is what :func:`build_hnsw` does for every vector, so an appended vector is linked as it
    would be in a graph built in this order (``docs/scale.md`` measures recall against a fresh build).
    """
    index = hnswlib.Index(space="ip", dim=dim)
    try:
        index.load_index(str(source), max_elements=elements + len(vectors))
    except (RuntimeError, MemoryError) as exc:
        raise IndexLoadError(f"cannot load HNSW index {source}: {exc}") from exc
    for label in delete:
        index.mark_deleted(int(label))
    workers = threads if threads is not None else usable_cores()
    for start in range(0, len(vectors), BUILD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + BUILD_CHUNK], dtype=np.float32)
        if not np.isfinite(chunk).all():
            raise FastDPRError(f"an appended vector near row {start} contains NaN or infinity")
        labels = np.arange(first_label + start, first_label + start + len(chunk), dtype=np.int64)
        index.add_items(chunk, labels, num_threads=workers)
    return index


def save_hnsw(index: hnswlib.Index, path: str | Path) -> None:
    """Writes ``index`` to ``path`` in hnswlib's own binary format (``ef`` is not part of it)."""
    index.save_index(str(path))


# ---------------------------------------------------------------------------------------------------
# HNSW search


class _EfGate:
    """Lets searches that want the same ``ef`` run at once; one that wants another ``ef`` waits.

    hnswlib keeps ``ef`` in the index, not in the query, and releases the GIL while searching, so
    ``set_ef`` + ``knn_query`` from two threads is a race: one thread's search may run with the
    other's ``ef``. A plain lock around both would be correct but serialize every search (measured:
    two threads at the same ``ef`` reach ~2x the queries/s of one on two cores; a lock keeps 1x).
    This gate is a readers lock keyed by ``ef``: holders all share the index's current ``ef``, and
    ``ef`` is only changed when nobody holds the gate. To keep a steady stream of same-``ef``
    searches from starving a different ``ef`` forever, newcomers stop joining the current group as
    soon as anyone is waiting for another ``ef``. The price is paid only by mixed-``ef`` traffic,
    which alternates groups with a thread hand-off each time (measured: no slower than one thread,
    ~25% below a plain lock, which lets one ``ef`` run on unfairly); same-``ef`` traffic, the normal
    case for a server, runs fully in parallel.
    """

    def __init__(self, index: hnswlib.Index) -> None:
        self._index = index
        self._cond = threading.Condition()
        self._current = int(index.ef)
        self._active = 0
        self._waiting: Counter[int] = Counter()

    def _may_enter(self, ef: int) -> bool:
        if self._active == 0:
            return True
        others_waiting = sum(self._waiting.values()) - self._waiting[self._current]
        return ef == self._current and others_waiting == 0

    @contextmanager
    def use(self, ef: int) -> Iterator[None]:
        with self._cond:
            self._waiting[ef] += 1
            try:
                self._cond.wait_for(lambda: self._may_enter(ef))
            finally:
                self._waiting[ef] -= 1
                if not self._waiting[ef]:
                    del self._waiting[ef]
            if ef != self._current:  # only reached with no active search
                self._index.set_ef(ef)
                self._current = ef
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()


def _check_hnsw_header(path: Path, dim: int, count: int) -> None:
    # Checked before hnswlib sees the file: hnswlib trusts the dimension it is given, so an index of
    # another dimension would load "fine" and return garbage, and a wrong count in a damaged header
    # can make it allocate absurd amounts of memory before noticing.
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(_HNSW_HEADER.size)
    if len(raw) < _HNSW_HEADER.size:
        raise IndexLoadError(f"HNSW index {path} is truncated ({size} bytes)")
    fields = _HNSW_HEADER.unpack(raw)
    elements, per_element, label_offset, data_offset = fields[2], fields[3], fields[4], fields[5]
    if label_offset < data_offset or per_element != label_offset + _HNSW_LABEL_BYTES:
        raise IndexLoadError(f"HNSW index {path} is corrupt or not an hnswlib index")
    stored_dim = (label_offset - data_offset) // 4
    if stored_dim != dim:
        raise IndexLoadError(f"HNSW index {path} holds {stored_dim}-d vectors, expected {dim}-d")
    if elements != count:
        raise IndexLoadError(f"HNSW index {path} holds {elements} vectors, expected {count}")
    if size < _HNSW_HEADER.size + elements * (per_element + 4):
        raise IndexLoadError(f"HNSW index {path} is truncated ({size} bytes for {elements} vectors)")


def _check_label_map(path: Path, labels: np.ndarray, elements: int, count: int) -> None:
    # Deleted elements map to -1 and are never returned by hnswlib; every live row appears exactly once.
    live = labels[labels >= 0]
    if (labels.dtype != np.int64 or labels.shape != (elements,) or len(live) != count
            or (live >= count).any() or len(np.unique(live)) != count):
        raise IndexLoadError(f"the label map of HNSW index {path} does not match it "
                             f"({labels.dtype} {list(labels.shape)}, expected int64 [{elements}] over {count} rows)")


class HnswSearcher:
    """Approximate inner-product search over a saved hnswlib index.

    Safe to call :meth:`search` from many threads at once, with the same or different ``ef``
    (see :class:`_EfGate`); searches at the same ``ef`` run in parallel.

    ``elements`` and ``labels``: a graph that passages were deleted from holds ``elements`` graph
    elements (deleted ones included), and ``labels`` maps a graph label to the row it stands for (see
    :class:`fastdpr.index.manifest.HnswSettings`); None: ``count`` elements labelled by row.

    ``threads`` is hnswlib's ``num_threads`` per :meth:`search` call; ``None`` means every usable
    core. hnswlib itself runs a call inline when it has at most ``4 * threads`` queries, so single
    questions from a server's request threads never spawn workers; a large batch (evaluation) is
    split across cores (~1.6x on two cores). A server that sends big batches from several threads at
    once should pass ``threads=1`` so the cores are not oversubscribed.
    """

    def __init__(
        self,
        path: str | Path,
        dim: int,
        count: int,
        ef: int = DEFAULT_EF,
        threads: int | None = None,
        *,
        elements: int | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IndexLoadError(f"HNSW index {self.path} is missing")
        if ef < 1:
            raise FastDPRError(f"ef must be at least 1, got {ef}")
        graph_count = count if elements is None else elements
        if labels is not None:
            _check_label_map(self.path, labels, graph_count, count)
        self._rows = labels
        _check_hnsw_header(self.path, dim, graph_count)
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.load_index(str(self.path))
        except (RuntimeError, MemoryError) as exc:
            raise IndexLoadError(f"cannot load HNSW index {self.path}: {exc}") from exc
        loaded = index.get_current_count()
        if loaded != graph_count:
            raise IndexLoadError(f"HNSW index {self.path} holds {loaded} vectors, expected {graph_count}")
        self._index = index
        self._dim = dim
        self._count = count
        self.ef = ef
        self._threads = threads if threads is not None else usable_cores()
        self._gate = _EfGate(index)

    @property
    def count(self) -> int:
        """Number of indexed vectors."""
        return self._count

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` labels and dot-product scores per query, best first.

        ``ef`` defaults to the searcher's ``ef``; below ``k`` it is raised to ``k`` (hnswlib cannot
        return ``k`` results from a smaller candidate list). ``k`` above :attr:`count` is clamped.
        """
        check_search(k, ef)
        array = as_queries(queries, self._dim)
        k = min(k, self._count)
        if k == 0 or array.shape[0] == 0:
            return empty_result(array.shape[0])
        effective = max(ef if ef is not None else self.ef, k)
        while True:
            with self._gate.use(effective):
                try:
                    labels, distances = self._index.knn_query(array, k=k, num_threads=self._threads)
                    break
                except RuntimeError as exc:
                    # hnswlib raises when the walk from the entry point finds fewer than k elements
                    # (possible with inner product, which is not a metric). Widen the walk rather
                    # than fail; a search at ef=count that still fails means unreachable nodes.
                    if effective >= self._count:
                        raise FastDPRError(
                            f"HNSW search found fewer than {k} results even with ef={effective}; "
                            "use exact search"
                        ) from exc
            effective = min(effective * 4, self._count)
        # hnswlib's ip "distance" is 1 - dot; undo it in float64 so the float32 score loses no extra bit.
        scores = (1.0 - distances.astype(np.float64)).astype(np.float32)
        rows = labels.astype(np.int64)
        return (rows if self._rows is None else self._rows[rows]), scores

    def close(self) -> None:
        """Nothing to release: the graph is freed with the searcher."""


# ---------------------------------------------------------------------------------------------------
# Exact search


class ExactSearcher:
    """Brute-force inner-product search: the ground truth approximate search is measured against.

    ``vectors`` may be a memory map; the corpus is scored in blocks so that the score matrix stays
    under 64 MB whatever the number of queries. Equal scores are ordered by label, so results are
    deterministic.
    """

    def __init__(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise FastDPRError(f"vectors must be float32 [n, dim], got {vectors.dtype} {list(vectors.shape)}")
        self._vectors = vectors

    @classmethod
    def load(cls, path: str | Path, dim: int, count: int) -> ExactSearcher:
        """Memory-maps a ``.npy`` file of float32 ``[count, dim]`` vectors (never unpickles)."""
        path = Path(path)
        if not path.is_file():
            raise IndexLoadError(f"vector file {path} is missing")
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise IndexLoadError(f"vector file {path} is corrupt or not a .npy array: {exc}") from exc
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise IndexLoadError(
                f"vector file {path} holds {vectors.dtype} {list(vectors.shape)}, "
                f"expected float32 [{count}, {dim}]"
            )
        return cls(vectors)

    @property
    def count(self) -> int:
        """Number of indexed vectors."""
        return int(self._vectors.shape[0])

    @property
    def vectors(self) -> np.ndarray:
        """The float32 ``[count, dim]`` vectors searched (a memory map when :meth:`load` opened them)."""
        return self._vectors

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._vectors.shape[1])

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` labels and dot-product scores per query, best first (``k`` clamped to count).

        ``ef`` is checked and ignored: it is part of :class:`Searcher` so that callers need not know
        which kind of searcher they hold.
        """
        check_search(k, ef)
        array = as_queries(queries, self.dim)
        rows = array.shape[0]
        k = min(k, self.count)
        if k == 0 or rows == 0:
            return empty_result(rows)
        block = max(k, _EXACT_BLOCK_ELEMENTS // rows)
        best_labels = np.zeros((rows, 0), dtype=np.int64)
        best_scores = np.zeros((rows, 0), dtype=np.float32)
        for start in range(0, self.count, block):
            scores = array @ np.asarray(self._vectors[start : start + block]).T
            keep = _top_k_columns(scores, k)
            # Reduce each block to its own top k before merging, so no [q, block] label array is built.
            merged_labels = np.concatenate([best_labels, keep + start], axis=1)
            merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, keep, axis=1)], axis=1)
            keep = _top_k_columns(merged_scores, k)
            best_labels = np.take_along_axis(merged_labels, keep, axis=1)
            best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_scores = self._rescore(array, best_labels)
        order = np.lexsort((best_labels, -best_scores), axis=1)
        return np.take_along_axis(best_labels, order, axis=1), np.take_along_axis(best_scores, order, axis=1)

    def _rescore(self, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
        scores = np.empty(labels.shape, dtype=np.float32)
        for row, (query, row_labels) in enumerate(zip(queries, labels, strict=True)):
            scores[row] = correctly_rounded_scores(self._vectors, query, row_labels)
        return scores

    def close(self) -> None:
        """Nothing to release: the memory map is closed with the searcher."""


def correctly_rounded_scores(vectors: np.ndarray, query: np.ndarray, labels: np.ndarray,
                             read: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The dot products of ``query`` with the rows ``labels`` of ``vectors`` (a memory map), each rounded
    once to float32: what exact search returns, and what compressed search re-ranks by. ``read``: how
    the rows (ascending labels) are read, e.g. :meth:`fastdpr.index.rows.PositionalRows.take`; default:
    indexing ``vectors``.

    BLAS rounds a float32 matrix product differently depending on the matrix's shape (OpenBLAS switches
    kernels for small matrices), so the same passage could score a few ulps apart in an index and in a
    shard of it, and near-ties could swap. Computed in float64 (float32 products are exact there) and
    rounded once: the correctly rounded dot product, whatever the corpus size, blocking or searcher.
    """
    ascending = np.argsort(labels)  # read the memory map front to back
    wanted = labels[ascending]
    rows = np.asarray(vectors[wanted] if read is None else read(wanted), dtype=np.float64)
    scores = np.empty(len(labels), dtype=np.float32)
    # A float64 matrix-vector product: whatever order BLAS sums in, the float64 error is ~1e-16 relative,
    # far below float32's rounding step (10x faster than multiplying and summing with numpy, which
    # mattered once compressed search re-ranked hundreds of candidates per question).
    scores[ascending] = rows @ query.astype(np.float64)
    return scores


def _top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores of each row, unordered (argpartition is linear)."""
    width = scores.shape[1]
    if width <= k:
        return np.broadcast_to(np.arange(width, dtype=np.int64), scores.shape)
    return np.argpartition(scores, width - k, axis=1)[:, width - k :].astype(np.int64, copy=False)
