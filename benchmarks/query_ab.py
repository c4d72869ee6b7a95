"""``python -m benchmarks query-ab``: one index, two source trees, ``Retriever.search`` interleaved per question.

    python -m benchmarks query-ab --index INDEX --base ../main --squad dev-v1.1.json [--threads 1] \
        [--queries 300] --out benchmarks/results/query-ab-<int8 class>/<name>

What a change to the query path (issue #21) is worth, measured the way the latency benchmark measures
systems: each tree (``--base``, and this checkout unless ``--head`` names another) answers in its own
process (:mod:`benchmarks.query_ab_worker`), both processes alive for the whole run, one question at a
time: warm-up questions first (2 per token length of the measured set, never measured), then every
measured question once per tree, the order alternating per question, 20 ms idle before every call. While
one tree answers, the other waits on its pipe, so the two never share the cores. Both trees must return
the same passages for every question (checked: a speed-up that changes results is not one).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, percentiles, versions
from benchmarks.latency.workload import squad_workload, warmup_questions

SETTLE_S = 0.02
PARTS = ("tokenize", "encode", "search", "fetch", "other")
WORKER = Path(__file__).with_name("query_ab_worker.py")


class Worker:
    """One tree's worker process: questions in, timed answers out."""

    def __init__(self, name: str, tree: Path, index: Path, threads: int, k: int) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "RAYON_RS_NUM_CPUS": str(threads),
               "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER.read_text(encoding="utf-8"), str(index), str(threads), str(k)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree.resolve())
        self.ready = self._read()
        self.tree = str(tree.resolve())

    def ask(self, question: str) -> dict[str, Any]:
        """One ``Retriever.search`` in the worker: its ms, parts and hit ids."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"question": question}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise click.ClickException(f"the {self.name} worker exited (code {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """Close its stdin and wait for it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def _summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"query_ms": percentiles([a["ms"] for a in answers]),
            "query_cpu_ms": percentiles([a["cpu_ms"] for a in answers]),
            "parts_p50_ms": {p: round(float(np.median([a["parts"][p] for a in answers])), 3) for p in PARTS}}


def run_query_ab(index: Path, base: Path, head: Path, squad: Path, threads: int, queries: int, k: int, seed: int,
                 out: Path) -> dict[str, Any]:
    """Measure both trees on ``index`` and write ``query-ab.json`` / ``.md`` into ``out``."""
    started = time.perf_counter()
    load_start = os.getloadavg()
    workload = squad_workload(squad, 1, queries, seed)
    workers = {"base": Worker("base", base, index, threads, k), "head": Worker("head", head, index, threads, k)}
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(index / "encoder" / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        warm, warm_description = warmup_questions(workload.questions, workload.spare_questions,
                                                  lambda q: len(tokenizer.encode(q).ids))
        names = list(workers)
        log(f"[query-ab] warm-up: {len(warm)} questions per tree, interleaved")
        for i, question in enumerate(warm):
            for name in names[i % 2:] + names[:i % 2]:
                time.sleep(SETTLE_S)
                workers[name].ask(question)
        answers: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        different = 0
        log(f"[query-ab] {len(workload.questions)} questions, one call each per tree, alternating")
        for i, question in enumerate(workload.questions):
            for name in names[i % 2:] + names[:i % 2]:
                time.sleep(SETTLE_S)
                answers[name].append(workers[name].ask(question))
            different += answers["base"][-1]["ids"] != answers["head"][-1]["ids"]
        summary = {name: {"tree": workers[name].tree, "fastdpr": workers[name].ready["fastdpr"],
                          **_summary(answers[name])} for name in names}
        paired = [b["ms"] - h["ms"] for b, h in zip(answers["base"], answers["head"], strict=True)]
        report = {
            "benchmark": "query-ab",
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "-m", "benchmarks", "query-ab", "--index", str(index), "--base", str(base),
                                   "--head", str(head), "--squad", str(squad), "--threads", str(threads),
                                   "--queries", str(queries), "--k", str(k), "--seed", str(seed), "--out", str(out)]),
            "machine": machine(), "versions": versions(), "threads": threads,
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()]},
            "index": _index_report(index), "k": k, "questions": len(workload.questions),
            "warmup": warm_description, "settle_ms": SETTLE_S * 1000,
            "procedure": "two worker processes (one per tree) alive together; one Retriever.search per question "
                         "per tree, order alternating per question, 20 ms idle before every call",
            "trees": summary,
            "head_vs_base_p50": round(summary["base"]["query_ms"]["p50"] / summary["head"]["query_ms"]["p50"], 3),
            "head_vs_base_cpu_p50": round(summary["base"]["query_cpu_ms"]["p50"]
                                          / summary["head"]["query_cpu_ms"]["p50"], 3),
            "median_paired_saving_ms": round(float(np.median(paired)), 3),
            "questions_with_different_hits": different,
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        for worker in workers.values():
            worker.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "query-ab.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "query-ab.md").write_text(_markdown(report), encoding="utf-8")
    log(f"[query-ab] head {report['head_vs_base_p50']}x base at p50; wrote {out}")
    return report


