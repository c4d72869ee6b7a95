"""``python -m benchmarks store-fetch``: ways to fetch a question's 100 passages, on a store of realistic size.

    python -m benchmarks store-fetch --squad ../shared/data/squad/dev-v1.1.json --passages 200000 \
        --out benchmarks/results/query-<int8 class>/store-fetch

The levers of issue #21 for the fetch part of a query, measured side by side on one SYNTHETIC passage
store (:mod:`benchmarks.synthetic_corpus`), 100 random labels per lookup, the variants interleaved
(order rotated per lookup), each lookup after ``--idle-ms`` of idle (as a query comes after its encoder
call and the latency benchmark's 20 ms pause: caches are not warm) and, separately, back to back (warm):

* ``sqlite-in-list``: the lookup before issue #21 (read-only connection, ``label IN (?, ...)``, rows put
  back in order through a dict);
* ``store-texts``: :meth:`fastdpr.index.store.PassageStore.texts` as shipped (immutable, memory-mapped,
  read-only connection; the labels as one JSON array joined in order);
* ``mmap-side-file``: the text of every passage in one file beside the store, read through ``mmap`` by
  byte offsets (a file the index format would have to add; measured to decide whether to add it);
* ``in-memory``: every passage in a Python list (``Retriever.load(passages_in_memory=True)``).
"""

from __future__ import annotations

import datetime as dt
import json
import mmap
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, percentiles, versions
from benchmarks.synthetic_corpus import SYNTHETIC_NOTE, synthetic_passages
from fastdpr.index.store import PassageStore, PassageStoreWriter

K = 100
SEPARATOR = "\x1f"


def _build(squad: Path, count: int, seed: int, directory: Path) -> Path:
    store = directory / "passages.sqlite"
    with PassageStoreWriter(store) as writer:
        for label, passage in enumerate(synthetic_passages(squad, count, seed)):
            writer.add(label, passage.id, passage.title, passage.text)
    return store


def _side_file(store: Path, directory: Path) -> tuple[np.ndarray, Path]:
    """Byte offsets and one UTF-8 file of ``id US title US text`` records, in label order."""
    blob = directory / "passages.text"
    offsets = [0]
    with sqlite3.connect(store) as conn, blob.open("wb") as out:
        for pid, title, text in conn.execute("SELECT id, title, text FROM passages ORDER BY label"):
            record = SEPARATOR.join((pid, title, text)).encode("utf-8")
            out.write(record)
            offsets.append(offsets[-1] + len(record))
    return np.asarray(offsets, dtype=np.int64), blob


def _variants(store: Path, directory: Path, stack: list[Any]) -> dict[str, Callable[[np.ndarray], list[Any]]]:
    plain = sqlite3.connect(store.resolve().as_uri() + "?mode=ro", uri=True)
    stack.append(plain)

    def in_list(labels: np.ndarray) -> list[Any]:
        wanted = labels.tolist()
        sql = f"SELECT label, id, title, text FROM passages WHERE label IN ({','.join('?' * len(wanted))})"
        found = {row[0]: row[1:] for row in plain.execute(sql, wanted)}
        return [found[label] for label in wanted]

    shipped = PassageStore(store)
    stack.append(shipped)
    offsets, blob = _side_file(store, directory)
    handle = blob.open("rb")
    stack.append(handle)
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    stack.append(mapped)

    def side_file(labels: np.ndarray) -> list[Any]:
        starts, ends = offsets[labels].tolist(), offsets[labels + 1].tolist()
        return [tuple(mapped[a:b].decode("utf-8").split(SEPARATOR, 2)) for a, b in zip(starts, ends, strict=True)]

    memory = PassageStore(store)
    stack.append(memory)
    memory.load_into_memory()
    return {"sqlite-in-list": in_list, "store-texts": shipped.texts, "mmap-side-file": side_file,
            "in-memory": memory.texts}


