"""Building and opening an index directory: a self-contained, searchable corpus.

Layout of ``INDEX_DIR``::

    manifest.json        format, artifact identity and spec, counts, HNSW settings, sha256 of files
    encoder/model.onnx   the question encoder at the index's precision (+ tokenizer.json)
    vectors.npy          float32 [count, dim] passage embeddings (exact search; rebuilding the graph)
    hnsw.bin             hnswlib graph over inner product, labels 0..count-1
    passages.sqlite      passage id, title and text by label

The directory is built in a staging directory and renamed into place at the end: an interrupted
build (Ctrl-C, kill -9) leaves no ``INDEX_DIR`` that loads.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import CorpusError, FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, file_table, library_versions, write_json
from fastdpr.common.progress import corpus_bar
from fastdpr.common.progress import finish as finish_bar
from fastdpr.common.publish import atomic_directory
from fastdpr.corpus.reader import CorpusReport, Passage, read_corpus
from fastdpr.index.ann import build_hnsw, save_hnsw
from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from fastdpr.index.lexical_side import write_lexical_side
from fastdpr.index.manifest import INDEX_FORMAT, INDEX_FORMAT_VERSION, load_index_manifest
from fastdpr.index.store import PassageStoreWriter
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, ENCODE_CHUNK
from fastdpr.model.verify import Int8Verification, int8_thresholds, verify_int8_here

__all__ = ["IndexOptions", "build_index"]


@dataclass(frozen=True)
class IndexOptions:
    """How to build an index (CLI: ``fastdpr index``)."""

    #: Precision of the passage encoder, and of the question encoder unless ``question_precision`` says
    #: otherwise. None: the artifact's encoding plan (``Artifact.side_precision``).
    precision: str | None = None
    question_precision: str | None = None
    batch_size: int = DEFAULT_PASSAGE_BATCH_SIZE
    threads: int | None = None
    hnsw_m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF
    strict: bool = False
    force: bool = False
    # int8 is verified on this machine before encoding (fastdpr/model/verify.py); True indexes even when the
    # check fails (the failure is still recorded in the manifest).
    allow_unverified_int8: bool = False
    progress: bool | None = None  # None: a bar on a terminal, quiet when piped
    #: The lexical side to build beside the vectors (issue #23): None, or "bm25" (``--lexical bm25``).
    lexical: str | None = None


def _chunks(passages: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    iterator = iter(passages)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_npy_from_raw(raw: Path, target: Path, count: int, dim: int) -> None:
    """Prefix raw float32 rows with a .npy header, streaming (the vectors never sit in memory)."""
    with open(target, "wb") as out, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
        shutil.copyfileobj(src, out, length=1 << 22)



def side_precisions(artifact: Artifact, options: IndexOptions) -> tuple[str, str]:
    """(passage precision, question precision) for a build: the options, else the artifact's plan. Fails
    at once when the artifact lacks a model at either precision."""
    precision = options.precision or artifact.side_precision("context")
    question = options.question_precision or options.precision or artifact.side_precision("question")
    artifact.model_path("context", precision)
    artifact.model_path("question", question)
    return precision, question


def question_encoder_files(artifact: Artifact, precision: str, encoder_dir: Path) -> dict[str, Any]:
    """Copy the question encoder at ``precision`` (and its tokenizer) into ``encoder_dir``; the
    manifest's ``question_encoder`` entry (an int8 encoder keeps the probes its loads re-check)."""
    encoder_dir.mkdir(exist_ok=True)
    shutil.copy2(artifact.model_path("question", precision), encoder_dir / "model.onnx")
    shutil.copy2(artifact.tokenizer_path("question"), encoder_dir / "tokenizer.json")
    probe_check = write_question_probes(artifact, encoder_dir) if precision == "int8" else None
    return {"model": "encoder/model.onnx", "tokenizer": "encoder/tokenizer.json", "precision": precision,
            "probe_check": probe_check}


def int8_check_for_build(artifact: Artifact, options: IndexOptions, precisions: tuple[str, str]) -> (
        Int8Verification | None):
    """The int8 check on this CPU when either side runs int8 (None otherwise)."""
    return verify_int8_for_build(artifact, options) if "int8" in precisions else None


