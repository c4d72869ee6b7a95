"""Cross-request batching for ``fastdpr serve``: questions of concurrent requests share one ONNX Runtime call.

Requests put their questions in a bounded queue (counted in questions, not requests) and await a
future. A worker takes the first waiting job, waits at most ``max_wait_s`` for more until
``max_batch`` questions are waiting, then encodes them all in one session call and searches the
index, off the event loop, in a fixed pool of ``workers`` threads. While a worker is busy, new
requests queue up and form the next batch without any wait (the batch grows with the load).

A full queue refuses new work (:class:`QueueFull`, answered 503 with Retry-After) instead of growing
memory without bound.

A batch is answered by one index generation (:mod:`fastdpr.serve.generation`), taken when the batch
runs: a reload between two batches changes the index of the next batch, never the index of part of a
batch, and every result carries the generation that answered it (the version its response reports).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fastdpr.common.errors import FastDPRError
from fastdpr.search.hybrid import DENSE, Ranking
from fastdpr.search.retriever import Hit, Retriever

if TYPE_CHECKING:
    from fastdpr.serve.generation import Generation, Generations


class QueueFull(FastDPRError):
    """The batch queue holds ``max_queue`` questions already: the caller should retry later."""


class ShuttingDown(FastDPRError):
    """The server is draining: it accepts no new work."""


@dataclass(frozen=True)
class QuestionResult:
    """One question's answer from a batch: its embedding, hits (None for embed-only jobs) and token count."""

    embedding: np.ndarray
    hits: list[Hit] | None
    tokens: int
    truncated: bool
    #: Seconds the question waited in the queue, and its batch took to encode and search; the batch's size.
    queue_s: float = 0.0
    infer_s: float = 0.0
    batch: int = 0
    #: The index generation that answered (set by the batcher; None from :func:`run_batch` itself).
    generation: Generation | None = None


@dataclass
class _Job:
    questions: list[str]
    k: int | None  # None: embed only
    future: asyncio.Future[list[QuestionResult]]
    ranking: Ranking = DENSE
    enqueued: float = field(default_factory=time.perf_counter)


#: Called after every batch: (questions in the batch, seconds of inference + search, seconds the oldest
#: job waited in the queue).
BatchObserver = Callable[[int, float, float], None]


def run_batch(retriever: Retriever, questions: Sequence[str], ks: Sequence[int | None],
              max_batch: int, rankings: Sequence[Ranking] | None = None) -> list[QuestionResult]:
    """Encode ``questions`` in one session call (``max_batch`` per call) and search each with its own
    ``k`` and ranking (default dense; a group per distinct pair, so a question's hits are what
    ``Retriever.search(q, k, mode=...)`` ranks). Each question is tokenized once: the same encodings give
    the vectors and the token counts (a lexical question is encoded too: its tokens are reported)."""
    encodings = retriever.tokenize_questions(questions)
    vectors = retriever.encode_tokenized_questions(encodings, batch_size=max_batch)
    hits: list[list[Hit] | None] = [None] * len(questions)
    groups: dict[tuple[int, Ranking], list[int]] = {}
    for row, k in enumerate(ks):
        if k is not None:
            groups.setdefault((k, rankings[row] if rankings else DENSE), []).append(row)
    for (k, ranking), rows in groups.items():
        found = retriever.search_encoded([questions[i] for i in rows], vectors[rows], k, ranking)
        for row, row_hits in zip(rows, found, strict=True):
            hits[row] = row_hits
    return [QuestionResult(vectors[i], hits[i], len(enc.ids), bool(enc.overflowing))
            for i, enc in enumerate(encodings)]


