"""Changing an index without rebuilding it: ``fastdpr index --append CORPUS`` and ``--delete IDS``.

An update publishes the next version of an index, unsharded or sharded, built from the current one:

- **Order.** The resulting corpus is the current passages in their order, less the deleted ones, then
  the appended corpus's passages in its order. Labels are renumbered ``0..n-1`` in that order, so an
  updated index holds the same passages, vectors (a vector depends only on its passage and the
  artifact: :mod:`fastdpr.index.chunks`) and labels as a fresh build of the resulting corpus, and exact
  search returns the same ids and scores, ties included (they are broken by label).
- **Encoding** covers the appended passages only, with the artifact the index records (checked by its
  identity, the sha256 of its manifest) at the index's precision. Encoded vectors are kept in parts of
  :data:`PART` passages in ``.INDEX.updating/`` beside the index, so an update that is killed while
  encoding is continued by running it again (see :func:`update_index`).
- **Graphs** are extended, not rebuilt: the current graph is loaded with room for the new vectors,
  deleted passages are marked deleted (hnswlib's ``mark_deleted``: they keep routing searches and are
  never returned) and the new vectors are inserted (``add_items``), which is what a build does for
  every vector. Once more than :data:`REBUILD_DELETED_FRACTION` of a graph's elements are deleted the
  graph is rebuilt from the stored vectors instead. A graph with deleted elements keeps a label map
  (:class:`fastdpr.index.manifest.HnswSettings`). In a sharded index the appended passages fill the
  last shard up to the index's shard size, then go into new shards; a shard that loses passages is
  rewritten, an untouched one is hard-linked into the new version.
- **Publishing**: the new version is written beside the index and swapped in with
  :func:`fastdpr.common.publish.publish`, so at every instant (kill -9 included) the index path holds
  the old or the new version, complete. The manifest records the version number, its parent and what
  changed (:class:`fastdpr.index.manifest.IndexVersion`).

Bad input is refused before anything is encoded or written: an appended id that appears twice in the
corpus or is already in the index (unless it is also deleted: that replaces the passage), an id to
delete that the index lacks, an artifact other than the index's, an update that would leave no passage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ArtifactError, CorpusError, FastDPRError, IndexLoadError
from fastdpr.common.integrity import MANIFEST_NAME, FileTable, sha256_file, write_json
from fastdpr.common.progress import corpus_bar, finish
from fastdpr.common.publish import build_lock, publish, recover
from fastdpr.corpus.reader import CorpusReader, Passage, read_corpus
from fastdpr.index.ann import build_hnsw, extend_hnsw, save_hnsw
from fastdpr.index.backend import BuildBackend
from fastdpr.index.build import BuildInputs, IndexOptions, int8_check_for_build, local_backend
from fastdpr.index.build_sharded import SHARDS_DIR, corpus_fingerprint
from fastdpr.index.chunks import OnEncoded
from fastdpr.index.int8_record import reusable_check, runtime_version
from fastdpr.index.load import is_sharded_index, load_label_map, load_sharded_manifest, shards_of
from fastdpr.index.manifest import (
    IndexManifest,
    IndexVersion,
    ShardedIndexManifest,
    ShardEntry,
    load_index_manifest,
)
from fastdpr.index.store import PassageStore, PassageStoreWriter
from fastdpr.index.stream import EncodedStream, Piece
from fastdpr.index.writer import BuildRecord, ShardPlace, write_index, write_npy_from_raw
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import ENCODE_CHUNK

__all__ = ["REBUILD_DELETED_FRACTION", "update_index"]

#: Passages per encoded part: what a kill during encoding can lose.
PART = ENCODE_CHUNK
#: A graph whose deleted elements would exceed this fraction is rebuilt from the stored vectors
#: (deleted elements still cost search time, and hnswlib never reclaims them).
REBUILD_DELETED_FRACTION = 0.2
STATE_NAME = "update-state.json"
STATE_FORMAT = "fastdpr-index-update"
_COPY_BLOCK = 65_536  # vectors copied per block (one block in memory)


def updating_dir(index: Path) -> Path:
    """Where an update of ``index`` keeps its encoded parts and writes the new version (next to it:
    same filesystem, so publishing is a rename)."""
    return index.parent / f".{index.name}.updating"


@dataclass(frozen=True)
class CurrentIndex:
    """The version being updated: its manifests and shards (an unsharded index is one shard at 0)."""

    root: Path
    top: IndexManifest | ShardedIndexManifest
    shards: list[tuple[ShardEntry | None, IndexManifest]]
    manifest_sha256: str

    @classmethod
    def open(cls, root: Path) -> CurrentIndex:
        """Load and check the index at ``root`` (a missing one is a one-line error)."""
        if not (root / MANIFEST_NAME).is_file():
            raise IndexLoadError(f"{root} is not an index (no {MANIFEST_NAME}): --append and --delete change an "
                                 f"existing index; build it first with `fastdpr index ARTIFACT CORPUS --out {root}`")
        top: IndexManifest | ShardedIndexManifest
        shards: list[tuple[ShardEntry | None, IndexManifest]]
        if is_sharded_index(root):
            top = load_sharded_manifest(root)
            shards = [(entry, manifest) for entry, (_, manifest) in zip(top.shards, shards_of(root, top.shards),
                                                                        strict=True)]
        else:
            top = load_index_manifest(root)
            if top.shard_label_offset is not None:
                raise IndexLoadError(f"{root} is one shard of a sharded index: update the sharded index")
            shards = [(None, top)]
        if top.lexical is not None:
            # BM25's statistics span every passage: an update would have to rebuild the lexical side of each
            # changed shard, which this path does not do yet; refusing beats serving stale BM25 hits.
            raise IndexLoadError(f"{root} has a lexical side (--lexical bm25), which --append and --delete do not "
                                 "update yet: rebuild the index with `fastdpr index ... --lexical bm25`")
        kind = top.vector_settings.kind
        if kind != "fp32":
            # Appends would be added to the trained codebook, deletes removed from the lists: not written yet.
            raise IndexLoadError(f"{root} holds {kind} vectors (--vectors {kind}), which --append and --delete do "
                                 f"not update yet: rebuild the index with `fastdpr index ... --vectors {kind}`")
        return cls(root, top, shards, sha256_file(root / MANIFEST_NAME))

    @property
    def offsets(self) -> list[int]:
        """The global label of each shard's first passage."""
        return [0 if entry is None else entry.label_offset for entry, _ in self.shards]

    def labels_of(self, ids: Iterable[str]) -> dict[str, int]:
        """The global labels of those of ``ids`` the index holds."""
        wanted = list(ids)
        found: dict[str, int] = {}
        for offset, (_, manifest) in zip(self.offsets, self.shards, strict=True):
            with PassageStore(manifest.path(manifest.store)) as store:
                found.update((pid, offset + label) for pid, label in store.labels_of(wanted).items())
        return found


