"""``python -m benchmarks concurrent-calls``: many inputs on N threads, before and after concurrent calls.

fastdpr makes one ONNX Runtime call per input (issue #19: an int8 embedding then depends on its own text
only). Before, those calls ran one at a time on a session with N intra-op threads; now
:class:`fastdpr.model.encoder.OnnxEncoder` runs N calls at once on a single-threaded session (a lone input
still takes the N-thread session). This measures both on the same inputs, interleaved (the order of the
two alternates every round; the median round counts), per side and precision of an artifact, and checks
that both give bitwise the same embeddings.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, versions
from fastdpr.common.integrity import write_json
from fastdpr.corpus.squad import load_squad
from fastdpr.model.artifact import Artifact
from fastdpr.model.encoder import OUTPUT_NAME, OnnxEncoder
from fastdpr.model.spec import SIDES

MODES = ("one call at a time, N intra-op threads (before)", "N concurrent calls, 1 thread each (now)")


def one_call_at_a_time(encoder: OnnxEncoder, inputs: Sequence[Any]) -> np.ndarray:
    """What the encoder did before: each input's call on the N-thread session, in turn."""
    encodings = encoder.tokenize(inputs)
    return np.concatenate([encoder.session.run([OUTPUT_NAME], encoder.tokenizer.feeds([e]))[0] for e in encodings])


def measure(encoder: OnnxEncoder, inputs: Sequence[Any], rounds: int) -> dict[str, Any]:
    """Inputs per second of both modes (median round), and whether their embeddings are identical."""
    runs: dict[str, Callable[[], np.ndarray]] = {
        MODES[0]: lambda: one_call_at_a_time(encoder, inputs), MODES[1]: lambda: encoder.encode(inputs)}
    identical = bool(np.array_equal(runs[MODES[0]](), runs[MODES[1]]()))  # also the warm-up of both
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            start = time.perf_counter()
            runs[mode]()
            seconds[mode].append(time.perf_counter() - start)
    per_s = {mode: round(len(inputs) / float(np.median(s)), 2) for mode, s in seconds.items()}
    return {"inputs": len(inputs), "per_s": per_s, "speedup": round(per_s[MODES[1]] / per_s[MODES[0]], 3),
            "identical": identical}


def run_concurrent_calls(artifact_dir: Path, squad: Path, out: Path, threads: int, passages: int, questions: int,
                         rounds: int) -> dict[str, Any]:
    """Measure every side x precision of the artifact; write concurrent-calls.json and .md into ``out``."""
    artifact = Artifact.load(artifact_dir)
    squad_passages, squad_questions = load_squad(squad)
    inputs: dict[str, list[Any]] = {
        "context": [(p.title, p.text) for p in squad_passages[:: max(1, len(squad_passages) // passages)][:passages]],
        "question": [q.question for q in squad_questions[:: max(1, len(squad_questions) // questions)][:questions]]}
    load_at_start = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        for precision in artifact.precisions:
            encoder = OnnxEncoder(artifact.model_path(side, precision), artifact.tokenizer(side), threads)
            results[f"{side} {precision}"] = measure(encoder, inputs[side], rounds)
            log(f"{side} {precision}: {results[f'{side} {precision}']}")
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
              "versions": versions(), "artifact": str(artifact_dir), "recipe": artifact.manifest["quantization"]
              and artifact.manifest["quantization"]["recipe"], "threads": threads, "rounds": rounds,
              "load_average": {"start": [round(v, 2) for v in load_at_start],
                               "end": [round(v, 2) for v in os.getloadavg()]},
              "modes": list(MODES), "results": results}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "concurrent-calls.json", report)
    (out / "concurrent-calls.md").write_text(render(report), encoding="utf-8")
    return report


def render(report: dict[str, Any]) -> str:
    """The readable table."""
    cls = report["machine"]["int8_class"]["int8_class"]
    lines = [f"Encoding many inputs on {report['threads']} threads, one ONNX Runtime call per input: "
             f"{MODES[0]} vs {MODES[1]}. {report['date']}, int8 class {cls}, load average "
             f"{report['load_average']['start'][0]} at start and {report['load_average']['end'][0]} at the end; "
             f"{report['rounds']} rounds, order alternating, median round. Artifact recipe: {report['recipe']}.", "",
             "| Side, precision | Inputs | Before, inputs/s | Now, inputs/s | Now / before | Bitwise identical |",
             "|---|---:|---:|---:|---:|---|"]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['inputs']} | {row['per_s'][MODES[0]]:.2f} | {row['per_s'][MODES[1]]:.2f} | "
                     f"{row['speedup']:.2f}x | {'yes' if row['identical'] else 'NO'} |")
    return "\n".join(lines) + "\n"


@click.command("concurrent-calls")
@click.option("--artifact", "artifact_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="An exported artifact.")
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="SQuAD v1.1 dev JSON: its paragraphs and questions are the inputs.")
@click.option("--threads", type=click.IntRange(2, 256), default=2, show_default=True, help="N.")
@click.option("--passages", type=click.IntRange(2, 100_000), default=128, show_default=True)
@click.option("--questions", type=click.IntRange(2, 100_000), default=512, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 100), default=7, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results directory.")
def concurrent_calls_command(artifact_dir: Path, squad: Path, threads: int, passages: int, questions: int, rounds: int,
                             out: Path) -> None:
    """Passages/s and questions/s with calls one at a time on N threads vs N concurrent calls."""
    run_concurrent_calls(artifact_dir, squad, out, threads, passages, questions, rounds)
    click.echo(f"wrote {out}/concurrent-calls.json, concurrent-calls.md")
