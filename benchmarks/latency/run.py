"""``python -m benchmarks latency``: wire the workload, the systems, the timing procedure and the report.

    python -m benchmarks latency (--question-encoder SRC --context-encoder SRC | --encoder SRC | --shape SHAPE)
        [--squad dev-v1.1.json] [--threads 2] [--passages 512] [--queries 300] [--rounds 3] --out DIR

Every system (see :mod:`benchmarks.latency.systems`) runs in the same process with the same thread count
and is measured by :func:`benchmarks.latency.timing.measure` (one procedure for all: same inputs, same
warm-up, interleaved, rotated order, one timed end-to-end call per question).

:func:`run_latency` takes the request as one :class:`LatencyConfig` and runs one small function per
phase: export the models, prepare the inputs, build the systems, measure, profile, report.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from benchmarks.common import export_source, log, machine, versions
from benchmarks.latency.agreement import agreement
from benchmarks.latency.background import Background, make_background
from benchmarks.latency.profile import profile_passage_encoding
from benchmarks.latency.report import RANDOM_WEIGHTS_LINE, ratios, summarize, write_markdown, write_plot
from benchmarks.latency.systems import DEFAULT_SYSTEMS, REGISTRY, SYSTEMS, SetupContext, System
from benchmarks.latency.systems.base import K
from benchmarks.latency.timing import Measurements, Procedure, measure
from benchmarks.latency.workload import (
    WARMUP_PASSAGE_BATCHES,
    Workload,
    length_stats,
    squad_workload,
    synthetic_workload,
    warmup_passages,
    warmup_questions,
)
from benchmarks.shapes import SHAPES, Shape, build_shape
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.model.spec import SIDES, EncoderSpec, Side

SETTLE_S = 0.02
LATENCY_PROCEDURE = ("one end-to-end call per question, timed around the call the same way for every system; "
                     "same questions in the same sequence for every system; system order rotated per question; "
                     "{settle:.0f} ms idle before every timed call")
THROUGHPUT_PROCEDURE = "every system encodes the same passages once per round; system order rotated per round; median"


@dataclass(frozen=True)
class LatencyConfig:
    """What ``python -m benchmarks latency`` was asked: the model (a pair, one shared encoder, or a
    random-weight ``shape``), the workload, the systems, and where results and work files go."""

    out: Path
    question_encoder: str | None = None
    context_encoder: str | None = None
    encoder: str | None = None
    shape: str | None = None
    #: Weight init std of a ``shape`` (None: BERT's 0.02, whose embeddings all point nearly the same way).
    initializer_range: float | None = None
    squad: Path | None = None
    threads: int = 2
    passages: int = 512
    queries: int = 300
    rounds: int = 3
    batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE
    seed: int = 0
    quantize: str | None = None  # None: fastdpr's default recipe
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    profile: bool = True
    work: Path | None = None  # None: a temporary directory, removed at the end
    #: An artifact this benchmark exported before (``--work DIR/artifact``, same model and recipe): reused
    #: instead of exported again. None: export.
    artifact: Path | None = None
    #: SYNTHETIC background passages every system searches beside the measured ones (0: none; needs --squad).
    background: int = 0

    def check(self) -> None:
        """Raise :class:`click.UsageError` for a request that names no model, two kinds, or unknown systems."""
        pair = bool(self.question_encoder or self.context_encoder)
        chosen = [pair, bool(self.encoder), bool(self.shape)]
        if sum(chosen) != 1 or (pair and not (self.question_encoder and self.context_encoder)):
            raise click.UsageError("pass --question-encoder and --context-encoder, or --encoder, or --shape")
        if self.initializer_range is not None and not self.shape:
            raise click.UsageError("--initializer-range applies to --shape only")
        if self.background and not self.squad:
            raise click.UsageError("--background needs --squad (its text is recombined SQuAD sentences)")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or not self.systems:
            raise click.UsageError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")

    def recipe(self) -> str:
        """The int8 recipe the artifact is exported with."""
        from fastdpr_export.quantize import DEFAULT_RECIPE

        return self.quantize or DEFAULT_RECIPE

    def command_line(self) -> str:
        """The command that repeats this run (recorded in latency.json; ``--work`` only keeps files)."""
        args = ["python", "-m", "benchmarks", "latency"]
        for key in ("question_encoder", "context_encoder", "encoder", "shape", "initializer_range", "squad", "threads",
                    "passages",
                    "queries", "rounds", "batch_size", "seed", "quantize", "background", "out", "artifact"):
            value = getattr(self, key)
            if value is not None and not (key == "background" and not value):
                args += [f"--{key.replace('_', '-')}", str(value)]
        if self.systems and tuple(self.systems) != DEFAULT_SYSTEMS:
            args += ["--systems", ",".join(self.systems)]
        if not self.profile:
            args.append("--no-profile")
        return shlex.join(args)


@dataclass(frozen=True)
class Models:
    """The exported artifact every fastdpr system runs, and the sources every peer loads."""

    artifact: Artifact
    artifact_dir: Path
    sources: dict[Side, str]  # as the artifact's manifest records them
    resolved: dict[Side, Any]  # fastdpr_export.sources.ResolvedSource per side
    shape: Shape | None  # set for a random-weight shape
    label: str


@dataclass(frozen=True)
class Inputs:
    """What every system encodes and asks, tokenized once for the report's length statistics."""

    workload: Workload
    corpus: Path  # the passages as JSONL (what fastdpr indexes)
    pairs: list[tuple[str, str]]
    passage_tokens: list[int]
    question_tokens: list[int]
    warm_passages: list[Passage]
    warm_questions: list[str]
    warm_description: dict[str, Any]
    background: Background | None


