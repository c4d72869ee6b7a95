"""The manifests of index directories, parsed completely at load into frozen dataclasses.

Two kinds (see :mod:`fastdpr.index.build` and :mod:`fastdpr.index.load` for the layouts): ``fastdpr-index``
(one index, or one shard of a sharded index) and ``fastdpr-sharded-index``. Every file a loader opens
is named here, and every such name must be listed in the manifest's file table
(:class:`~fastdpr.common.integrity.FileTable`), which confines it to the directory and vouches for it by size,
fingerprint and sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.common.fields import Fields
from fastdpr.common.integrity import MANIFEST_NAME, FileTable, Integrity, confined_name, read_manifest
from fastdpr.index.vector_settings import CompressedFiles, VectorSettings
from fastdpr.lexical.bm25 import LEXICAL_METHODS, STEMMER_PREFIX, BM25Settings
from fastdpr.model.spec import EncoderSpec

INDEX_FORMAT = "fastdpr-index"
INDEX_FORMAT_VERSION = 1
SHARDED_INDEX_FORMAT = "fastdpr-sharded-index"
SHARDED_INDEX_FORMAT_VERSION = 1
PRECISIONS = ("int8", "fp32")
#: How scores relate to hnswlib's ``ip`` space (recorded for readers of the manifest; nothing parses it).
HNSW_SPACE = {"space": "ip", "score": "dot product (1 - hnswlib distance)"}
#: What a shard's manifest records as its question encoder: the sharded index's, informational only (a
#: shard is never loaded on its own, and its file table cannot vouch for a file outside it).
SHARD_QUESTION_ENCODER = {"model": "../../encoder/model.onnx", "tokenizer": "../../encoder/tokenizer.json"}
#: The order of a manifest's keys on disk (keys not listed follow, in the order they were given).
_KEY_ORDER = ("format", "format_version", "created_utc", "artifact", "spec", "precision", "corpus",
              "question_encoder", "shard", "cpu", "int8_verification", "counts", "version", "shard_size", "shards",
              "vectors", "store", "hnsw", "lexical", "build", "versions", "files")
#: What the lexical side indexes of each passage (issue #23).
LEXICAL_FIELDS = "title and text, joined by a newline"
#: How a sharded index merges its shards' lexical hits (recorded for readers; nothing parses it).
LEXICAL_MERGE = "each shard's hits by raw BM25 score (shard-local statistics)"


def _ordered(manifest: dict[str, Any]) -> dict[str, Any]:
    known = {key: manifest[key] for key in _KEY_ORDER if key in manifest}
    return {**known, **{key: value for key, value in manifest.items() if key not in known}}


def _counts(count: int, raw: dict[str, Any]) -> dict[str, Any]:
    # The skip counts are the corpus report's (provenance); ``indexed`` is the typed count.
    return {"indexed": count, **{key: value for key, value in raw.get("counts", {}).items() if key != "indexed"}}


@dataclass(frozen=True)
class ProbeCheck:
    """What an int8 index keeps to check its question encoder on the machine that loads it."""

    questions: str  # JSON list of the probe questions
    reference: str  # .npy of PyTorch fp32's embeddings of them
    batch_size: int
    held_out_from: int  # rows from here on were held out from int8 calibration
    min_cosine: float
    recall_at_10: float

    @property
    def thresholds(self) -> dict[str, float]:
        """The export's int8 thresholds, as :func:`fastdpr.model.verify.verify_int8_questions` takes them."""
        return {"min_cosine": self.min_cosine, "recall_at_10": self.recall_at_10}

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``question_encoder.probe_check`` object."""
        return {"questions": self.questions, "reference": self.reference, "batch_size": self.batch_size,
                "held_out_from": self.held_out_from, "thresholds": self.thresholds}


@dataclass(frozen=True)
class QuestionEncoderFiles:
    """The question encoder an index carries (ONNX model and tokenizer), and its int8 probe check."""

    model: str
    tokenizer: str
    probe_check: ProbeCheck | None
    #: The question encoder's precision (indexes written before it was recorded: the index's precision).
    precision: str

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``question_encoder`` object."""
        return {"model": self.model, "tokenizer": self.tokenizer, "precision": self.precision,
                "probe_check": None if self.probe_check is None else self.probe_check.to_dict()}


