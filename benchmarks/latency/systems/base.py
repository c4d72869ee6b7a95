"""The interface every system under test implements, and what the adapters share."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency.background import Background
from fastdpr.corpus.reader import Passage
from fastdpr.model.artifact import Artifact
from fastdpr.model.spec import SIDES, EncoderSpec, Side

#: Passages every query returns (top-k) and fetches.
K = 100
#: The parts of one end-to-end query each adapter times inside its call; "other" is what the timing
#: procedure measured around the call minus their sum (Python glue, result objects).
PARTS = ("tokenize", "encode", "search", "fetch")
#: Kinds decide the report's colours and which ratios are published (targets against baselines).
KINDS = ("baseline", "peer", "fastdpr")


@dataclass(frozen=True)
class SetupContext:
    """Everything an adapter may need to build itself; every adapter gets the same one."""

    artifact: Artifact
    artifact_dir: Path
    resolved: dict[Side, Any]  # fastdpr_export.sources.ResolvedSource per side
    threads: int
    batch_size: int
    workdir: Path
    corpus: Path  # the workload's passages as JSONL (what fastdpr indexes), background passages included
    log: Callable[[str], None]
    #: The SYNTHETIC background every system searches beside the measured passages (``--background``).
    background: Background | None = None

    @property
    def spec(self) -> EncoderSpec:
        """The artifact's encoder spec (tokenization, pooling, max lengths): every system follows it."""
        return self.artifact.spec


class System:
    """One system under test.

    ``encode_passages`` embeds passages as the system would for indexing; ``query`` answers one question
    end to end (tokenize -> encode -> top-:data:`K` search -> fetch the passages) in ONE call and returns
    the seconds of each part of :data:`PARTS` it measured inside that call. The timing procedure times the
    call itself from outside, the same way for every system.
    """

    name: str = ""

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        """Embed (title, text) passages, tokenization included, in input order."""
        raise NotImplementedError

    def attach(self, passages: list[Passage], vectors: np.ndarray) -> None:
        """Give the system the passages (and its own embeddings of them) to search; systems with their own
        index ignore it."""

    def query(self, question: str) -> dict[str, float]:
        """Answer one question end to end; seconds per part of :data:`PARTS`."""
        raise NotImplementedError

    def question_vectors(self, questions: Sequence[str]) -> np.ndarray:
        """The embeddings ``query`` computes for ``questions`` (one question per call, as ``query`` runs
        them; untimed): what the agreement check compares across systems."""
        raise NotImplementedError

    def search_recall(self, question_vectors: np.ndarray) -> float:
        """Recall@:data:`K` of the search ``query`` runs against exact search over the same passage
        vectors, for these question vectors (1.0 for exact search): the recall parity of a latency figure."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


@dataclass(frozen=True)
class SystemSpec:
    """A system the benchmark knows: its name, what it is, and how to build it."""

    name: str
    kind: str  # one of KINDS
    description: str
    build: Callable[[SetupContext], System]
    order: int  # position in tables (baselines first, fastdpr last)
    default: bool = True  # measured when --systems is not given


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest dot products, best first (what a PyTorch user writes with numpy)."""
    scores = vectors @ query
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    result: np.ndarray = top[np.argsort(-scores[top], kind="stable")]
    return result