def _index_report(index: Path) -> dict[str, Any]:
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    return {"path": str(index), "passages": manifest["counts"]["indexed"], "precision": manifest["precision"],
            "dim": manifest["spec"]["dim"], "ef_search": manifest["hnsw"]["ef_search"],
            "artifact": manifest["artifact"].get("sources")}


def _markdown(report: dict[str, Any]) -> str:
    cls = report["machine"]["int8_class"]["int8_class"]
    load = report["load_average"]
    lines = [
        "# Query path A/B: one index, two source trees, interleaved", "",
        f"- date: {report['created_utc']}; int8 class **{cls}**, {report['machine']['cores']} cores, "
        f"{report['threads']} thread(s); load average (1 min) {load['start'][0]} at start / {load['end'][0]} at end",
        f"- index: {report['index']['passages']:,} passages, {report['index']['precision']}, "
        f"dim {report['index']['dim']}, ef {report['index']['ef_search']}; k={report['k']}; "
        f"{report['questions']} questions; warm-up {report['warmup']['questions']} questions",
        f"- {report['procedure']}", f"- command: `{report['command']}`", "",
        "| tree | query p50 ms | p95 | p99 | CPU p50 ms | " + " | ".join(PARTS) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(PARTS),
    ]
    for name, tree in report["trees"].items():
        q = tree["query_ms"]
        lines.append(f"| {name} (`{tree['tree']}`) | {q['p50']} | {q['p95']} | {q['p99']} | "
                     f"{tree['query_cpu_ms']['p50']} | "
                     + " | ".join(str(tree["parts_p50_ms"][p]) for p in PARTS) + " |")
    lines += ["", f"head vs base, query p50: **{report['head_vs_base_p50']}x** (CPU time p50: "
              f"{report['head_vs_base_cpu_p50']}x); median paired saving "
              f"{report['median_paired_saving_ms']} ms; questions whose hits differ: "
              f"{report['questions_with_different_hits']} of {report['questions']}.", ""]
    return "\n".join(lines)


@click.command("query-ab", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--index", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--base", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Source tree of the 'before' (e.g. a worktree of main).")
@click.option("--head", default=".", show_default=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Source tree of the 'after'.")
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SQuAD v1.1 JSON: the questions (seeded sample).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--queries", type=click.IntRange(1), default=300, show_default=True)
@click.option("--k", type=click.IntRange(1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def query_ab_command(index: Path, base: Path, head: Path, squad: Path, threads: int, queries: int, k: int, seed: int,
                     out: Path) -> None:
    """Retriever.search of two source trees on one index, interleaved question by question."""
    run_query_ab(index, base, head, squad, threads, queries, k, seed, out)
