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

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.index.load import Shard
from fastdpr.index.manifest import IndexManifest, LexicalFiles, LexicalSettings
from fastdpr.index.store import PassageStore
from fastdpr.lexical.bm25 import LEXICAL_DIR, LEXICAL_METHODS, BM25Index, BM25Settings, build_bm25

__all__ = ["LexicalSide", "lexical_settings", "open_lexical_side", "write_lexical_side"]

_READ_CHUNK = 10_000


def _passage_texts(store: PassageStore) -> Iterator[str]:
    count = store.count()
    for start in range(0, count, _READ_CHUNK):
        for passage in store.get(range(start, min(start + _READ_CHUNK, count))):
            yield f"{passage.title}\n{passage.text}" if passage.title else passage.text


def lexical_settings(method: str | None) -> LexicalSettings | None:
    """The settings of a lexical side built by ``--lexical method`` (None: no lexical side)."""
    if method is None:
        return None
    if method not in LEXICAL_METHODS:
        raise FastDPRError(f"unknown lexical method {method!r}: choose one of {', '.join(LEXICAL_METHODS)}")
    return LexicalSettings(method=method, bm25=BM25Settings())


def write_lexical_side(directory: Path, method: str | None) -> LexicalFiles | None:
    """Build the lexical side of the index (or shard) being written in ``directory`` from its finished
    ``passages.sqlite`` (labels ``0..n-1``, so lexical and dense labels agree); None when ``method`` is
    None (no lexical side)."""
    settings = lexical_settings(method)
    if settings is None:
        return None
    with PassageStore(directory / "passages.sqlite") as store:
        built = build_bm25(_passage_texts(store), directory / LEXICAL_DIR, settings.bm25)
    return LexicalFiles(settings=settings, dir=LEXICAL_DIR, files=built.files, passages=built.passages,
                        vocabulary=built.vocabulary,
                        provenance={"versions": built.versions, "build_seconds": built.seconds})


class LexicalSide:
    """The BM25 indexes of an index (one) or of a sharded index (one per shard), searched as one."""

    def __init__(self, parts: Sequence[tuple[int, BM25Index]]) -> None:
        if not parts:
            raise FastDPRError("a lexical side needs at least one BM25 index")
        self.parts = list(parts)

    @property
    def settings(self) -> BM25Settings:
        """The tokenizer and BM25 settings (every shard's: the loader checks that they agree)."""
        return self.parts[0][1].settings

    def search(self, questions: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question: the best ``k`` global labels and BM25 scores over every part (see :class:`BM25Index`)."""
        per_part = [(offset, index.search(questions, k)) for offset, index in self.parts]
        if len(per_part) == 1 and per_part[0][0] == 0:
            return per_part[0][1]
        merged: list[tuple[np.ndarray, np.ndarray]] = []
        for row in range(len(questions)):
            labels = np.concatenate([hits[row][0] + offset for offset, hits in per_part])
            scores = np.concatenate([hits[row][1] for _, hits in per_part])
            order = np.lexsort((labels, -scores))[:k]
            merged.append((labels[order], scores[order]))
        return merged


def _open_part(manifest: IndexManifest, lexical: LexicalFiles) -> BM25Index:
    path = manifest.root / lexical.dir
    # The file table vouched for every file bm25s opens (sizes, fingerprints or sha256, at load); the
    # directory itself must still be inside the index.
    if not path.resolve().is_relative_to(manifest.root.resolve()) or not path.is_dir():
        raise IndexLoadError(f"{manifest.root}: the lexical side {lexical.dir}/ is missing")
    return BM25Index(path, lexical.settings.bm25, manifest.count)


def open_lexical_side(root: Path, shards: Sequence[Shard]) -> LexicalSide:
    """Open the lexical side of a loaded (checked) index, given as its shards (an unsharded index:
    ``[(0, manifest)]``, as :func:`fastdpr.index.load.open_searcher` takes them);
    :class:`IndexLoadError` in one line, naming ``--lexical bm25``, when it was built without one."""
    parts: list[tuple[int, BM25Index]] = []
    for offset, manifest in shards:
        if manifest.lexical is None:
            raise IndexLoadError(f"{root} has no lexical side: rebuild it with `fastdpr index ... --lexical bm25` "
                                 "for lexical or hybrid search (dense search works as before)")
        parts.append((offset, _open_part(manifest, manifest.lexical)))
    return LexicalSide(parts)
