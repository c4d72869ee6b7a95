"""Encoding a sharded index on a Ray cluster (``fastdpr index ... --shard-size N --ray [ADDRESS]``).

The expensive parts move to the cluster: the corpus is read as byte-range blocks by Ray tasks
(:mod:`fastdpr.corpus.blocks`; a gzip corpus cannot be split and is one block), passages are encoded
by Ray Data ``map_batches`` over a pool of ONNX Runtime actors, and each shard's HNSW graph is built by
a Ray task. The driver merges the parsed blocks in order (global line numbers, dropping duplicate ids,
the corpus report: exactly those of a local build), writes the shards, and resumes like a local build
(:mod:`fastdpr.index.build_sharded` is the same code for both).

Why the result equals a local build: the passages arrive in corpus order, the shards are written by
the same index writer (:mod:`fastdpr.index.writer`), and every ONNX Runtime call embeds one passage
(:data:`fastdpr.model.batching.INPUTS_PER_CALL`), so a passage's vector is a function of its own text,
whichever actor encodes it (the unit of work, one encode chunk, is a Ray Data row).

What must be shared: the corpus file, at the same path on every node (a shared filesystem, or a copy
at that path), since the block tasks read it where they run. Nothing else: the model travels through
Ray's object store, vectors go to the graph tasks and graphs come back the same way, and the index is
written on the driver.
"""

from __future__ import annotations

import json
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.cluster.connect import MAX_RESTARTS, cluster_cpus, connect, largest_node_cpus, require_ray
from fastdpr.common.errors import CorpusError, FastDPRError
from fastdpr.corpus.blocks import DEFAULT_BLOCK_BYTES, BlockMerge, BlockRows, CorpusBlock, plan_blocks, read_block
from fastdpr.corpus.reader import CorpusReader, CorpusReport, Passage
from fastdpr.index.backend import BuildBackend, GraphSettings, OnGraphProgress, PassageSource
from fastdpr.index.build import BackendFactory, IndexOptions
from fastdpr.index.chunks import OnEncoded
from fastdpr.model.artifact import Artifact
from fastdpr.model.passage_backend import PassageBackend

#: Chunks read ahead per encoder actor: each window of chunks is one Ray Data run, so more chunks per
#: actor spread the pool's start-up and the wait for the window's last chunk over more work.
CHUNKS_PER_ENCODER = 4

#: Corpus blocks being read ahead per cluster CPU: enough that the next block is parsed before the
#: encoders need it, few enough that parsed blocks waiting in the object store stay small.
BLOCKS_PER_CPU = 1


class _ChunkEncoder:
    """A Ray Data actor: the artifact's context encoder, loaded once, encoding one chunk per call."""

    def __init__(self, model: Any, tokenizer: bytes, spec: dict[str, Any], threads: int, batch_size: int) -> None:
        import ray

        from fastdpr.common.cpu import this_cpu
        from fastdpr.model.encoder import OnnxEncoder
        from fastdpr.model.spec import EncoderSpec
        from fastdpr.model.tokenization import SpecTokenizer

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        # The files are written on the worker's own disk (no shared filesystem is assumed) and removed once
        # loaded: Ray ends actors without running finalizers, so a directory kept for the actor's life
        # stayed behind in /tmp after every build.
        with tempfile.TemporaryDirectory(prefix="fastdpr-encoder-") as tmp:
            model_path, tokenizer_path = Path(tmp) / "model.onnx", Path(tmp) / "tokenizer.json"
            model_path.write_bytes(model)
            tokenizer_path.write_bytes(tokenizer)
            spec_ = EncoderSpec.from_dict(spec)
            # ORT ignores OMP_NUM_THREADS: its intra-op pool is sized here, to the CPUs Ray reserved for us.
            self._encoder = OnnxEncoder(model_path, SpecTokenizer(tokenizer_path, spec_, "context"), threads=threads)
            self._encoder.load_sessions()
        self._batch_size = batch_size
        self._cpu = this_cpu().int8_class

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = []
        for payload in batch["passages"]:
            pairs = [(title, text) for title, text in json.loads(payload)]
            vectors.append(self._encoder.encode_passages(pairs, self._batch_size).astype("<f4").tobytes())
        return {"chunk": np.asarray(batch["chunk"]), "vectors": np.asarray(vectors, dtype=object),
                "cpu": np.asarray([self._cpu] * len(vectors), dtype=object)}