@dataclass(frozen=True)
class Appending:
    """The corpus to append, checked: its ids (in order), the artifact and precision to encode it with."""

    corpus: Path
    fmt: str
    ids: list[str]
    inputs: BuildInputs

    def reader(self, options: IndexOptions) -> CorpusReader:
        """A fresh pass over the corpus."""
        return read_corpus(self.corpus, self.fmt, strict=options.strict)  # type: ignore[arg-type]


def _one_line_list(values: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(value) for value in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _deleted_labels(current: CurrentIndex, ids: Sequence[str]) -> np.ndarray:
    found = current.labels_of(ids)
    unknown = [pid for pid in dict.fromkeys(ids) if pid not in found]
    if unknown:
        raise CorpusError(f"cannot delete {len(unknown)} id(s) that {current.root} does not hold: "
                          f"{_one_line_list(unknown)}")
    return np.array(sorted(set(found.values())), dtype=np.int64)


def _open_appending(current: CurrentIndex, corpus: Path, fmt: str, artifact_dir: Path | None, deleting: set[str],
                    options: IndexOptions) -> Appending:
    recorded = current.top.raw.get("artifact", {})
    artifact_path = artifact_dir if artifact_dir is not None else Path(recorded.get("path", ""))
    if artifact_dir is None and not (artifact_path / MANIFEST_NAME).is_file():
        raise ArtifactError(f"the artifact {current.root} was encoded with ({artifact_path}) is not there any more: "
                            "pass it as ARTIFACT")
    artifact = Artifact.load(artifact_path)
    if artifact.identity != recorded.get("identity"):
        raise ArtifactError(f"{artifact_path} is not the artifact {current.root} was encoded with (identity "
                            f"{artifact.identity[:12]}, the index records {str(recorded.get('identity'))[:12]} from "
                            f"{recorded.get('path')}): appended passages must be encoded by the same artifact")
    precision = current.top.precision
    artifact.model_path("context", precision)
    question = current.top.question_encoder
    assert question is not None  # a whole index (unsharded or the sharded top level) carries one
    reader = read_corpus(corpus, fmt, strict=options.strict)  # type: ignore[arg-type]
    ids = [passage.id for passage in reader]
    # The reader skips a repeated id and counts it (a build indexes the first); an append refuses it, as
    # it refuses an id already indexed: either is more likely a mistake than an intent.
    if twice := reader.report.skipped.get("duplicate id"):
        lines = ", ".join(str(line) for line in reader.report.examples.get("duplicate id", [])[:3])
        raise CorpusError(f"{corpus}: {twice} passage id(s) appear more than once (lines {lines})")
    present = [pid for pid in current.labels_of(ids) if pid not in deleting]
    if present:
        raise CorpusError(f"{corpus}: passage id(s) {_one_line_list(present)} are already in {current.root} "
                          "(to replace a passage, --delete its id in the same command)")
    # Appended passages are encoded by the runtime that encoded the index (an index never mixes them).
    build = current.top.raw.get("build") or {}
    recorded_backend = (build.get("passage_backend") or {}).get("name", "onnxruntime")
    backend = artifact.passage_backend(precision, recorded_backend)
    return Appending(corpus, reader.format, ids, BuildInputs(artifact, precision, question.precision, reader, backend))


# ---------------------------------------------------------------------------------------------------
# Encoding, in parts that survive a kill


def _state(appending: Appending, options: IndexOptions) -> dict[str, Any]:
    # What decides the appended passages and their vectors (not the batch size: a vector does not depend
    # on it, nor the index version or the deletions: the parts hold only the appended passages).
    inputs = appending.inputs
    return {"format": STATE_FORMAT, "artifact": inputs.artifact.identity, "precision": inputs.precision,
            "passage_backend": inputs.passage_backend.name, "strict": options.strict,
            "corpus": {"path": str(appending.corpus.resolve()), "format": appending.fmt,
                                                 **corpus_fingerprint(appending.corpus)}}


def _prepare_parts(staging: Path, state: dict[str, Any], ids: list[str]) -> list[Path]:
    """The encoded parts an interrupted update left that belong to this one (the rest is removed)."""
    parts_dir = staging / "encoded"
    state_file = staging / STATE_NAME
    try:
        reusable = json.loads(state_file.read_text(encoding="utf-8")) == state
    except (OSError, ValueError):
        reusable = False
    if not reusable:
        shutil.rmtree(staging, ignore_errors=True)
        parts_dir.mkdir(parents=True)
        write_json(state_file, state)
        return []
    kept: list[Path] = []
    done = 0
    while (vectors := parts_dir / f"{len(kept):05d}.npy").is_file():
        try:
            part_ids = json.loads((parts_dir / f"{len(kept):05d}.ids.json").read_text(encoding="utf-8"))
            rows = np.load(vectors, mmap_mode="r", allow_pickle=False).shape[0]
        except (OSError, ValueError):
            break
        if part_ids != ids[done : done + len(part_ids)] or rows != len(part_ids):
            break
        kept.append(vectors)
        done += rows
    names = {path.name for path in kept} | {path.name.replace(".npy", ".ids.json") for path in kept}
    for path in parts_dir.iterdir():
        if path.name not in names:
            path.unlink()
    return kept


def _int8_check(inputs: BuildInputs, options: IndexOptions, index_raw: dict[str, Any]) -> dict[str, Any] | None:
    """The int8 check an append needs (as a build: refuse int8 kernels that miss the export's thresholds),
    relied on from the index's record when that proves it for this CPU and onnxruntime
    (:mod:`fastdpr.index.int8_record`), else run here. What ``version.changes.int8_check`` records."""
    if "int8" not in (inputs.precision, inputs.question_precision):
        return None
    if (recorded := reusable_check(index_raw)) is not None:
        return {"ran_here": False, "relied_on": recorded.source, "onnxruntime": recorded.onnxruntime,
                "verification": recorded.check.to_dict()}
    check = int8_check_for_build(inputs, options)
    assert check is not None  # an int8 side: the check ran (and raised unless it passed or is allowed)
    return {"ran_here": True, "onnxruntime": runtime_version(), "verification": check.to_dict()}


def _encode_parts(staging: Path, appending: Appending, options: IndexOptions, log: Callable[[str], None],
                  timings: dict[str, float], index_raw: dict[str, Any], record: dict[str, Any]) -> list[Path]:
    """Every appended passage encoded into ``staging/encoded/NNNNN.npy`` (+ ``.ids.json``), reusing the parts
    of an interrupted run of the same update. ``timings`` gets ``setup`` (the int8 check, the session)
    and ``encode`` seconds; ``record`` the ``int8_check`` (see :func:`_int8_check`) when one was needed."""
    parts = _prepare_parts(staging, _state(appending, options), appending.ids)
    done = sum(len(json.loads(p.with_name(p.name.replace(".npy", ".ids.json")).read_text())) for p in parts)
    if parts:
        log(f"reusing {done} passages encoded by an interrupted run of this update")
    if done == len(appending.ids):
        return parts
    inputs = appending.inputs
    started = time.perf_counter()
    if (check := _int8_check(inputs, options, index_raw)) is not None:
        record["int8_check"] = check
    encoder = local_backend(inputs.artifact, inputs.precision, options, inputs.passage_backend).encoder
    timings["setup"] = time.perf_counter() - started
    bar = corpus_bar(appending.corpus, options.progress, initial=done, desc="encoding")
    try:
        passages = islice(iter(appending.reader(options)), done, None)
        stream = EncodedStream(passages, encoder, on_encoded=bar.update)
        while not stream.exhausted():
            pieces = list(stream.take(PART))
            name = f"{len(parts):05d}"
            write_json(staging / "encoded" / f"{name}.ids.json", [p.id for piece, _ in pieces for p in piece])
            partial = staging / "encoded" / f"{name}.partial.npy"
            np.save(partial, np.concatenate([vectors for _, vectors in pieces]), allow_pickle=False)
            os.replace(partial, staging / "encoded" / f"{name}.npy")  # the part counts once it is whole
            parts.append(staging / "encoded" / f"{name}.npy")
        finish(bar)
        timings["encode"] = time.perf_counter() - started - timings["setup"]
    finally:
        bar.close()
    return parts


class StoredVectors:
    """A :class:`~fastdpr.index.chunks.ChunkEncoder` that hands out the vectors of the encoded parts, in
    order, checking that they belong to the passages asked for."""

    window = 1

    def __init__(self, parts: list[Path], dim: int) -> None:
        self._parts = iter(parts)
        self._dim = dim
        self._ids: list[str] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        """The embedding width."""
        return self._dim

    def encode_chunks(self, chunks: Sequence[Sequence[Passage]], on_encoded: OnEncoded | None) -> list[np.ndarray]:
        """The stored vectors of each chunk's passages."""
        out = []
        for chunk in chunks:
            while len(self._ids) < len(chunk):
                part = next(self._parts)
                self._ids += json.loads(part.with_name(part.name.replace(".npy", ".ids.json")).read_text())
                self._vectors = np.concatenate([self._vectors, np.load(part, allow_pickle=False)])
            if [p.id for p in chunk] != self._ids[: len(chunk)]:
                raise FastDPRError("the appended corpus changed while the update ran; run it again")
            out.append(self._vectors[: len(chunk)])
            self._ids, self._vectors = self._ids[len(chunk):], self._vectors[len(chunk):]
        return out


# ---------------------------------------------------------------------------------------------------
# Writing the new version


def _link_tree(source: Path, target: Path, skip: Iterable[str] = ()) -> None:
    """``target`` as a copy of ``source`` made of hard links (files are never changed in place, so the
    versions can share them); a plain copy where links are refused."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(*skip) if skip else None)


@dataclass(frozen=True)
class GraphChange:
    """How a directory's graph changed: extended in place (with a label map when it holds deleted
    elements) or rebuilt from the stored vectors."""

    rebuilt: bool
    labels: str | None
    elements: int | None


def _npy_header(count: int, dim: int) -> bytes:
    """The .npy header of a float32 ``[count, dim]`` array, as :func:`write_npy_from_raw` writes it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)})
    return header.getvalue()


