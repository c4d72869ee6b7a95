"""Rows of a float32 ``.npy`` matrix read with positional reads (``pread``) instead of through its memory map.

Compressed search re-ranks a few hundred candidate rows per question from ``vectors.npy`` (3 KB a
768-d row). Read through a memory map, every page touched stays mapped into the process: its RSS grows
with every question until it holds the whole file (3,072 bytes per passage at 768-d, 3 GB at 1M), and
more than the rows need, since the kernel maps up to 16 already-cached neighbours of each faulted page
("fault-around"; ``MADV_RANDOM`` does not stop it). Measured at 1M passages (x86-avx512-vnni,
``benchmarks/results/rss-x86-avx512-vnni/rerank-footprint.json``): 10 questions left 258 bytes per
passage of ``vectors.npy`` mapped where their rows spanned 28.

Read with ``pread``, the rows are copied into a small buffer and the file's pages live in the kernel's
page cache, shared and reclaimable, never counted in the process's RSS: the process needs only what it
searches (the compressed codes) plus a buffer per question. The cost is one system call per row (0.5-0.7
ms more CPU time a question for 400 rows than through the map, ``benchmarks/results/rss-x86-avx512-vnni``),
and, when the page cache does not hold a row, one small disk read (readahead is turned off: the reads are
random, and reading ahead would only evict other rows).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fastdpr.common.errors import IndexLoadError


class PositionalRows:
    """Rows of the C-order float32 ``[count, dim]`` array stored in an ``.npy`` file, read by ``pread``.

    Thread-safe: positional reads share the file descriptor without a file position. Open it with
    :meth:`of`; :meth:`close` closes the file (garbage collection does too).
    """

    def __init__(self, path: Path, offset: int, count: int, dim: int) -> None:
        self.path = path
        self._offset = offset
        self._count = count
        self._row_bytes = dim * 4
        self._dim = dim
        self._file: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 -- held until close()
        if hasattr(os, "posix_fadvise"):
            # Random rows: readahead would read (and cache) neighbours no question asked for.
            os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)

    @classmethod
    def of(cls, vectors: np.ndarray) -> PositionalRows | None:
        """A reader of the same rows as ``vectors`` when it is a whole ``.npy`` file memory-mapped by
        ``np.load(mmap_mode="r")`` (float32, C order); None for any other array (read those by indexing).

        The file's header is read again, so a slice of a memory map (whose ``offset`` numpy does not
        update) is never mistaken for the file's array.
        """
        filename = getattr(vectors, "filename", None)
        if (not hasattr(os, "preadv") or not isinstance(vectors, np.memmap) or filename is None
                or vectors.dtype != np.float32 or vectors.ndim != 2):
            return None  # no positional reads here (Windows), or not a whole .npy file's map
        path = Path(filename)
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                if version not in ((1, 0), (2, 0)):
                    return None  # a version numpy has no public header reader for: read by indexing
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                offset = handle.tell()
        except (OSError, ValueError) as exc:
            raise IndexLoadError(f"vector file {path} cannot be read again: {exc}") from exc
        if fortran or dtype != np.float32 or tuple(shape) != vectors.shape or not vectors.flags.c_contiguous:
            return None
        return cls(path, offset, int(shape[0]), int(shape[1]))

    def take(self, labels: np.ndarray) -> np.ndarray:
        """``float32 [len(labels), dim]``: the rows ``labels`` (in that order; ascending reads fastest)."""
        out = np.empty((len(labels), self._dim), dtype=np.float32)
        buffer = out.data.cast("B")
        size, start, fd = self._row_bytes, self._offset, self._file.fileno()
        for position, label in enumerate(labels.tolist()):
            if not 0 <= label < self._count:
                raise IndexError(f"row {label} out of range for {self._count} rows")
            piece = buffer[position * size:(position + 1) * size]
            if os.preadv(fd, (piece,), start + label * size) != size:
                raise IndexLoadError(f"vector file {self.path} ended before row {label} (truncated?)")
        return out

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()