def _graph_bytes(vectors: np.ndarray, m: int, ef_construction: int, threads: int) -> bytes:
    """A Ray task: one shard's HNSW graph, as the bytes of hnswlib's file (the worker's disk is its own)."""
    from fastdpr.index.ann import build_hnsw, save_hnsw

    graph = build_hnsw(vectors, m=m, ef_construction=ef_construction, threads=threads)
    with tempfile.TemporaryDirectory(prefix="fastdpr-graph-") as tmp:
        path = Path(tmp) / "hnsw.bin"
        save_hnsw(graph, path)
        return path.read_bytes()


class RayChunkEncoder:
    """A :class:`~fastdpr.index.chunks.ChunkEncoder` on a pool of Ray Data actors (:class:`_ChunkEncoder`):
    one Ray Data row per chunk, so Ray never re-batches passages."""

    def __init__(self, ray: Any, artifact: Artifact, precision: str, options: IndexOptions,
                 encoders: int | None) -> None:
        from fastdpr.common.cpu import this_cpu

        self._ray = ray
        self.dim = artifact.spec.dim
        self.precision = precision
        self.batch_size = options.batch_size
        self.allow_unverified_int8 = options.allow_unverified_int8
        self.threads = options.threads or 1
        self.encoders = encoders or max(1, cluster_cpus(ray) // self.threads)
        # Each window of chunks is one Ray Data run: enough chunks to keep every actor busy.
        self.window = self.encoders * CHUNKS_PER_ENCODER
        self._model = ray.put(artifact.model_path("context", precision).read_bytes())
        self._tokenizer = artifact.tokenizer_path("context").read_bytes()
        self._spec = artifact.spec.to_dict()
        # The int8 graph was verified on the driver's CPU; a worker with other int8 kernels would encode
        # with a graph nobody checked (and give other vectors), so it must be the same class.
        self._cpu = this_cpu().int8_class
        self.worker_cpus: set[str] = set()

    def encode_chunks(self, chunks: Sequence[Sequence[Passage]], on_encoded: OnEncoded | None) -> list[np.ndarray]:
        """The vectors of each chunk, encoded by the actor pool."""
        ray = self._ray
        rows = [{"chunk": i, "passages": json.dumps([[p.title, p.text] for p in chunk], ensure_ascii=False)}
                for i, chunk in enumerate(chunks)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ChunkEncoder,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(self.encoders, len(rows))),
            num_cpus=self.threads,
            fn_constructor_kwargs={"model": self._model, "tokenizer": self._tokenizer, "spec": self._spec,
                                   "threads": self.threads, "batch_size": self.batch_size},
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
        )
        encoded: dict[int, np.ndarray] = {}
        for row in dataset.iter_rows():
            index = int(row["chunk"])
            self._check_cpu(str(row["cpu"]))
            encoded[index] = np.frombuffer(row["vectors"], dtype="<f4").reshape(len(chunks[index]), self.dim)
            if on_encoded is not None:
                on_encoded(len(chunks[index]))
        return [encoded[i] for i in range(len(chunks))]

    def _check_cpu(self, worker: str) -> None:
        self.worker_cpus.add(worker)
        if self.precision == "int8" and worker != self._cpu and not self.allow_unverified_int8:
            raise FastDPRError(f"a Ray worker has int8 kernels of class {worker}, but the int8 graph was verified "
                               f"on {self._cpu} (this machine): its vectors would differ. Run the driver on a "
                               "machine of the workers' class, index with --precision fp32, or pass "
                               "--allow-unverified-int8")


class MergedBlocks:
    """The corpus as Ray tasks read it, one byte-range block each, merged in order on the driver: the
    passages (and the report) of a sequential read."""

    def __init__(self, merge: BlockMerge, blocks: Iterator[BlockRows]) -> None:
        self._merge = merge
        self._blocks = blocks

    @property
    def report(self) -> CorpusReport:
        """The merge's corpus report (complete once every passage is read)."""
        return self._merge.report

    def __iter__(self) -> Iterator[Passage]:
        return self._merge.merge(self._blocks)


