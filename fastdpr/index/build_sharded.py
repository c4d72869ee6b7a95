"""Building a sharded index in bounded memory, resumably (``fastdpr index --shard-size N [--resume]``).

The corpus is streamed once: ``shard_size`` passages are encoded into a shard directory (vectors go
to disk chunk by chunk), its HNSW graph is built from the memory-mapped vectors, the shard is
published by a rename, and only then is the next shard started. Memory is bounded by one shard's
graph, whatever the corpus size. Encode chunks follow corpus positions, not shard boundaries
(:mod:`fastdpr.index.stream`), so the vectors are those of an unsharded build.

Everything happens in ``.INDEX.building-sharded/`` next to ``INDEX``; ``build-state.json`` there,
written before the first passage, records the artifact, corpus and settings. A build interrupted in
any way (kill -9, Ctrl-C, a full disk) leaves that directory behind: ``--resume`` keeps the finished
shards that pass their hash check, checks that the corpus still starts with their passages, redoes
the shard in progress from its first passage, and goes on. The final rename into ``INDEX`` is atomic,
as for an unsharded index.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import CorpusError, FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, file_table, library_versions, sha256_file, write_json
from fastdpr.common.progress import corpus_bar, finish
from fastdpr.common.publish import build_lock, finalize_tree, publish, recover
from fastdpr.corpus.reader import CorpusReader, Passage, read_corpus
from fastdpr.index.ann import build_hnsw, save_hnsw
from fastdpr.index.build import (
    IndexOptions,
    int8_check_for_build,
    question_encoder_files,
    side_precisions,
    write_npy_from_raw,
)
from fastdpr.index.lexical_side import lexical_entry, write_lexical_side
from fastdpr.index.load import load_sharded_manifest
from fastdpr.index.manifest import (
    INDEX_FORMAT,
    INDEX_FORMAT_VERSION,
    SHARDED_INDEX_FORMAT,
    SHARDED_INDEX_FORMAT_VERSION,
    ShardEntry,
    load_index_manifest,
)
from fastdpr.index.store import PassageStoreWriter
from fastdpr.index.stream import EncodedStream
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import ENCODE_CHUNK
from fastdpr.model.verify import Int8Verification

STATE_NAME = "build-state.json"
STATE_FORMAT = "fastdpr-sharded-build"
SHARDS_DIR = "shards"
_SAMPLE = 1 << 20  # bytes hashed at each end of the corpus for its fingerprint


class ResumeRefused(IndexLoadError):
    """An interrupted build cannot be continued with these inputs (its directory is left untouched)."""


def staging_dir(out: Path) -> Path:
    """Where a sharded build of ``out`` happens: next to it (same filesystem: the rename is atomic),
    at a fixed name so that ``--resume`` finds it."""
    return out.parent / f".{out.name}.building-sharded"


def corpus_fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and a sha256 of the first and last MiB: cheap on a 13 GB corpus, and any
    edit, append or replacement changes at least one of them (hashing it all would take minutes)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if stat.st_size > _SAMPLE:
            handle.seek(max(_SAMPLE, stat.st_size - _SAMPLE))
            digest.update(handle.read(_SAMPLE))
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def _build_state(artifact: Artifact, precision: str, reader: CorpusReader, shard_size: int,
                 options: IndexOptions) -> dict[str, Any]:
    # Everything that changes which passages land where, or their vectors: a resumed build must use
    # the same values or its shards would not belong together. Threads are left out on purpose.
    return {
        "format": STATE_FORMAT,
        "artifact": {"path": str(artifact.root.resolve()), "identity": artifact.identity},
        "precision": precision,
        "corpus": {"path": str(reader.path.resolve()), "format": reader.format, **corpus_fingerprint(reader.path)},
        "settings": {"shard_size": shard_size, "batch_size": options.batch_size, "strict": options.strict,
                     "hnsw_m": options.hnsw_m, "ef_construction": options.ef_construction,
                     "ef_search": options.ef_search, "lexical": options.lexical},
    }


def _state_difference(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between an interrupted build's state and this one's, in words (None: nothing)."""
    if recorded.get("format") != STATE_FORMAT:
        return "its build state is unreadable"
    if recorded["artifact"]["identity"] != current["artifact"]["identity"]:
        return f"the artifact differs (was {recorded['artifact']['path']})"
    if recorded["precision"] != current["precision"]:
        return f"the precision differs (was {recorded['precision']})"
    old, new = recorded["corpus"], current["corpus"]
    if any(old[key] != new[key] for key in ("format", "bytes", "mtime_ns", "sample_sha256")):
        return f"the corpus differs (was {old['path']}, {old['bytes']} bytes, {old['format']})"
    changed = [f"{key} was {value}" for key, value in recorded["settings"].items()
               if current["settings"].get(key) != value]
    if changed:
        return "the settings differ (" + ", ".join(changed) + ")"
    return None


