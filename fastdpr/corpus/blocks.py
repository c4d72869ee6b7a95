"""Reading one corpus file as byte-range blocks, in parallel, with the result of one sequential read.

A Ray build (:mod:`fastdpr.cluster.build`) reads the corpus on the cluster: :func:`plan_blocks` cuts the
file into blocks of about ``block_bytes`` at line boundaries (a boundary is the start of the line
that contains the nominal offset's previous byte, so every line starts in exactly one block and is
read exactly once), :func:`read_block` parses one block anywhere (a Ray task), and
:class:`BlockMerge` puts the blocks back together in order on the driver. Parsing uses the rules of
:class:`~fastdpr.corpus.reader.CorpusReader`; what a block cannot know alone is done by the merge: global line
numbers (a block counts its own lines), dropping ids already seen in earlier blocks, the strict-mode
error at the first bad row, the corpus report. So the passages, their order, the skip counts and
their line numbers are exactly those of a sequential read.

The DPR TSV header is found once, by the plan (the first non-blank line, as the sequential reader
does); every block gets its column order, and the block holding it skips it. A gzip file cannot be
split (a deflate stream is only readable from its start): it is one block, read by one worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.reader import (
    DPR_TSV_HEADER,
    GZIP_MAGIC,
    UTF8_BOM,
    CorpusReport,
    Passage,
    Skip,
    check_input_file,
    detect_corpus_format,
    header_columns,
    is_header,
    open_binary,
    parse_tsv_line,
    passage_from_json,
    passage_from_tsv_row,
)

__all__ = ["DEFAULT_BLOCK_BYTES", "BlockMerge", "BlockRows", "CorpusBlock", "plan_blocks", "read_block"]

#: Bytes per block of a Ray build's corpus: ~100,000 DPR passages, so a worker's parsed block stays
#: well under 100 MB in Ray's object store, and Wikipedia's 13 GB psgs_w100.tsv makes ~200 blocks.
DEFAULT_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class CorpusBlock:
    """Lines ``[start, end)`` (byte offsets, at line starts) of a corpus file, and how to parse them.

    For a gzip file, offsets count decompressed bytes and the only block is the whole stream.
    ``header_at``: offset of the DPR TSV header line (None: no header); ``columns``: the column
    positions of ``id``, ``text``, ``title``.
    """

    path: str
    format: str
    number: int
    start: int
    end: int
    compressed: bool
    header_at: int | None = None
    columns: tuple[tuple[str, int], ...] = tuple((name, i) for i, name in enumerate(DPR_TSV_HEADER))


@dataclass
class BlockRows:
    """What :func:`read_block` found: each non-blank line's passage or skip reason, numbered within the block."""

    number: int
    lines: int = 0
    blank_lines: int = 0
    rows: list[tuple[int, Passage | tuple[str, str]]] = field(default_factory=list)
    error: str | None = None  # the block could not be read (a worker without the file, a damaged gzip)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _first_line(path: Path) -> tuple[int, str] | None:
    """Offset and text of the first non-blank line, as the sequential reader decides it (None: none, or
    it is not UTF-8, so it cannot be a header)."""
    offset = 0
    with open_binary(path) as handle:
        for raw in handle:
            line = raw[len(UTF8_BOM):] if offset == 0 and raw.startswith(UTF8_BOM) else raw
            start, offset = offset, offset + len(raw)
            try:
                text = line.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                return None
            if text.strip():
                return start, text
    return None


