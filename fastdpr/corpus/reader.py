"""Streaming readers (and writers) of passage corpora.

Formats:

* ``dpr-tsv``: DPR's ``psgs_w100.tsv``: ``id<TAB>text<TAB>title`` with a header row, as Python's csv module
  writes it (tab delimiter, ``"`` quoting with doubled quotes). A header naming the three columns in another
  order is honoured. Assumption: a row is one physical line, as in every DPR file (no newline inside a
  quoted field); a line with broken quoting is skipped as a "malformed row".
* ``jsonl``: one ``{"id", "title", "text"}`` object per line (``title`` optional).
* ``beir``: BEIR's ``corpus.jsonl``: ``{"_id", "title", "text"}`` (+ ignored ``metadata``).
* ``auto``: decided from the first non-blank line's *content*, never from the file name.

Files may be gzip-compressed (detected by magic bytes), since DPR distributes ``psgs_w100.tsv.gz``.

Reading is lazy: :class:`CorpusReader` yields :class:`Passage` objects one at a time, so memory does not
grow with the corpus (except for the set of seen ids, needed to drop duplicates). Rows that cannot be
used are skipped and counted by reason in a :class:`CorpusReport`, with the first few line numbers per
reason; ``strict=True`` turns the first skip into a :class:`~fastdpr.common.errors.CorpusError` instead.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastdpr.common.errors import CorpusError

__all__ = [
    "CORPUS_FORMATS",
    "CorpusFormat",
    "CorpusReader",
    "CorpusReport",
    "Passage",
    "SkipReason",
    "check_input_file",
    "detect_corpus_format",
    "read_corpus",
    "write_corpus",
]

CorpusFormat = Literal["auto", "dpr-tsv", "jsonl", "beir"]
CORPUS_FORMATS: tuple[str, ...] = ("auto", "dpr-tsv", "jsonl", "beir")

SkipReason = Literal[
    "invalid UTF-8",
    "malformed row",
    "wrong column count",
    "malformed JSON",
    "missing id",
    "invalid field type",
    "empty text",
    "duplicate id",
]

DPR_TSV_HEADER: tuple[str, str, str] = ("id", "text", "title")
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Passage:
    """One retrievable unit: DPR encodes ``(title, text)`` pairs and returns ``id``."""

    id: str
    title: str
    text: str


@dataclass
class CorpusReport:
    """What a pass over a corpus file read and skipped.

    ``skipped`` maps a reason to its count; ``examples`` maps it to the first line numbers (1-based,
    physical lines) where it happened. Title-less passages are read, not skipped, and counted in
    ``no_title``.
    """

    path: str
    format: str
    max_examples: int = 5
    read: int = 0
    no_title: int = 0
    no_title_examples: list[int] = field(default_factory=list)
    blank_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        """Rows skipped for any reason."""
        return sum(self.skipped.values())

    def add_skip(self, reason: str, line: int) -> None:
        """Count one skipped row at ``line`` for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(line)

    def add_no_title(self, line: int) -> None:
        """Count one passage read without a title."""
        self.no_title += 1
        if len(self.no_title_examples) < self.max_examples:
            self.no_title_examples.append(line)

    def summary(self) -> str:
        """A one-paragraph human-readable summary."""
        parts = [f"{self.path} ({self.format}): {self.read} passages read"]
        if self.no_title:
            parts.append(f"{self.no_title} without title (lines {_lines(self.no_title_examples)})")
        for reason, count in sorted(self.skipped.items()):
            parts.append(f"{count} skipped: {reason} (lines {_lines(self.examples.get(reason, []))})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serializable data."""
        return {
            "path": self.path,
            "format": self.format,
            "read": self.read,
            "no_title": self.no_title,
            "no_title_examples": list(self.no_title_examples),
            "blank_lines": self.blank_lines,
            "skipped": dict(self.skipped),
            "skipped_total": self.total_skipped,
            "examples": {reason: list(lines) for reason, lines in self.examples.items()},
        }


def _lines(lines: list[int]) -> str:
    return ", ".join(str(line) for line in lines) + (", ..." if lines else "")


class Skip(Exception):
    """Internal: this row is skipped for ``reason``."""

    def __init__(self, reason: SkipReason, detail: str = "") -> None:
        super().__init__(reason)
        self.reason: SkipReason = reason
        self.detail = detail


def check_input_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a :class:`Path` if it is an existing regular file, else raise CorpusError.

    ``what`` names the file in the message ("corpus file", "question file").
    """
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"{what} {p} does not exist")
    if p.is_dir():
        raise CorpusError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise CorpusError(f"{what} {p} is not a regular file")
    return p


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open ``path`` for binary reading, transparently gunzipping it (detected by content)."""
    f = path.open("rb")
    try:
        magic = f.read(2)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if magic == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")
    return f


def _iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end-of-line bytes), read in binary.

    Binary reading lets one undecodable line be skipped instead of failing the whole file.
    """
    try:
        with open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if line_no == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                yield line_no, raw.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error) as e:  # gzip: truncated -> EOFError, corrupt data -> zlib.error
        raise CorpusError(f"cannot read {path}: {e}") from e


def parse_tsv_line(line: str) -> list[str]:
    # Fast path: with neither quotes nor carriage returns, csv would split exactly on tabs.
    if '"' not in line and "\r" not in line:
        return line.split("\t")
    try:
        # strict=True so that broken quoting is reported instead of silently mangled.
        return next(csv.reader([line], delimiter="\t", strict=True))
    except (csv.Error, StopIteration) as e:
        raise Skip("malformed row", str(e)) from e


def is_header(row: list[str]) -> bool:
    return sorted(cell.strip().lower() for cell in row) == sorted(DPR_TSV_HEADER)


def detect_corpus_format(path: str | Path) -> Literal["dpr-tsv", "jsonl", "beir"]:
    """Decide a corpus file's format from its first non-blank line (never from its name).

    A ``id<TAB>text<TAB>title`` header or any tab-separated line means ``dpr-tsv``; a JSON object with
    ``_id`` means ``beir``, with ``id`` means ``jsonl``. Raises CorpusError when it cannot tell.
    """
    p = check_input_file(path, "corpus file")
    for line_no, raw in _iter_raw_lines(p):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"cannot detect the format of {p}: line {line_no} is not valid UTF-8; "
                "pass the format explicitly"
            ) from e
        return _format_of_line(p, line_no, line)
    raise CorpusError(f"corpus file {p} is empty")


def _format_of_line(path: Path, line_no: int, line: str) -> Literal["dpr-tsv", "jsonl", "beir"]:
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise CorpusError(
                f"cannot detect the format of {path}: line {line_no} starts like JSON but is not valid JSON "
                f"({e.msg}); pass the format explicitly"
            ) from e
        except RecursionError as e:  # json's decoder recurses once per nesting level
            raise CorpusError(f"cannot detect the format of {path}: line {line_no} is JSON nested too deeply") from e
        if isinstance(obj, dict):
            if "_id" in obj:
                return "beir"
            if "id" in obj:
                return "jsonl"
        raise CorpusError(
            f"cannot detect the format of {path}: line {line_no} is JSON but has neither '_id' (beir) nor "
            "'id' (jsonl)"
        )
    if "\t" in line:
        return "dpr-tsv"
    raise CorpusError(
        f"cannot detect the format of {path}: line {line_no} is neither a JSON object nor tab-separated "
        "(expected dpr-tsv 'id<TAB>text<TAB>title', jsonl or beir)"
    )


class CorpusReader:
    """Lazily read the passages of one corpus file.

    Iterating yields :class:`Passage` objects and refills :attr:`report` (each iteration starts a fresh
    report). After the last passage, a pass that read no passage at all raises CorpusError. With
    ``strict=True``, the first skipped row raises CorpusError naming file, line and reason.

    The format is resolved (and the file checked) when the reader is created, so a missing file or an
    undetectable format fails early.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: CorpusFormat = "auto",
        *,
        strict: bool = False,
        max_examples: int = 5,
    ) -> None:
        """Check ``path`` and resolve ``fmt`` (``"auto"`` detects it from the content)."""
        if fmt not in CORPUS_FORMATS:
            raise CorpusError(f"unknown corpus format {fmt!r}; expected one of {', '.join(CORPUS_FORMATS)}")
        self.path: Path = check_input_file(path, "corpus file")
        self.format: Literal["dpr-tsv", "jsonl", "beir"] = (
            detect_corpus_format(self.path) if fmt == "auto" else fmt
        )
        self.strict = strict
        self.max_examples = max_examples
        self.report = CorpusReport(path=str(self.path), format=self.format, max_examples=max_examples)

    def __iter__(self) -> Iterator[Passage]:
        report = CorpusReport(path=str(self.path), format=self.format, max_examples=self.max_examples)
        self.report = report
        seen: set[str] = set()
        rows = self._tsv_rows() if self.format == "dpr-tsv" else self._json_rows()
        for line_no, parsed in rows:
            try:
                if isinstance(parsed, Skip):
                    raise parsed
                passage = parsed
                if passage.id in seen:
                    raise Skip("duplicate id", f"id {passage.id!r} already read")
                seen.add(passage.id)
            except Skip as skip:
                if self.strict:
                    detail = f" ({skip.detail})" if skip.detail else ""
                    raise CorpusError(
                        f"{self.path}, line {line_no}: {skip.reason}{detail} (strict mode)"
                    ) from None
                report.add_skip(skip.reason, line_no)
                continue
            if not passage.title:
                report.add_no_title(line_no)
            report.read += 1
            yield passage
        if report.read == 0:
            why = f": {report.summary()}" if report.total_skipped else ""
            raise CorpusError(f"corpus file {self.path} contains no passages{why}")

    def _decoded_lines(self) -> Iterator[tuple[int, str | Skip]]:
        for line_no, raw in _iter_raw_lines(self.path):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, Skip("invalid UTF-8", str(e))
                continue
            if not line.strip():
                self.report.blank_lines += 1
                continue
            yield line_no, line

    def _tsv_rows(self) -> Iterator[tuple[int, Passage | Skip]]:
        columns = {name: i for i, name in enumerate(DPR_TSV_HEADER)}
        first = True
        for line_no, line in self._decoded_lines():
            if isinstance(line, Skip):
                first = False
                yield line_no, line
                continue
            try:
                row = parse_tsv_line(line)
                if first and is_header(row):
                    # Honour the header's column order; DPR's own files use id, text, title.
                    columns = header_columns(row)
                    first = False
                    continue
                first = False
                yield line_no, passage_from_tsv_row(row, columns)
            except Skip as skip:
                yield line_no, skip

    def _json_rows(self) -> Iterator[tuple[int, Passage | Skip]]:
        id_key = "_id" if self.format == "beir" else "id"
        for line_no, line in self._decoded_lines():
            if isinstance(line, Skip):
                yield line_no, line
                continue
            try:
                yield line_no, passage_from_json(line, id_key)
            except Skip as skip:
                yield line_no, skip