def _prepare_staging(out: Path, state: dict[str, Any], force: bool, resume: bool) -> Path:
    """The staging directory to build in: fresh, or an interrupted build's when resuming."""
    staging = staging_dir(out)
    if out.exists() and not force:
        raise IndexLoadError(f"{out} already exists; pass --force to overwrite it")
    state_file = staging / STATE_NAME
    if staging.exists() and state_file.is_file():
        if not resume and not force:
            raise IndexLoadError(f"an interrupted build of {out} is in {staging}; pass --resume to continue it "
                                 "or --force to start over")
        if resume:
            try:
                recorded = json.loads(state_file.read_text(encoding="utf-8"))
                difference = _state_difference(recorded, state)
            except (OSError, ValueError, KeyError, TypeError):
                difference = "its build state is unreadable"
            if difference:
                raise ResumeRefused(f"cannot resume the build of {out}: {difference}; rerun with the same "
                                     "artifact, corpus and settings, or with --force instead of --resume to "
                                     "start over")
            return staging
    # No usable build state (none yet, killed before writing it, or --force): start from scratch.
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    write_json(state_file, state)
    return staging


def _finished_shards(staging: Path) -> list[ShardEntry]:
    """The shards an interrupted build completed, checked; everything else under shards/ is removed.

    Shards are published by a rename once complete, so a shard directory is either whole or absent;
    the hash check catches damage after the fact. The first missing or bad shard ends the list.
    """
    shards = staging / SHARDS_DIR
    shards.mkdir(exist_ok=True)
    kept: list[ShardEntry] = []
    offset = 0
    while (shard_dir := shards / f"{len(kept):05d}").is_dir():
        try:
            manifest = load_index_manifest(shard_dir, "sha256")
        except IndexLoadError:
            break
        if manifest.shard_label_offset != offset:
            break
        count = manifest.count
        kept.append(ShardEntry(f"{SHARDS_DIR}/{shard_dir.name}", count, offset, sha256_file(shard_dir / MANIFEST_NAME)))
        offset += count
    keep = {Path(entry.dir).name for entry in kept}
    for path in shards.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return kept


def _skip_finished(passages: Iterator[Passage], staging: Path, entry: ShardEntry, tail: deque[Passage]) -> None:
    """Read past a finished shard's passages, checking that the corpus yields exactly the ids it holds;
    the last passages read are kept in ``tail``."""
    with sqlite3.connect((staging / entry.dir / "passages.sqlite").resolve().as_uri() + "?mode=ro", uri=True) as conn:
        stored = conn.execute("SELECT label, id FROM passages ORDER BY label")
        for (label, pid), passage in zip(stored, chain(islice(passages, entry.count), [None]), strict=False):
            if passage is not None:
                tail.append(passage)
            if passage is None or passage.id != pid:
                found = "the end of the corpus" if passage is None else repr(passage.id)
                raise ResumeRefused(f"cannot resume: passage {entry.label_offset + label} of the corpus is "
                                     f"{found}, but {entry.dir} holds {pid!r}; pass --force to start over")


class BuildBackend:
    """Where a sharded build encodes passages and builds each shard's graph: here, in this process.

    :mod:`fastdpr.cluster.build` subclasses it to do both on a Ray cluster; everything else (reading the
    corpus, the shard layout, resuming, publishing) is the same code for both.
    """

    def __init__(self, artifact: Artifact, precision: str, options: IndexOptions) -> None:
        self.dim = artifact.spec.dim
        self.options = options
        self._encoder = artifact.encoder("context", precision, options.threads)

    def read(self, reader: CorpusReader) -> Iterator[Passage]:
        """The corpus's passages in order; ``reader.report`` is their report once they are consumed."""
        return iter(reader)

    def stream(self, passages: Iterator[Passage], lead: list[Passage],
               on_encoded: Callable[[int], None]) -> EncodedStream:
        """The corpus's remaining ``passages`` encoded in chunks aligned to corpus position."""
        return EncodedStream(passages, self._encoder, self.options.batch_size, ENCODE_CHUNK, lead,
                             on_encoded=on_encoded)

    def build_graph(self, vectors: np.ndarray, target: Path) -> None:
        """Build the HNSW graph of one shard's ``vectors`` (a memory map) and save it to ``target``."""
        graph = build_hnsw(vectors, m=self.options.hnsw_m, ef_construction=self.options.ef_construction,
                           threads=self.options.threads)
        save_hnsw(graph, target)

    def note(self) -> dict[str, Any] | None:
        """What the top-level manifest records about where the build ran (None: here)."""
        return None


