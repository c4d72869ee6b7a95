"""``python -m benchmarks vectors-recall``: DPR answer recall on SQuAD dev of every ``--vectors`` kind
(issue #22) against fp32 exact search, the same artifact, passages and question vectors.

Each system is an index built by ``build_index`` with its ``IndexOptions`` (a passage's vector depends
only on its text, so every index holds the same float32 vectors), searched with the same question
vectors (encoded once by the fp32 index's question encoder). Reported per system: top-k answer recall
(DPR ``has_answer``) and its difference to fp32 exact in points, questions that flipped, and recall@100
of the hit lists against exact search's.

    python -m benchmarks vectors-recall --artifact MINILM_ARTIFACT --out results/vectors-x86-.../squad.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import click

from benchmarks.common import log, machine, versions
from benchmarks.parity import KS, first_ranks, flips, recall
from fastdpr.common.integrity import library_versions
from fastdpr.corpus.reader import write_corpus
from fastdpr.corpus.squad import load_squad
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.search.retriever import Retriever

DEFAULT_SQUAD = Path("/work/shared/data/squad/dev-v1.1.json")
REFERENCE = "fp32-exact"
#: The systems measured: name -> index options beyond the shared ones (``exact`` is a search setting).
SYSTEMS: dict[str, dict[str, Any]] = {
    "fp32-hnsw": {},
    "fp16": {"vectors": "fp16"},
    "int8": {"vectors": "int8"},
    "pq": {"vectors": "pq"},
    # At SQuAD's 2,067 passages the default nprobe (64) covers every list (53): these probe a few, as a
    # large index does, to show what the inverted lists cost on real vectors.
    "int8-nprobe4": {"vectors": "int8", "nprobe": 4},
    "pq-nprobe4": {"vectors": "pq", "nprobe": 4},
}


def reused(index: Path, options: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an index a previous run of this workdir built with these options (None: build it)."""
    try:
        manifest: dict[str, Any] = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    except OSError:
        log(f"{index.name}: building")
        return None
    search = manifest["vectors"].get("search") or {"kind": "fp32", "nprobe": None}
    if search["kind"] != options.get("vectors", "fp32") or options.get("nprobe", search["nprobe"]) != search["nprobe"]:
        log(f"{index.name}: other settings, rebuilding")
        return None
    log(f"{index.name}: reusing the index a previous run built")
    return manifest


def render_table(report: dict[str, Any]) -> str:
    """The report as the Markdown table docs/scale.md publishes (tests/test_published_figures.py checks it)."""
    reference = report["systems"][REFERENCE]["answer_recall"]
    lines = [f"| SQuAD dev, {report['questions']:,} questions, {report['passages']:,} passages | "
             + " | ".join(f"Top-{k}" for k in KS) + " | recall@100 vs exact |", "|---|" + "---:|" * (len(KS) + 1),
             f"| {REFERENCE} (answer recall, %) | " + " | ".join(f"{100 * reference[str(k)]:.2f}" for k in KS)
             + " | - |"]
    for name, system in report["systems"].items():
        if name != REFERENCE:
            lines.append(f"| {name} (points vs {REFERENCE}) | "
                         + " | ".join(f"{system['points_vs_fp32_exact'][str(k)]:+.2f}" for k in KS)
                         + f" | {system['recall_at_100_vs_exact']:.4f} |")
    return "\n".join(lines)


@click.command("vectors-recall")
@click.option("--artifact", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--squad", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_SQUAD,
              show_default=True)
@click.option("--precision", type=click.Choice(["int8", "fp32"]), default=None,
              help="Encoder precision (default: the artifact's plan).")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--workdir", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
def vectors_recall_command(artifact: Path, squad: Path, precision: str | None, threads: int, workdir: Path,
                           out: Path) -> None:
    """Answer recall of fp32 HNSW, fp16, int8 and pq vectors against fp32 exact search, on SQuAD dev."""
    load_before = os.getloadavg()
    passages, questions = load_squad(squad)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "squad-passages.jsonl"
    write_corpus(corpus, passages, "jsonl")
    text_by_id = {p.id: p.text for p in passages}
    shared: dict[str, Any] = {"precision": precision, "threads": threads, "force": True, "progress": False}
    ranked: dict[str, list[list[str]]] = {}
    built: dict[str, Any] = {}
    vectors = None
    for name, options in {REFERENCE: {}, **SYSTEMS}.items():
        index = workdir / f"index-{'fp32' if name.startswith('fp32') else name}"
        if name != "fp32-hnsw":  # the fp32 index serves both fp32 systems
            manifest = reused(index, options) or build_index(artifact, corpus, index, "jsonl",
                                                             IndexOptions(**shared, **options))
            built[name] = {"vectors": manifest["vectors"], "build": manifest["build"],
                           "bytes": {rel: entry["bytes"] for rel, entry in manifest["files"].items()
                                     if rel.startswith(("vectors", "hnsw"))}}
        with Retriever.load(index, threads=threads, exact=name == REFERENCE) as retriever:
            if vectors is None:
                log(f"encoding {len(questions)} questions")
                vectors = retriever.encode_questions([q.question for q in questions])
            ranked[name] = [[h.id for h in row] for row in retriever.search_vectors(vectors, max(KS))]
    reference_ranks, _ = first_ranks(ranked[REFERENCE], questions, text_by_id)
    reference = recall(reference_ranks)
    systems: dict[str, Any] = {REFERENCE: {"answer_recall": reference, **built[REFERENCE]}}
    for name in SYSTEMS:
        ranks, _ = first_ranks(ranked[name], questions, text_by_id)
        found = recall(ranks)
        overlap = sum(len(set(a) & set(b)) for a, b in zip(ranked[name], ranked[REFERENCE], strict=True))
        systems[name] = {"answer_recall": found,
                         "points_vs_fp32_exact": {k: round(100 * (found[k] - reference[k]), 2) for k in found},
                         "flips_vs_fp32_exact": flips(reference_ranks, ranks),
                         "recall_at_100_vs_exact": round(overlap / (len(questions) * max(KS)), 4),
                         **built.get(name, {})}
        log(f"{name}: {systems[name]['points_vs_fp32_exact']}")
    report = {"benchmark": "vectors-recall", "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": {**versions(), **library_versions(("faiss-cpu",))},
              "artifact": str(artifact), "squad": str(squad), "passages": len(passages), "questions": len(questions),
              "load_average_before_after": [load_before, os.getloadavg()], "systems": systems}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(render_table(report) + "\n")
    log(f"wrote {out}")
