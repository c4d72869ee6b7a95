"""The settings of ``fastdpr index --vectors`` (issue #22) as a manifest records them: a light module (no
numpy, no faiss), read by the manifest parser, the CLI and ``fastdpr info``. The index itself is built and
searched by :mod:`fastdpr.index.compressed`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastdpr.common.errors import FastDPRError
from fastdpr.common.fields import Fields

#: ``--vectors`` choices: fp32 is the hnswlib graph; the others are faiss IVF indexes over codes.
VECTOR_KINDS = ("fp32", "fp16", "int8", "pq")
COMPRESSED_KINDS = ("fp16", "int8", "pq")
#: The compressed index's file in an index directory.
COMPRESSED_FILE = "vectors.faiss"
#: Candidates scored exactly per query when the manifest does not say otherwise.
DEFAULT_RERANK = 400
#: Inverted lists probed per query when the manifest does not say otherwise.
DEFAULT_NPROBE = 64
#: Bits per PQ sub-vector code (256 centroids per sub-quantizer).
PQ_NBITS = 8
#: faiss's k-means wants at least this many points per centroid; fewer lists are used below it.
_POINTS_PER_LIST = 39


@dataclass(frozen=True)
class VectorSettings:
    """How passage vectors are searched, as ``fastdpr index --vectors`` asked for (recorded in the manifest).

    ``kind`` fp32: the hnswlib graph (every other field unused). Otherwise a faiss IVF index of
    ``nlist`` lists (None: chosen from the passage count, see :func:`lists_for`) over fp16, int8 or PQ
    codes (``pq_m`` sub-vectors of ``PQ_NBITS`` bits; None: dim / 8), searched at ``nprobe`` lists and
    re-ranked by exact float32 dot products over ``rerank`` candidates per query.
    """

    kind: str = "fp32"
    nlist: int | None = None
    nprobe: int = DEFAULT_NPROBE
    pq_m: int | None = None
    rerank: int = DEFAULT_RERANK

    @property
    def compressed(self) -> bool:
        """True for the faiss-backed kinds."""
        return self.kind != "fp32"

    def check(self, dim: int) -> None:
        """Refuse settings that cannot work with ``dim``-d vectors, in one line, before anything is encoded."""
        if self.kind not in VECTOR_KINDS:
            raise FastDPRError(f"--vectors must be one of {', '.join(VECTOR_KINDS)}, got {self.kind!r}")
        if self.nprobe < 1 or self.rerank < 1 or (self.nlist is not None and self.nlist < 1):
            raise FastDPRError(f"--nprobe, --nlist and --rerank must be at least 1, got nprobe={self.nprobe}, "
                               f"nlist={self.nlist}, rerank={self.rerank}")
        if self.pq_m is not None and self.kind != "pq":
            raise FastDPRError(f"--pq-m applies to --vectors pq only, not {self.kind}")
        if self.kind == "pq" and dim % self.sub_vectors(dim) != 0:
            raise FastDPRError(f"--pq-m {self.sub_vectors(dim)} does not divide the embedding dimension {dim}: "
                               f"choose a divisor such as {', '.join(str(m) for m in _divisors(dim))}")

    def sub_vectors(self, dim: int) -> int:
        """PQ sub-vectors (bytes per vector) for ``dim``-d vectors."""
        return self.pq_m if self.pq_m is not None else max(1, dim // 8)

    def factory(self, dim: int, nlist: int) -> str:
        """The faiss index factory string of these settings."""
        codes = {"fp16": "SQfp16", "int8": "SQ8"}.get(self.kind) or f"PQ{self.sub_vectors(dim)}x{PQ_NBITS}"
        return f"IVF{nlist},{codes}"

    def state(self) -> dict[str, Any]:
        """What a resumed sharded build must share (an fp32 build records nothing, as before issue #22)."""
        return {} if not self.compressed else {"vectors": self.to_dict()}

    @classmethod
    def parse(cls, entry: Fields, kinds: tuple[str, ...] = VECTOR_KINDS) -> VectorSettings:
        """Settings recorded by :meth:`to_dict` (``nlist`` and ``pq_m`` may be null)."""
        def optional(key: str) -> int | None:
            return entry.integer(key, minimum=1) if entry.raw(key) is not None else None

        return cls(kind=entry.one_of("kind", kinds), nlist=optional("nlist"), nprobe=entry.integer("nprobe", minimum=1),
                   pq_m=optional("pq_m"), rerank=entry.integer("rerank", minimum=1))

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in a manifest or build state."""
        return {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m,
                "rerank": self.rerank}


def _divisors(dim: int) -> list[int]:
    return [m for m in (dim // 32, dim // 16, dim // 8, dim // 4) if m >= 1 and dim % m == 0] or [1]


def lists_for(count: int, wanted: int | None) -> int:
    """Inverted lists for ``count`` vectors: ``wanted``, or a power of two near 4 sqrt(count); never more
    than k-means can train (``count / 39``), never fewer than one."""
    target = wanted if wanted is not None else 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return max(1, min(target, count // _POINTS_PER_LIST))


@dataclass(frozen=True)
class CompressedFiles:
    """A compressed index as one index directory's manifest records it (``vectors.search``)."""

    settings: VectorSettings
    file: str
    factory: str
    #: Recorded, never read: library, training sample and build time.
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``vectors.search`` object."""
        return {**self.settings.to_dict(), "file": self.file, "factory": self.factory,
                "metric": "inner product (faiss METRIC_INNER_PRODUCT)",
                "rerank_from": "vectors.npy (float32): exact dot products", **self.provenance}

    @classmethod
    def parse(cls, entry: Fields, file: str) -> CompressedFiles:
        """The ``vectors.search`` object of a manifest (``file`` already checked against the file table)."""
        return cls(settings=VectorSettings.parse(entry, COMPRESSED_KINDS), file=file, factory=entry.string("factory"),
                   provenance={key: entry.data[key] for key in ("library", "trained_on", "build_seconds")
                               if key in entry.data})