def run_latency(config: LatencyConfig) -> dict[str, Any]:
    """Run the whole benchmark and write latency.json / .md / .png into ``config.out``; return the report."""
    config.check()
    omp_wait_policy = _passive_openmp()
    _pin_threads(config.threads)
    started = time.perf_counter()
    load_start = os.getloadavg()
    config.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fastdpr-latency-")) if config.work is None else config.work
    workdir.mkdir(parents=True, exist_ok=True)
    built: dict[str, System] = {}
    try:
        models = _export_models(config, workdir)
        inputs = _prepare_inputs(config, models.artifact, workdir)
        context = SetupContext(artifact=models.artifact, artifact_dir=models.artifact_dir, resolved=models.resolved,
                               threads=config.threads, batch_size=config.batch_size, workdir=workdir,
                               corpus=inputs.corpus, log=log, background=inputs.background)
        errors = _build_systems(config.systems, context, built)
        background = inputs.background
        measured = measure(built, inputs.workload.passages, inputs.warm_passages, inputs.workload.questions,
                           inputs.warm_questions, Procedure(rounds=config.rounds, settle_s=SETTLE_S), log=log,
                           background=None if background is None else (background.passages, background.vectors))
        profile_report = _profile(config, models.artifact, inputs.pairs, workdir)
        report = {
            "benchmark": "latency",
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": config.command_line(),
            "machine": machine(),
            "versions": {**versions(), **_extra_versions()},
            "threads": config.threads,
            "omp_wait_policy": omp_wait_policy,
            "blas_threads": _blas_threads(),
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()],
                             "note": "1/5/15-minute load averages: other processes on the machine during the run"},
            "model": _model_report(config, models),
            "workload": _workload_report(config, models.artifact.spec, inputs),
            "procedure": {"latency": LATENCY_PROCEDURE.format(settle=SETTLE_S * 1000),
                          "throughput": THROUGHPUT_PROCEDURE},
            **_systems_report(config.systems, built, measured, len(inputs.pairs), errors),
            "search_recall_at_k": _search_recall(built, measured),
            "profile": profile_report,
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write(report, config.out)
        return report
    finally:
        for system in built.values():
            system.close()
        if config.work is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _pin_threads(threads: int) -> None:
    """Pin every thread pool: torch, ORT (per session), hnswlib (per searcher), tokenizers (Rayon, read
    when its pool first starts, i.e. at the first batch encode), numpy's BLAS (threadpoolctl, if installed;
    latency.json records the BLAS threads in ``blas_threads``)."""
    import torch

    os.environ["RAYON_RS_NUM_CPUS"] = str(threads)
    torch.set_num_threads(threads)
    # numpy's BLAS too: the peers' exact search is a matrix-vector product, which OpenBLAS splits over
    # every core once the corpus is large (measured: at 2k passages and --threads 1, 2 BLAS threads
    # under load took 9.7 ms p50 for a 0.1 ms product). Same threads for everyone.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


