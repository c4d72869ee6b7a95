"""DPR's answer matching ("does this passage contain the answer?"), reproduced exactly.

This is the rule behind every top-k answer-recall number DPR reports, so it follows facebookresearch/DPR
``dpr/data/qa_validation.py::has_answer`` and ``dpr/utils/tokenizers.py::SimpleTokenizer`` to the letter,
quirks included:

* ``match="string"``: the passage and each answer are NFD-normalized and tokenized with DPR's
  SimpleTokenizer (runs of letters/digits/marks, or single non-space characters); every token is
  lower-cased on its own (``str.lower``, as ``Tokens.words(uncased=True)`` does); an answer matches when
  its token sequence occurs contiguously in the passage's. An answer with no tokens (``""``, ``"  "``)
  matches every passage, as in DPR.
* ``match="regex"``: each answer is NFD-normalized and compiled with the third-party ``regex`` module
  (which DPR imports *as* ``re``) with IGNORECASE | UNICODE | MULTILINE, then searched in the NFD
  passage. A pattern that does not compile never matches (DPR catches the error and returns False).

The passage's title is not part of the text DPR matches; pass only the passage text.

For speed, :func:`prepare_passage` tokenizes a passage once (results are cached by text), and answer
token sequences and compiled patterns are cached too: an evaluation checks ~100 passages for each of
thousands of questions, and the same passages and answers come back again and again.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import regex

__all__ = ["MatchType", "PreparedPassage", "dpr_tokenize", "has_answer", "prepare_passage"]

MatchType = Literal["string", "regex"]

# DPR's SimpleTokenizer pattern. DPR wraps the two alternatives in capture groups; groups do not change
# what matches, and without them ``findall`` returns whole matches. The flags are DPR's: IGNORECASE cannot
# change which characters these classes accept, but keeping them costs nothing and removes a doubt.
_TOKEN_RE = regex.compile(
    r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]",
    flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE,
)
_ANSWER_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.MULTILINE

# Tokens are joined with NUL, which is a control character (\p{Cc}): the tokenizer never puts it inside a
# token, so "answer tokens joined, framed by NULs" is a substring of "passage tokens joined, framed by
# NULs" exactly when the answer's token sequence occurs contiguously in the passage's. That turns DPR's
# O(n*m) Python loop into one C-level substring search.
_SEP = "\x00"

# Cache sizes: a SQuAD-sized corpus (~2k paragraphs) fits entirely; for big corpora the top-k lists of
# neighbouring questions overlap enough that an LRU still pays. Entries are a few KB at most.
_PASSAGE_CACHE_SIZE = 8192
_ANSWER_CACHE_SIZE = 65536
_PATTERN_CACHE_SIZE = 8192


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def dpr_tokenize(text: str, uncased: bool = False) -> list[str]:
    """Tokenize ``text`` exactly like DPR's ``SimpleTokenizer(...).tokenize(text).words(uncased)``.

    No Unicode normalization is applied here (DPR normalizes before tokenizing; :func:`has_answer` does).
    With ``uncased=True`` each token is lower-cased separately, as DPR does.
    """
    tokens: list[str] = _TOKEN_RE.findall(text)
    if uncased:
        return [token.lower() for token in tokens]
    return tokens


@lru_cache(maxsize=_ANSWER_CACHE_SIZE)
def _answer_key(answer: str) -> str | None:
    """The answer's framed token string, or None when it has no tokens (and so matches everything)."""
    tokens = dpr_tokenize(_normalize(answer), uncased=True)
    if not tokens:
        return None
    return _SEP + _SEP.join(tokens) + _SEP


@lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _compile_answer(pattern: str) -> regex.Pattern[str] | None:
    """The compiled answer regex, or None when it does not compile (DPR treats that as no match)."""
    try:
        return regex.compile(_normalize(pattern), flags=_ANSWER_FLAGS)
    except Exception:  # DPR catches BaseException; anything short of Ctrl-C means "does not compile".
        return None


def _check_answers(answers: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too; DPR would silently match its characters one by one.
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of answer strings, not a single string")


class PreparedPassage:
    """A passage normalized (and, on first string-mode use, tokenized) once, to test many answer lists.

    Get one from :func:`prepare_passage`, which caches them by text.
    """

    __slots__ = ("_joined", "normalized")

    def __init__(self, text: str) -> None:
        """Prepare ``text`` (the passage body, without its title)."""
        self.normalized: str = _normalize(text)
        self._joined: str | None = None  # tokenized lazily: regex-mode callers never need it

    def _tokens_joined(self) -> str:
        if self._joined is None:
            # self.normalized is already NFD; NFD is idempotent, so this equals DPR's tokenization.
            self._joined = _SEP + _SEP.join(dpr_tokenize(self.normalized, uncased=True)) + _SEP
        return self._joined

    def has_answer(self, answers: Sequence[str], match: MatchType = "string") -> bool:
        """True when any of ``answers`` occurs in this passage under DPR's rule for ``match``."""
        _check_answers(answers)
        if match == "string":
            joined = self._tokens_joined()
            for answer in answers:
                key = _answer_key(answer)
                if key is None or key in joined:
                    return True
            return False
        if match == "regex":
            for answer in answers:
                pattern = _compile_answer(answer)
                if pattern is not None and pattern.search(self.normalized) is not None:
                    return True
            return False
        raise ValueError(f"unknown match type {match!r}; expected 'string' or 'regex'")

    def tokens(self) -> list[str]:
        """The passage's lower-cased DPR tokens (a new list each call)."""
        joined = self._tokens_joined()
        return joined[1:-1].split(_SEP) if len(joined) > 2 else []


@lru_cache(maxsize=_PASSAGE_CACHE_SIZE)
def prepare_passage(text: str) -> PreparedPassage:
    """A :class:`PreparedPassage` for ``text``, cached by text so repeated passages are tokenized once."""
    return PreparedPassage(text)


def has_answer(answers: Sequence[str], text: str, match: MatchType = "string") -> bool:
    """DPR's ``has_answer``: True when any answer in ``answers`` occurs in the passage ``text``.

    ``match="string"`` compares lower-cased DPR token sequences after NFD normalization; ``"regex"``
    treats each answer as a case-insensitive regular expression (invalid ones never match). ``text`` is
    the passage body only (DPR does not match against the title).
    """
    return prepare_passage(text).has_answer(answers, match)
