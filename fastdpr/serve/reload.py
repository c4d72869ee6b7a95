"""Reloading a republished index in a running server: on request (SIGHUP) or by watching the manifest.

One reload at a time, in its own thread (the inference workers keep answering): the manifest is hashed,
and if it is not the version being served, the index is loaded and warmed as a new generation
(:meth:`~fastdpr.serve.loading.IndexSource.open`) and swapped in (:class:`~fastdpr.serve.generation.Generations`);
requests already running finish on the old one, which closes after its last one. A reload that fails
(a missing, corrupt or incompatible index) changes nothing: the old generation keeps answering, the log
says so in one line, and /info reports the failure. Requests that arrive during a reload coalesce into
one more reload after it (the index may have changed again meanwhile).

The watcher hashes the manifest every ``watch_seconds`` and asks for a reload when it differs from the
served version and is not the very file that last failed to load (a broken publish is tried, and
logged, once; the next publish is tried again, even one of the same content: a publish writes a new
manifest file).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME
from fastdpr.serve.generation import Generation, Generations, manifest_sha256, utc_now
from fastdpr.serve.loading import IndexSource
from fastdpr.serve.metrics import ServeMetrics

#: What the watcher compares when the manifest cannot be read (missing index, or mid-publish elsewhere than Linux).
UNREADABLE = "unreadable"

#: A published manifest: its file (device, inode, mtime) and its sha256, or :data:`UNREADABLE`.
Published = tuple[tuple[int, int, int], str] | str


def one_line(exc: BaseException) -> str:
    """An exception as one log line: our own errors by their message, others with their type."""
    text = " ".join(str(exc).split()) or "no details"
    return text if isinstance(exc, FastDPRError) else f"{type(exc).__name__}: {text}"


class Reloader:
    """Swaps in a republished index on :meth:`request` and, with ``watch_seconds`` > 0, when its manifest changes."""

    def __init__(self, source: IndexSource, generations: Generations, metrics: ServeMetrics, *, warm_batch: int,
                 watch_seconds: float = 0.0, log: Callable[[str], None] | None = None) -> None:
        self.source = source
        self.generations = generations
        self.metrics = metrics
        self.warm_batch = warm_batch
        self.watch_seconds = watch_seconds
        self.log = log or source.warn
        self.reloads = 0
        self.failures = 0
        self.in_progress = False
        self.last_reload_utc: str | None = None
        self.last_failure: dict[str, Any] | None = None
        #: The outcome of the last attempt: "reloaded", "unchanged" or "failed" (None: none yet).
        self.last_outcome: str | None = None
        self._failed_publish: Published | None = None
        self._wanted = asyncio.Event()
        self._reason = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastdpr-reload")
        self._tasks: list[asyncio.Task[None]] = []

    def request(self, reason: str = "SIGHUP") -> None:
        """Ask for a reload (on the event loop; from a signal handler via ``call_soon_threadsafe``)."""
        self._reason = reason
        self._wanted.set()

    def start(self) -> None:
        """Start answering requests (and watching), inside the running event loop."""
        self._tasks.append(asyncio.create_task(self._serve_requests(), name="fastdpr-reloader"))
        if self.watch_seconds > 0:
            self._tasks.append(asyncio.create_task(self._watch(), name="fastdpr-index-watcher"))

    async def stop(self) -> None:
        """Stop watching and reloading (a load in progress finishes in its thread and is closed unused)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._executor.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        """What /info says about reloading."""
        return {"watch_seconds": self.watch_seconds or None, "reloads": self.reloads, "failures": self.failures,
                "in_progress": self.in_progress, "last_outcome": self.last_outcome,
                "last_reload_failed": self.last_outcome == "failed", "last_reload_utc": self.last_reload_utc,
                "last_failure": self.last_failure}

    async def _serve_requests(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.reload(self._reason)

    async def reload(self, reason: str) -> str:
        """Reload now: "reloaded", "unchanged" (the served version is the published one) or "failed"."""
        loop = asyncio.get_running_loop()
        current = self.generations.current
        self.in_progress = True
        future = loop.run_in_executor(self._executor, self._load, current)
        try:
            new = await future
        except asyncio.CancelledError:
            future.add_done_callback(_close_unused)
            raise
        except Exception as exc:  # whatever a broken index raises, the served one keeps answering
            return self._failed(current, exc)
        finally:
            self.in_progress = False
        if new is None:
            self._outcome("unchanged")
            if reason == "SIGHUP":
                self.log(f"fastdpr serve: SIGHUP: {self.source.index} is unchanged, still answering with version "
                         f"{current.version.tag}")
            return "unchanged"
        self.generations.swap(new)
        self.reloads += 1
        self.last_reload_utc = utc_now()
        self.metrics.generation.set(new.version.generation)
        self._outcome("reloaded")
        self.log(f"fastdpr serve: reloaded {self.source.index} ({reason}): version {new.version.tag}, "
                 f"{new.retriever.count} passages, generation {new.version.generation} (was {current.version.tag})")
        return "reloaded"

    def _load(self, current: Generation) -> Generation | None:
        """In the reload thread: the new generation, or None when the published index is the served one."""
        self._failed_publish = published = self._peek()  # what failed, should this load fail
        if isinstance(published, str):
            manifest_sha256(self.source.index)  # raises, saying why (or it was published meanwhile: load it)
        elif published[1] == current.version.manifest_sha256:
            return None
        return self.source.open(current, warm_batch=self.warm_batch)

    def _failed(self, current: Generation, exc: Exception) -> str:
        self.failures += 1
        sha = self._failed_publish[1] if isinstance(self._failed_publish, tuple) else None
        self.last_failure = {"utc": utc_now(), "error": one_line(exc), "manifest_sha256": sha}
        self._outcome("failed")
        self.log(f"fastdpr serve: reload of {self.source.index} failed, still answering with version "
                 f"{current.version.tag}: {one_line(exc)}")
        return "failed"

    def _outcome(self, outcome: str) -> None:
        self.last_outcome = outcome
        self.metrics.reloads.labels(outcome).inc()
        if outcome != "failed":
            self._failed_publish = None

    def _peek(self) -> Published:
        """The published manifest (its file's identity first: a publish that changes it while it is
        hashed is seen again at the next look)."""
        try:
            stat = os.stat(self.source.index / MANIFEST_NAME)
            return (stat.st_dev, stat.st_ino, stat.st_mtime_ns), manifest_sha256(self.source.index)
        except (OSError, IndexLoadError):
            return UNREADABLE

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.watch_seconds)  # the poll interval, not a synchronisation
            published = await loop.run_in_executor(None, self._peek)
            if self.in_progress or self._wanted.is_set() or published == self._failed_publish:
                continue
            if isinstance(published, str) or published[1] != self.generations.current.version.manifest_sha256:
                self.request("manifest changed")


def _close_unused(future: Future[Generation | None] | asyncio.Future[Generation | None]) -> None:
    """A generation loaded for a reload that was cancelled (shutdown): close it."""
    if not future.cancelled() and future.exception() is None and (generation := future.result()) is not None:
        generation.retire()
