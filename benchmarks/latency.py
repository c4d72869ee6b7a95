"""Passage-encoding throughput and single-question latency: fastdpr against PyTorch and optimum, one run.

    python -m benchmarks latency (--question-encoder SRC --context-encoder SRC | --encoder SRC | --shape SHAPE)
        [--squad dev-v1.1.json] [--threads 2] [--passages 512] [--queries 300] [--rounds 3] --out DIR

Systems, all measured in the same process, interleaved, with the same thread count:

* ``pytorch-fp32-padded``: Hugging Face tokenizer + model in PyTorch fp32 as DPR users run it: every
  batch padded to the max length, inputs in their own order.
* ``pytorch-fp32-sorted``: the same with fastdpr's batching (sorted by token length, padded to the
  longest of each batch).
* ``optimum-ort-int8``: the peer users try first: optimum's ``ORTModelForFeatureExtraction`` on an
  unpooled graph (``last_hidden_state``) exported, fused and quantized with fastdpr's own export code
  and recipe; Hugging Face tokenizer, batches in input order padded to their longest; pooling in numpy.
* ``fastdpr-fp32`` / ``fastdpr-int8``: the real runtime: ``Artifact.encoder("context", ...)`` for
  passages; ``Retriever`` over an index built with ``build_index`` for questions.

Throughput: every system encodes the same passages (SQuAD (title, text) paragraphs, or a fixed synthetic
length distribution) once per round; the order of systems rotates each round and the median passages/s
over rounds is reported. Latency: one question at a time, end to end (tokenize -> encode -> top-100
search -> fetch the passages), systems interleaved per question with a rotating order. PyTorch and
optimum search their own passage embeddings exactly with numpy and look passages up in a Python list;
fastdpr searches its HNSW index and fetches from its SQLite store. Warm-up runs are not measured.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import export_source, log, machine, median, percentiles, versions
from benchmarks.shapes import SHAPES, Shape, build_shape
from fastdpr.artifact import Artifact
from fastdpr.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.corpus import Passage, write_corpus
from fastdpr.encoder import OUTPUT_NAME
from fastdpr.spec import SIDES, EncoderSpec, Side

K = 100
SYSTEMS = ("pytorch-fp32-padded", "pytorch-fp32-sorted", "optimum-ort-int8", "fastdpr-fp32", "fastdpr-int8")
PYTORCH_SYSTEMS = ("pytorch-fp32-padded", "pytorch-fp32-sorted")
PARTS = ("tokenize", "encode", "search", "fetch")
RANDOM_WEIGHTS_LINE = "RANDOM WEIGHTS: speed only"
WARMUP_QUESTIONS = 3
# Idle time before every timed call. ONNX Runtime's intra-op threads (one pool per session) and
# PyTorch's OpenMP threads keep spinning for a moment after a call; without a pause, each system
# would be timed while the previous system's threads still burn the cores (measured: 2.5x slower
# single-question ORT calls right after another session's call, back to normal after 5 ms).
SETTLE_S = 0.02
# Synthetic workload (shape runs without --squad): token counts, special tokens included.
SYNTHETIC_PASSAGE_TOKENS = (64, 256)
SYNTHETIC_QUESTION_TOKENS = (8, 32)

DESCRIPTIONS = {
    "pytorch-fp32-padded": "HF tokenizer + PyTorch fp32, batches padded to max length, input order; "
                           "exact numpy top-100, list lookup",
    "pytorch-fp32-sorted": "HF tokenizer + PyTorch fp32, length-sorted batches padded to their longest; "
                           "exact numpy top-100, list lookup",
    "optimum-ort-int8": "optimum ORTModelForFeatureExtraction, unpooled graph fused + int8 (same recipe), "
                        "input order padded to longest, numpy pooling; exact numpy top-100, list lookup",
    "fastdpr-fp32": "fastdpr runtime, fused fp32 ONNX; HNSW top-100, SQLite fetch",
    "fastdpr-int8": "fastdpr runtime, fused int8 ONNX; HNSW top-100, SQLite fetch",
}


# ---------------------------------------------------------------------------------------------------
# Workload


@dataclass(frozen=True)
class Workload:
    """What every system encodes and searches."""

    passages: list[Passage]
    questions: list[str]
    description: dict[str, Any]


def _synthetic_words(tokenizer_path: Path) -> list[str]:
    """Whole-word vocabulary entries: each is exactly one WordPiece token, so a passage of n words is n tokens."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab()
    return sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 3)