def _extend_rows(target: Path, old: IndexManifest, pieces: Iterable[Piece]) -> int | None:
    """``passages.sqlite`` and ``vectors.npy`` of the new version when nothing is deleted: copies of
    ``old``'s files (whole-file copies in the kernel, not row by row), ``pieces`` added after their rows,
    the .npy header rewritten for the new count. Returns the rows in all; None (nothing written) when
    the old vectors' header is not the one a build writes, which the row-by-row copy then handles."""
    source = old.path(old.vectors)
    offset = len(_npy_header(old.count, old.spec.dim))
    with open(source, "rb") as handle:
        if handle.read(offset) != _npy_header(old.count, old.spec.dim):
            return None
    vectors = target / "vectors.npy"
    shutil.copyfile(source, vectors)
    with PassageStoreWriter(target / "passages.sqlite", copy_of=old.path(old.store)) as store, \
            open(vectors, "r+b") as out:
        out.seek(0, os.SEEK_END)
        count = old.count
        for passages, new in pieces:
            out.write(np.ascontiguousarray(new, dtype="<f4").tobytes())
            store.add_many((count + i, p.id, p.title, p.text) for i, p in enumerate(passages))
            count += len(passages)
        header = _npy_header(count, old.spec.dim)
        if len(header) == offset:  # numpy pads headers to 64 bytes and leaves room for the count to grow
            out.seek(0)
            out.write(header)
    if len(header) != offset:
        raw = target / "vectors.f32.partial"
        with open(vectors, "rb") as src, open(raw, "wb") as dst:
            src.seek(offset)
            shutil.copyfileobj(src, dst, length=1 << 22)
        write_npy_from_raw(raw, vectors, count, old.spec.dim)
        raw.unlink()
    return count


