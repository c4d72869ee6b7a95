"""A small asyncio load generator for ``fastdpr serve`` (loopback only, bounded in requests and time).

Each virtual client holds one keep-alive HTTP/1.1 connection and sends its next request as soon as the
previous answer arrived (a closed loop: concurrency = clients). The client is raw asyncio streams, so
it costs little CPU next to the server it measures on the same cores.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: ``check(index_version, body)``: is this answer the answer of the index version it names?
AnswerCheck = Callable[[str, bytes], bool]


@dataclass
class LoadResult:
    """Latencies (ms) of the successful requests, error count, wall time."""

    latencies_ms: list[float] = field(default_factory=list)
    #: Per successful request: latency minus the server's own queue + encode/search time (Server-Timing),
    #: i.e. what HTTP, JSON and the event loop cost.
    overhead_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: Per successful request: (start, end) in ``time.perf_counter`` seconds.
    spans: list[tuple[float, float]] = field(default_factory=list)
    #: Successful answers per X-Index-Version, and answers that the check found inconsistent with it.
    versions: dict[str, int] = field(default_factory=dict)
    inconsistent: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float, str, bytes]:
    """Status, the server's own milliseconds (Server-Timing: queue + infer), X-Index-Version, body."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    server_ms = 0.0
    version = ""
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"server-timing":
            server_ms = sum(float(part.split(b"dur=")[1]) for part in value.split(b",") if b"dur=" in part)
        elif name == b"x-index-version":
            version = value.strip().decode("ascii")
    return status, server_ms, version, await reader.readexactly(length)


async def _client(host: str, port: int, bodies: list[bytes], start: int, stop_at: float, budget: list[int],
                  result: LoadResult, check: AnswerCheck | None, stop: threading.Event | None) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    try:
        while budget[0] > 0 and time.perf_counter() < stop_at and not (stop is not None and stop.is_set()):
            budget[0] -= 1
            body = bodies[i % len(bodies)]
            i += 1
            request = (b"POST /search HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            started = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                status, server_ms, version, answer = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                ended = time.perf_counter()
                latency = (ended - started) * 1000
                result.latencies_ms.append(latency)
                result.overhead_ms.append(latency - server_ms)
                result.spans.append((started, ended))
                result.versions[version] = result.versions.get(version, 0) + 1
                if check is not None and not check(version, answer):
                    result.inconsistent += 1
            else:
                result.errors += 1
    finally:
        writer.close()


async def _run(url: str, questions: list[str], k: int, concurrency: int, max_requests: int,
               max_seconds: float, check: AnswerCheck | None, stop: threading.Event | None) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback addresses, not {host}")
    bodies = [json.dumps({"question": q, "k": k}).encode() for q in questions]
    result = LoadResult()
    budget = [max_requests]
    started = time.perf_counter()
    stop_at = started + max_seconds
    await asyncio.gather(*(_client(host, port, bodies, i * 7, stop_at, budget, result, check, stop)
                           for i in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(url: str, questions: list[str], *, k: int = 10, concurrency: int, max_requests: int,
             max_seconds: float, check: AnswerCheck | None = None, stop: threading.Event | None = None) -> LoadResult:
    """``concurrency`` clients asking ``questions`` (round robin) until ``max_requests``, ``max_seconds`` or
    ``stop`` is set; ``check`` judges every answer against the index version it names."""
    return asyncio.run(_run(url, questions, k, concurrency, max_requests, max_seconds, check, stop))