BackendFactory = Callable[[Artifact, str, IndexOptions], BuildBackend]


def _build_shard(staging: Path, number: int, offset: int, pieces: Iterator[tuple[list[Passage], np.ndarray]],
                 backend: BuildBackend, options: IndexOptions, context: dict[str, Any], bar: tqdm) -> ShardEntry:
    """Write encoded ``pieces`` into ``shards/NNNNN`` (an ordinary index directory), publish it by a rename."""
    name = f"{number:05d}"
    final = staging / SHARDS_DIR / name
    work = staging / SHARDS_DIR / f".{name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    raw = work / "vectors.f32.partial"
    count = 0
    started = time.perf_counter()
    with PassageStoreWriter(work / "passages.sqlite") as store, open(raw, "wb") as vectors_out:
        for passages, vectors in pieces:
            vectors_out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            store.add_many((count + i, p.id, p.title, p.text) for i, p in enumerate(passages))
            count += len(passages)
    encode_seconds = time.perf_counter() - started
    write_npy_from_raw(raw, work / "vectors.npy", count, backend.dim)
    raw.unlink()
    bar.set_postfix_str(f"shard {name}: hnsw graph", refresh=True)
    t0 = time.perf_counter()
    vectors_map = np.load(work / "vectors.npy", mmap_mode="r", allow_pickle=False)
    backend.build_graph(vectors_map, work / "hnsw.bin")
    del vectors_map
    lexical = write_lexical_side(work, options.lexical)  # issue #23: this shard's BM25, from its passages
    bar.set_postfix_str("", refresh=False)
    manifest: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "created_utc": _now(),
        **context,
        # The encoder lives once, at the top of the sharded index.
        "question_encoder": {"model": "../../encoder/model.onnx", "tokenizer": "../../encoder/tokenizer.json"},
        "shard": {"number": number, "label_offset": offset, "of": "../../manifest.json"},
        "counts": {"indexed": count},
        "vectors": {"file": "vectors.npy", "dtype": "float32", "shape": [count, backend.dim]},
        "store": "passages.sqlite",
        "lexical": lexical,  # issue #23 (None: dense only)
        "hnsw": _hnsw_settings(options),
        "build": {"encode_seconds": round(encode_seconds, 2),
                  "graph_seconds": round(time.perf_counter() - t0, 2)},
    }
    manifest["files"] = file_table(work)
    write_json(work / MANIFEST_NAME, manifest)
    finalize_tree(work)  # durable before the rename that marks the shard finished (for --resume)
    os.replace(work, final)
    return ShardEntry(f"{SHARDS_DIR}/{name}", count, offset, sha256_file(final / MANIFEST_NAME))


def _hnsw_settings(options: IndexOptions) -> dict[str, Any]:
    return {"file": "hnsw.bin", "space": "ip", "score": "dot product (1 - hnswlib distance)",
            "m": options.hnsw_m, "ef_construction": options.ef_construction, "ef_search": options.ef_search}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _publish(staging: Path, out: Path) -> None:
    # As fastdpr.common.publish.atomic_directory: at every instant `out` holds the old or the new index.
    publish(staging, out)


def build_sharded_index(artifact_dir: Path | str, corpus: Path | str, out: Path | str, fmt: str = "auto",
                        options: IndexOptions | None = None, *, shard_size: int,
                        resume: bool = False, backend: BackendFactory = BuildBackend) -> dict[str, Any]:
    """Encode ``corpus`` into a sharded index at ``out``, ``shard_size`` passages per shard.

    With ``resume=True`` an interrupted build of ``out`` is continued (it must have used the same
    artifact, corpus and settings, or :class:`IndexLoadError` says what differs); without it, an
    interrupted build is an error unless ``options.force`` discards it. ``backend`` makes the object
    that encodes and builds graphs (default: this process; see :mod:`fastdpr.cluster.build`). Returns the
    top-level manifest.
    """
    options = options or IndexOptions()
    if shard_size < 1:
        raise FastDPRError(f"shard size must be at least 1, got {shard_size}")
    out = Path(out)
    # One build of `out` at a time: a second one (say, a concurrent --force) fails at once.
    with build_lock(out, IndexLoadError):
        recover(out)
        return _locked_build(artifact_dir, corpus, out, fmt, options, shard_size, resume, backend)