def _write_rows(target: Path, old: IndexManifest, drop: np.ndarray, pieces: Iterable[Piece]) -> tuple[int, int]:
    """``passages.sqlite`` and ``vectors.npy`` of the new version: ``old``'s rows less ``drop`` (local
    labels, sorted), then ``pieces``. Returns (rows kept, rows in all)."""
    if not len(drop) and (count := _extend_rows(target, old, pieces)) is not None:
        return old.count, count
    raw = target / "vectors.f32.partial"
    vectors = np.load(old.path(old.vectors), mmap_mode="r", allow_pickle=False)
    with PassageStoreWriter(target / "passages.sqlite") as store, open(raw, "wb") as out:
        kept = store.copy_from(old.path(old.store), drop.tolist())
        for start in range(0, old.count, _COPY_BLOCK):
            block = np.asarray(vectors[start : start + _COPY_BLOCK])
            keep = ~np.isin(np.arange(start, start + len(block)), drop)
            out.write(np.ascontiguousarray(block[keep], dtype="<f4").tobytes())
        count = kept
        for passages, new in pieces:
            out.write(np.ascontiguousarray(new, dtype="<f4").tobytes())
            store.add_many((count + i, p.id, p.title, p.text) for i, p in enumerate(passages))
            count += len(passages)
    del vectors
    write_npy_from_raw(raw, target / "vectors.npy", count, old.spec.dim)
    raw.unlink()
    return kept, count


