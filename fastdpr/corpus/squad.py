"""SQuAD v1.1 as a retrieval benchmark: every paragraph is a passage, every question a query.

Passage ids are the paragraph's 0-based position in file order (``"0"``, ``"1"``, ...), titles are the
article titles with ``_`` replaced by spaces, texts are the paragraph contexts. Each question keeps its
SQuAD id, its distinct answer texts (first-seen order) and, as ``gold_passage_id``, the id of the
paragraph it was written from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastdpr.common.errors import CorpusError
from fastdpr.corpus.questions import Question
from fastdpr.corpus.reader import Passage, check_input_file

__all__ = ["load_squad", "load_squad_passages", "load_squad_questions"]


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorpusError(f"SQuAD file {path} is not valid JSON: {e}") from e
    except OSError as e:
        raise CorpusError(f"cannot read SQuAD file {path}: {e}") from e


def _require(condition: bool, path: Path, where: str, what: str) -> None:
    if not condition:
        raise CorpusError(f"SQuAD file {path}: {where}: {what}")


def load_squad(path: str | Path) -> tuple[list[Passage], list[Question]]:
    """Read a SQuAD v1.1 JSON file once and return ``(passages, questions)``.

    Raises CorpusError for a missing file, invalid JSON, or a structure that is not SQuAD's (naming the
    offending element, e.g. ``data[3].paragraphs[7]``).
    """
    p = check_input_file(path, "SQuAD file")
    root = _load_json(p)
    _require(isinstance(root, dict) and isinstance(root.get("data"), list), p, "top level",
             "expected an object with a 'data' list")
    passages: list[Passage] = []
    questions: list[Question] = []
    for a, article in enumerate(root["data"]):
        where = f"data[{a}]"
        _require(isinstance(article, dict), p, where, "expected an object")
        title = article.get("title", "")
        paragraphs = article.get("paragraphs")
        _require(isinstance(title, str), p, where, "'title' must be a string")
        _require(isinstance(paragraphs, list), p, where, "'paragraphs' must be a list")
        title = title.replace("_", " ")
        for g, paragraph in enumerate(paragraphs):
            pwhere = f"{where}.paragraphs[{g}]"
            _require(isinstance(paragraph, dict), p, pwhere, "expected an object")
            context = paragraph.get("context")
            _require(isinstance(context, str), p, pwhere, "'context' must be a string")
            passage_id = str(len(passages))
            passages.append(Passage(id=passage_id, title=title, text=context))
            qas = paragraph.get("qas", [])
            _require(isinstance(qas, list), p, pwhere, "'qas' must be a list")
            for k, qa in enumerate(qas):
                qwhere = f"{pwhere}.qas[{k}]"
                _require(isinstance(qa, dict) and isinstance(qa.get("question"), str), p, qwhere,
                         "expected an object with a 'question' string")
                raw_answers = qa.get("answers", [])
                _require(isinstance(raw_answers, list)
                         and all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in raw_answers),
                         p, qwhere, "'answers' must be a list of objects with a 'text' string")
                # SQuAD repeats an answer once per annotator; dict.fromkeys dedupes, keeping first-seen order.
                answers = tuple(dict.fromkeys(x["text"] for x in raw_answers))
                qid = qa.get("id")
                questions.append(
                    Question(
                        question=qa["question"],
                        answers=answers,
                        id=str(qid) if qid is not None else None,
                        gold_passage_id=passage_id,
                    )
                )
    return passages, questions


def load_squad_passages(path: str | Path) -> list[Passage]:
    """Every paragraph of a SQuAD v1.1 file as a :class:`~fastdpr.corpus.reader.Passage` (see module docs)."""
    return load_squad(path)[0]


def load_squad_questions(path: str | Path) -> list[Question]:
    """Every question of a SQuAD v1.1 file as a :class:`~fastdpr.corpus.questions.Question` (see module docs)."""
    return load_squad(path)[1]
