"""Opening an index for search: an unsharded index is read as a sharded index of one shard.

Layout of a sharded ``INDEX_DIR`` (written by :mod:`fastdpr.index.build_sharded`)::

    manifest.json        format "fastdpr-sharded-index"; artifact, spec, precision, whole-corpus counts,
                         HNSW settings; per shard: directory, passage count, label offset, and the
                         sha256 of the shard's manifest; sha256 of the encoder files
    encoder/model.onnx   the question encoder, stored once (+ tokenizer.json)
    shards/00000/        an ordinary "fastdpr-index" directory (manifest, vectors.npy, hnsw.bin,
    shards/00001/        passages.sqlite) over a consecutive run of the corpus; its manifest points
    ...                  at the shared encoder (../../encoder/)

A passage's global label is its shard's label offset plus its label inside the shard, which is also
its position among the corpus's indexed passages, so labels match an unsharded index of the same
corpus. Search asks every shard for its own top ``k`` and merges by raw dot product.

An unsharded index is the same thing with one shard at label offset 0, and is opened by the same
functions (:func:`open_searcher`, :func:`open_store` over ``[(0, manifest)]``), so one search path
and one passage lookup serve both.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import SupportsIndex

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, Integrity, read_manifest
from fastdpr.index.ann import ExactSearcher, HnswSearcher, Searcher, check_search
from fastdpr.index.manifest import (
    SHARDED_INDEX_FORMAT,
    SHARDED_INDEX_FORMAT_VERSION,
    IndexManifest,
    ShardedIndexManifest,
    ShardEntry,
    check_shard_manifest,
    load_index_manifest,
    parse_sharded_manifest,
)
from fastdpr.index.store import PassageStore, PassageText, StoredPassage

__all__ = [
    "Shard",
    "ShardedSearcher",
    "ShardedStore",
    "is_sharded_index",
    "load_label_map",
    "load_sharded_manifest",
    "merge_top_k",
    "open_searcher",
    "open_store",
    "shards_of",
]

#: One shard opened for search: the label offset of its first passage, and its checked manifest.
Shard = tuple[int, IndexManifest]


def is_sharded_index(path: Path | str) -> bool:
    """True when ``path`` holds a manifest of the sharded format (nothing else is checked)."""
    manifest = Path(path) / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False  # let the ordinary loader explain what is wrong
    return isinstance(data, dict) and data.get("format") == SHARDED_INDEX_FORMAT


def load_sharded_manifest(root: Path | str, integrity: Integrity = "fingerprint") -> ShardedIndexManifest:
    """Read and check a sharded index: its manifest, the encoder files, and every shard.

    Each shard's manifest must hash to the sha256 the top-level manifest recorded, and each shard's
    files are checked against its own manifest at ``integrity``. Shards must tile the labels
    ``0..count-1`` in order. Raises :class:`IndexLoadError` naming the first problem.
    """
    root = Path(root)
    fields = read_manifest(root, SHARDED_INDEX_FORMAT, (SHARDED_INDEX_FORMAT_VERSION,), IndexLoadError)
    manifest = parse_sharded_manifest(fields, root)
    manifest.files.check(integrity)
    offset = 0
    for entry in manifest.shards:
        shard = load_index_manifest(check_shard_manifest(root, entry), integrity)
        if entry.label_offset != offset or shard.count != entry.count:
            raise IndexLoadError(f"{root}: shard {entry.dir} holds labels {entry.label_offset}.. "
                                 f"({shard.count} passages), expected {offset}.. ({entry.count})")
        if shard.spec != manifest.spec:
            raise IndexLoadError(f"{root}: shard {entry.dir} was encoded with another spec")
        if shard.vector_settings.kind != manifest.vector_settings.kind:
            raise IndexLoadError(f"{root}: shard {entry.dir} holds {shard.vector_settings.kind} vectors, the index "
                                 f"says {manifest.vector_settings.kind}")
        if (shard.lexical.settings if shard.lexical else None) != manifest.lexical:
            # Lexical search tokenizes a question once for every shard: they must all agree (issue #23).
            raise IndexLoadError(f"{root}: the lexical side of shard {entry.dir} differs from the index's "
                                 f"(manifest.json: {'none' if manifest.lexical is None else manifest.lexical.method})")
        offset += entry.count
    if offset != manifest.count:
        raise IndexLoadError(f"{root}: shards hold {offset} passages, manifest says {manifest.count}")
    return manifest


def shards_of(root: Path, entries: Iterable[ShardEntry]) -> list[Shard]:
    """The shards ``entries`` of a checked sharded index (see :func:`load_sharded_manifest`), ready for
    :func:`open_searcher` and :func:`open_store`.

    Each shard's manifest is tied to the top-level one again (its sha256) and its files' sizes are
    checked: what the caller checked may have been another node's copy (a Ray actor opens its own run
    of shards on its node).
    """
    return [(entry.label_offset, load_index_manifest(check_shard_manifest(root, entry), "sizes"))
            for entry in entries]


def open_searcher(shards: Sequence[Shard], *, ef: int, exact: bool, threads: int | None) -> ShardedSearcher:
    """One searcher over ``shards`` (an unsharded index: ``[(0, manifest)]``). Exact search memory-maps
    each shard's ``vectors.npy``; HNSW search loads each shard's graph."""
    searchers: list[tuple[int, Searcher]] = []
    for offset, manifest in shards:
        searcher: Searcher
        if exact:
            searcher = ExactSearcher.load(manifest.path(manifest.vectors), manifest.spec.dim, manifest.count)
        elif manifest.compressed is not None:
            searcher = open_compressed(manifest, threads)
        else:
            assert manifest.hnsw.file is not None  # always set in an index's manifest (parse_index_manifest)
            searcher = HnswSearcher(manifest.path(manifest.hnsw.file), manifest.spec.dim, manifest.count, ef=ef,
                                    threads=threads, elements=manifest.hnsw.elements, labels=load_label_map(manifest))
        searchers.append((offset, searcher))
    return ShardedSearcher(searchers, ef)


def open_compressed(manifest: IndexManifest, threads: int | None) -> Searcher:
    """The compressed index of ``manifest`` (issue #22), re-ranked from its float32 vectors (read with pread)."""
    from fastdpr.index.compressed import CompressedSearcher  # faiss only for compressed indexes

    assert manifest.compressed is not None
    vectors = ExactSearcher.load(manifest.path(manifest.vectors), manifest.spec.dim, manifest.count).vectors
    return CompressedSearcher(manifest.path(manifest.compressed.file), vectors, manifest.compressed, threads)


def load_label_map(manifest: IndexManifest) -> np.ndarray | None:
    """The graph-label-to-row map of an index that passages were deleted from (None: label = row)."""
    if manifest.hnsw.labels is None:
        return None
    path = manifest.path(manifest.hnsw.labels)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexLoadError(f"label map {path} is corrupt or not a .npy array: {exc}") from exc


def open_store(shards: Sequence[Shard]) -> ShardedStore:
    """One passage store over ``shards``, each checked to hold as many passages as its manifest says."""
    stores: list[tuple[int, PassageStore]] = []
    try:
        for offset, manifest in shards:
            store = PassageStore(manifest.path(manifest.store))
            stores.append((offset, store))
            if store.count() != manifest.count:
                raise IndexLoadError(f"{manifest.root}: passage store holds {store.count()} passages, "
                                     f"manifest says {manifest.count}")
    except BaseException:
        for _, store in stores:
            store.close()
        raise
    return ShardedStore(stores)


class ShardedSearcher:
    """Searches every shard and merges their hits by raw dot product (a :class:`~fastdpr.index.ann.Searcher`).

    Each shard is asked for ``min(k, shard count)`` hits (HNSW at ``ef >= k``); the union is sorted by
    score, descending, then by global label, so ties are broken the same way as
    :class:`~fastdpr.index.ann.ExactSearcher` over one unsharded index, and an index gives the same
    hits whether it was built in one shard or many.
    """

    def __init__(self, shards: Sequence[tuple[int, Searcher]], ef: int) -> None:
        if not shards:
            raise FastDPRError("a sharded searcher needs at least one shard")
        self._shards = list(shards)
        self.ef = ef

    @property
    def count(self) -> int:
        """Number of indexed vectors over all shards."""
        return sum(searcher.count for _, searcher in self._shards)

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global labels (int64) and dot-product scores (float32) per query, best first.

        ``ef`` (HNSW only) defaults to :attr:`ef` and is raised to ``k``: a shard searched at ``ef < k``
        would lose good candidates that the merge could have kept.
        """
        check_search(k, ef)
        breadth = max(ef if ef is not None else self.ef, k)
        if len(self._shards) == 1 and self._shards[0][0] == 0:
            # One shard at offset 0 (every unsharded index): its hits come sorted by score, and when no two
            # neighbours tie they already are merge_top_k's order, which would only re-sort them (~20-50 us
            # a question, as long as the HNSW search itself over a small index).
            searcher = self._shards[0][1]
            labels_0, scores_0 = searcher.search(queries, min(k, searcher.count), ef=breadth)
            if bool((scores_0[:, 1:] < scores_0[:, :-1]).all()):
                return labels_0, scores_0
            return merge_top_k([labels_0], [scores_0], k)
        labels: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for offset, searcher in self._shards:
            shard_labels, shard_scores = searcher.search(queries, min(k, searcher.count), ef=breadth)
            labels.append(shard_labels + offset)
            scores.append(shard_scores)
        return merge_top_k(labels, scores, k)

    def close(self) -> None:
        """Closes every shard's searcher."""
        for _, searcher in self._shards:
            searcher.close()


def merge_top_k(labels: list[np.ndarray], scores: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``[queries, n_i]`` hit lists (global labels, dot products): by score,
    descending, then by label. A total order, so merging partial merges gives the same result as merging
    every shard's hits at once (what lets Ray actors merge their own shards first)."""
    all_labels = np.concatenate(labels, axis=1)
    all_scores = np.concatenate(scores, axis=1)
    order = np.lexsort((all_labels, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_labels, order, axis=1), np.take_along_axis(all_scores, order, axis=1)


class ShardedStore:
    """Passages by global label, read from each shard's own passage store."""

    def __init__(self, stores: Sequence[tuple[int, PassageStore]]) -> None:
        self._offsets = [offset for offset, _ in stores]
        self._stores = [store for _, store in stores]

    def count(self) -> int:
        """Number of passages over all shards."""
        return sum(store.count() for store in self._stores)

    def get(self, labels: Iterable[SupportsIndex]) -> list[StoredPassage]:
        """The passages with these global labels, in the given order (see :meth:`PassageStore.get`):
        one lookup per shard that holds any of them, however many labels are asked for at once."""
        if len(self._stores) == 1:  # an unsharded index: global labels are the store's own
            return self._stores[0].get(labels)
        wanted = [int(label) for label in labels]
        by_shard: dict[int, list[int]] = {}
        for label in wanted:
            shard = bisect.bisect_right(self._offsets, label) - 1
            if shard < 0:
                raise IndexLoadError(f"label {label} is not in the sharded passage store")
            by_shard.setdefault(shard, []).append(label)
        found: dict[int, StoredPassage] = {}
        for shard, shard_labels in by_shard.items():
            offset = self._offsets[shard]
            for p in self._stores[shard].get(label - offset for label in shard_labels):
                found[p.label + offset] = StoredPassage(p.label + offset, p.id, p.title, p.text)
        return [found[label] for label in wanted]

    def texts(self, labels: Iterable[SupportsIndex]) -> list[PassageText]:
        """As :meth:`get`, as ``(id, title, text)`` tuples (:meth:`PassageStore.texts`): what hits are made of."""
        if len(self._stores) == 1:
            return self._stores[0].texts(labels)
        return [(p.id, p.title, p.text) for p in self.get(labels)]

    def load_into_memory(self) -> None:
        """Read every shard's passages into memory (:meth:`PassageStore.load_into_memory`)."""
        for store in self._stores:
            store.load_into_memory()

    def close(self) -> None:
        """Closes every shard's store."""
        for store in self._stores:
            store.close()