def _write_graph(target: Path, old: IndexManifest, drop: np.ndarray, kept: int, count: int,
                 threads: int | None) -> GraphChange:
    """``hnsw.bin`` of the new version: ``old``'s graph extended, or rebuilt (see the module docstring)."""
    old_map = load_label_map(old)
    rows = np.arange(old.count, dtype=np.int64) if old_map is None else old_map
    elements = len(rows)
    gone = (rows >= 0) & np.isin(rows, drop)
    # A kept row moves down by the number of dropped rows before it; appended rows follow the kept ones.
    moved = np.where(rows >= 0, rows - np.searchsorted(drop, rows), -1)
    moved[gone] = -1
    new_map = np.concatenate([moved, np.arange(kept, count, dtype=np.int64)])
    vectors = np.load(target / "vectors.npy", mmap_mode="r", allow_pickle=False)
    if (len(new_map) - count) / len(new_map) > REBUILD_DELETED_FRACTION:
        save_hnsw(build_hnsw(vectors, m=old.hnsw.m, ef_construction=old.hnsw.ef_construction, threads=threads),
                  target / "hnsw.bin")
        return GraphChange(rebuilt=True, labels=None, elements=None)
    assert old.hnsw.file is not None
    graph = extend_hnsw(old.path(old.hnsw.file), old.spec.dim, elements, delete=np.flatnonzero(gone),
                        vectors=vectors[kept:], first_label=elements, threads=threads)
    save_hnsw(graph, target / "hnsw.bin")
    if np.array_equal(new_map, np.arange(count)):
        return GraphChange(rebuilt=False, labels=None, elements=None)  # nothing ever deleted: label = row
    np.save(target / "hnsw-labels.npy", new_map, allow_pickle=False)
    return GraphChange(rebuilt=False, labels="hnsw-labels.npy", elements=len(new_map))


