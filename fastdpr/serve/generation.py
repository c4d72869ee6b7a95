"""The index a server answers with, as generations that can be swapped while requests run (issue #24).

A :class:`Generation` is one loaded index: its :class:`~fastdpr.search.retriever.Retriever`, the passage
encoder that goes with it, the /info report and the :class:`IndexVersion` that names it. The server holds
its current generation in :class:`Generations`: every piece of work (a batch of questions, a passage
embedding) takes the current generation with :meth:`Generations.use` and answers entirely from it, and
the answer reports that generation's version. A reload swaps in a new, fully loaded generation; the old
one is retired and closed by whichever use of it ends last (a reference count, so no request ever sees
a closed index and nothing waits or sleeps for the others).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastdpr.common.errors import IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME
from fastdpr.model.openvino_encoder import SideEncoder
from fastdpr.search.retriever import Retriever

#: Hex digits of the manifest's sha256 that name a version (in the X-Index-Version header).
VERSION_DIGITS = 16


def manifest_sha256(index: Path) -> str:
    """The sha256 of ``index``'s manifest.json: the index's content identity (the manifest lists every
    file's size and sha256, a sharded one every shard manifest's sha256), whatever version wrote it."""
    try:
        return hashlib.sha256((index / MANIFEST_NAME).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise IndexLoadError(f"{index} has no {MANIFEST_NAME} (missing, or not an index)") from None
    except OSError as exc:
        raise IndexLoadError(f"cannot read {index / MANIFEST_NAME}: {exc.strerror or exc}") from exc


def utc_now() -> str:
    """Now, as the manifests write times (ISO 8601, seconds, UTC)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class IndexVersion:
    """Which index answers: the manifest's sha256 (same index, same version, across restarts too), its
    ``created_utc``, and the server's generation number (1 at start, +1 per reload)."""

    manifest_sha256: str
    created_utc: str | None
    generation: int
    loaded_utc: str

    @property
    def tag(self) -> str:
        """The short version, as the X-Index-Version header carries it."""
        return self.manifest_sha256[:VERSION_DIGITS]

    def to_dict(self) -> dict[str, Any]:
        """What /info and /ready say about the version."""
        return {"version": self.tag, "manifest_sha256": self.manifest_sha256, "created_utc": self.created_utc,
                "generation": self.generation, "loaded_utc": self.loaded_utc}


class Generation:
    """One loaded index and what belongs to it; closed once it is retired and its last user is done."""

    def __init__(self, retriever: Retriever, passage_encoder: SideEncoder | None, version: IndexVersion,
                 info: dict[str, Any]) -> None:
        self.retriever = retriever
        #: The artifact's context encoder (None: the server answers no passage embeddings). A reload of an
        #: index built from the same artifact shares the previous generation's encoder.
        self.passage_encoder = passage_encoder
        self.version = version
        #: The index's description (``fastdpr info INDEX --json``), made when it was loaded.
        self.info = info
        self._lock = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the retriever was closed (retired, and no use of it is left)."""
        return self._closed

    @property
    def users(self) -> int:
        """Uses of this generation in progress."""
        return self._users

    def enter(self) -> None:
        """One more use (only :meth:`Generations.use` calls it, under the holder's lock)."""
        with self._lock:
            if self._closed:  # cannot happen through Generations: a retired generation is never handed out
                raise IndexLoadError("this index generation is closed")
            self._users += 1

    def leave(self) -> None:
        """A use ended; the last one of a retired generation closes it."""
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0 and not self._closed
            self._closed = self._closed or close
        if close:
            self.retriever.close()

    def retire(self) -> None:
        """No new use will start; close now if none is running, else when the last one ends."""
        with self._lock:
            self._retired = True
            close = self._users == 0 and not self._closed
            self._closed = self._closed or close
        if close:
            self.retriever.close()


class Generations:
    """The server's current :class:`Generation`, swapped atomically by a reload."""

    def __init__(self, first: Generation) -> None:
        self._current = first
        self._lock = threading.Lock()

    @property
    def current(self) -> Generation:
        """The generation new work starts on (read it for descriptions only: answer through :meth:`use`)."""
        return self._current

    @contextmanager
    def use(self) -> Iterator[Generation]:
        """The current generation, kept open until the block ends (a reload meanwhile does not close it)."""
        with self._lock:  # taking the current one and counting the use is one step for swap()
            generation = self._current
            generation.enter()
        try:
            yield generation
        finally:
            generation.leave()

    def swap(self, new: Generation) -> Generation:
        """Make ``new`` current and retire the previous generation (closed when its last use ends)."""
        with self._lock:
            old, self._current = self._current, new
        old.retire()
        return old

    def close(self) -> None:
        """Retire the current generation (at shutdown)."""
        self._current.retire()
