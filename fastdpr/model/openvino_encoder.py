"""Passages -> embeddings with the OpenVINO runtime: the optional passage backend (issue #21).

Why a second backend: on CPUs where it is faster, OpenVINO's CPU plugin runs a statically quantized
int8 graph (NNCF) with bf16 for the rest, which ONNX Runtime's CPU kernels cannot. The export builds
that graph from the same PyTorch weights, validates it with the same gates as the ONNX int8 graph,
measures it side by side with it and records on which CPU class it was faster
(:mod:`fastdpr_export.openvino_backend`); ``fastdpr index`` uses it there.

Same input, same vector (issue #19): every input is padded to its own *bucket width*, the next
multiple of :data:`BUCKET_TOKENS` tokens (a function of its own length only), and a call batches only
inputs of one width. An input's embedding then does not depend on what else was encoded: OpenVINO's
result for a row padded to width W is the same bitwise alone or beside other rows of width W (checked
at export and in tests/test_openvino_backend.py). Padding to a few widths is also what makes it fast:
OpenVINO compiles kernels per input shape, and 16 widths reuse them where 256 lengths would not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from fastdpr.common.errors import ArtifactError, MissingDependencyError
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.session import default_threads
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import Feeds, SpecTokenizer

#: Inputs are padded to the next multiple of this many tokens (see the module docstring).
BUCKET_TOKENS = 16
INSTALL_HINT = "pip install 'fastdpr[openvino]'"


def require_openvino() -> Any:
    """The ``openvino`` module, or a :class:`MissingDependencyError` that says what to install."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(f"the OpenVINO backend needs the openvino runtime: {INSTALL_HINT}") from exc
    return openvino


def openvino_available() -> bool:
    """True when the openvino runtime imports (the ``openvino`` extra is installed)."""
    try:
        require_openvino()
    except MissingDependencyError:
        return False
    return True


def bucket_width(length: int, max_length: int, bucket: int = BUCKET_TOKENS) -> int:
    """The width an input of ``length`` tokens is padded to: the next multiple of ``bucket``, at most
    ``max_length`` (inputs are truncated to it, so no input is wider)."""
    return min(-(-length // bucket) * bucket, max(max_length, length))


def bucketed_calls(tokenizer: SpecTokenizer, encodings: Sequence[Encoding], batch_size: int,
                   bucket: int = BUCKET_TOKENS) -> list[tuple[np.ndarray, Feeds]]:
    """``(rows, feeds)`` per call: each input padded to its :func:`bucket_width`, inputs sorted by width
    (stable), a call holding at most ``batch_size`` inputs and never two widths. The export calibrates
    NNCF on these feeds too, so the static scales are taken from inputs shaped as the runtime feeds them."""
    spec = tokenizer.spec
    max_length = spec.max_length(tokenizer.side)
    widths = np.array([bucket_width(len(enc.ids), max_length, bucket) for enc in encodings], dtype=np.int64)
    order = np.argsort(widths, kind="stable")
    out: list[tuple[np.ndarray, Feeds]] = []
    start = 0
    while start < len(order):
        width = int(widths[order[start]])
        stop = start
        while stop < len(order) and stop - start < batch_size and widths[order[stop]] == width:
            stop += 1
        rows = order[start:stop]
        chosen = [encodings[i] for i in rows]
        input_ids = np.full((len(chosen), width), spec.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(chosen), width), dtype=np.int64)
        token_type_ids = np.zeros((len(chosen), width), dtype=np.int64)
        for row, enc in enumerate(chosen):
            n = len(enc.ids)
            input_ids[row, :n] = enc.ids
            attention_mask[row, :n] = 1
            if spec.token_types == "pair":
                token_type_ids[row, :n] = enc.type_ids
        out.append((rows, {"input_ids": input_ids, "attention_mask": attention_mask,
                           "token_type_ids": token_type_ids}))
        start = stop
    return out


class OpenVinoEncoder:
    """One side of a bi-encoder on OpenVINO: the artifact's tokenizer plus a compiled int8 IR whose output
    is the embedding. The same methods as :class:`~fastdpr.model.encoder.OnnxEncoder`.

    ``threads`` are OpenVINO's inference threads for one call (one stream, latency hint). Calls are
    serialized on one infer request (thread-safe; an encoder serves one index build at a time).
    """

    def __init__(self, model_path: Path, tokenizer: SpecTokenizer, threads: int | None = None,
                 bucket: int = BUCKET_TOKENS) -> None:
        ov = require_openvino()
        self.model_path = Path(model_path)
        if not self.model_path.is_file() or not self.model_path.with_suffix(".bin").is_file():
            raise ArtifactError(f"OpenVINO model {self.model_path} (or its .bin weights) is missing")
        self.tokenizer = tokenizer
        self.threads = threads or default_threads()
        self.dim = tokenizer.spec.dim
        self.bucket = bucket
        try:
            self._compiled = ov.Core().compile_model(str(self.model_path), "CPU", {
                "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise ArtifactError(f"OpenVINO cannot load {self.model_path}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(0)
        self._lock = threading.Lock()

    @property
    def side(self) -> Side:
        """Which side of the bi-encoder this is."""
        return self.tokenizer.side

    def inference_precision(self) -> str:
        """The precision OpenVINO runs the parts of the graph that are not int8 in (bf16 where the CPU has it)."""
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return str(precision.get_type_name() if hasattr(precision, "get_type_name") else precision)

    def tokenize(self, inputs: Sequence[str] | Sequence[tuple[str, str]]) -> list[Encoding]:
        """Tokenize inputs of this side, as :meth:`encode` does."""
        return self.tokenizer.encode(inputs)

    def encode(self, inputs: Sequence[str] | Sequence[tuple[str, str]], batch_size: int = 32,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed questions (strings) or passages ((title, text) pairs): ``[len(inputs), dim]`` float32."""
        return self.encode_tokenized(self.tokenize(inputs) if inputs else [], batch_size, on_batch)

    def encode_tokenized(self, encodings: Sequence[Encoding], batch_size: int = 32,
                         on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed tokenized inputs: calls of at most ``batch_size`` inputs of one bucket width."""
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for rows, feeds in self.calls(encodings, max(1, batch_size)):
            out[rows] = self.run(feeds)
            if on_batch is not None:
                on_batch(len(rows))
        return out

    def calls(self, encodings: Sequence[Encoding], batch_size: int) -> list[tuple[np.ndarray, Feeds]]:
        """``(rows, feeds)`` per call (:func:`bucketed_calls`)."""
        return bucketed_calls(self.tokenizer, encodings, batch_size, self.bucket)

    def run(self, feeds: Feeds) -> np.ndarray:
        """The compiled model on one call's feeds -> ``[rows, dim]`` float32."""
        with self._lock:
            result = self._request.infer(feeds)
            return np.array(result[self._output], dtype=np.float32)

    def encode_questions(self, questions: Sequence[str], batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Embed questions."""
        return self.encode(questions, batch_size)

    def encode_passages(self, passages: Sequence[tuple[str, str]], batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE,
                        on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed (title, text) passages."""
        return self.encode(passages, batch_size, on_batch)


#: An encoder of the artifact's context side on either runtime (what ``Artifact.passage_encoder`` returns).
SideEncoder = OnnxEncoder | OpenVinoEncoder
