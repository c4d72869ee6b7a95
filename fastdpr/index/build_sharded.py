"""Building a sharded index in bounded memory, resumably (``fastdpr index --shard-size N [--resume]``).

The corpus is streamed once: ``shard_size`` passages are encoded into a shard directory (vectors go
to disk chunk by chunk), its HNSW graph is built from the memory-mapped vectors, the shard is
published by a rename, and only then is the next shard started. Memory is bounded by one shard's
graph, whatever the corpus size. Each shard is written by the same index writer as an unsharded
index (:func:`fastdpr.index.writer.write_index`), and a passage's vector does not depend on the
passages encoded around it (:mod:`fastdpr.index.stream`), so the vectors are those of an unsharded build.

Everything happens in ``.INDEX.building-sharded/`` next to ``INDEX``; ``build-state.json`` there,
written before the first passage, records the artifact, corpus and settings. A build interrupted in
any way (kill -9, Ctrl-C, a full disk) leaves that directory behind: ``--resume`` keeps the finished
shards that pass their hash check, checks that the corpus still starts with their passages, redoes
the shard in progress from its first passage, and goes on. The final rename into ``INDEX`` is atomic,
as for an unsharded index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, sha256_file, write_json
from fastdpr.common.progress import corpus_bar, finish
from fastdpr.common.publish import build_lock, finalize_tree, publish, recover
from fastdpr.corpus.reader import CorpusReader, Passage
from fastdpr.index.backend import BuildBackend, OnGraphProgress
from fastdpr.index.build import (
    BackendFactory,
    BuildInputs,
    IndexOptions,
    int8_check_for_build,
    local_backend,
    start_build,
)
from fastdpr.index.manifest import ShardEntry, load_index_manifest
from fastdpr.index.stream import EncodedStream, Piece
from fastdpr.index.vector_settings import COMPRESSED_FILE
from fastdpr.index.writer import BuildRecord, GraphProgress, ShardPlace, write_index, write_sharded_manifest
from fastdpr.model.artifact import Artifact

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
                     "ef_search": options.ef_search, "lexical": options.lexical,
                     # Absent for fp32 (as in build states written before issue #22), so those still resume.
                     **options.vector_settings.state()},
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
    old_settings, new_settings = recorded["settings"], current["settings"]
    # Over both sides' keys: a setting added since (``lexical``, issue #23) is absent, i.e. None, in an
    # older build state, and a resume that now asks for it must not mix shards with and without it.
    changed = [f"{key} was {_setting_words(key, old_settings.get(key))}" for key in {**old_settings, **new_settings}
               if new_settings.get(key) != old_settings.get(key)]
    if changed:
        return "the settings differ (" + ", ".join(changed) + ")"
    return None


def _setting_words(key: str, value: Any) -> str:
    # --vectors is recorded as its settings (absent: fp32), said as the flags that chose them.
    if key != "vectors":
        return str(value)
    if value is None:
        return "fp32"
    return " ".join([value["kind"], *(f"--{name.replace('_', '-')} {setting}" for name, setting in value.items()
                                      if name != "kind" and setting is not None)])


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


def _skip_finished(passages: Iterator[Passage], staging: Path, entry: ShardEntry) -> None:
    """Read past a finished shard's passages, checking that the corpus yields exactly the ids it holds."""
    with sqlite3.connect((staging / entry.dir / "passages.sqlite").resolve().as_uri() + "?mode=ro", uri=True) as conn:
        stored = conn.execute("SELECT label, id FROM passages ORDER BY label")
        for (label, pid), passage in zip(stored, chain(islice(passages, entry.count), [None]), strict=False):
            if passage is None or passage.id != pid:
                found = "the end of the corpus" if passage is None else repr(passage.id)
                raise ResumeRefused(f"cannot resume: passage {entry.label_offset + label} of the corpus is "
                                     f"{found}, but {entry.dir} holds {pid!r}; pass --force to start over")


