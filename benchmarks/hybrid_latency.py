"""What hybrid search adds to a query's latency at scale (issue #23: "at most 1 ms to query p50 at 200k
passages"), and where the lexical side's time goes.

    python -m benchmarks hybrid-latency --artifact ARTIFACT --squad ../shared/data/squad/dev-v1.1.json \
        --passages 200000 --out benchmarks/results/hybrid-latency-<int8 class>

No 200k-passage corpus is available offline, so one is made (seeded): passages of about 100 words (DPR's
passage length), each a run of sentences drawn from SQuAD v1.1 dev's paragraphs, titled with the
article of its first sentence. Its vocabulary is SQuAD dev's (about 16k stemmed terms), far smaller than
that of 200k real Wikipedia passages, so a question's terms have longer posting lists than they would
there: BM25 scores more passages per question, and the lexical figures are pessimistic. Questions: SQuAD
dev questions (seeded sample). The index is built as a user builds it (``fastdpr index --lexical bm25``);
``--index`` reuses one.

Measured, one question per call, in blocks (every variant over all the questions, the blocks' order
rotated over :data:`ROUNDS` rounds), as wall-clock time and as the process's CPU time per call. On a
shared machine the wall clock of a call includes the time it waits for a core, which grows with the
CPU it needs (a longer call is preempted more often); its CPU time does not, and is what the call
costs on an idle core (caches included):

* ``Retriever.search`` in ``dense``, ``lexical`` and ``hybrid`` mode (k=20); the hybrid overhead is
  reported as the p50 difference and as the median of the per-question differences;
* the lexical selection alone, three ways over the same BM25 index: bm25s's ``retrieve`` with
  ``n_threads=1`` (what the branch did first), with ``n_threads=0`` (no thread pool per call), and
  bm25s's ``get_scores`` with :func:`fastdpr.lexical.bm25.best_scores` (what ships).

The dense side's cost depends on the model (the question encoder, the embedding size in HNSW); the
hybrid overhead does not, beyond the dense search's depth (hybrid asks HNSW for 100 candidates at the
same ``ef``). So any artifact measures the overhead; the report names the one used.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, percentiles, versions
from fastdpr.common.integrity import library_versions, write_json
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.corpus.squad import load_squad
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.lexical.bm25 import best_scores
from fastdpr.search.retriever import Retriever

#: Words per synthetic passage (at least; DPR's passages are 100 words).
PASSAGE_WORDS = 100
#: k of the timed searches (the issue's Top-20).
K = 20
#: Rounds of blocks (every variant over every question once per round).
ROUNDS = 3


def synthetic_passages(squad: Path, count: int, seed: int) -> list[Passage]:
    """``count`` passages of at least :data:`PASSAGE_WORDS` words, each a run of SQuAD dev sentences."""
    sentences: list[tuple[str, str]] = []
    for passage in load_squad(squad)[0]:
        for sentence in re.split(r"(?<=[.!?])\s+", passage.text):
            if len(sentence.split()) >= 4:
                sentences.append((passage.title, sentence))
    rng = random.Random(seed)
    out: list[Passage] = []
    for number in range(count):
        title = sentences[rng.randrange(len(sentences))][0]
        parts: list[str] = []
        while sum(len(part.split()) for part in parts) < PASSAGE_WORDS:
            parts.append(sentences[rng.randrange(len(sentences))][1])
        out.append(Passage(f"s{number}", title, " ".join(parts)))
    return out


def _timed_blocks(variants: dict[str, Callable[[str], Any]], questions: list[str],
                  rounds: int) -> dict[str, dict[str, list[float]]]:
    """Wall-clock and CPU milliseconds of each variant on each question: ``rounds`` rounds, each running every
    variant over all the questions in turn (a block per variant, the blocks' order rotated by round), so
    a call never follows the same question in another variant (its caches are as cold as a new query's)."""
    names = list(variants)
    for name in names:  # warm-up: opens the lexical side, ONNX Runtime's arenas, the page cache
        for question in questions[:5]:
            variants[name](question)
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            call = variants[name]
            for question in questions:
                wall, cpu = time.perf_counter(), time.process_time()
                call(question)
                samples[name]["cpu"].append((time.process_time() - cpu) * 1000)
                samples[name]["wall"].append((time.perf_counter() - wall) * 1000)
    return samples


def run(artifact: Path, squad: Path, index: Path | None, passages: int, questions_n: int, seed: int, threads: int,
        out: Path, work: Path) -> dict[str, Any]:
    """Build (or reuse) the index, time every variant, write ``hybrid-latency.json`` and ``.md`` in ``out``."""
    built_seconds = None
    if index is None:
        corpus = work / "passages.jsonl"
        log(f"writing {passages:,} synthetic passages")
        write_corpus(corpus, synthetic_passages(squad, passages, seed), "jsonl")
        index = work / "index"
        log("building the index (fastdpr index --lexical bm25)")
        started = time.perf_counter()
        build_index(artifact, corpus, index, "jsonl", IndexOptions(lexical="bm25", threads=threads, progress=False))
        built_seconds = round(time.perf_counter() - started, 1)
    all_questions = [q.question for q in load_squad(squad)[1]]
    questions = random.Random(seed + 1).sample(all_questions, questions_n)
    load_start = os.getloadavg()
    with Retriever.load(index, threads=threads) as retriever:
        manifest = retriever.manifest
        side = retriever.hybrid.lexical.parts[0][1]
        model = side._model  # bm25s's own object, to time its retrieve next to what ships

        def retrieve(n_threads: int) -> Callable[[str], Any]:
            def call(question: str) -> Any:
                tokens = side.tokens([question])[0]
                return model.retrieve([tokens], k=100, show_progress=False, n_threads=n_threads) if tokens else None
            return call

        def shipped(question: str) -> Any:
            tokens = side.tokens([question])[0]
            return best_scores(model.get_scores(tokens), 100) if tokens else None

        log(f"timing {questions_n} questions x 6 variants x {ROUNDS} rounds (load average {load_start[0]:.2f})")
        samples = _timed_blocks({
            "dense": lambda q: retriever.search(q, K),
            "lexical": lambda q: retriever.search(q, K, mode="lexical"),
            "hybrid": lambda q: retriever.search(q, K, mode="hybrid"),
            "bm25s retrieve, n_threads=1": retrieve(1),
            "bm25s retrieve, n_threads=0": retrieve(0),
            "bm25s get_scores + best_scores (shipped)": shipped,
        }, questions, ROUNDS)
        scored = [int((model.get_scores(t) > 0).sum()) for t in (side.tokens([q])[0] for q in questions) if t]
    paired = {clock: np.asarray(samples["hybrid"][clock]) - np.asarray(samples["dense"][clock])
              for clock in ("wall", "cpu")}
    report = {
        "benchmark": "hybrid-latency",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "machine": machine(),
        "threads": threads,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "versions": {**versions(), **library_versions(("bm25s", "PyStemmer"))},
        "artifact": {"path": str(artifact), "sources": manifest["artifact"]["sources"], "dim": manifest["spec"]["dim"],
                     "precision": manifest["precision"]},
        "index": {"path": str(index), "passages": manifest["counts"]["indexed"],
                  "vocabulary": manifest["lexical"]["vocabulary"], "ef": manifest["hnsw"]["ef_search"],
                  "build_seconds": built_seconds, "synthetic": built_seconds is not None, "seed": seed},
        "questions": questions_n,
        "k": K,
        "passages_scoring_above_zero_per_question": percentiles([float(n) for n in scored]),
        "rounds": ROUNDS,
        "ms": {name: percentiles(values["wall"]) for name, values in samples.items()},
        "cpu_ms": {name: percentiles(values["cpu"]) for name, values in samples.items()},
        "hybrid_minus_dense": {
            "p50_difference_ms": round(float(np.median(samples["hybrid"]["wall"])
                                             - np.median(samples["dense"]["wall"])), 3),
            "median_paired_difference_ms": round(float(np.median(paired["wall"])), 3),
            "cpu_p50_difference_ms": round(float(np.median(samples["hybrid"]["cpu"])
                                                 - np.median(samples["dense"]["cpu"])), 3),
            "cpu_median_paired_difference_ms": round(float(np.median(paired["cpu"])), 3),
            "goal_ms": 1.0},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "hybrid-latency.json", report)
    (out / "hybrid-latency.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a table (docs/hybrid.md quotes it)."""
    m, idx, diff = report["machine"], report["index"], report["hybrid_minus_dense"]
    start, end = report["load_average"]["start"][0], report["load_average"]["end"][0]
    kind = "synthetic passages of SQuAD dev sentences" if idx["synthetic"] else "passages"
    lines = [f"Query latency at {idx['passages']:,} {kind} (BM25 vocabulary {idx['vocabulary']:,}), "
             f"{report['date']}, {m['cpu']} (int8 class {m['int8_class']['int8_class']}), {report['threads']} "
             f"threads, load average {start:.2f} at start and {end:.2f} at the end. Artifact: "
             f"{report['artifact']['sources']['question']} (dim {report['artifact']['dim']}, "
             f"{report['artifact']['precision']}), HNSW ef {idx['ef']}. {report['questions']} SQuAD dev questions, "
             f"one per call, k={report['k']}, {report['rounds']} rounds of blocks. Passages scoring above "
             f"zero per question: p50 {report['passages_scoring_above_zero_per_question']['p50']:,.0f}.", "",
             "| Variant | p50 ms | p95 ms | p99 ms | CPU p50 ms | CPU p95 ms |", "|---|---|---|---|---|---|"]
    for name, values in report["ms"].items():
        cpu = report["cpu_ms"][name]
        lines.append(f"| {name} | {values['p50']:.2f} | {values['p95']:.2f} | {values['p99']:.2f} | "
                     f"{cpu['p50']:.2f} | {cpu['p95']:.2f} |")
    lines += ["", f"Hybrid minus dense, wall clock: {diff['p50_difference_ms']:+.2f} ms between the p50s, "
              f"{diff['median_paired_difference_ms']:+.2f} ms median of the per-question differences; CPU time "
              f"(the process's, per call): {diff['cpu_p50_difference_ms']:+.2f} ms between the p50s, "
              f"{diff['cpu_median_paired_difference_ms']:+.2f} ms median per question (goal: at most "
              f"+{diff['goal_ms']:.0f} ms to the p50).", ""]
    return "\n".join(lines)


@click.command("hybrid-latency")
@click.option("--artifact", required=True, type=click.Path(path_type=Path, exists=True),
              help="An exported artifact (any: the hybrid overhead does not depend on the model).")
@click.option("--squad", required=True, type=click.Path(path_type=Path, exists=True),
              help="SQuAD v1.1 dev JSON (sentences for the passages, and the questions).")
@click.option("--index", type=click.Path(path_type=Path, exists=True),
              help="An index built with --lexical bm25 to time instead of building the synthetic one.")
@click.option("--passages", type=click.IntRange(1000, None), default=200_000, show_default=True)
@click.option("--questions", "questions_n", type=click.IntRange(10, None), default=300, show_default=True)
@click.option("--seed", type=int, default=23, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="ONNX Runtime / hnswlib threads (1: what a server worker uses).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Results directory.")
def hybrid_latency_command(artifact: Path, squad: Path, index: Path | None, passages: int, questions_n: int, seed: int,
                           threads: int, out: Path) -> None:
    """What hybrid search adds to the query p50 at 200k passages, and the lexical selection's variants."""
    with tempfile.TemporaryDirectory(prefix="fastdpr-hybrid-latency-") as tmp:
        report = run(artifact, squad, index, passages, questions_n, seed, threads, out, Path(tmp))
    click.echo(json.dumps(report["hybrid_minus_dense"]))
    click.echo(render_markdown(report))
