"""What hybrid search adds to a query's latency at scale (issue #23: "at most 1 ms to query p50 at 200k
passages"), and where the lexical side's time goes.

    python -m benchmarks hybrid-latency --artifact ARTIFACT --squad ../shared/data/squad/dev-v1.1.json \
        --passages 200000 --out benchmarks/results/hybrid-latency-<int8 class>

No 200k-passage corpus is available offline, so one is made (seeded), ``--corpus``:

* ``sentences`` (the default, as first measured): passages of about 100 words (DPR's passage length),
  each a run of sentences drawn from anywhere in SQuAD v1.1 dev's paragraphs, titled with the article of
  its first sentence;
* ``articles``: :mod:`benchmarks.synthetic_corpus` (DPR-shaped: each passage 100 words of one article's
  sentences, articles split into a geometric number of passages), where an article's words stay together.

Either way the vocabulary is SQuAD dev's (about 16k stemmed terms). How many passages a question's words
reach is what the lexical side's cost follows; the report gives it as a share of the corpus next to the
same share in SQuAD dev's 2,067 real paragraphs, scored by the same BM25 (``density_percent``). Questions:
SQuAD dev questions (seeded sample). The index is built as a user builds it (``fastdpr index --lexical
bm25``); ``--index`` reuses one.

Measured, one question per call, in blocks (every variant over all the questions, the blocks' order
rotated over :data:`ROUNDS` rounds), as wall-clock time and as the process's CPU time per call. On a
shared machine the wall clock of a call includes the time it waits for a core, which grows with the
CPU it needs (a longer call is preempted more often); its CPU time does not, and is what the call
costs on an idle core (caches included):

* ``Retriever.search`` in ``dense``, ``lexical`` and ``hybrid`` mode (k=20); the hybrid overhead is
  reported as the p50 difference and as the median of the per-question differences;
* ``hybrid (before)``: the hybrid search as it shipped before the lexical side was sped up, composed
  here from the same pieces (bm25s's ``tokenize`` and ``get_scores``, the selection over the passages
  scoring above zero, the fusion with ``np.union1d``: :func:`hybrid_before`), so the speed-up is a ratio
  measured side by side; its hits are checked to be the shipped hybrid's, bit for bit (``identical``);
* the lexical search alone, four ways over the same BM25 index: bm25s's ``retrieve`` with
  ``n_threads=1`` (what the branch did first), with ``n_threads=0`` (no thread pool per call), bm25s's
  ``tokenize`` and ``get_scores`` with :func:`fastdpr.lexical.bm25.best_scores` (what shipped before),
  and :meth:`fastdpr.lexical.bm25.BM25Index.search` (what ships).

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
from benchmarks.synthetic_corpus import synthetic_passages as article_passages
from fastdpr.common.integrity import library_versions, write_json
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.corpus.squad import load_squad
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.lexical.bm25 import BM25Index, BM25Settings, best_scores, bm25s_tokenize, build_bm25
from fastdpr.lexical.fusion import DEFAULT_WEIGHT
from fastdpr.search.hybrid import HYBRID_DEPTH
from fastdpr.search.retriever import Hit, Retriever

#: Words per synthetic passage (at least; DPR's passages are 100 words).
PASSAGE_WORDS = 100
#: k of the timed searches (the issue's Top-20).
K = 20
#: Rounds of blocks (every variant over every question once per round).
ROUNDS = 3
#: The synthetic corpora ``--corpus`` makes (see the module docstring).
CORPORA = ("sentences", "articles")

Hits = tuple[np.ndarray, np.ndarray]


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


def corpus_passages(kind: str, squad: Path, count: int, seed: int) -> list[Passage]:
    """The ``--corpus`` kind of synthetic passages."""
    if kind == "sentences":
        return synthetic_passages(squad, count, seed)
    return list(article_passages(squad, count, seed))


def _fuse_before(dense: Hits, lexical: Hits, k: int, weight: float) -> Hits:
    """:func:`fastdpr.lexical.fusion.fuse` (weighted) as it shipped before: with ``np.union1d``."""
    labels = np.union1d(dense[0], lexical[0]).astype(np.int64)
    fused = np.zeros(len(labels), dtype=np.float64)
    for (side_labels, side_scores), side_weight in ((dense, 1.0 - weight), (lexical, weight)):
        if len(side_labels) == 0:
            continue
        low, high = float(side_scores.min()), float(side_scores.max())
        norm = (np.ones(len(side_scores)) if high - low <= 0
                else (side_scores.astype(np.float64) - low) / (high - low))
        fused[np.searchsorted(labels, side_labels)] += side_weight * norm
    order = np.lexsort((labels, -fused))[:k]
    return labels[order], fused[order].astype(np.float32)


def hybrid_before(retriever: Retriever, side: BM25Index, question: str, k: int) -> list[Hit]:
    """``retriever.search(question, k, mode="hybrid")`` as it was computed before: bm25s's ``tokenize``
    (three disabled progress bars per call) and ``get_scores`` (a score for every passage, read through
    ``np.memmap`` slices), the selection among the passages scoring above zero, the fusion with
    ``np.union1d``; the dense side is the same call."""
    tokens = bm25s_tokenize([question], side.settings, side._stemmer, ids=False)[0]
    lexical = (best_scores(side._model.get_scores(tokens), HYBRID_DEPTH) if tokens
               else (np.empty(0, np.int64), np.empty(0, np.float32)))
    labels, scores = retriever.searcher.search(retriever.encode_questions([question]), max(k, HYBRID_DEPTH))
    return retriever._ranked_hits([_fuse_before((labels[0], scores[0]), lexical, k, DEFAULT_WEIGHT)])[0]


def density(squad: Path, questions: list[str], work: Path) -> dict[str, float]:
    """The share (%) of SQuAD dev's 2,067 real paragraphs that score above zero for each question, by the
    index's BM25 (its tokenizer, stop words, stemmer): the reference for the synthetic corpus's share."""
    passages = load_squad(squad)[0]
    build_bm25([f"{p.title}\n{p.text}" if p.title else p.text for p in passages], work / "density", BM25Settings())
    index = BM25Index(work / "density", BM25Settings(), len(passages))
    reached = [len(labels) / len(passages) * 100 for labels, _ in index.search(questions, len(passages))]
    return {name: round(value, 1) for name, value in percentiles(reached).items()}


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
        out: Path, work: Path, corpus_kind: str | None = None) -> dict[str, Any]:
    """Build (or reuse) the index, time every variant, write ``hybrid-latency.json`` and ``.md`` in ``out``.
    ``corpus_kind``: the synthetic corpus to build (default ``sentences``), or the one a reused ``index``
    was built from by this benchmark (None: not synthetic, or not known)."""
    built_seconds = None
    if index is None:
        corpus_kind = corpus_kind or "sentences"
        corpus = work / "passages.jsonl"
        log(f"writing {passages:,} synthetic passages ({corpus_kind})")
        write_corpus(corpus, corpus_passages(corpus_kind, squad, passages, seed), "jsonl")
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

        def bm25s_tokens(question: str) -> list[str]:
            tokens: list[str] = bm25s_tokenize([question], side.settings, side._stemmer, ids=False)[0]
            return tokens

        def retrieve(n_threads: int) -> Callable[[str], Any]:
            def call(question: str) -> Any:
                tokens = bm25s_tokens(question)
                return model.retrieve([tokens], k=100, show_progress=False, n_threads=n_threads) if tokens else None
            return call

        def lexical_before(question: str) -> Any:
            tokens = bm25s_tokens(question)
            return best_scores(model.get_scores(tokens), 100) if tokens else None

        identical = all(hybrid_before(retriever, side, q, K) == retriever.search(q, K, mode="hybrid")
                        for q in questions)
        log(f"timing {questions_n} questions x 8 variants x {ROUNDS} rounds (load average {load_start[0]:.2f}); "
            f"hybrid before and now identical: {identical}")
        samples = _timed_blocks({
            "dense": lambda q: retriever.search(q, K),
            "lexical": lambda q: retriever.search(q, K, mode="lexical"),
            "hybrid": lambda q: retriever.search(q, K, mode="hybrid"),
            "hybrid (before)": lambda q: hybrid_before(retriever, side, q, K),
            "bm25s retrieve, n_threads=1": retrieve(1),
            "bm25s retrieve, n_threads=0": retrieve(0),
            "bm25s tokenize + get_scores + best_scores (before)": lexical_before,
            "BM25Index.search (shipped)": lambda q: side.search([q], 100),
        }, questions, ROUNDS)
        load_end = os.getloadavg()
        scored = [len(labels) for labels, _ in side.search(questions, manifest["counts"]["indexed"])]
    real = density(squad, questions, work)
    paired = {clock: np.asarray(samples["hybrid"][clock]) - np.asarray(samples["dense"][clock])
              for clock in ("wall", "cpu")}
    before = {clock: np.asarray(samples["hybrid (before)"][clock]) - np.asarray(samples["dense"][clock])
              for clock in ("wall", "cpu")}
    p50 = {clock: {name: float(np.median(values[clock])) for name, values in samples.items()}
           for clock in ("wall", "cpu")}
    report = {
        "benchmark": "hybrid-latency",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "machine": machine(),
        "threads": threads,
        "load_average": {"start": load_start, "end": load_end},
        "versions": {**versions(), **library_versions(("bm25s", "PyStemmer"))},
        "artifact": {"path": str(artifact), "sources": manifest["artifact"]["sources"], "dim": manifest["spec"]["dim"],
                     "precision": manifest["precision"]},
        "index": {"path": str(index), "passages": manifest["counts"]["indexed"],
                  "vocabulary": manifest["lexical"]["vocabulary"], "ef": manifest["hnsw"]["ef_search"],
                  "build_seconds": built_seconds, "synthetic": corpus_kind is not None, "seed": seed,
                  "corpus": corpus_kind},
        "questions": questions_n,
        "k": K,
        "passages_scoring_above_zero_per_question": percentiles([float(n) for n in scored]),
        "density_percent": {"index": {name: round(value / manifest["counts"]["indexed"] * 100, 1)
                                      for name, value in percentiles([float(n) for n in scored]).items()},
                            "squad_dev_paragraphs": real},
        "identical": identical,
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
        "hybrid_before_minus_dense": {
            "p50_difference_ms": round(p50["wall"]["hybrid (before)"] - p50["wall"]["dense"], 3),
            "median_paired_difference_ms": round(float(np.median(before["wall"])), 3),
            "cpu_p50_difference_ms": round(p50["cpu"]["hybrid (before)"] - p50["cpu"]["dense"], 3),
            "cpu_median_paired_difference_ms": round(float(np.median(before["cpu"])), 3)},
        "speedup": {  # before / now, p50 over p50, measured in the same run
            "hybrid_wall": round(p50["wall"]["hybrid (before)"] / p50["wall"]["hybrid"], 2),
            "hybrid_cpu": round(p50["cpu"]["hybrid (before)"] / p50["cpu"]["hybrid"], 2),
            "lexical_search_wall": round(p50["wall"]["bm25s tokenize + get_scores + best_scores (before)"]
                                         / p50["wall"]["BM25Index.search (shipped)"], 2),
            "lexical_search_cpu": round(p50["cpu"]["bm25s tokenize + get_scores + best_scores (before)"]
                                        / p50["cpu"]["BM25Index.search (shipped)"], 2)},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "hybrid-latency.json", report)
    (out / "hybrid-latency.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a table (docs/hybrid.md quotes it)."""
    m, idx, diff = report["machine"], report["index"], report["hybrid_minus_dense"]
    start, end = report["load_average"]["start"][0], report["load_average"]["end"][0]
    kind = {"sentences": "synthetic passages of SQuAD dev sentences (`--corpus sentences`)",
            "articles": "synthetic DPR-shaped passages of SQuAD dev articles (`--corpus articles`)"}.get(
                idx.get("corpus") or "", "passages")
    lines = [f"Query latency at {idx['passages']:,} {kind} (BM25 vocabulary {idx['vocabulary']:,}), "
             f"{report['date']}, {m['cpu']} (int8 class {m['int8_class']['int8_class']}), {report['threads']} "
             f"threads, load average {start:.2f} at start and {end:.2f} at the end. Artifact: "
             f"{report['artifact']['sources']['question']} (dim {report['artifact']['dim']}, "
             f"{report['artifact']['precision']}), HNSW ef {idx['ef']}. {report['questions']} SQuAD dev questions, "
             f"one per call, k={report['k']}, {report['rounds']} rounds of blocks. Passages scoring above "
             f"zero per question: p50 {report['passages_scoring_above_zero_per_question']['p50']:,.0f}"
             + _density_sentence(report) + ".", "",
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
    if "hybrid_before_minus_dense" in report:
        before, speedup = report["hybrid_before_minus_dense"], report["speedup"]
        lines += [f"Before (the same run, the hybrid search as it shipped before, `hybrid (before)`): "
                  f"{before['p50_difference_ms']:+.2f} ms wall-clock and {before['cpu_p50_difference_ms']:+.2f} ms "
                  f"CPU between the p50s. Before / now, p50 over p50: hybrid {speedup['hybrid_wall']:.2f}x wall "
                  f"clock, {speedup['hybrid_cpu']:.2f}x CPU; the lexical search alone "
                  f"{speedup['lexical_search_wall']:.2f}x wall clock, {speedup['lexical_search_cpu']:.2f}x CPU. Hybrid "
                  f"hits before and now identical (ids and float32 scores, every question): "
                  f"{'yes' if report['identical'] else 'NO'}.", ""]
    return "\n".join(lines)


def _density_sentence(report: dict[str, Any]) -> str:
    if "density_percent" not in report:
        return ""
    index, real = report["density_percent"]["index"], report["density_percent"]["squad_dev_paragraphs"]
    return (f" ({index['p50']:.1f}% of the index; p95 {index['p95']:.1f}%); in SQuAD dev's 2,067 real paragraphs, "
            f"by the same BM25, {real['p50']:.1f}% (p95 {real['p95']:.1f}%)")


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
@click.option("--corpus", "corpus_kind", type=click.Choice(CORPORA), default=None,
              help="The synthetic corpus to build [default: sentences], or, with --index, the one that index was "
                   "built from by this benchmark (for the report).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Results directory.")
def hybrid_latency_command(artifact: Path, squad: Path, index: Path | None, passages: int, questions_n: int, seed: int,
                           threads: int, corpus_kind: str | None, out: Path) -> None:
    """What hybrid search adds to the query p50 at 200k passages, and the lexical selection's variants."""
    with tempfile.TemporaryDirectory(prefix="fastdpr-hybrid-latency-") as tmp:
        report = run(artifact, squad, index, passages, questions_n, seed, threads, out, Path(tmp), corpus_kind)
    click.echo(json.dumps(report["hybrid_minus_dense"]))
    click.echo(render_markdown(report))
