"""Hybrid retrieval on SQuAD v1.1 dev (issue #23): DPR answer recall of dense, lexical (BM25) and hybrid
search side by side, the fusion weight chosen on held-out questions, query latency and disk overhead.

    python -m benchmarks hybrid --artifact ARTIFACT --squad ../shared/data/squad/dev-v1.1.json \
        --out benchmarks/results/hybrid-<int8 class>

The questions are split once, by a fixed seed: ``--tune-questions`` of them (default 1,000, seed 23) choose
the lexical weight of the weighted fusion (the best Top-20 on them; ties: the best mean over every k) and
are then excluded; recall is reported on all the others (9,570 of SQuAD dev's 10,570). Dense and lexical
recall on all 10,570 questions are reported too, for comparison with the parity benchmark.

The index is built as a user builds it (``fastdpr index --lexical bm25``: the artifact's precision plan,
HNSW). Hybrid recall is computed from each side's top 100 (what ``Retriever.search(mode="hybrid")``
fuses), and checked against the retriever itself on a sample of questions.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.common import log, machine, percentiles, versions
from benchmarks.parity import KS, first_ranks, recall
from fastdpr.common.integrity import library_versions, write_json
from fastdpr.corpus.reader import write_corpus
from fastdpr.corpus.squad import load_squad
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.lexical.fusion import DEFAULT_WEIGHT, fuse
from fastdpr.search.hybrid import HYBRID_DEPTH
from fastdpr.search.retriever import Retriever

#: Lexical weights tried on the tuning split.
WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
#: Questions searched one at a time for latency, per mode (interleaved, after a warm-up).
LATENCY_QUESTIONS = 300
#: Questions whose offline fusion is compared with Retriever.search_batch(mode="hybrid").
CHECK_QUESTIONS = 200


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ranked_ids(ranked: list[tuple[np.ndarray, np.ndarray]], ids: list[str], k: int = 100) -> list[list[str]]:
    return [[ids[int(label)] for label in labels[:k]] for labels, _ in ranked]


def _choose_weight(table: dict[str, dict[str, float]]) -> float:
    """The weight with the best Top-20 on the tuning split; ties: best mean over every k, then closer to 0.5."""
    return float(max(table, key=lambda w: (table[w]["20"], sum(table[w].values()), -abs(float(w) - 0.5))))


def _latency(retriever: Retriever, questions: list[str], rounds_k: int) -> dict[str, Any]:
    """p50/p95/p99 ms of one question per call, per mode, interleaved question by question."""
    modes = ("dense", "lexical", "hybrid")
    for mode in modes:  # warm-up (opens the lexical side, ONNX Runtime arenas)
        retriever.search_batch(questions[:5], k=rounds_k, mode=mode)
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for i, question in enumerate(questions):
        order = modes[i % 3:] + modes[:i % 3]  # rotate, so no mode always runs first
        for mode in order:
            start = time.perf_counter()
            retriever.search(question, k=rounds_k, mode=mode)
            samples[mode].append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {mode: percentiles(values) for mode, values in samples.items()}
    out["hybrid_minus_dense_p50_ms"] = round(out["hybrid"]["p50"] - out["dense"]["p50"], 3)
    out["questions"] = len(questions)
    out["k"] = rounds_k
    return out


def run_hybrid(artifact: Path, squad: Path, out: Path, tune_questions: int, seed: int, threads: int,
               workdir: Path) -> dict[str, Any]:
    """Build, search, tune on the tuning split, evaluate on the rest; the report (also written to ``out``)."""
    load_start = os.getloadavg()
    passages, questions = load_squad(squad)
    ids = [p.id for p in passages]
    text_by_id = {p.id: p.text for p in passages}
    corpus = workdir / "squad-dev-passages.jsonl"
    write_corpus(corpus, passages, "jsonl")
    index_dir = workdir / "index"
    log(f"indexing {len(passages)} passages with --lexical bm25")
    t0 = time.perf_counter()
    manifest = build_index(artifact, corpus, index_dir, "jsonl",
                           IndexOptions(threads=threads, lexical="bm25", progress=False))
    build_seconds = time.perf_counter() - t0
    total, lexical_bytes = _dir_bytes(index_dir), _dir_bytes(index_dir / "lexical")
    disk = {"index_bytes": total, "lexical_bytes": lexical_bytes,
            "lexical_share_of_index_pct": round(100 * lexical_bytes / total, 2),
            "overhead_over_dense_index_pct": round(100 * lexical_bytes / (total - lexical_bytes), 2),
            "lexical_build_seconds": manifest["lexical"]["build_seconds"],
            "index_build_seconds": round(build_seconds, 1)}
    log(f"disk: lexical {lexical_bytes:,} of {total:,} bytes ({disk['overhead_over_dense_index_pct']}% over dense)")

    texts = [q.question for q in questions]
    with Retriever.load(index_dir, threads=threads) as retriever:
        log(f"encoding {len(texts)} questions")
        vectors = retriever.encode_questions(texts)
        dense_labels, dense_scores = retriever.searcher.search(vectors, HYBRID_DEPTH)
        dense = list(zip(dense_labels, dense_scores, strict=True))
        log("BM25 search")
        t0 = time.perf_counter()
        lexical = retriever.hybrid.lexical.search(texts, HYBRID_DEPTH)
        lexical_seconds = time.perf_counter() - t0
        no_lexical_hits = sum(1 for labels, _ in lexical if len(labels) == 0)

        def ranks(ranked_rows: list[tuple[np.ndarray, np.ndarray]], rows: list[int]) -> list[int | None]:
            # ranked_rows[j] is the ranking of question rows[j]
            return first_ranks(_ranked_ids(ranked_rows, ids), [questions[i] for i in rows], text_by_id)[0]

        def fused(rows: list[int], fusion: str, weight: float) -> list[tuple[np.ndarray, np.ndarray]]:
            return [fuse(dense[i], lexical[i], 100, fusion=fusion, weight=weight) for i in rows]

        order = list(range(len(questions)))
        tune = sorted(random.Random(seed).sample(order, tune_questions))
        held = set(tune)
        evaluate = [i for i in order if i not in held]
        log(f"tuning the lexical weight on {len(tune)} questions (seed {seed})")
        tuning = {f"{w:.2f}": recall(ranks(fused(tune, "weighted", w), tune)) for w in WEIGHTS}
        weight = _choose_weight(tuning)
        log(f"chosen weight {weight}; evaluating on {len(evaluate)} questions")
        dense_ev = [dense[i] for i in evaluate]
        lexical_ev = [lexical[i] for i in evaluate]
        systems = {
            "dense": recall(ranks(dense_ev, evaluate)),
            "lexical (BM25)": recall(ranks(lexical_ev, evaluate)),
            f"hybrid weighted w={weight:.2f} (tuned)": recall(ranks(fused(evaluate, "weighted", weight), evaluate)),
            "hybrid rrf (k=60, untuned)": recall(ranks(fused(evaluate, "rrf", 0.5), evaluate)),
        }
        if weight != DEFAULT_WEIGHT:
            systems[f"hybrid weighted w={DEFAULT_WEIGHT:.2f} (shipped default)"] = recall(
                ranks(fused(evaluate, "weighted", DEFAULT_WEIGHT), evaluate))
        everything = {"dense": recall(ranks(dense, order)), "lexical (BM25)": recall(ranks(lexical, order))}

        # The offline fusion is what the retriever does (same candidates, same fusion).
        sample = random.Random(seed + 1).sample(evaluate, CHECK_QUESTIONS)
        got = retriever.search_batch([texts[i] for i in sample], k=100, mode="hybrid", weight=weight)
        expected = _ranked_ids(fused(sample, "weighted", weight), ids)
        agree = sum([h.id for h in hits] == want for hits, want in zip(got, expected, strict=True))
        log(f"retriever agrees with the offline fusion on {agree}/{len(sample)} questions")

        log(f"latency: {LATENCY_QUESTIONS} questions one by one per mode")
        latency = _latency(retriever, [texts[i] for i in random.Random(seed + 2).sample(evaluate, LATENCY_QUESTIONS)],
                           rounds_k=20)

    best_alone = max(systems["dense"]["20"], systems["lexical (BM25)"]["20"])
    tuned_name = next(name for name in systems if name.endswith("(tuned)"))
    report = {
        "benchmark": "hybrid",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "threads": threads,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "versions": {**versions(), **library_versions(("bm25s", "PyStemmer"))},
        "model": {"artifact": str(artifact), "sources": manifest["artifact"]["sources"],
                  "precision": manifest["precision"], "question_precision": manifest["question_encoder"]["precision"],
                  "search": "HNSW", "ef": manifest["hnsw"]["ef_search"]},
        "data": {"squad": str(squad), "passages": len(passages), "questions": len(questions),
                 "tuning_questions": len(tune), "evaluated_questions": len(evaluate), "seed": seed},
        "lexical": {key: manifest["lexical"][key] for key in ("bm25", "tokenizer", "fields", "vocabulary", "versions")},
        "fusion": {"depth": HYBRID_DEPTH, "weights_tried": list(WEIGHTS), "chosen_weight": weight,
                   "shipped_default_weight": DEFAULT_WEIGHT},
        "tuning": tuning,
        "recall_evaluated": systems,
        "recall_all_questions": everything,
        "questions_without_lexical_hits": no_lexical_hits,
        "bm25_seconds_all_questions": round(lexical_seconds, 2),
        "goal": {"hybrid_top20_minus_best_alone_points": round(100 * (systems[tuned_name]["20"] - best_alone), 2),
                 "target_points": 2.0, "met": systems[tuned_name]["20"] - best_alone >= 0.02},
        "retriever_check": {"questions": len(sample), "identical_top100": agree},
        "latency_ms": latency,
        "disk": disk,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "hybrid.json", report)
    (out / "hybrid.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables (docs/hybrid.md quotes them)."""
    data, m, lex = report["data"], report["machine"], report["lexical"]
    row = " | ".join
    lines = [
        f"DPR answer recall on SQuAD v1.1 dev ({data['passages']:,} passages), {report['date']}, {m['cpu']} "
        f"(int8 class {m['int8_class']['int8_class']}), {report['threads']} threads. Model: "
        f"{report['model']['sources']['question']} (passages {report['model']['precision']}, questions "
        f"{report['model']['question_precision']}, HNSW ef {report['model']['ef']}). BM25: bm25s "
        f"{lex['versions']['bm25s']}, k1 {lex['bm25']['k1']}, b {lex['bm25']['b']}, {lex['bm25']['method']}, "
        "English stop words, PyStemmer English.",
        "",
        f"Evaluated on the {data['evaluated_questions']:,} questions not used for tuning (the lexical weight was "
        f"chosen on {data['tuning_questions']:,} others, seed {data['seed']}: chosen "
        f"w = {report['fusion']['chosen_weight']:.2f}):",
        "",
        "| System | " + row(f"Top-{k}" for k in KS) + " |",
        "|---|" + "---|" * len(KS),
    ]
    for name, values in report["recall_evaluated"].items():
        lines.append(f"| {name} | " + row(f"{100 * values[str(k)]:.2f}" for k in KS) + " |")
    goal = report["goal"]
    lines += ["", f"Hybrid Top-20 minus the better system alone: {goal['hybrid_top20_minus_best_alone_points']:+.2f} "
              f"points (goal: at least +{goal['target_points']:.1f}; {'met' if goal['met'] else 'not met'}).", "",
              f"All {data['questions']:,} questions (no tuning involved):", "",
              "| System | " + row(f"Top-{k}" for k in KS) + " |", "|---|" + "---|" * len(KS)]
    for name, values in report["recall_all_questions"].items():
        lines.append(f"| {name} | " + row(f"{100 * values[str(k)]:.2f}" for k in KS) + " |")
    lat, disk = report["latency_ms"], report["disk"]
    lines += ["", f"Query latency, one question per call, k={lat['k']}, {lat['questions']} questions interleaved "
              f"(ms; load average {report['load_average']['start'][0]:.2f} at start):", "",
              "| Mode | p50 | p95 | p99 |", "|---|---|---|---|"]
    for mode in ("dense", "lexical", "hybrid"):
        lines.append(f"| {mode} | {lat[mode]['p50']:.2f} | {lat[mode]['p95']:.2f} | {lat[mode]['p99']:.2f} |")
    lines += ["", f"Hybrid adds {lat['hybrid_minus_dense_p50_ms']:.2f} ms to the dense p50.", "",
              f"Disk: the lexical side is {disk['lexical_bytes']:,} bytes of an index of {disk['index_bytes']:,} "
              f"({disk['lexical_share_of_index_pct']:.2f}% of it, +{disk['overhead_over_dense_index_pct']:.2f}% over "
              f"the dense index); built in {disk['lexical_build_seconds']} s.", "",
              "Tuning split, Top-20 by lexical weight: "
              + ", ".join(f"{w}: {100 * v['20']:.2f}" for w, v in report["tuning"].items()) + ".", ""]
    return "\n".join(lines)


@click.command("hybrid")
@click.option("--artifact", required=True, type=click.Path(path_type=Path, exists=True),
              help="An exported artifact (e.g. `fastdpr export --encoder builtin:all-MiniLM-L6-v2-dpr`).")
@click.option("--squad", required=True, type=click.Path(path_type=Path, exists=True), help="SQuAD v1.1 dev JSON.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Results directory.")
@click.option("--tune-questions", type=click.IntRange(1, None), default=1000, show_default=True,
              help="Questions that choose the fusion weight and are excluded from the evaluation.")
@click.option("--seed", type=int, default=23, show_default=True, help="Seed of the tuning split.")
@click.option("--threads", type=click.IntRange(1, 256), default=os.cpu_count() or 1, show_default=True)
def hybrid_command(artifact: Path, squad: Path, out: Path, tune_questions: int, seed: int, threads: int) -> None:
    """Dense vs BM25 vs hybrid answer recall on SQuAD dev, weight tuned on held-out questions."""
    with tempfile.TemporaryDirectory(prefix="fastdpr-hybrid-") as tmp:
        report = run_hybrid(artifact, squad, out, tune_questions, seed, threads, Path(tmp))
    click.echo(render_markdown(report))