@dataclass(frozen=True)
class HnswSettings:
    """The HNSW graph's settings (``file``: None in a sharded manifest, whose shards hold the graphs).

    A graph that passages were deleted from (``fastdpr index --delete``) keeps them, marked deleted
    (hnswlib's ``mark_deleted``: they still route searches, never come back as hits), so its graph
    labels are no longer the rows of ``vectors.npy``: ``labels`` then names an ``int64 [elements]``
    .npy that maps each graph label to its row (-1: deleted), and ``elements`` counts the graph's
    elements, deleted ones included. Both None: graph label = row, as every fresh build writes.
    """

    file: str | None
    m: int
    ef_construction: int
    ef_search: int
    labels: str | None = None
    elements: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``hnsw`` object (without ``file`` when there is none)."""
        return {**({} if self.file is None else {"file": self.file}), **HNSW_SPACE, "m": self.m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                **({} if self.labels is None else {"labels": self.labels, "elements": self.elements})}


@dataclass(frozen=True)
class IndexVersion:
    """Which version of an index this is (``fastdpr index --append/--delete`` publishes the next one).

    ``number`` 1 is a fresh build (and every index written before versions were recorded); ``parent``
    is the version it was made from, ``parent_manifest_sha256`` that version's manifest, ``changes``
    what the update did (appended and deleted counts, the appended corpus and its skipped rows).
    """

    number: int = 1
    parent: int | None = None
    parent_manifest_sha256: str | None = None
    changes: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``version`` object."""
        return {"number": self.number, "parent": self.parent, "parent_manifest_sha256": self.parent_manifest_sha256,
                "changes": self.changes}

    @classmethod
    def parse(cls, fields: Fields) -> IndexVersion:
        """The ``version`` object of a manifest; absent: version 1."""
        version = fields.optional_obj("version")
        if version is None:
            return cls()
        number = version.integer("number", minimum=1)
        return cls(number=number, parent=version.integer("parent", minimum=1) if version.has("parent") else None,
                   parent_manifest_sha256=version.optional_string("parent_manifest_sha256"),
                   changes=version.obj("changes").data if version.has("changes") else None)


def _with_version(typed: dict[str, Any], version: IndexVersion) -> dict[str, Any]:
    # Version 1 is implied by its absence, so a fresh build writes the manifest it always wrote.
    return typed if version.number == 1 else {**typed, "version": version.to_dict()}


@dataclass(frozen=True)
class LexicalSettings:
    """A lexical side's method and how it tokenizes and scores (issue #23): all a question needs to be
    tokenized as the passages were. A sharded index's top level records its shards' this way."""

    method: str
    bm25: BM25Settings

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``lexical`` keys that say how (``method``, ``bm25``, ``tokenizer``, ``fields``)."""
        return {"method": self.method, **self.bm25.to_dict(), "fields": LEXICAL_FIELDS}


@dataclass(frozen=True)
class LexicalFiles:
    """The lexical side an index directory holds (``--lexical bm25``): its settings, its directory and the
    files bm25s opens there (each in the file table), and its size."""

    settings: LexicalSettings
    dir: str
    files: tuple[str, ...]
    passages: int
    vocabulary: int
    #: Recorded, never read: the library versions and the build time.
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``lexical`` object."""
        return {**self.settings.to_dict(), "dir": self.dir, "files": list(self.files), "passages": self.passages,
                "vocabulary": self.vocabulary, **self.provenance}


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the top-level manifest of a sharded index lists it."""

    dir: str
    count: int
    label_offset: int
    manifest_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the top-level manifest."""
        return {"dir": self.dir, "count": self.count, "label_offset": self.label_offset,
                "manifest_sha256": self.manifest_sha256}


