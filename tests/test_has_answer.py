"""DPR answer matching: agreement with DPR's own labels, plus hand-written edge cases."""

from __future__ import annotations

import json
import unicodedata

import pytest
from shared_data import shared_data_path

from fastdpr.eval.has_answer import MatchType, dpr_tokenize, has_answer, prepare_passage


def test_agrees_with_every_golden_case() -> None:
    path = shared_data_path("dpr-has-answer-golden.jsonl")
    mismatches: list[str] = []
    counts = {"string": 0, "regex": 0}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            case = json.loads(line)
            match: MatchType = case["match"]
            counts[match] += 1
            got = has_answer(case["answers"], case["text"], match)
            if got != case["has_answer"]:
                expected = case["has_answer"]
                mismatches.append(f"line {line_no}: expected {expected}, got {got}: {case['answers']!r}")
    assert sum(counts.values()) == 5000
    assert counts["regex"] > 0 and counts["string"] > 0
    assert not mismatches, f"{len(mismatches)} mismatches, first: " + "\n".join(mismatches[:10])


def test_golden_cases_agree_through_prepared_passage_reuse() -> None:
    # The benchmark path: one prepared passage, many answer lists; results must not depend on call order.
    path = shared_data_path("dpr-has-answer-golden.jsonl")
    with path.open(encoding="utf-8") as f:
        cases = [json.loads(line) for line in f][:500]
    for case in cases:
        passage = prepare_passage(case["text"])
        assert passage.has_answer(case["answers"], case["match"]) == case["has_answer"]
        assert passage.has_answer(case["answers"], case["match"]) == case["has_answer"]


def test_tokenizer_splits_like_dpr_simple_tokenizer() -> None:
    assert dpr_tokenize("U.S. state-of-the-art, 1,000 km!") == [
        "U", ".", "S", ".", "state", "-", "of", "-", "the", "-", "art", ",", "1", ",", "000", "km", "!",
    ]
    assert dpr_tokenize("Hello World", uncased=True) == ["hello", "world"]
    assert dpr_tokenize(" \t\n ") == []


@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        (["Paris"], "The capital is PARIS.", True),  # casing ignored
        (["paris"], "Parisian food", False),  # whole tokens only, not substrings
        (["New York"], "new   york\ncity", True),  # whitespace between tokens does not matter
        (["U.S."], "the U.S. army", True),
        (["U.S."], "the US army", False),  # punctuation is a token of its own
        (["state of the art"], "state-of-the-art", False),
        (["state-of-the-art"], "state - of - the - art", True),  # spaces around punctuation do not matter
        (["1,000"], "1,000 people", True),
        (["1000"], "1,000 people", False),
        (["Röntgen"], "Wilhelm Conrad Ro\u0308ntgen", True),  # NFC answer vs NFD text
        (["Ro\u0308ntgen"], "Wilhelm Conrad Röntgen", True),
        (["Rontgen"], "Wilhelm Conrad Röntgen", False),  # accents are kept (marks stay in the token)
        (["ÉCOLE"], "une école", True),  # non-ASCII lower-casing
        (["東京"], "首都は東京です", False),  # a CJK run is one token: no match inside it
        (["首都は東京です"], "首都は東京です。", True),
        (["nope", "Seville"], "David Seville", True),  # any answer suffices
        ([], "anything", False),
        ([""], "anything", True),  # DPR: an answer with no tokens matches everything
        (["..."], "wait...", True),
        (["a"], "", False),
    ],
)
def test_string_mode_cases(answers: list[str], text: str, expected: bool) -> None:
    assert has_answer(answers, text) is expected
    assert prepare_passage(text).has_answer(answers, "string") is expected


@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        (["Mount\\s+McKinley"], "the height of mount   mckinley", True),  # IGNORECASE
        (["20,?320\\s*f(ee|oo)t"], "It is 20320 feet high.", True),
        (["^Second"], "first line\nsecond line", True),  # MULTILINE
        (["cat"], "concatenate", True),  # a plain search, no token boundaries
        (["(unclosed"], "(unclosed", False),  # invalid regex never matches, no exception
        (["(unclosed", "ok"], "is it ok", True),
        (["Röntgen"], "Ro\u0308ntgen", True),  # pattern and text are both NFD-normalized
        (["\\p{Lu}\\p{Ll}+ville"], "nashville", True),  # `regex` syntax, case-folded like DPR
    ],
)
def test_regex_mode_cases(answers: list[str], text: str, expected: bool) -> None:
    assert has_answer(answers, text, match="regex") is expected


def test_regex_mode_normalizes_the_text_to_nfd() -> None:
    # A precomposed character in the pattern cannot match one in the text once both are NFD, unless the
    # pattern spells the decomposed form: this is DPR's behaviour, kept on purpose.
    text = unicodedata.normalize("NFC", "café")
    assert has_answer(["caf\u00e9$"], text, match="regex")
    assert not has_answer(["caf[\u00e9]$"], text, match="regex")


def test_unknown_match_type_and_bare_string_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown match type"):
        has_answer(["x"], "x", match="kilt")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a single string"):
        has_answer("Paris", "Paris")


def test_prepared_passage_tokens_and_cache() -> None:
    first = prepare_passage("Hello, World")
    assert first is prepare_passage("Hello, World")
    assert first.tokens() == ["hello", ",", "world"]
    assert prepare_passage("").tokens() == []
