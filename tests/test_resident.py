"""Serving a compressed index keeps ``vectors.npy`` out of the process's memory (issue #22, serving RSS):
loading an index (integrity checked by full sha256 included) and searching it leave none of the float32
vectors resident in the process, and re-ranking reads exactly the rows a memory map would give.

Residency is read from ``/proc/self/smaps`` (Linux): the resident bytes of the file's mappings. A
control search through the memory map shows the measurement sees pages when they are there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import run_cli
from requires import require_module

from benchmarks.memory import resident_bytes
from fastdpr.common.errors import IndexLoadError
from fastdpr.index.ann import ExactSearcher, correctly_rounded_scores
from fastdpr.index.rows import PositionalRows
from fastdpr.index.vector_settings import CompressedFiles, VectorSettings
from fastdpr.search.retriever import Retriever

if TYPE_CHECKING:
    from fastdpr.index.compressed import CompressedSearcher

require_module("faiss", "pip install 'fastdpr[compressed]'")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="residency is read from /proc/self/smaps")

COUNT, DIM = 3000, 384  # a 4.6 MB vectors.npy
QUESTIONS = 30  # x 400 candidates re-ranked: 4x the rows, every page of the file if read through the map


def synthetic(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, 16)) @ rng.standard_normal((16, DIM)) + rng.standard_normal((count, DIM))
            ).astype(np.float32)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vectors.npy`` and an int8 ``vectors.faiss`` over it, as ``fastdpr index --vectors int8`` writes them."""
    from fastdpr.index.compressed import build_compressed

    directory = tmp_path_factory.mktemp("resident")
    np.save(directory / "vectors.npy", synthetic(COUNT, seed=1))
    build_compressed(np.load(directory / "vectors.npy", mmap_mode="r"), directory / "vectors.faiss",
                     VectorSettings(kind="int8", nlist=16, nprobe=4), threads=1)
    return directory


def open_searcher(directory: Path, *, positional_reads: bool = True) -> CompressedSearcher:
    """The searcher as fastdpr.index.load.open_compressed opens it: vectors.npy memory-mapped, then the index."""
    from fastdpr.index.compressed import CompressedSearcher

    vectors = ExactSearcher.load(directory / "vectors.npy", DIM, COUNT).vectors
    files = CompressedFiles(VectorSettings(kind="int8", nlist=16, nprobe=4), "vectors.faiss", "IVF16,SQ8", {})
    return CompressedSearcher(directory / "vectors.faiss", vectors, files, threads=1, positional_reads=positional_reads)


def test_searching_leaves_the_vectors_file_out_of_the_process(compressed: Path) -> None:
    vectors_file = compressed / "vectors.npy"
    size = vectors_file.stat().st_size
    questions = synthetic(QUESTIONS, seed=2)
    searcher = open_searcher(compressed)
    assert resident_bytes(vectors_file) == 0
    labels, scores = zip(*(searcher.search(q[None], 10) for q in questions), strict=True)
    assert resident_bytes(vectors_file) <= size // 100

    # The control: the same searches read through the memory map make (nearly) the whole file resident,
    # and return the same hits and scores, to the bit.
    mapped = open_searcher(compressed, positional_reads=False)
    through_map = [mapped.search(q[None], 10) for q in questions]
    assert resident_bytes(vectors_file) > size // 2
    for (l1, s1), l2, s2 in zip(through_map, labels, scores, strict=True):
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(s1, s2)
    searcher.close()
    mapped.close()


def test_loading_and_searching_an_index_keeps_its_vectors_out(tmp_path: Path, tiny_artifact: Path,
                                                               pydoc_corpus: Path) -> None:
    out = tmp_path / "idx"
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--vectors", "int8", "--threads", "1"])
    # Full sha256 of every file at load: hashing reads the files, it must not map them.
    with Retriever.load(out, integrity="sha256", check_int8=False) as retriever:
        assert resident_bytes(out / "vectors.npy") == 0
        retriever.search_batch(["how do I catch an exception?", "what does yield do?", "string formatting"], 10)
        assert resident_bytes(out / "vectors.npy") == 0


def test_positional_rows_are_the_memory_maps_rows(tmp_path: Path) -> None:
    array = synthetic(500, seed=3)
    np.save(tmp_path / "v.npy", array)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    rows = PositionalRows.of(mapped)
    assert rows is not None
    labels = np.array([499, 0, 17, 17, 250])
    np.testing.assert_array_equal(rows.take(labels), array[labels])
    with pytest.raises(IndexError):
        rows.take(np.array([500]))
    rows.close()
    # Anything but a whole .npy file's map is read by indexing (a slice's offset is not the file's).
    assert PositionalRows.of(mapped[1:]) is None and PositionalRows.of(mapped[:, :8]) is None
    assert PositionalRows.of(array) is None
    np.save(tmp_path / "f.npy", np.asfortranarray(array))
    assert PositionalRows.of(np.load(tmp_path / "f.npy", mmap_mode="r")) is None


def test_a_truncated_vectors_file_is_an_index_error(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", synthetic(100, seed=4))
    rows = PositionalRows.of(np.load(tmp_path / "v.npy", mmap_mode="r"))
    assert rows is not None
    with open(tmp_path / "v.npy", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - DIM * 4 * 10)  # the last 10 rows gone after the index was opened
    with pytest.raises(IndexLoadError, match="ended before row 95"):
        rows.take(np.array([3, 95]))
    rows.close()


def test_reads_match_the_exact_searchers_scores(compressed: Path) -> None:
    vectors = np.load(compressed / "vectors.npy", mmap_mode="r")
    rows = PositionalRows.of(vectors)
    assert rows is not None
    query, labels = synthetic(1, seed=5)[0], np.array([2999, 5, 1000, 6])
    np.testing.assert_array_equal(correctly_rounded_scores(vectors, query, labels, rows.take),
                                  correctly_rounded_scores(vectors, query, labels))
    rows.close()
