"""``python -m benchmarks artifact-ab``: two exports of one model, side by side (what an export change buys).

    python -m benchmarks artifact-ab --base OLD_ARTIFACT --head NEW_ARTIFACT \
        --squad ../shared/data/squad/dev-v1.1.json --threads 1,2 --out DIR

For each thread count, in one process, interleaved (order alternated per round and per question):

* passages/s of each artifact's passage encoder on every runtime it has (ONNX Runtime int8; the OpenVINO
  graph when the artifact has one), length-sorted batches of 8 as ``fastdpr index`` encodes them, a seeded
  sample of SQuAD dev paragraphs as (title, text), median of ``--rounds`` rounds;
* one question per call (``encode([q])``, as ``Retriever.search`` runs it) at the artifact's question
  precision: wall and process CPU time p50 after a short idle;

and, from the manifests, each artifact's int8 error against PyTorch on its held-out probes. Both artifacts must
embed the same model (same spec and sources): the benchmark refuses two different models.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, median, percentiles, versions
from fastdpr.corpus.squad import load_squad
from fastdpr.model.artifact import Artifact
from fastdpr.model.openvino_encoder import openvino_available
from fastdpr.model.passage_backend import choose_passage_backend

BATCH_SIZE = 8
QUESTION_IDLE_S = 0.005


def _inputs(squad: Path, passages: int, questions: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    paragraphs, asked_all = load_squad(squad)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paragraphs), min(passages, len(paragraphs)), replace=False)
    pairs = [(paragraphs[i].title, paragraphs[i].text) for i in picked]
    asked = rng.choice(len(asked_all), min(questions, len(asked_all)), replace=False)
    return pairs, [asked_all[i].question for i in asked]


def _encoders(name: str, artifact: Artifact, threads: int) -> tuple[dict[str, Any], Any]:
    """``({"<name> onnxruntime": encoder, "<name> openvino": encoder}, question encoder)``."""
    passage: dict[str, Any] = {f"{name} onnxruntime": artifact.encoder("context", "int8", threads=threads)}
    # The OpenVINO graph is measured wherever the artifact has one and the runtime is installed (not only
    # where ``auto`` would pick it): the A/B is about the graphs.
    if artifact.typed.openvino is not None and openvino_available():
        backend = choose_passage_backend(artifact.typed.openvino, "int8", "openvino")
        passage[f"{name} openvino"] = artifact.passage_encoder(backend, "int8", threads=threads)
    return passage, artifact.encoder("question", threads=threads)


def _passages_per_second(encoders: dict[str, Any], pairs: list[tuple[str, str]], rounds: int) -> dict[str, float]:
    for encoder in encoders.values():  # warm-up: sessions allocate on their first calls
        encoder.encode_passages(pairs[:BATCH_SIZE * 2], BATCH_SIZE)
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    names = list(encoders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            encoders[name].encode_passages(pairs, BATCH_SIZE)
            rates[name].append(len(pairs) / (time.perf_counter() - start))
    return {name: round(median(values), 2) for name, values in rates.items()}


def _question_ms(encoders: dict[str, Any], questions: list[str]) -> dict[str, dict[str, Any]]:
    names = list(encoders)
    for question in questions[:20]:
        for encoder in encoders.values():
            encoder.encode([question])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i, question in enumerate(questions):
        for name in names if i % 2 == 0 else names[::-1]:
            time.sleep(QUESTION_IDLE_S)
            start, start_cpu = time.perf_counter(), time.process_time()
            encoders[name].encode([question])
            wall[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
    return {name: {"wall": percentiles(wall[name]), "cpu_p50": round(float(np.median(cpu[name])), 3)}
            for name in names}


def _int8_error(artifact: Artifact) -> dict[str, Any]:
    stages = artifact.manifest["validation"]["stages"].get("int8", {})
    return {side: {"min_cosine": round(v["min_cosine"], 6), "mean_cosine": round(v["mean_cosine"], 6)}
            for side, v in stages.items()}


def run_artifact_ab(base: Path, head: Path, squad: Path, threads: list[int], passages: int, questions: int,
                    rounds: int, seed: int, out: Path) -> dict[str, Any]:
    """Measure both artifacts at every thread count; write artifact-ab.json / .md into ``out``."""
    artifacts = {"base": Artifact.load(base), "head": Artifact.load(head)}
    if artifacts["base"].manifest["spec"] != artifacts["head"].manifest["spec"] or \
            artifacts["base"].sources != artifacts["head"].sources:
        raise click.ClickException("the two artifacts embed different models (spec or sources differ)")
    pairs, asked = _inputs(squad, passages, questions, seed)
    load_start = os.getloadavg()
    runs = {}
    for count in threads:
        log(f"[artifact-ab] {count} thread(s): {len(pairs)} passages x {rounds} rounds, {len(asked)} questions")
        passage_encoders: dict[str, Any] = {}
        question_encoders: dict[str, Any] = {}
        for name, artifact in artifacts.items():
            passage, question = _encoders(name, artifact, count)
            passage_encoders.update(passage)
            question_encoders[name] = question
        rates = _passages_per_second(passage_encoders, pairs, rounds)
        runs[str(count)] = {"passages_per_s": rates, "question_ms": _question_ms(question_encoders, asked)}
    report = {
        "benchmark": "artifact-ab",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m benchmarks artifact-ab --base {base} --head {head} --squad {squad} "
                   f"--threads {','.join(map(str, threads))} --passages {passages} --questions {questions} "
                   f"--rounds {rounds} --seed {seed} --out {out}",
        "machine": machine(), "versions": versions(),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "artifacts": {name: {"path": str(path), "identity": a.identity,
                             "created_utc": a.manifest.get("created_utc"), "graph": a.manifest.get("graph"),
                             "int8_vs_pytorch": _int8_error(a)}
                      for (name, a), path in zip(artifacts.items(), (base, head), strict=True)},
        "passages": len(pairs), "questions": len(asked), "batch_size": BATCH_SIZE, "rounds": rounds,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "artifact-ab.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "artifact-ab.md").write_text(_markdown(report), encoding="utf-8")
    log(f"[artifact-ab] wrote {out}")
    return report


def _markdown(report: dict[str, Any]) -> str:
    cls = report["machine"]["int8_class"]["int8_class"]
    lines = ["# Two exports of one model, side by side", "",
             f"- {report['created_utc']}, int8 class **{cls}**, {report['machine']['cores']} cores, load average "
             f"(1 min) {report['load_average']['start'][0]} / {report['load_average']['end'][0]} (start / end)",
             f"- command: `{report['command']}`",
             f"- {report['passages']} SQuAD dev paragraphs as (title, text), batches of {report['batch_size']}, "
             f"median of {report['rounds']} interleaved rounds; {report['questions']} questions, one per call", ""]
    for name, entry in report["artifacts"].items():
        errors = "; ".join(f"{side} min {e['min_cosine']} mean {e['mean_cosine']}"
                           for side, e in entry["int8_vs_pytorch"].items())
        lines.append(f"- {name}: `{entry['path']}`, graph {entry['graph']}, int8 cosine vs PyTorch "
                     f"(held-out probes): {errors}")
    lines += ["", "| threads | encoder | passages/s | head / base |", "|---:|---|---:|---:|"]
    for count, run in report["runs"].items():
        rates = run["passages_per_s"]
        for name, rate in rates.items():
            other = name.replace("head ", "base ") if name.startswith("head ") else None
            ratio = f"{rate / rates[other]:.2f}x" if other in rates else ""
            lines.append(f"| {count} | {name} | {rate} | {ratio} |")
    lines += ["", "| threads | question encoder | p50 ms | p95 ms | CPU p50 ms | base / head p50 |",
              "|---:|---|---:|---:|---:|---:|"]
    for count, run in report["runs"].items():
        q = run["question_ms"]
        for name, entry in q.items():
            ratio = f"{q['base']['wall']['p50'] / entry['wall']['p50']:.2f}x" if name == "head" else ""
            lines.append(f"| {count} | {name} | {entry['wall']['p50']} | {entry['wall']['p95']} | "
                         f"{entry['cpu_p50']} | {ratio} |")
    return "\n".join(lines) + "\n"


def _thread_counts(_: Any, __: Any, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated thread counts, e.g. 1,2") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{value!r}: thread counts are at least 1")
    return counts


@click.command("artifact-ab", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The artifact before the change.")
@click.option("--head", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The artifact after it (same model).")
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--threads", default="1,2", show_default=True, callback=_thread_counts)
@click.option("--passages", type=click.IntRange(16), default=128, show_default=True)
@click.option("--questions", type=click.IntRange(20), default=400, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def artifact_ab_command(base: Path, head: Path, squad: Path, threads: list[int], passages: int, questions: int,
                        rounds: int, seed: int, out: Path) -> None:
    """Passages/s and one-question latency of two exports of one model, interleaved in one process."""
    run_artifact_ab(base, head, squad, threads, passages, questions, rounds, seed, out)
