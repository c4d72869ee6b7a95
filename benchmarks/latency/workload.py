"""What every system encodes and asks: passages, measured questions, and the warm-up for both."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.corpus.reader import Passage

# Synthetic workload (shape runs without --squad): token counts, special tokens included.
SYNTHETIC_PASSAGE_TOKENS = (64, 256)
SYNTHETIC_QUESTION_TOKENS = (8, 32)
#: Warm-up questions per question length found in the measured set.
WARMUP_PER_LENGTH = 2
#: Warm-up passages, in batches: spread over the length range of the measured passages.
WARMUP_PASSAGE_BATCHES = 4


@dataclass(frozen=True)
class Workload:
    """What every system encodes and searches. ``spare_questions`` are questions not measured: the
    warm-up is drawn from them."""

    passages: list[Passage]
    questions: list[str]
    spare_questions: list[str]
    description: dict[str, Any]


def _synthetic_words(tokenizer_path: Path) -> list[str]:
    """Whole-word vocabulary entries: each is exactly one WordPiece token, so a passage of n words is n tokens."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab()
    return sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 3)


def synthetic_workload(tokenizer_path: Path, passages_n: int, queries_n: int, seed: int) -> Workload:
    """Seeded random-word passages of uniform 64..256 tokens and questions of uniform 8..32 tokens.

    Passages are (title, text) pairs with a 1-4 word title; lengths count [CLS] and the two [SEP].
    """
    words = _synthetic_words(tokenizer_path)
    rng = random.Random(seed)
    passages = []
    for i in range(passages_n):
        tokens = rng.randint(*SYNTHETIC_PASSAGE_TOKENS)
        title_words = rng.randint(1, 4)
        title = " ".join(rng.choices(words, k=title_words))
        text = " ".join(rng.choices(words, k=tokens - 3 - title_words))
        passages.append(Passage(id=f"synthetic-{i}", title=title, text=text))
    questions = [" ".join(rng.choices(words, k=rng.randint(*SYNTHETIC_QUESTION_TOKENS) - 2)) + "?"
                 for _ in range(queries_n * 3)]
    return Workload(passages, questions[:queries_n], questions[queries_n:], {
        "source": "synthetic",
        "passages_note": f"seeded random vocabulary words, uniform {SYNTHETIC_PASSAGE_TOKENS[0]}.."
                         f"{SYNTHETIC_PASSAGE_TOKENS[1]} tokens (title 1-4 words)",
        "questions_note": f"seeded random vocabulary words, uniform {SYNTHETIC_QUESTION_TOKENS[0]}.."
                          f"{SYNTHETIC_QUESTION_TOKENS[1]} tokens",
    })


def squad_workload(squad: Path, passages_n: int, queries_n: int, seed: int) -> Workload:
    """A seeded sample of SQuAD paragraphs (as (title, text) passages) and of SQuAD questions; the other
    questions are the spare pool the warm-up is drawn from."""
    from fastdpr.corpus.squad import load_squad

    passages, questions = load_squad(squad)
    rng = random.Random(seed)
    chosen = rng.sample(passages, min(passages_n, len(passages)))
    shuffled = rng.sample([q.question for q in questions], len(questions))
    asked, spare = shuffled[:queries_n], shuffled[queries_n:]
    return Workload(chosen, asked, spare, {
        "source": f"SQuAD v1.1 {squad.name}",
        "passages_note": f"seeded sample of {len(chosen)} of {len(passages)} paragraphs as (title, text)",
        "questions_note": f"seeded sample of {len(asked)} of {len(questions)} questions",
    })


def warmup_questions(measured: Sequence[str], spare: Sequence[str], length: Callable[[str], int],
                     per_length: int = WARMUP_PER_LENGTH) -> tuple[list[str], dict[str, Any]]:
    """``per_length`` questions for every token length the measured questions have (so no measured call is
    the first of its input shape for any system), taken from ``spare`` (never measured) where it has
    them, else from the measured questions of that length. Returned shortest first, with a description."""
    wanted = sorted({length(q) for q in measured})
    by_length: dict[int, list[str]] = {}
    for question in spare:
        by_length.setdefault(length(question), []).append(question)
    chosen: list[str] = []
    reused = 0
    for n in wanted:
        picks = by_length.get(n, [])[:per_length]
        if len(picks) < per_length:
            fallback = [q for q in measured if length(q) == n][:per_length - len(picks)]
            reused += len(fallback)
            picks = picks + fallback
        chosen.extend(picks)
    return chosen, {"questions": len(chosen), "per_length": per_length, "lengths": [wanted[0], wanted[-1]],
                    "distinct_lengths": len(wanted), "taken_from_measured": reused}


def warmup_passages(passages: Sequence[Passage], lengths: Sequence[int], count: int) -> list[Passage]:
    """``count`` passages evenly spread over the token-length order of ``passages`` (shortest to longest)."""
    order = np.argsort(lengths, kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, num=min(count, len(order))).round().astype(int))
    return [passages[int(order[i])] for i in picks]


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Mean / median / min / max of token counts."""
    array = np.asarray(lengths)
    return {"mean": round(float(array.mean()), 1), "p50": float(np.median(array)), "min": int(array.min()),
            "max": int(array.max())}
