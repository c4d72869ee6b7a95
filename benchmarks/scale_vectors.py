"""``python -m benchmarks scale-vectors``: fp32 (hnswlib graph) against compressed vectors (issue #22),
side by side, on the vector side of an index at scale.

Encoding 1M passages with BERT-base on this machine would take ~8.5 hours (32.78 passages/s measured on a
quieter, faster CPU; see docs/scale.md), and the encoder does not change what is measured here: memory,
disk, build time and search speed of the vector index, which depend only on the vectors' count, width and
distribution. So the vectors are SYNTHETIC, 768-d, shaped like BERT-base CLS vectors (unnormalized: a
shared offset with a few large dimensions, a low-rank structure, noise, norms varying by 3x; see
:func:`synthetic_vectors`), and so are the questions (the same distribution, another seed). They say
nothing about answer recall (``python -m benchmarks vectors-recall`` measures that on SQuAD).

For each ``--kinds`` entry the index files are written by the functions ``fastdpr index`` calls
(:func:`fastdpr.index.ann.build_hnsw` for fp32, :func:`fastdpr.index.compressed.build_compressed` for
the others) beside a hard link of the shared ``vectors.npy``; then a fresh process per kind
(``probe``) opens the searcher ``fastdpr search`` opens and measures: cold start (process start to
the first answered question, page cache warm), search p50/p99 at k=100 one question at a time (search
alone: question encoding and the passage lookup cost the same for every kind), peak and final RSS split
into anonymous and file-backed (memory-mapped) pages, the file-backed part per file (the searched file,
``vectors.npy``), RSS after 1, 100 and 300 questions, and recall@100 against exact search.

``--reads mapped,pread`` probes the compressed kinds twice side by side (in alternating order over
``--rounds``): re-ranking read through the memory map of ``vectors.npy`` (``KIND@mapped``, as before
issue #22's RSS fix) and with positional reads (``KIND``, what ``fastdpr search`` does).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, median, versions
from benchmarks.memory import process_memory, resident_by_file
from fastdpr.common.integrity import library_versions

KINDS = ("fp32", "fp16", "int8", "pq")
#: How compressed search reads the re-ranked rows: through the memory map, or with pread (the default).
READS = ("mapped", "pread")
K = 100
#: Questions after which RSS is also recorded (besides after the last one).
SNAPSHOTS = (1, 100, 300)
_CHUNK = 50_000


def synthetic_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """``float32 [count, dim]`` vectors shaped like BERT-base CLS embeddings (SYNTHETIC): a shared offset
    with 8 large dimensions (BERT has a few), a 64-d latent structure, isotropic noise, norms scaled by
    a factor in [0.5, 1.5). The structure (basis, offset) is the same for every seed."""
    shape = np.random.default_rng(12345)
    basis = shape.standard_normal((64, dim)).astype(np.float32)
    offset = shape.standard_normal(dim).astype(np.float32) * 0.3
    offset[:8] *= 20
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((count, 64)).astype(np.float32)
    vectors = latent @ basis * 0.15 + offset + rng.standard_normal((count, dim)).astype(np.float32) * 0.2
    return (vectors * rng.uniform(0.5, 1.5, (count, 1))).astype(np.float32)


def write_vectors(path: Path, count: int, dim: int) -> None:
    """``vectors.npy`` of ``count`` synthetic vectors, written chunk by chunk (seed = chunk number)."""
    if path.is_file():
        return
    partial = path.with_suffix(".partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(count, dim))
    for number, start in enumerate(range(0, count, _CHUNK)):
        stop = min(start + _CHUNK, count)
        array[start:stop] = synthetic_vectors(stop - start, dim, seed=1000 + number)
    array.flush()
    del array
    partial.rename(path)


def ground_truth(workdir: Path, questions: np.ndarray) -> np.ndarray:
    """Exact top-``K`` labels of every question (:class:`~fastdpr.index.ann.ExactSearcher`), cached."""
    from fastdpr.index.ann import ExactSearcher

    path = workdir / "exact-top100.npy"
    if not path.is_file():
        vectors = np.load(workdir / "vectors.npy", mmap_mode="r")
        labels, _ = ExactSearcher(vectors).search(questions, K)
        np.save(path, labels)
    return np.load(path)


def build(workdir: Path, kind: str, threads: int) -> dict[str, Any]:
    """The index files of ``kind`` in ``workdir/kind`` (reused when already built); build seconds and bytes."""
    from fastdpr.index.vector_settings import VectorSettings

    directory = workdir / kind
    record = directory / "build.json"
    if record.is_file():
        return dict(json.loads(record.read_text()))
    directory.mkdir(exist_ok=True)
    if not (directory / "vectors.npy").exists():
        os.link(workdir / "vectors.npy", directory / "vectors.npy")
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    started = time.perf_counter()
    result: dict[str, Any] = {"kind": kind}
    if kind == "fp32":
        from fastdpr.index.ann import build_hnsw, save_hnsw
        from fastdpr.index.defaults import DEFAULT_EF_CONSTRUCTION, DEFAULT_M

        save_hnsw(build_hnsw(vectors, DEFAULT_M, DEFAULT_EF_CONSTRUCTION, threads), directory / "hnsw.bin")
        result["file"], result["settings"] = "hnsw.bin", {"m": DEFAULT_M, "ef_construction": DEFAULT_EF_CONSTRUCTION}
    else:
        from fastdpr.index.compressed import build_compressed

        files = build_compressed(vectors, directory / "vectors.faiss", VectorSettings(kind=kind), threads=threads)
        result["file"], result["settings"] = files.file, files.to_dict()
    result["build_seconds"] = round(time.perf_counter() - started, 1)
    result["bytes_per_passage"] = {"searched": (directory / result["file"]).stat().st_size / len(vectors),
                                   "vectors.npy": (directory / "vectors.npy").stat().st_size / len(vectors)}
    record.write_text(json.dumps(result, indent=1))
    return result


def _memory(directory: Path) -> dict[str, Any]:
    files = resident_by_file()
    by_file = {name: files.get(str((directory / name).resolve()), 0) for name in ("vectors.faiss", "vectors.npy",
                                                                                   "hnsw.bin")}
    return {**process_memory(), "file_backed_by_file": by_file}


def hits_file(nprobe: int | None, reads: str) -> str:
    """Where a probe leaves its hits (the name before ``--reads`` existed for the default reads)."""
    return f"hits-{nprobe}.npy" if reads == "pread" else f"hits-{nprobe}-{reads}.npy"


def probe(directory: Path, spawned: float, questions_path: Path, ef: int, nprobe: int | None,
          reads: str = "pread") -> dict[str, Any]:
    """In a fresh process: open the searcher of ``directory`` as ``fastdpr search`` does (``reads``
    mapped: re-rank through the memory map instead), answer every question one at a time (k=100), and
    report cold start, latencies, memory and the hits."""
    baseline = _memory(directory)
    record = json.loads((directory / "build.json").read_text())
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    questions = np.load(questions_path)
    searcher: Any
    if record["kind"] == "fp32":
        from fastdpr.index.ann import HnswSearcher

        searcher = HnswSearcher(directory / "hnsw.bin", vectors.shape[1], len(vectors), ef=ef, threads=1)
    else:
        from fastdpr.index.compressed import CompressedSearcher
        from fastdpr.index.vector_settings import CompressedFiles, VectorSettings

        settings = {key: record["settings"][key] for key in ("kind", "nlist", "nprobe", "pq_m", "rerank")}
        settings["nprobe"] = nprobe or settings["nprobe"]
        files = CompressedFiles(VectorSettings(**settings), record["file"], record["settings"]["factory"], {})
        searcher = CompressedSearcher(directory / record["file"], vectors, files, threads=1,
                                      positional_reads=reads == "pread")
    opened = _memory(directory)
    labels = [searcher.search(questions[:1], K)[0][0]]
    cold = time.time() - spawned
    snapshots = {"1": _memory(directory)}
    latencies, cpu = [], []
    for number, question in enumerate(questions[1:], start=2):
        started, started_cpu = time.perf_counter(), time.thread_time()
        found, _ = searcher.search(question[None], K)
        latencies.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        labels.append(found[0])
        if number in SNAPSHOTS:
            snapshots[str(number)] = _memory(directory)
    np.save(directory / hits_file(nprobe, reads), np.stack(labels))
    ms, cpu_ms = np.array(latencies) * 1000, np.array(cpu) * 1000
    # CPU time of the searching thread: what a question costs whatever else the shared machine runs.
    return {"cold_start_s": round(cold, 3), "search_ms": {"p50": round(float(np.percentile(ms, 50)), 3),
                                                          "p99": round(float(np.percentile(ms, 99)), 3)},
            "search_cpu_ms": {"p50": round(float(np.percentile(cpu_ms, 50)), 3),
                              "mean": round(float(cpu_ms.mean()), 3)},
            "reads": reads if record["kind"] != "fp32" else None,
            "memory": {"before_open": baseline, "after_open": opened, "after_questions": snapshots,
                       "after_queries": _memory(directory)}}


def serve(workdir: Path, kind: str, questions: Path, ef: int, nprobe: int | None,
          reads: str = "pread") -> dict[str, Any]:
    """Run :func:`probe` for ``kind`` in a fresh interpreter (``nprobe``: instead of the built one); its report."""
    command = [sys.executable, "-m", "benchmarks.scale_vectors", str(workdir / kind), str(time.time()),
               str(questions), str(ef), str(nprobe or 0), reads]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if done.returncode:
        raise click.ClickException(f"probe of {kind} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def recall(hits: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-100 found."""
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(hits, exact, strict=True)]))


