"""Tokenization for both sides of a bi-encoder, from an artifact's ``tokenizer.json`` and its spec.

DPR conventions live here and nowhere else: questions are encoded alone; passages as (title, text)
pairs (text alone when the title is empty, as DPR's ``BertTensorizer`` does); truncation is
``longest_first`` at the spec's max length; the second segment's token type ids are zeros or the
tokenizer's own, as the spec says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from fastdpr.common.errors import ArtifactError
from fastdpr.model.spec import EncoderSpec, Side

Feeds = dict[str, np.ndarray]


class SpecTokenizer:
    """A ``tokenizers.Tokenizer`` configured by an :class:`EncoderSpec` for one side."""

    def __init__(self, tokenizer_path: Path, spec: EncoderSpec, side: Side) -> None:
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ArtifactError(f"cannot read tokenizer {tokenizer_path}: {exc}") from exc
        # tokenizer.json files often carry their own padding/truncation (MiniLM's pads every input to
        # 128): the spec, not the file, decides, so reset both and apply ours.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._tokenizer.enable_truncation(max_length=spec.max_length(side), strategy="longest_first")
        self.spec = spec
        self.side = side

    def encode_questions(self, questions: Sequence[str]) -> list[Encoding]:
        """Encode questions as single segments."""
        if len(questions) == 1:
            # A lone question (every search call of a server or the CLI): ``encode`` skips the batch
            # call's hand-off to the tokenizers thread pool and gives the same encoding.
            return [self._tokenizer.encode(questions[0])]
        return self._tokenizer.encode_batch(list(questions))

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> list[Encoding]:
        """Encode (title, text) passages: a pair when the title is non-empty, else the text alone."""
        out: list[Encoding | None] = [None] * len(passages)
        with_title = [i for i, (title, _) in enumerate(passages) if title.strip()]
        without_title = [i for i, (title, _) in enumerate(passages) if not title.strip()]
        if with_title:
            pairs = [(passages[i][0], passages[i][1]) for i in with_title]
            for i, enc in zip(with_title, self._tokenizer.encode_batch(pairs), strict=True):
                out[i] = enc
        if without_title:
            texts = [passages[i][1] for i in without_title]
            for i, enc in zip(without_title, self._tokenizer.encode_batch(texts), strict=True):
                out[i] = enc
        return [enc for enc in out if enc is not None]

    def encode(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> list[Encoding]:
        """Encode inputs of this tokenizer's side (questions: strings; context: (title, text))."""
        if self.side == "question":
            return self.encode_questions(texts)  # type: ignore[arg-type]
        return self.encode_passages(texts)  # type: ignore[arg-type]

    def sorted_batches(self, inputs: Sequence[str] | Sequence[tuple[str, str]],
                       batch_size: int) -> Iterator[tuple[np.ndarray, Feeds]]:
        """Tokenize ``inputs`` and yield ``(row indices, feeds)`` batches, sorted by token length so a
        batch holds similar lengths and padding costs little (the batching the runtime deploys)."""
        return self.batches(self.encode(inputs), batch_size)

    def batches(self, encodings: Sequence[Encoding], batch_size: int) -> Iterator[tuple[np.ndarray, Feeds]]:
        """As :meth:`sorted_batches`, for inputs tokenized already (by :meth:`encode`)."""
        order = np.argsort([len(enc.ids) for enc in encodings], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self.feeds([encodings[i] for i in rows])

    def feeds(self, encodings: Sequence[Encoding]) -> Feeds:
        """Pad a batch of encodings to its longest member and return the model's int64 inputs."""
        if len(encodings) == 1:
            return self._single_feeds(encodings[0])
        width = max((len(enc.ids) for enc in encodings), default=1)
        count = len(encodings)
        input_ids = np.full((count, width), self.spec.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((count, width), dtype=np.int64)
        token_type_ids = np.zeros((count, width), dtype=np.int64)
        pair_types = self.spec.token_types == "pair"
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            input_ids[row, :n] = enc.ids
            attention_mask[row, :n] = 1
            if pair_types:
                token_type_ids[row, :n] = enc.type_ids
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def _single_feeds(self, encoding: Encoding) -> Feeds:
        # One input has no padding: its arrays convert straight from the encoding's lists (what
        # :meth:`feeds` computes for a batch of one, without filling padded buffers row by row).
        input_ids = np.array(encoding.ids, dtype=np.int64).reshape(1, -1)
        token_type_ids = (np.array(encoding.type_ids, dtype=np.int64).reshape(1, -1)
                          if self.spec.token_types == "pair" else np.zeros_like(input_ids))
        return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "token_type_ids": token_type_ids}
