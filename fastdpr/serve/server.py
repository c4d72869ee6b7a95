"""``fastdpr serve``: open an index and answer HTTP requests with uvicorn until SIGTERM/SIGINT.

The thread budget is fixed up front: ``workers`` batches run at once, each with ``threads`` ONNX
Runtime (and hnswlib) threads, and ``threads x workers`` may not exceed the cores this process may
use (oversubscribed cores make every request slower). On SIGTERM the server stops accepting
connections, answers every request it accepted, then exits with status 0.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastdpr.common.errors import FastDPRError, MissingDependencyError
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.session import default_threads
from fastdpr.search.retriever import Retriever

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


def open_passage_encoder(retriever: Retriever, artifact_dir: Path | None, threads: int,
                         warn: Callable[[str], None]) -> OnnxEncoder | None:
    """The context encoder of the artifact the index was built from (for POST /embed of passages):
    ``artifact_dir``, or the path the index manifest recorded when it still holds that artifact."""
    from fastdpr.model.artifact import Artifact

    path = artifact_dir or retriever.artifact_path
    if path is None:
        return None
    try:
        artifact = Artifact.load(path)
    except FastDPRError as exc:
        if artifact_dir is not None:
            raise
        warn(f"passage embeddings are off: the index's artifact cannot be opened ({exc}); give --artifact")
        return None
    if retriever.artifact_identity and artifact.identity != retriever.artifact_identity:
        message = f"{path} is not the artifact the index was built from (its manifest differs)"
        if artifact_dir is not None:
            raise FastDPRError(message)
        warn(f"passage embeddings are off: {message}; give --artifact")
        return None
    return artifact.encoder("context", retriever.typed_manifest.precision, threads=threads)


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
          cors_allow_origins: Sequence[str] = ()) -> None:
    """Load ``index`` and serve it until SIGTERM or SIGINT (which drain in-flight requests).

    ``api_key``: every route but /health requires ``Authorization: Bearer <api_key>`` (never logged).
    ``cors_allow_origins``: origins a browser page may call the server from. ``options_kwargs``:
    :class:`~fastdpr.serve.state.ServeOptions` fields (``model_name`` defaults to the index's directory name).
    """
    require_serve_extra()
    import uvicorn

    from fastdpr.serve.app import create_app
    from fastdpr.serve.state import Access, ServeOptions

    access = Access(api_key=check_api_key(api_key), cors_allow_origins=tuple(cors_allow_origins))
    workers, budget = thread_budget(threads, workers)
    options_kwargs = {**options_kwargs, "model_name": options_kwargs.get("model_name") or index.resolve().name}
    options = ServeOptions(workers=workers, threads=budget, **options_kwargs)
    retriever = Retriever.load(index, threads=budget)
    passage_encoder = open_passage_encoder(retriever, artifact, budget, log)
    app = create_app(retriever, options, access=access, passage_encoder=passage_encoder)
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
    log(f"listening on http://{shown}:{bound_port}  (page: /, API schema: /openapi.json)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        retriever.close()
    if not server.started:
        raise FastDPRError("the server did not start (see the log above)")
