"""The lexical side of an index directory (issue #23): written from the passage store a build has just
filled, opened beside the vectors by the retriever.

An index (or each shard of a sharded index) built with ``--lexical bm25`` holds ``lexical/`` (bm25s's
saved matrices) over the same labels as ``hnsw.bin`` and ``passages.sqlite``; its files are in the
manifest's file table (sha256, like every file) and ``manifest["lexical"]`` records the method, the
tokenizer and the BM25 parameters (:func:`fastdpr.lexical.bm25.build_bm25`). A sharded index scores each
shard with that shard's own BM25 statistics (document frequencies, average length) and merges the shards'
hits by raw BM25 score, as Lucene/Elasticsearch do by default across shards: with shards of thousands of
passages from one corpus the statistics agree closely, but the scores are not bit-for-bit those of one
unsharded BM25 index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.index.manifest import IndexManifest, ShardedIndexManifest, check_shard_manifest, load_index_manifest
from fastdpr.index.store import PassageStore
from fastdpr.lexical.bm25 import LEXICAL_DIR, LEXICAL_METHODS, BM25Index, BM25Settings, build_bm25

__all__ = ["LexicalSide", "lexical_entry", "open_lexical_side", "write_lexical_side"]

_READ_CHUNK = 10_000


def _passage_texts(store: PassageStore) -> Iterator[str]:
    count = store.count()
    for start in range(0, count, _READ_CHUNK):
        for passage in store.get(range(start, min(start + _READ_CHUNK, count))):
            yield f"{passage.title}\n{passage.text}" if passage.title else passage.text


def write_lexical_side(directory: Path, method: str | None) -> dict[str, Any] | None:
    """Build the lexical side of the index (or shard) being written in ``directory`` from its finished
    ``passages.sqlite`` (labels ``0..n-1``, so lexical and dense labels agree); the manifest's ``lexical``
    entry, or None when ``method`` is None (no lexical side)."""
    if method is None:
        return None
    if method not in LEXICAL_METHODS:
        raise FastDPRError(f"unknown lexical method {method!r}: choose one of {', '.join(LEXICAL_METHODS)}")
    with PassageStore(directory / "passages.sqlite") as store:
        return build_bm25(_passage_texts(store), directory / LEXICAL_DIR)


def lexical_entry(method: str | None) -> dict[str, Any] | None:
    """What a sharded index's top-level manifest says of its shards' lexical sides (None: none)."""
    if method is None:
        return None
    return {"method": method, "per_shard": True, **BM25Settings().to_dict(),
            "merge": "each shard's hits by raw BM25 score (shard-local statistics)"}


class LexicalSide:
    """The BM25 indexes of an index (one) or of a sharded index (one per shard), searched as one."""

    def __init__(self, parts: Sequence[tuple[int, BM25Index]]) -> None:
        if not parts:
            raise FastDPRError("a lexical side needs at least one BM25 index")
        self.parts = list(parts)

    @property
    def settings(self) -> BM25Settings:
        """The tokenizer and BM25 settings (those of the first shard)."""
        return self.parts[0][1].settings

    def search(self, questions: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question: the best ``k`` global labels and BM25 scores over every part (see :class:`BM25Index`)."""
        per_part = [(offset, index.search(questions, k)) for offset, index in self.parts]
        if len(per_part) == 1:
            return per_part[0][1]
        merged: list[tuple[np.ndarray, np.ndarray]] = []
        for row in range(len(questions)):
            labels = np.concatenate([hits[row][0] + offset for offset, hits in per_part])
            scores = np.concatenate([hits[row][1] for _, hits in per_part])
            order = np.lexsort((labels, -scores))[:k]
            merged.append((labels[order], scores[order]))
        return merged


def _open_part(manifest: IndexManifest) -> BM25Index:
    entry = manifest.raw.get("lexical")
    if not isinstance(entry, dict) or entry.get("method") != "bm25" or not isinstance(entry.get("dir"), str) \
            or not isinstance(entry.get("files"), list) or not entry["files"]:
        raise IndexLoadError(f"{manifest.root}: the lexical entry of the manifest is malformed")
    directory = entry["dir"]
    for name in entry["files"]:
        # Every file bm25s opens is in the file table (so sizes, fingerprints or sha256 were checked at load).
        if not isinstance(name, str) or not name.startswith(f"{directory}/"):
            raise IndexLoadError(f"{manifest.root}: the lexical entry lists {name!r} outside {directory}/")
        manifest.files.require(name, "lexical.files")
    path = manifest.root / directory
    if not path.resolve().is_relative_to(manifest.root.resolve()) or not path.is_dir():
        raise IndexLoadError(f"{manifest.root}: the lexical side {directory}/ is missing")
    return BM25Index(path, BM25Settings.from_dict(entry, manifest.root), manifest.count)


def _no_lexical(root: Path) -> IndexLoadError:
    return IndexLoadError(f"{root} has no lexical side: rebuild it with `fastdpr index ... --lexical bm25` for "
                          "lexical or hybrid search (dense search works as before)")


def open_lexical_side(manifest: IndexManifest | ShardedIndexManifest) -> LexicalSide:
    """Open the lexical side of a loaded (checked) index; :class:`IndexLoadError` in one line, naming
    ``--lexical bm25``, when it was built without one."""
    if isinstance(manifest, ShardedIndexManifest):
        parts: list[tuple[int, BM25Index]] = []
        for entry in manifest.shards:
            shard = load_index_manifest(check_shard_manifest(manifest.root, entry), "sizes")
            if shard.raw.get("lexical") is None:
                raise _no_lexical(manifest.root)
            parts.append((entry.label_offset, _open_part(shard)))
        return LexicalSide(parts)
    if manifest.raw.get("lexical") is None:
        raise _no_lexical(manifest.root)
    return LexicalSide([(0, _open_part(manifest))])
