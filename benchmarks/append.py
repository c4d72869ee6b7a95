"""``python -m benchmarks append``: appending 1% to an index against building it again (issue #24).

Two measurements, reported side by side:

1. **End to end** with a real artifact on a SYNTHETIC corpus (:mod:`benchmarks.synthetic_corpus`) of
   ``--passages`` passages: a fresh build of all of them, against a build of the first ``100 - percent``%
   followed by ``fastdpr index --append`` of the rest (the Python API the CLI calls, in this process).
   Wall time of each, the encode and graph parts, whether exact search over both indexes returns the
   same ids and scores for ``--questions`` SQuAD dev questions (it must), and HNSW recall@100 (against
   exact search) of each.
2. **The graph alone** at a larger size, on random vectors with low intrinsic dimension (the graph does
   not care where vectors come from; no encoding, so it fits in minutes): a fresh hnswlib build of
   ``--graph-vectors`` vectors against loading a graph of the first 99% and extending it
   (:func:`fastdpr.index.ann.extend_hnsw`), with recall@100 of both; then 1% deleted (``mark_deleted``)
   against a fresh graph of the rest.

What an append costs beyond encoding its passages is copying the index (vectors, passages, graph) and
hashing what it wrote: linear in the index, per passage a constant this benchmark measures (``copy
seconds per indexed passage``). The report turns the numbers into the encoding cost per passage above
which appending 1% costs at most 2% of a full build.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shlex
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, median, versions
from benchmarks.synthetic_corpus import SYNTHETIC_NOTE, synthetic_passages
from fastdpr.common.integrity import write_json

DEFAULT_SQUAD = Path("/work/shared/data/squad/dev-v1.1.json")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _load() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def _recall(found: list[list[str]] | np.ndarray, truth: list[list[str]] | np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))


def end_to_end(artifact: Path, squad: Path, passages: int, percent: float, questions: int, workdir: Path,
               threads: int | None) -> dict[str, Any]:
    """Fresh build of everything vs build of the head + append of the tail (see the module docstring)."""
    from fastdpr.corpus.reader import write_corpus
    from fastdpr.corpus.squad import load_squad_questions
    from fastdpr.index.build import IndexOptions, build_index
    from fastdpr.index.update import update_index
    from fastdpr.search.retriever import Retriever

    rows = list(synthetic_passages(squad, passages, 0))
    tail = max(1, round(passages * percent / 100))
    for name, part in (("all", rows), ("head", rows[:-tail]), ("tail", rows[-tail:])):
        write_corpus(workdir / f"{name}.tsv", part, "dpr-tsv")
    options = IndexOptions(threads=threads, progress=False)
    for name in ("fresh", "head", "appended"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    log(f"fresh build of {passages} passages")
    load_before = _load()
    started = time.perf_counter()
    fresh = build_index(artifact, workdir / "all.tsv", workdir / "fresh", "dpr-tsv", options)
    fresh_seconds = time.perf_counter() - started
    log(f"build of the first {passages - tail}, then append {tail}")
    build_index(artifact, workdir / "head.tsv", workdir / "head", "dpr-tsv", options)
    shutil.copytree(workdir / "head", workdir / "appended")
    started = time.perf_counter()
    appended = update_index(workdir / "appended", append=workdir / "tail.tsv", fmt="dpr-tsv", options=options)
    append_seconds = time.perf_counter() - started
    load_after = _load()
    asked = [q.question for q in load_squad_questions(squad)[:questions]]
    hits: dict[str, dict[str, list[list[tuple[str, float]]]]] = {}
    for name in ("fresh", "appended"):
        hits[name] = {}
        for mode in ("exact", "hnsw"):
            with Retriever.load(workdir / name, exact=mode == "exact", threads=threads) as retriever:
                hits[name][mode] = [[(h.id, h.score) for h in row] for row in retriever.search_batch(asked, 100)]
    changes = appended["version"]["changes"]
    return {
        "passages": passages, "appended": tail, "questions": len(asked), "load_before_after": [load_before, load_after],
        "fresh_build": {"wall_seconds": round(fresh_seconds, 2), "encode_seconds": fresh["build"]["encode_seconds"],
                        "graph_seconds": fresh["build"]["graph_seconds"]},
        "append": {"wall_seconds": round(append_seconds, 2), **{f"{key}_seconds": value for key, value in
                                                                 changes["seconds"].items() if key != "total"}},
        "append_vs_fresh": round(append_seconds / fresh_seconds, 4),
        "exact_search_identical": hits["fresh"]["exact"] == hits["appended"]["exact"],
        "recall_at_100_vs_exact": {
            name: round(_recall([[i for i, _ in row] for row in hits[name]["hnsw"]],
                                [[i for i, _ in row] for row in hits[name]["exact"]]), 4)
            for name in ("fresh", "appended")},
    }


def graph_only(count: int, dim: int, percent: float, queries: int, threads: int | None,
               workdir: Path) -> dict[str, Any]:
    """hnswlib at a larger size on SYNTHETIC random vectors: fresh build vs load + extend (+ delete)."""
    from fastdpr.index.ann import ExactSearcher, build_hnsw, extend_hnsw, save_hnsw
    from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, dim))
    vectors = (rng.normal(size=(count, 16)) @ basis + 0.2 * rng.normal(size=(count, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = (rng.normal(size=(queries, 16)) @ basis).astype(np.float32)
    head = count - max(1, round(count * percent / 100))

    def recall(graph: Any, rows: np.ndarray, label_map: np.ndarray | None = None) -> float:
        graph.set_ef(DEFAULT_EF)
        labels, _ = graph.knn_query(asked, k=100)
        truth, _ = ExactSearcher(rows).search(asked, 100)
        return round(_recall(labels if label_map is None else label_map[labels], truth), 4)

    kw: dict[str, Any] = {"m": DEFAULT_M, "ef_construction": DEFAULT_EF_CONSTRUCTION, "threads": threads}
    log(f"graph: fresh build of {count} x {dim}")
    started = time.perf_counter()
    fresh = build_hnsw(vectors, **kw)
    fresh_seconds = time.perf_counter() - started
    fresh_recall = recall(fresh, vectors)
    del fresh
    saved = workdir / "graph-head.bin"
    save_hnsw(build_hnsw(vectors[:head], **kw), saved)
    log(f"graph: extend {head} by {count - head}")
    started = time.perf_counter()
    extended = extend_hnsw(saved, dim, head, delete=np.zeros(0, dtype=np.int64), vectors=vectors[head:],
                           first_label=head, threads=threads)
    save_hnsw(extended, workdir / "graph-extended.bin")
    extend_seconds = time.perf_counter() - started
    extended_recall = recall(extended, vectors)
    del extended
    gone = np.sort(rng.choice(count, count - head, replace=False))
    keep = np.setdiff1d(np.arange(count), gone)
    deleted = extend_hnsw(workdir / "graph-extended.bin", dim, count, delete=gone, vectors=vectors[:0],
                          first_label=count, threads=threads)
    label_map = np.full(count, -1, dtype=np.int64)
    label_map[keep] = np.arange(len(keep))
    rest = np.ascontiguousarray(vectors[keep])
    deleted_recall = recall(deleted, rest, label_map)
    del deleted
    rest_recall = recall(build_hnsw(rest, **kw), rest)
    return {"vectors": count, "dim": dim, "appended": count - head, "queries": queries,
            "fresh_build_seconds": round(fresh_seconds, 2), "load_extend_save_seconds": round(extend_seconds, 2),
            "extend_vs_fresh": round(extend_seconds / fresh_seconds, 4),
            "recall_at_100": {"fresh": fresh_recall, "extended": extended_recall,
                              "deleted_1pct_marked": deleted_recall, "fresh_without_deleted": rest_recall}}


# ---------------------------------------------------------------------------------------------------
# At scale: one build (the denominator), one append onto it


def _cpu_seconds() -> float:
    """CPU seconds of this process, every thread (less sensitive than wall time to other work on a shared
    machine; ONNX Runtime's and hnswlib's threads included)."""
    times = os.times()
    return times.user + times.system


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def head_build(artifact: Path, squad: Path, passages: int, percent: float, workdir: Path,
               threads: int | None) -> dict[str, Any]:
    """The denominator at scale: a fresh build of the first ``passages - tail`` passages (``workdir/head``).

    Recorded in ``workdir/head-build.json``: a rerun of the same command finds it and does not build again
    (a build of ~1M passages is done once on a shared machine).
    """
    from fastdpr.corpus.reader import write_corpus
    from fastdpr.index.build import IndexOptions, build_index

    record = workdir / "head-build.json"
    tail = max(1, round(passages * percent / 100))
    settings = {"passages": passages, "appended": tail, "artifact": str(artifact.resolve()), "threads": threads}
    if record.is_file() and (workdir / "head" / "manifest.json").is_file():
        done: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
        if done["settings"] == settings:
            log(f"reusing the build of {passages - tail} passages recorded in {record}")
            return done
    rows = synthetic_passages(squad, passages, 0)
    write_corpus(workdir / "head.tsv", islice(rows, passages - tail), "dpr-tsv")
    write_corpus(workdir / "tail.tsv", rows, "dpr-tsv")
    shutil.rmtree(workdir / "head", ignore_errors=True)
    log(f"fresh build of {passages - tail} passages (the denominator)")
    load_before, cpu_before = _load(), _cpu_seconds()
    started = time.perf_counter()
    manifest = build_index(artifact, workdir / "head.tsv", workdir / "head", "dpr-tsv",
                           IndexOptions(threads=threads, progress=False))
    wall = time.perf_counter() - started
    build = manifest["build"]
    result = {
        "settings": settings, "date_utc": _now(), "passages": passages - tail,
        "load_before_after": [load_before, _load()],
        "wall_seconds": round(wall, 2), "cpu_seconds": round(_cpu_seconds() - cpu_before, 2),
        # encode_seconds includes store_seconds (passages and vectors written as they are encoded);
        # other: the int8 check, the session, the question encoder's copy and the manifest.
        "split_seconds": {"encode_without_store": round(build["encode_seconds"] - build["store_seconds"], 2),
                          "store": build["store_seconds"], "graph": build["graph_seconds"],
                          "hash": build["hash_seconds"],
                          "other": round(wall - build["encode_seconds"] - build["graph_seconds"]
                                         - build["hash_seconds"], 2)},
        "passages_per_s": build["passages_per_s"], "peak_rss_gib": _peak_rss_gib(),
        "index_bytes": _disk_bytes(workdir / "head")}
    write_json(record, result)
    return result


def _one_append(workdir: Path, threads: int | None) -> dict[str, Any]:
    """Append ``workdir/tail.tsv`` to a hard-linked copy of ``workdir/head`` (an update never changes a file
    in place, so the head index stays as built): wall and CPU time, loads, the new manifest."""
    from fastdpr.index.build import IndexOptions
    from fastdpr.index.update import update_index

    shutil.rmtree(workdir / "appended", ignore_errors=True)
    shutil.copytree(workdir / "head", workdir / "appended", copy_function=os.link)
    log("append")
    load_before, cpu_before = _load(), _cpu_seconds()
    started = time.perf_counter()
    manifest = update_index(workdir / "appended", append=workdir / "tail.tsv", fmt="dpr-tsv",
                            options=IndexOptions(threads=threads, progress=False))
    wall = time.perf_counter() - started
    changes = manifest["version"]["changes"]
    # ru_maxrss is the process's peak so far: the first run's is the append's own (nothing else ran yet).
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(_cpu_seconds() - cpu_before, 2),
            "peak_rss_gib_so_far": _peak_rss_gib(),
            "load_before_after": [load_before, _load()], "split_seconds": changes["seconds"],
            "write_split_seconds": changes.get("write_seconds", {}), "manifest": manifest}


def append_onto_head(workdir: Path, squad: Path, questions: int, threads: int | None, runs: int) -> dict[str, Any]:
    """``runs`` appends of ``workdir/tail.tsv``, each onto a fresh hard-linked copy of ``workdir/head`` (an
    append is cheap, so it is repeated on a shared machine; the build is not): the run of median wall
    time is reported, every run listed; then HNSW recall@100 against exact search of the last run's
    appended index and of the head index, on SQuAD dev questions."""
    from fastdpr.corpus.squad import load_squad_questions
    from fastdpr.search.retriever import Retriever

    done = [_one_append(workdir, threads) for _ in range(runs)]
    chosen = sorted(done, key=lambda run: run["wall_seconds"])[(runs - 1) // 2]
    manifest = chosen.pop("manifest")
    wall: float = chosen["wall_seconds"]
    cpu: float = chosen["cpu_seconds"]
    load_before, load_after = chosen["load_before_after"]
    changes = manifest["version"]["changes"]
    graph = _graph_parts(workdir, threads)
    asked = [q.question for q in load_squad_questions(squad)[:questions]]
    recall = {}
    for name in ("head", "appended"):
        ids = {}
        for mode in ("exact", "hnsw"):
            with Retriever.load(workdir / name, exact=mode == "exact", threads=threads) as retriever:
                ids[mode] = [[h.id for h in row] for row in retriever.search_batch(asked, 100)]
        recall[name] = round(_recall(ids["hnsw"], ids["exact"]), 4)
    return {"appended": changes["appended"], "indexed_after": manifest["counts"]["indexed"],
            "runs": [{key: value for key, value in run.items() if key != "manifest"} for run in done],
            "load_before_after": [load_before, load_after], "wall_seconds": wall, "cpu_seconds": cpu,
            "split_seconds": {key: value for key, value in changes["seconds"].items() if key != "total"},
            "write_split_seconds": changes.get("write_seconds", {}),
            "int8_check": {key: value for key, value in changes.get("int8_check", {}).items()
                           if key != "verification"},
            "peak_rss_gib": done[0]["peak_rss_gib_so_far"], "graph_parts_seconds": graph,
            "questions": len(asked), "recall_at_100_vs_exact": recall}


def _graph_parts(workdir: Path, threads: int | None) -> dict[str, Any]:
    """The graph step of an append taken apart (hnswlib directly, outside the update): load the head's
    graph with room for the appended vectors, add them, save it."""
    import hnswlib

    from fastdpr.index.ann import usable_cores

    head = np.load(workdir / "head" / "vectors.npy", mmap_mode="r")
    new = np.load(workdir / "appended" / "vectors.npy", mmap_mode="r")[len(head):]
    load = _load()
    started = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=head.shape[1])
    graph.load_index(str(workdir / "head" / "hnsw.bin"), max_elements=len(head) + len(new))
    loaded = time.perf_counter()
    graph.add_items(np.ascontiguousarray(new), np.arange(len(head), len(head) + len(new)),
                    num_threads=threads or usable_cores())
    added = time.perf_counter()
    graph.save_index(str(workdir / "graph-parts.bin"))
    saved = time.perf_counter()
    (workdir / "graph-parts.bin").unlink()
    return {"load": round(loaded - started, 2), "add": round(added - loaded, 2), "save": round(saved - added, 2),
            "load_average": load}


def encode_cost(artifacts: dict[str, Path], squad: Path, passages: int, rounds: int,
                threads: int | None) -> dict[str, Any]:
    """Milliseconds per passage of each artifact's int8 context encoder through the build's encoder
    (:func:`fastdpr.index.build.local_backend`), on the same ``passages`` SYNTHETIC passages, rounds
    interleaved (A B A B ...), the median round kept."""
    from fastdpr.index.build import IndexOptions, local_backend
    from fastdpr.model.artifact import Artifact

    rows = list(synthetic_passages(squad, passages, 1))
    options = IndexOptions(threads=threads, progress=False)
    loaded = {name: Artifact.load(path) for name, path in artifacts.items()}
    encoders = {name: local_backend(artifact, "int8", options, artifact.passage_backend("int8")).encoder
                for name, artifact in loaded.items()}
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    for encoder in encoders.values():  # warm-up: the first calls allocate
        encoder.encode_chunks([rows[:16]], None)
    for _ in range(rounds):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode_chunks([rows], None)
            seconds[name].append(time.perf_counter() - started)
    return {"passages": passages, "rounds": rounds, "load": _load(),
            "ms_per_passage": {name: round(median(values) / passages * 1e3, 3) for name, values in seconds.items()},
            "dims": {name: Artifact.load(path).spec.dim for name, path in artifacts.items()}}


def scale_projection(build: dict[str, Any], append: dict[str, Any], cost: dict[str, Any],
                     measured: str) -> dict[str, Any]:
    """PROJECTION: the append / build ratio of another model from its measured encode cost per passage.

    The measured build and append are split into encoding and the rest. Another model encodes ``r`` times
    slower per passage (``cost``, same run, same passages): its build's encoding is ``r`` x this one's, its
    append's encoding too, and the append's non-encoding part (copies, graph, hashes) is scaled by the
    vector width (``dim / 128``: bytes copied and hashed, distances computed), while the build's is not:
    that errs on the side of a larger ratio.
    """
    n, tail = build["passages"], append["appended"]
    build_encode = build["split_seconds"]["encode_without_store"]
    build_rest = build["wall_seconds"] - build_encode
    append_encode = append["split_seconds"]["encode"]
    append_rest = append["wall_seconds"] - append_encode
    base_ms, base_dim = cost["ms_per_passage"][measured], cost["dims"][measured]
    models = {}
    for name, ms in cost["ms_per_passage"].items():
        r, width = ms / base_ms, cost["dims"][name] / base_dim
        full = build_encode * r + build_rest
        appended = append_encode * r + append_rest * max(width, 1.0)
        models[name] = {"encode_ratio": round(r, 2), "dim": cost["dims"][name],
                        "build_seconds": round(full, 1), "append_seconds": round(appended, 1),
                        "append_vs_build": round(appended / full, 4)}
    return {"passages": n, "appended": tail, "models": models, "label": "PROJECTION (not measured)"}


def render_scale_markdown(result: dict[str, Any]) -> str:
    """The tables of one ``--one-build`` result JSON."""
    build, append, cpu = result["build"], result["append"], result["machine"]["int8_class"]
    split, write = append["split_seconds"], append.get("write_split_seconds", {})
    cost, projected = result["encode_cost"], result["projection"]
    check, parts = append.get("int8_check", {}), append["graph_parts_seconds"]
    relied = (f"relied on the {check['relied_on']}'s record (same artifact, CPU, onnxruntime {check['onnxruntime']})"
              if check and not check.get("ran_here") else "ran here" if check else "none (fp32)")
    lines = [
        f"# Append {result['settings']['percent']}% at scale: {result['model']}",
        "",
        f"**{result['note']}.**",
        "",
        f"- dates: build {build['date_utc']}, append and report {result['date_utc']}; machine: "
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, int8 class `{cpu['int8_class']}`, shared "
        "with other work",
        f"- load averages (1/5/15 min): build {build['load_before_after'][0]} before, "
        f"{build['load_before_after'][1]} after; append {append['load_before_after'][0]} before, "
        f"{append['load_before_after'][1]} after; encode-cost rounds {cost['load']}",
        f"- versions: onnxruntime {result['versions']['onnxruntime']}, hnswlib {result['versions']['hnswlib']}, "
        f"numpy {result['versions']['numpy']}, python {result['machine']['python']}",
        f"- command: `{result['command']}` (a rerun finds the build recorded in the workdir and does not "
        "build again; `--stop-after-build` builds only)",
        "",
        f"## {build['passages']:,} passages built fresh, {append['appended']:,} appended "
        f"({append['indexed_after']:,} after)",
        "",
        "| | fresh build (the denominator) | append onto it |",
        "|---|---:|---:|",
        f"| wall time (s) | {build['wall_seconds']} | {append['wall_seconds']} |",
        f"| CPU time, all threads (s) | {build['cpu_seconds']} | {append['cpu_seconds']} |",
        f"| encoding (s) | {build['split_seconds']['encode_without_store']} | {split['encode']} |",
        f"| passage store and vectors written (s) | {build['split_seconds']['store']} | {write.get('rows', '')} |",
        f"| HNSW graph: built / loaded, extended, saved (s) | {build['split_seconds']['graph']} | "
        f"{write.get('graph', '')} |",
        f"| sha256 of every file (s) | {build['split_seconds']['hash']} | {write.get('hash', '')} |",
        f"| other: checks, int8 check, session, manifest, publish (s) | {build['split_seconds']['other']} | "
        f"{round(append['wall_seconds'] - split['encode'] - sum(write.values()), 2)} |",
        f"| peak RSS of the process (GiB; append: its first run) | {build['peak_rss_gib']} | "
        f"{append['peak_rss_gib']} |",
        f"| HNSW recall@100 vs exact ({append['questions']} SQuAD dev questions) | "
        f"{append['recall_at_100_vs_exact']['head']} | {append['recall_at_100_vs_exact']['appended']} |",
        "",
        f"Append / fresh build: **{result['append_vs_build']['wall']}** of the wall time "
        f"({result['append_vs_build']['cpu']} of the CPU time). The denominator is a fresh build of "
        f"{build['passages']:,} passages, not of the {append['indexed_after']:,} the appended index holds "
        "(a slightly smaller denominator: the ratio errs high). The int8 check: "
        f"{relied}. Append split: checks {split.get('checks')} s (reading the index's and the corpus's ids), "
        f"setup {split.get('setup')} s (session{', int8 check' if check.get('ran_here') else ''}), encoding "
        f"{split['encode']} s, writing the new version {split['write']} s.",
        "",
        f"The graph step taken apart (hnswlib alone, after the appends, load {parts['load_average'][0]}): "
        f"load {parts['load']} s, add {append['appended']:,} vectors {parts['add']} s, save {parts['save']} s. "
        "Every run (wall / CPU s, 1-min load before): "
        + "; ".join(f"{run['wall_seconds']} / {run['cpu_seconds']} ({run['load_before_after'][0][0]})"
                    for run in append["runs"]) + ".",
        "",
        "Exact search after an append equals a fresh build's (ids and scores): tested bit for bit "
        "(tests/test_append.py, tests/test_append_costs.py), not re-measured here (a second 1M build).",
        "",
        f"## Encode cost per passage, same run ({cost['passages']} SYNTHETIC passages, {cost['rounds']} "
        "interleaved rounds, median)",
        "",
        "| model | int8 ms / passage | dim |",
        "|---|---:|---:|",
        *[f"| {name} | {ms} | {cost['dims'][name]} |" for name, ms in cost["ms_per_passage"].items()],
        "",
        f"## {projected['label']}: the same append for the other models",
        "",
        "Encoding scaled by the measured encode-cost ratio; the append's non-encoding part scaled by the "
        "vector width (dim / 128), the build's not (both choices make the ratio larger).",
        "",
        "| model | encode cost x | build (s) | append (s) | append / build |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {m['encode_ratio']} | {m['build_seconds']} | {m['append_seconds']} | {m['append_vs_build']} |"
          for name, m in projected["models"].items()],
        "",
    ]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    """The tables of one result JSON."""
    e2e, graph, cpu = result["end_to_end"], result["graph"], result["machine"]["int8_class"]
    lines = [
        f"# Append {result['settings']['percent']}% vs a fresh build: {result['model']}",
        "",
        f"**{result['note']}.** The graph part uses SYNTHETIC random vectors.",
        "",
        f"- date: {result['date_utc']}; machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"int8 class `{cpu.get('int8_class', cpu)}`, shared with other work (load averages "
        f"{e2e['load_before_after'][0][0]} before, {e2e['load_before_after'][1][0]} after the builds)",
        f"- command: `{result['command']}`",
        "",
        f"## End to end: {e2e['passages']:,} passages, {e2e['appended']:,} appended",
        "",
        "| | fresh build | build of 99% + append 1% (the append) |",
        "|---|---:|---:|",
        f"| wall time (s) | {e2e['fresh_build']['wall_seconds']} | {e2e['append']['wall_seconds']} |",
        f"| encoding (s) | {e2e['fresh_build']['encode_seconds']} | {e2e['append']['encode_seconds']} |",
        f"| graph (s) | {e2e['fresh_build']['graph_seconds']} | |",
        f"| append: checks (index, corpus ids) + int8 check and session (s) | | "
        f"{e2e['append']['checks_seconds']} + {e2e['append']['setup_seconds']} |",
        f"| append: new version written (copies, graph extension, hashes) (s) | | "
        f"{e2e['append']['write_seconds']} |",
        f"| HNSW recall@100 vs exact ({e2e['questions']} SQuAD dev questions) | "
        f"{e2e['recall_at_100_vs_exact']['fresh']} | {e2e['recall_at_100_vs_exact']['appended']} |",
        "",
        f"Append / fresh build wall time: **{e2e['append_vs_fresh']}**. Exact search identical (ids and scores, "
        f"top 100): **{e2e['exact_search_identical']}**.",
        "",
        f"## Graph only: {graph['vectors']:,} random {graph['dim']}-d vectors, {graph['appended']:,} appended",
        "",
        "| | seconds | recall@100 |",
        "|---|---:|---:|",
        f"| fresh hnswlib build | {graph['fresh_build_seconds']} | {graph['recall_at_100']['fresh']} |",
        f"| load 99% graph + add 1% + save | {graph['load_extend_save_seconds']} | "
        f"{graph['recall_at_100']['extended']} |",
        f"| 1% marked deleted / fresh graph of the rest | | {graph['recall_at_100']['deleted_1pct_marked']} / "
        f"{graph['recall_at_100']['fresh_without_deleted']} |",
        "",
        f"Graph extension / fresh graph: **{graph['extend_vs_fresh']}**.",
        "",
        "## Projection",
        "",
        result["projection"]["text"],
        "",
    ]
    return "\n".join(lines)


def projection(e2e: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any]:
    """What the measurements say about appending 1% to a large index (see the module docstring)."""
    n = e2e["passages"]
    # What grows with the index: the new version's copies, graph extension and hashes, per indexed passage.
    overhead_per_passage = e2e["append"]["write_seconds"] / n
    fixed = e2e["append"]["checks_seconds"] + e2e["append"]["setup_seconds"]
    encode_per_passage = e2e["fresh_build"]["encode_seconds"] / n
    graph_fresh_per_vector = graph["fresh_build_seconds"] / graph["vectors"]
    extend_per_vector = graph["load_extend_save_seconds"] / graph["vectors"]
    # append(1%) <= 2% full  <=>  0.01 e + o <= 0.02 (e + g)  <=>  e >= (o - 0.02 g) / 0.01
    needed = max(0.0, (overhead_per_passage - 0.02 * graph_fresh_per_vector) / 0.01)
    text = (f"Per indexed passage, an append costs {overhead_per_passage * 1e3:.3f} ms beyond encoding its own "
            f"passages (copying vectors, passages and graph, extending the graph, hashing; measured at "
            f"{n:,} passages, dim of the artifact), and a fresh build's graph costs "
            f"{graph_fresh_per_vector * 1e3:.3f} ms per vector ({graph['vectors']:,} x {graph['dim']}-d; "
            f"load + extend + save {extend_per_vector * 1e3:.3f} ms). Both grow with the index roughly "
            "linearly (the graph as n log n), so appending 1% costs at most 2% of a full build whenever "
            f"encoding a passage costs at least {needed * 1e3:.1f} ms (plus a fixed {fixed:.1f} s here for "
            "reading the index's ids and the corpus, the int8 check and the session, which a build pays too). "
            "This artifact encoded at "
            f"{encode_per_passage * 1e3:.2f} ms per passage here. This is a projection from these sizes, not "
            "a measurement at 1M passages: copying and hashing are I/O-bound and grow with the vector width "
            "(768-d vectors are 6x the bytes of 128-d).")
    return {"overhead_seconds_per_indexed_passage": overhead_per_passage, "fixed_seconds": fixed,
            "encode_seconds_per_passage_this_artifact": encode_per_passage,
            "graph_fresh_seconds_per_vector": graph_fresh_per_vector,
            "encode_seconds_per_passage_needed_for_2pct": needed, "text": text}


@click.command("append")
@click.option("--artifact", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--label", required=True, help="Model name for the report.")
@click.option("--passages", type=click.IntRange(100, None), default=20_000, show_default=True)
@click.option("--percent", type=click.FloatRange(0.01, 50), default=1.0, show_default=True)
@click.option("--questions", type=click.IntRange(1, None), default=500, show_default=True)
@click.option("--one-build", is_flag=True,
              help="At scale: build the first 100-percent%% once (the denominator) and append the rest onto it; "
                   "no second build, so no exact-search comparison (tests carry that).")
@click.option("--stop-after-build", is_flag=True, help="With --one-build: build (or find the build) and stop.")
@click.option("--append-runs", type=click.IntRange(1, None), default=3, show_default=True,
              help="With --one-build: appends onto copies of the one build (the median run is reported).")
@click.option("--compare-artifact", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="With --one-build: another artifact whose encode cost per passage is measured in the same run "
                   "(interleaved with --artifact's) to project its append / build ratio.")
@click.option("--compare-label", default="other", show_default=True)
@click.option("--compare-passages", type=click.IntRange(16, None), default=300, show_default=True)
@click.option("--graph-vectors", type=click.IntRange(1000, None), default=100_000, show_default=True,
              help="Vectors of the graph-only part (not with --one-build).")
@click.option("--graph-dim", type=click.IntRange(2, 4096), default=128, show_default=True)
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_SQUAD,
              show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Threads (default: all cores).")
@click.option("--workdir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result JSON to write.")
def append_command(artifact: Path, label: str, passages: int, percent: float, questions: int, one_build: bool,
                   stop_after_build: bool, append_runs: int, compare_artifact: Path | None, compare_label: str,
                   compare_passages: int, graph_vectors: int, graph_dim: int, squad: Path, threads: int | None,
                   workdir: Path, out: Path) -> None:
    """Append 1% to an index vs build it again: time, exact-search identity, HNSW recall@100."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks append " + shlex.join(sys.argv[2:])
    if one_build:
        build = head_build(artifact, squad, passages, percent, workdir, threads)
        if stop_after_build:
            click.echo(json.dumps(build, indent=2))
            return
        appended = append_onto_head(workdir, squad, questions, threads, append_runs)
        artifacts = {label: artifact, **({} if compare_artifact is None else {compare_label: compare_artifact})}
        cost = encode_cost(artifacts, squad, compare_passages, 3, threads)
        result: dict[str, Any] = {
            "benchmark": "append-at-scale", "date_utc": _now(), "note": SYNTHETIC_NOTE, "model": label,
            "machine": machine(), "versions": versions(),
            "settings": {"passages": passages, "percent": percent, "questions": questions, "threads": threads,
                         "append_runs": append_runs},
            "command": command.replace(" --stop-after-build", ""), "build": build, "append": appended,
            "append_vs_build": {"wall": round(appended["wall_seconds"] / build["wall_seconds"], 4),
                                "cpu": round(appended["cpu_seconds"] / build["cpu_seconds"], 4)},
            "encode_cost": cost, "projection": scale_projection(build, appended, cost, label)}
        render = render_scale_markdown
    else:
        e2e = end_to_end(artifact, squad, passages, percent, questions, workdir, threads)
        graph = graph_only(graph_vectors, graph_dim, percent, min(questions, 1000), threads, workdir)
        result = {"benchmark": "append", "date_utc": _now(), "note": SYNTHETIC_NOTE, "model": label,
                  "machine": machine(), "versions": versions(),
                  "settings": {"passages": passages, "percent": percent, "questions": questions,
                               "graph_vectors": graph_vectors, "graph_dim": graph_dim, "threads": threads},
                  "command": command, "end_to_end": e2e, "graph": graph, "projection": projection(e2e, graph)}
        render = render_markdown
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render(result), encoding="utf-8")
    click.echo(render(result))