class ListSearch(System):
    """Top-:data:`K` search over the system's own passage embeddings, passages looked up in a Python list:
    what a user of a bare encoder (PyTorch, optimum, OpenVINO) writes. ``ann=False``: exact numpy search;
    ``ann=True``: the user's own hnswlib graph with fastdpr's default settings (M, ef_construction, ef),
    built when the passages are attached (the peer's "own ANN" at a realistic corpus size)."""

    def __init__(self, ann: bool = False, threads: int = 1, graph_cache: Path | None = None) -> None:
        self.vectors: np.ndarray | None = None
        self.passages: list[Passage] = []
        self.ann = ann
        self.threads = threads
        self.graph: Any = None
        #: Where the graph is kept for a later run over the same vectors (building 200k takes minutes).
        self.graph_cache = graph_cache

    def attach(self, passages: list[Passage], vectors: np.ndarray) -> None:
        self.passages = passages
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.ann:
            import hnswlib

            from fastdpr.index.ann import build_hnsw
            from fastdpr.index.defaults import DEFAULT_EF

            digest = hashlib.sha256(self.vectors.tobytes()).hexdigest()
            record = None if self.graph_cache is None else self.graph_cache.with_name(self.graph_cache.name + ".sha256")
            if self.graph_cache is not None and record is not None and record.is_file() and \
                    record.read_text(encoding="utf-8") == digest:
                self.graph = hnswlib.Index(space="ip", dim=self.vectors.shape[1])
                self.graph.load_index(str(self.graph_cache), max_elements=len(self.vectors))
            else:
                self.graph = build_hnsw(self.vectors, threads=self.threads)  # fastdpr's builder and defaults
                if self.graph_cache is not None and record is not None:
                    self.graph.save_index(str(self.graph_cache))
                    record.write_text(digest, encoding="utf-8")
            self.graph.set_ef(DEFAULT_EF)

    def top(self, vector: np.ndarray) -> np.ndarray:
        """Labels of the top-:data:`K` passages for one question vector, best first."""
        assert self.vectors is not None, "attach() the passage embeddings first"
        if self.graph is not None:
            labels, _ = self.graph.knn_query(vector[None], k=min(K, len(self.vectors)), num_threads=1)
            return np.asarray(labels[0])
        return exact_top(self.vectors, vector, K)

    def embed_question(self, question: str) -> tuple[Any, Callable[[Any], np.ndarray]]:
        """Tokenize one question; return the model inputs and the function that embeds them."""
        raise NotImplementedError

    def question_vectors(self, questions: Sequence[str]) -> np.ndarray:
        vectors = []
        for question in questions:
            feeds, run = self.embed_question(question)
            vectors.append(np.asarray(run(feeds)[0], dtype=np.float32))
        return np.stack(vectors)

    def search_recall(self, question_vectors: np.ndarray) -> float:
        assert self.vectors is not None, "attach() the passage embeddings first"
        found = sum(len(set(self.top(v).tolist()) & set(exact_top(self.vectors, v, K).tolist()))
                    for v in question_vectors)
        return found / (len(question_vectors) * min(K, len(self.vectors)))

    def query(self, question: str) -> dict[str, float]:
        assert self.vectors is not None, "attach() the passage embeddings first"
        t0 = time.perf_counter()
        feeds, run = self.embed_question(question)
        t1 = time.perf_counter()
        vector = run(feeds)[0]
        t2 = time.perf_counter()
        labels = self.top(vector)
        t3 = time.perf_counter()
        [self.passages[int(i)] for i in labels]
        t4 = time.perf_counter()
        return {"tokenize": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "fetch": t4 - t3}


def hf_feeds(tokenizer: Any, spec: EncoderSpec, side: Side, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Hugging Face tokenization as a user of optimum / sentence-transformers runs it: padded to the batch's
    longest, truncated at the spec's max length, the spec's token-type convention; int64 numpy feeds."""
    max_length = spec.max_length(side)
    if side == "question":
        batch = tokenizer(list(inputs), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    else:
        batch = tokenizer([t for t, _ in inputs], [x for _, x in inputs], padding=True, truncation=True,
                          max_length=max_length, return_tensors="np")
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items()}
    if spec.token_types == "zeros":
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    return feeds


def encode_length_sorted(tokenizer: Any, spec: EncoderSpec, side: Side, inputs: Sequence[Any], batch_size: int,
                         run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
    """Embed ``inputs`` in batches of similar token length (each padded to its longest), results in input
    order: the batching every system gets for passages, so that a ratio measures the runtime, not the
    padding. Issue #21: on the MiniLM run's 256 SQuAD passages (seed 0, batches of 8, MiniLM's tokenizer),
    input order pads to 59,408 tokens and length-sorted batches to 40,408 (1.47x; 1.98x the attention
    work, sum of length^2): the optimum peer, batched in input order, was measured doing that much more."""
    texts = list(inputs) if side == "question" else [t for t, _ in inputs]
    pairs = None if side == "question" else [x for _, x in inputs]
    lengths = [len(ids) for ids in tokenizer(texts, pairs, truncation=True, max_length=spec.max_length(side))[
        "input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(inputs), spec.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        out[rows] = run(hf_feeds(tokenizer, spec, side, [inputs[i] for i in rows]))
    return out


def served_sides(artifact: Artifact, side: Side) -> list[Side]:
    """The sides served by the same model file as ``side`` (one file for both with ``--encoder``)."""
    model_dir = artifact.manifest["sides"][side]["dir"]
    return [s for s in SIDES if artifact.manifest["sides"][s]["dir"] == model_dir]
