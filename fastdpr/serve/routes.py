"""fastdpr's own endpoints: search, embed, health, readiness, info, metrics and the search page.

Each route is a small function of its request body and the app's :data:`~fastdpr.serve.state.State`;
:func:`fastdpr.serve.app.create_app` mounts :data:`router`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from fastdpr.common.errors import FastDPRError
from fastdpr.lexical.fusion import DEFAULT_WEIGHT, FUSIONS
from fastdpr.search.hybrid import MODES, Ranking
from fastdpr.serve.batcher import QuestionResult
from fastdpr.serve.errors import ClientError, check_count, check_text
from fastdpr.serve.generation import IndexVersion
from fastdpr.serve.state import ServerState, State

router = APIRouter()

#: The response header naming the index version that answered (``index_version.version`` in /info).
INDEX_VERSION_HEADER = "X-Index-Version"

#: The search parameters of issue #23, as ``fastdpr search --mode/--fusion/--weight`` describes them.
MODE_HELP = ("Rank by embeddings (dense), by BM25 (lexical) or by both fused (hybrid); lexical and hybrid need "
             "an index built with --lexical bm25 (a 400 otherwise).")
FUSION_HELP = "With mode hybrid: min-max normalised weighted score sum, or reciprocal rank fusion (rrf)."
WEIGHT_HELP = (f"With mode hybrid and fusion weighted: the lexical side's weight, 0 to 1 (default "
               f"{DEFAULT_WEIGHT}, tuned on held-out questions: docs/hybrid.md).")


# --- request and response bodies (they also make the published OpenAPI schema) ---


class SearchRequest(BaseModel):
    """One ``question`` or a list of ``questions`` (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(None, examples=["how are default argument values evaluated?"])
    questions: list[str] | None = Field(None, description="Many questions, answered in one response, in order.")
    k: int = Field(10, strict=True, description="Passages per question (1 to the server's --max-k).")
    mode: str = Field("dense", description=MODE_HELP, json_schema_extra={"enum": list(MODES)})
    fusion: str = Field("weighted", description=FUSION_HELP, json_schema_extra={"enum": list(FUSIONS)})
    weight: float | None = Field(None, description=WEIGHT_HELP)


class HitOut(BaseModel):
    """One passage of a search answer."""

    rank: int
    id: str
    title: str
    text: str
    score: float = Field(description="Dot product of the question and passage embeddings (mode dense), BM25 "
                                     "score (lexical) or fused score (hybrid).")


class SearchResult(BaseModel):
    """The answer to one question."""

    question: str
    k: int
    tokens: int = Field(description="Question tokens the encoder saw (after truncation).")
    truncated: bool = Field(description="True when the question was longer than the model's maximum and was cut.")
    hits: list[HitOut]


class SearchListResult(BaseModel):
    """The answers to a list of questions, in order."""

    results: list[SearchResult]


class PassageIn(BaseModel):
    """A passage to embed (the title may be empty)."""

    model_config = ConfigDict(extra="forbid")
    title: str = ""
    text: str


class EmbedRequest(BaseModel):
    """``questions`` (encoded by the index's question encoder) or ``passages`` (by the artifact's
    context encoder; the server needs the artifact), exactly one of the two."""

    model_config = ConfigDict(extra="forbid")
    questions: list[str] | None = None
    passages: list[PassageIn] | None = None


class EmbedResult(BaseModel):
    """Embeddings, in input order, with the tokens the encoder saw for each."""

    side: str
    precision: str
    dim: int
    embeddings: list[list[float]]
    tokens: list[int]
    truncated: list[bool]


class ErrorOut(BaseModel):
    """Every error of fastdpr's own routes."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed request (not JSON, not UTF-8), or mode lexical or hybrid on an "
                                            "index without a lexical side."},
    401: {"model": ErrorOut, "description": "No or a wrong API key (servers started with --api-key)."},
    413: {"model": ErrorOut, "description": "Body larger than the server's limit."},
    422: {"model": ErrorOut, "description": "Invalid field (empty question, k out of bounds, ...)."},
    503: {"model": ErrorOut, "description": "Queue full (retry after Retry-After seconds) or shutting down."},
}


# --- helpers ---


def check_k(state: ServerState, k: int) -> int:
    """``k`` within 1 and the server's ``--max-k``."""
    if not 1 <= k <= state.options.max_k:
        raise ClientError(422, f"k must be between 1 and {state.options.max_k}, got {k}")
    return k


def version_header(version: IndexVersion) -> dict[str, str]:
    """``X-Index-Version``: the version of the index that answered (a request is answered by one)."""
    return {INDEX_VERSION_HEADER: version.tag}


def check_ranking(state: ServerState, mode: str, fusion: str, weight: float | None) -> Ranking:
    """The ranking a request asks for, checked as the CLI checks it (422 for a bad value); 400 for lexical or
    hybrid on an index built without a lexical side."""
    try:
        ranking = Ranking(mode, fusion, weight)
    except FastDPRError as exc:
        raise ClientError(422, str(exc)) from exc
    if ranking.mode != "dense" and not state.retriever.has_lexical:
        raise ClientError(400, f"this index has no lexical side, so mode {mode} is not available: rebuild it with "
                               "`fastdpr index ... --lexical bm25` (mode dense works as before)")
    return ranking


def timing(results: list[QuestionResult]) -> dict[str, str]:
    """``Server-Timing`` (ms in the queue, ms to encode and search the batch), the batch's size (what a
    client needs to tell the time spent on HTTP from the time spent on retrieval), and the index version."""
    queue_ms = max(r.queue_s for r in results) * 1000
    infer_ms = max(r.infer_s for r in results) * 1000
    generation = results[0].generation
    assert generation is not None  # the batcher sets it
    return {"Server-Timing": f"queue;dur={queue_ms:.3f}, infer;dur={infer_ms:.3f}",
            "X-Batch-Size": str(max(r.batch for r in results)), **version_header(generation.version)}


def hits_json(question: str, k: int, result: QuestionResult) -> dict[str, Any]:
    """One question's response body."""
    return {"question": question, "k": k, "tokens": result.tokens, "truncated": result.truncated,
            "hits": [{"rank": rank, "id": hit.id, "title": hit.title, "text": hit.text, "score": hit.score}
                     for rank, hit in enumerate(result.hits or [], 1)]}


async def answer(state: ServerState, questions: list[str], k: int,
                 ranking: Ranking) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each question's response body, and the timing headers of the response."""
    if len(questions) > state.options.max_queue:
        raise ClientError(422, f"at most {state.options.max_queue} questions per request, got {len(questions)}")
    results = await state.search(questions, k, ranking)
    return [hits_json(q, k, result) for q, result in zip(questions, results, strict=True)], timing(results)


@cache
def search_page() -> str:
    """The search page's HTML."""
    return resources.files("fastdpr.serve").joinpath("page.html").read_text(encoding="utf-8")


# --- routes ---


@router.post("/search", responses={200: {"model": SearchResult | SearchListResult}, **ERRORS},
             summary="The k best passages for a question (or each of a list of questions)")
async def post_search(body: SearchRequest, state: State) -> JSONResponse:
    """``{"question"}`` answers one question, ``{"questions"}`` a list, in order; ``mode`` (``fusion``,
    ``weight``) as ``fastdpr search``."""
    k = check_k(state, body.k)
    if (body.question is None) == (body.questions is None):
        raise ClientError(422, "give either question or questions (a list)")
    ranking = check_ranking(state, body.mode, body.fusion, body.weight)
    if body.question is not None:
        bodies, headers = await answer(state, [check_text(body.question)], k, ranking)
        return JSONResponse(bodies[0], headers=headers)
    if not body.questions:
        raise ClientError(422, "questions is an empty list")
    bodies, headers = await answer(state, [check_text(q) for q in body.questions], k, ranking)
    return JSONResponse({"results": bodies}, headers=headers)


@router.get("/search", responses={200: {"model": SearchResult}, **ERRORS},
            summary="The k best passages for the question q")
async def get_search(request: Request, state: State, q: str = Query(..., description="The question."),
                     k: int = Query(10, description="Passages (1 to --max-k)."),
                     mode: str = Query("dense", description=MODE_HELP, json_schema_extra={"enum": list(MODES)}),
                     fusion: str = Query("weighted", description=FUSION_HELP,
                                         json_schema_extra={"enum": list(FUSIONS)}),
                     weight: float | None = Query(None, description=WEIGHT_HELP)) -> JSONResponse:
    """One question from the query string."""
    try:  # Starlette decodes %FF as U+FFFD: parse the raw query again, strictly, to refuse it instead
        parse_qsl(request.scope["query_string"].decode("latin-1"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ClientError(400, "the query string is not valid UTF-8") from exc
    bodies, headers = await answer(state, [check_text(q)], check_k(state, k),
                                   check_ranking(state, mode, fusion, weight))
    return JSONResponse(bodies[0], headers=headers)


@router.post("/embed", responses={200: {"model": EmbedResult}, **ERRORS},
             summary="Question or passage embeddings (for your own vector store)")
async def embed(body: EmbedRequest, state: State) -> JSONResponse:
    """Questions by the index's question encoder, passages by the artifact's context encoder."""
    if (body.questions is None) == (body.passages is None):
        raise ClientError(422, "give either questions or passages (a list)")
    if body.questions is not None:
        check_count(len(body.questions), state.options.max_queue, "questions")
        embedded = await state.embed_questions([check_text(q) for q in body.questions])
        side, precision = "question", embedded.generation.retriever.question_precision
    else:
        passages = body.passages or []
        state.require_passage_encoder()
        check_count(len(passages), state.options.max_passages, "passages")
        embedded = await state.embed_passages([(check_text(p.title, "passage title", blank_ok=True),
                                                check_text(p.text, "passage text")) for p in passages])
        side, precision = "context", embedded.generation.retriever.typed_manifest.precision
    return JSONResponse({"side": side, "precision": precision, "dim": embedded.generation.retriever.dim,
                         "embeddings": [vector.tolist() for vector in embedded.vectors],
                         "tokens": embedded.tokens, "truncated": embedded.truncated},
                        headers=version_header(embedded.version))


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    """Always 200 while the process runs (and open without the API key)."""
    return {"status": "alive"}


@router.get("/ready", summary="The index is loaded and answered a probe question (503 otherwise)")
async def ready(state: State) -> JSONResponse:
    """200 once the probe question was answered; 503 before, and while draining. Says which index version
    answers, and whether the last reload failed (the previous version then still answers)."""
    if state.ready and not state.draining:
        generation = state.generations.current
        return JSONResponse({"ready": True, "passages": generation.retriever.count, "probe_ms": state.probe_ms,
                             "index_version": generation.version.tag,
                             "last_reload_failed": state.reloader is not None
                             and state.reloader.last_outcome == "failed"})
    return JSONResponse({"ready": False, "reason": "draining" if state.draining else "starting"}, 503)


@router.get("/info", summary="What `fastdpr info INDEX --json` says, the index version, reloads, the server's settings")
async def info(state: State) -> JSONResponse:
    """The description of the index that answers and its version, reloads, the server's settings (never
    its API key) and batching."""
    return JSONResponse(state.info())


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
async def metrics(state: State) -> Response:
    """Requests, latency, batches, queue (Prometheus text)."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The search page."""
    return HTMLResponse(search_page())
