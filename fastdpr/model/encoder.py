"""Text -> embeddings with ONNX Runtime: tokenize, sort by length, batch, run the pooled graph."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding

from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE, INPUTS_PER_CALL
from fastdpr.model.session import default_threads, make_session
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import Feeds, SpecTokenizer

OUTPUT_NAME = "embedding"


class PassageEncoder(Protocol):
    """What encodes an index's passages: :class:`OnnxEncoder`, or the OpenVINO backend's
    :class:`~fastdpr.model.openvino_encoder.OpenVinoEncoder`."""

    dim: int

    def encode_passages(self, passages: Sequence[tuple[str, str]], batch_size: int = ...,
                        on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed (title, text) passages, in input order."""
        ...
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEncoder:
    """One side of a bi-encoder: a tokenizer plus an ONNX session whose graph outputs the embedding.

    Every ONNX Runtime call holds ``inputs_per_call`` inputs (default :data:`INPUTS_PER_CALL`, one):
    an embedding then depends on its own text only, bitwise, whatever it is encoded with (dynamic int8
    takes one activation scale per call). ``inputs_per_call=None`` lets calls hold whole length-sorted
    batches (padded to their longest member); the benchmarks use it to measure what batching did.
    Results come back in input order.

    With ``threads`` > 1, a lone input runs on one session with ``threads`` intra-op threads (lowest
    latency); many inputs run as ``threads`` concurrent calls on a second, single-threaded session
    (created on first use), because one small input keeps two intra-op threads only partly busy.
    Either way each call computes the same thing: an embedding does not depend on how many threads
    (or which session) computed it (tests/test_invariance.py checks this bitwise).
    """

    def __init__(self, model_path: Path, tokenizer: SpecTokenizer, threads: int | None = None,
                 inputs_per_call: int | None = INPUTS_PER_CALL) -> None:
        if inputs_per_call is not None and inputs_per_call < 1:
            raise ValueError(f"inputs_per_call must be at least 1 or None, got {inputs_per_call}")
        self.model_path = Path(model_path)
        self.tokenizer = tokenizer
        self.threads = threads or default_threads()
        self.session = make_session(self.model_path, self.threads)
        self.dim = tokenizer.spec.dim
        self.inputs_per_call = inputs_per_call
        self._concurrent_session: ort.InferenceSession | None = None
        self._concurrent_session_lock = threading.Lock()

    @property
    def side(self) -> Side:
        """Which side of the bi-encoder this is."""
        return self.tokenizer.side

    def encode(self, inputs: Sequence[str] | Sequence[tuple[str, str]], batch_size: int = 32,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed questions (strings) or passages ((title, text) pairs): ``[len(inputs), dim]`` float32.

        ``on_batch`` is called with the number of inputs each ONNX Runtime call embedded."""
        return self.encode_tokenized(self.tokenize(inputs) if inputs else [], batch_size, on_batch)

    def tokenize(self, inputs: Sequence[str] | Sequence[tuple[str, str]]) -> list[Encoding]:
        """Tokenize inputs of this side, as :meth:`encode` does (for a caller that also needs the token
        counts: tokenize once, then :meth:`encode_tokenized`)."""
        return self.tokenizer.encode(inputs)

    def encode_tokenized(self, encodings: Sequence[Encoding], batch_size: int = 32,
                         on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed inputs tokenized by :meth:`tokenize`: bitwise what :meth:`encode` gives their text."""
        if len(encodings) == 1:
            # One input (a lone question): one call, no sorting, no output buffer to scatter into.
            feeds = self.tokenizer.feeds(encodings)
            embedding = np.asarray(self.session.run([OUTPUT_NAME], feeds)[0], dtype=np.float32)
            if on_batch is not None:
                on_batch(1)
            return embedding
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        if not encodings:
            return out
        per_call = batch_size if self.inputs_per_call is None else min(batch_size, self.inputs_per_call)
        calls = self.tokenizer.batches(encodings, per_call)
        if self.threads == 1 or len(encodings) <= per_call:
            for rows, feeds in calls:
                out[rows] = self.session.run([OUTPUT_NAME], feeds)[0]
                if on_batch is not None:
                    on_batch(len(rows))
            return out
        session = self._single_threaded_session()
        pending = list(calls)

        def run(call: tuple[np.ndarray, Feeds]) -> np.ndarray:
            return np.asarray(session.run([OUTPUT_NAME], call[1])[0])

        pool = ThreadPoolExecutor(min(self.threads, len(pending)), thread_name_prefix="fastdpr-encode")
        try:
            # map() yields in submission order: rows are written, and progress reported, in order.
            for (rows, _), embeddings in zip(pending, pool.map(run, pending), strict=True):
                out[rows] = embeddings
                if on_batch is not None:
                    on_batch(len(rows))
        finally:
            # On an error or Ctrl-C, drop the calls not started yet instead of running them all first.
            pool.shutdown(wait=True, cancel_futures=True)
        return out

    def load_sessions(self) -> None:
        """Create now every session this encoder may use (the one for concurrent calls is otherwise made on
        first use), so its model file may be removed afterwards (a Ray worker's temporary copy)."""
        if self.threads > 1:
            self._single_threaded_session()

    def _single_threaded_session(self) -> ort.InferenceSession:
        """The session that concurrent calls share (one intra-op thread each), created on first use."""
        with self._concurrent_session_lock:
            if self._concurrent_session is None:
                self._concurrent_session = make_session(self.model_path, 1)
            return self._concurrent_session

    def encode_questions(self, questions: Sequence[str], batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Embed questions."""
        return self.encode(questions, batch_size)

    def encode_passages(self, passages: Sequence[tuple[str, str]], batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE,
                        on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed (title, text) passages."""
        return self.encode(passages, batch_size, on_batch)
