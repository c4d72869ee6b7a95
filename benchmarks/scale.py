"""``python -m benchmarks scale``: a sharded index of a large SYNTHETIC corpus, end to end, measured.

One run generates a SYNTHETIC DPR TSV (:mod:`benchmarks.synthetic_corpus`), then for each system
(``local``: ``fastdpr index --shard-size N``, one process; ``ray``: the same with ``--ray``, a local
Ray cluster on this machine) builds the index with the real CLI in a child process and measures:

* build: wall time, encode passages/s, HNSW graph seconds (both from the shard manifests), peak
  memory of the whole process tree (PSS, so pages shared between Ray processes count once), load
  average before and after;
* disk: bytes per passage, by file kind;
* serving (:mod:`benchmarks.scale_probe`, a fresh process per index; the ``ray`` system's shards are
  served by actors of a new local Ray cluster): cold start (interpreter start to the first answered
  question), query p50/p99 at k=100 one question at a time (encode + search + fetch,
  and search alone), peak RSS, and recall@100 of HNSW against exact search on the same vectors.

Then, once, on the local index's vectors: an unsharded HNSW graph (same M and ef_construction), its
build time and its recall@100, so sharded and unsharded recall come from the same vectors; the bytes
per passage of the seen-id set a build keeps to drop duplicate ids; and whether every system wrote
the same vectors and ids (the Ray build must equal the local one).

Builds are recorded in ``WORKDIR/build-<system>.json``; a rerun with the same workdir reuses a finished
build (``--rebuild`` redoes it), so a long run can be continued.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, versions
from benchmarks.synthetic_corpus import SYNTHETIC_NOTE, write_synthetic_corpus

SYSTEMS = ("local", "ray")
DEFAULT_SQUAD = Path("/work/shared/data/squad/dev-v1.1.json")


class TreeMemory:
    """Samples the memory of a process and all its descendants (Ray's workers included) in a thread.

    PSS (proportional set size) splits shared pages between the processes that map them, so the sum
    over the tree counts Ray's shared object store and shared libraries once; RSS is the fallback where
    PSS cannot be read.
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_tree = 0
        self.peak_root = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    info = process.memory_full_info()
                    used = int(getattr(info, "pss", info.rss))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += used
                if process.pid == self.pid:
                    self.peak_root = max(self.peak_root, used)
            self.peak_tree = max(self.peak_tree, total)
            self.peak_processes = max(self.peak_processes, len(processes))
            self._stop.wait(self.interval)


def _fastdpr() -> list[str]:
    return [sys.executable, "-c", "from fastdpr.cli.main import main; main()"]


def run_build(system: str, artifact: Path, corpus: Path, out: Path, shard_size: int, threads: int | None,
              log_file: Path) -> dict[str, Any]:
    """Build the index of ``corpus`` with ``fastdpr index`` in a child process; return what was measured."""
    command = [*_fastdpr(), "index", str(artifact), str(corpus), "--out", str(out), "--shard-size", str(shard_size),
               "--force", "--json"]
    if threads:
        command += ["--threads", str(threads)]
    if system == "ray":
        command += ["--ray"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with (open(log_file, "wb") as errors, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as child,
          TreeMemory(child.pid) as memory):
        stdout, _ = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise click.ClickException(f"{system} build failed (exit {child.returncode}); see {log_file}")
    manifest = json.loads(stdout)
    shards = [json.loads((out / entry["dir"] / "manifest.json").read_text()) for entry in manifest["shards"]]
    count = int(manifest["counts"]["indexed"])
    encode_seconds = sum(float(s["build"]["encode_seconds"]) for s in shards)
    graph_seconds = sum(float(s["build"]["graph_seconds"]) for s in shards)
    return {
        "system": system,
        "command": " ".join(command[3:]),
        "passages": count,
        "shards": len(shards),
        "shard_size": shard_size,
        "wall_seconds": round(seconds, 2),
        "passages_per_s_end_to_end": round(count / seconds, 1),
        # Everything but the graphs (Ray's start, reading, encoding, writing vectors and the store): a
        # Ray build encodes a window ahead of the shard being written, so per-shard encode times (kept
        # below) undercount its encoding.
        "encode_seconds": round(float(manifest["build"]["seconds"]) - graph_seconds, 2),
        "encode_passages_per_s": round(count / max(float(manifest["build"]["seconds"]) - graph_seconds, 1e-9), 1),
        "shard_encode_seconds_sum": round(encode_seconds, 2),
        "hnsw_graph_seconds": round(graph_seconds, 2),
        "peak_memory_bytes_tree_pss": memory.peak_tree,
        "peak_memory_bytes_driver": memory.peak_root,
        "processes_peak": memory.peak_processes,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "complete": True,
        "manifest_build": manifest["build"],
        "disk": disk_usage(out, count),
        "content_sha256": content_digest(out, manifest),
        "finished_utc": _now(),
    }


def partial_build(system: str, index: Path, shard_size: int, log_file: Path) -> dict[str, Any] | None:
    """What an unfinished build measured, from the shards it finished (None: none finished).

    A build that cannot finish in the time there is (``--partial``) is reported at the size it reached,
    from its finished shards' manifests, and says so: nothing is extrapolated.
    """
    from fastdpr.index.build_sharded import SHARDS_DIR, staging_dir

    shards_dir = staging_dir(index) / SHARDS_DIR
    manifests = [json.loads((d / "manifest.json").read_text()) for d in sorted(shards_dir.glob("[0-9]*"))
                 if (d / "manifest.json").is_file()]
    if not manifests:
        return None
    count = sum(int(m["counts"]["indexed"]) for m in manifests)
    encode_seconds = sum(float(m["build"]["encode_seconds"]) for m in manifests)
    disk = disk_usage(shards_dir, count)
    disk["note"] = "finished shards only (no top-level encoder copy)"
    return {
        "system": system,
        "complete": False,
        "note": (f"UNFINISHED: stopped after {len(manifests)} finished shards ({count} passages); figures are "
                 "those of the finished shards, nothing extrapolated; no serving measurements"),
        "passages": count,
        "shards": len(manifests),
        "shard_size": shard_size,
        "encode_seconds": round(encode_seconds, 2),
        "encode_passages_per_s": round(count / max(encode_seconds, 1e-9), 1),
        "hnsw_graph_seconds": round(sum(float(m["build"]["graph_seconds"]) for m in manifests), 2),
        "disk": disk,
        "log": str(log_file),
        "recorded_utc": _now(),
    }


def disk_usage(index: Path, count: int) -> dict[str, Any]:
    """Bytes on disk of an index, by file kind, and per passage."""
    kinds: dict[str, int] = {}
    for path in index.rglob("*"):
        if path.is_file():
            kind = {"vectors.npy": "vectors", "hnsw.bin": "hnsw", "passages.sqlite": "passages"}.get(
                path.name, "encoder" if "encoder" in path.parts else "other")
            kinds[kind] = kinds.get(kind, 0) + path.stat().st_size
    total = sum(kinds.values())
    return {"total_bytes": total, "bytes_per_passage": round(total / count, 1),
            "by_kind_bytes_per_passage": {k: round(v / count, 1) for k, v in sorted(kinds.items())}}


def content_digest(index: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """sha256 of all vectors and of all ids in label order: equal digests mean equal indexes."""
    import sqlite3

    vectors, ids = hashlib.sha256(), hashlib.sha256()
    for entry in manifest["shards"]:
        shard = index / entry["dir"]
        array = np.load(shard / "vectors.npy", mmap_mode="r")
        for start in range(0, len(array), 65536):
            vectors.update(np.ascontiguousarray(array[start:start + 65536]).tobytes())
        with sqlite3.connect(f"file:{shard / 'passages.sqlite'}?mode=ro", uri=True) as conn:
            for (pid,) in conn.execute("SELECT id FROM passages ORDER BY label"):
                ids.update(pid.encode() + b"\n")
    return {"vectors": vectors.hexdigest(), "ids": ids.hexdigest()}


def seen_id_bytes(count: int) -> dict[str, Any]:
    """Bytes the duplicate-id set of a build holds per passage (ids ``"1"``..``count`` as the reader makes
    them: one str per id), measured with tracemalloc."""
    import tracemalloc

    tracemalloc.start()
    seen: set[str] = set()
    for i in range(1, count + 1):
        seen.add(str(i))
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del seen
    return {"passages": count, "bytes": used, "bytes_per_passage": round(used / count, 1)}


def run_probe(index: Path, squad: Path, questions: int, k: int, log_file: Path, unsharded_graph: Path | None = None,
              threads: int | None = None, on_ray: bool = False) -> dict[str, Any]:
    """Serving measurements in a fresh process (:mod:`benchmarks.scale_probe`)."""
    command = [sys.executable, "-m", "benchmarks.scale_probe", str(index), "--squad", str(squad),
               "--questions", str(questions), "-k", str(k)]
    if unsharded_graph is not None:
        command += ["--unsharded-graph", str(unsharded_graph)]
    if threads:
        command += ["--threads", str(threads)]
    if on_ray:
        command += ["--ray"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log_file, "wb") as errors, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors,
                                                          cwd=Path(__file__).resolve().parent.parent) as child:
        assert child.stdout is not None
        ready = child.stdout.readline()  # the probe prints one line once its first question is answered
        cold = time.perf_counter() - started
        rest, _ = child.communicate()
    if child.returncode != 0 or not ready:
        raise click.ClickException(f"probe of {index} failed (exit {child.returncode}); see {log_file}")
    result = json.loads(rest)
    result["cold_start_seconds"] = round(cold, 3)
    result["cold_start_note"] = ("new process to first answered question (interpreter, imports, manifest and "
                                 "hash checks, graph load, one search); page cache warm")
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    return result


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


@click.command("scale")
@click.option("--artifact", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Exported artifact whose context encoder builds the indexes.")
@click.option("--label", required=True, help="Model name for the report (e.g. 'l2-h128 (RANDOM WEIGHTS)').")
@click.option("--passages", type=click.IntRange(1, None), required=True, help="SYNTHETIC passages to generate.")
@click.option("--shard-size", type=click.IntRange(1, None), required=True)
@click.option("--systems", default="local,ray", show_default=True, help="Comma-separated: local, ray.")
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_SQUAD,
              show_default=True, help="SQuAD v1.1 file: the corpus's sentences and the questions.")
@click.option("--questions", type=click.IntRange(1, None), default=1000, show_default=True)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Threads per build/probe (default: all).")
@click.option("--unsharded/--no-unsharded", default=True, show_default=True,
              help="Also build one unsharded HNSW graph over the local index's vectors and measure its recall.")
@click.option("--workdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Scratch directory for the corpus and indexes (GBs at scale).")
@click.option("--rebuild", is_flag=True, help="Rebuild systems whose build is already recorded in --workdir.")
@click.option("--partial", is_flag=True,
              help="Build nothing: report the finished shards of the interrupted builds in --workdir (marked "
                   "UNFINISHED) and write the result.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Result JSON to write.")
def scale_command(artifact: Path, label: str, passages: int, shard_size: int, systems: str, squad: Path,
                  questions: int, k: int, threads: int | None, unsharded: bool, workdir: Path, rebuild: bool,
                  partial: bool, out: Path) -> None:
    """Build a sharded index of a SYNTHETIC corpus locally and on local Ray; measure build, disk and serving."""
    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    if not chosen or any(s not in SYSTEMS for s in chosen):
        raise click.BadParameter(f"systems must be among {', '.join(SYSTEMS)}", param_hint="--systems")
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / f"synthetic-{passages}.tsv"
    corpus_record = workdir / f"synthetic-{passages}.json"
    if corpus.exists() and corpus_record.exists():
        corpus_info = json.loads(corpus_record.read_text())
    else:
        log(f"generating {passages} SYNTHETIC passages into {corpus}")
        started = time.perf_counter()
        corpus_info = write_synthetic_corpus(squad, corpus, passages)
        corpus_info["seconds"] = round(time.perf_counter() - started, 1)
        _write(corpus_record, corpus_info)
    result: dict[str, Any] = {
        "benchmark": "scale",
        "date_utc": _now(),
        "synthetic_corpus": corpus_info,
        "note": SYNTHETIC_NOTE,
        "model": label,
        "artifact": {"path": str(artifact), "manifest_quantization": json.loads(
            (artifact / "manifest.json").read_text())["quantization"]["recipe"]},
        "machine": machine(),
        "versions": versions(),
        "settings": {"passages": passages, "shard_size": shard_size, "questions": questions, "k": k,
                     "threads": threads, "systems": chosen},
        "command": "python -m benchmarks scale " + " ".join(sys.argv[2:]),
        "systems": {},
    }
    for system in chosen:
        record = workdir / f"build-{system}.json"
        index = workdir / f"index-{system}"
        if record.exists() and index.exists() and not rebuild:
            build = json.loads(record.read_text())
            if "shard_encode_seconds_sum" not in build:  # recorded before encode time meant "all but graphs"
                build["shard_encode_seconds_sum"] = build["encode_seconds"]
                build["encode_seconds"] = round(build["manifest_build"]["seconds"] - build["hnsw_graph_seconds"], 2)
                build["encode_passages_per_s"] = round(build["passages"] / build["encode_seconds"], 1)
            log(f"{system}: reusing the build recorded in {record}")
        elif partial:
            unfinished = partial_build(system, index, shard_size, workdir / f"build-{system}.log")
            if unfinished is None:
                log(f"{system}: no finished shard to report")
                continue
            result["systems"][system] = {"build": unfinished}
            log(f"{system}: {unfinished['note']}")
            continue
        else:
            log(f"{system}: building {passages} passages, shards of {shard_size} (log: {workdir}/build-{system}.log)")
            build = run_build(system, artifact, corpus, index, shard_size, threads, workdir / f"build-{system}.log")
            _write(record, build)
        log(f"{system}: {build['encode_passages_per_s']} passages/s encode, graphs {build['hnsw_graph_seconds']} s, "
            f"peak {build['peak_memory_bytes_tree_pss'] / 2**30:.2f} GiB")
        result["systems"][system] = {"build": build}
        _write(out, result)
    finished = [system for system in chosen if result["systems"].get(system, {}).get("build", {}).get("complete", True)
                and system in result["systems"]]
    for system in finished:
        index = workdir / f"index-{system}"
        graph = workdir / "unsharded-hnsw.bin" if (unsharded and system == finished[0]) else None
        if graph is not None:
            graph.unlink(missing_ok=True)  # built (and timed) by every run, never reused
        log(f"{system}: serving probe ({questions} questions, k={k})")
        probe = run_probe(index, squad, questions, k, workdir / f"probe-{system}.log", graph, threads,
                          on_ray=system == "ray")
        result["systems"][system]["serve"] = probe
        _write(out, result)
    digests = {s: result["systems"][s]["build"]["content_sha256"] for s in finished}
    result["same_index_across_systems"] = len({json.dumps(d, sort_keys=True) for d in digests.values()}) == 1
    result["seen_id_set"] = seen_id_bytes(passages)
    result["finished_utc"] = _now()
    _write(out, result)
    out.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    log(f"wrote {out} and {out.with_suffix('.md')}")


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def render_markdown(result: dict[str, Any]) -> str:
    """A readable table of one result JSON."""
    settings, corpus = result["settings"], result["synthetic_corpus"]
    cpu = result["machine"]["int8_class"]
    lines = [
        f"# Scale: {result['model']}, {settings['passages']:,} SYNTHETIC passages",
        "",
        f"**{result['note']}.**",
        "",
        f"- date: {result['date_utc']}; machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"int8 class `{cpu.get('int8_class', cpu)}`, shared with other work (load averages below)",
        f"- corpus: {corpus['passages']:,} passages, mean {corpus['mean_words']} words, {corpus['bytes']:,} bytes "
        f"(seed {corpus['seed']}, sha256 `{corpus['sha256'][:16]}...`)",
        f"- shards of {settings['shard_size']:,}; {settings['questions']} SQuAD dev questions, k={settings['k']}",
        f"- command: `{result['command']}`",
        "",
        "| | " + " | ".join(result["systems"]) + " |",
        "|---|" + "---:|" * len(result["systems"]),
    ]
    rows: list[tuple[str, Any]] = [
        ("build wall time (s)", lambda s: s["build"]["wall_seconds"]),
        ("encode passages/s", lambda s: s["build"]["encode_passages_per_s"]),
        ("HNSW graphs (s, all shards)", lambda s: s["build"]["hnsw_graph_seconds"]),
        ("build peak memory, process tree PSS (GiB)", lambda s: _gib(s["build"]["peak_memory_bytes_tree_pss"])),
        ("build peak memory, driver (GiB)", lambda s: _gib(s["build"]["peak_memory_bytes_driver"])),
        ("load average during build (1 min, before / after)",
         lambda s: f"{s['build']['loadavg_before'][0]} / {s['build']['loadavg_after'][0]}"),
        ("disk bytes / passage (total)", lambda s: s["build"]["disk"]["bytes_per_passage"]),
        ("disk: vectors / hnsw / passages", lambda s: " / ".join(
            str(s["build"]["disk"]["by_kind_bytes_per_passage"].get(k, 0)) for k in ("vectors", "hnsw", "passages"))),
        ("cold start (s)", lambda s: s.get("serve", {}).get("cold_start_seconds", "-")),
        (f"query p50 / p99 ms, k={settings['k']} (encode+search+fetch)",
         lambda s: _pair(s.get("serve", {}).get("query_ms"))),
        ("search only p50 / p99 ms", lambda s: _pair(s.get("serve", {}).get("search_ms"))),
        ("serving peak RSS (GiB)", lambda s: _gib(s["serve"]["peak_rss_bytes"]) if "serve" in s else "-"),
        (f"recall@{settings['k']} sharded HNSW vs exact",
         lambda s: s.get("serve", {}).get("recall_vs_exact", "-")),
    ]
    for name, get in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(get, s) for s in result["systems"].values()) + " |")
    lines.append("")
    for system, data in result["systems"].items():
        if not data["build"].get("complete", True):
            lines.append(f"**{system}: {data['build']['note']}.**")
    for system, data in result["systems"].items():
        graph = data.get("serve", {}).get("unsharded")
        if graph:
            lines.append(f"Unsharded HNSW over the same vectors (from the {system} index): graph built in "
                         f"{graph['graph_seconds']} s, recall@{settings['k']} vs exact {graph['recall_vs_exact']}, "
                         f"search p50 / p99 {_pair(graph['search_ms'])} ms.")
    sweeps = [(f"{system}, sharded", data["serve"]["recall_by_ef"]) for system, data in result["systems"].items()
              if "recall_by_ef" in data.get("serve", {})]
    sweeps += [(f"{system}, one unsharded graph", data["serve"]["unsharded"]["recall_by_ef"])
               for system, data in result["systems"].items()
               if "recall_by_ef" in (data.get("serve", {}).get("unsharded") or {})]
    if sweeps:
        efs = list(sweeps[0][1])
        lines += ["", f"Recall@{settings['k']} vs exact at other search-time ef (ms per question, all questions "
                  "searched at once):", "",
                  "| index | " + " | ".join(f"ef={ef}" for ef in efs) + " |", "|---|" + "---:|" * len(efs)]
        lines += [f"| {name} | " + " | ".join(f"{sweep[ef]['recall_vs_exact']} ({sweep[ef]['ms_per_question']} ms)"
                                              for ef in efs) + " |" for name, sweep in sweeps]
        lines.append("")
    if "same_index_across_systems" in result:
        lines.append(f"Same vectors and ids in every system's index: {result['same_index_across_systems']}.")
    if "seen_id_set" in result:
        seen = result["seen_id_set"]
        lines.append(f"Seen-id set of a build: {seen['bytes_per_passage']} bytes/passage "
                     f"({seen['passages']:,} ids, tracemalloc).")
    return "\n".join(lines) + "\n"


def _cell(get: Any, system: dict[str, Any]) -> str:
    try:
        return str(get(system))
    except (KeyError, TypeError):  # an unfinished build has no such figure
        return "-"


def _pair(values: dict[str, float] | None) -> str:
    return "-" if not values else f"{values['p50']} / {values['p99']}"