def synthetic_workload(tokenizer_path: Path, passages_n: int, queries_n: int, seed: int) -> Workload:
    """Seeded random-word passages of uniform 64..256 tokens and questions of uniform 8..32 tokens.

    Passages are (title, text) pairs with a 1-4 word title; lengths count [CLS] and the two [SEP].
    """
    words = _synthetic_words(tokenizer_path)
    rng = random.Random(seed)
    passages = []
    for i in range(passages_n):
        tokens = rng.randint(*SYNTHETIC_PASSAGE_TOKENS)
        title_words = rng.randint(1, 4)
        title = " ".join(rng.choices(words, k=title_words))
        text = " ".join(rng.choices(words, k=tokens - 3 - title_words))
        passages.append(Passage(id=f"synthetic-{i}", title=title, text=text))
    questions = [" ".join(rng.choices(words, k=rng.randint(*SYNTHETIC_QUESTION_TOKENS) - 2)) + "?"
                 for _ in range(queries_n)]
    return Workload(passages, questions, {
        "source": "synthetic",
        "passages_note": f"seeded random vocabulary words, uniform {SYNTHETIC_PASSAGE_TOKENS[0]}.."
                         f"{SYNTHETIC_PASSAGE_TOKENS[1]} tokens (title 1-4 words)",
        "questions_note": f"seeded random vocabulary words, uniform {SYNTHETIC_QUESTION_TOKENS[0]}.."
                          f"{SYNTHETIC_QUESTION_TOKENS[1]} tokens",
    })


def squad_workload(squad: Path, passages_n: int, queries_n: int, seed: int) -> Workload:
    """A seeded sample of SQuAD paragraphs (as (title, text) passages) and of SQuAD questions."""
    from fastdpr.squad import load_squad

    passages, questions = load_squad(squad)
    rng = random.Random(seed)
    chosen = rng.sample(passages, min(passages_n, len(passages)))
    asked = rng.sample(questions, min(queries_n, len(questions)))
    return Workload(chosen, [q.question for q in asked], {
        "source": f"SQuAD v1.1 {squad.name}",
        "passages_note": f"seeded sample of {len(chosen)} of {len(passages)} paragraphs as (title, text)",
        "questions_note": f"seeded sample of {len(asked)} of {len(questions)} questions",
    })


def _length_stats(lengths: Sequence[int]) -> dict[str, float]:
    array = np.asarray(lengths)
    return {"mean": round(float(array.mean()), 1), "p50": float(np.median(array)), "min": int(array.min()),
            "max": int(array.max())}


# ---------------------------------------------------------------------------------------------------
# Systems


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest dot products, best first (what a PyTorch user writes with numpy)."""
    scores = vectors @ query
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    result: np.ndarray = top[np.argsort(-scores[top], kind="stable")]
    return result


class System:
    """One system under test: passages -> embeddings, and one question -> passages, timed in parts."""

    name: str

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        """Embed passages (tokenization included), in input order."""
        raise NotImplementedError

    def query(self, question: str) -> dict[str, float]:
        """Answer one question end to end; seconds per part (:data:`PARTS`)."""
        raise NotImplementedError

    def query_total(self, question: str) -> float | None:
        """Seconds of the system's own one-call search API, when it has one."""
        return None

    def close(self) -> None:
        """Release resources."""


class ListSearch:
    """Exact numpy search over a system's own passage embeddings, passages looked up in a Python list."""

    def __init__(self) -> None:
        self.vectors: np.ndarray | None = None
        self.passages: list[Passage] = []

    def attach(self, passages: list[Passage], vectors: np.ndarray) -> None:
        self.passages = passages
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, vector: np.ndarray) -> np.ndarray:
        assert self.vectors is not None, "attach() the passage embeddings first"
        return exact_top(self.vectors, vector, K)

    def fetch(self, labels: np.ndarray) -> list[Passage]:
        return [self.passages[int(i)] for i in labels]


class TorchSystem(System, ListSearch):
    """PyTorch fp32 through :class:`benchmarks.torch_baseline.TorchEncoder`."""

    def __init__(self, name: str, resolved: dict[Side, Any], spec: EncoderSpec, threads: int, padded: bool,
                 batch_size: int) -> None:
        from benchmarks.torch_baseline import TorchEncoder

        ListSearch.__init__(self)
        self.name = name
        self.batch_size = batch_size
        self.encoders = {
            side: TorchEncoder(str(resolved[side].directory), resolved[side].architecture, resolved[side].kind, spec,
                               side, threads, pad_to_max_length=padded, sort_by_length=not padded)
            for side in SIDES
        }

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.encoders["context"].encode(passages, self.batch_size)

    def query(self, question: str) -> dict[str, float]:
        encoder = self.encoders["question"]
        t0 = time.perf_counter()
        batch = encoder.tokenize([question])
        t1 = time.perf_counter()
        vector = encoder.run(batch)[0]
        t2 = time.perf_counter()
        labels = self.search(vector)
        t3 = time.perf_counter()
        self.fetch(labels)
        t4 = time.perf_counter()
        return {"tokenize": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "fetch": t4 - t3}


