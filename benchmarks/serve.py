"""``python -m benchmarks serve``: ``fastdpr serve`` under load, with and without cross-request batching,
against the in-process ``Retriever.search`` as the ceiling, a memory soak, and reloads of a republished
index under load (:mod:`benchmarks.serve_reload`).

Everything runs on loopback, side by side on the same cores (server processes, this load generator,
the in-process reference): the systems are measured interleaved, round by round, so a busy shared
machine slows all of them alike, and every cell records the load average. Results: JSON and a
Markdown table under ``--out``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import machine, percentiles, versions
from benchmarks.serve_client import LoadResult, run_load
from benchmarks.serve_reload import reload_phase, render_reload
from benchmarks.serve_server import Server

#: Server settings per system: cross-request batching on (the default) and off.
SYSTEMS = {
    "http-batched": ["--max-batch", "32", "--max-wait-ms", "2"],
    "http-unbatched": ["--max-batch", "1", "--max-wait-ms", "0"],
    # Two batches at once, one thread each: one batch encodes while the other's answers are written.
    "http-batched-2x1": ["--max-batch", "32", "--max-wait-ms", "2", "--workers", "2", "--threads", "1"],
    # The same two workers without batching: without it, 2x1 against 1x2 would credit batching with
    # what the second worker does.
    "http-unbatched-2x1": ["--max-batch", "1", "--max-wait-ms", "0", "--workers", "2", "--threads", "1"],
    # Batching without the wait: a lone request goes at once; requests that arrive while both workers
    # encode still form the next batch.
    "http-batched-2x1-wait0": ["--max-batch", "32", "--max-wait-ms", "0", "--workers", "2", "--threads", "1"],
}
#: The server of the reload phase: fastdpr serve's defaults, spelled out.
RELOAD_SYSTEM = "http-batched-2x1-wait0"
PHASES = ("levels", "soak", "reload")


def benchmark_questions() -> list[str]:
    """Varied questions about the demo corpus (the Python docs' topics), from its titles."""
    from fastdpr.corpus.builtin import pydoc_topic_passages

    forms = ("what is {}?", "how does {} work in python", "explain {}", "when should I use {} and why?")
    titles = sorted({p.title for p in pydoc_topic_passages() if p.title})
    return [forms[i % len(forms)].format(title) for i, title in enumerate(titles)]


@contextmanager
def servers(index: Path, threads: int) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name, extra in SYSTEMS.items():
            started[name] = Server(index, threads, extra)
        yield started
    finally:
        for server in started.values():
            server.stop()


def summarize(result: LoadResult, load_before: float, load_after: float) -> dict[str, Any]:
    return {"requests": result.requests, "errors": result.errors, "seconds": round(result.seconds, 2),
            "throughput_rps": round(len(result.latencies_ms) / max(result.seconds, 1e-9), 1),
            **(percentiles(result.latencies_ms) if result.latencies_ms else {}),
            **({"http_overhead_p50_ms": percentiles(result.overhead_ms)["p50"]} if result.overhead_ms else {}),
            "loadavg_1m": [round(load_before, 2), round(load_after, 2)]}


def in_process(retriever: Any, questions: list[str], k: int, concurrency: int, max_requests: int,
               max_seconds: float) -> LoadResult:
    """The ceiling: ``Retriever.search`` called in this process. Concurrency 1: one call per question
    (latency = what HTTP adds to); above 1: ``search_batch`` of ``concurrency`` questions per call (what
    perfect batching with no HTTP at all would give), each question's latency = its batch's."""
    result = LoadResult()
    started = time.perf_counter()
    i = 0
    while result.requests < max_requests and time.perf_counter() - started < max_seconds:
        batch = [questions[(i + j) % len(questions)] for j in range(concurrency)]
        i += concurrency
        t0 = time.perf_counter()
        if concurrency == 1:
            retriever.search(batch[0], k)
        else:
            retriever.search_batch(batch, k, batch_size=32)
        result.latencies_ms.extend([(time.perf_counter() - t0) * 1000] * len(batch))
    result.seconds = time.perf_counter() - started
    return result


def run_levels(index: Path, threads: int, levels: list[int], rounds: int, max_requests: int, max_seconds: float,
               k: int) -> dict[str, Any]:
    from fastdpr.search.retriever import Retriever

    questions = benchmark_questions()
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    retriever = Retriever.load(index, threads=threads)
    with servers(index, threads) as running:
        for server in running.values():  # warm up: sessions, page cache, allocator
            run_load(server.url, questions, k=k, concurrency=4, max_requests=64, max_seconds=20)
        in_process(retriever, questions, k, 1, 32, 10)
        for level in levels:
            for round_ in range(rounds):
                for name, server in running.items():
                    batches_before = server.batch_stats()
                    load_before = os.getloadavg()[0]
                    cpu_before = server.cpu_seconds()
                    result = run_load(server.url, questions, k=k, concurrency=level, max_requests=max_requests,
                                      max_seconds=max_seconds)
                    cpu = server.cpu_seconds() - cpu_before
                    batches_after = server.batch_stats()
                    cell = summarize(result, load_before, os.getloadavg()[0])
                    cell["server_cpu_ms_per_request"] = round(cpu * 1000 / max(len(result.latencies_ms), 1), 2)
                    batches = batches_after[0] - batches_before[0]
                    cell["mean_batch"] = round((batches_after[1] - batches_before[1]) / max(batches, 1), 2)
                    cells.setdefault(name, {}).setdefault(str(level), []).append(cell)
                    click.echo(f"  c={level:>2} round {round_ + 1} {name:<15} {cell['throughput_rps']:>7} req/s  "
                               f"p50 {cell.get('p50')} ms  p99 {cell.get('p99')} ms  batch {cell['mean_batch']}  "
                               f"cpu {cell['server_cpu_ms_per_request']} ms/req  "
                               f"errors {cell['errors']}  load {cell['loadavg_1m']}", err=True)
                load_before = os.getloadavg()[0]
                cpu_before = time.process_time()
                result = in_process(retriever, questions, k, level, max_requests, max_seconds)
                cpu = time.process_time() - cpu_before
                cell = summarize(result, load_before, os.getloadavg()[0])
                cell["server_cpu_ms_per_request"] = round(cpu * 1000 / max(len(result.latencies_ms), 1), 2)
                cells.setdefault("in-process", {}).setdefault(str(level), []).append(cell)
                click.echo(f"  c={level:>2} round {round_ + 1} {'in-process':<15} {cell['throughput_rps']:>7} req/s  "
                           f"p50 {cell.get('p50')} ms  cpu {cell['server_cpu_ms_per_request']} ms/req", err=True)
    retriever.close()
    return {"questions": len(questions), "k": k, "rounds": rounds, "max_requests_per_cell": max_requests,
            "max_seconds_per_cell": max_seconds, "cells": cells, "summary": best_of(cells)}


def best_of(cells: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and level: the round with the median throughput (a shared machine has odd rounds)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system, levels in cells.items():
        for level, rounds in levels.items():
            ordered = sorted(rounds, key=lambda cell: cell["throughput_rps"])
            out.setdefault(system, {})[level] = {**ordered[(len(ordered) - 1) // 2],
                                                 "errors_all_rounds": sum(c["errors"] for c in rounds)}
    return out


def soak(index: Path, threads: int, seconds: float, concurrency: int, k: int) -> dict[str, Any]:
    """The batched server under constant load for ``seconds``: RSS sampled every 10 s, errors counted."""
    questions = benchmark_questions()
    server = Server(index, threads, SYSTEMS["http-batched"])
    samples: list[dict[str, float]] = []
    totals = LoadResult()
    try:
        run_load(server.url, questions, k=k, concurrency=concurrency, max_requests=200, max_seconds=30)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            samples.append({"t_s": round(time.perf_counter() - started, 1), "rss_mib": server.rss_mib(),
                            "loadavg_1m": round(os.getloadavg()[0], 2)})
            chunk = run_load(server.url, questions, k=k, concurrency=concurrency, max_requests=10**9,
                             max_seconds=min(10.0, seconds - (time.perf_counter() - started)))
            totals.latencies_ms.extend(chunk.latencies_ms)
            totals.errors += chunk.errors
            totals.seconds += chunk.seconds
            click.echo(f"  soak {samples[-1]['t_s']:>6} s  rss {samples[-1]['rss_mib']} MiB  "
                       f"{len(chunk.latencies_ms) / max(chunk.seconds, 1e-9):.1f} req/s  errors {totals.errors}",
                       err=True)
        samples.append({"t_s": round(time.perf_counter() - started, 1), "rss_mib": server.rss_mib(),
                        "loadavg_1m": round(os.getloadavg()[0], 2)})
    finally:
        exit_code = server.stop()
    rss = [s["rss_mib"] for s in samples]
    return {"server": f"fastdpr serve INDEX --threads {threads} {' '.join(SYSTEMS['http-batched'])}",
            "seconds": seconds, "concurrency": concurrency, "requests": totals.requests, "errors": totals.errors,
            "throughput_rps": round(len(totals.latencies_ms) / max(totals.seconds, 1e-9), 1),
            **percentiles(totals.latencies_ms), "rss_start_mib": rss[0], "rss_end_mib": rss[-1],
            "rss_max_mib": max(rss), "rss_growth_mib": round(rss[-1] - rss[0], 1),
            "rss_slope_mib_per_min": round(float(np.polyfit([s["t_s"] / 60 for s in samples], rss, 1)[0]), 3),
            "exit_code_after_sigterm": exit_code, "samples": samples}


def render(report: dict[str, Any]) -> str:
    """The Markdown tables of a report (the phases it ran)."""
    cpu = report["machine"]["int8_class"]
    lines = [f"# fastdpr serve under load ({report['date']})", "",
             f"Index: {report['index']['passages']} passages ({report['index']['precision']}, "
             f"{report['index']['model']}); k={report['k']}; server and load generator side by side on "
             f"{report['machine']['cores']} cores ({report['machine']['cpu']}, int8 class "
             f"{cpu.get('int8_class', cpu)}), loopback."]
    if "levels" in report:
        lines += render_levels(report)
    if report.get("soak"):
        lines += render_soak(report["soak"])
    if report.get("reload"):
        lines += ["", *render_reload(report["reload"], report["reload"]["server"])]
    return "\n".join(lines) + "\n"


def render_levels(report: dict[str, Any]) -> list[str]:
    """The load levels' table."""
    lines = ["", f"Servers `--threads {report['threads']}` (the *-2x1 systems: `--workers 2 --threads 1`); "
             f"{report['levels']['rounds']} interleaved rounds per cell (the median round is shown), each at most "
             f"{report['levels']['max_requests_per_cell']} requests or {report['levels']['max_seconds_per_cell']} s.",
             "", *[f"- {name}: `fastdpr serve INDEX "
                   f"{'' if '--threads' in args else '--threads ' + str(report['threads']) + ' '}{' '.join(args)}`"
                   for name, args in SYSTEMS.items()],
             "", "| clients | system | req/s | p50 ms | p95 ms | p99 ms | HTTP part p50 ms | CPU ms / request "
                 "| mean batch | errors | load avg |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    summary = report["levels"]["summary"]
    for level in report["levels"]["levels"]:
        for system in (*SYSTEMS, "in-process"):
            cell = summary[system][str(level)]
            lines.append(f"| {level} | {system} | {cell['throughput_rps']} | {cell.get('p50')} | {cell.get('p95')} | "
                         f"{cell.get('p99')} | {cell.get('http_overhead_p50_ms', '')} | "
                         f"{cell.get('server_cpu_ms_per_request', '')} | {cell.get('mean_batch', '')} | "
                         f"{cell['errors_all_rounds']} | "
                         f"{cell['loadavg_1m'][0]} → {cell['loadavg_1m'][1]} |")
    overhead = report["http_overhead_ms"]
    lines += ["", "Single-request overhead of HTTP (1 client, p50 of each request's latency minus the server's own "
                  "queue + encode/search time from its `Server-Timing` header): "
                  f"{overhead['p50_http_only_unbatched_ms']} ms without batching, "
                  f"{overhead['p50_http_only_batched_ms']} ms with it (which includes the up-to-2 ms batching wait). "
                  f"Whole request p50: HTTP {overhead['p50_http_unbatched_ms']} ms (unbatched) / "
                  f"{overhead['p50_http_batched_ms']} ms (batched), in-process `Retriever.search` "
                  f"{overhead['p50_in_process_ms']} ms.", "",
              "in-process, 1 client: `Retriever.search` per question; more clients: `search_batch` of that many "
              "questions per call (perfect batching without HTTP, the ceiling). HTTP part: latency minus the "
              "server's queue + inference time. CPU ms / request: CPU time (all threads) of the server process "
              "(in-process: of the calling process) per answered request: what a request costs, whatever the "
              "scheduler of a shared machine does to wall-clock numbers."]
    return lines


def render_soak(s: dict[str, Any]) -> list[str]:
    """The soak's paragraph."""
    return ["", f"## Soak: {s['seconds'] / 60:.0f} minutes, {s['concurrency']} clients, "
                f"`{s.get('server', 'http-batched')}`", "",
            f"{s['requests']} requests, {s['errors']} errors, {s['throughput_rps']} req/s, p50 {s['p50']} ms, "
            f"p99 {s['p99']} ms. Server RSS: start {s['rss_start_mib']} MiB, end {s['rss_end_mib']} MiB, "
            f"max {s['rss_max_mib']} MiB (slope {s['rss_slope_mib_per_min']} MiB/min). "
            f"Exit status after SIGTERM: {s['exit_code_after_sigterm']}. Load average during the soak: "
            f"{min(x['loadavg_1m'] for x in s['samples'])} to {max(x['loadavg_1m'] for x in s['samples'])}."]


@click.command("serve")
@click.option("--index", "index", required=True, type=click.Path(path_type=Path, exists=True),
              help="Index to serve (e.g. the demo's: ~/.cache/fastdpr/demo/index-pydoc-topics).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Results directory.")
@click.option("--levels", default="1,4,16,64", show_default=True, help="Concurrent clients, comma-separated.")
@click.option("--rounds", type=click.IntRange(1, 20), default=2, show_default=True)
@click.option("--max-requests", type=click.IntRange(1, 10**7), default=400, show_default=True,
              help="Requests per cell (bounded).")
@click.option("--max-seconds", type=click.FloatRange(1, 3600), default=15, show_default=True,
              help="Seconds per cell (bounded).")
@click.option("--soak-seconds", type=click.FloatRange(0, 7200), default=600, show_default=True,
              help="Soak duration (0: no soak).")
@click.option("--soak-clients", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Server ORT threads (default: all cores).")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--phases", default=",".join(PHASES), show_default=True,
              help="Which phases to run, comma-separated: levels, soak (if --soak-seconds > 0), reload.")
@click.option("--reload-clients", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Concurrent clients of the reload phase.")
@click.option("--reload-cycles", type=click.IntRange(1, 1000), default=6, show_default=True,
              help="Republish + SIGHUP reloads in the reload phase.")
@click.option("--reload-steady-seconds", type=click.FloatRange(1, 3600), default=15, show_default=True,
              help="Seconds of the same load without reloads (the reference latencies).")
@click.option("--reload-gap-seconds", type=click.FloatRange(0, 600), default=2, show_default=True,
              help="Seconds of load between two reloads.")
def serve_command(index: Path, out: Path, levels: str, rounds: int, max_requests: int, max_seconds: float,
                  soak_seconds: float, soak_clients: int, threads: int | None, k: int, phases: str,
                  reload_clients: int, reload_cycles: int, reload_steady_seconds: float,
                  reload_gap_seconds: float) -> None:
    """Throughput and p50/p95/p99 of `fastdpr serve` at several concurrency levels, batched vs unbatched vs
    in-process, RSS over a soak, and failed requests and latency while the index is republished and reloaded."""
    from fastdpr.index.manifest import load_index_manifest
    from fastdpr.model.session import default_threads

    threads = threads or default_threads()
    chosen = {phase.strip() for phase in phases.split(",") if phase.strip()}
    if not chosen or not chosen <= set(PHASES):
        raise click.BadParameter(f"choose among {', '.join(PHASES)}", param_hint="--phases")
    manifest = load_index_manifest(index, integrity="sizes").raw
    concurrency = [int(level) for level in levels.split(",")]
    report: dict[str, Any] = {
        "benchmark": "serve", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "threads": threads, "k": k, "phases": sorted(chosen),
        "index": {"path": str(index), "passages": manifest["counts"]["indexed"], "precision": manifest["precision"],
                  "model": manifest["artifact"]["sources"].get("question", "?")},
    }
    if "levels" in chosen:
        click.echo(f"load levels {concurrency}, {rounds} rounds", err=True)
        report["levels"] = {"levels": concurrency, **run_levels(index, threads, concurrency, rounds, max_requests,
                                                                  max_seconds, k)}
        one = report["levels"]["summary"]
        report["http_overhead_ms"] = {
            "p50_http_batched_ms": one["http-batched"]["1"]["p50"],
            "p50_http_unbatched_ms": one["http-unbatched"]["1"]["p50"],
            "p50_in_process_ms": one["in-process"]["1"]["p50"],
            # Same requests, same process: client latency minus the server's queue + encode/search time.
            "p50_http_only_batched_ms": one["http-batched"]["1"]["http_overhead_p50_ms"],
            "p50_http_only_unbatched_ms": one["http-unbatched"]["1"]["http_overhead_p50_ms"],
        }
    if "reload" in chosen:
        server_args = SYSTEMS[RELOAD_SYSTEM]
        click.echo(f"reload: {reload_clients} clients, {reload_cycles} reloads", err=True)
        report["reload"] = {"server": f"fastdpr serve INDEX {' '.join(server_args)}",
                            **reload_phase(index, server_args, threads, benchmark_questions(), clients=reload_clients,
                                           cycles=reload_cycles, steady_seconds=reload_steady_seconds,
                                           gap_seconds=reload_gap_seconds, k=k)}
    if soak_seconds and "soak" in chosen:
        click.echo(f"soak: {soak_seconds:.0f} s at {soak_clients} clients", err=True)
        report["soak"] = soak(index, threads, soak_seconds, soak_clients, k)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "serve.md").write_text(render(report), encoding="utf-8")
    click.echo(render(report))
