"""Passages and their embeddings, encoded in chunks aligned to corpus position, handed out in any sizes.

Why aligned chunks: the encoder sorts a chunk by length and batches it, and an int8 model quantizes
activations per batch, so a passage's embedding depends (in the last bits, sometimes more) on the
passages batched with it. Encoding chunk ``c`` always as corpus positions ``[c * chunk, (c + 1) *
chunk)``, as :func:`fastdpr.index.build_index` does, gives every passage the same vector whatever the
shard size, and whether the build ran in one go or was resumed mid-chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import numpy as np

from fastdpr.corpus import Passage
from fastdpr.encoder import OnnxEncoder
from fastdpr.errors import FastDPRError


class EncodedStream:
    """Encodes ``passages`` chunk by chunk and hands out ``(passages, vectors)`` pieces on demand.

    ``lead`` are the passages just before ``passages`` in the same chunk (already indexed, when a build
    resumes mid-chunk): they are encoded again for their batch context only and never handed out.
    Holds at most one chunk in memory. ``on_encoded(n)`` is called with the number of new passages
    encoded (for a progress bar).
    """

    def __init__(self, passages: Iterator[Passage], encoder: OnnxEncoder, batch_size: int, chunk: int,
                 lead: Sequence[Passage] = (), on_encoded: Callable[[int], None] | None = None) -> None:
        if len(lead) >= chunk:
            raise FastDPRError(f"a chunk's lead must be shorter than the chunk ({len(lead)} >= {chunk})")
        self._passages = passages
        self._encoder = encoder
        self._batch_size = batch_size
        self._chunk = chunk
        self._lead = list(lead)
        self._on_encoded = on_encoded
        self._buffer: list[Passage] = []
        self._vectors = np.zeros((0, encoder.dim), dtype=np.float32)

    def exhausted(self) -> bool:
        """True when every passage has been handed out (reads and encodes the next chunk to find out)."""
        return not self._buffer and not self._fill()

    def take(self, count: int) -> Iterator[tuple[list[Passage], np.ndarray]]:
        """The next ``count`` passages (fewer at the end of the corpus) with their vectors, in pieces of at
        most one chunk."""
        remaining = count
        while remaining > 0 and not self.exhausted():
            size = min(remaining, len(self._buffer))
            yield self._buffer[:size], self._vectors[:size]
            self._buffer, self._vectors = self._buffer[size:], self._vectors[size:]
            remaining -= size

    def _fill(self) -> bool:
        lead, self._lead = self._lead, []
        fresh = list(islice(self._passages, self._chunk - len(lead)))
        if not fresh:
            return False
        # Per-batch progress would count the lead too; it only exists for the first chunk of a resume.
        on_batch = self._on_encoded if not lead else None
        vectors = self._encoder.encode_passages([(p.title, p.text) for p in [*lead, *fresh]], self._batch_size,
                                                on_batch=on_batch)
        if not np.isfinite(vectors).all():
            raise FastDPRError("the encoder produced NaN/inf embeddings; is the artifact damaged?")
        if lead and self._on_encoded is not None:
            self._on_encoded(len(fresh))
        self._buffer, self._vectors = fresh, vectors[len(lead):]
        return True