def _locked_build(artifact_dir: Path | str, corpus: Path | str, out: Path, fmt: str, options: IndexOptions,
                  shard_size: int, resume: bool, backend: BackendFactory) -> dict[str, Any]:
    artifact = Artifact.load(artifact_dir)
    precision, question_precision = side_precisions(artifact, options)  # fails now on a precision it lacks
    reader = read_corpus(corpus, fmt, strict=options.strict)  # type: ignore[arg-type]  # fails early on a bad file
    state = _build_state(artifact, precision, reader, shard_size, options)
    staging = _prepare_staging(out, state, options.force, resume)
    # Checked on every (re)start: a resumed build may run on another machine, with other int8 kernels.
    int8_check = int8_check_for_build(artifact, options, (precision, question_precision))
    try:
        return _build(artifact, (precision, question_precision), reader, out, staging, shard_size, options,
                      int8_check, backend)
    except ResumeRefused:
        raise
    except FastDPRError:
        # Bad input (strict-mode row, NaN embeddings): resuming would fail the same way. Interruptions
        # (Ctrl-C, a full disk, kill -9) keep the staging directory for --resume.
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _build(artifact: Artifact, precisions: tuple[str, str], reader: CorpusReader, out: Path, staging: Path,
           shard_size: int, options: IndexOptions, int8_check: Int8Verification | None,
           make_backend: BackendFactory) -> dict[str, Any]:
    started = time.perf_counter()
    precision, question_precision = precisions
    shards = _finished_shards(staging)
    resumed_from = sum(entry.count for entry in shards)
    context = {
        "artifact": {
            "path": str(artifact.root.resolve()),
            "identity": artifact.identity,
            "sources": artifact.sources,
            "quantization": artifact.typed.quantization,
        },
        "spec": artifact.spec.to_dict(),
        "precision": precision,
        "corpus": {"path": str(reader.path.resolve()), "format": reader.format},
    }
    backend = make_backend(artifact, precision, options)
    bar = corpus_bar(reader.path, options.progress, initial=resumed_from)
    try:
        # The whole corpus is read again on resume (reading is cheap next to encoding), so the skip
        # counts of the corpus report cover every row, and the finished shards' ids are checked.
        passages = backend.read(reader)
        tail: deque[Passage] = deque(maxlen=ENCODE_CHUNK)
        for entry in shards:
            _skip_finished(passages, staging, entry, tail)
        # Resuming mid-chunk: the chunk's finished passages are encoded again (and dropped), as a clean
        # build's chunk would be. Since one passage per call (issue #19) this no longer changes any vector
        # (see fastdpr.index.stream).
        within = resumed_from % ENCODE_CHUNK
        lead = list(tail)[len(tail) - within:] if within else []
        stream = backend.stream(passages, lead, bar.update)
        while not stream.exhausted():
            offset = sum(entry.count for entry in shards)
            shards.append(_build_shard(staging, len(shards), offset, stream.take(shard_size), backend, options,
                                       context, bar))
        finish(bar)
    finally:
        bar.close()
    report = reader.report
    count = sum(entry.count for entry in shards)
    if count == 0:  # the reader raises for an empty corpus; this guards a reader change
        raise CorpusError(f"{reader.path}: no passages to index")
    encoder_dir = staging / "encoder"
    shutil.rmtree(encoder_dir, ignore_errors=True)
    question_encoder = question_encoder_files(artifact, question_precision, encoder_dir)
    seconds = time.perf_counter() - started
    manifest: dict[str, Any] = {
        "format": SHARDED_INDEX_FORMAT,
        "format_version": SHARDED_INDEX_FORMAT_VERSION,
        "created_utc": _now(),
        **context,
        "question_encoder": question_encoder,
        "cpu": this_cpu().to_dict(),
        "int8_verification": None if int8_check is None else int8_check.to_dict(),
        "counts": {"indexed": count, "skipped_total": report.total_skipped, "skipped": report.skipped,
                   "skipped_examples": report.examples, "no_title": report.no_title},
        "shard_size": shard_size,
        "shards": [entry.to_dict() for entry in shards],
        "lexical": lexical_entry(options.lexical),  # issue #23: per shard (None: dense only)
        "hnsw": {key: value for key, value in _hnsw_settings(options).items() if key != "file"},
        "build": {"seconds": round(seconds, 2), "resumed_from": resumed_from,
                  "passages_per_s": round((count - resumed_from) / max(seconds, 1e-9), 1),
                  "batch_size": options.batch_size, "threads": options.threads,
                  **({"ray": note} if (note := backend.note()) else {})},
        "versions": library_versions(("fastdpr", "onnxruntime", "tokenizers", "hnswlib", "numpy")),
        "files": {f"encoder/{name}": entry for name, entry in file_table(encoder_dir).items()},
    }
    write_json(staging / MANIFEST_NAME, manifest)
    load_sharded_manifest(staging, "sizes")  # what we wrote parses under the schema every load applies
    _publish(staging, out)
    # Removed only after the rename, so that until then --resume still recognises the build (a kill
    # here leaves a harmless extra file in a complete index).
    (out / STATE_NAME).unlink()
    return manifest