class RayBuildBackend(BuildBackend):
    """Reads blocks as Ray tasks, encodes on a pool of Ray Data actors and builds graphs as Ray tasks (see
    the module docstring).

    ``options.threads`` (default 1) is each actor's CPU reservation and ONNX Runtime thread count;
    ``encoders`` (default: the cluster's CPUs divided by that) is the size of the actor pool. A graph
    task reserves every CPU of the largest node and builds with that many hnswlib threads: the build
    waits for each graph with the encoders idle, and a 1-thread graph task took 2.2x the local build's
    2-thread graphs (1,000,000 passages, L-2 H-128, 2 cores: 604 s against 268 s).
    """

    encoder: RayChunkEncoder

    def __init__(self, artifact: Artifact, precision: str, options: IndexOptions, *, address: str | None,
                 encoders: int | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        ray = connect(address)
        encoder = RayChunkEncoder(ray, artifact, precision, options, encoders)
        graph_threads = max(encoder.threads, largest_node_cpus(ray))
        super().__init__(encoder, GraphSettings(m=options.hnsw_m, ef_construction=options.ef_construction,
                                                threads=graph_threads))
        self._ray = ray
        self.address = address
        self.block_bytes = block_bytes
        self.blocks = 0

    def read(self, reader: CorpusReader) -> PassageSource:
        """The corpus read by Ray tasks, one byte-range block each, merged in order here."""
        blocks = plan_blocks(reader.path, reader.format, self.block_bytes)
        self.blocks = len(blocks)
        merge = BlockMerge(reader.path, reader.format, strict=reader.strict, max_examples=reader.max_examples)
        return MergedBlocks(merge, self._read_blocks(blocks))

    def _read_blocks(self, blocks: list[CorpusBlock]) -> Iterator[BlockRows]:
        """Parsed blocks in order, at most ``BLOCKS_PER_CPU`` x CPUs of them being read at once."""
        ray = self._ray
        # No CPU reservation: the encoder pool reserves every CPU while it runs, and a read task that
        # waited for one would starve the encoders it feeds. The window bounds how many run at once.
        task = ray.remote(num_cpus=0, max_retries=MAX_RESTARTS)(read_block)
        window = max(1, BLOCKS_PER_CPU * cluster_cpus(ray))
        pending = deque(task.remote(block) for block in blocks[:window])
        for block in blocks[window:]:
            yield self._checked(ray.get(pending.popleft()))
            pending.append(task.remote(block))
        while pending:
            yield self._checked(ray.get(pending.popleft()))

    @staticmethod
    def _checked(rows: BlockRows) -> BlockRows:
        if rows.error:
            raise CorpusError(f"a Ray worker could not read corpus block {rows.number}: {rows.error}",
                              details="The corpus is read where the Ray tasks run: it must be at the same path "
                                      "on every node of the cluster (a shared filesystem, or a copy at that path).")
        return rows

    def build_graph(self, vectors: np.ndarray, target: Path, on_progress: OnGraphProgress | None = None) -> None:
        """One shard's HNSW graph, built by a Ray task (retried if its worker dies; no progress reports)."""
        task = self._ray.remote(num_cpus=self.graph.threads, max_retries=MAX_RESTARTS)(_graph_bytes)
        ref = task.remote(np.ascontiguousarray(vectors), self.graph.m, self.graph.ef_construction, self.graph.threads)
        target.write_bytes(self._ray.get(ref))

    def note(self) -> dict[str, Any] | None:
        """Recorded in the manifest's ``build.ray``."""
        return {"address": self.address or "local", "encoders": self.encoder.encoders,
                "threads_per_encoder": self.encoder.threads, "graph_task_threads": self.graph.threads,
                "corpus_blocks": self.blocks, "block_bytes": self.block_bytes,
                "worker_int8_classes": sorted(self.encoder.worker_cpus), "ray_version": self._ray.__version__}


def ray_backend(address: str | None, encoders: int | None = None,
                block_bytes: int = DEFAULT_BLOCK_BYTES) -> BackendFactory:
    """A :func:`~fastdpr.index.build_sharded.build_sharded_index` backend that runs on Ray at ``address``
    (None or empty: a local cluster). Fails now, before any file is written, when Ray is missing."""
    require_ray()

    def make(artifact: Artifact, precision: str, options: IndexOptions,
             passage_backend: PassageBackend) -> BuildBackend:
        if passage_backend.name != "onnxruntime":
            # Workers run the artifact's ONNX graphs; vectors from another runtime would not be the index's.
            raise FastDPRError(f"Ray workers encode on ONNX Runtime, but this build's passages run on "
                               f"{passage_backend.name} ({passage_backend.reason}): build with "
                               "passage_backend='onnxruntime' (--passage-backend onnxruntime)")
        return RayBuildBackend(artifact, precision, options, address=address, encoders=encoders,
                               block_bytes=block_bytes)

    return make
