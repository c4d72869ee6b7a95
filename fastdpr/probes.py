"""Probe texts shipped with fastdpr: questions and (title, text) passages on which every export is
validated against PyTorch, and on which the runtime later proves (without torch) that it reproduces
the exported model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fastdpr.builtin_corpus import pydoc_topic_passages
from fastdpr.corpus import Passage
from fastdpr.errors import ArtifactError

PROBE_PASSAGE_COUNT = 256
#: Which probes the int8 calibration may read (even positions) and which ones judge the int8 graph
#: (odd positions, held out from calibration): a gate measured on the data a recipe was tuned on
#: would flatter it. Export and every later verification use the same split.
CALIBRATION_ROWS = slice(0, None, 2)
HELD_OUT_ROWS = slice(1, None, 2)

# Real questions a Python user asks; the pydoc topics hold most of their answers. Some are short,
# some long, some with unusual characters, so tokenization edge cases are probed too.
PROBE_QUESTIONS: tuple[str, ...] = (
    "how does the with statement call __enter__ and __exit__?",
    "what happens when an exception is raised inside a finally clause?",
    "what is the difference between is and == in python?",
    "how are default argument values evaluated?",
    "what does the global statement do?",
    "how do I declare a variable nonlocal in a nested function?",
    "what is the operator precedence of not, and, or?",
    "how does python compare sequences like tuples and lists?",
    "what does yield from do in a generator?",
    "what is a coroutine defined with async def?",
    "how does the for loop use the iterator protocol?",
    "what is the syntax of a lambda expression?",
    "when is the else clause of a while loop executed?",
    "what are the rules for naming identifiers?",
    "how do string literal prefixes like r and b work?",
    "what are f-strings and how are replacement fields evaluated?",
    "how does slicing with a step work?",
    "what is the __slots__ attribute used for?",
    "how does attribute lookup use __getattr__ and __getattribute__?",
    "what does the assert statement do when optimizations are enabled?",
    "how do augmented assignments like += work on lists?",
    "what is the del statement for?",
    "how do I import a submodule relative to the current package?",
    "what does the pass statement do?",
    "how are class bodies executed and what is a metaclass?",
    "what does the return statement do in a generator?",
    "which special method implements the in operator?",
    "how do I make an object callable?",
    "what does the raise from clause set on an exception?",
    "how are integer literals written in hexadecimal, octal and binary?",
    "what is the ternary conditional expression syntax?",
    "how does python evaluate chained comparisons like a < b < c?",
    "what does the break statement do inside nested loops?",
    "what is the difference between mutable and immutable objects?",
    "what are the truth values of empty containers?",
    "how do I define a context manager class?",
    "what does the match statement do with class patterns?",
    "how are keyword-only arguments declared?",
    "what does the * operator do in a function call?",
    "how do I format a number with thousands separators?",
    "what is the __init__ method of a class?",
    "how does python's integer division round negative numbers?",
    "what is the difference between __str__ and __repr__?",
    "how do dictionary displays and comprehensions work?",
    "what does the type statement create?",
    "¿qué hace la sentencia try en python?",
    "what exception does next() raise at the end of an iterator?",
    "what are the bitwise operators &, |, ^ and ~?",
    "how does the continue statement work?",
    "what is name mangling for __private attributes?",
    "how do I write a decorator for a function?",
    "what is the await expression?",
    "how are boolean operations short-circuited?",
    "what is the Ellipsis object (...)?",
    "how do I compare floating point numbers for equality?",
    "what is the scope of a variable in a list comprehension?",
    "what does the @ operator (matrix multiplication) call?",
    "how does unpacking with a starred target like a, *b = x work?",
    "what are the augmented arithmetic special methods like __iadd__?",
    "what are the rules for line joining with backslashes and brackets?",
    "how do I define a class with a custom __hash__ and __eq__?",
    "what is sys.exc_info used for?",
    "how does python handle unicode in identifiers?",
    "which built-in constants are there, like None, True and NotImplemented?",
)


@dataclass(frozen=True)
class Probes:
    """The probe questions and passages, as stored in an artifact's ``probes/`` directory."""

    questions: tuple[str, ...]
    passages: tuple[Passage, ...]
    #: Where the passages came from (recorded in the manifest: int8 calibration depends on it).
    source: str = "builtin: pydoc_data.topics passages"

    def passage_pairs(self) -> list[tuple[str, str]]:
        """The passages as (title, text) pairs, the encoder's input."""
        return [(p.title, p.text) for p in self.passages]

    def save(self, directory: Path) -> None:
        """Write ``questions.jsonl`` and ``passages.jsonl`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "questions.jsonl", "w", encoding="utf-8") as handle:
            for question in self.questions:
                handle.write(json.dumps({"question": question}, ensure_ascii=False) + "\n")
        with open(directory / "passages.jsonl", "w", encoding="utf-8") as handle:
            for p in self.passages:
                handle.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False))
                handle.write("\n")

    @classmethod
    def load(cls, directory: Path) -> Probes:
        """Read probes written by :meth:`save`."""
        try:
            with open(directory / "questions.jsonl", encoding="utf-8") as handle:
                questions = tuple(json.loads(line)["question"] for line in handle if line.strip())
            with open(directory / "passages.jsonl", encoding="utf-8") as handle:
                passages = tuple(
                    Passage(id=row["id"], title=row["title"], text=row["text"])
                    for row in (json.loads(line) for line in handle if line.strip())
                )
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot read probes in {directory}: {exc}") from exc
        return cls(questions=questions, passages=passages)


def builtin_probes(passage_count: int = PROBE_PASSAGE_COUNT) -> Probes:
    """The probes shipped with fastdpr: the questions above and an evenly spread, deterministic
    sample of ``passage_count`` pydoc topic passages (every topic is represented)."""
    corpus = pydoc_topic_passages()
    if passage_count >= len(corpus):
        chosen = corpus
    else:
        step = len(corpus) / passage_count
        chosen = [corpus[int(i * step)] for i in range(passage_count)]
    return Probes(questions=PROBE_QUESTIONS, passages=tuple(chosen))


def probes_from_corpus(path: Path, passage_count: int = PROBE_PASSAGE_COUNT, seed: int = 0) -> Probes:
    """Probes whose passages are a seeded sample of a corpus file (any format ``fastdpr index`` reads),
    for calibrating and validating int8 on in-domain text (``fastdpr export --calibration``).

    Reservoir sampling: one pass, memory bounded by the sample, whatever the corpus size.
    """
    import random

    from fastdpr.corpus import read_corpus

    rng = random.Random(seed)
    sample: list[Passage] = []
    for seen, passage in enumerate(read_corpus(path)):
        if seen < passage_count:
            sample.append(passage)
        else:
            slot = rng.randint(0, seen)
            if slot < passage_count:
                sample[slot] = passage
    if len(sample) < 16:
        raise ArtifactError(f"{path}: {len(sample)} passages is too few to calibrate on (need at least 16)")
    return Probes(questions=PROBE_QUESTIONS, passages=tuple(sample),
                  source=f"--calibration {path}: {len(sample)} passages, seeded reservoir sample (seed {seed})")
