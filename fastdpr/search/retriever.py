"""The Python API: load an index, answer questions."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastdpr.common.errors import FastDPRError, IndexLoadError, Int8Warning
from fastdpr.common.integrity import Integrity
from fastdpr.index.ann import ExactSearcher, HnswSearcher
from fastdpr.index.load import ShardedSearcher, ShardedStore, is_sharded_index, load_sharded_manifest, open_shards
from fastdpr.index.manifest import IndexManifest, ShardedIndexManifest, load_index_manifest
from fastdpr.index.store import PassageStore
from fastdpr.model.batching import DEFAULT_QUESTION_BATCH_SIZE
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.tokenization import SpecTokenizer
from fastdpr.model.verify import Int8Verification, verify_int8_questions
from fastdpr.search.hybrid import HybridSearch

if TYPE_CHECKING:
    from fastdpr.cluster.search import RayShardedSearcher, RayShardedStore


@dataclass(frozen=True)
class Hit:
    """One retrieved passage. ``score`` is the dot product of question and passage embeddings (``mode="dense"``),
    the BM25 score (``"lexical"``) or the fused score (``"hybrid"``, see :mod:`fastdpr.lexical.fusion`)."""

    id: str
    title: str
    text: str
    score: float


def check_index_int8(manifest: IndexManifest | ShardedIndexManifest, encoder: OnnxEncoder,
                     where: str) -> Int8Verification | None:
    """Check an int8 index's question encoder on this CPU (None for fp32 or indexes built before the
    probes were kept)."""
    files = manifest.question_encoder
    probe = files.probe_check if files else None
    if files is None or files.precision != "int8" or probe is None:
        return None
    try:
        questions = json.loads(manifest.path(probe.questions).read_text(encoding="utf-8"))
        reference = np.load(manifest.path(probe.reference), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexLoadError(f"{manifest.root}: cannot read the int8 probe check: {exc}") from exc
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions) or \
            reference.ndim != 2 or len(reference) != len(questions):
        raise IndexLoadError(f"{manifest.root}: the int8 probe questions and their reference do not match")
    # Only the held-out questions are encoded: the check runs at every load, so it stays small.
    start = probe.held_out_from
    return verify_int8_questions(encoder, questions[start:], reference[start:], probe.batch_size,
                                 slice(None), probe.thresholds, where)


def open_question_encoder(manifest: IndexManifest | ShardedIndexManifest, threads: int | None) -> OnnxEncoder:
    """The question encoder an index carries (files from its checked file table)."""
    files = manifest.question_encoder
    if files is None:
        raise IndexLoadError(f"{manifest.root} is one shard of a sharded index: load the sharded index (its "
                             "parent's parent) instead")
    tokenizer = SpecTokenizer(manifest.path(files.tokenizer), manifest.spec, "question")
    return OnnxEncoder(manifest.path(files.model), tokenizer, threads=threads)


class Retriever:
    """Questions in, passages out, from an index directory built by ``fastdpr index``.

    ``search`` and ``search_batch`` may be called from many threads at once: ONNX Runtime sessions
    and tokenizers are thread-safe, the HNSW searcher serializes only changes of ``ef``, and the
    passage store guards its connection.
    """

    def __init__(self, index_dir: Path, manifest: IndexManifest | ShardedIndexManifest, encoder: OnnxEncoder,
                 searcher: HnswSearcher | ExactSearcher | ShardedSearcher | RayShardedSearcher,
                 store: PassageStore | ShardedStore | RayShardedStore, ef: int) -> None:
        self.index_dir = index_dir
        #: The manifest as read (JSON); :attr:`typed_manifest` is the checked, typed form.
        self.manifest: dict[str, Any] = manifest.raw
        self.typed_manifest = manifest
        self.encoder = encoder
        self.searcher = searcher
        self.store = store
        self.ef = ef
        #: The int8 question encoder checked on this machine at load (None: fp32, or not checked).
        self.int8_check: Int8Verification | None = None
        #: Lexical and hybrid search (issue #23): the index's lexical side, opened at its first use.
        self.hybrid = HybridSearch(manifest)

    @property
    def question_precision(self) -> str:
        """The precision of the question encoder (``precision`` is the passage vectors')."""
        files = self.typed_manifest.question_encoder
        return files.precision if files else self.typed_manifest.precision

    @classmethod
    def load(cls, index_dir: Path | str, *, threads: int | None = None, ef: int | None = None,
             exact: bool = False, integrity: Integrity = "fingerprint", check_hashes: bool | None = None,
             check_int8: bool = True, ray_address: str | None = None, ray_actors: int | None = None) -> Retriever:
        """Open ``index_dir``. ``ef`` defaults to the value recorded at build time (hnswlib does not save
        it); ``exact=True`` searches by brute force instead of HNSW. A sharded index opens as one index.

        ``integrity``: how the index's files are checked against its manifest before anything is
        opened: ``fingerprint`` (default: sizes, and sha256 of each file's first and last 64 KiB; a few
        milliseconds whatever the index size), ``sha256`` (every byte, as ``fastdpr info --verify``), or
        ``sizes``. ``check_hashes`` (older API): True is ``sha256``, False is ``sizes``.

        ``check_int8``: an int8 index checks its question encoder on this CPU against PyTorch's
        embeddings of the probe questions (a few milliseconds) and warns (:class:`Int8Warning`) when it
        misses the export's threshold; the result is :attr:`int8_check`.

        ``ray_address`` (a sharded index only; needs ``fastdpr[ray]``) serves the shards from Ray actors
        on that cluster (``""``: a local one; a process already connected keeps its connection):
        ``ray_actors`` of them (default: the cluster's CPUs / ``threads``), each holding consecutive
        shards; questions are still encoded here. :meth:`close` stops the actors.
        """
        root = Path(index_dir)
        if check_hashes is not None:
            integrity = "sha256" if check_hashes else "sizes"
        if is_sharded_index(root):
            retriever = cls._load_sharded(root, threads=threads, ef=ef, exact=exact, integrity=integrity,
                                          ray_address=ray_address, ray_actors=ray_actors)
        elif ray_address is not None:
            raise FastDPRError(f"{root} is not a sharded index: Ray serves the shards of a sharded index "
                               "(build it with --shard-size)")
        else:
            retriever = cls._load_single(root, threads=threads, ef=ef, exact=exact, integrity=integrity)
        if check_int8:
            retriever.int8_check = check_index_int8(retriever.typed_manifest, retriever.encoder, "load")
            if retriever.int8_check is not None and not retriever.int8_check.passed:
                warnings.warn(retriever.int8_check.summary() + ". Rebuild the index with --precision fp32, or "
                              "re-export with a 7-bit recipe", Int8Warning, stacklevel=2)
        return retriever

    @classmethod
    def _load_single(cls, root: Path, *, threads: int | None, ef: int | None, exact: bool,
                     integrity: Integrity) -> Retriever:
        manifest = load_index_manifest(root, integrity)
        encoder = open_question_encoder(manifest, threads)
        ef = ef if ef is not None else manifest.hnsw.ef_search
        searcher: HnswSearcher | ExactSearcher
        if exact:
            searcher = ExactSearcher.load(manifest.path(manifest.vectors), manifest.spec.dim, manifest.count)
        else:
            assert manifest.hnsw.file is not None  # always set in an unsharded manifest (parse_index_manifest)
            searcher = HnswSearcher(manifest.path(manifest.hnsw.file), manifest.spec.dim, manifest.count, ef=ef,
                                    threads=threads)
        store = PassageStore(manifest.path(manifest.store))
        if store.count() != manifest.count:
            raise IndexLoadError(f"{root}: passage store holds {store.count()} passages, manifest says "
                                 f"{manifest.count}")
        return cls(root, manifest, encoder, searcher, store, ef)

    @classmethod
    def _load_sharded(cls, root: Path, *, threads: int | None, ef: int | None, exact: bool,
                      integrity: Integrity, ray_address: str | None, ray_actors: int | None) -> Retriever:
        manifest = load_sharded_manifest(root, integrity)
        encoder = open_question_encoder(manifest, threads)
        ef = ef if ef is not None else manifest.hnsw.ef_search
        searcher: ShardedSearcher | RayShardedSearcher
        store: ShardedStore | RayShardedStore
        if ray_address is not None:
            from fastdpr.cluster.search import open_ray_shards

            searcher, store = open_ray_shards(root, manifest, dim=manifest.spec.dim, ef=ef, exact=exact,
                                              threads=threads, address=ray_address, actors=ray_actors)
        else:
            searcher, store = open_shards(root, manifest.shards, dim=manifest.spec.dim, ef=ef, exact=exact,
                                          threads=threads)
        return cls(root, manifest, encoder, searcher, store, ef)

    @property
    def count(self) -> int:
        """Number of indexed passages."""
        return self.typed_manifest.count

    def encode_questions(self, questions: Sequence[str], batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Question embeddings ``[len(questions), dim]``."""
        return self.encoder.encode_questions(list(questions), batch_size)

    def search_vectors(self, vectors: np.ndarray, k: int, ef: int | None = None) -> list[list[Hit]]:
        """Search with precomputed question embeddings.

        ``ef`` overrides the HNSW search breadth for this call only (default: :attr:`ef`; raised to
        ``k`` when smaller); exact search ignores it.
        """
        if k < 1:
            raise FastDPRError(f"k must be at least 1, got {k}")
        if ef is not None and ef < 1:
            raise FastDPRError(f"ef must be at least 1, got {ef}")
        if isinstance(self.searcher, ExactSearcher):
            labels, scores = self.searcher.search(vectors, k)
        else:
            labels, scores = self.searcher.search(vectors, k, ef=ef)
        results: list[list[Hit]] = []
        for row_labels, row_scores in zip(labels, scores, strict=True):
            stored = self.store.get([int(label) for label in row_labels])
            results.append([Hit(p.id, p.title, p.text, float(s)) for p, s in zip(stored, row_scores, strict=True)])
        return results

    def search(self, question: str, k: int = 10, *, ef: int | None = None, mode: str = "dense",
               fusion: str = "weighted", weight: float | None = None) -> list[Hit]:
        """The ``k`` best passages for one question, best first (fewer if the index is smaller).

        ``mode``: ``dense`` (embeddings), ``lexical`` (BM25) or ``hybrid`` (both, fused by ``fusion``
        with the lexical ``weight``); the last two need an index built with ``--lexical bm25``
        (:mod:`fastdpr.search.hybrid`).
        """
        return self.search_batch([question], k, ef=ef, mode=mode, fusion=fusion, weight=weight)[0]

    def search_batch(self, questions: Sequence[str], k: int = 100, batch_size: int = DEFAULT_QUESTION_BATCH_SIZE, *,
                     ef: int | None = None, mode: str = "dense", fusion: str = "weighted",
                     weight: float | None = None) -> list[list[Hit]]:
        """The ``k`` best passages for each question, in input order (``ef``: see :meth:`search_vectors`;
        ``mode``, ``fusion``, ``weight``: see :meth:`search`)."""
        if isinstance(questions, str):
            raise FastDPRError("search_batch takes a list of questions; use search() for one")
        if not questions:
            return []
        if mode != "dense":  # issue #23: lexical and hybrid search (fastdpr/search/hybrid.py)
            return self._ranked_hits(self.hybrid.search(
                questions, k, mode, lambda qs, depth: self._dense_labels(qs, depth, batch_size, ef),
                fusion=fusion, weight=weight))
        return self.search_vectors(self.encode_questions(questions, batch_size), k, ef=ef)

    def _dense_labels(self, questions: Sequence[str], depth: int, batch_size: int,
                      ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        # issue #23: the dense candidates of hybrid search, as labels and dot products.
        vectors = self.encode_questions(questions, batch_size)
        if isinstance(self.searcher, ExactSearcher):
            return self.searcher.search(vectors, depth)
        return self.searcher.search(vectors, depth, ef=ef)

    def _ranked_hits(self, ranked: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
        # issue #23: lexical or fused (labels, scores) per question, as hits.
        results: list[list[Hit]] = []
        for labels, scores in ranked:
            stored = self.store.get([int(label) for label in labels])
            results.append([Hit(p.id, p.title, p.text, float(s)) for p, s in zip(stored, scores, strict=True)])
        return results

    def close(self) -> None:
        """Release the passage store (and stop the Ray actors serving the shards, if any)."""
        self.store.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