def plan_blocks(path: str | Path, fmt: str = "auto", block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[CorpusBlock]:
    """Cut ``path`` into blocks of about ``block_bytes`` at line starts (a gzip file: one block)."""
    if block_bytes < 1:
        raise CorpusError(f"block size must be at least 1 byte, got {block_bytes}")
    p = check_input_file(path, "corpus file")
    resolved = detect_corpus_format(p) if fmt == "auto" else fmt
    header_at: int | None = None
    columns = CorpusBlock.columns
    if resolved == "dpr-tsv" and (first := _first_line(p)) is not None:
        try:
            row = parse_tsv_line(first[1])
        except Skip:
            row = []
        if is_header(row):
            header_at = first[0]
            columns = tuple(sorted(header_columns(row).items(), key=lambda item: item[1]))
    common = {"path": str(p), "format": resolved, "header_at": header_at, "columns": columns}
    if _is_gzip(p):
        return [CorpusBlock(number=0, start=0, end=-1, compressed=True, **common)]  # type: ignore[arg-type]
    size = p.stat().st_size
    starts = [0]
    with p.open("rb") as handle:
        for nominal in range(block_bytes, size, block_bytes):
            if nominal <= starts[-1]:
                continue  # the previous boundary's line ran past this nominal offset
            handle.seek(nominal - 1)
            handle.readline()  # to the end of the line holding byte nominal-1: the next line starts a block
            if (boundary := handle.tell()) < size:
                starts.append(boundary)
    ends = [*starts[1:], size]
    return [CorpusBlock(number=i, start=s, end=e, compressed=False, **common)  # type: ignore[arg-type]
            for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def block_lines(block: CorpusBlock) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its end-of-line bytes) of every line that starts in ``block``."""
    with open_binary(Path(block.path)) as handle:
        if not block.compressed:
            handle.seek(block.start)
        offset = block.start
        for raw in handle:
            if not block.compressed and offset >= block.end:
                break
            line = raw[len(UTF8_BOM):] if offset == 0 and raw.startswith(UTF8_BOM) else raw
            yield offset, line.rstrip(b"\r\n")
            offset += len(raw)


def read_block(block: CorpusBlock) -> BlockRows:
    """Parse one block (a Ray task in a Ray build): passages and skip reasons by line within the block."""
    result = BlockRows(number=block.number)
    columns = dict(block.columns)
    id_key = "_id" if block.format == "beir" else "id"
    try:
        for number, (offset, raw) in enumerate(block_lines(block), start=1):
            result.lines = number
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                result.rows.append((number, ("invalid UTF-8", str(e))))
                continue
            if not line.strip():
                result.blank_lines += 1
                continue
            if offset == block.header_at:
                continue
            try:
                if block.format == "dpr-tsv":
                    passage = passage_from_tsv_row(parse_tsv_line(line), columns)
                else:
                    passage = passage_from_json(line, id_key)
            except Skip as skip:
                result.rows.append((number, (skip.reason, skip.detail)))
                continue
            result.rows.append((number, passage))
    except (OSError, EOFError) as e:  # EOFError: a truncated gzip
        result.error = f"cannot read {block.path}: {e}"
    return result


class BlockMerge:
    """The blocks of one corpus, in order, as the passages a sequential read yields (see the module docstring).

    Iterate it once with the :class:`BlockRows` in block order; :attr:`report` is filled as it goes.
    """

    def __init__(self, path: str | Path, fmt: str, *, strict: bool = False, max_examples: int = 5) -> None:
        self.path = Path(path)
        self.strict = strict
        self.report = CorpusReport(path=str(self.path), format=fmt, max_examples=max_examples)

    def merge(self, blocks: Iterable[BlockRows]) -> Iterator[Passage]:
        """The passages of ``blocks`` (given in block order), deduplicated, with global line numbers."""
        report = self.report
        # The one piece of state a block cannot hold: ~91 bytes per passage (a str and a set slot),
        # ~1.9 GB on the driver for Wikipedia's 21M passages.
        seen: set[str] = set()
        before = 0
        expected = 0
        for block in blocks:
            if block.number != expected:
                raise CorpusError(f"{self.path}: block {block.number} arrived where block {expected} belongs")
            expected += 1
            if block.error:
                raise CorpusError(block.error)
            report.blank_lines += block.blank_lines
            for number, row in block.rows:
                line = before + number
                if isinstance(row, Passage):
                    if row.id not in seen:
                        seen.add(row.id)
                        if not row.title:
                            report.add_no_title(line)
                        report.read += 1
                        yield row
                        continue
                    reason, detail = "duplicate id", f"id {row.id!r} already read"
                else:
                    reason, detail = row
                if self.strict:
                    detail = f" ({detail})" if detail else ""
                    raise CorpusError(f"{self.path}, line {line}: {reason}{detail} (strict mode)")
                report.add_skip(reason, line)
            before += block.lines
        if report.read == 0:
            why = f": {report.summary()}" if report.total_skipped else ""
            raise CorpusError(f"corpus file {self.path} contains no passages{why}")
