"""``python -m benchmarks latency``: wire the workload, the systems, the timing procedure and the report.

    python -m benchmarks latency (--question-encoder SRC --context-encoder SRC | --encoder SRC | --shape SHAPE)
        [--squad dev-v1.1.json] [--threads 2] [--passages 512] [--queries 300] [--rounds 3] --out DIR

Every system (see :mod:`benchmarks.latency.systems`) runs in the same process with the same thread count
and is measured by :func:`benchmarks.latency.timing.measure` (one procedure for all: same inputs, same
warm-up, interleaved, rotated order, one timed end-to-end call per question).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from benchmarks.common import export_source, log, machine, versions
from benchmarks.latency.profile import profile_passage_encoding
from benchmarks.latency.report import RANDOM_WEIGHTS_LINE, agreement, ratios, summarize, write_markdown, write_plot
from benchmarks.latency.systems import REGISTRY, SYSTEMS, SetupContext, System
from benchmarks.latency.systems.base import K
from benchmarks.latency.timing import Procedure, measure
from benchmarks.latency.workload import (
    WARMUP_PASSAGE_BATCHES,
    length_stats,
    squad_workload,
    synthetic_workload,
    warmup_passages,
    warmup_questions,
)
from benchmarks.shapes import SHAPES, Shape, build_shape
from fastdpr.corpus.reader import write_corpus
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.model.spec import SIDES

SETTLE_S = 0.02
LATENCY_PROCEDURE = ("one end-to-end call per question, timed around the call the same way for every system; "
                     "same questions in the same sequence for every system; system order rotated per question; "
                     "{settle:.0f} ms idle before every timed call")
THROUGHPUT_PROCEDURE = "every system encodes the same passages once per round; system order rotated per round; median"


def _command_line(params: dict[str, Any]) -> str:
    args = ["python", "-m", "benchmarks", "latency"]
    for key in ("question_encoder", "context_encoder", "encoder", "shape", "squad", "threads", "passages",
                "queries", "rounds", "batch_size", "seed", "quantize", "out"):
        value = params.get(key)
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    if params.get("systems") and tuple(params["systems"]) != SYSTEMS:
        args += ["--systems", ",".join(params["systems"])]
    if params.get("profile") is False:
        args.append("--no-profile")
    return shlex.join(args)


def run_latency(out: Path, *, question_encoder: str | None = None, context_encoder: str | None = None,
                encoder: str | None = None, shape: str | None = None, squad: Path | None = None, threads: int = 2,
                passages: int = 512, queries: int = 300, rounds: int = 3,
                batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE, seed: int = 0,
                quantize: str | None = None, systems: Sequence[str] = SYSTEMS, profile: bool = True,
                work: Path | None = None) -> dict[str, Any]:
    """Run the whole benchmark and write latency.json / .md / .png into ``out``; return the report."""
    omp_wait_policy = _passive_openmp()
    import torch

    from fastdpr_export.quantize import DEFAULT_RECIPE
    from fastdpr_export.sources import resolve_source

    params = {"question_encoder": question_encoder, "context_encoder": context_encoder, "encoder": encoder,
              "shape": shape, "squad": squad, "threads": threads, "passages": passages, "queries": queries,
              "rounds": rounds, "batch_size": batch_size, "seed": seed, "quantize": quantize, "systems": systems,
              "profile": profile,
              "out": out}
    chosen = [bool(question_encoder or context_encoder), bool(encoder), bool(shape)]
    if sum(chosen) != 1 or (chosen[0] and not (question_encoder and context_encoder)):
        raise click.UsageError("pass --question-encoder and --context-encoder, or --encoder, or --shape")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise click.UsageError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    recipe = quantize or DEFAULT_RECIPE
    started = time.perf_counter()
    load_start = os.getloadavg()
    # Pin every thread pool: torch, ORT (per session), hnswlib (per searcher), tokenizers (Rayon, read
    # when its pool first starts, i.e. at the first batch encode).
    os.environ["RAYON_RS_NUM_CPUS"] = str(threads)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    cleanup = work is None
    workdir = Path(tempfile.mkdtemp(prefix="fastdpr-latency-")) if work is None else work
    workdir.mkdir(parents=True, exist_ok=True)
    built: dict[str, System] = {}
    try:
        shape_info: Shape | None = SHAPES[shape] if shape else None
        if shape:
            log(f"[latency] building random-weight shape {shape}")
            dirs = build_shape(shape, workdir / "models", seed)
            question_encoder, context_encoder = str(dirs["question"]), str(dirs["context"])
        artifact_dir = workdir / "artifact"
        log(f"[latency] exporting {'encoder ' + str(encoder) if encoder else f'{question_encoder} / {context_encoder}'}"
            f" with {recipe}")
        export_source(artifact_dir, question_encoder, context_encoder, encoder, recipe)
        artifact = Artifact.load(artifact_dir)
        spec = artifact.spec
        sources = {side: artifact.manifest["sides"][side]["source"] for side in SIDES}
        (workdir / "sources").mkdir(exist_ok=True)
        resolved = {side: resolve_source(sources[side]["source"], side, workdir / "sources") for side in SIDES}

        workload = (squad_workload(squad, passages, queries, seed) if squad else
                    synthetic_workload(artifact.tokenizer_path("context"), passages, queries, seed))
        if not squad and not shape:
            log("[latency] no --squad: synthetic passages and questions")
        corpus = workdir / "passages.jsonl"
        write_corpus(corpus, workload.passages, "jsonl")
        pairs = [(p.title, p.text) for p in workload.passages]
        passage_tokens = [len(e.ids) for e in artifact.tokenizer("context").encode(pairs)]
        question_tokenizer = artifact.tokenizer("question")
        question_tokens = [len(e.ids) for e in question_tokenizer.encode(workload.questions)]
        warm_questions, warm_description = warmup_questions(
            workload.questions, workload.spare_questions, lambda q: len(question_tokenizer.encode([q])[0].ids))
        warm_passages = warmup_passages(workload.passages, passage_tokens, WARMUP_PASSAGE_BATCHES * batch_size)

        context = SetupContext(artifact=artifact, artifact_dir=artifact_dir, resolved=resolved, threads=threads,
                               batch_size=batch_size, workdir=workdir, corpus=corpus, log=log)
        errors: dict[str, str] = {}
        for name in systems:
            log(f"[latency] setting up {name}")
            try:
                built[name] = REGISTRY[name].build(context)
            except Exception as exc:  # a peer that fails to build is reported as failed, never faked
                if REGISTRY[name].kind != "peer":
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"[latency] {name} failed: {errors[name]}")

        procedure = Procedure(rounds=rounds, settle_s=SETTLE_S)
        measured = measure(built, workload.passages, warm_passages, workload.questions, warm_questions, procedure,
                           log=log)
        summary = summarize(measured, len(pairs))
        system_report: dict[str, dict[str, Any]] = {}
        for name in systems:
            system_report[name] = summary[name] if name in summary else {"description": REGISTRY[name].description,
                                                                         "kind": REGISTRY[name].kind,
                                                                         "error": errors.get(name, "not run")}
        system_notes = {name: system.settings() for name, system in built.items() if hasattr(system, "settings")}
        reference = "pytorch-fp32-sorted" if "pytorch-fp32-sorted" in measured.embeddings else next(
            iter(measured.embeddings))

        profile_report: dict[str, Any] | None = None
        if profile and "fastdpr-int8" in systems:
            log("[latency] profiling fastdpr-int8 passage encoding")
            try:
                profile_report = profile_passage_encoding(artifact, "int8", pairs, threads, batch_size, workdir)
            except Exception as exc:  # a profiler failure must not lose the measurements
                profile_report = {"error": f"{type(exc).__name__}: {exc}"}

        random_weights = shape_info is not None
        label = (f"random-weight DPR, shape {shape_info.name} ({shape_info.layers} layers x {shape_info.hidden} "
                 f"hidden, {shape_info.heads} heads, {shape_info.ffn} FFN)" if shape_info
                 else str(encoder) if encoder else f"{question_encoder} / {context_encoder}")
        report: dict[str, Any] = {
            "benchmark": "latency",
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": _command_line(params),
            "machine": machine(),
            "versions": {**versions(), **_extra_versions()},
            "threads": threads,
            "omp_wait_policy": omp_wait_policy,
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()],
                             "note": "1/5/15-minute load averages: other processes on the machine during the run"},
            "model": {
                "label": label,
                "random_weights": random_weights,
                "note": RANDOM_WEIGHTS_LINE if random_weights else "trained weights",
                "shape": shape_info.to_dict() if shape_info else None,
                "sources": {side: sources[side]["source"] for side in SIDES},
                "architecture": {k: resolved["context"].config.get(k) for k in
                                 ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
                "spec": spec.to_dict(),
                "quantization": recipe,
            },
            "workload": {
                "passages": {"count": len(pairs), "source": workload.description["source"],
                             "note": workload.description["passages_note"], "seed": seed,
                             "max_length": spec.passage_max_length, "tokens": length_stats(passage_tokens)},
                "questions": {"count": len(workload.questions), "source": workload.description["source"],
                              "note": workload.description["questions_note"], "seed": seed,
                              "max_length": spec.question_max_length, "tokens": length_stats(question_tokens)},
                "k": K, "batch_size": batch_size, "rounds": rounds,
                "warmup": {"passages": len(warm_passages), "questions": warm_description},
                "settle_ms": SETTLE_S * 1000,
            },
            "procedure": {"latency": LATENCY_PROCEDURE.format(settle=SETTLE_S * 1000),
                          "throughput": THROUGHPUT_PROCEDURE},
            "system_notes": system_notes,
            "systems": system_report,
            "ratios": ratios(system_report),
            "agreement_reference": reference,
            "agreement": agreement(measured.embeddings, reference),
            "profile": profile_report,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (out / "latency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_markdown(report, out / "latency.md")
        write_plot(report, out / "latency.png")
        log(f"[latency] wrote {out}/latency.json, latency.md, latency.png in {report['seconds']} s")
        return report
    finally:
        for system in built.values():
            system.close()
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)


def _passive_openmp() -> str:
    """Make PyTorch's OpenMP threads sleep instead of spin while they wait (``OMP_WAIT_POLICY=PASSIVE``),
    unless the caller chose a policy; return what is in force.

    Why: measured on this shared 2-core machine under load (other processes runnable), a single
    l2-h128 question took PyTorch 580 ms p50 with libgomp's default spinning 2 threads, 10 ms with
    PASSIVE, 2.4 ms with one thread: spinning threads that get preempted stall every parallel region.
    That is a broken baseline, not PyTorch's speed; a user on a busy box sets this. libgomp reads the
    variable once, when torch is first imported, so it must be set before that.
    """
    import sys

    if "torch" in sys.modules:
        return f"{os.environ.get('OMP_WAIT_POLICY', 'default')} (torch was imported before the benchmark could set it)"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"]


def _extra_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for package in ("optimum", "openvino", "nncf", "matplotlib"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _systems_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise click.BadParameter(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    return names


@click.command("latency", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--question-encoder", help="Question encoder source (hub id, directory, builtin:...).")
@click.option("--context-encoder", help="Context encoder source.")
@click.option("--encoder", help="One source serving both sides.")
@click.option("--shape", type=click.Choice(sorted(SHAPES)),
              help="A random-weight DPR pair of this shape (speed only; labelled RANDOM WEIGHTS).")
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SQuAD v1.1 JSON: real passages and questions (otherwise synthetic, for --shape).")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="Threads for every system (torch, ORT intra-op, hnswlib, tokenizers).")
@click.option("--passages", type=click.IntRange(1), default=512, show_default=True,
              help="Passages encoded per round (seeded sample).")
@click.option("--queries", type=click.IntRange(1), default=300, show_default=True,
              help="Questions for the latency measurement (seeded sample).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Interleaved throughput rounds (median reported).")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_PASSAGE_BATCH_SIZE, show_default=True,
              help="Passages per model call, for every system (default: fastdpr's indexing batch size).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quantize", "quantize", default=None, help="int8 recipe (default: fastdpr's default recipe).")
@click.option("--systems", default=",".join(SYSTEMS), show_default=True, callback=_systems_option,
              help="Comma-separated subset of systems.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile fastdpr-int8 passage encoding with ORT's profiler.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Keep exported models and indexes here (default: a temporary directory, removed).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results directory (latency.json, latency.md, latency.png).")
def latency_command(question_encoder: str | None, context_encoder: str | None, encoder: str | None,
                    shape: str | None, squad: Path | None, threads: int, passages: int, queries: int, rounds: int,
                    batch_size: int, seed: int, quantize: str | None, systems: tuple[str, ...], profile: bool,
                    work: Path | None, out: Path) -> None:
    """Passages/s and single-question latency of fastdpr against PyTorch, optimum and OpenVINO, interleaved in
    one run."""
    run_latency(out, question_encoder=question_encoder, context_encoder=context_encoder, encoder=encoder,
                shape=shape, squad=squad, threads=threads, passages=passages, queries=queries, rounds=rounds,
                batch_size=batch_size, seed=seed, quantize=quantize, systems=systems, profile=profile, work=work)


if __name__ == "__main__":
    latency_command()