@dataclass(frozen=True)
class IndexManifest:
    """A checked ``fastdpr-index`` manifest.

    ``raw`` is the JSON as read (for reports). A writer builds the dataclass with ``raw`` holding only the
    keys no load reads (provenance: ``created_utc``, ``artifact``, ``corpus``, ``cpu``, the corpus report's
    skip ``counts``, ``build`` timings, ``versions``, a shard's ``number``), and writes :meth:`to_dict`.
    """

    root: Path
    spec: EncoderSpec
    precision: str
    count: int
    vectors: str
    store: str
    hnsw: HnswSettings
    #: None for a shard: the sharded index's top-level manifest owns the encoder.
    question_encoder: QuestionEncoderFiles | None
    shard_label_offset: int | None
    files: FileTable
    raw: dict[str, Any]
    #: The BM25 side (None: built without ``--lexical``, dense search only).
    lexical: LexicalFiles | None = None
    version: IndexVersion = IndexVersion()
    #: The compressed index searched instead of the HNSW graph (``--vectors fp16/int8/pq``, issue #22; its
    #: ``hnsw.file`` is then None). None: fp32, the hnswlib graph (every index written before #22).
    compressed: CompressedFiles | None = None

    @property
    def vector_settings(self) -> VectorSettings:
        """How the passage vectors are searched (fp32 when there is no compressed index)."""
        return VectorSettings() if self.compressed is None else self.compressed.settings

    def path(self, rel: str) -> Path:
        """The path of a file the manifest lists (refuses anything else)."""
        return self.files.path(rel)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data: the typed fields over ``raw``'s provenance keys."""
        typed: dict[str, Any] = {
            "format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "spec": self.spec.to_dict(),
            "precision": self.precision,
            "question_encoder": (dict(SHARD_QUESTION_ENCODER) if self.question_encoder is None
                                 else self.question_encoder.to_dict()),
            "counts": _counts(self.count, self.raw),
            "vectors": {"file": self.vectors, "dtype": "float32", "shape": [self.count, self.spec.dim],
                        **({} if self.compressed is None else {"search": self.compressed.to_dict()})},
            "store": self.store, "hnsw": self.hnsw.to_dict(), "files": self.files.to_dict(),
            "lexical": None if self.lexical is None else self.lexical.to_dict(),
        }
        if self.shard_label_offset is not None:
            typed["shard"] = {**self.raw.get("shard", {}), "label_offset": self.shard_label_offset}
        return _ordered(_with_version({**self.raw, **typed}, self.version))


@dataclass(frozen=True)
class ShardedIndexManifest:
    """A checked ``fastdpr-sharded-index`` manifest (the shards themselves are checked by
    :func:`fastdpr.index.load.load_sharded_manifest`). ``raw`` as for :class:`IndexManifest`."""

    root: Path
    spec: EncoderSpec
    precision: str
    count: int
    hnsw: HnswSettings
    question_encoder: QuestionEncoderFiles
    shards: tuple[ShardEntry, ...]
    files: FileTable
    raw: dict[str, Any]
    #: The lexical side every shard holds (None: none does; :func:`fastdpr.index.load.load_sharded_manifest`
    #: checks that the shards agree).
    lexical: LexicalSettings | None = None
    version: IndexVersion = IndexVersion()
    #: How every shard's vectors are searched (issue #22; :func:`fastdpr.index.load.load_sharded_manifest`
    #: checks that the shards agree). ``nlist`` is the first shard's (later shards share its codebook).
    vector_settings: VectorSettings = field(default_factory=VectorSettings)

    def path(self, rel: str) -> Path:
        """The path of a file the manifest lists (refuses anything else)."""
        return self.files.path(rel)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data: the typed fields over ``raw``'s provenance keys."""
        return _ordered(_with_version(
            {**self.raw, "format": SHARDED_INDEX_FORMAT, "format_version": SHARDED_INDEX_FORMAT_VERSION,
             "spec": self.spec.to_dict(), "precision": self.precision,
             "question_encoder": self.question_encoder.to_dict(), "counts": _counts(self.count, self.raw),
             "shards": [entry.to_dict() for entry in self.shards], "hnsw": self.hnsw.to_dict(),
             **({} if not self.vector_settings.compressed else {"vectors": {"search": self.vector_settings.to_dict()}}),
             "lexical": None if self.lexical is None else {
                 **self.lexical.to_dict(), "per_shard": True, "merge": LEXICAL_MERGE},
             "files": self.files.to_dict()}, self.version))


def _spec(fields: Fields) -> EncoderSpec:
    try:
        return EncoderSpec.from_dict(fields.obj("spec").data)
    except FastDPRError as exc:  # ArtifactError from the spec: say which file
        fields.fail(f"spec: {exc}")


