"""What the routes of ``fastdpr serve`` share: its settings, who may call it, and :class:`ServerState`
(the index generations and their reloader, the question batcher, readiness, metrics), reached from a
route through the :data:`State` dependency.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from fastdpr import __version__
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.model.openvino_encoder import SideEncoder
from fastdpr.search.hybrid import DENSE, Ranking
from fastdpr.search.retriever import Retriever
from fastdpr.serve.batcher import QuestionBatcher, QuestionResult, ShuttingDown, describe_batching
from fastdpr.serve.errors import ClientError
from fastdpr.serve.generation import Generation, Generations, IndexVersion
from fastdpr.serve.metrics import ServeMetrics
from fastdpr.serve.reload import Reloader


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
    #: The OpenAI-compatible models are ``<model_name>-query`` and ``<model_name>-passage``.
    model_name: str = "fastdpr"


@dataclass(frozen=True)
class Access:
    """Who may call the server: the API key every route but ``/health`` requires (None: anyone who can
    reach the port), and the origins a browser may call it from (CORS). The key is never shown."""

    api_key: str | None = field(default=None, repr=False)
    cors_allow_origins: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What /info says about access (whether a key is required, never the key)."""
        return {"api_key_required": self.api_key is not None, "cors_allow_origins": list(self.cors_allow_origins)}


@dataclass(frozen=True)
class Embedded:
    """Embeddings of a request's inputs, with the tokens the encoder saw for each, and the index
    generation whose encoder made them."""

    vectors: list[np.ndarray]
    tokens: list[int]
    truncated: list[bool]
    generation: Generation

    @property
    def version(self) -> IndexVersion:
        """The version of the index that answered."""
        return self.generation.version


class ServerState:
    """What the endpoints share: the index generations and their reloader, the batcher, readiness.

    ``reloader`` (a :class:`~fastdpr.serve.reload.Reloader`, None when the app cannot reload) is attached
    by :func:`fastdpr.serve.app.create_app`, since it reports to :attr:`metrics`."""

    def __init__(self, generations: Generations, options: ServeOptions, access: Access) -> None:
        self.generations = generations
        self.options = options
        self.access = access
        self.executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="fastdpr-infer")
        self.batcher: QuestionBatcher | None = None
        self.reloader: Reloader | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics = ServeMetrics(lambda: float(self.batcher.queued_questions if self.batcher else 0))
        self.ready = False
        self.draining = False
        self.probe_ms: float | None = None
        self.started_utc = 0

    @property
    def retriever(self) -> Retriever:
        """The current generation's retriever (for descriptions: answers go through the generation they use)."""
        return self.generations.current.retriever

    @property
    def passage_encoder(self) -> SideEncoder | None:
        """The current generation's passage encoder (None: no passage embeddings)."""
        return self.generations.current.passage_encoder

    def require_batcher(self) -> QuestionBatcher:
        """The running batcher (:class:`ShuttingDown` before it starts and after it stopped)."""
        # Draining (after SIGTERM) still answers: uvicorn stops accepting connections, and every request
        # that reached the app is one a client sent before, so it is answered, not refused.
        if self.batcher is None:
            raise ShuttingDown("the server is not accepting work")
        return self.batcher

    def info(self) -> dict[str, Any]:
        """What /info answers: the description of the index that answers (made when it was loaded), its
        version, reloads, the server's settings and access (never the API key), and the batching."""
        generation = self.generations.current
        report = {**generation.info, "index_version": generation.version.to_dict(),
                  "serve": {"version": __version__, **asdict(self.options),
                            "passage_embeddings": generation.passage_encoder is not None, **self.access.describe()}}
        if self.reloader is not None:
            report["reload"] = self.reloader.describe()
        if self.batcher is not None:
            report["batching"] = describe_batching(self.batcher)
        return report

    async def search(self, questions: list[str], k: int, ranking: Ranking = DENSE) -> list[QuestionResult]:
        """The hits of each question (batched with other requests' questions), ranked by ``ranking``."""
        results = await self.require_batcher().submit(questions, k, ranking)
        truncated = sum(result.truncated for result in results)
        if truncated:
            self.metrics.truncated.inc(truncated)
        return results

    async def embed_questions(self, questions: list[str]) -> Embedded:
        """Question embeddings, from the index's question encoder (through the batcher)."""
        results = await self.require_batcher().submit(questions, None)
        generation = results[0].generation
        assert generation is not None  # the batcher sets it
        return Embedded([r.embedding for r in results], [r.tokens for r in results], [r.truncated for r in results],
                        generation)

    def require_passage_encoder(self, generation: Generation | None = None) -> SideEncoder:
        """The context encoder of ``generation``'s artifact (default: the current one's); a 400 without one."""
        encoder = (generation or self.generations.current).passage_encoder
        if encoder is None:
            raise ClientError(400, "this server has no passage encoder: start it with --artifact ARTIFACT "
                                   "(the artifact the index was built from)")
        return encoder

    async def embed_passages(self, passages: list[tuple[str, str]]) -> Embedded:
        """(title, text) passage embeddings from the artifact's context encoder, each tokenized once."""
        self.require_passage_encoder()

        def run() -> Embedded:
            with self.generations.use() as generation:  # the encoder of the index that answers, until done
                encoder = self.require_passage_encoder(generation)
                encodings = encoder.tokenize(passages)
                vectors = encoder.encode_tokenized(encodings, DEFAULT_PASSAGE_BATCH_SIZE)
            return Embedded(list(vectors), [len(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings],
                            generation)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app answering ``request``."""
    state = request.app.state.fastdpr
    assert isinstance(state, ServerState)
    return state


#: A route's parameter of this type receives the app's :class:`ServerState`.
State = Annotated[ServerState, Depends(server_state)]
