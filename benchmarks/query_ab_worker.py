"""The worker of ``python -m benchmarks query-ab``: one source tree's ``Retriever.search``, one question at a time.

Run as ``python -c <this file's text> INDEX THREADS K`` with the tree to measure first on ``PYTHONPATH``,
so it imports nothing but that tree's ``fastdpr`` (never this checkout's ``benchmarks``). It reads one
JSON line per question from stdin and answers one JSON line: the call's milliseconds (wall clock, and the
process's CPU time), its parts, and the
ids of the hits (so the driver can check both trees return the same passages).

Parts are timed by wrapping the retriever's collaborators by method name, whichever the tree calls:
``encoder.session.run`` (encode), ``encoder.encode_questions`` (tokenize = it minus encode),
``searcher.search`` (search), ``store.get`` / ``store.texts`` (fetch); ``other`` is the rest of the call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any


class Timed:
    """``target`` with each of ``methods`` (those it has) adding its seconds to ``record[part]``."""

    def __init__(self, target: Any, methods: tuple[str, ...], part: str, record: dict[str, float]) -> None:
        self._target = target
        for method in methods:
            if hasattr(target, method):
                setattr(self, method, self._wrap(getattr(target, method), part, record))

    @staticmethod
    def _wrap(original: Callable[..., Any], part: str, record: dict[str, float]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record[part] = record.get(part, 0.0) + time.perf_counter() - start
        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def main(index: str, threads: int, k: int) -> None:
    """Answer questions from stdin until it closes."""
    import os

    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(threads))
    import fastdpr
    from fastdpr.search.retriever import Retriever

    retriever: Any = Retriever.load(index, threads=threads)
    record: dict[str, float] = {}
    encoder = retriever.encoder
    encoder.session = Timed(encoder.session, ("run",), "encode", record)
    retriever.encoder = Timed(encoder, ("encode_questions",), "_encoder", record)
    retriever.searcher = Timed(retriever.searcher, ("search",), "search", record)
    retriever.store = Timed(retriever.store, ("get", "texts"), "fetch", record)
    print(json.dumps({"ready": True, "fastdpr": fastdpr.__file__}), flush=True)
    for line in sys.stdin:
        question = json.loads(line)["question"]
        record.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        hits = retriever.search(question, k=k)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        parts = {"tokenize": record["_encoder"] - record["encode"], "encode": record["encode"],
                 "search": record["search"], "fetch": record["fetch"]}
        parts["other"] = max(total - sum(parts.values()), 0.0)
        print(json.dumps({"ms": total * 1000, "cpu_ms": cpu * 1000, "parts": {p: s * 1000 for p, s in parts.items()},
                          "ids": [hit.id for hit in hits]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