def _question_encoder(fields: Fields, files: FileTable) -> QuestionEncoderFiles:
    encoder = fields.obj("question_encoder")
    precision = encoder.one_of("precision", PRECISIONS) if encoder.has("precision") else fields.one_of(
        "precision", PRECISIONS)
    probe: ProbeCheck | None = None
    if (check := encoder.optional_obj("probe_check")) is not None:
        thresholds = check.obj("thresholds")
        probe = ProbeCheck(questions=files.require(check.string("questions"), "question_encoder.probe_check.questions"),
                           reference=files.require(check.string("reference"), "question_encoder.probe_check.reference"),
                           batch_size=check.integer("batch_size", minimum=1),
                           held_out_from=check.integer("held_out_from") if check.has("held_out_from") else 0,
                           min_cosine=thresholds.number("min_cosine"),
                           recall_at_10=thresholds.number("recall_at_10"))
    return QuestionEncoderFiles(model=files.require(encoder.string("model"), "question_encoder.model"),
                                tokenizer=files.require(encoder.string("tokenizer"), "question_encoder.tokenizer"),
                                probe_check=probe, precision=precision)


def _hnsw(fields: Fields, files: FileTable, with_file: bool) -> HnswSettings:
    hnsw = fields.obj("hnsw")
    labels = hnsw.optional_string("labels") if with_file else None
    return HnswSettings(file=files.require(hnsw.string("file"), "hnsw.file") if with_file else None,
                        m=hnsw.integer("m", minimum=2), ef_construction=hnsw.integer("ef_construction", minimum=1),
                        ef_search=hnsw.integer("ef_search", minimum=1),
                        labels=None if labels is None else files.require(labels, "hnsw.labels"),
                        elements=None if labels is None else hnsw.integer("elements", minimum=1))


def _lexical_settings(entry: Fields) -> LexicalSettings:
    bm25, tokenizer = entry.obj("bm25"), entry.obj("tokenizer")
    stemmer = tokenizer.optional_string("stemmer")
    if stemmer is not None:
        if not stemmer.startswith(STEMMER_PREFIX):
            tokenizer.fail(f"{tokenizer.where}.stemmer must be {STEMMER_PREFIX!r} and a language, got {stemmer!r}")
        stemmer = stemmer.removeprefix(STEMMER_PREFIX)
    lower = tokenizer.raw("lower")
    if not isinstance(lower, bool):
        tokenizer.fail(f"{tokenizer.where}.lower must be true or false, got {lower!r}")
    return LexicalSettings(method=entry.one_of("method", LEXICAL_METHODS), bm25=BM25Settings(
        method=bm25.string("method"), k1=bm25.number("k1"), b=bm25.number("b"), lower=lower,
        token_pattern=tokenizer.string("token_pattern"), stopwords=tokenizer.optional_string("stopwords"),
        stemmer=stemmer))


def _lexical_files(fields: Fields, files: FileTable, count: int) -> LexicalFiles | None:
    entry = fields.optional_obj("lexical")
    if entry is None:
        return None
    directory = entry.string("dir")
    if problem := confined_name(directory):
        entry.fail(f"lexical.dir {directory!r} {problem}")
    names = entry.array("files")
    if not names:
        entry.fail("lexical.files lists no files")
    for name in names:
        # Every file bm25s opens is in the file table, so it is checked at load like the vectors.
        if not isinstance(name, str) or not name.startswith(f"{directory}/"):
            entry.fail(f"lexical.files lists {name!r} outside {directory}/")
        files.require(name, "lexical.files")
    passages = entry.integer("passages", minimum=1)
    if passages != count:
        entry.fail(f"lexical.passages is {passages}, the index holds {count} (counts.indexed)")
    return LexicalFiles(settings=_lexical_settings(entry), dir=directory, files=tuple(names), passages=passages,
                        vocabulary=entry.integer("vocabulary"),
                        provenance={key: entry.data[key] for key in ("versions", "build_seconds") if key in entry.data})