def build_index(artifact_dir: Path | str, corpus: Path | str, out: Path | str, fmt: str = "auto",
                options: IndexOptions | None = None) -> dict[str, Any]:
    """Encode ``corpus`` with the artifact's context encoder and write a searchable index to ``out``.

    Returns the index manifest. Raises :class:`FastDPRError` subclasses for bad input; skipped rows
    are counted (and named in the manifest), never dropped silently.
    """
    options = options or IndexOptions()
    artifact = Artifact.load(artifact_dir)
    precision, question_precision = side_precisions(artifact, options)
    reader = read_corpus(corpus, fmt, strict=options.strict)  # type: ignore[arg-type]  # fails early on a missing file / unknown format
    int8_check = int8_check_for_build(artifact, options, (precision, question_precision))
    encoder = artifact.encoder("context", precision, options.threads)
    started = time.perf_counter()
    with atomic_directory(Path(out), options.force, IndexLoadError) as staging:
        raw = staging / "vectors.f32.partial"
        count = 0
        quiet = None if options.progress is None else not options.progress  # None: tqdm decides by isatty
        bar = corpus_bar(reader.path, options.progress, desc="encoding")
        try:
            with PassageStoreWriter(staging / "passages.sqlite") as store, open(raw, "wb") as vectors_out:
                for chunk in _chunks(reader, ENCODE_CHUNK):
                    vectors = encoder.encode_passages([(p.title, p.text) for p in chunk], options.batch_size,
                                                      on_batch=bar.update)
                    if not np.isfinite(vectors).all():
                        raise FastDPRError("the encoder produced NaN/inf embeddings; is the artifact damaged?")
                    vectors_out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                    store.add_many((count + i, p.id, p.title, p.text) for i, p in enumerate(chunk))
                    count += len(chunk)
            finish_bar(bar)
        finally:
            bar.close()
        report: CorpusReport = reader.report
        if count == 0:  # the reader raises for an empty corpus; this guards a reader change
            raise CorpusError(f"{corpus}: no passages to index")
        encode_seconds = time.perf_counter() - started
        dim = artifact.spec.dim
        write_npy_from_raw(raw, staging / "vectors.npy", count, dim)
        raw.unlink()
        vectors_map = np.load(staging / "vectors.npy", mmap_mode="r", allow_pickle=False)
        t0 = time.perf_counter()
        graph_bar = tqdm(total=count, unit=" vectors", desc="hnsw graph", disable=quiet)
        graph = build_hnsw(vectors_map, m=options.hnsw_m, ef_construction=options.ef_construction,
                           threads=options.threads,
                           on_progress=lambda done, total: graph_bar.update(done - graph_bar.n))
        graph_bar.close()
        save_hnsw(graph, staging / "hnsw.bin")
        del graph, vectors_map
        graph_seconds = time.perf_counter() - t0
        question_encoder = question_encoder_files(artifact, question_precision, staging / "encoder")
        lexical = write_lexical_side(staging, options.lexical)  # issue #23: BM25 from the stored passages
        manifest: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "artifact": {
                "path": str(Path(artifact_dir).resolve()),
                "identity": artifact.identity,
                "sources": artifact.sources,
                "quantization": artifact.typed.quantization,
            },
            "spec": artifact.spec.to_dict(),
            "precision": precision,
            "question_encoder": question_encoder,
            "cpu": this_cpu().to_dict(),
            "int8_verification": None if int8_check is None else int8_check.to_dict(),
            "corpus": {"path": str(Path(corpus).resolve()), "format": reader.format},
            "counts": {"indexed": count, "skipped_total": report.total_skipped, "skipped": report.skipped,
                       "skipped_examples": report.examples, "no_title": report.no_title},
            "vectors": {"file": "vectors.npy", "dtype": "float32", "shape": [count, dim]},
            "store": "passages.sqlite",
            "lexical": lexical,  # issue #23 (None: dense only)
            "hnsw": {"file": "hnsw.bin", "space": "ip", "score": "dot product (1 - hnswlib distance)",
                     "m": options.hnsw_m, "ef_construction": options.ef_construction,
                     "ef_search": options.ef_search},
            "build": {"encode_seconds": round(encode_seconds, 2), "graph_seconds": round(graph_seconds, 2),
                      "passages_per_s": round(count / max(encode_seconds, 1e-9), 1),
                      "batch_size": options.batch_size, "threads": options.threads},
            "versions": library_versions(("fastdpr", "onnxruntime", "tokenizers", "hnswlib", "numpy")),
        }
        # The sha256 of every file, read back from disk after the last write: the full check of a build.
        manifest["files"] = file_table(staging)
        write_json(staging / MANIFEST_NAME, manifest)
        load_index_manifest(staging, "sizes")  # what we wrote parses under the schema every load applies
    return manifest


def verify_int8_for_build(artifact: Artifact, options: IndexOptions) -> Int8Verification:
    """Check the artifact's int8 graphs on this CPU before spending hours encoding a corpus with them."""
    check = verify_int8_here(artifact, "index build", options.threads)
    if not check.passed and not options.allow_unverified_int8:
        raise FastDPRError(
            f"the int8 graph of {artifact.root} does not reproduce PyTorch on this CPU "
            f"({check.cpu['int8_class']}): {'; '.join(check.failures)}. Index with --precision fp32, or re-export "
            "with a recipe whose weights are 7-bit (exact on every x86 class: --quantize "
            "dynamic-per-channel-smooth-auto-7bit); --allow-unverified-int8 indexes anyway.")
    return check


def write_question_probes(artifact: Artifact, encoder_dir: Path) -> dict[str, Any]:
    """Keep the probe questions and PyTorch's embeddings of them beside the index's question encoder,
    so every load can check the int8 graph on the machine it runs on (a few milliseconds)."""
    probes = artifact.probes()
    (encoder_dir / "probe_questions.json").write_text(json.dumps(list(probes.questions), ensure_ascii=False),
                                                       encoding="utf-8")
    np.save(encoder_dir / "probe_reference.npy", artifact.probe_reference("question"), allow_pickle=False)
    return {"questions": "encoder/probe_questions.json", "reference": "encoder/probe_reference.npy",
            "batch_size": artifact.typed.probes.batch_size,
            # Rows from here on were held out from int8 calibration (0: artifacts without the split).
            "held_out_from": probes.calibration_questions or 0,
            "thresholds": int8_thresholds(artifact)}