def _blas_threads() -> list[int] | str:
    """The thread count of every BLAS numpy uses (threadpoolctl), or why it is not known."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed: not pinned"
    return [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "blas"]


def _export_models(config: LatencyConfig, workdir: Path) -> Models:
    """Build the random-weight shape if asked, export the artifact with fastdpr's pipeline, and resolve
    the sources again for the peers (which load the Hugging Face models themselves)."""
    from fastdpr_export.sources import resolve_source

    question_encoder, context_encoder, encoder = config.question_encoder, config.context_encoder, config.encoder
    shape = SHAPES[config.shape] if config.shape else None
    if config.shape:
        log(f"[latency] building random-weight shape {config.shape}")
        dirs = build_shape(config.shape, workdir / "models", config.seed, config.initializer_range)
        question_encoder, context_encoder = str(dirs["question"]), str(dirs["context"])
    if config.artifact is not None:
        artifact_dir = config.artifact
        log(f"[latency] reusing the artifact {artifact_dir}")
    else:
        artifact_dir = workdir / "artifact"
        log(f"[latency] exporting {'encoder ' + str(encoder) if encoder else f'{question_encoder} / {context_encoder}'}"
            f" with {config.recipe()}")
        export_source(artifact_dir, question_encoder, context_encoder, encoder, config.recipe())
    artifact = Artifact.load(artifact_dir)
    recipe = artifact.manifest["quantization"]["recipe"]
    if recipe != config.recipe():
        raise click.UsageError(f"--artifact {artifact_dir} was exported with {recipe}, not {config.recipe()}")
    sources: dict[Side, str] = {side: artifact.manifest["sides"][side]["source"]["source"] for side in SIDES}
    (workdir / "sources").mkdir(exist_ok=True)
    resolved = {side: resolve_source(sources[side], side, workdir / "sources") for side in SIDES}
    label = (f"random-weight DPR, shape {shape.name} ({shape.layers} layers x {shape.hidden} "
             f"hidden, {shape.heads} heads, {shape.ffn} FFN)" if shape
             else str(encoder) if encoder else f"{question_encoder} / {context_encoder}")
    return Models(artifact=artifact, artifact_dir=artifact_dir, sources=sources, resolved=resolved, shape=shape,
                  label=label)


def _prepare_inputs(config: LatencyConfig, artifact: Artifact, workdir: Path) -> Inputs:
    """The seeded workload (SQuAD, or synthetic text), written as the corpus fastdpr indexes, with the
    warm-up inputs chosen to cover the measured lengths."""
    workload = (squad_workload(config.squad, config.passages, config.queries, config.seed) if config.squad else
                synthetic_workload(artifact.tokenizer_path("context"), config.passages, config.queries, config.seed))
    if not config.squad and not config.shape:
        log("[latency] no --squad: synthetic passages and questions")
    background = None
    if config.background:
        assert config.squad is not None  # checked by LatencyConfig.check
        log(f"[latency] making {config.background:,} SYNTHETIC background passages")
        background = make_background(config.squad, config.background, config.seed, artifact, config.threads)
    corpus = workdir / "passages.jsonl"
    write_corpus(corpus, [*workload.passages, *(background.passages if background else [])], "jsonl")
    pairs = [(p.title, p.text) for p in workload.passages]
    passage_tokens = [len(e.ids) for e in artifact.tokenizer("context").encode(pairs)]
    question_tokenizer = artifact.tokenizer("question")
    question_tokens = [len(e.ids) for e in question_tokenizer.encode(workload.questions)]
    warm_questions, warm_description = warmup_questions(
        workload.questions, workload.spare_questions, lambda q: len(question_tokenizer.encode([q])[0].ids))
    warm_passages = warmup_passages(workload.passages, passage_tokens, WARMUP_PASSAGE_BATCHES * config.batch_size)
    return Inputs(workload=workload, corpus=corpus, pairs=pairs, passage_tokens=passage_tokens,
                  question_tokens=question_tokens, warm_passages=warm_passages, warm_questions=warm_questions,
                  warm_description=warm_description, background=background)


def _build_systems(names: Sequence[str], context: SetupContext, built: dict[str, System]) -> dict[str, str]:
    """Build each system into ``built`` (the caller closes them, whatever happens next); return the
    errors of peers that failed to build."""
    errors: dict[str, str] = {}
    for name in names:
        log(f"[latency] setting up {name}")
        try:
            built[name] = REGISTRY[name].build(context)
        except Exception as exc:  # a peer that fails to build is reported as failed, never faked
            if REGISTRY[name].kind != "peer":
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"[latency] {name} failed: {errors[name]}")
    return errors


def _profile(config: LatencyConfig, artifact: Artifact, pairs: list[tuple[str, str]],
             workdir: Path) -> dict[str, Any] | None:
    """ORT's profile of fastdpr-int8 passage encoding (None when not asked or fastdpr-int8 is not run)."""
    if not (config.profile and "fastdpr-int8" in config.systems):
        return None
    log("[latency] profiling fastdpr-int8 passage encoding")
    try:
        return profile_passage_encoding(artifact, "int8", pairs, config.threads, config.batch_size, workdir)
    except Exception as exc:  # a profiler failure must not lose the measurements
        return {"error": f"{type(exc).__name__}: {exc}"}


