"""The chunk encoder: the one interface through which every build path embeds passages.

A build reads the corpus in chunks (:data:`fastdpr.model.batching.ENCODE_CHUNK` passages) and hands
them to a :class:`ChunkEncoder`: :class:`OnnxChunkEncoder` here, in this process, or the Ray backend's
pool of actors (:mod:`fastdpr.cluster.build`). Every ONNX Runtime call embeds one passage
(:data:`fastdpr.model.batching.INPUTS_PER_CALL`), so a passage's vector is a function of its own text:
neither the chunk it falls in nor the process that encodes it changes a bit of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from fastdpr.corpus.reader import Passage
from fastdpr.model.encoder import PassageEncoder

#: Called with the number of passages just encoded (a progress bar's ``update``).
OnEncoded = Callable[[int], None]


class ChunkEncoder(Protocol):
    """Embeds chunks of passages; ``window`` chunks are handed over per call."""

    @property
    def dim(self) -> int:
        """The embedding width."""
        ...

    @property
    def window(self) -> int:
        """How many chunks one :meth:`encode_chunks` call takes (the chunks a build holds in memory)."""
        ...

    def encode_chunks(self, chunks: Sequence[Sequence[Passage]], on_encoded: OnEncoded | None) -> list[np.ndarray]:
        """The ``float32 [len(chunk), dim]`` vectors of each chunk, in order; ``on_encoded`` hears of
        passages as they are encoded."""
        ...


class OnnxChunkEncoder:
    """A :class:`ChunkEncoder` on this process's ONNX Runtime session, one chunk at a time."""

    window = 1

    def __init__(self, encoder: PassageEncoder, batch_size: int) -> None:
        self._encoder = encoder
        self._batch_size = batch_size

    @property
    def dim(self) -> int:
        """The embedding width of the context encoder."""
        return self._encoder.dim

    def encode_chunks(self, chunks: Sequence[Sequence[Passage]], on_encoded: OnEncoded | None) -> list[np.ndarray]:
        """Each chunk encoded in turn, ``batch_size`` passages tokenized together."""
        return [self._encoder.encode_passages([(p.title, p.text) for p in chunk], self._batch_size,
                                              on_batch=on_encoded) for chunk in chunks]