def _build_shard(staging: Path, number: int, offset: int, pieces: Iterator[Piece], backend: BuildBackend,
                 record: BuildRecord, bar: tqdm) -> ShardEntry:
    """Write encoded ``pieces`` into ``shards/NNNNN`` (an ordinary index directory), publish it by a rename."""
    name = f"{number:05d}"
    final = staging / SHARDS_DIR / name
    work = staging / SHARDS_DIR / f".{name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # A compressed build trains its codebook on the first shard; later shards reuse it (issue #22).
    codebook = staging / SHARDS_DIR / f"{0:05d}" / COMPRESSED_FILE if number and record.vectors.compressed else None
    manifest = write_index(work, pieces, backend, record, ShardPlace(number, offset, codebook),
                           graph_progress=_shard_graph(bar, name))
    finalize_tree(work)  # durable before the rename that marks the shard finished (for --resume)
    os.replace(work, final)
    return ShardEntry(f"{SHARDS_DIR}/{name}", manifest["counts"]["indexed"], offset, sha256_file(final / MANIFEST_NAME))


def _shard_graph(bar: tqdm, name: str) -> GraphProgress:
    """The corpus bar says which shard's graph is being built (a graph has no bar of its own here)."""

    @contextmanager
    def progress(total: int) -> Iterator[OnGraphProgress | None]:
        bar.set_postfix_str(f"shard {name}: hnsw graph", refresh=True)
        yield None
        bar.set_postfix_str("", refresh=False)

    return progress


def _publish(staging: Path, out: Path) -> None:
    # As fastdpr.common.publish.atomic_directory: at every instant `out` holds the old or the new index.
    publish(staging, out)


def build_sharded_index(artifact_dir: Path | str, corpus: Path | str, out: Path | str, fmt: str = "auto",
                        options: IndexOptions | None = None, *, shard_size: int,
                        resume: bool = False, backend: BackendFactory = local_backend) -> dict[str, Any]:
    """Encode ``corpus`` into a sharded index at ``out``, ``shard_size`` passages per shard.

    With ``resume=True`` an interrupted build of ``out`` is continued (it must have used the same
    artifact, corpus and settings, or :class:`IndexLoadError` says what differs); without it, an
    interrupted build is an error unless ``options.force`` discards it. ``backend`` makes the object
    that reads, encodes and builds graphs (default: this process; see :mod:`fastdpr.cluster.build`).
    Returns the top-level manifest.
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
                  shard_size: int, resume: bool, make_backend: BackendFactory) -> dict[str, Any]:
    inputs = BuildInputs.open(artifact_dir, corpus, fmt, options)  # fails now on a bad file or precision
    state = _build_state(inputs.artifact, inputs.precision, inputs.reader, shard_size, options)
    staging = _prepare_staging(out, state, options.force, resume)
    # Checked on every (re)start: a resumed build may run on another machine, with other int8 kernels.
    int8_check = int8_check_for_build(inputs, options)
    try:
        backend, record = start_build(inputs, options, int8_check, make_backend)
        return _build(backend, record, out, staging, shard_size, options)
    except ResumeRefused:
        raise
    except FastDPRError:
        # Bad input (strict-mode row, NaN embeddings): resuming would fail the same way. Interruptions
        # (Ctrl-C, a full disk, kill -9) keep the staging directory for --resume.
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _build(backend: BuildBackend, record: BuildRecord, out: Path, staging: Path, shard_size: int,
           options: IndexOptions) -> dict[str, Any]:
    started = time.perf_counter()
    shards = _finished_shards(staging)
    resumed_from = sum(entry.count for entry in shards)
    bar = corpus_bar(record.corpus, options.progress, initial=resumed_from)
    try:
        # The whole corpus is read again on resume (reading is cheap next to encoding), so the skip
        # counts of the corpus report cover every row, and the finished shards' ids are checked.
        passages = iter(record.source)
        for entry in shards:
            _skip_finished(passages, staging, entry)
        # A resumed build starts encoding at its first unfinished passage, mid-chunk or not: a vector
        # does not depend on the passages encoded around it (fastdpr.index.stream).
        stream = EncodedStream(passages, backend.encoder, on_encoded=bar.update)
        while not stream.exhausted():
            offset = sum(entry.count for entry in shards)
            shards.append(_build_shard(staging, len(shards), offset, stream.take(shard_size), backend, record, bar))
        finish(bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    count = sum(entry.count for entry in shards)
    note = backend.note()
    manifest = write_sharded_manifest(staging, record, shards, shard_size=shard_size, build={
        "seconds": round(seconds, 2), "resumed_from": resumed_from,
        **record.settings(count - resumed_from, seconds), **({"ray": note} if note else {})})
    _publish(staging, out)
    # Removed only after the rename, so that until then --resume still recognises the build (a kill
    # here leaves a harmless extra file in a complete index).
    (out / STATE_NAME).unlink()
    return manifest