def parse_index_manifest(fields: Fields, root: Path) -> IndexManifest:
    """Every key the runtime reads, typed and checked; referenced files must be in the file table."""
    files = FileTable.parse(fields, root)
    spec = _spec(fields)
    count = fields.obj("counts").integer("indexed", minimum=1)
    vectors = fields.obj("vectors")
    shape = vectors.array("shape")
    if shape != [count, spec.dim]:
        fields.fail(f"vectors.shape is {shape}, expected [{count}, {spec.dim}] (counts.indexed, spec.dim)")
    shard = fields.optional_obj("shard")
    search = vectors.optional_obj("search")
    compressed = None if search is None else CompressedFiles.parse(search, files.require(search.string("file"),
                                                                                          "vectors.search.file"))
    return IndexManifest(
        root=root, spec=spec, precision=fields.one_of("precision", PRECISIONS), count=count,
        vectors=files.require(vectors.string("file"), "vectors.file"),
        store=files.require(fields.string("store"), "store"),
        hnsw=_hnsw(fields, files, with_file=compressed is None),
        # A shard's manifest records the shared encoder as ../../encoder/...: informational, never opened.
        question_encoder=None if shard is not None else _question_encoder(fields, files),
        shard_label_offset=None if shard is None else shard.integer("label_offset"),
        files=files, raw=fields.data, lexical=_lexical_files(fields, files, count), version=IndexVersion.parse(fields),
        compressed=compressed)


def parse_sharded_manifest(fields: Fields, root: Path) -> ShardedIndexManifest:
    """As :func:`parse_index_manifest`, for the top level of a sharded index."""
    files = FileTable.parse(fields, root)
    shards: list[ShardEntry] = []
    for number in range(len(fields.array("shards"))):
        entry = fields.item("shards", number)
        directory = entry.string("dir")
        if problem := confined_name(directory):
            entry.fail(f"{entry.where}.dir {directory!r} {problem}")
        shards.append(ShardEntry(dir=directory, count=entry.integer("count", minimum=1),
                                 label_offset=entry.integer("label_offset"),
                                 manifest_sha256=entry.string("manifest_sha256")))
    if not shards:
        fields.fail("shards lists no shards")
    return ShardedIndexManifest(
        root=root, spec=_spec(fields), precision=fields.one_of("precision", PRECISIONS),
        count=fields.obj("counts").integer("indexed", minimum=1), hnsw=_hnsw(fields, files, with_file=False),
        question_encoder=_question_encoder(fields, files), shards=tuple(shards), files=files, raw=fields.data,
        lexical=None if (lexical := fields.optional_obj("lexical")) is None else _lexical_settings(lexical),
        version=IndexVersion.parse(fields), vector_settings=_sharded_vectors(fields))


def _sharded_vectors(fields: Fields) -> VectorSettings:
    # A sharded index records its shards' vector settings as ``vectors.search`` (absent: fp32).
    vectors = fields.optional_obj("vectors")
    search = None if vectors is None else vectors.optional_obj("search")
    return VectorSettings() if search is None else VectorSettings.parse(search)


def load_index_manifest(index_dir: Path | str, integrity: Integrity = "fingerprint") -> IndexManifest:
    """Read, parse and check an index manifest and every file it lists (see
    :data:`~fastdpr.common.integrity.Integrity`: by default sizes and fingerprints)."""
    root = Path(index_dir)
    manifest = parse_index_manifest(read_manifest(root, INDEX_FORMAT, (INDEX_FORMAT_VERSION,), IndexLoadError), root)
    manifest.files.check(integrity)
    return manifest


def shard_directory(root: Path, entry: ShardEntry) -> Path:
    """The directory of a shard, refused when it resolves outside the sharded index (a symlink)."""
    path = root / entry.dir
    if not path.resolve().is_relative_to(root.resolve()):
        raise IndexLoadError(f"{root}: shard {entry.dir} resolves to {path.resolve()}, outside the index")
    return path


def check_shard_manifest(root: Path, entry: ShardEntry) -> Path:
    """The shard's directory, once its manifest hashes to what the top-level manifest recorded.

    The manifest is small and holds every file's sha256 and fingerprint, so hashing it always ties the
    shard's whole content to the top-level manifest.
    """
    shard_dir = shard_directory(root, entry)
    manifest = shard_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise IndexLoadError(f"{root}: shard {entry.dir} is missing")
    if hashlib.sha256(manifest.read_bytes()).hexdigest() != entry.manifest_sha256:
        raise IndexLoadError(f"{root}: the manifest of shard {entry.dir} differs from the one the index "
                             "recorded (shard altered or replaced)")
    return shard_dir
