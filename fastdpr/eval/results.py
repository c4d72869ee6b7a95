"""DPR's retrieval-results JSON: what ``dense_retriever.py`` writes, so DPR's tooling reads ours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastdpr.corpus.questions import Question
from fastdpr.eval.has_answer import MatchType, prepare_passage
from fastdpr.search.retriever import Hit


def dpr_results(questions: Sequence[Question], hits: Sequence[Sequence[Hit]],
                match: MatchType = "string") -> list[dict[str, Any]]:
    """``[{"question", "answers", "ctxs": [{"id","title","text","score","has_answer"}]}]`` in input order.

    Questions without answers get no ``has_answer`` field (there is nothing to check).
    """
    results: list[dict[str, Any]] = []
    for question, question_hits in zip(questions, hits, strict=True):
        ctxs = []
        for hit in question_hits:
            ctx: dict[str, Any] = {"id": hit.id, "title": hit.title, "text": hit.text, "score": float(hit.score)}
            if question.answers:
                ctx["has_answer"] = prepare_passage(hit.text).has_answer(question.answers, match)
            ctxs.append(ctx)
        results.append({"question": question.question, "answers": list(question.answers), "ctxs": ctxs})
    return results


def top_k_accuracy(results: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[int, float]:
    """DPR's top-k answer recall: the share of questions with a ``has_answer`` passage in the first k."""
    scored = [r for r in results if r["answers"]]
    if not scored:
        return {}
    first_hit = []
    for r in scored:
        ranks = [i for i, ctx in enumerate(r["ctxs"]) if ctx.get("has_answer")]
        first_hit.append(ranks[0] if ranks else None)
    return {k: sum(1 for rank in first_hit if rank is not None and rank < k) / len(scored) for k in ks}
