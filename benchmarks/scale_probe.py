"""The serving half of ``python -m benchmarks scale``, run in a fresh process per index (so its start is cold).

``python -m benchmarks.scale_probe INDEX --squad FILE [--questions N] [-k K] [--unsharded-graph PATH]``
prints one line as soon as the index is open and its first question answered (the parent times the
cold start up to that line), then measures and prints one JSON object:

* ``query_ms``: ``Retriever.search(q, k)`` one question at a time (encode + search + fetch), p50/p99;
* ``search_ms``: the HNSW search alone on precomputed question vectors, p50/p99;
* ``peak_rss_bytes``: this process's peak RSS while serving (before exact search loads all vectors);
  with ``--ray`` the shards are served by actors of a new local Ray cluster (its start is part of the
  cold start) and this is the driver's RSS only;
* ``recall_vs_exact``: mean |HNSW top-k ∩ exact top-k| / k over the questions;
* ``recall_by_ef``: the same recall at other search-time ``ef`` values (:data:`EF_SWEEP`), with the
  mean search time of all questions at once per question: how far recall moves with the one knob a
  user turns at search time;
* with ``--unsharded-graph``: one HNSW graph over all the index's vectors (same M / ef_construction),
  built (timed) or loaded from PATH, searched with the same ef (and the same sweep), its recall against
  the same exact top-k.

Questions are a seeded sample of SQuAD dev questions: their neighbours in a SYNTHETIC corpus are the
subject, not answers.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

#: Search-time ef values whose recall is reported besides the index's default.
EF_SWEEP = (100, 200, 800, 1600)


def _percentiles(samples: list[float]) -> dict[str, float]:
    array = np.asarray(samples)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p99": round(float(np.percentile(array, 99)), 3),
            "mean": round(float(array.mean()), 3)}


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True))
    return round(hits / truth.size, 4)


def _recall_by_ef(search: Callable[[int], np.ndarray], truth: np.ndarray, questions: int) -> dict[str, object]:
    """Recall against ``truth`` and mean ms per question, for each ef of :data:`EF_SWEEP`."""
    sweep: dict[str, object] = {}
    for ef in EF_SWEEP:
        started = time.perf_counter()
        labels = search(ef)
        sweep[str(ef)] = {"recall_vs_exact": _recall(np.asarray(labels), truth),
                          "ms_per_question": round((time.perf_counter() - started) * 1000 / questions, 3)}
    return sweep


@click.command()
@click.argument("index", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--questions", "count", type=int, default=1000)
@click.option("-k", "k", type=int, default=100)
@click.option("--threads", type=int, default=None)
@click.option("--unsharded-graph", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--seed", type=int, default=0)
@click.option("--ray", "on_ray", is_flag=True, help="Serve the shards from actors of a new local Ray cluster.")
def main(index: Path, squad: Path, count: int, k: int, threads: int | None, unsharded_graph: Path | None,
         seed: int, on_ray: bool) -> None:
    """Cold start, latency, memory and recall of one index (see the module docstring)."""
    from fastdpr.search.retriever import Retriever

    with Retriever.load(index, threads=threads, ray_address="" if on_ray else None) as retriever:
        retriever.search("who wrote the declaration of independence", k=k)
        print("ready", flush=True)

        from fastdpr.corpus.squad import load_squad_questions

        pool = load_squad_questions(squad)
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False).tolist())
        texts = [pool[i].question for i in picked]

        query_ms = []
        for text in texts:
            started = time.perf_counter()
            retriever.search(text, k=k)
            query_ms.append((time.perf_counter() - started) * 1000)
        vectors = retriever.encode_questions(texts)
        search_ms = []
        for row in vectors:
            started = time.perf_counter()
            retriever.searcher.search(row[None, :], k)
            search_ms.append((time.perf_counter() - started) * 1000)
        hnsw_labels, _ = retriever.searcher.search(vectors, k)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ef = retriever.ef
        hnsw = retriever.manifest["hnsw"]

        with Retriever.load(index, threads=threads, exact=True, check_int8=False) as exact:
            exact_labels, _ = exact.searcher.search(vectors, k)
        searcher = retriever.searcher
        sharded_sweep = _recall_by_ef(lambda e: searcher.search(vectors, k, ef=e)[0],
                                      np.asarray(exact_labels), len(texts))
    result = {
        "index": str(index),
        "questions": len(texts),
        "k": k,
        "ef_search": ef,
        "query_ms": _percentiles(query_ms),
        "search_ms": _percentiles(search_ms),
        "served_by": "local Ray actors" if on_ray else "this process",
        # With Ray, the shards live in actor processes: this is the driver's RSS only.
        "peak_rss_bytes": peak_rss,
        "recall_vs_exact": _recall(np.asarray(hnsw_labels), np.asarray(exact_labels)),
        "recall_by_ef": sharded_sweep,
    }
    if unsharded_graph is not None:
        result["unsharded"] = _unsharded(index, unsharded_graph, vectors, np.asarray(exact_labels), k, ef, hnsw,
                                         threads)
    print(json.dumps(result), flush=True)


def _all_vectors(index: Path) -> np.ndarray:
    from fastdpr.index.load import is_sharded_index

    manifest = json.loads((index / "manifest.json").read_text())
    if not is_sharded_index(index):
        return np.load(index / "vectors.npy", mmap_mode="r")
    return np.concatenate([np.load(index / entry["dir"] / "vectors.npy", mmap_mode="r")
                           for entry in manifest["shards"]])


def _unsharded(index: Path, graph_file: Path, vectors: np.ndarray, exact_labels: np.ndarray, k: int, ef: int,
               hnsw: dict[str, int], threads: int | None) -> dict[str, object]:
    from fastdpr.index.ann import HnswSearcher, build_hnsw, save_hnsw

    data = _all_vectors(index)
    seconds = None
    if not graph_file.exists():
        started = time.perf_counter()
        graph = build_hnsw(data, m=int(hnsw["m"]), ef_construction=int(hnsw["ef_construction"]), threads=threads)
        seconds = round(time.perf_counter() - started, 2)
        save_hnsw(graph, graph_file)
        del graph
    searcher = HnswSearcher(graph_file, data.shape[1], data.shape[0], ef=ef, threads=threads)
    search_ms = []
    for row in vectors:
        started = time.perf_counter()
        searcher.search(row[None, :], k)
        search_ms.append((time.perf_counter() - started) * 1000)
    labels, _ = searcher.search(vectors, k)
    sweep = _recall_by_ef(lambda e: searcher.search(vectors, k, ef=e)[0], exact_labels, len(vectors))
    return {"graph_seconds": seconds, "graph_bytes_per_passage": round(graph_file.stat().st_size / data.shape[0], 1),
            "search_ms": _percentiles(search_ms), "recall_vs_exact": _recall(np.asarray(labels), exact_labels),
            "recall_by_ef": sweep,
            "note": "one HNSW graph over the same vectors, same M / ef_construction / ef"}


if __name__ == "__main__":
    sys.exit(main())
