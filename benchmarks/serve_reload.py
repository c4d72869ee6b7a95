"""The reload phase of ``python -m benchmarks serve``: concurrent clients while the served index is
republished and reloaded (SIGHUP) again and again (issue #24).

Two versions of the benchmark index differ only in their passage ids (``a:ID`` and ``b:ID``, rewritten
in copies of the store, with the manifest's file table made to match), so every answer can be checked
against the version its ``X-Index-Version`` header names. The live index directory is republished
with :func:`fastdpr.common.publish.atomic_directory`, the way every fastdpr build publishes, and the
server is sent SIGHUP; the reload is over when ``/ready`` names the new version. Latencies are split
into requests that overlapped a reload (from the start of the publish to the swap) and the others,
next to a steady phase of the same clients without any reload.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.common import percentiles
from benchmarks.serve_client import AnswerCheck, LoadResult, run_load
from benchmarks.serve_server import Server

#: Seconds a reload may take before the benchmark gives up on it.
RELOAD_TIMEOUT_S = 300.0


def manifest_version(index: Path) -> str:
    """The version ``fastdpr serve`` reports for ``index`` (its manifest's sha256, 16 hex digits)."""
    return hashlib.sha256((index / "manifest.json").read_bytes()).hexdigest()[:16]


def variant(index: Path, out: Path, prefix: str) -> Path:
    """A copy of ``index`` whose passage ids are ``PREFIX:ID`` (its manifest's file table updated)."""
    from fastdpr.common.integrity import MANIFEST_NAME, file_table, write_json

    shutil.copytree(index, out)
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    if "store" not in manifest:
        raise click.ClickException(f"{index}: the reload phase takes an unsharded index")
    with sqlite3.connect(out / manifest["store"]) as db:
        db.execute("UPDATE passages SET id = ? || ':' || id", (prefix,))
    db.close()
    manifest["files"] = file_table(out)
    write_json(out / MANIFEST_NAME, manifest)
    return out


def publish_copy(source: Path, live: Path) -> None:
    """Republish ``live`` as a copy of ``source``, atomically."""
    from fastdpr.common.errors import FastDPRError
    from fastdpr.common.publish import atomic_directory

    with atomic_directory(live, True, FastDPRError) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def answer_check(prefixes: dict[str, str]) -> AnswerCheck:
    """A check that every hit of an answer has the id prefix of the version the answer names."""

    def check(version: str, body: bytes) -> bool:
        prefix = prefixes.get(version)
        hits = json.loads(body).get("hits", [])
        return prefix is not None and bool(hits) and all(hit["id"].startswith(prefix) for hit in hits)

    return check


def wait_for_version(url: str, version: str) -> None:
    """Until /ready names ``version``."""
    import httpx

    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=10).json().get("index_version") == version:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"the server did not reload version {version} within {RELOAD_TIMEOUT_S:.0f} s")


