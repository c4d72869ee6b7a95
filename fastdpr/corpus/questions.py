"""Question files: reading and writing the formats retrieval evaluations use.

Formats:

* ``dpr-qas``: DPR's ``*.qa.csv``: ``question<TAB>['answer', ...]`` with no header, written by Python's csv
  module (tab delimiter, ``"`` quoting with doubled quotes). The answer list is a Python literal; DPR
  ``eval()``s it, we use :func:`ast.literal_eval` (after csv unquoting), which accepts the same lists and
  cannot run code.
* ``jsonl``: ``{"question": ..., "answer": [...]}`` per line (``"answers"`` is accepted too; optional
  ``"id"`` and ``"gold_passage_id"``), e.g. DPR's CuratedTREC file, whose answers are regexes.
* ``beir``: BEIR ``queries.jsonl``: ``{"_id", "text"}`` (no answers; ``metadata`` ignored).
* ``text``: one question per line; blank lines are ignored.
* ``auto``: decided from the first non-blank line's content.

Question files are small, so they are read whole, and a bad row fails the read (CorpusError naming the
line and the reason) instead of being skipped: a silently shorter question set would skew recall.
"""

from __future__ import annotations

import ast
import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.reader import check_input_file

__all__ = ["QUESTION_FORMATS", "Question", "QuestionFormat", "read_questions", "write_questions"]

QuestionFormat = Literal["auto", "dpr-qas", "jsonl", "beir", "text"]
QUESTION_FORMATS: tuple[str, ...] = ("auto", "dpr-qas", "jsonl", "beir", "text")
_ConcreteFormat = Literal["dpr-qas", "jsonl", "beir", "text"]
# What ast.literal_eval raises on malformed or hostile input (deep nesting -> RecursionError/MemoryError).
_LITERAL_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    SyntaxError,
    TypeError,
    MemoryError,
    RecursionError,
)
_DETECT_ERRORS: tuple[type[Exception], ...] = (csv.Error, StopIteration, *_LITERAL_ERRORS)


@dataclass(frozen=True)
class Question:
    """A query, its answer strings (or regexes, for CuratedTREC-style data) and optional ids.

    ``gold_passage_id`` is the passage the question was written from, when known (SQuAD).
    """

    question: str
    answers: tuple[str, ...] = ()
    id: str | None = None
    gold_passage_id: str | None = None

    def __post_init__(self) -> None:
        """Coerce ``answers`` to a tuple so a list passed by a caller keeps the object hashable."""
        if isinstance(self.answers, str):
            raise TypeError("answers must be a sequence of strings, not a single string")
        if not isinstance(self.answers, tuple):
            object.__setattr__(self, "answers", tuple(self.answers))


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read question file {path}: {e}") from e
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}, line {line}: invalid UTF-8 ({e.reason})") from e


def _lines(text: str) -> list[tuple[int, str]]:
    # Split on "\n" only (not str.splitlines, which also breaks on U+2028 etc.) so line numbers match
    # what editors and `sed -n` show.
    return [(i, line.removesuffix("\r")) for i, line in enumerate(text.split("\n"), start=1)]


def _fail(path: Path, line: int, reason: str) -> CorpusError:
    return CorpusError(f"{path}, line {line}: {reason}")


def _detect(path: Path, text: str) -> _ConcreteFormat:
    for line_no, line in _lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise CorpusError(
                    f"cannot detect the format of {path}: line {line_no} starts like JSON but is not valid "
                    f"JSON ({e.msg}); pass the format explicitly (e.g. text)"
                ) from e
            except RecursionError as e:  # json's decoder recurses once per nesting level
                raise _fail(path, line_no, "JSON nested too deeply") from e
            if isinstance(obj, dict) and "_id" in obj:
                return "beir"
            if isinstance(obj, dict) and "question" in obj:
                return "jsonl"
            raise CorpusError(
                f"cannot detect the format of {path}: line {line_no} is JSON but has neither '_id' (beir) "
                "nor 'question' (jsonl)"
            )
        if "\t" in line:
            try:
                row = next(csv.reader([line], delimiter="\t", strict=True))
                if len(row) == 2 and isinstance(ast.literal_eval(row[1]), list | tuple):
                    return "dpr-qas"
            except _DETECT_ERRORS:
                pass
            # A tab but no answer list: more likely a broken DPR file than a question containing a tab.
            raise CorpusError(
                f"cannot detect the format of {path}: line {line_no} has a tab but is not "
                "'question<TAB>[answers]' (dpr-qas); pass the format explicitly"
            )
        return "text"
    raise CorpusError(f"question file {path} is empty")


def _parse_answers(path: Path, line: int, cell: str) -> tuple[str, ...]:
    try:
        value = ast.literal_eval(cell.strip())
    except _LITERAL_ERRORS as e:
        raise _fail(path, line, f"answer list is not a Python list literal ({type(e).__name__})") from e
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise _fail(path, line, "answer list must be a list of strings")
    return tuple(value)


def _read_dpr_qas(path: Path, text: str) -> list[Question]:
    questions: list[Question] = []
    # One reader over the whole file (not line by line) so a quoted question spanning lines, which
    # csv.writer produces for an embedded newline, reads back as one row, as in DPR.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise _fail(path, reader.line_num, f"malformed row ({e})") from e
        line, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise _fail(path, line, f"expected 2 tab-separated columns (question, answers), got {len(row)}")
        if not row[0].strip():
            raise _fail(path, line, "empty question")
        questions.append(Question(question=row[0], answers=_parse_answers(path, line, row[1])))
    return questions


