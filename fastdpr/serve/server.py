"""``fastdpr serve``: open an index and answer HTTP requests with uvicorn until SIGTERM/SIGINT.

The thread budget is fixed up front: ``workers`` batches run at once, each with ``threads`` ONNX
Runtime (and hnswlib) threads, and ``threads x workers`` may not exceed the cores this process may
use (oversubscribed cores make every request slower). On SIGTERM the server stops accepting
connections, answers every request it accepted, then exits with status 0. On SIGHUP it reloads the
index if it was republished (:mod:`fastdpr.serve.reload`), without failing a request.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastdpr.common.errors import FastDPRError, MissingDependencyError
from fastdpr.model.session import default_threads

#: Seconds uvicorn waits for in-flight requests after SIGTERM before closing their connections.
DRAIN_SECONDS = 30


def require_serve_extra() -> None:
    """Fail clearly when the ``serve`` extra is not installed."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"fastdpr serve needs the serve extra ({exc.name} is missing): "
                                     "pip install 'fastdpr[serve]'") from exc


def thread_budget(threads: int | None, workers: int | None, cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)`` within the cores; refuses a budget above them (``threads x workers``
    oversubscribes). Default: one single-threaded worker per core. On 2 cores, 2 workers x 1 thread answered
    2-3x the requests of 1 worker x 2 threads at 16 and 64 clients for a third of the CPU per request
    (benchmarks/results/serve-x86-amx): ORT's intra-op threads cost more than they give on one short
    question batch, and a second worker encodes while the first one's answers are written."""
    cores = cores or default_threads()
    if workers is not None and workers > cores:
        raise FastDPRError(f"--workers {workers} is more than the {cores} cores this process may use")
    if workers is None:
        workers = max(1, cores // (threads or 1))
    chosen = threads or max(1, cores // workers)
    if chosen * workers > cores:
        raise FastDPRError(f"--threads {chosen} x --workers {workers} = {chosen * workers} threads on {cores} cores: "
                           f"lower --threads to {cores // workers} or fewer")
    return workers, chosen


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free port, read back from the socket)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise FastDPRError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def check_api_key(api_key: str | None) -> str | None:
    """An API key a client can send in a header: not empty, no whitespace or control characters (a key
    read from a file with its newline would never match)."""
    if api_key is not None and (not api_key or not api_key.isprintable() or any(c.isspace() for c in api_key)):
        raise FastDPRError("--api-key (FASTDPR_API_KEY) must be a non-empty string without spaces or "
                           "control characters")
    return api_key


def serve(index: Path, *, host: str, port: int, threads: int | None, workers: int | None,
          options_kwargs: dict[str, Any], artifact: Path | None, log: Callable[[str], None],
          log_level: str = "warning", api_key: str | None = None,
          cors_allow_origins: Sequence[str] = (), watch_index: float = 0.0) -> None:
    """Load ``index`` and serve it until SIGTERM or SIGINT (which drain in-flight requests); SIGHUP
    reloads it when it was republished, and so does a change of its manifest every ``watch_index``
    seconds (0: only SIGHUP).

    ``api_key``: every route but /health requires ``Authorization: Bearer <api_key>`` (never logged).
    ``cors_allow_origins``: origins a browser page may call the server from. ``options_kwargs``:
    :class:`~fastdpr.serve.state.ServeOptions` fields (``model_name`` defaults to the index's directory name).
    """
    require_serve_extra()
    import uvicorn

    from fastdpr.serve.app import create_app
    from fastdpr.serve.loading import IndexSource
    from fastdpr.serve.state import Access, ServeOptions

    access = Access(api_key=check_api_key(api_key), cors_allow_origins=tuple(cors_allow_origins))
    workers, budget = thread_budget(threads, workers)
    options_kwargs = {**options_kwargs, "model_name": options_kwargs.get("model_name") or index.resolve().name}
    options = ServeOptions(workers=workers, threads=budget, **options_kwargs)
    if watch_index < 0:
        raise FastDPRError(f"--watch-index must be 0 (off) or a number of seconds, got {watch_index:g}")
    source = IndexSource(index, budget, artifact, log)
    # SIGHUP's default action ends the process: from here on it is remembered (while the index loads)
    # and, once the server runs, asks for a reload.
    early_hangups: list[int] = []
    default_sighup = signal.signal(signal.SIGHUP, lambda sig, frame: early_hangups.append(sig))
    try:
        first = source.open()
        retriever, passage_encoder = first.retriever, first.passage_encoder
        app = create_app(first, options, access=access, source=source, watch_seconds=watch_index)
        sock = bind_socket(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host

        class DrainingServer(uvicorn.Server):
            """Marks the app as draining (so /ready turns 503) as soon as the signal arrives, and exits with
            status 0 once drained: uvicorn would re-raise the signal after its graceful shutdown (killing the
            process by SIGTERM, or a KeyboardInterrupt traceback for Ctrl-C), although nothing was lost."""

            def handle_exit(self, sig: int, frame: Any) -> None:
                state = app.state.fastdpr
                state.draining = True
                if state.batcher is not None and state.loop is not None:  # queued questions stop waiting for more
                    state.loop.call_soon_threadsafe(state.batcher.expedite)
                super().handle_exit(sig, frame)
                self._captured_signals.clear()

            async def serve(self, sockets: list[socket.socket] | None = None) -> None:
                """Serve with SIGHUP asking for a reload (one that came while the index loaded included)."""
                loop = asyncio.get_running_loop()
                reloader = app.state.fastdpr.reloader

                def on_sighup(sig: int, frame: Any) -> None:
                    loop.call_soon_threadsafe(reloader.request, "SIGHUP")

                signal.signal(signal.SIGHUP, on_sighup)
                if early_hangups:
                    reloader.request("SIGHUP")
                await super().serve(sockets)

        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=DRAIN_SECONDS,
                                lifespan="on", server_header=False)
        server = DrainingServer(config)
        log(f"fastdpr serve: {retriever.count} passages of {index} (passages {retriever.typed_manifest.precision}, "
            f"questions {retriever.question_precision}), "
            f"{workers} worker(s) x {budget} thread(s), batches of <= {options.max_batch} questions "
            f"(wait <= {options.max_wait_ms:g} ms)")
        log(f"OpenAI-compatible models (POST /v1/embeddings): {options.model_name}-query"
            + (f", {options.model_name}-passage" if passage_encoder is not None else ""))
        if access.api_key is not None:
            log("every route but /health requires the API key (Authorization: Bearer ...)")
        if access.cors_allow_origins:
            log(f"browsers may call it from: {', '.join(access.cors_allow_origins)}")
        log(f"index version {first.version.tag}; SIGHUP reloads it when republished"
            + (f", and so does a change of its manifest (checked every {watch_index:g} s)" if watch_index else ""))
        log(f"listening on http://{shown}:{bound_port}  (page: /, API schema: /openapi.json)")
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            app.state.fastdpr.generations.close()
    finally:
        signal.signal(signal.SIGHUP, default_sighup)
    if not server.started:
        raise FastDPRError("the server did not start (see the log above)")