def split(result: LoadResult, windows: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Latencies (ms) of the requests that overlapped a reload window, and of the others."""
    during: list[float] = []
    between: list[float] = []
    for (start, end), latency in zip(result.spans, result.latencies_ms, strict=True):
        overlapped = any(start < window_end and end > window_start for window_start, window_end in windows)
        (during if overlapped else between).append(latency)
    return during, between


def cell(latencies: list[float]) -> dict[str, Any]:
    return {"requests": len(latencies), **(percentiles(latencies) if latencies else {})}


def reload_phase(index: Path, server_args: list[str], threads: int, questions: list[str], *, clients: int,
                 cycles: int, steady_seconds: float, gap_seconds: float, k: int) -> dict[str, Any]:
    """``clients`` clients: ``steady_seconds`` without reloads, then ``cycles`` republish + SIGHUP reloads
    ``gap_seconds`` apart; failed requests, inconsistent answers and latencies of both."""
    load_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="fastdpr-reload-bench-"))
    try:
        versions = {name: variant(index, root / name, name) for name in ("a", "b")}
        prefixes = {manifest_version(path): f"{name}:" for name, path in versions.items()}
        check = answer_check(prefixes)
        live = root / "live"
        publish_copy(versions["a"], live)
        server = Server(live, threads, server_args)
        try:
            run_load(server.url, questions, k=k, concurrency=4, max_requests=64, max_seconds=20)  # warm up
            click.echo(f"  reload phase: steady, {clients} clients, {steady_seconds:g} s", err=True)
            steady = run_load(server.url, questions, k=k, concurrency=clients, max_requests=10**9,
                              max_seconds=steady_seconds, check=check)
            rss_before_mib = server.rss_mib()
            stop = threading.Event()
            box: dict[str, LoadResult] = {}
            loader = threading.Thread(target=lambda: box.setdefault("result", run_load(
                server.url, questions, k=k, concurrency=clients, max_requests=10**9, max_seconds=10**6,
                check=check, stop=stop)))
            loader.start()
            windows: list[tuple[float, float]] = []
            reloads: list[dict[str, float]] = []
            try:
                for number in range(cycles):
                    time.sleep(gap_seconds)  # the load runs between reloads (the benchmark's pacing)
                    name = "b" if number % 2 == 0 else "a"
                    started = time.perf_counter()
                    publish_copy(versions[name], live)
                    published = time.perf_counter()
                    server.process.send_signal(signal.SIGHUP)
                    wait_for_version(server.url, manifest_version(versions[name]))
                    swapped = time.perf_counter()
                    windows.append((started, swapped))
                    reloads.append({"publish_s": round(published - started, 3),
                                    "sighup_to_swap_s": round(swapped - published, 3)})
                    click.echo(f"  reload {number + 1}/{cycles}: publish {published - started:.2f} s, "
                               f"SIGHUP to swap {swapped - published:.2f} s", err=True)
                time.sleep(gap_seconds)
            finally:
                stop.set()
                loader.join()
            during_reload = box["result"]
            rss_mib = server.rss_mib()
        finally:
            exit_code = server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    during, between = split(during_reload, windows)
    swap_times = [r["sighup_to_swap_s"] for r in reloads]
    return {
        "clients": clients, "cycles": cycles, "steady_seconds": steady_seconds, "gap_seconds": gap_seconds,
        "failed_requests": steady.errors + during_reload.errors,
        "inconsistent_answers": steady.inconsistent + during_reload.inconsistent,
        "steady": {**cell(steady.latencies_ms), "errors": steady.errors, "seconds": round(steady.seconds, 2),
                   "throughput_rps": round(len(steady.latencies_ms) / max(steady.seconds, 1e-9), 1)},
        "reload_phase": {**cell(during_reload.latencies_ms), "errors": during_reload.errors,
                         "statuses": {str(s): n for s, n in during_reload.statuses.items()},
                         "seconds": round(during_reload.seconds, 2),
                         "throughput_rps": round(len(during_reload.latencies_ms) / max(during_reload.seconds, 1e-9), 1),
                         "answers_per_version": {prefixes.get(v, v): n for v, n in during_reload.versions.items()}},
        "during_reload": cell(during), "between_reloads": cell(between),
        "reloads": reloads, "sighup_to_swap_s_median": sorted(swap_times)[len(swap_times) // 2],
        "sighup_to_swap_s_max": max(swap_times), "rss_before_reloads_mib": rss_before_mib,
        "rss_after_mib": rss_mib, "exit_code_after_sigterm": exit_code,
        "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }


def render_reload(report: dict[str, Any], server: str) -> list[str]:
    """The reload section of the Markdown table."""
    r = report
    lines = [f"## Reload: {r['clients']} clients, {r['cycles']} republish + SIGHUP reloads, `{server}`", "",
             f"**Failed requests: {r['failed_requests']}**; answers inconsistent with the index version they "
             f"name: {r['inconsistent_answers']}. SIGHUP to swap: median {r['sighup_to_swap_s_median']} s, "
             f"max {r['sighup_to_swap_s_max']} s (load, checks and warm-up of the new index while the old one "
             "answers). Answers per version during the reloads: "
             + ", ".join(f"{v} {n}" for v, n in r["reload_phase"]["answers_per_version"].items())
             + f". Load average (1 min) {r['loadavg_1m'][0]} → {r['loadavg_1m'][1]}. Server RSS "
             f"{r['rss_before_reloads_mib']} MiB before the reloads, {r['rss_after_mib']} MiB after them; exit "
             f"status after SIGTERM {r['exit_code_after_sigterm']}.", "",
             "| phase | requests | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for name, key in (("steady (no reload)", "steady"), ("reload phase, all", "reload_phase"),
                      ("overlapping a reload (publish to swap)", "during_reload"),
                      ("between reloads", "between_reloads")):
        c = r[key]
        lines.append(f"| {name} | {c['requests']} | {c.get('p50', '')} | {c.get('p95', '')} | {c.get('p99', '')} |")
    return lines