_AB_CHILD = """
import json, sys, time
from pathlib import Path
from fastdpr.index.build import IndexOptions
from fastdpr.index.update import update_index
import fastdpr
started = time.perf_counter()
manifest = update_index(Path(sys.argv[1]), append=Path(sys.argv[2]), fmt="dpr-tsv",
                        options=IndexOptions(threads=int(sys.argv[3]), progress=False))
changes = manifest["version"]["changes"]
print(json.dumps({"wall_seconds": round(time.perf_counter() - started, 2), "seconds": changes["seconds"],
                  "write_seconds": changes.get("write_seconds"), "fastdpr": fastdpr.__file__}))
"""


@click.command("append-ab")
@click.option("--workdir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A --one-build workdir (head/ and tail.tsv).")
@click.option("--before", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Checkout whose fastdpr is 'before' (this checkout is 'after').")
@click.option("--rounds", type=click.IntRange(1, None), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result JSON to write.")
def append_ab_command(workdir: Path, before: Path, rounds: int, threads: int, out: Path) -> None:
    """The same append with two versions of fastdpr, interleaved (before, after, before, after, ...), each in
    its own process onto a fresh hard-linked copy of the one build: what the append's changes saved."""
    import subprocess

    after = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, checkout in (("before", before), ("after", after)):
            target = workdir.resolve() / f"ab-{name}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(workdir / "head", target, copy_function=os.link)
            load = _load()
            # cwd too: ``python -c`` puts the working directory first on sys.path, before PYTHONPATH.
            done = subprocess.run([sys.executable, "-c", _AB_CHILD, str(target), str(workdir.resolve() / "tail.tsv"),
                                   str(threads)], env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout,
                                  capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if not Path(run["fastdpr"]).resolve().is_relative_to(checkout.resolve()):
                raise click.ClickException(f"{name} ran {run['fastdpr']}, not the fastdpr of {checkout}")
            runs[name].append({**run, "load_before": load})
            shutil.rmtree(target)
            log(f"{name}: {runs[name][-1]['wall_seconds']} s")
    medians = {name: round(median([run["wall_seconds"] for run in values]), 2) for name, values in runs.items()}
    result = {"benchmark": "append-ab", "date_utc": _now(), "machine": machine(), "versions": versions(),
              "command": "python -m benchmarks append-ab " + shlex.join(sys.argv[2:]),
              "before_commit": subprocess.run(["git", "-C", str(before), "rev-parse", "HEAD"], capture_output=True,
                                              text=True).stdout.strip(),
              "after_commit": subprocess.run(["git", "-C", str(after), "rev-parse", "HEAD"], capture_output=True,
                                             text=True).stdout.strip(),
              "runs": runs, "median_wall_seconds": medians,
              "after_over_before": round(medians["after"] / medians["before"], 3)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render_ab_markdown(result), encoding="utf-8")
    click.echo(render_ab_markdown(result))


def render_ab_markdown(result: dict[str, Any]) -> str:
    """The table of one ``append-ab`` result JSON."""
    cpu = result["machine"]["int8_class"]["int8_class"]
    lines = [
        "# The same append, before and after (interleaved)",
        "",
        f"- date: {result['date_utc']}; machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"int8 class `{cpu}`, shared with other work (1-min load before each run in the table)",
        f"- before: fastdpr at `{result['before_commit'][:12]}`; after: `{result['after_commit'][:12]}`",
        f"- command: `{result['command']}`",
        "",
        "| run | wall (s) | encoding (s) | new version written (s) | of which rows / graph / hash (s) | "
        "setup: session, int8 check (s) | load |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rounds = len(result["runs"]["before"])
    for number in range(rounds):
        for name in ("before", "after"):
            run = result["runs"][name][number]
            write = run.get("write_seconds") or {}
            parts = " / ".join(str(write[key]) for key in ("rows", "graph", "hash")) if write else "(not recorded)"
            lines.append(f"| {name} {number + 1} | {run['wall_seconds']} | {run['seconds']['encode']} | "
                         f"{run['seconds']['write']} | {parts} | {run['seconds']['setup']} | {run['load_before'][0]} |")
    medians = {name: round(value, 2) for name, value in result["median_wall_seconds"].items()}
    lines += ["", f"Median wall time: before {medians['before']} s, after {medians['after']} s (after / before "
              f"**{result['after_over_before']}**). Rows: passages and vectors written; setup: the session, and "
              "before, the int8 check on this CPU (after: relied on from the build's record).", ""]
    return "\n".join(lines)
