"""Building an index directory: a self-contained, searchable corpus (``fastdpr index``).

Layout of ``INDEX_DIR``::

    manifest.json        format, artifact identity and spec, counts, HNSW settings, sha256 of files
    encoder/model.onnx   the question encoder at the index's precision (+ tokenizer.json)
    vectors.npy          float32 [count, dim] passage embeddings (exact search; rebuilding the graph)
    hnsw.bin             hnswlib graph over inner product, labels 0..count-1
    passages.sqlite      passage id, title and text by label
    lexical/             with --lexical bm25 only: bm25s's BM25 over the same labels (issue #23)

An unsharded index is a one-shard build published in place: :func:`start_build` prepares what every
build path shares (artifact, precisions, corpus, the int8 check, a backend), and the one index writer
(:func:`fastdpr.index.writer.write_index`) writes the directory, as it writes each shard of a sharded
build (:mod:`fastdpr.index.build_sharded`). The directory is built in a staging directory and renamed
into place at the end: an interrupted build (Ctrl-C, kill -9) leaves no ``INDEX_DIR`` that loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.common.progress import corpus_bar, finish
from fastdpr.common.publish import atomic_directory
from fastdpr.corpus.reader import CorpusReader, read_corpus
from fastdpr.index.backend import BuildBackend, GraphSettings, OnGraphProgress
from fastdpr.index.chunks import OnnxChunkEncoder
from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from fastdpr.index.manifest import HnswSettings
from fastdpr.index.stream import EncodedStream, Piece
from fastdpr.index.vector_settings import DEFAULT_NPROBE, DEFAULT_RERANK, VectorSettings
from fastdpr.index.writer import BuildRecord, GraphProgress, write_index
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.model.passage_backend import ONNX_RUNTIME, PassageBackend
from fastdpr.model.verify import Int8Verification, verify_int8_here

__all__ = ["IndexOptions", "build_index"]


@dataclass(frozen=True)
class IndexOptions:
    """How to build an index (CLI: ``fastdpr index``)."""

    #: Precision of the passage encoder, and of the question encoder unless ``question_precision`` says
    #: otherwise. None: the artifact's encoding plan (``Artifact.side_precision``).
    precision: str | None = None
    question_precision: str | None = None
    batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE
    threads: int | None = None
    hnsw_m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF
    strict: bool = False
    force: bool = False
    # int8 is verified on this machine before encoding (fastdpr/model/verify.py); True indexes even when the
    # check fails (the failure is still recorded in the manifest).
    allow_unverified_int8: bool = False
    progress: bool | None = None  # None: a bar on a terminal, quiet when piped
    #: The lexical side to build beside the vectors (issue #23): None, or "bm25" (``--lexical bm25``).
    lexical: str | None = None
    #: How passage vectors are searched (issue #22, ``--vectors``): fp32 (the HNSW graph), fp16, int8 or pq
    #: (a faiss IVF index over codes, re-ranked from the float32 vectors); the others tune the compressed index.
    vectors: str = "fp32"
    nlist: int | None = None
    nprobe: int = DEFAULT_NPROBE
    pq_m: int | None = None
    rerank: int = DEFAULT_RERANK
    #: Which runtime encodes the passages (``--passage-backend``): auto, onnxruntime or openvino
    #: (:mod:`fastdpr.model.passage_backend`).
    passage_backend: str = "auto"

    @property
    def vector_settings(self) -> VectorSettings:
        """The ``--vectors`` settings of this build."""
        return VectorSettings(kind=self.vectors, nlist=self.nlist, nprobe=self.nprobe, pq_m=self.pq_m,
                              rerank=self.rerank)

    @property
    def graph(self) -> GraphSettings:
        """How this build's HNSW graphs are built."""
        return GraphSettings(m=self.hnsw_m, ef_construction=self.ef_construction, threads=self.threads)

    @property
    def hnsw(self) -> HnswSettings:
        """The HNSW settings an index directory's manifest records."""
        return HnswSettings(file="hnsw.bin", m=self.hnsw_m, ef_construction=self.ef_construction,
                            ef_search=self.ef_search)


#: Makes the backend of a build (this process: :func:`local_backend`; Ray: :mod:`fastdpr.cluster.build`) for the
#: artifact, the passages' precision, the options and the passage runtime :class:`BuildInputs` decided (a factory
#: that cannot run it refuses).
BackendFactory = Callable[[Artifact, str, IndexOptions, PassageBackend], BuildBackend]


