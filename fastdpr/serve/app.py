"""The ASGI application of ``fastdpr serve``: routes, error bodies, middleware, startup and shutdown.

Every error a client can cause is a 4xx JSON body: ``{"error": "<one line>"}`` on fastdpr's own routes
(:mod:`fastdpr.serve.routes`), OpenAI's error shape under ``/v1/`` (:mod:`fastdpr.serve.openai_api`); a
full queue is a 503 with ``Retry-After``. Inference and HNSW search run in a fixed thread pool (see
:mod:`fastdpr.serve.batcher`), never on the event loop. The index is a swappable generation
(:mod:`fastdpr.serve.generation`) that :mod:`fastdpr.serve.reload` replaces when it is republished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from fastdpr import __version__
from fastdpr.search.hybrid import Ranking
from fastdpr.serve import openai_api, routes
from fastdpr.serve.batcher import QuestionBatcher, QueueFull, ShuttingDown, run_batch
from fastdpr.serve.errors import OPENAI_PREFIX, ClientError, error_response
from fastdpr.serve.generation import Generation, Generations
from fastdpr.serve.loading import READY_PROBE, IndexSource
from fastdpr.serve.middleware import BodyLimit, Metered, RequireApiKey
from fastdpr.serve.reload import Reloader
from fastdpr.serve.state import Access, ServeOptions, ServerState, server_state

log = logging.getLogger("fastdpr.serve.server")

#: Seconds a client is asked to wait before retrying when the queue is full.
RETRY_AFTER_SECONDS = 1
#: Response headers a browser page of another origin may read (CORS).
EXPOSED_HEADERS = ["Server-Timing", "X-Batch-Size", "X-Index-Version", "Retry-After"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the batcher, answer a probe question (then /ready says 200), then start the reloader; on
    shutdown, stop reloading, answer every queued question, then stop the workers."""
    state: ServerState = app.state.fastdpr
    options = state.options
    state.batcher = QuestionBatcher(state.generations, state.executor, max_batch=options.max_batch,
                                    max_wait_s=options.max_wait_ms / 1000, max_queue=options.max_queue,
                                    workers=options.workers, observer=state.metrics.observe_batch)
    state.batcher.start()
    state.loop = asyncio.get_running_loop()
    state.started_utc = int(time.time())
    started = time.perf_counter()
    # Straight to the pool, not through the batcher: a first batch waits up to --max-wait-ms for
    # company, and readiness must not wait for that (measured: 30 s late at --max-wait-ms 30000).
    # An index with a lexical side is probed in hybrid mode: its BM25 files are opened (and read once) before
    # /ready says 200, not by the first client's request.
    with state.generations.use() as generation:
        probe = [Ranking("hybrid")] if generation.retriever.has_lexical else None
        await state.loop.run_in_executor(state.executor, run_batch, generation.retriever, [READY_PROBE], [1],
                                         options.max_batch, probe)
    state.probe_ms = round((time.perf_counter() - started) * 1000, 2)
    state.ready = True
    if state.reloader is not None:
        state.reloader.start()
    try:
        yield
    finally:
        state.ready = False
        state.draining = True
        if state.reloader is not None:
            await state.reloader.stop()
        await state.batcher.close()
        state.executor.shutdown(wait=True)


# --- exception handlers: every error a JSON body of the route's shape ---


def validation_error(exc: RequestValidationError) -> tuple[int, str, str | None]:
    """(status, one-line message, the field at fault) of an invalid request body or query."""
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        context: dict[str, Any] = first.get("ctx") or {}
        return 400, f"the body is not valid JSON: {context.get('error', first['msg'])}", None
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    fields = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    return 422, f"{where or 'body'}: {first['msg']}", fields[0] if fields else None


def respond(request: Request, status: int, message: str, headers: dict[str, str] | None = None, *,
            param: str | None = None, code: str | None = None) -> JSONResponse:
    """An error for ``request``'s route: OpenAI's status conventions under /v1/ (400 for an invalid field)."""
    if request.url.path.startswith(OPENAI_PREFIX) and status == 422:
        status = 400
    return error_response(request.url.path, status, message, headers, param=param, code=code)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    """A body or query that does not fit the route's model."""
    assert isinstance(exc, RequestValidationError)
    status, message, param = validation_error(exc)
    return respond(request, status, message, param=param)


async def on_http(request: Request, exc: Exception) -> JSONResponse:
    """:class:`ClientError` and Starlette's own (404, 405, a body it cannot parse)."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI says only "error parsing the body"
        return respond(request, 400, "the body is not valid UTF-8")
    param, code = (exc.param, exc.code) if isinstance(exc, ClientError) else (None, None)
    if exc.status_code == 404 and code is None and request.url.path.startswith(OPENAI_PREFIX):
        code = "unknown_url"
    return respond(request, exc.status_code, str(exc.detail), dict(exc.headers or {}), param=param, code=code)


async def on_full(request: Request, exc: Exception) -> JSONResponse:
    """The queue is full: 503, retry later."""
    server_state(request).metrics.rejected.inc()
    return respond(request, 503, f"overloaded: {exc}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def on_shutdown(request: Request, exc: Exception) -> JSONResponse:
    """The server is draining: 503."""
    return respond(request, 503, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def on_bug(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: logged with its traceback, answered 500 with the error's type only."""
    log.exception("error answering %s %s", request.method, request.url.path)
    return respond(request, 500, f"internal error: {type(exc).__name__}")


def create_app(first: Generation, options: ServeOptions, *, access: Access | None = None,
               source: IndexSource | None = None, watch_seconds: float = 0.0) -> FastAPI:
    """The application answering with the index generation ``first`` (``IndexSource.open()``).
    ``access``: API key and CORS origins (default: open). ``source``: where reloads load the index from
    (None: the app never reloads); ``watch_seconds`` > 0 also reloads when its manifest changes."""
    access = access or Access()
    state = ServerState(Generations(first), options, access)
    if source is not None:
        state.reloader = Reloader(source, state.generations, state.metrics, warm_batch=options.max_batch,
                                  watch_seconds=watch_seconds)
    app = FastAPI(title="fastdpr", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Dense passage retrieval on the CPU: search an index, embed questions and passages "
                              "(also through an OpenAI-compatible /v1/embeddings).")
    app.state.fastdpr = state
    app.include_router(routes.router)
    app.include_router(openai_api.router)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(QueueFull, on_full)
    app.add_exception_handler(ShuttingDown, on_shutdown)
    app.add_exception_handler(Exception, on_bug)
    # The last added runs first: metrics see every answer; CORS answers a browser's preflight (which
    # carries no key) and adds its headers to every answer, 401s included; the key is checked before
    # any body is read.
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    if access.api_key is not None:
        app.add_middleware(RequireApiKey, api_key=access.api_key)
    if access.cors_allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(access.cors_allow_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=EXPOSED_HEADERS, max_age=600)
    app.add_middleware(Metered, metrics=state.metrics)
    return app
