"""Passages and their embeddings, encoded a window of chunks at a time, handed out in any sizes.

Chunks are the unit of work of a :class:`~fastdpr.index.chunks.ChunkEncoder` (a Ray Data row, a group
that is tokenized and length-sorted together) and what bounds a build's memory. Where a chunk starts
does not matter to any vector: every ONNX Runtime call embeds one passage
(:data:`fastdpr.model.batching.INPUTS_PER_CALL`, issue #19), so a build that resumes mid-chunk simply
starts its first chunk there.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np

from fastdpr.common.errors import FastDPRError
from fastdpr.corpus.reader import Passage
from fastdpr.index.chunks import ChunkEncoder, OnEncoded
from fastdpr.model.batching import ENCODE_CHUNK

#: Encoded passages handed out together: the passages and their ``float32 [n, dim]`` vectors.
Piece = tuple[list[Passage], np.ndarray]


class EncodedStream:
    """Encodes ``passages`` with ``encoder`` and hands out ``(passages, vectors)`` pieces on demand.

    Holds at most ``encoder.window`` chunks of ``chunk`` passages in memory. ``on_encoded(n)`` is
    called with the number of passages encoded (for a progress bar).
    """

    def __init__(self, passages: Iterator[Passage], encoder: ChunkEncoder, chunk: int = ENCODE_CHUNK,
                 on_encoded: OnEncoded | None = None) -> None:
        if chunk < 1:
            raise FastDPRError(f"a chunk holds at least one passage, got {chunk}")
        self._passages = passages
        self._encoder = encoder
        self._chunk = chunk
        self._on_encoded = on_encoded
        self._buffer: list[Passage] = []
        self._vectors = np.zeros((0, encoder.dim), dtype=np.float32)

    def exhausted(self) -> bool:
        """True when every passage has been handed out (reads and encodes the next chunks to find out)."""
        return not self._buffer and not self._fill()

    def take(self, count: int | None = None) -> Iterator[Piece]:
        """The next ``count`` passages (None: all that are left; fewer at the end of the corpus) with their
        vectors, in pieces of at most one window."""
        remaining = count
        while (remaining is None or remaining > 0) and not self.exhausted():
            size = len(self._buffer) if remaining is None else min(remaining, len(self._buffer))
            yield self._buffer[:size], self._vectors[:size]
            self._buffer, self._vectors = self._buffer[size:], self._vectors[size:]
            if remaining is not None:
                remaining -= size

    def _fill(self) -> bool:
        chunks: list[list[Passage]] = []
        while len(chunks) < self._encoder.window and (chunk := list(islice(self._passages, self._chunk))):
            chunks.append(chunk)
        if not chunks:
            return False
        encoded = self._encoder.encode_chunks(chunks, self._on_encoded)
        if not all(np.isfinite(vectors).all() for vectors in encoded):
            raise FastDPRError("the encoder produced NaN/inf embeddings; is the artifact damaged?")
        self._buffer = [p for chunk in chunks for p in chunk]
        self._vectors = encoded[0] if len(encoded) == 1 else np.concatenate(encoded)
        return True
