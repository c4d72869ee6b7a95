"""Question files: the real DPR files, detection, round trips and bad rows."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import pytest
from shared_data import shared_data_path

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.questions import Question, read_questions, write_questions


@pytest.mark.parametrize(
    ("name", "count"),
    [("nq-test.qa.tsv", 3610), ("trivia-test.qa.tsv", 11313), ("curatedtrec-test.qa.jsonl", 694)],
)
def test_dpr_question_files_parse_with_the_right_counts(name: str, count: int) -> None:
    questions = read_questions(shared_data_path("dpr-qas", name))
    assert len(questions) == count
    assert all(q.question.strip() and q.answers for q in questions)


def test_nq_first_question_and_non_ascii_answer() -> None:
    first = read_questions(shared_data_path("dpr-qas", "nq-test.qa.tsv"), "dpr-qas")[0]
    assert first == Question("who got the first nobel prize in physics", ("Wilhelm Conrad Röntgen",))


def test_trivia_doubled_quotes_are_unquoted_like_dpr() -> None:
    path = shared_data_path("dpr-qas", "trivia-test.qa.tsv")
    with path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 24 has doubled quotes in both columns: the question and answers such as ""Hitler's health"".
    assert '""""Bomb Plot""""' in lines[23]
    questions = read_questions(path)
    bomb = questions[23]
    # The question itself was quoted twice upstream; csv unquoting peels exactly one layer, as in DPR.
    assert bomb.question == '"Who was the target of the failed ""Bomb Plot"" of 1944?"'
    assert "Hitler's medical health" in bomb.answers
    assert "Adolf Hitler" in bomb.answers
    assert len(bomb.answers) == 60


def test_dpr_qas_matches_dpr_csv_reading() -> None:
    # DPR reads these files with csv.reader(delimiter="\t") and eval()s the second column; our
    # literal_eval path must give the same rows. (eval is safe here only because the data is ours.)
    path = shared_data_path("dpr-qas", "trivia-test.qa.tsv")
    with path.open(encoding="utf-8", newline="") as f:
        expected = [(row[0], tuple(eval(row[1]))) for row in csv.reader(f, delimiter="\t")]
    assert [(q.question, q.answers) for q in read_questions(path)] == expected


def test_curatedtrec_answers_are_kept_as_regexes() -> None:
    first = read_questions(shared_data_path("dpr-qas", "curatedtrec-test.qa.jsonl"))[0]
    assert first.question == "How tall is Mount McKinley?"
    assert first.answers[0].startswith("20\\s?,?\\s?(32|40)0")


# --- round trips -----------------------------------------------------------------------------------

WITH_ANSWERS = [
    Question('He said "hi"\tthen left?', ("O'Brien", 'say "cheese"', "both ' and \"", "a, b")),
    Question("Zürich or Genève?", ("Zürich",)),
    Question("no answers?", ()),
    Question("multi\nline question", ("x",)),
]
WITH_IDS = [
    Question("what is DPR?", ("dense passage retrieval",), id="q1", gold_passage_id="17"),
    Question("second", ("[a-z]+",), id="q2"),
]
PLAIN = [Question("what is the capital of France?"), Question('quotes " and \' and {braces}')]


@pytest.mark.parametrize(
    ("fmt", "questions"),
    [
        ("dpr-qas", WITH_ANSWERS),
        ("jsonl", WITH_ANSWERS + WITH_IDS),
        ("beir", [Question("what is DPR?", id="q1"), Question("Zürich?", id="7")]),
        ("text", PLAIN),
    ],
)
def test_write_then_read_round_trips(
    tmp_path: Path, fmt: Literal["dpr-qas", "jsonl", "beir", "text"], questions: list[Question]
) -> None:
    path = tmp_path / "questions.out"
    assert write_questions(path, questions, fmt) == len(questions)
    assert read_questions(path, fmt) == questions
    assert read_questions(path) == questions  # auto-detection finds the written format


def test_written_dpr_qas_looks_like_dpr(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    write_questions(path, [Question('say "hi"', ("it's", 'a "b"'))], "dpr-qas")
    assert path.read_text(encoding="utf-8") == '"say ""hi"""\t"[""it\'s"", \'a ""b""\']"\n'