def header_columns(row: list[str]) -> dict[str, int]:
    """Column positions named by a header row (DPR's own files use id, text, title)."""
    return {cell.strip().lower(): i for i, cell in enumerate(row)}


def passage_from_tsv_row(row: list[str], columns: dict[str, int]) -> Passage:
    if len(row) != len(DPR_TSV_HEADER):
        raise Skip("wrong column count", f"{len(row)} columns, expected {len(DPR_TSV_HEADER)}")
    passage_id = row[columns["id"]]
    if not passage_id.strip():
        raise Skip("missing id")
    text = row[columns["text"]]
    if not text.strip():
        raise Skip("empty text")
    return Passage(id=passage_id, title=row[columns["title"]], text=text)


def passage_from_json(line: str, id_key: str) -> Passage:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise Skip("malformed JSON", e.msg) from e
    except RecursionError as e:  # json's decoder recurses once per nesting level
        raise Skip("malformed JSON", "nested too deeply") from e
    if not isinstance(obj, dict):
        raise Skip("malformed JSON", f"expected a JSON object, got {type(obj).__name__}")
    raw_id = obj.get(id_key)
    if raw_id is None:
        raise Skip("missing id", f"no {id_key!r}")
    # Integer ids are common in hand-made JSONL; bool is an int subclass but never a sensible id.
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise Skip("invalid field type", f"{id_key!r} is {type(raw_id).__name__}")
    passage_id = str(raw_id)
    if not passage_id.strip():
        raise Skip("missing id", f"empty {id_key!r}")
    title = obj.get("title")
    if title is None:
        title = ""
    text = obj.get("text")
    if text is None:
        text = ""
    if not isinstance(title, str) or not isinstance(text, str):
        raise Skip("invalid field type", "'title' and 'text' must be strings")
    if not text.strip():
        raise Skip("empty text")
    return Passage(id=passage_id, title=title, text=text)


