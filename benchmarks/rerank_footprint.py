"""``python -m benchmarks rerank-footprint``: how much of ``vectors.npy`` compressed search makes resident in
the process, against how much its re-ranked rows span (issue #22, serving RSS).

Opens a compressed index built by ``python -m benchmarks scale-vectors`` (its ``WORKDIR/KIND``) as
``fastdpr search`` does, answers ``--questions`` questions one at a time (k=100), and reports per
passage: the resident bytes of ``vectors.faiss`` and ``vectors.npy`` (``/proc/self/smaps``) and the
bytes of the 4 KiB pages the re-ranked candidates' rows span (what a memory map must fault at least).
``--reads mapped`` re-ranks through the memory map (as before the fix), ``pread`` with positional reads.
Each run is a fresh process (``python -m benchmarks.rerank_footprint ...``), so nothing is mapped before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.memory import process_memory, resident_by_file

PAGE = 4096


def footprint(directory: Path, questions: int, reads: str) -> dict[str, Any]:
    """In this process: open ``directory``'s compressed index, search, and measure (see the module doc)."""
    from fastdpr.index.compressed import CompressedSearcher
    from fastdpr.index.vector_settings import CompressedFiles, VectorSettings

    record = json.loads((directory / "build.json").read_text())
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    settings = VectorSettings(**{key: record["settings"][key] for key in ("kind", "nlist", "nprobe", "pq_m", "rerank")})
    files = CompressedFiles(settings, record["file"], record["settings"]["factory"], {})
    searcher = CompressedSearcher(directory / record["file"], vectors, files, threads=1,
                                  positional_reads=reads == "pread")
    pages: set[int] = set()
    row_bytes = vectors.shape[1] * 4
    offset = vectors.offset
    for question in np.load(directory.parent / "questions.npy")[:questions]:
        # The candidates search re-ranks (the searcher's own step), to count the pages their rows span.
        candidates = searcher._candidates(question[None], settings.rerank, 100)[0]
        for label in candidates[candidates >= 0].tolist():
            start = offset + label * row_bytes
            pages.update(range(start // PAGE, (start + row_bytes - 1) // PAGE + 1))
        searcher.search(question[None], 100)
    resident = resident_by_file()
    count = len(vectors)
    return {"kind": record["kind"], "reads": reads, "questions": questions, "passages": count,
            "bytes_per_passage": {
                "resident_vectors.faiss": resident.get(str((directory / "vectors.faiss").resolve()), 0) / count,
                "resident_vectors.npy": resident.get(str((directory / "vectors.npy").resolve()), 0) / count,
                "pages_rerank_rows_span": len(pages) * PAGE / count,
                "rss_anonymous": process_memory()["RssAnon"] / count}}


@click.command("rerank-footprint")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--questions", "counts", default="10,100,1000", show_default=True, help="Comma-separated.")
@click.option("--reads", default="mapped,pread", show_default=True, help="Comma-separated, of mapped, pread.")
def rerank_footprint_command(directory: Path, counts: str, reads: str) -> None:
    """Resident bytes of vectors.npy after compressed searches, against the pages their re-ranked rows span."""
    for count in counts.split(","):
        for mode in reads.split(","):
            done = subprocess.run([sys.executable, "-m", "benchmarks.rerank_footprint", str(directory), count, mode],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise click.ClickException(f"probe failed: {done.stderr[-2000:]}")
            click.echo(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the fresh process: DIRECTORY QUESTIONS READS
    print(json.dumps(footprint(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
