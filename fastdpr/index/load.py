"""Reading a sharded index: one question encoder over many ordinary index directories.

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
from fastdpr.index.ann import ExactSearcher, HnswSearcher
from fastdpr.index.manifest import (
    SHARDED_INDEX_FORMAT,
    SHARDED_INDEX_FORMAT_VERSION,
    ShardedIndexManifest,
    ShardEntry,
    check_shard_manifest,
    load_index_manifest,
    parse_sharded_manifest,
)
from fastdpr.index.store import PassageStore, StoredPassage

__all__ = [
    "ShardedSearcher",
    "ShardedStore",
    "is_sharded_index",
    "load_sharded_manifest",
    "merge_top_k",
    "open_shards",
    "shard_entries",
]

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
        offset += entry.count
    if offset != manifest.count:
        raise IndexLoadError(f"{root}: shards hold {offset} passages, manifest says {manifest.count}")
    return manifest


def shard_entries(manifest: ShardedIndexManifest) -> list[ShardEntry]:
    """The shards a sharded-index manifest lists, in label order."""
    return list(manifest.shards)


class ShardedSearcher:
    """Searches every shard and merges their hits by raw dot product.

    Each shard is asked for ``min(k, shard count)`` hits (HNSW at ``ef >= k``); the union is sorted by
    score, descending, then by global label, so ties are broken the same way as
    :class:`~fastdpr.index.ann.ExactSearcher` over one unsharded index.
    """

    def __init__(self, shards: list[tuple[int, HnswSearcher | ExactSearcher]], ef: int) -> None:
        if not shards:
            raise FastDPRError("a sharded searcher needs at least one shard")
        self._shards = shards
        self.ef = ef

    @property
    def count(self) -> int:
        """Number of indexed vectors over all shards."""
        return sum(searcher.count for _, searcher in self._shards)

    @property
    def exact(self) -> bool:
        """True when the shards are searched by brute force."""
        return isinstance(self._shards[0][1], ExactSearcher)

    def search(self, queries: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global labels (int64) and dot-product scores (float32) per query, best first.

        ``ef`` (HNSW only) defaults to :attr:`ef` and is raised to ``k``: a shard searched at ``ef < k``
        would lose good candidates that the merge could have kept.
        """
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        breadth = max(ef if ef is not None else self.ef, k)
        labels: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for offset, searcher in self._shards:
            wanted = min(k, searcher.count)
            if isinstance(searcher, HnswSearcher):
                shard_labels, shard_scores = searcher.search(queries, wanted, ef=breadth)
            else:
                shard_labels, shard_scores = searcher.search(queries, wanted)
            labels.append(shard_labels + offset)
            scores.append(shard_scores)
        return merge_top_k(labels, scores, k)


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

    def __init__(self, stores: list[tuple[int, PassageStore]]) -> None:
        self._offsets = [offset for offset, _ in stores]
        self._stores = [store for _, store in stores]

    def count(self) -> int:
        """Number of passages over all shards."""
        return sum(store.count() for store in self._stores)

    def get(self, labels: Iterable[SupportsIndex]) -> list[StoredPassage]:
        """The passages with these global labels, in the given order (see :meth:`PassageStore.get`)."""
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

    def close(self) -> None:
        """Closes every shard's store."""
        for store in self._stores:
            store.close()


def open_shards(root: Path, entries: Sequence[ShardEntry], *, dim: int, ef: int, exact: bool,
                threads: int | None) -> tuple[ShardedSearcher, ShardedStore]:
    """Searchers and stores of the shards ``entries`` of a checked sharded index (see
    :func:`load_sharded_manifest`; a Ray actor opens its own run of shards on its node).

    Each shard's manifest is tied to the top-level one again (its sha256) and its files' sizes are
    checked: what the caller checked may have been another node's copy. Exact search memory-maps each
    shard's ``vectors.npy``; HNSW search loads each shard's graph.
    """
    searchers: list[tuple[int, HnswSearcher | ExactSearcher]] = []
    stores: list[tuple[int, PassageStore]] = []
    try:
        for entry in entries:
            shard_dir = check_shard_manifest(root, entry)
            shard = load_index_manifest(shard_dir, "sizes")
            searcher: HnswSearcher | ExactSearcher
            if exact:
                searcher = ExactSearcher.load(shard.path(shard.vectors), dim, entry.count)
            else:
                assert shard.hnsw.file is not None  # always set in an unsharded manifest (parse_index_manifest)
                searcher = HnswSearcher(shard.path(shard.hnsw.file), dim, entry.count, ef=ef, threads=threads)
            store = PassageStore(shard.path(shard.store))
            stores.append((entry.label_offset, store))
            if store.count() != entry.count:
                raise IndexLoadError(f"{shard_dir}: passage store holds {store.count()} passages, "
                                     f"manifest says {entry.count}")
            searchers.append((entry.label_offset, searcher))
    except BaseException:
        for _, store in stores:
            store.close()
        raise
    return ShardedSearcher(searchers, ef), ShardedStore(stores)
