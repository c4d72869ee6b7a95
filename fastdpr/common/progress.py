"""A progress bar over a whole corpus: passages/s, and an ETA when the corpus size is known."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

_CHUNK = 1 << 24
GZIP_MAGIC = b"\x1f\x8b"


def count_lines(path: Path) -> int | None:
    """Lines of a plain-text file, counted in 16 MiB binary chunks (~seconds for Wikipedia's 13 GB
    psgs_w100.tsv); ``None`` for gzip, where counting would mean decompressing everything twice."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as handle:
        if handle.read(2) == GZIP_MAGIC:
            return None
        handle.seek(0)
        while chunk := handle.read(_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk
    return lines + (0 if last.endswith(b"\n") else 1)


def corpus_bar(corpus: Path, progress: bool | None, initial: int = 0, desc: str = "indexing") -> tqdm:
    """A bar counting passages. ``progress=None`` shows it only on a terminal (as elsewhere).

    Its total is the corpus's line count, an upper bound on the passages (a header, blank lines and
    skipped rows count as lines); it is only computed when the bar is shown, and :func:`finish`
    snaps the total to the real count.
    """
    disable = None if progress is None else not progress
    bar = tqdm(unit=" passages", desc=desc, disable=disable, dynamic_ncols=True, smoothing=0.1,
               initial=initial)
    if not bar.disable:
        bar.total = count_lines(corpus)
        bar.refresh()
    return bar


def finish(bar: tqdm) -> None:
    """Close ``bar`` at 100% after a complete pass: the line count overestimated the passages by the
    rows that are not passages. (After a failure, just close it: it stops where the build did.)"""
    if not bar.disable and bar.total is not None:
        bar.total = bar.n
        bar.refresh()
    bar.close()
