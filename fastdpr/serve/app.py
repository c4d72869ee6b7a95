"""The ASGI application of ``fastdpr serve``: endpoints, input limits, JSON errors, metrics, the search page.

Every error a client can cause is a 4xx JSON body ``{"error": "<one line>"}``; a full queue is a 503
with ``Retry-After``. Inference and HNSW search run in a fixed thread pool (see
:mod:`fastdpr.serve.batcher`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from fastdpr import __version__
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.search.retriever import Retriever
from fastdpr.serve.batcher import QuestionBatcher, QuestionResult, QueueFull, ShuttingDown, describe_batching, run_batch
from fastdpr.serve.metrics import ServeMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("fastdpr.serve.server")

#: Seconds a client is asked to wait before retrying when the queue is full.
RETRY_AFTER_SECONDS = 1
#: The question the server answers before it calls itself ready.
READY_PROBE = "is the index loaded?"
#: Endpoints named in metrics (anything else is counted as "other", so random paths cannot create series).
ENDPOINTS = ("/", "/search", "/embed", "/health", "/ready", "/info", "/metrics", "/openapi.json")


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching of one server."""

    max_batch: int = 32
    max_wait_ms: float = 0.0  # see `fastdpr serve --help`: batches still form under load
    #: Questions waiting for a batch before new requests get 503 (also the most questions one request may hold).
    max_queue: int = 256
    max_k: int = 100
    max_body_bytes: int = 256 * 1024
    max_passages: int = 64
    #: Concurrent batches (threads running ONNX Runtime + HNSW); ORT threads x workers <= cores.
    workers: int = 1
    threads: int = 1


class ClientError(HTTPException):
    """A request the server refuses (4xx) with a one-line message."""


# --- request and response bodies (they also make the published OpenAPI schema) ---


