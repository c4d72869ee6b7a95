"""A corpus of realistic size for the query measurement (``--background N``, issue #21).

Every system searches the measured passages (encoded by the system itself, as before) plus ``N``
SYNTHETIC background passages: text from :mod:`benchmarks.synthetic_corpus` (SQuAD sentences
recombined into DPR-shaped 100-word passages), vectors drawn from a Gaussian with the mean and
covariance of the artifact's own context embeddings of every SQuAD dev paragraph. Encoding 200k
passages per system would take hours on this machine; what the query measures (search over N
vectors of the model's width and distribution, fetching passages of DPR's length from N) needs the
sizes and the distribution, not the meaning. Every system gets the same background passages and
vectors; fastdpr indexes them (HNSW + SQLite store, built with its own writer), the peers search them
exactly with numpy or with their own hnswlib graph, and look passages up in a Python list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.synthetic_corpus import SYNTHETIC_NOTE, synthetic_passages
from fastdpr.corpus.reader import Passage
from fastdpr.model.artifact import Artifact
from fastdpr.model.encoder import PassageEncoder
from fastdpr.model.passage_backend import PassageBackend

#: Where the background's ids start: not a SQuAD paragraph id.
ID_PREFIX = "synthetic-"


@dataclass(frozen=True)
class Background:
    """Background passages and their vectors (``float32 [len(passages), dim]``), and how they were made."""

    passages: list[Passage]
    vectors: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def by_id(self) -> dict[str, int]:
        """Row of each background passage id."""
        return {p.id: i for i, p in enumerate(self.passages)}


def make_background(squad: Path, count: int, seed: int, artifact: Artifact, threads: int) -> Background:
    """``count`` SYNTHETIC passages with vectors drawn from the artifact's passage-embedding distribution."""
    from fastdpr.corpus.squad import load_squad

    passages = [Passage(f"{ID_PREFIX}{p.id}", p.title, p.text) for p in synthetic_passages(squad, count, seed)]
    precision = artifact.side_precision("context")
    encoder = artifact.encoder("context", precision, threads)
    paragraphs = load_squad(squad)[0]
    reference = encoder.encode_passages([(p.title, p.text) for p in paragraphs])
    mean = reference.mean(axis=0)
    covariance = np.cov(reference, rowvar=False)
    rng = np.random.default_rng(seed)
    vectors = rng.multivariate_normal(mean, covariance, size=count, method="eigh").astype(np.float32)
    return Background(passages, vectors, {
        "passages": count, "seed": seed, "synthetic": True, "text": SYNTHETIC_NOTE,
        "vectors": f"Gaussian with the mean and covariance of the {precision} context embeddings of all "
                   f"{len(paragraphs)} SQuAD dev paragraphs (numpy, seed {seed})",
    })


class BackgroundChunkEncoder:
    """A :class:`~fastdpr.index.chunks.ChunkEncoder` for a corpus of measured + background passages: the
    measured ones encoded by ``encoder`` (as ``fastdpr index`` would), the background ones given their
    drawn vectors."""

    window = 1

    def __init__(self, encoder: PassageEncoder, background: Background, batch_size: int) -> None:
        self._encoder = encoder
        self._rows = background.by_id
        self._vectors = background.vectors
        self._batch_size = batch_size

    @property
    def dim(self) -> int:
        """The embedding width."""
        return self._encoder.dim

    def encode_chunks(self, chunks: Sequence[Sequence[Passage]], on_encoded: Any) -> list[np.ndarray]:
        """Each chunk's vectors, in order."""
        out = []
        for chunk in chunks:
            vectors = np.zeros((len(chunk), self.dim), dtype=np.float32)
            measured = [i for i, p in enumerate(chunk) if p.id not in self._rows]
            drawn = [i for i, p in enumerate(chunk) if p.id in self._rows]
            if measured:
                vectors[measured] = self._encoder.encode_passages([(chunk[i].title, chunk[i].text) for i in measured],
                                                                  self._batch_size)
            if drawn:
                vectors[drawn] = self._vectors[[self._rows[chunk[i].id] for i in drawn]]
            out.append(vectors)
        return out


def build_index_with_background(artifact_dir: Path, corpus: Path, out: Path, precision: str, threads: int,
                                batch_size: int, background: Background) -> None:
    """``fastdpr index`` of ``corpus`` (measured + background passages) at ``precision``, with the background's
    drawn vectors in place of encoding them: the same writer, graph settings and manifest as a real build."""
    from fastdpr.common.errors import IndexLoadError
    from fastdpr.common.publish import atomic_directory
    from fastdpr.index.backend import BuildBackend
    from fastdpr.index.build import BuildInputs, IndexOptions, start_build
    from fastdpr.index.stream import EncodedStream
    from fastdpr.index.writer import write_index

    options = IndexOptions(precision=precision, threads=threads, batch_size=batch_size, force=True, progress=False)
    inputs = BuildInputs.open(artifact_dir, corpus, "jsonl", options)

    def backend(artifact: Artifact, side_precision: str, build: IndexOptions,
                passage_backend: PassageBackend) -> BuildBackend:
        encoder = artifact.passage_encoder(passage_backend, side_precision, build.threads)
        return BuildBackend(BackgroundChunkEncoder(encoder, background, build.batch_size), build.graph,
                            passage_backend)

    built, record = start_build(inputs, options, None, backend)
    with atomic_directory(out, True, IndexLoadError) as staging:
        write_index(staging, EncodedStream(iter(record.source), built.encoder).take(), built, record)