@contextmanager
def _timed(spent: dict[str, float], key: str) -> Iterator[None]:
    """Adds the block's seconds to ``spent[key]`` (the ``write_seconds`` split of ``version.changes``)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - started


def _write_manifest(target: Path, old: IndexManifest, count: int, graph: GraphChange, *, label_offset: int | None,
                    version: IndexVersion, files: FileTable | None = None,
                    spent: dict[str, float] | None = None) -> IndexManifest:
    hnsw = dataclasses.replace(old.hnsw, file="hnsw.bin", labels=graph.labels, elements=graph.elements)
    if files is None:
        with _timed({} if spent is None else spent, "hash"):
            files = FileTable.scan(target, IndexLoadError)
    manifest = dataclasses.replace(
        old, root=target, count=count, vectors="vectors.npy", store="passages.sqlite", hnsw=hnsw,
        shard_label_offset=label_offset, version=version, files=files)
    write_json(target / MANIFEST_NAME, manifest.to_dict())
    return load_index_manifest(target, "sizes")  # what we wrote parses under the schema every load applies


def _update_directory(target: Path, old: IndexManifest, drop: np.ndarray, pieces: Iterable[Piece], *,
                      label_offset: int | None, version: IndexVersion,
                      threads: int | None, spent: dict[str, float]) -> tuple[IndexManifest, bool]:
    """Write the new version of one index directory (a whole index, or one shard) at ``target``; ``spent``
    gets the seconds of its parts (rows: passages and vectors; graph; hash)."""
    target.mkdir()
    if old.question_encoder is not None:
        _link_tree(old.root / "encoder", target / "encoder")
    with _timed(spent, "rows"):
        kept, count = _write_rows(target, old, drop, pieces)
    with _timed(spent, "graph"):
        graph = _write_graph(target, old, drop, kept, count, threads)
    manifest = _write_manifest(target, old, count, graph, label_offset=label_offset, version=version, spent=spent)
    return manifest, graph.rebuilt


def _move_shard(target: Path, old: IndexManifest, label_offset: int) -> IndexManifest:
    """An untouched shard at a new label offset: its files linked, its manifest rewritten."""
    _link_tree(old.root, target, skip=[MANIFEST_NAME])
    graph = GraphChange(rebuilt=False, labels=old.hnsw.labels, elements=old.hnsw.elements)
    files = dataclasses.replace(old.files, root=target, source=target / MANIFEST_NAME)
    return _write_manifest(target, old, old.count, graph, label_offset=label_offset, version=old.version, files=files)


@dataclass
class Outcome:
    """What an update did, for the manifest's ``version.changes``."""

    appended: int = 0
    deleted: int = 0
    graphs_rebuilt: int = 0
    graphs_extended: int = 0
    new_shards: int = 0
    #: Seconds of the rewritten directories' parts (see :func:`_update_directory`).
    write_seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def _unsharded(new: Path, current: CurrentIndex, drop: np.ndarray, appended: Appended | None,
               version: IndexVersion, options: IndexOptions, outcome: Outcome) -> dict[str, Any]:
    (_, old), = current.shards
    pieces = appended.stream.take() if appended is not None else iter(())
    manifest, rebuilt = _update_directory(new, old, drop, pieces, label_offset=None, version=version,
                                          threads=options.threads, spent=outcome.write_seconds)
    outcome.graphs_rebuilt += rebuilt
    outcome.graphs_extended += not rebuilt
    return manifest.to_dict()


@dataclass(frozen=True)
class Appended:
    """The appended passages as the writers take them: ``stream`` hands out passages with their stored
    vectors (from ``encoder``), read from ``source`` (whose report counts the corpus's skipped rows)."""

    appending: Appending
    source: CorpusReader
    encoder: StoredVectors
    stream: EncodedStream


