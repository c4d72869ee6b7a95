"""Where a build reads the corpus, encodes passages and builds HNSW graphs: the build backend.

:class:`BuildBackend` does all three here, in this process; :mod:`fastdpr.cluster.build` subclasses it
to do them on a Ray cluster. Everything else (the index writer, the shard layout, resuming,
publishing) is the same code for every backend, and for unsharded and sharded builds alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fastdpr.corpus.reader import CorpusReader, CorpusReport, Passage
from fastdpr.index.ann import build_hnsw, save_hnsw
from fastdpr.index.chunks import ChunkEncoder
from fastdpr.model.passage_backend import ONNX_RUNTIME, PassageBackend

#: Called as an HNSW graph grows, with (vectors added, total).
OnGraphProgress = Callable[[int, int], None]


class PassageSource(Protocol):
    """A corpus's passages in order, and the report of what reading them skipped (complete once they
    are consumed)."""

    @property
    def report(self) -> CorpusReport:
        """What was read and skipped so far."""
        ...

    def __iter__(self) -> Iterator[Passage]: ...


@dataclass(frozen=True)
class GraphSettings:
    """How HNSW graphs are built (hnswlib's ``M`` and ``ef_construction``; ``threads`` None: all cores)."""

    m: int
    ef_construction: int
    threads: int | None


class BuildBackend:
    """Reads, encodes (with ``encoder``) and builds graphs here, in this process.

    Subclasses replace :meth:`read` (where the corpus is parsed), the ``encoder`` they pass in, and
    :meth:`build_graph`; :meth:`note` says what the manifest records about where the build ran.
    """

    def __init__(self, encoder: ChunkEncoder, graph: GraphSettings,
                 passage_backend: PassageBackend = ONNX_RUNTIME) -> None:
        self.encoder = encoder
        self.graph = graph
        #: The runtime ``encoder`` runs on (recorded in the index manifest).
        self.passage_backend = passage_backend

    def read(self, reader: CorpusReader) -> PassageSource:
        """The corpus's passages in order, with their report."""
        return reader

    def build_graph(self, vectors: np.ndarray, target: Path, on_progress: OnGraphProgress | None = None) -> None:
        """Build the HNSW graph of ``vectors`` (a memory map) and save it to ``target``."""
        graph = build_hnsw(vectors, m=self.graph.m, ef_construction=self.graph.ef_construction,
                           threads=self.graph.threads, on_progress=on_progress)
        save_hnsw(graph, target)

    def note(self) -> dict[str, Any] | None:
        """What a sharded index's manifest records about where the build ran (None: here)."""
        return None