def read_corpus(
    path: str | Path,
    fmt: CorpusFormat = "auto",
    *,
    strict: bool = False,
    max_examples: int = 5,
) -> CorpusReader:
    """A :class:`CorpusReader` over ``path``: iterate it for passages, then look at ``.report``."""
    return CorpusReader(path, fmt, strict=strict, max_examples=max_examples)


def write_corpus(
    path: str | Path,
    passages: Iterable[Passage],
    fmt: Literal["dpr-tsv", "jsonl", "beir"],
) -> int:
    """Write ``passages`` to ``path`` in ``fmt`` (UTF-8), readable by :func:`read_corpus`; returns the count.

    ``dpr-tsv`` gets DPR's header and csv quoting; it cannot hold a newline inside a field (the reader is
    line-based, like DPR's files), so such a passage raises CorpusError.
    """
    if fmt not in ("dpr-tsv", "jsonl", "beir"):
        raise CorpusError(f"cannot write corpus format {fmt!r}; expected dpr-tsv, jsonl or beir")
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        if fmt == "dpr-tsv":
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(DPR_TSV_HEADER)
            for passage in passages:
                fields = (passage.id, passage.text, passage.title)
                if any("\n" in value or "\r" in value for value in fields):
                    raise CorpusError(
                        f"passage {passage.id!r} has a newline in a field; dpr-tsv cannot hold it"
                    )
                writer.writerow(fields)
                count += 1
        else:
            id_key = "_id" if fmt == "beir" else "id"
            for passage in passages:
                obj = {id_key: passage.id, "title": passage.title, "text": passage.text}
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                count += 1
    return count