def _sharded(new: Path, current: CurrentIndex, drop: np.ndarray, appended: Appended | None,
             version: IndexVersion, options: IndexOptions, outcome: Outcome) -> dict[str, Any]:
    top = current.top
    assert isinstance(top, ShardedIndexManifest)
    stream = None if appended is None else appended.stream
    shard_size = int(top.raw.get("shard_size") or max(entry.count for entry in top.shards))
    new.mkdir()
    _link_tree(current.root / "encoder", new / "encoder")
    (new / SHARDS_DIR).mkdir()
    entries: list[ShardEntry] = []
    offset = 0
    names = [Path(entry.dir).name for entry in top.shards]
    for number, ((entry, old), start) in enumerate(zip(current.shards, current.offsets, strict=True)):
        assert entry is not None
        local = drop[(drop >= start) & (drop < start + old.count)] - start
        last = number == len(current.shards) - 1
        room = max(0, shard_size - (old.count - len(local))) if last and stream is not None else 0
        target = new / entry.dir
        if not len(local) and (room == 0 or stream is None or stream.exhausted()):
            if start == offset:
                _link_tree(old.root, target)
                entries.append(entry)
            else:
                _move_shard(target, old, offset)
                entries.append(ShardEntry(entry.dir, old.count, offset, sha256_file(target / MANIFEST_NAME)))
            offset += old.count
            continue
        if len(local) == old.count and (room == 0 or stream is None or stream.exhausted()):
            continue  # every passage of the shard deleted, nothing to put in it: the shard goes
        pieces = stream.take(room) if stream is not None and room else iter(())
        manifest, rebuilt = _update_directory(target, old, local, pieces, label_offset=offset, version=old.version,
                                              threads=options.threads, spent=outcome.write_seconds)
        outcome.graphs_rebuilt += rebuilt
        outcome.graphs_extended += not rebuilt
        entries.append(ShardEntry(entry.dir, manifest.count, offset, sha256_file(target / MANIFEST_NAME)))
        offset += manifest.count
    if appended is not None:
        assert stream is not None
        record = _record(appended, top, options)
        backend = BuildBackend(appended.encoder, options.graph)
        number = max((int(name) + 1 for name in names if name.isdigit()), default=0)
        while not stream.exhausted():
            name = f"{number:05d}"
            work = new / SHARDS_DIR / name
            work.mkdir()
            written = write_index(work, stream.take(shard_size), backend, record, ShardPlace(number, offset))
            entries.append(ShardEntry(f"{SHARDS_DIR}/{name}", written["counts"]["indexed"], offset,
                                      sha256_file(work / MANIFEST_NAME)))
            offset += written["counts"]["indexed"]
            outcome.new_shards += 1
            number += 1
    updated = dataclasses.replace(top, root=new, count=offset, shards=tuple(entries), version=version,
                                  files=FileTable.scan(new, IndexLoadError, under="encoder"))
    write_json(new / MANIFEST_NAME, updated.to_dict())
    load_sharded_manifest(new, "sizes")  # what we wrote loads (shard offsets tile the labels, hashes match)
    return updated.to_dict()


def _record(appended: Appended, top: ShardedIndexManifest, options: IndexOptions) -> BuildRecord:
    """What a new shard's manifest records (its provenance: the appended corpus)."""
    inputs, appending = appended.appending.inputs, appended.appending
    return BuildRecord(artifact=inputs.artifact, precision=inputs.precision,
                       question_precision=inputs.question_precision, source=appended.source,
                       corpus=appending.corpus, corpus_format=appending.fmt,
                       hnsw=dataclasses.replace(top.hnsw, file="hnsw.bin"), int8_check=None,
                       batch_size=options.batch_size, threads=options.threads,
                       lexical=None,  # an index with a lexical side is refused (CurrentIndex.open)
                       passage_backend=inputs.passage_backend)


# ---------------------------------------------------------------------------------------------------
# The update