def _optional_id(path: Path, line: int, obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(path, line, f"{key!r} must be a string or an integer")
    return str(value)


def _json_answers(path: Path, line: int, obj: dict[str, Any]) -> tuple[str, ...]:
    if "answer" in obj and "answers" in obj and obj["answer"] != obj["answers"]:
        raise _fail(path, line, "both 'answer' and 'answers' are present and differ")
    value = obj["answer"] if "answer" in obj else obj.get("answers", [])
    if isinstance(value, str):  # a single answer written without a list
        return (value,)
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _fail(path, line, "'answer' must be a list of strings")
    return tuple(value)


def _read_json_lines(path: Path, text: str, fmt: Literal["jsonl", "beir"]) -> list[Question]:
    questions: list[Question] = []
    for line_no, line in _lines(text):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, line_no, f"malformed JSON ({e.msg})") from e
        except RecursionError as e:  # json's decoder recurses once per nesting level
            raise _fail(path, line_no, "JSON nested too deeply") from e
        if not isinstance(obj, dict):
            raise _fail(path, line_no, "expected a JSON object")
        if fmt == "beir":
            qid = _optional_id(path, line_no, obj, "_id")
            if qid is None or not qid.strip():
                raise _fail(path, line_no, "missing '_id'")
            query = obj.get("text")
            if not isinstance(query, str) or not query.strip():
                raise _fail(path, line_no, "missing or empty 'text'")
            questions.append(Question(question=query, id=qid))
        else:
            query = obj.get("question")
            if not isinstance(query, str) or not query.strip():
                raise _fail(path, line_no, "missing or empty 'question'")
            questions.append(
                Question(
                    question=query,
                    answers=_json_answers(path, line_no, obj),
                    id=_optional_id(path, line_no, obj, "id"),
                    gold_passage_id=_optional_id(path, line_no, obj, "gold_passage_id"),
                )
            )
    return questions


def _read_text(text: str) -> list[Question]:
    return [Question(question=line) for _, line in _lines(text) if line.strip()]


def read_questions(path: str | Path, fmt: QuestionFormat = "auto") -> list[Question]:
    """Read every question of ``path`` in ``fmt`` (``"auto"``: detected from the content).

    Raises CorpusError for a missing file, an empty file, an undetectable format, or any bad row (with
    its line number and the reason).
    """
    if fmt not in QUESTION_FORMATS:
        raise CorpusError(f"unknown question format {fmt!r}; expected one of {', '.join(QUESTION_FORMATS)}")
    p = check_input_file(path, "question file")
    text = _decode(p)
    concrete: _ConcreteFormat = _detect(p, text) if fmt == "auto" else fmt
    if concrete == "dpr-qas":
        questions = _read_dpr_qas(p, text)
    elif concrete == "text":
        questions = _read_text(text)
    else:
        questions = _read_json_lines(p, text, concrete)
    if not questions:
        raise CorpusError(f"question file {p} contains no questions")
    return questions


def _unstorable(question: Question, fmt: str, what: str) -> CorpusError:
    return CorpusError(f"format {fmt} cannot store {what} (question {question.question[:60]!r})")


def write_questions(
    path: str | Path,
    questions: Iterable[Question],
    fmt: Literal["dpr-qas", "jsonl", "beir", "text"],
) -> int:
    """Write ``questions`` to ``path`` in ``fmt``, readable by :func:`read_questions`; returns the count.

    Refuses (CorpusError) to drop what a format cannot hold instead of losing it silently: ids in
    ``dpr-qas`` or ``text``, answers in ``beir`` or ``text``, a missing id in ``beir``, a line break in a
    ``text`` question.
    """
    if fmt not in ("dpr-qas", "jsonl", "beir", "text"):
        raise CorpusError(f"cannot write question format {fmt!r}; expected dpr-qas, jsonl, beir or text")
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for q in questions:
            if fmt in ("dpr-qas", "text") and (q.id is not None or q.gold_passage_id is not None):
                raise _unstorable(q, fmt, "question ids")
            if fmt == "dpr-qas":
                # str(list) is exactly how DPR writes the column; literal_eval reads it back.
                writer.writerow([q.question, str(list(q.answers))])
            elif fmt == "jsonl":
                obj: dict[str, Any] = {"question": q.question, "answer": list(q.answers)}
                if q.id is not None:
                    obj["id"] = q.id
                if q.gold_passage_id is not None:
                    obj["gold_passage_id"] = q.gold_passage_id
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            elif fmt == "beir":
                if q.answers or q.gold_passage_id is not None:
                    raise _unstorable(q, fmt, "answers or gold passages")
                if q.id is None:
                    raise _unstorable(q, fmt, "a question without an id")
                f.write(json.dumps({"_id": q.id, "text": q.question}, ensure_ascii=False) + "\n")
            else:
                if q.answers:
                    raise _unstorable(q, fmt, "answers")
                if "\n" in q.question or "\r" in q.question or not q.question.strip():
                    raise _unstorable(q, fmt, "a blank question or one with a line break")
                f.write(q.question + "\n")
            count += 1
    return count