class UnpooledBackbone:
    """Builds the ``last_hidden_state`` graph optimum's feature-extraction class expects."""

    @staticmethod
    def export(resolved: Any, out_dir: Path, artifact: Artifact, side: Side,
               log_line: Callable[[str], None]) -> dict[str, Any]:
        """Export, fuse and quantize the source's backbone into ``out_dir`` (with config and tokenizer files),
        quantized exactly as ``artifact``'s model for ``side``: same recipe, same calibration inputs, and
        the same data-driven decisions (smoothing alpha, nodes kept fp32) replayed.

        Returns what the numpy pooling needs beyond the spec: DPR's projection weights, if any.
        """
        import torch

        from fastdpr_export.fusion import fuse
        from fastdpr_export.onnx_export import DEFAULT_OPSET
        from fastdpr_export.pipeline import artifact_calibration_batches
        from fastdpr_export.quantize import get_recipe, quantize
        from fastdpr_export.torch_model import load_hf_model

        model: Any = load_hf_model(resolved, eager_attention=True)  # eager: the pattern ORT's optimizer fuses
        projection = None
        if resolved.kind == "dpr":
            inner = model.question_encoder if resolved.architecture == "DPRQuestionEncoder" else model.ctx_encoder
            backbone = inner.bert_model
            if getattr(inner, "projection_dim", 0) > 0:
                projection = {"weight": inner.encode_proj.weight.detach().numpy().T.copy(),
                              "bias": inner.encode_proj.bias.detach().numpy().copy()}
        else:
            backbone = model

        class Unpooled(torch.nn.Module):
            def __init__(self, backbone: Any) -> None:
                super().__init__()
                # Named as in fastdpr's pooled export, so ONNX node names (e.g. nodes kept fp32) match.
                self.backbone = backbone

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids, return_dict=True).last_hidden_state

        out_dir.mkdir(parents=True, exist_ok=True)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
        input_ids = torch.tensor([[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.long)
        raw = out_dir / "raw.onnx"
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Unpooled(backbone).eval(), (input_ids, (input_ids != 0).long(),
                                                          torch.zeros_like(input_ids)),
                              str(raw), input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False)
        config = resolved.config
        fused = fuse(raw, out_dir / "model.onnx", int(config["num_attention_heads"]), int(config["hidden_size"]),
                     int(config["num_hidden_layers"]))
        quantization = artifact.manifest["quantization"]
        model_dir = artifact.manifest["sides"][side]["dir"]
        served = [s for s in SIDES if artifact.manifest["sides"][s]["dir"] == model_dir]
        calibration = artifact_calibration_batches(artifact, served)
        quantized = quantize(out_dir / "model.onnx", out_dir / "model_quantized.onnx",
                             get_recipe(quantization["recipe"]), calibration,
                             decisions=quantization["per_model"][model_dir])
        raw.unlink()
        (out_dir / "model.onnx").unlink()  # only the int8 graph is benchmarked
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (resolved.directory / name).is_file():
                shutil.copy2(resolved.directory / name, out_dir / name)
        log_line(f"    optimum peer {out_dir.name}: fused {fused}, quantized {quantized}")
        return {"projection": projection}


class OptimumSystem(System, ListSearch):
    """optimum's ``ORTModelForFeatureExtraction`` (int8), as a user of optimum would run it."""

    def __init__(self, resolved: dict[Side, Any], artifact: Artifact, threads: int, batch_size: int,
                 workdir: Path) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        ListSearch.__init__(self)
        self.name = "optimum-ort-int8"
        self.spec = artifact.spec
        self.batch_size = batch_size
        self.models: dict[Side, Any] = {}
        self.tokenizers: dict[Side, Any] = {}
        self.projections: dict[Side, Any] = {}
        for side in SIDES:
            directory = workdir / f"optimum-{side}"
            extra = UnpooledBackbone.export(resolved[side], directory, artifact, side, log)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.models[side] = ORTModelForFeatureExtraction.from_pretrained(
                directory, file_name="model_quantized.onnx", session_options=options,
                provider="CPUExecutionProvider")
            self.tokenizers[side] = AutoTokenizer.from_pretrained(directory, use_fast=True)
            self.projections[side] = extra["projection"]

    def _tokenize(self, side: Side, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        tokenizer = self.tokenizers[side]
        max_length = self.spec.max_length(side)
        if side == "question":
            batch = tokenizer(list(inputs), padding=True, truncation=True, max_length=max_length, return_tensors="np")
        else:
            batch = tokenizer([t for t, _ in inputs], [x for _, x in inputs], padding=True, truncation=True,
                              max_length=max_length, return_tensors="np")
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items()}
        if self.spec.token_types == "zeros":
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds

    def _run(self, side: Side, feeds: dict[str, np.ndarray]) -> np.ndarray:
        hidden = np.asarray(self.models[side](**feeds).last_hidden_state, dtype=np.float32)
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        projection = self.projections[side]
        if projection is not None:
            pooled = pooled @ projection["weight"] + projection["bias"]
        if self.spec.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled, dtype=np.float32)

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        chunks = [self._run("context", self._tokenize("context", passages[start:start + self.batch_size]))
                  for start in range(0, len(passages), self.batch_size)]
        return np.concatenate(chunks)

    def query(self, question: str) -> dict[str, float]:
        t0 = time.perf_counter()
        feeds = self._tokenize("question", [question])
        t1 = time.perf_counter()
        vector = self._run("question", feeds)[0]
        t2 = time.perf_counter()
        labels = self.search(vector)
        t3 = time.perf_counter()
        self.fetch(labels)
        t4 = time.perf_counter()
        return {"tokenize": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "fetch": t4 - t3}