def measured(built: dict[str, Any], served: dict[str, Any], passages: int, found: float) -> dict[str, Any]:
    """One kind's row of the report: build, serving, memory per passage and recall."""
    memory = served["memory"]
    last = memory["after_queries"]
    rss = {"peak": last["VmHWM"] / passages, "anonymous": last["RssAnon"] / passages,
           "file_backed": last["RssFile"] / passages,
           "peak_above_interpreter": (last["VmHWM"] - memory["before_open"]["VmRSS"]) / passages}
    if "file_backed_by_file" in last:
        rss["file_backed_by_file"] = {name: size / passages for name, size in last["file_backed_by_file"].items()}
        rss["total_after_questions"] = {**{count: snapshot["VmRSS"] / passages
                                           for count, snapshot in memory["after_questions"].items()},
                                        "last": last["VmRSS"] / passages}
    return {**built, **served, "recall_at_100_vs_exact": round(found, 4), "rss_bytes_per_passage": rss}


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One probe's row from its rounds: the first round's record (memory, hits), the median cold start and
    p50 / p99 over the rounds, and every round's figures."""
    first = dict(rounds[0])
    if len(rounds) > 1:
        first["cold_start_s"] = round(median([r["cold_start_s"] for r in rounds]), 3)
        first["search_ms"] = {q: round(median([r["search_ms"][q] for r in rounds]), 3) for q in ("p50", "p99")}
        if all("search_cpu_ms" in r for r in rounds):
            first["search_cpu_ms"] = {q: round(median([r["search_cpu_ms"][q] for r in rounds]), 3)
                                      for q in ("p50", "mean")}
        first["rounds"] = [{key: r[key] for key in ("cold_start_s", "search_ms", "search_cpu_ms") if key in r}
                           for r in rounds]
    return first


