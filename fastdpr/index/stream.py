"""Passages and their embeddings, encoded in chunks aligned to corpus position, handed out in any sizes.

Why aligned chunks: chunk ``c`` is always corpus positions ``[c * chunk, (c + 1) * chunk)``, as in
:func:`fastdpr.index.build.build_index`, so every build path does the same work in the same order. A
passage's vector does not depend on its chunk: every ONNX Runtime call embeds one passage
(:data:`fastdpr.model.batching.INPUTS_PER_CALL`, issue #19). Before that, an int8 model quantized
activations per batch, and the aligned chunks (and the ``lead`` re-encoded on a mid-chunk resume)
were what gave a passage the same vector in every build; the lead is now redundant work, left for
the build paths' merge (issue #20) to remove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import numpy as np

from fastdpr.common.errors import FastDPRError
from fastdpr.corpus.reader import Passage
from fastdpr.model.encoder import OnnxEncoder


class EncodedStream:
    """Encodes ``passages`` chunk by chunk and hands out ``(passages, vectors)`` pieces on demand.

    ``lead`` are the passages just before ``passages`` in the same chunk (already indexed, when a build
    resumes mid-chunk): they are encoded again for their batch context only and never handed out.
    Holds at most ``window`` chunks in memory (one here; a subclass that encodes chunks in parallel
    reads several at a time). ``on_encoded(n)`` is called with the number of new passages encoded
    (for a progress bar).
    """

    window = 1

    def __init__(self, passages: Iterator[Passage], encoder: OnnxEncoder | None, batch_size: int, chunk: int,
                 lead: Sequence[Passage] = (), on_encoded: Callable[[int], None] | None = None, *,
                 dim: int | None = None) -> None:
        if len(lead) >= chunk:
            raise FastDPRError(f"a chunk's lead must be shorter than the chunk ({len(lead)} >= {chunk})")
        self._passages = passages
        self._encoder = encoder
        self._batch_size = batch_size
        self._chunk = chunk
        self._lead = list(lead)
        self._on_encoded = on_encoded
        self._buffer: list[Passage] = []
        width = dim if dim is not None else encoder.dim if encoder is not None else 0
        self._vectors = np.zeros((0, width), dtype=np.float32)

    def exhausted(self) -> bool:
        """True when every passage has been handed out (reads and encodes the next chunks to find out)."""
        return not self._buffer and not self._fill()

    def take(self, count: int) -> Iterator[tuple[list[Passage], np.ndarray]]:
        """The next ``count`` passages (fewer at the end of the corpus) with their vectors, in pieces of at
        most one window."""
        remaining = count
        while remaining > 0 and not self.exhausted():
            size = min(remaining, len(self._buffer))
            yield self._buffer[:size], self._vectors[:size]
            self._buffer, self._vectors = self._buffer[size:], self._vectors[size:]
            remaining -= size

    def _fill(self) -> bool:
        lead, self._lead = self._lead, []
        chunks = [[*lead, *islice(self._passages, self._chunk - len(lead))]]
        if len(chunks[0]) == len(lead):
            return False
        # Only whole chunks are followed by more: every chunk starts at a multiple of the chunk size.
        while len(chunks) < self.window and len(chunks[-1]) == self._chunk:
            if not (more := list(islice(self._passages, self._chunk))):
                break
            chunks.append(more)
        encoded = self._encode_chunks(chunks, len(lead))
        if not all(np.isfinite(vectors).all() for vectors in encoded):
            raise FastDPRError("the encoder produced NaN/inf embeddings; is the artifact damaged?")
        vectors = encoded[0] if len(encoded) == 1 else np.concatenate(encoded)
        self._buffer = [p for chunk in chunks for p in chunk][len(lead):]
        self._vectors = vectors[len(lead):]
        return True

    def _encode_chunks(self, chunks: list[list[Passage]], lead: int) -> list[np.ndarray]:
        """The vectors of each chunk, in order; the first chunk starts with ``lead`` passages already
        indexed. Here one chunk at a time, on this process's encoder."""
        if self._encoder is None:
            raise FastDPRError("a local encoded stream needs an encoder")
        (chunk,) = chunks
        # Per-batch progress would count the lead too; it only exists for the first chunk of a resume.
        on_batch = self._on_encoded if not lead else None
        vectors = self._encoder.encode_passages([(p.title, p.text) for p in chunk], self._batch_size,
                                                on_batch=on_batch)
        if lead and self._on_encoded is not None:
            self._on_encoded(len(chunk) - lead)
        return [vectors]