class FastdprSystem(System):
    """The fastdpr runtime: an artifact's context encoder, and a ``Retriever`` over a real index."""

    def __init__(self, artifact: Artifact, precision: str, index_dir: Path, threads: int, batch_size: int) -> None:
        from fastdpr.retriever import Retriever

        self.name = f"fastdpr-{precision}"
        self.batch_size = batch_size
        self.context = artifact.encoder("context", precision, threads)
        self.retriever = Retriever.load(index_dir, threads=threads)

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.context.encode_passages(passages, self.batch_size)

    def query(self, question: str) -> dict[str, float]:
        retriever = self.retriever
        tokenizer = retriever.encoder.tokenizer
        t0 = time.perf_counter()
        feeds = tokenizer.feeds(tokenizer.encode([question]))
        t1 = time.perf_counter()
        vector = retriever.encoder.session.run([OUTPUT_NAME], feeds)[0]
        t2 = time.perf_counter()
        labels, _scores = retriever.searcher.search(vector, K)
        t3 = time.perf_counter()
        retriever.store.get(labels[0])
        t4 = time.perf_counter()
        return {"tokenize": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "fetch": t4 - t3}

    def query_total(self, question: str) -> float | None:
        t0 = time.perf_counter()
        self.retriever.search(question, k=K)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.retriever.close()


# ---------------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Measurements:
    """Raw numbers per system."""

    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    parts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    totals: dict[str, list[float]] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)


def _rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= len(names)
    return list(names[shift:]) + list(names[:shift])


def measure(systems: dict[str, System], workload: Workload, rounds: int, batch_size: int) -> Measurements:
    """Throughput rounds, then per-question latency, systems interleaved (rotating order) throughout."""
    pairs = [(p.title, p.text) for p in workload.passages]
    names = list(systems)
    result = Measurements()
    log(f"[latency] warm-up ({len(names)} systems)")
    for name in names:
        systems[name].encode_passages(pairs[:batch_size])
    for r in range(rounds):
        for name in _rotated(names, r):
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            vectors = systems[name].encode_passages(pairs)
            seconds = time.perf_counter() - start
            result.round_seconds.setdefault(name, []).append(seconds)
            result.embeddings.setdefault(name, vectors)
            log(f"[latency] round {r + 1}/{rounds} {name:20s} {len(pairs) / seconds:9.1f} passages/s")
    for name, system in systems.items():
        if isinstance(system, ListSearch):
            system.attach(workload.passages, result.embeddings[name])
    for question in workload.questions[:WARMUP_QUESTIONS]:
        for system in systems.values():
            system.query(question)
            system.query_total(question)
    log(f"[latency] {len(workload.questions)} questions, one at a time, systems interleaved")
    for i, question in enumerate(workload.questions):
        for name in _rotated(names, i):
            time.sleep(SETTLE_S)
            parts = systems[name].query(question)
            for part, seconds in parts.items():
                result.parts.setdefault(name, {}).setdefault(part, []).append(seconds * 1000)
            time.sleep(SETTLE_S)
            total = systems[name].query_total(question)
            result.totals.setdefault(name, []).append(
                total * 1000 if total is not None else sum(parts.values()) * 1000)
    return result