def _measure(variants: dict[str, Callable[[np.ndarray], list[Any]]], lookups: list[np.ndarray],
             idle_s: float) -> dict[str, list[float]]:
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    reference = None
    for i, labels in enumerate(lookups):
        for name in names[i % len(names):] + names[:i % len(names)]:
            if idle_s:
                time.sleep(idle_s)
            start = time.perf_counter()
            rows = variants[name](labels)
            times[name].append((time.perf_counter() - start) * 1000)
            if i == 0:  # every variant returns the same passages
                reference = reference or [tuple(row) for row in rows]
                assert [tuple(row) for row in rows] == reference, name
    return times


def run_store_fetch(squad: Path, count: int, lookups: int, idle_ms: float, seed: int, out: Path) -> dict[str, Any]:
    """Build the store, measure every variant cold and warm, write store-fetch.json / .md into ``out``."""
    load_start = os.getloadavg()
    stack: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="fastdpr-store-fetch-") as tmp:
        directory = Path(tmp)
        log(f"[store-fetch] writing a {count:,}-passage SYNTHETIC store")
        store = _build(squad, count, seed, directory)
        try:
            variants = _variants(store, directory, stack)
            rng = np.random.default_rng(seed)
            labels = [rng.choice(count, K, replace=False) for _ in range(lookups)]
            log(f"[store-fetch] {lookups} lookups of {K} labels per variant, {idle_ms} ms idle before each")
            cold = _measure(variants, labels, idle_ms / 1000)
            warm = _measure(variants, labels, 0.0)
            sizes = {"passages.sqlite": store.stat().st_size,
                     "passages.text (side file)": (directory / "passages.text").stat().st_size}
        finally:
            for item in reversed(stack):
                item.close()
    report = {
        "benchmark": "store-fetch",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m benchmarks store-fetch --squad {squad} --passages {count} --lookups {lookups} "
                   f"--idle-ms {idle_ms} --seed {seed} --out {out}",
        "machine": machine(), "versions": {**versions(), "sqlite": sqlite3.sqlite_version},
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "passages": count, "synthetic": SYNTHETIC_NOTE, "k": K, "lookups": lookups, "idle_ms": idle_ms,
        "bytes": sizes,
        "cold_ms": {name: percentiles(values) for name, values in cold.items()},
        "warm_ms": {name: percentiles(values) for name, values in warm.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "store-fetch.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "store-fetch.md").write_text(_markdown(report), encoding="utf-8")
    log(f"[store-fetch] wrote {out}")
    return report


def _markdown(report: dict[str, Any]) -> str:
    cls = report["machine"]["int8_class"]["int8_class"]
    lines = [f"# Fetching {report['k']} passages from a {report['passages']:,}-passage store", "",
             f"- {report['created_utc']}, int8 class **{cls}**, {report['machine']['cores']} cores, load average "
             f"(1 min) {report['load_average']['start'][0]} / {report['load_average']['end'][0]} (start / end)",
             f"- {report['synthetic']}", f"- command: `{report['command']}`", "",
             f"| variant | after {report['idle_ms']:g} ms idle: p50 ms | p95 | back to back: p50 ms | p95 |",
             "|---|---:|---:|---:|---:|"]
    for name in report["cold_ms"]:
        c, w = report["cold_ms"][name], report["warm_ms"][name]
        lines.append(f"| {name} | {c['p50']} | {c['p95']} | {w['p50']} | {w['p95']} |")
    lines += ["", "Bytes: " + ", ".join(f"{k} {v:,}" for k, v in report["bytes"].items()), ""]
    return "\n".join(lines)


@click.command("store-fetch", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passages", type=click.IntRange(K), default=200_000, show_default=True)
@click.option("--lookups", type=click.IntRange(1), default=300, show_default=True)
@click.option("--idle-ms", type=click.FloatRange(0), default=20.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def store_fetch_command(squad: Path, passages: int, lookups: int, idle_ms: float, seed: int, out: Path) -> None:
    """Fetch 100 passages four ways (SQLite before/after issue #21, an mmap side file, memory), interleaved."""
    run_store_fetch(squad, passages, lookups, idle_ms, seed, out)
