"""The fastdpr runtime: an artifact's context encoder for passages, ``Retriever.search`` for questions."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency.background import build_index_with_background
from benchmarks.latency.systems.base import K, SetupContext, System, SystemSpec


class _Timed:
    """A stand-in for ``target`` whose method ``method`` adds its seconds to ``record[part]``; every other
    attribute is the target's. Lets one real ``Retriever.search`` call report its parts."""

    def __init__(self, target: Any, method: str, part: str, record: dict[str, float]) -> None:
        self._target = target
        original: Callable[..., Any] = getattr(target, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record[part] = record.get(part, 0.0) + time.perf_counter() - start

        setattr(self, method, timed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


#: Index directories built in this process.
_BUILT: set[Path] = set()


def _built_before(index_dir: Path, context: SetupContext) -> bool:
    """True when ``index_dir`` holds an index of this run's corpus file (same bytes: a seeded workload and
    background write the same file) from this run's artifact, e.g. the 1-thread run's index reused by the
    2-thread run in the same ``--work`` directory (building a 200k-passage graph takes minutes)."""
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
        recorded = _corpus_record(index_dir).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return False
    return recorded == _sha256(context.corpus) and manifest.get("artifact", {}).get("identity") == \
        context.artifact.identity


def _corpus_record(index_dir: Path) -> Path:
    # Beside the index, not in it: the index directory holds only what its manifest lists.
    return index_dir.with_name(index_dir.name + ".corpus.sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class FastdprSystem(System):
    """The artifact's context encoder for passages, on the runtime ``fastdpr index`` picks here
    (``Artifact.passage_backend``: ONNX Runtime, or the artifact's OpenVINO graph where the export measured
    it faster on this CPU class); ``Retriever.search(q, k=100)`` over an index built with ``build_index``
    (HNSW + SQLite store) for questions, its parts timed inside that one call."""

    def __init__(self, context: SetupContext, precision: str, passages_in_memory: bool = False,
                 passage_backend: str = "auto") -> None:
        from fastdpr.index.build import IndexOptions, build_index
        from fastdpr.search.retriever import Retriever

        self.name = (f"fastdpr-{precision}" + ("-memory" if passages_in_memory else "")
                     + ("" if passage_backend == "auto" else f"-{passage_backend}-passages"))
        self.batch_size = context.batch_size
        self.passage_backend = context.artifact.passage_backend(precision, passage_backend)
        self.context = context.artifact.passage_encoder(self.passage_backend, precision, context.threads)
        context.log(f"    {self.name}: passages on {self.passage_backend.name} ({self.passage_backend.reason})")
        index_dir = context.workdir / f"index-{precision}"
        if index_dir not in _BUILT and _built_before(index_dir, context):
            context.log(f"    reusing {index_dir} (built by an earlier run in this --work directory from the same "
                        "corpus file)")
            _BUILT.add(index_dir)
        if index_dir not in _BUILT:  # the systems of one precision search the same index
            if context.background is None:
                build_index(context.artifact_dir, context.corpus, index_dir, "jsonl",
                            IndexOptions(precision=precision, threads=context.threads, force=True, progress=False))
            else:
                build_index_with_background(context.artifact_dir, context.corpus, index_dir, precision,
                                            context.threads, context.batch_size, context.background)
            _BUILT.add(index_dir)
            _corpus_record(index_dir).write_text(_sha256(context.corpus), encoding="utf-8")
        self.retriever = Retriever.load(index_dir, threads=context.threads, passages_in_memory=passages_in_memory)
        self._record: dict[str, float] = {}
        retriever: Any = self.retriever
        encoder = retriever.encoder
        self._question_encoder = encoder  # the untimed encoder Retriever.search calls
        encoder.session = _Timed(encoder.session, "run", "encode", self._record)
        retriever.encoder = _Timed(encoder, "encode_questions", "_encoder", self._record)
        retriever.searcher = _Timed(retriever.searcher, "search", "search", self._record)
        retriever.store = _Timed(retriever.store, "texts", "fetch", self._record)  # what search_vectors reads

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.context.encode_passages(passages, self.batch_size)

    def settings(self) -> dict[str, Any]:
        """What the report records about how fastdpr ran: the passage runtime and why it was chosen."""
        return {"passage_backend": self.passage_backend.to_dict()}

    def query(self, question: str) -> dict[str, float]:
        self._record.clear()
        self.retriever.search(question, k=K)
        record = self._record
        return {"tokenize": record["_encoder"] - record["encode"], "encode": record["encode"],
                "search": record["search"], "fetch": record["fetch"]}

    def question_vectors(self, questions: Sequence[str]) -> np.ndarray:
        return np.stack([self._question_encoder.encode_questions([question])[0] for question in questions])

    def search_recall(self, question_vectors: np.ndarray) -> float:
        from fastdpr.index.ann import ExactSearcher
        from fastdpr.index.manifest import IndexManifest

        manifest = self.retriever.typed_manifest
        assert isinstance(manifest, IndexManifest)  # the benchmark builds one unsharded index
        exact = ExactSearcher.load(manifest.path(manifest.vectors), manifest.spec.dim, manifest.count)
        found, _ = self.retriever.searcher.search(question_vectors, K)
        truth, _ = exact.search(question_vectors, K)
        hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True))
        return hits / truth.size

    def close(self) -> None:
        self.retriever.close()


ADAPTERS = (
    SystemSpec("fastdpr-fp32", "fastdpr", "fastdpr runtime, fused fp32 ONNX; Retriever.search: HNSW top-100, "
               "SQLite fetch", lambda context: FastdprSystem(context, "fp32"), order=20),
    SystemSpec("fastdpr-int8", "fastdpr", "fastdpr runtime, fused int8 ONNX; Retriever.search: HNSW top-100, "
               "SQLite fetch", lambda context: FastdprSystem(context, "int8"), order=21),
    SystemSpec("fastdpr-int8-onnxruntime-passages", "fastdpr", "fastdpr-int8 with its passages on ONNX Runtime "
               "whatever the artifact's OpenVINO graph measured (--passage-backend onnxruntime)",
               lambda context: FastdprSystem(context, "int8", passage_backend="onnxruntime"), order=23, default=False),
    SystemSpec("fastdpr-int8-memory", "fastdpr", "fastdpr-int8 loaded with passages_in_memory=True: hits fetched "
               "from a list instead of SQLite", lambda context: FastdprSystem(context, "int8", passages_in_memory=True),
               order=22, default=False),
)