class QuestionBatcher:
    """Groups the questions of concurrent requests into batches for :func:`run_batch`."""

    def __init__(self, generations: Generations, executor: ThreadPoolExecutor, *, max_batch: int,
                 max_wait_s: float, max_queue: int, workers: int, observer: BatchObserver | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or workers < 1 or max_wait_s < 0:
            raise FastDPRError("max_batch, max_queue and workers must be at least 1, max_wait_s at least 0")
        self.generations = generations
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._executor = executor
        self._workers = workers
        self._observer = observer
        self._pending: deque[_Job] = deque()
        self._pending_questions = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._no_wait = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queued_questions(self) -> int:
        """Questions waiting for a worker (not those being encoded)."""
        return self._pending_questions

    def start(self) -> None:
        """Start the workers (inside the running event loop)."""
        self._tasks = [asyncio.create_task(self._worker(), name=f"fastdpr-batcher-{i}") for i in range(self._workers)]

    def expedite(self) -> None:
        """Stop waiting for more questions (a shutdown began): queued jobs run at once, new ones still run."""
        self._no_wait = True
        self._wakeup.set()

    async def close(self) -> None:
        """Finish every queued job, then stop the workers."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)

    def submit(self, questions: list[str], k: int | None,
               ranking: Ranking = DENSE) -> asyncio.Future[list[QuestionResult]]:
        """Queue questions (searched with ``k`` and ``ranking``, or only embedded when ``k`` is None); await
        the future.

        Raises :class:`QueueFull` when they do not fit in the queue, :class:`ShuttingDown` when draining.
        """
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._pending_questions + len(questions) > self.max_queue:
            raise QueueFull(f"the queue holds {self._pending_questions} of {self.max_queue} questions")
        future: asyncio.Future[list[QuestionResult]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(questions, k, future, ranking))
        self._pending_questions += len(questions)
        self._wakeup.set()
        return future

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for a submit (or close); False on timeout."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                await self._wait(None)
            deadline = loop.time() + self.max_wait_s
            while self._pending_questions < self.max_batch and not (self._closing or self._no_wait):
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._wait(remaining):
                    break
            batch = self._take()
            if not batch:  # another worker took the jobs while this one waited
                continue
            if self._pending:  # more than one batch waits: let an idle worker start on it
                self._wakeup.set()
            await self._run(loop, batch)

    def _take(self) -> list[_Job]:
        """Jobs from the front of the queue up to ``max_batch`` questions (always at least one job: a
        request with more questions than ``max_batch`` is encoded alone, ``max_batch`` per call)."""
        batch: list[_Job] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0].questions) <= self.max_batch):
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.questions)
        self._pending_questions -= size
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        questions = [q for job in batch for q in job.questions]
        ks = [job.k for job in batch for _ in job.questions]
        rankings = [job.ranking for job in batch for _ in job.questions]
        waited = time.perf_counter() - batch[0].enqueued
        started = time.perf_counter()
        try:
            generation, results = await loop.run_in_executor(self._executor, self._answer, questions, ks,
                                                                    rankings)
        except Exception as exc:  # delivered to every caller of the batch; the worker keeps serving
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        infer = time.perf_counter() - started
        if self._observer is not None:
            self._observer(len(questions), infer, waited)
        start = 0
        for job in batch:
            part = [replace(result, queue_s=started - job.enqueued, infer_s=infer, batch=len(questions),
                            generation=generation)
                    for result in results[start:start + len(job.questions)]]
            start += len(job.questions)
            if not job.future.done():  # a caller that went away cancelled its future
                job.future.set_result(part)


    def _answer(self, questions: list[str], ks: list[int | None],
                rankings: list[Ranking]) -> tuple[Generation, list[QuestionResult]]:
        """One batch, answered entirely by the current generation (kept open until it is done)."""
        with self.generations.use() as generation:
            return generation, run_batch(generation.retriever, questions, ks, self.max_batch, rankings)


def describe_batching(batcher: QuestionBatcher) -> dict[str, Any]:
    """The batching settings, as /info reports them."""
    return {"max_batch": batcher.max_batch, "max_wait_ms": round(batcher.max_wait_s * 1000, 3),
            "max_queue": batcher.max_queue}