def _model_report(config: LatencyConfig, models: Models) -> dict[str, Any]:
    """latency.json's ``model``: what ran, whether its weights are random, its architecture and spec."""
    random_weights = models.shape is not None
    return {
        "label": models.label,
        "random_weights": random_weights,
        "note": RANDOM_WEIGHTS_LINE if random_weights else "trained weights",
        "shape": ({**models.shape.to_dict(), "initializer_range": config.initializer_range or 0.02}
                  if models.shape else None),
        "sources": dict(models.sources),
        "architecture": {k: models.resolved["context"].config.get(k) for k in
                         ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
        "spec": models.artifact.spec.to_dict(),
        "quantization": config.recipe(),
    }


def _workload_report(config: LatencyConfig, spec: EncoderSpec, inputs: Inputs) -> dict[str, Any]:
    """latency.json's ``workload``: counts, sources and token lengths of what was measured, and the warm-up."""
    description = inputs.workload.description
    return {
        "passages": {"count": len(inputs.pairs), "source": description["source"],
                     "note": description["passages_note"], "seed": config.seed,
                     "max_length": spec.passage_max_length, "tokens": length_stats(inputs.passage_tokens)},
        "questions": {"count": len(inputs.workload.questions), "source": description["source"],
                      "note": description["questions_note"], "seed": config.seed,
                      "max_length": spec.question_max_length, "tokens": length_stats(inputs.question_tokens)},
        "k": K, "batch_size": config.batch_size, "rounds": config.rounds,
        "warmup": {"passages": len(inputs.warm_passages), "questions": inputs.warm_description},
        "settle_ms": SETTLE_S * 1000,
        "background": None if inputs.background is None else inputs.background.description,
        "searched_passages": len(inputs.pairs) + (0 if inputs.background is None else len(inputs.background.passages)),
    }


def _systems_report(names: Sequence[str], built: dict[str, System], measured: Measurements, count: int,
                    errors: dict[str, str]) -> dict[str, Any]:
    """latency.json's ``system_notes``, ``systems``, ``ratios`` and ``agreement`` (passage and question
    embeddings against the reference's): every system asked for, measured or with the reason it was not."""
    summary = summarize(measured, count)
    systems: dict[str, dict[str, Any]] = {
        name: summary[name] if name in summary else {"description": REGISTRY[name].description,
                                                     "kind": REGISTRY[name].kind,
                                                     "error": errors.get(name, "not run")}
        for name in names}
    reference = "pytorch-fp32-sorted" if "pytorch-fp32-sorted" in measured.embeddings else next(
        iter(measured.embeddings))
    return {
        "system_notes": {name: system.settings() for name, system in built.items() if hasattr(system, "settings")},
        "systems": systems,
        "ratios": ratios(systems),
        "agreement": agreement({"passages": measured.embeddings, "questions": measured.question_embeddings},
                               reference),
    }


def _search_recall(built: dict[str, System], measured: Measurements) -> dict[str, float]:
    """Each system's recall@K against exact search over its own passage vectors, for its own vectors of the
    measured questions: the recall parity every latency figure stands on."""
    out = {}
    for name, system in built.items():
        if name in measured.question_embeddings:
            out[name] = round(system.search_recall(measured.question_embeddings[name]), 4)
    return out


def _write(report: dict[str, Any], out: Path) -> None:
    """latency.json, and the Markdown table and plot made from it."""
    (out / "latency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "latency.md")
    write_plot(report, out / "latency.png")
    log(f"[latency] wrote {out}/latency.json, latency.md, latency.png in {report['seconds']} s")


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
@click.option("--initializer-range", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Weight init std of --shape (default: BERT's 0.02; 0.2 spreads the embeddings apart).")
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
@click.option("--systems", default=",".join(DEFAULT_SYSTEMS), show_default=True, callback=_systems_option,
              help="Comma-separated subset of systems.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile fastdpr-int8 passage encoding with ORT's profiler.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Keep exported models and indexes here (default: a temporary directory, removed).")
@click.option("--artifact", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Reuse an artifact an earlier run exported (its --work DIR/artifact) instead of exporting.")
@click.option("--background", type=click.IntRange(0), default=0, show_default=True,
              help="SYNTHETIC background passages every system searches beside the measured ones (e.g. 200000).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results directory (latency.json, latency.md, latency.png).")
def latency_command(question_encoder: str | None, context_encoder: str | None, encoder: str | None,
                    shape: str | None, initializer_range: float | None, squad: Path | None, threads: int,
                    passages: int, queries: int, rounds: int, batch_size: int, seed: int, quantize: str | None,
                    systems: tuple[str, ...], profile: bool, work: Path | None, artifact: Path | None,
                    background: int, out: Path) -> None:
    """Passages/s and single-question latency of fastdpr against PyTorch, optimum and OpenVINO, interleaved in
    one run."""
    run_latency(LatencyConfig(out=out, question_encoder=question_encoder, context_encoder=context_encoder,
                              encoder=encoder, shape=shape, initializer_range=initializer_range, squad=squad,
                              threads=threads, passages=passages, queries=queries, rounds=rounds,
                              batch_size=batch_size, seed=seed, quantize=quantize, systems=systems,
                              profile=profile, work=work, artifact=artifact, background=background))


if __name__ == "__main__":
    latency_command()
