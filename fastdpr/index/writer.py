"""The index writer: one index directory from encoded passages, and the manifests of every build path.

An index directory (see :mod:`fastdpr.index.build` for the layout) is written by :func:`write_index`,
whether it is a whole index (the one shard of an unsharded build, published in place) or one shard of
a sharded index (:mod:`fastdpr.index.build_sharded`, locally or on Ray). The top level of a sharded
index is written by :func:`write_sharded_manifest`. Manifests are the typed dataclasses the loaders
parse (:mod:`fastdpr.index.manifest`), written with their ``to_dict`` and parsed back before the
directory is published: what a build writes is what every load accepts.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import CorpusError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, FileTable, library_versions, write_json
from fastdpr.corpus.reader import CorpusReport
from fastdpr.index.backend import BuildBackend, OnGraphProgress, PassageSource
from fastdpr.index.lexical_side import lexical_settings, write_lexical_side
from fastdpr.index.load import load_sharded_manifest
from fastdpr.index.manifest import (
    HnswSettings,
    IndexManifest,
    ProbeCheck,
    QuestionEncoderFiles,
    ShardedIndexManifest,
    ShardEntry,
    load_index_manifest,
)
from fastdpr.index.store import PassageStoreWriter
from fastdpr.index.stream import Piece
from fastdpr.index.vector_settings import COMPRESSED_FILE, CompressedFiles, VectorSettings
from fastdpr.model.artifact import Artifact
from fastdpr.model.passage_backend import ONNX_RUNTIME, PassageBackend
from fastdpr.model.verify import Int8Verification, int8_thresholds

#: Given a graph's size, a context in which it is built, yielding a progress callback (or None).
GraphProgress = Callable[[int], AbstractContextManager[OnGraphProgress | None]]

_VERSIONS = ("fastdpr", "onnxruntime", "tokenizers", "hnswlib", "numpy")


@dataclass(frozen=True)
class ShardPlace:
    """Where a shard sits in its sharded index: its number and the global label of its first passage."""

    number: int
    label_offset: int
    #: A compressed build's codebook to reuse (the first shard's compressed index; None: train one here).
    codebook: Path | None = None


@dataclass(frozen=True)
class BuildRecord:
    """What every manifest of one build records, and what the loaders read of it.

    ``source`` is the corpus being indexed: its report (skipped rows) is complete once it is consumed.
    """

    artifact: Artifact
    precision: str
    question_precision: str
    source: PassageSource
    corpus: Path
    corpus_format: str
    hnsw: HnswSettings
    int8_check: Int8Verification | None
    batch_size: int
    threads: int | None
    #: The lexical side every index directory of the build gets (issue #23): None, or ``"bm25"``.
    lexical: str | None
    #: How the passage vectors are searched (issue #22): fp32 (the HNSW graph) or a compressed index.
    vectors: VectorSettings = field(default_factory=VectorSettings)
    #: The runtime that encoded the passages (issue #21); appends encode with the same one.
    passage_backend: PassageBackend = ONNX_RUNTIME

    def provenance(self) -> dict[str, Any]:
        """When and from what: the keys every manifest of the build starts with."""
        return {"created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "artifact": {"path": str(self.artifact.root.resolve()), "identity": self.artifact.identity,
                             "sources": self.artifact.sources, "quantization": self.artifact.typed.quantization},
                "corpus": {"path": str(self.corpus.resolve()), "format": self.corpus_format}}

    def whole_index(self) -> dict[str, Any]:
        """What a whole index records beyond a shard (unsharded, or a sharded index's top level): the CPU
        and int8 check, the corpus report's skip counts, the library versions."""
        report: CorpusReport = self.source.report
        return {"cpu": this_cpu().to_dict(),
                "int8_verification": None if self.int8_check is None else self.int8_check.to_dict(),
                "counts": {"skipped_total": report.total_skipped, "skipped": report.skipped,
                           "skipped_examples": report.examples, "no_title": report.no_title},
                "versions": library_versions(_VERSIONS)}

    def settings(self, encoded: int, seconds: float) -> dict[str, Any]:
        """The ``build`` entries of a whole index: throughput over ``encoded`` passages, and the settings."""
        return {"passages_per_s": round(encoded / max(seconds, 1e-9), 1), "batch_size": self.batch_size,
                "threads": self.threads, "passage_backend": self.passage_backend.to_dict()}

    def copy_question_encoder(self, root: Path) -> QuestionEncoderFiles:
        """Copy the question encoder (model, tokenizer; an int8 one with its probes) into ``root/encoder``."""
        encoder_dir = root / "encoder"
        shutil.rmtree(encoder_dir, ignore_errors=True)  # a resumed build's partial copy
        encoder_dir.mkdir()
        artifact, precision = self.artifact, self.question_precision
        shutil.copy2(artifact.model_path("question", precision), encoder_dir / "model.onnx")
        shutil.copy2(artifact.tokenizer_path("question"), encoder_dir / "tokenizer.json")
        probe_check = write_question_probes(artifact, encoder_dir) if precision == "int8" else None
        return QuestionEncoderFiles(model="encoder/model.onnx", tokenizer="encoder/tokenizer.json",
                                    probe_check=probe_check, precision=precision)


def write_question_probes(artifact: Artifact, encoder_dir: Path) -> ProbeCheck:
    """Keep the probe questions and PyTorch's embeddings of them beside the index's question encoder,
    so every load can check the int8 graph on the machine it runs on (a few milliseconds)."""
    probes = artifact.probes()
    (encoder_dir / "probe_questions.json").write_text(json.dumps(list(probes.questions), ensure_ascii=False),
                                                       encoding="utf-8")
    np.save(encoder_dir / "probe_reference.npy", artifact.probe_reference("question"), allow_pickle=False)
    thresholds = int8_thresholds(artifact)
    return ProbeCheck(questions="encoder/probe_questions.json", reference="encoder/probe_reference.npy",
                      batch_size=artifact.typed.probes.batch_size,
                      # Rows from here on were held out from int8 calibration (0: artifacts without the split).
                      held_out_from=probes.calibration_questions or 0,
                      min_cosine=thresholds["min_cosine"], recall_at_10=thresholds["recall_at_10"])


def write_npy_from_raw(raw: Path, target: Path, count: int, dim: int) -> None:
    """Prefix raw float32 rows with a .npy header, streaming (the vectors never sit in memory)."""
    with open(target, "wb") as out, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
        shutil.copyfileobj(src, out, length=1 << 22)


def _write_vectors(directory: Path, pieces: Iterable[Piece], dim: int) -> tuple[int, float]:
    """passages.sqlite and vectors.npy from ``pieces``: the number of passages, and the seconds spent
    writing them (the rest of the loop's time is encoding, which happens as ``pieces`` is pulled)."""
    # Vectors go to disk as they come (raw rows, then a .npy header in front): memory holds one piece.
    raw = directory / "vectors.f32.partial"
    count = 0
    writing = 0.0
    with PassageStoreWriter(directory / "passages.sqlite") as store, open(raw, "wb") as vectors_out:
        for passages, vectors in pieces:
            started = time.perf_counter()
            vectors_out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            store.add_many((count + i, p.id, p.title, p.text) for i, p in enumerate(passages))
            count += len(passages)
            writing += time.perf_counter() - started
        started = time.perf_counter()
    if count:
        write_npy_from_raw(raw, directory / "vectors.npy", count, dim)
    raw.unlink()
    return count, writing + time.perf_counter() - started


def write_index(directory: Path, pieces: Iterable[Piece], backend: BuildBackend, record: BuildRecord,
                shard: ShardPlace | None = None, graph_progress: GraphProgress | None = None) -> dict[str, Any]:
    """Write an index directory from encoded ``pieces``: store, vectors, HNSW graph, the lexical side
    when the build has one (BM25 from the stored passages, :mod:`fastdpr.index.lexical_side`), manifest.

    ``shard`` None: a whole index, which carries the question encoder and the build's records; else one
    shard of a sharded index (whose top level holds those). Returns the manifest.
    """
    started = time.perf_counter()
    count, store_seconds = _write_vectors(directory, pieces, backend.encoder.dim)
    if count == 0:  # the reader raises for an empty corpus; this guards a reader change
        raise CorpusError(f"{record.corpus}: no passages to index")
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vectors = np.load(directory / "vectors.npy", mmap_mode="r", allow_pickle=False)
    compressed: CompressedFiles | None = None
    if record.vectors.compressed:
        # A compressed index replaces the graph (issue #22); faiss is imported only for these builds.
        from fastdpr.index.compressed import build_compressed

        compressed = build_compressed(vectors, directory / COMPRESSED_FILE, record.vectors,
                                      codebook=None if shard is None else shard.codebook, threads=record.threads)
    else:
        with (graph_progress or _no_progress)(count) as on_progress:
            backend.build_graph(vectors, directory / "hnsw.bin", on_progress)
    del vectors
    # store_seconds is the part of encode_seconds spent writing passages and vectors (issue #24's split).
    build = {"encode_seconds": round(encode_seconds, 2), "store_seconds": round(store_seconds, 2),
             "graph_seconds": round(time.perf_counter() - started, 2)}
    # Every build path (unsharded, each shard of a sharded, resumed or Ray build) writes its directories
    # here, so each one gets its lexical side the same way, over the labels of its passage store (its
    # own build time is in the manifest's lexical entry).
    lexical = write_lexical_side(directory, record.lexical)
    question_encoder = None if shard is not None else record.copy_question_encoder(directory)
    started = time.perf_counter()
    # The sha256 of every file, read back from disk after the last write: the full check of a build.
    files = FileTable.scan(directory, IndexLoadError)
    build["hash_seconds"] = round(time.perf_counter() - started, 2)
    if shard is None:
        raw = {**record.provenance(), **record.whole_index(),
               "build": {**build, **record.settings(count, encode_seconds)}}
    else:
        raw = {**record.provenance(), "shard": {"number": shard.number, "of": f"../../{MANIFEST_NAME}"},
               "build": build}
    manifest = IndexManifest(
        root=directory, spec=record.artifact.spec, precision=record.precision, count=count, vectors="vectors.npy",
        store="passages.sqlite", hnsw=record.hnsw if compressed is None else replace(record.hnsw, file=None),
        question_encoder=question_encoder, compressed=compressed,
        shard_label_offset=None if shard is None else shard.label_offset,
        files=files, raw=raw, lexical=lexical)
    data = manifest.to_dict()
    write_json(directory / MANIFEST_NAME, data)
    load_index_manifest(directory, "sizes")  # what we wrote parses under the schema every load applies
    return data


def write_sharded_manifest(root: Path, record: BuildRecord, shards: list[ShardEntry], *, shard_size: int,
                           build: dict[str, Any]) -> dict[str, Any]:
    """Copy the question encoder into the sharded index at ``root`` and write its top-level manifest
    (``build``: the manifest's ``build`` entries). Returns the manifest."""
    question_encoder = record.copy_question_encoder(root)
    count = sum(entry.count for entry in shards)
    raw = {**record.provenance(), **record.whole_index(), "shard_size": shard_size, "build": build}
    manifest = ShardedIndexManifest(
        root=root, spec=record.artifact.spec, precision=record.precision, count=count,
        hnsw=HnswSettings(file=None, m=record.hnsw.m, ef_construction=record.hnsw.ef_construction,
                          ef_search=record.hnsw.ef_search),
        # Shards are vouched for by their manifests' sha256 (in ``shards``), so the table lists the encoder.
        question_encoder=question_encoder, shards=tuple(shards),
        files=FileTable.scan(root, IndexLoadError, under="encoder"), raw=raw,
        lexical=lexical_settings(record.lexical), vector_settings=_first_shard_vectors(root, shards, record.vectors))
    data = manifest.to_dict()
    write_json(root / MANIFEST_NAME, data)
    load_sharded_manifest(root, "sizes")  # what we wrote parses under the schema every load applies
    return data


def _first_shard_vectors(root: Path, shards: list[ShardEntry], asked: VectorSettings) -> VectorSettings:
    # The settings as built: the lists the first shard trained (every later shard reuses its codebook).
    if not asked.compressed:
        return asked
    return load_index_manifest(root / shards[0].dir, "sizes").vector_settings


def _no_progress(total: int) -> AbstractContextManager[OnGraphProgress | None]:
    return nullcontext(None)