class SearchRequest(BaseModel):
    """One ``question`` or a list of ``questions`` (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(None, examples=["how are default argument values evaluated?"])
    questions: list[str] | None = Field(None, description="Many questions, answered in one response, in order.")
    k: int = Field(10, strict=True, description="Passages per question (1 to the server's --max-k).")


class HitOut(BaseModel):
    rank: int
    id: str
    title: str
    text: str
    score: float = Field(description="Dot product of the question and passage embeddings.")


class SearchResult(BaseModel):
    question: str
    k: int
    tokens: int = Field(description="Question tokens the encoder saw (after truncation).")
    truncated: bool = Field(description="True when the question was longer than the model's maximum and was cut.")
    hits: list[HitOut]


class SearchListResult(BaseModel):
    results: list[SearchResult]


class PassageIn(BaseModel):
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
    side: str
    precision: str
    dim: int
    embeddings: list[list[float]]
    tokens: list[int]
    truncated: list[bool]


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed request (not JSON, not UTF-8)."},
    413: {"model": ErrorOut, "description": "Body larger than the server's limit."},
    422: {"model": ErrorOut, "description": "Invalid field (empty question, k out of bounds, ...)."},
    503: {"model": ErrorOut, "description": "Queue full (retry after Retry-After seconds) or shutting down."},
}


# --- ASGI middleware: body limit and metrics ---


class BodyLimit:
    """Refuses bodies above ``max_bytes`` with 413 (by Content-Length, or while a chunked body streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await JSONResponse({"error": f"the body is larger than {self.max_bytes} bytes"}, 413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ClientError(413, f"the body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


class Metered:
    """Counts requests by endpoint and status, their latency, and the requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


# --- the app ---


class ServerState:
    """What the endpoints share: the retriever, the batcher, readiness, the cached /info."""

    def __init__(self, retriever: Retriever, options: ServeOptions, passage_encoder: OnnxEncoder | None,
                 describe: Callable[[], dict[str, Any]]) -> None:
        self.retriever = retriever
        self.options = options
        self.passage_encoder = passage_encoder
        self.describe = describe
        self.executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="fastdpr-infer")
        self.batcher: QuestionBatcher | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics = ServeMetrics(lambda: float(self.batcher.queued_questions if self.batcher else 0))
        self.ready = False
        self.draining = False
        self.probe_ms: float | None = None
        self._info: dict[str, Any] | None = None
        self._info_lock = asyncio.Lock()

    def require_batcher(self) -> QuestionBatcher:
        # Draining (after SIGTERM) still answers: uvicorn stops accepting connections, and every request
        # that reached the app is one a client sent before, so it is answered, not refused.
        if self.batcher is None:
            raise ShuttingDown("the server is not accepting work")
        return self.batcher

    async def info(self) -> dict[str, Any]:
        async with self._info_lock:
            if self._info is None:
                report = await asyncio.get_running_loop().run_in_executor(self.executor, self.describe)
                report["serve"] = {"version": __version__, **asdict(self.options),
                                   "passage_embeddings": self.passage_encoder is not None}
                self._info = report
            return self._info


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        context: dict[str, Any] = first.get("ctx") or {}
        return 400, f"the body is not valid JSON: {context.get('error', first['msg'])}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return 422, f"{where or 'body'}: {first['msg']}"


def check_text(text: str, what: str = "question", *, blank_ok: bool = False) -> str:
    """Text the encoder can take: valid UTF-8 that is not blank (``blank_ok``: a passage title)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a JSON "\\ud800" escape decodes to a lone surrogate
        raise ClientError(400, f"the {what} is not valid UTF-8 text (it holds a lone surrogate)") from exc
    if not blank_ok and not text.strip():
        raise ClientError(422, f"the {what} is empty")
    return text


def timing(results: list[QuestionResult]) -> dict[str, str]:
    """``Server-Timing`` (ms in the queue, ms to encode and search the batch) and the batch's size: what a
    client needs to tell the time spent on HTTP from the time spent on retrieval."""
    queue_ms = max(r.queue_s for r in results) * 1000
    infer_ms = max(r.infer_s for r in results) * 1000
    return {"Server-Timing": f"queue;dur={queue_ms:.3f}, infer;dur={infer_ms:.3f}",
            "X-Batch-Size": str(max(r.batch for r in results))}


def hits_json(question: str, k: int, result: QuestionResult) -> dict[str, Any]:
    """One question's response body."""
    return {"question": question, "k": k, "tokens": result.tokens, "truncated": result.truncated,
            "hits": [{"rank": rank, "id": hit.id, "title": hit.title, "text": hit.text, "score": hit.score}
                     for rank, hit in enumerate(result.hits or [], 1)]}


def create_app(retriever: Retriever, options: ServeOptions, *, passage_encoder: OnnxEncoder | None = None,
               describe: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    """The application for an opened ``retriever``. ``describe`` produces /info (default: the manifest)."""
    state = ServerState(retriever, options, passage_encoder, describe or (lambda: dict(retriever.manifest)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher = QuestionBatcher(retriever, state.executor, max_batch=options.max_batch,
                                        max_wait_s=options.max_wait_ms / 1000, max_queue=options.max_queue,
                                        workers=options.workers, observer=state.metrics.observe_batch)
        state.batcher.start()
        state.loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # Straight to the pool, not through the batcher: a first batch waits up to --max-wait-ms for
        # company, and readiness must not wait for that (measured: 30 s late at --max-wait-ms 30000).
        await state.loop.run_in_executor(state.executor, run_batch, retriever, [READY_PROBE], [1], options.max_batch)
        state.probe_ms = round((time.perf_counter() - started) * 1000, 2)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            state.draining = True
            await state.batcher.close()
            state.executor.shutdown(wait=True)

    app = FastAPI(title="fastdpr", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Dense passage retrieval on the CPU: search an index, embed questions and passages.")
    app.state.fastdpr = state

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI says only "error parsing the body"
            return _error(400, "the body is not valid UTF-8")
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.exception_handler(QueueFull)
    async def on_full(request: Request, exc: QueueFull) -> JSONResponse:
        state.metrics.rejected.inc()
        return _error(503, f"overloaded: {exc}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(ShuttingDown)
    async def on_shutdown(request: Request, exc: ShuttingDown) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    def check_k(k: int) -> int:
        if not 1 <= k <= options.max_k:
            raise ClientError(422, f"k must be between 1 and {options.max_k}, got {k}")
        return k

    async def answer(questions: list[str], k: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
        if len(questions) > options.max_queue:
            raise ClientError(422, f"at most {options.max_queue} questions per request, got {len(questions)}")
        results = await state.require_batcher().submit(questions, k)
        truncated = sum(result.truncated for result in results)
        if truncated:
            state.metrics.truncated.inc(truncated)
        return [hits_json(q, k, result) for q, result in zip(questions, results, strict=True)], timing(results)

    @app.post("/search", responses={200: {"model": SearchResult | SearchListResult}, **ERRORS},
              summary="The k best passages for a question (or each of a list of questions)")
    async def post_search(body: SearchRequest) -> JSONResponse:
        k = check_k(body.k)
        if (body.question is None) == (body.questions is None):
            raise ClientError(422, "give either question or questions (a list)")
        if body.question is not None:
            bodies, headers = await answer([check_text(body.question)], k)
            return JSONResponse(bodies[0], headers=headers)
        if not body.questions:
            raise ClientError(422, "questions is an empty list")
        bodies, headers = await answer([check_text(q) for q in body.questions], k)
        return JSONResponse({"results": bodies}, headers=headers)

    @app.get("/search", responses={200: {"model": SearchResult}, **ERRORS},
             summary="The k best passages for the question q")
    async def get_search(request: Request, q: str = Query(..., description="The question."),
                         k: int = Query(10, description="Passages (1 to --max-k).")) -> JSONResponse:
        try:  # Starlette decodes %FF as U+FFFD: parse the raw query again, strictly, to refuse it instead
            parse_qsl(request.scope["query_string"].decode("latin-1"), encoding="utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise ClientError(400, "the query string is not valid UTF-8") from exc
        bodies, headers = await answer([check_text(q)], check_k(k))
        return JSONResponse(bodies[0], headers=headers)

    @app.post("/embed", responses={200: {"model": EmbedResult}, **ERRORS},
              summary="Question or passage embeddings (for your own vector store)")
    async def embed(body: EmbedRequest) -> JSONResponse:
        if (body.questions is None) == (body.passages is None):
            raise ClientError(422, "give either questions or passages (a list)")
        precision = str(retriever.manifest.get("precision"))
        if body.questions is not None:
            if not body.questions:
                raise ClientError(422, "questions is an empty list")
            if len(body.questions) > options.max_queue:
                raise ClientError(422, f"at most {options.max_queue} questions per request")
            results = await state.require_batcher().submit([check_text(q) for q in body.questions], None)
            return JSONResponse({"side": "question", "precision": retriever.question_precision,
                                 "dim": retriever.encoder.dim, "embeddings": [r.embedding.tolist() for r in results],
                                 "tokens": [r.tokens for r in results], "truncated": [r.truncated for r in results]})
        passages = body.passages or []
        if state.passage_encoder is None:
            raise ClientError(400, "this server has no passage encoder: start it with --artifact ARTIFACT "
                                   "(the artifact the index was built from)")
        if not passages or len(passages) > options.max_passages:
            raise ClientError(422, f"passages must hold 1 to {options.max_passages} passages, got {len(passages)}")
        pairs = [(check_text(p.title, "passage title", blank_ok=True), check_text(p.text, "passage text"))
                 for p in passages]
        encoder = state.passage_encoder

        def run() -> tuple[Any, list[Any]]:
            return encoder.encode_passages(pairs), encoder.tokenizer.encode_passages(pairs)

        vectors, encodings = await asyncio.get_running_loop().run_in_executor(state.executor, run)
        return JSONResponse({"side": "context", "precision": precision, "dim": encoder.dim,
                             "embeddings": vectors.tolist(), "tokens": [len(e.ids) for e in encodings],
                             "truncated": [bool(e.overflowing) for e in encodings]})

    @app.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", summary="The index is loaded and answered a probe question (503 otherwise)")
    async def ready() -> JSONResponse:
        if state.ready and not state.draining:
            return JSONResponse({"ready": True, "passages": retriever.count, "probe_ms": state.probe_ms})
        return JSONResponse({"ready": False, "reason": "draining" if state.draining else "starting"}, 503)

    @app.get("/info", summary="What `fastdpr info INDEX --json` says, and the server's settings")
    async def info() -> JSONResponse:
        report = await state.info()
        if state.batcher is not None:
            report = {**report, "batching": describe_batching(state.batcher)}
        return JSONResponse(report)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("fastdpr.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def search_page() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    app.add_middleware(Metered, metrics=state.metrics)
    return app
