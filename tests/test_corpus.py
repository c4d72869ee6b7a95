"""Corpus readers: formats, detection, every bad-input case, strict mode, round trips, SQuAD."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Literal

import pytest
from shared_data import shared_data_path

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.reader import CorpusReader, Passage, detect_corpus_format, read_corpus, write_corpus
from fastdpr.corpus.squad import load_squad, load_squad_passages, load_squad_questions

HEADER = b"id\ttext\ttitle\n"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _read_all(path: Path, fmt: Literal["auto", "dpr-tsv", "jsonl", "beir"] = "auto") -> tuple[
    list[Passage], CorpusReader
]:
    reader = read_corpus(path, fmt)
    return list(reader), reader


# --- formats ---------------------------------------------------------------------------------------


def test_dpr_tsv_with_dpr_quoting(tmp_path: Path) -> None:
    # As in psgs_w100.tsv: the text is quoted, inner quotes doubled.
    path = _write(
        tmp_path / "psgs.tsv",
        HEADER
        + b'1\t"Aaron ( or ; ""Ah\xc3\xa4r\xc3\xb4n"") is a prophet"\tAaron\n'
        + b"2\tplain text, no quotes\tSecond\n",
    )
    passages, reader = _read_all(path)
    assert reader.format == "dpr-tsv"
    assert passages == [
        Passage(id="1", title="Aaron", text='Aaron ( or ; "Ahärôn") is a prophet'),
        Passage(id="2", title="Second", text="plain text, no quotes"),
    ]
    assert reader.report.read == 2
    assert reader.report.total_skipped == 0


def test_dpr_tsv_header_in_other_column_order_is_honoured(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.tsv", b"id\ttitle\ttext\n7\tT\tsome text\n")
    assert list(read_corpus(path)) == [Passage(id="7", title="T", text="some text")]


def test_dpr_tsv_without_header_and_with_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.tsv", b"1\tfirst\tA\r\n2\tsecond\tB\r\n")
    passages, _ = _read_all(path)
    assert [p.text for p in passages] == ["first", "second"]
    assert [p.title for p in passages] == ["A", "B"]


def test_jsonl_and_beir(tmp_path: Path) -> None:
    jsonl = _write(
        tmp_path / "a.data",
        b'{"id": "a", "title": "T", "text": "x"}\n{"id": 5, "text": "no title here"}\n',
    )
    passages, reader = _read_all(jsonl)
    assert reader.format == "jsonl"
    assert passages == [Passage("a", "T", "x"), Passage("5", "", "no title here")]
    assert reader.report.no_title == 1
    assert reader.report.no_title_examples == [2]

    beir = _write(
        tmp_path / "corpus.jsonl",
        b'{"_id": "d1", "title": "", "text": "beir text", "metadata": {"url": "u"}}\n',
    )
    passages, reader = _read_all(beir)
    assert reader.format == "beir"
    assert passages == [Passage("d1", "", "beir text")]
    assert reader.report.no_title == 1


def test_detection_is_by_content_not_extension(tmp_path: Path) -> None:
    assert detect_corpus_format(_write(tmp_path / "x.jsonl", HEADER + b"1\tt\tT\n")) == "dpr-tsv"
    assert detect_corpus_format(_write(tmp_path / "y.tsv", b'\n\n{"_id": "1", "text": "t"}\n')) == "beir"
    assert detect_corpus_format(_write(tmp_path / "z.txt", b'{"id": "1", "text": "t"}\n')) == "jsonl"
    assert detect_corpus_format(_write(tmp_path / "bom.tsv", b"\xef\xbb\xbf" + HEADER)) == "dpr-tsv"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some prose\n", "neither a JSON object nor tab-separated"),
        (b'{"title": "no id"}\n', r"neither '_id' \(beir\) nor 'id' \(jsonl\)"),
        (b"{not json\n", "starts like JSON but is not valid JSON"),
        (b"\xff\xfe\tbad\n", "not valid UTF-8"),
        (b"\n  \n", "is empty"),
    ],
)
def test_detection_failures_are_clear(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path / "c", data)
    with pytest.raises(CorpusError, match=message):
        read_corpus(path)


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "psgs.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write(HEADER + b"1\tzipped\tZ\n")
    passages, reader = _read_all(path)
    assert reader.format == "dpr-tsv"
    assert passages == [Passage("1", "Z", "zipped")]


# --- bad input -------------------------------------------------------------------------------------


def test_every_bad_tsv_row_is_skipped_and_counted(tmp_path: Path) -> None:
    lines = [
        b"id\ttext\ttitle",  # 1 header
        b"1\tgood one\tA",  # 2
        b"2\t   \tB",  # 3 empty text
        b"1\tsame id again\tC",  # 4 duplicate id
        b"3\tonly two columns",  # 5 wrong column count
        b"4\ttoo\tmany\tcolumns",  # 6 wrong column count
        b"5\tbad \xff byte\tD",  # 7 invalid UTF-8
        b'6\t"unterminated\tE',  # 8 malformed row
        b"\tno id\tF",  # 9 missing id
        b"",  # 10 blank line: ignored, not a skip
        b"7\ttitle-less but kept\t",  # 11 no title: read, counted
        b"8\tlast good\tG",  # 12
    ]
    path = _write(tmp_path / "bad.tsv", b"\n".join(lines) + b"\n")
    passages, reader = _read_all(path)
    report = reader.report
    assert [p.id for p in passages] == ["1", "7", "8"]
    assert passages[0].text == "good one"  # the first of the duplicates is kept
    assert report.read == 3
    assert report.skipped == {
        "empty text": 1,
        "duplicate id": 1,
        "wrong column count": 2,
        "invalid UTF-8": 1,
        "malformed row": 1,
        "missing id": 1,
    }
    assert report.examples["wrong column count"] == [5, 6]
    assert report.examples["invalid UTF-8"] == [7]
    assert report.examples["duplicate id"] == [4]
    assert report.no_title == 1 and report.no_title_examples == [11]
    assert report.blank_lines == 1
    assert report.total_skipped == 7
    summary = report.summary()
    assert "3 passages read" in summary and "2 skipped: wrong column count (lines 5, 6" in summary
    assert json.loads(json.dumps(report.to_dict()))["skipped_total"] == 7


def test_every_bad_json_row_is_skipped_and_counted(tmp_path: Path) -> None:
    lines = [
        b'{"id": "a", "title": "A", "text": "good"}',  # 1
        b'{"id": "b", "title": "B", "text": "trunc',  # 2 malformed JSON
        b'["not", "an", "object"]',  # 3 malformed JSON
        b'{"title": "no id", "text": "x"}',  # 4 missing id
        b'{"id": "", "text": "x"}',  # 5 missing id
        b'{"id": ["x"], "text": "x"}',  # 6 invalid field type
        b'{"id": "c", "text": 42}',  # 7 invalid field type
        b'{"id": "d", "title": "D", "text": ""}',  # 8 empty text
        b'{"id": "e", "title": "D"}',  # 9 empty text (missing)
        b'{"id": "a", "text": "dup"}',  # 10 duplicate id
        b'{"id": "f", "text": "caf\xe9"}',  # 11 invalid UTF-8 (latin-1 byte)
        b'{"id": "g", "title": null, "text": "null title"}',  # 12 no title, kept
    ]
    path = _write(tmp_path / "bad.jsonl", b"\n".join(lines) + b"\n")
    passages, reader = _read_all(path, "jsonl")
    report = reader.report
    assert [p.id for p in passages] == ["a", "g"]
    assert report.skipped == {
        "malformed JSON": 2,
        "missing id": 2,
        "invalid field type": 2,
        "empty text": 2,
        "duplicate id": 1,
        "invalid UTF-8": 1,
    }
    assert report.examples["malformed JSON"] == [2, 3]
    assert report.examples["missing id"] == [4, 5]
    assert report.no_title == 1


def test_beir_requires_underscore_id(tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.jsonl", b'{"_id": "1", "text": "ok"}\n{"id": "2", "text": "x"}\n')
    passages, reader = _read_all(path, "beir")
    assert [p.id for p in passages] == ["1"]
    assert reader.report.skipped == {"missing id": 1}


def test_examples_are_capped(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.tsv", HEADER + b"".join(b"%d\t \tT\n" % i for i in range(20)) + b"1\tx\tT\n")
    reader = read_corpus(path, max_examples=3)
    assert len(list(reader)) == 1
    assert reader.report.skipped == {"empty text": 20}
    assert reader.report.examples["empty text"] == [2, 3, 4]


def test_strict_mode_fails_on_first_skip_naming_file_line_and_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.tsv", HEADER + b"1\tok\tA\n2\tonly two\n1\tdup\tB\n")
    reader = read_corpus(path, strict=True)
    got: list[Passage] = []
    with pytest.raises(CorpusError) as info:
        got.extend(reader)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "wrong column count" in message
    assert [p.id for p in got] == ["1"]


def test_strict_mode_reports_invalid_utf8_and_duplicates(tmp_path: Path) -> None:
    bad_utf8 = _write(tmp_path / "u.tsv", HEADER + b"1\t\xc3\x28\tA\n")
    with pytest.raises(CorpusError, match=r"line 2: invalid UTF-8"):
        list(read_corpus(bad_utf8, strict=True))
    dup = _write(tmp_path / "d.jsonl", b'{"id": "1", "text": "a"}\n{"id": "1", "text": "b"}\n')
    with pytest.raises(CorpusError, match=r"line 2: duplicate id"):
        list(read_corpus(dup, strict=True))


def test_strict_mode_accepts_title_less_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.tsv", HEADER + b"1\ttext\t\n")
    reader = read_corpus(path, strict=True)
    assert list(reader) == [Passage("1", "", "text")]
    assert reader.report.no_title == 1


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nope.tsv")
    with pytest.raises(CorpusError, match="is a directory"):
        read_corpus(tmp_path)


def test_empty_corpus(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.tsv", b"")
    with pytest.raises(CorpusError, match="is empty"):
        read_corpus(empty)
    with pytest.raises(CorpusError, match="contains no passages"):
        list(read_corpus(empty, "jsonl"))  # explicit format: the file is fine, there is just nothing in it
    header_only = _write(tmp_path / "h.tsv", HEADER)
    with pytest.raises(CorpusError, match="contains no passages"):
        list(read_corpus(header_only))
    all_bad = _write(tmp_path / "b.tsv", HEADER + b"1\t\tA\n")
    with pytest.raises(CorpusError, match=r"contains no passages.*1 skipped: empty text"):
        list(read_corpus(all_bad))


def test_unknown_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.tsv", HEADER + b"1\tt\tT\n")
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read_corpus(path, "csv")  # type: ignore[arg-type]


def test_reader_is_lazy_and_reiterable(tmp_path: Path) -> None:
    path = tmp_path / "big.tsv"
    filler = "with some words in it " * 200
    with path.open("w", encoding="utf-8") as f:
        f.write("id\ttext\ttitle\n")
        for i in range(5_000):
            f.write(f"{i}\tpassage number {i} {filler}\tTitle {i % 7}\n")
    reader = read_corpus(path)
    first = next(iter(reader))
    assert first == Passage("0", "Title 0", f"passage number 0 {filler}")
    # Streaming: peak memory stays far below the file size even though every passage is read
    # (the only per-row state is the set of seen ids).
    tracemalloc.start()
    count = sum(1 for _ in reader)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 5_000 and reader.report.read == 5_000
    assert peak < path.stat().st_size / 10


# --- round trips -----------------------------------------------------------------------------------

TRICKY = [
    Passage("1", "Aaron", 'Aaron ( or ; "Ahärôn") is a prophet'),
    Passage("2", "", "no title, tab\tinside and a ; semicolon"),
    Passage("wiki:3", "Zürich \"quoted\"", "ends with a quote\""),
    Passage("4", "T", "  leading and trailing spaces  "),
]


@pytest.mark.parametrize("fmt", ["dpr-tsv", "jsonl", "beir"])
def test_write_then_read_round_trips(tmp_path: Path, fmt: Literal["dpr-tsv", "jsonl", "beir"]) -> None:
    path = tmp_path / "out"
    assert write_corpus(path, TRICKY, fmt) == len(TRICKY)
    reader = read_corpus(path)  # auto-detection must find the written format
    assert reader.format == fmt
    assert list(reader) == TRICKY
    assert list(read_corpus(path, fmt)) == TRICKY


def test_dpr_tsv_refuses_newlines(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="newline"):
        write_corpus(tmp_path / "o.tsv", [Passage("1", "T", "two\nlines")], "dpr-tsv")
    path = tmp_path / "o.jsonl"
    write_corpus(path, [Passage("1", "T", "two\nlines")], "jsonl")
    assert list(read_corpus(path)) == [Passage("1", "T", "two\nlines")]


# --- SQuAD -----------------------------------------------------------------------------------------


def test_squad_dev_passages_and_questions() -> None:
    path = shared_data_path("squad", "dev-v1.1.json")
    passages, questions = load_squad(path)
    assert len(passages) == 2067
    assert len(questions) == 10570
    assert [p.id for p in passages] == [str(i) for i in range(2067)]
    assert passages[0].title == "Super Bowl 50"
    assert passages[0].text.startswith("Super Bowl 50 was an American football game")
    first = questions[0]
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers == ("Denver Broncos",)  # three identical annotations, deduplicated
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.gold_passage_id == "0"
    assert all("_" not in p.title for p in passages)
    assert all(q.answers and len(set(q.answers)) == len(q.answers) for q in questions)
    by_id = {p.id: p for p in passages}
    # SQuAD answers are spans of their paragraph, so each gold paragraph contains its answer.
    assert all(q.answers[0] in by_id[q.gold_passage_id or ""].text for q in questions)
    assert load_squad_passages(path) == passages
    assert load_squad_questions(path) == questions


def test_squad_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_squad(tmp_path / "missing.json")
    bad = _write(tmp_path / "bad.json", b"{")
    with pytest.raises(CorpusError, match="not valid JSON"):
        load_squad(bad)
    wrong = _write(tmp_path / "wrong.json", b'{"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}')
    with pytest.raises(CorpusError, match=r"data\[0\]\.paragraphs\[0\]: 'context' must be a string"):
        load_squad(wrong)
