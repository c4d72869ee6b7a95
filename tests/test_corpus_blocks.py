"""Reading a corpus as byte-range blocks (Ray builds): every line in exactly one block, and the merged
blocks give the sequential reader's passages, order, skips and line numbers."""

from __future__ import annotations

import gzip
from itertools import pairwise
from pathlib import Path

import pytest

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.blocks import BlockMerge, block_lines, plan_blocks, read_block
from fastdpr.corpus.reader import read_corpus

BLOCK_SIZES = (1, 5, 17, 64, 1 << 20)

# A DPR TSV with a BOM, DPR's header, CRLF and LF lines, blank lines, a quoted field, a duplicate id
# (lines 2 and 8), a bad UTF-8 line, a row with two columns, and no newline at the end.
TSV = (b"\xef\xbb\xbfid\ttext\ttitle\n"
       b"1\tfirst passage\tAlpha\r\n"
       b"2\t\"quoted \"\"text\"\" here\"\tBeta\n"
       b"\n"
       b"3\tthird\t\n"
       b"4\tbad \xff byte\tGamma\n"
       b"5\tonly two columns\n"
       b"1\tduplicate of the first\tAlpha\n"
       b"   \n"
       b"6\tlast line, no newline\tDelta")
TSV_LINES = [b"id\ttext\ttitle", b"1\tfirst passage\tAlpha", b"2\t\"quoted \"\"text\"\" here\"\tBeta", b"",
             b"3\tthird\t", b"4\tbad \xff byte\tGamma", b"5\tonly two columns", b"1\tduplicate of the first\tAlpha",
             b"   ", b"6\tlast line, no newline\tDelta"]
TSV_IDS = ["1", "2", "3", "6"]

JSONL = (b'{"id": "a", "title": "T", "text": "one"}\n'
         b'{"id": "b", "text": "two"}\n'
         b'not json\n'
         b'{"id": "a", "title": "T", "text": "again"}\n'
         b'{"id": 7, "title": "N", "text": "integer id"}\n')
BEIR = (b'{"_id": "d1", "title": "T", "text": "one", "metadata": {}}\n'
        b'{"_id": "d2", "title": "", "text": "two"}\n'
        b'{"_id": "d3", "title": "T", "text": ""}\n'
        b'{"_id": "d4", "title": "U", "text": "four"}\n')


def _merged(path: Path, fmt: str, block_bytes: int, strict: bool = False) -> tuple[list[tuple[str, str, str]], dict]:
    blocks = plan_blocks(path, fmt, block_bytes)
    merge = BlockMerge(path, blocks[0].format, strict=strict)
    passages = [(p.id, p.title, p.text) for p in merge.merge(read_block(b) for b in blocks)]
    return passages, merge.report.to_dict()


def _sequential(path: Path, fmt: str) -> tuple[list[tuple[str, str, str]], dict]:
    reader = read_corpus(path, fmt)  # type: ignore[arg-type]
    passages = [(p.id, p.title, p.text) for p in reader]
    return passages, reader.report.to_dict()


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_blocks_cover_every_line_exactly_once(tmp_path: Path, block_bytes: int) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(TSV)
    blocks = plan_blocks(path, "dpr-tsv", block_bytes)
    assert blocks[0].start == 0 and blocks[-1].end == len(TSV)
    assert all(a.end == b.start for a, b in pairwise(blocks))
    lines = [line for block in blocks for _, line in block_lines(block)]
    assert lines == TSV_LINES
    if block_bytes == 1:
        assert len(blocks) == len(TSV_LINES)  # one block per line: the finest cut possible
    if block_bytes == 1 << 20:
        assert len(blocks) == 1


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_tsv_blocks_merge_to_the_sequential_read(tmp_path: Path, block_bytes: int) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(TSV)
    passages, report = _merged(path, "auto", block_bytes)
    assert [p[0] for p in passages] == TSV_IDS
    assert passages[1] == ("2", "Beta", 'quoted "text" here')
    assert report["skipped"] == {"invalid UTF-8": 1, "wrong column count": 1, "duplicate id": 1}
    assert report["examples"] == {"invalid UTF-8": [6], "wrong column count": [7], "duplicate id": [8]}
    assert report["blank_lines"] == 2 and report["no_title"] == 1 and report["no_title_examples"] == [5]
    assert (passages, report) == _sequential(path, "auto")


@pytest.mark.parametrize("block_bytes", (1, 9, 1 << 20))
def test_header_after_blank_lines_and_in_another_column_order(tmp_path: Path, block_bytes: int) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"\n\ntitle\tid\ttext\nT1\tx\tfirst\nT2\ty\tsecond\n")
    passages, report = _merged(path, "dpr-tsv", block_bytes)
    assert passages == [("x", "T1", "first"), ("y", "T2", "second")]
    assert report["blank_lines"] == 2
    assert (passages, report) == _sequential(path, "dpr-tsv")


@pytest.mark.parametrize(("fmt", "content", "ids"), [
    ("jsonl", JSONL, ["a", "b", "7"]),
    ("beir", BEIR, ["d1", "d2", "d4"]),
])
@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_json_blocks_merge_to_the_sequential_read(tmp_path: Path, fmt: str, content: bytes, ids: list[str],
                                                  block_bytes: int) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    lines = [line for block in plan_blocks(path, fmt, block_bytes) for _, line in block_lines(block)]
    assert lines == content.rstrip(b"\n").split(b"\n")
    passages, report = _merged(path, "auto", block_bytes)
    assert [p[0] for p in passages] == ids
    assert (passages, report) == _sequential(path, "auto")


def test_gzip_is_one_block(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv.gz"
    path.write_bytes(gzip.compress(TSV))
    blocks = plan_blocks(path, "auto", 1)
    assert len(blocks) == 1 and blocks[0].compressed
    assert [line for _, line in block_lines(blocks[0])] == TSV_LINES
    passages, report = _merged(path, "auto", 1)
    assert [p[0] for p in passages] == TSV_IDS
    assert (passages, report) == _sequential(path, "auto")


def test_strict_mode_fails_at_the_first_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(TSV)
    with pytest.raises(CorpusError, match=r"line 6: invalid UTF-8"):
        _merged(path, "dpr-tsv", 5, strict=True)


def test_an_unreadable_block_is_an_error_not_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(TSV)
    blocks = plan_blocks(path, "dpr-tsv", 17)
    path.unlink()  # as on a Ray node without the file
    rows = read_block(blocks[1])
    assert rows.error is not None and "corpus.tsv" in rows.error
    with pytest.raises(CorpusError, match="cannot read"):
        list(BlockMerge(path, "dpr-tsv").merge([read_block(b) for b in blocks]))
