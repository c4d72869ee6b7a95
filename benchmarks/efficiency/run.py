"""``python -m benchmarks efficiency``: achieved int8 GOP/s of passage encoding against the CPU's peak.

    python -m benchmarks efficiency --artifact ART --squad dev-v1.1.json [--threads 1,2] [--passages 256]
        [--rounds 5] --out DIR

Passages/s of the artifact's deployed passage encoder (int8, one passage per ONNX Runtime call) at each
thread count, measured side by side in one run (:func:`benchmarks.parity.interleaved_speed`, rounds
interleaved, median); the operations of each measured passage counted from the graph
(:mod:`benchmarks.efficiency.work`); GOP/s = mean ops per passage x passages/s, against the class's peak
(:mod:`benchmarks.efficiency.peak`); and where the time goes (:func:`benchmarks.latency.profile.
profile_passage_encoding`, one passage per call).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from benchmarks.common import log, machine, versions
from benchmarks.efficiency.peak import MachinePeak, PeakError, machine_peak
from benchmarks.efficiency.report import write_report
from benchmarks.efficiency.work import KINDS, WorkCounter, mean_ops, mean_ops_by_op_type
from benchmarks.latency.profile import profile_passage_encoding
from benchmarks.parity import interleaved_speed, speed_sample
from fastdpr.common.cpu import this_cpu
from fastdpr.corpus.squad import load_squad
from fastdpr.model.artifact import Artifact
from fastdpr.model.spec import SIDES, Side

#: The kernels ONNX Runtime runs a file's op type as (its CPU optimizer fuses MatMulInteger with the
#: dequantizing Cast/Mul into MatMulIntegerToFloat, or with DynamicQuantizeLinear into DynamicQuantizeMatMul).
RUNTIME_KERNELS: dict[str, tuple[str, ...]] = {
    "MatMulInteger": ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"),
    "QAttention": ("QAttention",),
    "Attention": ("Attention",),
    "MatMul": ("MatMul", "FusedMatMul"),
}

#: Questions whose work is counted (their length distribution; questions are not timed here).
QUESTION_SAMPLE = 512


@dataclass(frozen=True)
class EfficiencyConfig:
    """What ``python -m benchmarks efficiency`` was asked."""

    artifact: Path
    squad: Path
    out: Path
    threads: tuple[int, ...] = (1, 2)
    passages: int = 256
    rounds: int = 5
    seed: int = 0
    profile: bool = True

    def command_line(self) -> str:
        """The command that repeats this run."""
        args = ["python", "-m", "benchmarks", "efficiency", "--artifact", str(self.artifact), "--squad",
                str(self.squad), "--threads", ",".join(map(str, self.threads)), "--passages", str(self.passages),
                "--rounds", str(self.rounds), "--seed", str(self.seed), "--out", str(self.out)]
        if not self.profile:
            args.append("--no-profile")
        return shlex.join(args)


def run_efficiency(config: EfficiencyConfig) -> dict[str, Any]:
    """Measure, count, compare with the peak, profile; write efficiency.json / .md; return the report."""
    started = time.perf_counter()
    load_start = os.getloadavg()
    # Tokenization on one thread for every measurement: with Rayon's default pool, "1 thread" would
    # tokenize on every core. Read when the pool first starts, so set before any encoding.
    os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")
    artifact = Artifact.load(config.artifact)
    passages, questions = load_squad(config.squad)
    pairs = speed_sample(passages, config.passages)
    question_texts = [q.question for q in random.Random(config.seed).sample(questions,
                                                                           min(QUESTION_SAMPLE, len(questions)))]
    cpu = this_cpu()
    peak: MachinePeak | None = None
    try:
        peak = machine_peak(cpu.int8_class)
    except PeakError as exc:  # the clock is not readable: GOP/s are still measured
        log(f"[efficiency] no peak: {exc}")
    if peak is not None and not peak.known:
        log(f"[efficiency] no int8 peak is known for class {cpu.int8_class}")
        peak = None

    log("[efficiency] counting the work of every model from its graph")
    passage_lengths = [len(e.ids) for e in artifact.tokenizer("context").encode(pairs)]
    question_lengths = [len(e.ids) for e in artifact.tokenizer("question").encode(question_texts)]
    work = _work(artifact, passage_lengths, question_lengths)
    deployed = artifact.side_precision("context")
    per_passage = work["context"][deployed]["mean_ops_per_input"]

    log(f"[efficiency] passages/s of context {deployed} at {config.threads} threads, interleaved")
    path = artifact.model_path("context", deployed)
    names = {threads: f"{deployed}-t{threads}" for threads in config.threads}
    speed = interleaved_speed({name: (path, 1) for name in names.values()}, artifact, passages,
                              threads=config.threads[0], rounds=config.rounds, sample=config.passages,
                              model_threads={name: threads for threads, name in names.items()})
    rows = []
    for threads, name in names.items():
        rate = speed[name]
        row: dict[str, Any] = {"threads": threads, "passages_per_s": rate,
                               "gops": {kind: round(per_passage[kind] * rate / 1e9, 2) for kind in KINDS},
                               "gops_all": round(sum(per_passage.values()) * rate / 1e9, 2)}
        if peak is not None:
            row["peak_int8_gops"] = round(peak.gops(threads), 1)
            row["int8_share_of_peak"] = round(per_passage["int8_gemm"] * rate / 1e9 / peak.gops(threads), 4)
            row["all_ops_share_of_int8_peak"] = round(row["gops_all"] / peak.gops(threads), 4)
        rows.append(row)

    profiles = []
    if config.profile:
        with tempfile.TemporaryDirectory(prefix="fastdpr-efficiency-") as tmp:
            # One thread only: with N > 1 threads the deployed encoder runs N concurrent single-threaded calls
            # (fastdpr/model/encoder.py), so each call is the 1-thread call profiled here, N at a time.
            for threads in (1,):
                log(f"[efficiency] profiling one passage per call at {threads} threads")
                profile = profile_passage_encoding(artifact, deployed, pairs, threads, 1, Path(tmp), top=40)
                profile["kernel_rates"] = _kernel_rates(profile, work["context"][deployed]["mean_ops_by_op_type"],
                                                        peak, threads)
                profiles.append(profile)
    report = {
        "benchmark": "efficiency",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command_line(),
        "machine": machine(),
        "cpu_class": cpu.int8_class,
        "versions": versions(),
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in os.getloadavg()],
                         "note": "1/5/15-minute load averages: other processes on the machine during the run; "
                                 "under load every GOP/s here is a lower bound"},
        "artifact": {"path": str(config.artifact), "sources": artifact.sources,
                     "recipe": artifact.manifest["quantization"]["recipe"],
                     "encoding": {side: artifact.side_precision(side) for side in SIDES}},
        "workload": {"source": str(config.squad), "passages": len(pairs), "questions_counted": len(question_texts),
                     "passage_tokens": _stats(passage_lengths), "question_tokens": _stats(question_lengths),
                     "inputs_per_call": 1, "rounds": config.rounds,
                     "tokenizer_threads": os.environ["RAYON_RS_NUM_CPUS"],
                     "procedure": "benchmarks.parity.interleaved_speed: the same passages once per round for "
                                  "each thread count (one session each, warm-up 32 passages), rounds interleaved, "
                                  "median round"},
        "work": work,
        "peak": None if peak is None else peak.to_dict(),
        "efficiency": rows,
        "profiles": profiles,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(report, config.out)
    return report


def _work(artifact: Artifact, passage_lengths: list[int], question_lengths: list[int]) -> dict[str, Any]:
    """Ops per input of every model of the artifact (each input its own call), split by kind."""
    out: dict[str, Any] = {}
    sides: tuple[tuple[Side, list[int]], ...] = (("context", passage_lengths), ("question", question_lengths))
    for side, lengths in sides:
        out[side] = {}
        for precision in artifact.precisions:
            counter = WorkCounter(artifact.model_path(side, precision))
            longest = counter.count(1, max(lengths))
            out[side][precision] = {
                "mean_ops_per_input": {kind: round(mean_ops(counter, lengths, kind)) for kind in KINDS},
                "mean_ops_by_op_type": {op: round(ops) for op, ops in mean_ops_by_op_type(counter, lengths).items()},
                "at_longest": longest.to_dict(),
                "not_counted_op_types": list(counter.not_counted),
            }
    return out


def _kernel_rates(profile: dict[str, Any], ops_by_op_type: dict[str, int], peak: MachinePeak | None,
                  threads: int) -> list[dict[str, Any]]:
    """GOP/s inside the kernels that do the counted work: a file op type's ops over every profiled call,
    divided by the profiled time of the kernels ORT runs it as (:data:`RUNTIME_KERNELS`)."""
    if "error" in profile:
        return []
    kernel_ms = {op["op_type"]: op["ms"] for op in profile["op_types"]}
    rates = []
    for op_type, ops in ops_by_op_type.items():
        kernels = RUNTIME_KERNELS.get(op_type, (op_type,))
        ms = sum(kernel_ms.get(k, 0.0) for k in kernels)
        if ms <= 0 or ops <= 0:
            continue
        gops = ops * profile["passages"] / (ms / 1000) / 1e9
        rate: dict[str, Any] = {"op_type": op_type, "kernels": [k for k in kernels if k in kernel_ms],
                                "ms": round(ms, 1), "gops": round(gops, 1)}
        if peak is not None:
            rate["share_of_int8_peak"] = round(gops / peak.gops(threads), 4)
        rates.append(rate)
    return rates


def _stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {"mean": round(sum(ordered) / len(ordered), 1), "min": ordered[0], "median": ordered[len(ordered) // 2],
            "max": ordered[-1]}


def _threads_option(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in value.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of thread counts") from None
    if not threads or min(threads) < 1 or len(set(threads)) != len(threads):
        raise click.BadParameter(f"{value!r}: give distinct thread counts of at least 1, e.g. 1,2")
    return threads


@click.command("efficiency", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--artifact", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An exported artifact (fastdpr export ...); its deployed passage encoder is measured.")
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SQuAD v1.1 JSON: the passages encoded and the questions whose work is counted.")
@click.option("--threads", default="1,2", show_default=True, callback=_threads_option,
              help="Comma-separated ORT thread counts, measured side by side.")
@click.option("--passages", type=click.IntRange(1), default=256, show_default=True,
              help="About this many passages (every n-th SQuAD paragraph) per round.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Interleaved rounds (median).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the counted question sample.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile one-passage-per-call encoding with ORT's profiler at each thread count.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results directory (efficiency.json, efficiency.md).")
def efficiency_command(artifact: Path, squad: Path, threads: tuple[int, ...], passages: int, rounds: int, seed: int,
                       profile: bool, out: Path) -> None:
    """Achieved int8 GOP/s of passage encoding, % of this CPU class's peak, and where the rest of the time goes."""
    from fastdpr.common.errors import FastDPRError

    try:
        run_efficiency(EfficiencyConfig(artifact=artifact, squad=squad, out=out, threads=threads,
                                        passages=passages, rounds=rounds, seed=seed, profile=profile))
    except FastDPRError as exc:
        raise click.ClickException(str(exc)) from exc