def agreement(embeddings: dict[str, np.ndarray], reference: str) -> dict[str, dict[str, float]]:
    """Cosine of every system's passage embeddings with the reference system's (a check that all systems
    run the same model; int8 is expected a little below 1)."""
    if reference not in embeddings:
        return {}
    ref = embeddings[reference]
    out = {}
    for name, vectors in embeddings.items():
        cos = (vectors * ref).sum(1) / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1),
                                                  1e-12)
        out[name] = {"min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6)}
    return out


def summarize(measured: Measurements, count: int) -> dict[str, dict[str, Any]]:
    """Per-system numbers for latency.json."""
    out: dict[str, dict[str, Any]] = {}
    for name, seconds in measured.round_seconds.items():
        parts = measured.parts[name]
        part_sums = [sum(values) for values in zip(*(parts[p] for p in PARTS), strict=True)]
        out[name] = {
            "description": DESCRIPTIONS[name],
            "passages_per_s": round(median([count / s for s in seconds]), 2),
            "passages_per_s_rounds": [round(count / s, 2) for s in seconds],
            "query_ms": percentiles(measured.totals[name]),
            "query_ms_sum_of_parts": percentiles(part_sums),
            "breakdown_ms": {part: percentiles(parts[part])["p50"] for part in PARTS},
        }
    return out


def ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Speedups (> 1: the first system is faster): passages/s ratio and query-latency ratios (p50, p95)."""
    pairs = [(a, b) for a in ("fastdpr-int8", "fastdpr-fp32", "optimum-ort-int8") for b in PYTORCH_SYSTEMS]
    pairs += [("fastdpr-int8", "fastdpr-fp32"), ("fastdpr-int8", "optimum-ort-int8")]
    out: dict[str, dict[str, float]] = {}
    for a, b in pairs:
        if a in systems and b in systems and "error" not in systems[a] and "error" not in systems[b]:
            sa, sb = systems[a], systems[b]
            out[f"{a} vs {b}"] = {
                "passages_per_s": round(sa["passages_per_s"] / sb["passages_per_s"], 2),
                "query_p50": round(sb["query_ms"]["p50"] / sa["query_ms"]["p50"], 2),
                "query_p95": round(sb["query_ms"]["p95"] / sa["query_ms"]["p95"], 2),
            }
    return out


# ---------------------------------------------------------------------------------------------------
# Profiling


def profile_passage_encoding(artifact: Artifact, precision: str, passages: Sequence[tuple[str, str]], threads: int,
                             batch_size: int, workdir: Path, top: int = 10) -> dict[str, Any]:
    """Where fastdpr's passage encoding spends its time.

    Two measurements: tokenization vs ONNX Runtime for the whole ``encode_passages`` loop (no profiler),
    then ORT's own profiler on a second session of the same model (same settings as
    :func:`fastdpr.session.make_session`, plus ``enable_profiling``), kernel time summed by operator type.
    """
    import onnxruntime as ort

    encoder = artifact.encoder("context", precision, threads)
    tokenizer = encoder.tokenizer
    t0 = time.perf_counter()
    encodings = tokenizer.encode(passages)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    batches = [tokenizer.feeds([encodings[i] for i in order[s:s + batch_size]])
               for s in range(0, len(order), batch_size)]
    tokenize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for feeds in batches:
        encoder.session.run([OUTPUT_NAME], feeds)
    session_s = time.perf_counter() - t0

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"ort-profile-{precision}")
    session = ort.InferenceSession(str(artifact.model_path("context", precision)), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    session.run([OUTPUT_NAME], batches[0])  # warm-up: its events are dropped below
    for feeds in batches:
        session.run([OUTPUT_NAME], feeds)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[1:]
    cutoff = runs[0]["ts"]
    by_op: dict[str, float] = {}
    nodes: dict[str, float] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event["ts"] < cutoff:
            continue
        op = event.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000
        node = name[: -len("_kernel_time")]
        nodes[node] = nodes.get(node, 0.0) + event["dur"] / 1000
    kernel_ms = sum(by_op.values())
    run_ms = sum(e["dur"] for e in runs) / 1000
    ops = sorted(by_op.items(), key=lambda item: -item[1])
    return {
        "system": f"fastdpr-{precision}",
        "passages": len(passages),
        "batch_size": batch_size,
        "threads": threads,
        "split_ms": {"tokenize_and_pad": round(tokenize_s * 1000, 1), "onnx_runtime": round(session_s * 1000, 1),
                     "tokenize_share": round(tokenize_s / (tokenize_s + session_s), 4)},
        "profiled_run_ms": round(run_ms, 1),
        "kernel_ms": round(kernel_ms, 1),
        "op_types": [{"op_type": op, "ms": round(ms, 1), "share": round(ms / kernel_ms, 4)} for op, ms in ops[:top]],
        "top_nodes": [{"node": n, "ms": round(ms, 1), "share": round(ms / kernel_ms, 4)}
                      for n, ms in sorted(nodes.items(), key=lambda item: -item[1])[:top]],
    }


# ---------------------------------------------------------------------------------------------------
# Reports


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}" if value >= 1 else f"{value:.3f}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """latency.md: header, the systems table, ratios, profile."""
    model = report["model"]
    lines = ["# fastdpr latency and throughput", ""]
    if model["random_weights"]:
        lines += [f"**{RANDOM_WEIGHTS_LINE}** (shape `{model['shape']['name']}`: random-weight DPR models; "
                  "no retrieval quality can be read from this run)", ""]
    workload = report["workload"]
    lines += [
        f"- date: {report['created_utc']}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"AVX512-VNNI {'yes' if report['machine']['avx512_vnni'] else 'no'}, {report['machine']['os']}",
        f"- model: {model['label']}" + (" (RANDOM WEIGHTS)" if model["random_weights"] else ""),
        f"- threads: {report['threads']} (torch.set_num_threads, ORT intra-op, hnswlib, tokenizers)",
        f"- load average (1 min) at start / end: {report['load_average']['start'][0]} / "
        f"{report['load_average']['end'][0]} on {report['machine']['cores']} cores"
        + (" - the machine was shared and busy: absolute numbers are pessimistic, and PyTorch's OpenMP "
           "threads suffer most from oversubscription" if max(report['load_average']['start'][0],
                                                             report['load_average']['end'][0])
           > (report['machine']['cores'] or 1) else ""),
        f"- passages: {workload['passages']['count']} ({workload['passages']['note']}), max length "
        f"{workload['passages']['max_length']}, tokens mean {workload['passages']['tokens']['mean']} / "
        f"max {workload['passages']['tokens']['max']}; batch size {workload['batch_size']}; "
        f"median of {workload['rounds']} interleaved rounds",
        f"- questions: {workload['questions']['count']} ({workload['questions']['note']}), one at a time, "
        f"top-{workload['k']}, systems interleaved per question, {workload['settle_ms']:.0f} ms idle before "
        "every timed call (so no system pays for the previous one's still-spinning threads)",
        f"- command: `{report['command']}`",
        "",
        "| system | passages/s | query p50 ms | p95 ms | p99 ms | tokenize | encode | search | fetch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, data in report["systems"].items():
        if "error" in data:
            lines.append(f"| {name} | error: {data['error'][:120]} | | | | | | | |")
            continue
        q, b = data["query_ms"], data["breakdown_ms"]
        lines.append(f"| {name} | {_fmt(data['passages_per_s'])} | {_fmt(q['p50'])} | {_fmt(q['p95'])} | "
                     f"{_fmt(q['p99'])} | {_fmt(b['tokenize'])} | {_fmt(b['encode'])} | {_fmt(b['search'])} | "
                     f"{_fmt(b['fetch'])} |")
    lines += ["", "Breakdown columns are per-part p50 ms (they need not add up to the p50 of the total). "
              "fastdpr's query time is `Retriever.search(q, k=100)`; the others' is the sum of their parts.", "",
              "## Ratios (same run; > 1 means the first system is faster)", "",
              "| comparison | passages/s | query p50 | query p95 |", "|---|---:|---:|---:|"]
    for name, r in report["ratios"].items():
        lines.append(f"| {name} | {r['passages_per_s']:.2f}x | {r['query_p50']:.2f}x | {r['query_p95']:.2f}x |")
    if report.get("agreement"):
        lines += ["", f"Embedding check against {report['agreement_reference']} (passage cosine): " + ", ".join(
            f"{n} min {a['min_cosine']:.4f}" for n, a in report["agreement"].items())]
    profile = report.get("profile")
    if profile and "error" not in profile:
        split = profile["split_ms"]
        lines += ["", f"## Where {profile['system']} passage encoding spends its time", "",
                  f"Tokenize + pad {split['tokenize_and_pad']} ms vs ONNX Runtime {split['onnx_runtime']} ms "
                  f"({split['tokenize_share'] * 100:.1f}% tokenization) for {profile['passages']} passages. "
                  f"ORT profiler, kernel time by operator type ({profile['kernel_ms']} ms of kernels in "
                  f"{profile['profiled_run_ms']} ms of runs):", "",
                  "| op type | ms | share |", "|---|---:|---:|"]
        for op in profile["op_types"]:
            lines.append(f"| {op['op_type']} | {op['ms']} | {op['share'] * 100:.1f}% |")
    elif profile:
        lines += ["", f"Profile failed: {profile['error']}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(report: dict[str, Any], path: Path) -> None:
    """latency.png: passages/s and query p50 per system, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in report["systems"].items() if "error" not in d]
    colors = ["#999999" if n.startswith("pytorch") else "#d08c2e" if n.startswith("optimum") else "#2e7dd0"
              for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    throughput = [report["systems"][n]["passages_per_s"] for n in names]
    latency = [report["systems"][n]["query_ms"]["p50"] for n in names]
    for axis, values, label in ((left, throughput, "passages/s (higher is better)"),
                                (right, latency, "query p50 ms, top-100 (lower is better)")):
        bars = axis.barh(names, values, color=colors)
        axis.invert_yaxis()
        axis.set_xlabel(label)
        for bar, value in zip(bars, values, strict=True):
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_fmt(value)}", va="center",
                      fontsize=8)
        if min(values) > 0 and max(values) / min(values) > 50:
            axis.set_xscale("log")
            axis.set_xlabel(label + ", log scale")
        axis.margins(x=0.2)
    right.set_yticklabels([])
    model = report["model"]
    title = f"{model['label']} - {report['threads']} threads - {report['machine']['cpu']}"
    if model["random_weights"]:
        title = f"{RANDOM_WEIGHTS_LINE.upper()}\n{title}"
    fig.suptitle(title, fontsize=10, color="#b00020" if model["random_weights"] else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# The command


def _command_line(params: dict[str, Any]) -> str:
    args = ["python", "-m", "benchmarks", "latency"]
    for key in ("question_encoder", "context_encoder", "encoder", "shape", "squad", "threads", "passages",
                "queries", "rounds", "batch_size", "seed", "quantize", "out"):
        value = params.get(key)
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    if params.get("systems") and tuple(params["systems"]) != SYSTEMS:
        args += ["--systems", ",".join(params["systems"])]
    if params.get("profile") is False:
        args.append("--no-profile")
    return shlex.join(args)


def run_latency(out: Path, *, question_encoder: str | None = None, context_encoder: str | None = None,
                encoder: str | None = None, shape: str | None = None, squad: Path | None = None, threads: int = 2,
                passages: int = 512, queries: int = 300, rounds: int = 3,
                batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE, seed: int = 0,
                quantize: str | None = None, systems: Sequence[str] = SYSTEMS, profile: bool = True,
                work: Path | None = None) -> dict[str, Any]:
    """Run the whole benchmark and write latency.json / .md / .png into ``out``; return the report."""
    import torch

    from fastdpr.index import IndexOptions, build_index
    from fastdpr_export.quantize import DEFAULT_RECIPE
    from fastdpr_export.sources import resolve_source

    params = {"question_encoder": question_encoder, "context_encoder": context_encoder, "encoder": encoder,
              "shape": shape, "squad": squad, "threads": threads, "passages": passages, "queries": queries,
              "rounds": rounds, "batch_size": batch_size, "seed": seed, "quantize": quantize, "systems": systems,
              "profile": profile,
              "out": out}
    chosen = [bool(question_encoder or context_encoder), bool(encoder), bool(shape)]
    if sum(chosen) != 1 or (chosen[0] and not (question_encoder and context_encoder)):
        raise click.UsageError("pass --question-encoder and --context-encoder, or --encoder, or --shape")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise click.UsageError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    recipe = quantize or DEFAULT_RECIPE
    started = time.perf_counter()
    load_start = os.getloadavg()
    # Pin every thread pool: torch, ORT (per session), hnswlib (per searcher), tokenizers (Rayon, read
    # when its pool first starts, i.e. at the first batch encode).
    os.environ["RAYON_RS_NUM_CPUS"] = str(threads)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    cleanup = work is None
    workdir = Path(tempfile.mkdtemp(prefix="fastdpr-latency-")) if work is None else work
    workdir.mkdir(parents=True, exist_ok=True)
    built: dict[str, System] = {}
    try:
        shape_info: Shape | None = SHAPES[shape] if shape else None
        if shape:
            log(f"[latency] building random-weight shape {shape}")
            dirs = build_shape(shape, workdir / "models", seed)
            question_encoder, context_encoder = str(dirs["question"]), str(dirs["context"])
        artifact_dir = workdir / "artifact"
        log(f"[latency] exporting {'encoder ' + str(encoder) if encoder else f'{question_encoder} / {context_encoder}'}"
            f" with {recipe}")
        export_source(artifact_dir, question_encoder, context_encoder, encoder, recipe)
        artifact = Artifact.load(artifact_dir)
        spec = artifact.spec
        sources = {side: artifact.manifest["sides"][side]["source"] for side in SIDES}
        (workdir / "sources").mkdir(exist_ok=True)
        resolved = {side: resolve_source(sources[side]["source"], side, workdir / "sources") for side in SIDES}

        workload = (squad_workload(squad, passages, queries, seed) if squad else
                    synthetic_workload(artifact.tokenizer_path("context"), passages, queries, seed))
        if not squad and not shape:
            log("[latency] no --squad: synthetic passages and questions")
        corpus = workdir / "passages.jsonl"
        write_corpus(corpus, workload.passages, "jsonl")
        pairs = [(p.title, p.text) for p in workload.passages]
        passage_tokens = [len(e.ids) for e in artifact.tokenizer("context").encode(pairs)]
        question_tokens = [len(e.ids) for e in artifact.tokenizer("question").encode(workload.questions)]

        errors: dict[str, str] = {}
        for name in systems:
            log(f"[latency] setting up {name}")
            if name in PYTORCH_SYSTEMS:
                built[name] = TorchSystem(name, resolved, spec, threads, padded=name.endswith("padded"),
                                          batch_size=batch_size)
            elif name == "optimum-ort-int8":
                try:
                    built[name] = OptimumSystem(resolved, artifact, threads, batch_size, workdir)
                except Exception as exc:  # the peer is reported as failed, never faked or fatal
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    log(f"[latency] {name} failed: {errors[name]}")
            else:
                precision = name.rsplit("-", 1)[1]
                index_dir = workdir / f"index-{precision}"
                build_index(artifact_dir, corpus, index_dir, "jsonl",
                            IndexOptions(precision=precision, threads=threads, force=True, progress=False))
                built[name] = FastdprSystem(artifact, precision, index_dir, threads, batch_size)

        measured = measure(built, workload, rounds, batch_size)
        summary = summarize(measured, len(pairs))
        system_report: dict[str, dict[str, Any]] = {}
        for name in systems:
            system_report[name] = summary[name] if name in summary else {"description": DESCRIPTIONS[name],
                                                                         "error": errors.get(name, "not run")}
        reference = "pytorch-fp32-sorted" if "pytorch-fp32-sorted" in measured.embeddings else next(
            iter(measured.embeddings))

        profile_report: dict[str, Any] | None = None
        if profile and "fastdpr-int8" in systems:
            log("[latency] profiling fastdpr-int8 passage encoding")
            try:
                profile_report = profile_passage_encoding(artifact, "int8", pairs, threads, batch_size, workdir)
            except Exception as exc:  # a profiler failure must not lose the measurements
                profile_report = {"error": f"{type(exc).__name__}: {exc}"}

        random_weights = shape_info is not None
        label = (f"random-weight DPR, shape {shape_info.name} ({shape_info.layers} layers x {shape_info.hidden} "
                 f"hidden, {shape_info.heads} heads, {shape_info.ffn} FFN)" if shape_info
                 else str(encoder) if encoder else f"{question_encoder} / {context_encoder}")
        report: dict[str, Any] = {
            "benchmark": "latency",
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": _command_line(params),
            "machine": machine(),
            "versions": {**versions(), **_extra_versions()},
            "threads": threads,
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()],
                             "note": "1/5/15-minute load averages: other processes on the machine during the run"},
            "model": {
                "label": label,
                "random_weights": random_weights,
                "note": RANDOM_WEIGHTS_LINE if random_weights else "trained weights",
                "shape": shape_info.to_dict() if shape_info else None,
                "sources": {side: sources[side]["source"] for side in SIDES},
                "architecture": {k: resolved["context"].config.get(k) for k in
                                 ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
                "spec": spec.to_dict(),
                "quantization": recipe,
            },
            "workload": {
                "passages": {"count": len(pairs), "source": workload.description["source"],
                             "note": workload.description["passages_note"], "seed": seed,
                             "max_length": spec.passage_max_length, "tokens": _length_stats(passage_tokens)},
                "questions": {"count": len(workload.questions), "source": workload.description["source"],
                              "note": workload.description["questions_note"], "seed": seed,
                              "max_length": spec.question_max_length, "tokens": _length_stats(question_tokens)},
                "k": K, "batch_size": batch_size, "rounds": rounds, "warmup": {
                    "passages": min(batch_size, len(pairs)), "questions": WARMUP_QUESTIONS},
                "interleaving": "throughput: system order rotates each round; latency: order rotates per question",
                "settle_ms": SETTLE_S * 1000,
            },
            "systems": system_report,
            "ratios": ratios(system_report),
            "agreement_reference": reference,
            "agreement": agreement(measured.embeddings, reference),
            "profile": profile_report,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (out / "latency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_markdown(report, out / "latency.md")
        write_plot(report, out / "latency.png")
        log(f"[latency] wrote {out}/latency.json, latency.md, latency.png in {report['seconds']} s")
        return report
    finally:
        for system in built.values():
            system.close()
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)


def _extra_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for package in ("optimum", "matplotlib"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _systems_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise click.BadParameter(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    return names


@click.command("latency", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--question-encoder", help="Question encoder source (hub id, directory, builtin:...).")
@click.option("--context-encoder", help="Context encoder source.")
@click.option("--encoder", help="One source serving both sides.")
@click.option("--shape", type=click.Choice(sorted(SHAPES)),
              help="A random-weight DPR pair of this shape (speed only; labelled RANDOM WEIGHTS).")
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SQuAD v1.1 JSON: real passages and questions (otherwise synthetic, for --shape).")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="Threads for every system (torch, ORT intra-op, hnswlib, tokenizers).")
@click.option("--passages", type=click.IntRange(1), default=512, show_default=True,
              help="Passages encoded per round (seeded sample).")
@click.option("--queries", type=click.IntRange(1), default=300, show_default=True,
              help="Questions for the latency measurement (seeded sample).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Interleaved throughput rounds (median reported).")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_PASSAGE_BATCH_SIZE, show_default=True,
              help="Passages per model call, for every system (default: fastdpr's indexing batch size).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quantize", "quantize", default=None, help="int8 recipe (default: fastdpr's default recipe).")
@click.option("--systems", default=",".join(SYSTEMS), show_default=True, callback=_systems_option,
              help="Comma-separated subset of systems.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile fastdpr-int8 passage encoding with ORT's profiler.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Keep exported models and indexes here (default: a temporary directory, removed).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results directory (latency.json, latency.md, latency.png).")
def latency_command(question_encoder: str | None, context_encoder: str | None, encoder: str | None,
                    shape: str | None, squad: Path | None, threads: int, passages: int, queries: int, rounds: int,
                    batch_size: int, seed: int, quantize: str | None, systems: tuple[str, ...], profile: bool,
                    work: Path | None, out: Path) -> None:
    """Passages/s and single-question latency of fastdpr against PyTorch and optimum, interleaved in one run."""
    run_latency(out, question_encoder=question_encoder, context_encoder=context_encoder, encoder=encoder,
                shape=shape, squad=squad, threads=threads, passages=passages, queries=queries, rounds=rounds,
                batch_size=batch_size, seed=seed, quantize=quantize, systems=systems, profile=profile, work=work)


if __name__ == "__main__":
    latency_command()