def _mapped_split(row: dict[str, Any]) -> str:
    by_file = row["rss_bytes_per_passage"]["file_backed_by_file"]
    return f"{by_file['vectors.faiss' if row['kind'] != 'fp32' else 'hnsw.bin']:,.0f} / {by_file['vectors.npy']:,.0f}"


def _rss_growth(row: dict[str, Any]) -> str:
    totals = row["rss_bytes_per_passage"]["total_after_questions"]
    return " / ".join(f"{totals[key]:,.0f}" for key in (*map(str, SNAPSHOTS), "last"))


def render_table(report: dict[str, Any]) -> str:
    """The report as the Markdown table docs/scale.md publishes (tests/test_published_figures.py checks it)."""
    kinds = report["kinds"]
    title = f"{report['passages']:,} SYNTHETIC {report['dim']}-d vectors, 1 search thread"
    rows = {
        "build seconds (graph or compressed index)": lambda r: f"{r['build_seconds']:,.1f}",
        "disk bytes per passage: searched file / vectors.npy": lambda r: (
            f"{r['bytes_per_passage']['searched']:,.0f} / {r['bytes_per_passage']['vectors.npy']:,.0f}"),
        "cold start, new process to first answer (s)": lambda r: f"{r['cold_start_s']:.2f}",
        "search p50 / p99 ms, k=100, one question at a time": lambda r: (
            f"{r['search_ms']['p50']:.2f} / {r['search_ms']['p99']:.2f}"),
        "recall@100 vs exact": lambda r: f"{r['recall_at_100_vs_exact']:.3f}",
        "RSS bytes per passage after the questions: anonymous / memory-mapped files": lambda r: (
            f"{r['rss_bytes_per_passage']['anonymous']:,.0f} / {r['rss_bytes_per_passage']['file_backed']:,.0f}"),
    }
    if all("file_backed_by_file" in r["rss_bytes_per_passage"] for r in kinds.values()):  # since the RSS fix
        counts = (*SNAPSHOTS, report["questions"])
        rows["of the memory-mapped files: searched file / vectors.npy"] = _mapped_split
        rows["search CPU ms p50, the searching thread's CPU time"] = lambda r: f"{r['search_cpu_ms']['p50']:.2f}"
        rows[f"RSS bytes per passage after {' / '.join(f'{n:,}' for n in counts)} questions"] = _rss_growth
    lines = [f"| {title} | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for name, cell in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(kinds[kind]) for kind in kinds) + " |")
    return "\n".join(lines)


@click.command("scale-vectors")
@click.option("--passages", type=click.IntRange(1000), required=True)
@click.option("--dim", type=click.IntRange(8), default=768, show_default=True)
@click.option("--kinds", default="fp32,int8,pq", show_default=True, help=f"Comma-separated, of {', '.join(KINDS)}.")
@click.option("--questions", "question_count", type=click.IntRange(2), default=1000, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True, help="Build threads.")
@click.option("--ef", type=click.IntRange(1), default=400, show_default=True, help="fp32 search ef (the default).")
@click.option("--nprobe", "nprobes", type=click.IntRange(1), multiple=True,
              help="Compressed kinds: also probe at this nprobe (repeatable; the built default is always probed).")
@click.option("--reads", default="pread", show_default=True,
              help="Compressed kinds: how re-ranking reads vectors.npy, comma-separated, of mapped, pread "
                   "(several: probed side by side; pread is the searcher's default, mapped is named KIND@mapped).")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Probes per kind and reads, in alternating order (times: the median of the rounds).")
@click.option("--workdir", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
def scale_vectors_command(passages: int, dim: int, kinds: str, question_count: int, threads: int, ef: int,
                          nprobes: tuple[int, ...], reads: str, rounds: int, workdir: Path, out: Path) -> None:
    """fp32 HNSW against compressed vectors at scale: memory, disk, build time, search speed (SYNTHETIC vectors)."""
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    log(f"writing {passages} synthetic {dim}-d vectors")
    write_vectors(workdir / "vectors.npy", passages, dim)
    questions_path = workdir / "questions.npy"
    np.save(questions_path, synthetic_vectors(question_count, dim, seed=7))
    exact = ground_truth(workdir, np.load(questions_path))
    read_modes = reads.split(",")
    if not read_modes or any(mode not in READS for mode in read_modes):
        raise click.BadParameter(f"must be a comma-separated list of {', '.join(READS)}", param_hint="--reads")
    results: dict[str, Any] = {}
    ratios: dict[str, list[dict[str, float]]] = {}
    for kind in kinds.split(","):
        if kind not in KINDS:
            raise click.BadParameter(f"unknown kind {kind!r}", param_hint="--kinds")
        log(f"{kind}: building")
        built = build(workdir, kind, threads)
        log(f"{kind}: built in {built['build_seconds']} s; serving probe")
        for nprobe in (None, *(nprobes if kind != "fp32" else ())):
            modes = read_modes if kind != "fp32" else ["pread"]  # fp32 reads its graph: one probe
            served: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for number in range(rounds):  # alternating order: neither reads always runs first
                for mode in modes if number % 2 == 0 else modes[::-1]:
                    served[mode].append(serve(workdir, kind, questions_path, ef, nprobe, mode))
            for mode in modes:
                name = kind + (f"@nprobe{nprobe}" if nprobe is not None else "") + ("@mapped" * (mode == "mapped"))
                found = recall(np.load(workdir / kind / hits_file(nprobe, mode)), exact)
                results[name] = measured(built, combine_rounds(served[mode]), passages, found)
                rss = {key: round(value) for key, value in results[name]["rss_bytes_per_passage"].items()
                       if not isinstance(value, dict)}
                log(f"{name}: {json.dumps(results[name]['search_ms'])} recall {found:.4f} RSS/passage {rss}")
            if len(modes) == 2:  # the cost of positional reads: p50 ratio of the two probes of each round
                ratios[kind + (f"@nprobe{nprobe}" if nprobe is not None else "")] = [
                    {"p50": round(pread["search_ms"]["p50"] / mapped["search_ms"]["p50"], 3),
                     "cpu_p50": round(pread["search_cpu_ms"]["p50"] / mapped["search_cpu_ms"]["p50"], 3)}
                    for pread, mapped in zip(served["pread"], served["mapped"], strict=True)]
    report = {"benchmark": "scale-vectors", "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": {**versions(), **library_versions(("faiss-cpu",))},
              "passages": passages, "dim": dim,
              "questions": question_count, "vectors": "SYNTHETIC (benchmarks/scale_vectors.py: synthetic_vectors)",
              "load_average_before_after": [load_before, os.getloadavg()], "kinds": results,
              **({"p50_ratio_pread_to_mapped_by_round": ratios} if ratios else {}),
              "command": "python -m benchmarks " + " ".join(sys.argv[1:])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(render_table(report) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":  # the probe child: DIRECTORY SPAWNED_AT QUESTIONS EF NPROBE (0: the built one) [READS]
    print(json.dumps(probe(Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]),
                           int(sys.argv[5]) or None, sys.argv[6] if len(sys.argv) > 6 else "pread")))