@pytest.mark.parametrize(
    ("fmt", "question", "message"),
    [
        ("dpr-qas", Question("q", ("a",), id="1"), "cannot store question ids"),
        ("text", Question("q", ("a",)), "cannot store answers"),
        ("text", Question("two\nlines"), "line break"),
        ("beir", Question("q", ("a",), id="1"), "cannot store answers"),
        ("beir", Question("q"), "without an id"),
    ],
)
def test_writers_refuse_to_drop_data(
    tmp_path: Path, fmt: Literal["dpr-qas", "jsonl", "beir", "text"], question: Question, message: str
) -> None:
    with pytest.raises(CorpusError, match=message):
        write_questions(tmp_path / "q", [question], fmt)


def test_answers_list_is_coerced_to_tuple() -> None:
    q = Question("q", ["a", "b"])  # type: ignore[arg-type]
    assert q.answers == ("a", "b")
    assert hash(q) == hash(Question("q", ("a", "b")))
    with pytest.raises(TypeError):
        Question("q", "ab")  # type: ignore[arg-type]


# --- formats and detection ---------------------------------------------------------------------------


def test_jsonl_accepts_answers_key_ids_and_single_string(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "a?", "answers": ["x", "y"], "id": 3}\n'
        "\n"
        '{"question": "b?", "answer": "z"}\n'
        '{"question": "c?"}\n',
        encoding="utf-8",
    )
    assert read_questions(path) == [
        Question("a?", ("x", "y"), id="3"),
        Question("b?", ("z",)),
        Question("c?", ()),
    ]


def test_beir_queries_ignore_metadata(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "what?", "metadata": {}}\n', encoding="utf-8")
    assert read_questions(path) == [Question("what?", id="1")]


def test_text_format_ignores_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_bytes(b"\xef\xbb\xbffirst?\r\n\r\n   \nsecond?\n")
    assert read_questions(path) == [Question("first?"), Question("second?")]


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "auto", "is empty"),
        (b"\n \n", "auto", "is empty"),
        (b"\n\n", "text", "contains no questions"),
        (b"q1\t['a']\nq2\tnot a list\n", "auto", r"line 2: answer list is not a Python list literal"),
        (b"q1\t['a']\nq2\t[1, 2]\n", "dpr-qas", r"line 2: answer list must be a list of strings"),
        (b"q1\t['a']\nq2\n", "dpr-qas", r"line 2: expected 2 tab-separated columns"),
        (b"q1\t['a']\n\n\nq2\t['a']\tx\n", "dpr-qas", r"line 4: expected 2 tab-separated columns"),
        (b"q1\t['a']\n\t['b']\n", "dpr-qas", r"line 2: empty question"),
        (b"q1\t['a']\n\"q2\"x\t['b']\n", "dpr-qas", r"line 2: malformed row"),
        (b"q1\t['a']\nq2\t__import__('os')\n", "dpr-qas", r"line 2: answer list is not a Python list"),
        (b'{"question": "a"}\n{"question": "b", "answer": [1]}\n', "auto", "line 2: 'answer' must be"),
        (b'{"question": "a"}\n{"question": ""}\n', "jsonl", r"line 2: missing or empty 'question'"),
        (b'{"question": "a"}\n{"question": "b"\n', "jsonl", r"line 2: malformed JSON"),
        (b'{"question": "a"}\n[1]\n', "jsonl", r"line 2: expected a JSON object"),
        (b'{"question": "a", "answer": ["x"], "answers": ["y"]}\n', "jsonl", "both 'answer' and 'answers'"),
        (b'{"question": "a", "id": [1]}\n', "jsonl", "'id' must be a string or an integer"),
        (b'{"_id": "1", "text": "a"}\n{"text": "b"}\n', "beir", r"line 2: missing '_id'"),
        (b'{"_id": "1", "text": "a"}\n{"_id": "2"}\n', "beir", r"line 2: missing or empty 'text'"),
        (b"ok?\nbad \xff\n", "text", r"line 2: invalid UTF-8"),
        (b'{"nothing": 1}\n', "auto", "neither '_id'"),
        (b"{oops\n", "auto", "starts like JSON"),
        (b"a question\twith a tab\n", "auto", "has a tab but is not"),
    ],
)
def test_bad_question_files_fail_with_line_and_reason(
    tmp_path: Path, data: bytes, fmt: str, message: str
) -> None:
    path = tmp_path / "questions"
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=message):
        read_questions(path, fmt)  # type: ignore[arg-type]


def test_missing_file_directory_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_questions(tmp_path / "missing.tsv")
    with pytest.raises(CorpusError, match="is a directory"):
        read_questions(tmp_path)
    path = tmp_path / "q.txt"
    path.write_text("q?\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unknown question format"):
        read_questions(path, "csv")  # type: ignore[arg-type]
