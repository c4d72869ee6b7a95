"""The Python API: load an index, answer questions."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from fastdpr.common.errors import FastDPRError, IndexLoadError, Int8Warning
from fastdpr.common.integrity import Integrity
from fastdpr.index.ann import Searcher
from fastdpr.index.load import (
    Shard,
    ShardedStore,
    is_sharded_index,
    load_sharded_manifest,
    open_searcher,
    open_store,
    shards_of,
)
from fastdpr.index.manifest import IndexManifest, ShardedIndexManifest, ShardEntry, load_index_manifest
from fastdpr.model.batching import DEFAULT_QUESTION_BATCH_SIZE
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.tokenization import SpecTokenizer
from fastdpr.model.verify import Int8Verification, verify_int8_questions
from fastdpr.search.hybrid import DENSE, HybridSearch, Ranking


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

    Whatever the index (one directory, local shards, shards on Ray actors), a search is the same two
    steps: :attr:`searcher` (a :class:`~fastdpr.index.ann.Searcher`) finds labels and scores for the
    whole batch of questions, then :attr:`store` reads their passages in one lookup.
    """

    def __init__(self, index_dir: Path, manifest: IndexManifest | ShardedIndexManifest, encoder: OnnxEncoder,
                 searcher: Searcher, store: ShardedStore, ef: int, shards: Sequence[Shard]) -> None:
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
        self.hybrid = HybridSearch(index_dir, shards)

    @property
    def question_precision(self) -> str:
        """The precision of the question encoder (``precision`` is the passage vectors')."""
        files = self.typed_manifest.question_encoder
        return files.precision if files else self.typed_manifest.precision

    @classmethod
    def load(cls, index_dir: Path | str, *, threads: int | None = None, ef: int | None = None,
             exact: bool = False, integrity: Integrity = "fingerprint", check_hashes: bool | None = None,
             check_int8: bool = True, ray_address: str | None = None, ray_actors: int | None = None,
             passages_in_memory: bool = False) -> Retriever:
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

        ``passages_in_memory``: read every passage's id, title and text into memory at load, so a search
        fetches its hits from a list instead of the SQLite store (measured: 100 passages of a 200k store in
        0.137 ms instead of 0.517 ms after 20 ms idle, ``docs/benchmarks.md``); costs about the store's size in
        memory.
        """
        root = Path(index_dir)
        if check_hashes is not None:
            integrity = "sha256" if check_hashes else "sizes"
        manifest: IndexManifest | ShardedIndexManifest
        shards: list[Shard]
        entries: tuple[ShardEntry, ...] = ()
        if is_sharded_index(root):
            manifest = load_sharded_manifest(root, integrity)
            entries = manifest.shards
            shards = shards_of(root, entries)
        elif ray_address is not None:
            raise FastDPRError(f"{root} is not a sharded index: Ray serves the shards of a sharded index "
                               "(build it with --shard-size)")
        else:
            manifest = load_index_manifest(root, integrity)
            shards = [(0, manifest)]  # an unsharded index is opened as one shard at label 0
        encoder = open_question_encoder(manifest, threads)
        ef = ef if ef is not None else manifest.hnsw.ef_search
        searcher: Searcher
        if ray_address is not None:
            from fastdpr.cluster.search import RayShardedSearcher  # the optional Ray, imported only when asked for

            searcher = RayShardedSearcher(root, entries, ef=ef, exact=exact, threads=threads, address=ray_address,
                                          actors=ray_actors)
        else:
            searcher = open_searcher(shards, ef=ef, exact=exact, threads=threads)
        try:
            # Passages are read here even when Ray actors search: the driver has just checked every
            # shard's files, so its own copy answers a batch in one SQLite lookup per shard instead of
            # a second round trip to the actors.
            store = open_store(shards)
            if passages_in_memory:
                try:
                    store.load_into_memory()
                except BaseException:
                    store.close()
                    raise
        except BaseException:
            searcher.close()
            raise
        retriever = cls(root, manifest, encoder, searcher, store, ef, shards)
        if check_int8:
            try:
                retriever.int8_check = check_index_int8(manifest, encoder, "load")
            except BaseException:
                retriever.close()  # Ray actors outlive this process's objects: stop them
                raise
            if retriever.int8_check is not None and not retriever.int8_check.passed:
                warnings.warn(retriever.int8_check.summary() + ". Rebuild the index with --precision fp32, or "
                              "re-export with a 7-bit recipe", Int8Warning, stacklevel=2)
        return retriever

    @property
    def count(self) -> int:
        """Number of indexed passages."""
        return self.typed_manifest.count

    def encode_questions(self, questions: Sequence[str], batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Question embeddings ``[len(questions), dim]``."""
        return self.encoder.encode_questions(list(questions), batch_size)

    @property
    def dim(self) -> int:
        """The embedding size."""
        return self.encoder.dim

    @property
    def artifact_path(self) -> Path | None:
        """Where the artifact the index was built from was, when the index was built (None: not recorded)."""
        recorded = self.manifest.get("artifact") or {}
        return Path(recorded["path"]) if recorded.get("path") else None

    @property
    def artifact_identity(self) -> str | None:
        """The identity (:attr:`fastdpr.model.artifact.Artifact.identity`) of the artifact the index was built
        from (None: not recorded)."""
        recorded = self.manifest.get("artifact") or {}
        return str(recorded["identity"]) if recorded.get("identity") else None

    def tokenize_questions(self, questions: Sequence[str]) -> list[Encoding]:
        """The questions as the question encoder tokenizes them (token counts, truncation), for
        :meth:`encode_tokenized_questions`: a caller that needs both tokenizes once."""
        return self.encoder.tokenize(list(questions))

    def encode_tokenized_questions(self, encodings: Sequence[Encoding],
                                   batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Embeddings of questions tokenized by :meth:`tokenize_questions` (bitwise what
        :meth:`encode_questions` gives their text)."""
        return self.encoder.encode_tokenized(encodings, batch_size)

    def search_vectors(self, vectors: np.ndarray, k: int, ef: int | None = None) -> list[list[Hit]]:
        """Search with precomputed question embeddings.

        ``ef`` overrides the HNSW search breadth for this call only (default: :attr:`ef`; raised to
        ``k`` when smaller); exact search ignores it. ``k`` and ``ef`` below 1 raise
        :class:`~fastdpr.common.errors.FastDPRError` (checked by the searcher).
        """
        labels, scores = self.searcher.search(vectors, k, ef=ef)
        # One lookup for the whole batch, not one per question: a SQLite statement per shard (or per 900
        # labels), and a passage that several questions retrieve is read once.
        passages = self.store.texts(labels.ravel())
        width = labels.shape[1]  # every row has min(k, count) hits
        return [[Hit(pid, title, text, score)
                 for (pid, title, text), score in zip(passages[row * width:(row + 1) * width], row_scores, strict=True)]
                for row, row_scores in enumerate(scores.tolist())]

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
        ranking = Ranking(mode, fusion, weight)
        if not questions:
            return []
        if ranking.mode == "dense":
            return self.search_vectors(self.encode_questions(questions, batch_size), k, ef=ef)
        # issue #23: lexical and hybrid search (fastdpr/search/hybrid.py); lexical search encodes nothing.
        return self._ranked_hits(self.hybrid.search(
            questions, k, ranking.mode,
            lambda qs, depth: self.searcher.search(self.encode_questions(qs, batch_size), depth, ef=ef),
            fusion=ranking.fusion, weight=ranking.weight))

    def search_encoded(self, questions: Sequence[str], vectors: np.ndarray, k: int, ranking: Ranking = DENSE, *,
                       ef: int | None = None) -> list[list[Hit]]:
        """As :meth:`search_batch`, for questions already encoded (``vectors``, one row per question, from
        :meth:`encode_questions` or :meth:`encode_tokenized_questions`): what a server that batches the
        encoding of many requests calls. ``ranking.mode`` dense searches the vectors alone, lexical the
        question texts alone."""
        if ranking.mode == "dense":
            return self.search_vectors(vectors, k, ef=ef)
        if len(vectors) != len(questions):
            raise FastDPRError(f"{len(questions)} questions but {len(vectors)} question vectors")
        return self._ranked_hits(self.hybrid.search(
            questions, k, ranking.mode, lambda _qs, depth: self.searcher.search(vectors, depth, ef=ef),
            fusion=ranking.fusion, weight=ranking.weight))

    @property
    def has_lexical(self) -> bool:
        """True when the index has a lexical side (built with ``--lexical bm25``): lexical and hybrid
        search need one."""
        return self.typed_manifest.lexical is not None

    def _ranked_hits(self, ranked: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
        # issue #23: lexical or fused (labels, scores) per question, as hits; rows may differ in length
        # (a question with few lexical hits), and the whole batch is still one store lookup.
        passages = self.store.texts(np.concatenate([labels for labels, _ in ranked]))
        ends = np.cumsum([len(labels) for labels, _ in ranked]).tolist()
        return [[Hit(pid, title, text, score)
                 for (pid, title, text), score in zip(passages[end - len(scores):end], scores.tolist(), strict=True)]
                for end, (_, scores) in zip(ends, ranked, strict=True)]

    def close(self) -> None:
        """Release the passage store and the searcher (stopping the Ray actors serving the shards, if any)."""
        self.store.close()
        self.searcher.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
