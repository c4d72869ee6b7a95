"""Text -> embeddings with ONNX Runtime: tokenize, sort by length, batch, run the pooled graph."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fastdpr.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE
from fastdpr.session import make_session
from fastdpr.spec import Side
from fastdpr.tokenization import SpecTokenizer

OUTPUT_NAME = "embedding"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEncoder:
    """One side of a bi-encoder: a tokenizer plus an ONNX session whose graph outputs the embedding.

    Inputs are sorted by token length before batching, so a batch holds similar lengths and padding
    costs little; results come back in input order.
    """

    def __init__(self, model_path: Path, tokenizer: SpecTokenizer, threads: int | None = None) -> None:
        self.model_path = Path(model_path)
        self.tokenizer = tokenizer
        self.session = make_session(self.model_path, threads)
        self.dim = tokenizer.spec.dim

    @property
    def side(self) -> Side:
        """Which side of the bi-encoder this is."""
        return self.tokenizer.side

    def encode(self, inputs: Sequence[str] | Sequence[tuple[str, str]], batch_size: int = 32,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed questions (strings) or passages ((title, text) pairs): ``[len(inputs), dim]`` float32."""
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        if not inputs:
            return out
        for rows, feeds in self.tokenizer.sorted_batches(inputs, batch_size):
            out[rows] = self.session.run([OUTPUT_NAME], feeds)[0]
            if on_batch is not None:
                on_batch(len(rows))
        return out

    def encode_questions(self, questions: Sequence[str], batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> np.ndarray:
        """Embed questions."""
        return self.encode(questions, batch_size)

    def encode_passages(self, passages: Sequence[tuple[str, str]], batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE,
                        on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed (title, text) passages."""
        return self.encode(passages, batch_size, on_batch)
