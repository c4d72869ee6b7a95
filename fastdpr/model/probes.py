"""Probe texts shipped with fastdpr: questions and (title, text) passages on which every export is
validated against PyTorch, and on which the runtime later proves (without torch) that it reproduces
the exported model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fastdpr.common.errors import ArtifactError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage
from fastdpr.model.spec import Side

PROBE_PASSAGE_COUNT = 256
#: Probes held out from int8 calibration, appended after the calibration probes: the int8 checks and
#: the gate read only these (a gate measured on the data a recipe was tuned on would flatter it).
#: They are *added*, not carved out of the calibration set: halving the calibration questions moved
#: the searched smoothing alpha and cost 0.4 points of Top-20 on MiniLM-DPR (docs/benchmarks.md, "INT8
#: on every CPU class").
HELD_OUT_PASSAGE_COUNT = 128

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

# Held out from calibration (see HELD_OUT_PASSAGE_COUNT): written separately, never calibrated on.
HELD_OUT_QUESTIONS: tuple[str, ...] = (
    "what does the else clause of a try statement do?",
    "how do positional-only parameters work with the / marker?",
    "what is the walrus operator := called and where can it be used?",
    "how are set comprehensions written?",
    "what does __call__ do on a class instance?",
    "how does python look up names in the LEGB order?",
    "what is the difference between a generator expression and a list comprehension?",
    "how do I define __lt__ so objects can be sorted?",
    "what does the with statement do with multiple context managers?",
    "what happens when a function has no return statement?",
    "what does __getitem__ receive when slicing?",
    "how do bytes literals differ from string literals?",
    "what does the nonlocal keyword change in a closure?",
    "how is an async for loop executed?",
    "what does the __del__ method do and when is it called?",
    "how do conditional imports inside try/except ImportError work?",
    "what does __contains__ return for the in operator?",
    "what are the rules for comparing objects of different types?",
    "how does the % operator format strings?",
    "what does a bare except clause catch?",
    "how are exception groups handled with except*?",
    "what does the __init_subclass__ hook do?",
    "how do I unpack a dictionary into keyword arguments with **?",
    "what is the precedence of the power operator with unary minus?",
    "how are class attributes different from instance attributes?",
    "what does __bool__ or __len__ decide in an if statement?",
    "how does the yield expression receive values sent with send()?",
    "what are annotations on function parameters used for?",
    "how do descriptors with __get__ and __set__ work?",
    "what does the global namespace of a module contain?",
    "how do I write an integer literal with underscores for readability?",
    "what is the difference between __new__ and __init__?",
    "how does floor division // behave with floats?",
    "what does the is not operator test?",
    "how does a while loop with break and else behave?",
    "what does the __enter__ method return to the as target?",
    "how are complex number literals like 3j written?",
    "what does __format__ do for f-string format specs?",
    "how is a raw string useful for regular expressions?",
    "what does __iter__ have to return?",
)


@dataclass(frozen=True)
class Probes:
    """The probe questions and passages, as stored in an artifact's ``probes/`` directory.

    The first ``calibration_questions`` questions and ``calibration_passages`` passages are what int8
    calibration may read; the rows after them are held out for the int8 checks. ``None`` (artifacts
    written before the split): every row is both.
    """

    questions: tuple[str, ...]
    passages: tuple[Passage, ...]
    #: Where the passages came from (recorded in the manifest: int8 calibration depends on it).
    source: str = "builtin: pydoc_data.topics passages"
    calibration_questions: int | None = None
    calibration_passages: int | None = None

    def calibration_rows(self, side: Side) -> slice:
        """The rows of ``side``'s probes that int8 calibration reads."""
        count = self.calibration_questions if side == "question" else self.calibration_passages
        return slice(None) if count is None else slice(0, count)

    def held_out_rows(self, side: Side) -> slice:
        """The rows of ``side``'s probes held out from calibration (all rows for older artifacts)."""
        count = self.calibration_questions if side == "question" else self.calibration_passages
        return slice(None) if count is None else slice(count, None)

    def split_counts(self) -> dict[str, int] | None:
        """What the manifest records about the split (None when there is none)."""
        if self.calibration_questions is None or self.calibration_passages is None:
            return None
        return {"questions": self.calibration_questions, "passages": self.calibration_passages}

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
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
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
    # Held-out passages sit between the chosen ones (a quarter step on): same spread, none shared.
    chosen_ids = {p.id for p in chosen}
    held_out = [p for p in (corpus[int((i + 0.25) * len(corpus) / HELD_OUT_PASSAGE_COUNT)]
                            for i in range(HELD_OUT_PASSAGE_COUNT)) if p.id not in chosen_ids]
    return Probes(questions=PROBE_QUESTIONS + HELD_OUT_QUESTIONS, passages=tuple(chosen) + tuple(held_out),
                  calibration_questions=len(PROBE_QUESTIONS), calibration_passages=len(chosen))


def probes_from_corpus(path: Path, passage_count: int = PROBE_PASSAGE_COUNT, seed: int = 0) -> Probes:
    """Probes whose passages are a seeded sample of a corpus file (any format ``fastdpr index`` reads),
    for calibrating and validating int8 on in-domain text (``fastdpr export --calibration``).

    Reservoir sampling: one pass, memory bounded by the sample, whatever the corpus size.
    """
    import random

    from fastdpr.corpus.reader import read_corpus

    rng = random.Random(seed)
    sample: list[Passage] = []
    wanted = passage_count + HELD_OUT_PASSAGE_COUNT
    for seen, passage in enumerate(read_corpus(path)):
        if seen < wanted:
            sample.append(passage)
        else:
            slot = rng.randint(0, seen)
            if slot < wanted:
                sample[slot] = passage
    if len(sample) < 16:
        raise ArtifactError(f"{path}: {len(sample)} passages is too few to calibrate on (need at least 16)")
    # A small corpus still keeps a third of its sample for the held-out checks.
    held_out = min(HELD_OUT_PASSAGE_COUNT, len(sample) // 3)
    return Probes(questions=PROBE_QUESTIONS + HELD_OUT_QUESTIONS, passages=tuple(sample),
                  source=f"--calibration {path}: {len(sample)} passages, seeded reservoir sample (seed {seed}), "
                         f"{held_out} held out from calibration",
                  calibration_questions=len(PROBE_QUESTIONS), calibration_passages=len(sample) - held_out)