def update_index(index_dir: Path | str, *, append: Path | str | None = None, fmt: str = "auto",
                 delete: Sequence[str] = (), artifact: Path | str | None = None,
                 options: IndexOptions | None = None, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Publish the next version of the index at ``index_dir``: its passages less ``delete`` (passage ids),
    plus the passages of the corpus ``append`` (format ``fmt``), encoded by ``artifact`` (default: the
    one the index records; either way it must be that artifact). Returns the new manifest.

    Killed while encoding, the update keeps its encoded parts in ``.INDEX.updating/``; running the same
    update again reuses them (same artifact, precision and an unchanged corpus file; anything else
    starts that directory afresh). Raises :class:`FastDPRError` subclasses for bad input, before
    anything is written; the index is never changed except by the final atomic swap.
    """
    options = options or IndexOptions()
    index = Path(index_dir)
    if append is None and not delete:
        raise FastDPRError("nothing to update: give a corpus to append or ids to delete")
    with build_lock(index, IndexLoadError):
        recover(index)
        started = time.perf_counter()
        current = CurrentIndex.open(index)
        drop = _deleted_labels(current, delete) if delete else np.zeros(0, dtype=np.int64)
        appending = None if append is None else _open_appending(current, Path(append), fmt,
                                                                  None if artifact is None else Path(artifact),
                                                                  set(delete), options)
        appended = 0 if appending is None else len(appending.ids)
        timings = {"checks": time.perf_counter() - started, "setup": 0.0, "encode": 0.0}
        recorded: dict[str, Any] = {}  # what the changes record beyond counts and seconds
        if current.top.count - len(drop) + appended == 0:
            raise CorpusError(f"the update would leave {index} without passages")
        staging = updating_dir(index)
        if appending is None:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            parts: list[Path] = []
        else:
            parts = _encode_parts(staging, appending, options, log, timings, current.top.raw, recorded)
        writing = time.perf_counter()
        new = staging / "new"
        shutil.rmtree(new, ignore_errors=True)  # a killed run's half-written version
        rows: Appended | None = None
        if appending is not None:
            source = appending.reader(options)
            stored = StoredVectors(parts, current.top.spec.dim)
            rows = Appended(appending, source, stored, EncodedStream(iter(source), stored, chunk=PART))
        outcome = Outcome(appended=appended, deleted=len(drop))
        version = IndexVersion(number=current.top.version.number + 1, parent=current.top.version.number,
                               parent_manifest_sha256=current.manifest_sha256, changes={})
        try:
            if isinstance(current.top, IndexManifest):
                manifest = _unsharded(new, current, drop, rows, version, options, outcome)
            else:
                manifest = _sharded(new, current, drop, rows, version, options, outcome)
        except FastDPRError:
            shutil.rmtree(new, ignore_errors=True)
            raise
        timings["write"] = time.perf_counter() - writing
        changes = {**_changes(outcome, rows, timings, time.perf_counter() - started), **recorded}
        manifest = _record_changes(new, manifest, dataclasses.replace(version, changes=changes))
        publish(new, index)
        shutil.rmtree(staging, ignore_errors=True)  # the previous version and the encoded parts
    return manifest


def _changes(outcome: Outcome, rows: Appended | None, timings: dict[str, float], seconds: float) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # Appended vectors come from this CPU's kernels (int8 ones differ between classes: fastdpr.common.cpu).
        "int8_class": this_cpu().int8_class,
        "appended": outcome.appended, "deleted": outcome.deleted, "graphs_extended": outcome.graphs_extended,
        "graphs_rebuilt": outcome.graphs_rebuilt, "new_shards": outcome.new_shards,
        # checks: reading the index and the corpus's ids; setup: int8 check and session; write: the new
        # version (copies, graphs, hashes); total also counts the publishing swap.
        "seconds": {**{key: round(value, 2) for key, value in timings.items()}, "total": round(seconds, 2)}}
    if outcome.write_seconds:  # the rewritten directories' part of write (new shards record their own build)
        changes["write_seconds"] = {key: round(value, 2) for key, value in outcome.write_seconds.items()}
    if rows is not None:
        report = rows.source.report
        changes["corpus"] = {"path": str(rows.appending.corpus.resolve()), "format": rows.appending.fmt,
                             "skipped_total": report.total_skipped, "skipped": report.skipped}
    return changes


def _record_changes(new: Path, manifest: dict[str, Any], version: IndexVersion) -> dict[str, Any]:
    """The new top-level manifest with its ``version`` complete (the counts of what was done are known
    only once the directory is written)."""
    data = {**manifest, "version": version.to_dict()}
    write_json(new / MANIFEST_NAME, data)
    if is_sharded_index(new):
        load_sharded_manifest(new, "sizes")
    else:
        load_index_manifest(new, "sizes")
    return data