@dataclass(frozen=True)
class BuildInputs:
    """A build's inputs, checked before anything is written: the artifact, the precision of each side,
    and the corpus (its file and format)."""

    artifact: Artifact
    precision: str
    question_precision: str
    reader: CorpusReader
    #: The runtime that encodes the passages, decided before anything is encoded.
    passage_backend: PassageBackend = ONNX_RUNTIME

    @classmethod
    def open(cls, artifact_dir: Path | str, corpus: Path | str, fmt: str, options: IndexOptions) -> BuildInputs:
        """Load the artifact and open the corpus; fails at once on a precision the artifact lacks, a
        missing corpus or an unknown format."""
        artifact = Artifact.load(artifact_dir)
        precision = options.precision or artifact.side_precision("context")
        question = options.question_precision or options.precision or artifact.side_precision("question")
        artifact.model_path("context", precision)
        artifact.model_path("question", question)
        options.vector_settings.check(artifact.spec.dim)  # a --pq-m that does not divide dim: before any encoding
        backend = artifact.passage_backend(precision, options.passage_backend)
        reader = read_corpus(corpus, fmt, strict=options.strict)  # type: ignore[arg-type]
        return cls(artifact, precision, question, reader, backend)


def local_backend(artifact: Artifact, precision: str, options: IndexOptions,
                  passage_backend: PassageBackend) -> BuildBackend:
    """A backend that encodes with the artifact's context encoder on ``passage_backend`` and builds graphs in
    this process."""
    encoder = artifact.passage_encoder(passage_backend, precision, options.threads)
    return BuildBackend(OnnxChunkEncoder(encoder, options.batch_size), options.graph, passage_backend)


def int8_check_for_build(inputs: BuildInputs, options: IndexOptions) -> Int8Verification | None:
    """The int8 check on this CPU when either side runs int8 (None otherwise)."""
    if "int8" not in (inputs.precision, inputs.question_precision):
        return None
    check = verify_int8_here(inputs.artifact, "index build", options.threads, inputs.passage_backend)
    if not check.passed and not options.allow_unverified_int8:
        # Refused before spending hours encoding a corpus with a graph that is wrong on this CPU.
        raise FastDPRError(
            f"the int8 graph of {inputs.artifact.root} does not reproduce PyTorch on this CPU "
            f"({check.cpu['int8_class']}): {'; '.join(check.failures)}. Index with --precision fp32, or re-export "
            "with a recipe whose weights are 7-bit (exact on every x86 class: --quantize "
            "dynamic-per-channel-smooth-auto-7bit); --allow-unverified-int8 indexes anyway.")
    return check


def start_build(inputs: BuildInputs, options: IndexOptions, int8_check: Int8Verification | None,
                make_backend: BackendFactory) -> tuple[BuildBackend, BuildRecord]:
    """The backend of a build and the record its manifests share; the corpus is read through the backend
    (``record.source``)."""
    backend = make_backend(inputs.artifact, inputs.precision, options, inputs.passage_backend)
    record = BuildRecord(artifact=inputs.artifact, precision=inputs.precision,
                         question_precision=inputs.question_precision, source=backend.read(inputs.reader),
                         corpus=inputs.reader.path, corpus_format=inputs.reader.format, hnsw=options.hnsw,
                         int8_check=int8_check, batch_size=options.batch_size, threads=options.threads,
                         lexical=options.lexical, vectors=options.vector_settings,
                         passage_backend=backend.passage_backend)
    return backend, record


def build_index(artifact_dir: Path | str, corpus: Path | str, out: Path | str, fmt: str = "auto",
                options: IndexOptions | None = None) -> dict[str, Any]:
    """Encode ``corpus`` with the artifact's context encoder and write a searchable index to ``out``.

    Returns the index manifest. Raises :class:`FastDPRError` subclasses for bad input; skipped rows
    are counted (and named in the manifest), never dropped silently.
    """
    options = options or IndexOptions()
    inputs = BuildInputs.open(artifact_dir, corpus, fmt, options)
    int8_check = int8_check_for_build(inputs, options)
    backend, record = start_build(inputs, options, int8_check, local_backend)
    with atomic_directory(Path(out), options.force, IndexLoadError) as staging:
        bar = corpus_bar(inputs.reader.path, options.progress, desc="encoding")
        try:
            stream = EncodedStream(iter(record.source), backend.encoder, on_encoded=bar.update)
            # The whole corpus as one shard, written straight into the directory that is published.
            pieces = _finishing(stream.take(), lambda: finish(bar))
            return write_index(staging, pieces, backend, record, graph_progress=_graph_bar(options))
        finally:
            bar.close()


def _finishing(pieces: Iterator[Piece], done: Callable[[], None]) -> Iterator[Piece]:
    """``pieces``, then ``done()`` once they are all consumed (the encoding bar ends before the graph's)."""
    yield from pieces
    done()


def _graph_bar(options: IndexOptions) -> GraphProgress:
    quiet = None if options.progress is None else not options.progress  # None: tqdm decides by isatty

    @contextmanager
    def bar(total: int) -> Iterator[OnGraphProgress | None]:
        with tqdm(total=total, unit=" vectors", desc="hnsw graph", disable=quiet) as graph_bar:
            yield lambda done, _total: graph_bar.update(done - graph_bar.n)

    return bar
