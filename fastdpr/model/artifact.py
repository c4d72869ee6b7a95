"""Loading an export artifact: manifest, spec, models, tokenizers, probes (no torch needed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import ArtifactError
from fastdpr.common.fields import Fields
from fastdpr.common.integrity import MANIFEST_NAME, FileTable, Integrity, read_manifest, sha256_file
from fastdpr.model.batching import INPUTS_PER_CALL
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.openvino_encoder import OpenVinoEncoder, SideEncoder
from fastdpr.model.passage_backend import OpenVinoEntry, PassageBackend, choose_passage_backend
from fastdpr.model.probes import Probes
from fastdpr.model.spec import SIDES, EncoderSpec, Side
from fastdpr.model.tokenization import SpecTokenizer

ARTIFACT_FORMAT = "fastdpr-artifact"
ARTIFACT_FORMAT_VERSION = 1
PRECISIONS = ("int8", "fp32")
PROBE_FILES = ("questions.jsonl", "passages.jsonl")


@dataclass(frozen=True)
class SideFiles:
    """The model files serving one side (question or context)."""

    dir: str
    tokenizer: str
    models: Mapping[str, str]  # precision -> ONNX file
    source: str | None  # where the weights came from (hub id, directory, builtin:NAME)


@dataclass(frozen=True)
class ProbeFiles:
    """The probe texts the export validated on, and PyTorch's embeddings of them."""

    dir: str
    reference: Mapping[str, str]  # side -> .npy
    batch_size: int
    source: str | None  # absent in artifacts written before it was recorded
    calibration: tuple[int, int] | None  # (questions, passages) read by int8 calibration; None before the split


@dataclass(frozen=True)
class EncodingPlan:
    """How the runtime encodes with an artifact (issue #19): ONNX Runtime calls of ``inputs_per_call``
    inputs (always 1: an embedding depends on its own text only, bitwise), and the precision each side
    runs by default (``fastdpr index`` without ``--precision``/``--question-precision``).

    ``recorded`` is False for artifacts exported before the plan was written into the manifest: they
    get one input per call too, and int8 on both sides (what they were validated with).
    """

    inputs_per_call: int
    precision: Mapping[str, str]  # side -> "int8" | "fp32"
    recorded: bool

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``encoding`` entry."""
        return {"inputs_per_call": self.inputs_per_call, "precision": dict(self.precision)}

    @classmethod
    def parse(cls, fields: Fields, sides: Mapping[str, SideFiles]) -> EncodingPlan:
        """The manifest's ``encoding`` entry, or the plan of an artifact that predates it."""
        encoding = fields.optional_obj("encoding")
        if encoding is None:
            derived: dict[str, str] = {side: "int8" if "int8" in sides[side].models else "fp32" for side in SIDES}
            return cls(INPUTS_PER_CALL, derived, recorded=False)
        per_call = encoding.integer("inputs_per_call", minimum=1)
        if per_call != INPUTS_PER_CALL:
            encoding.fail(f"encoding.inputs_per_call is {per_call}; this fastdpr encodes {INPUTS_PER_CALL} input "
                          "per call: written by a newer fastdpr? Re-export with this version")
        precisions = encoding.obj("precision")
        precision: dict[str, str] = {side: precisions.one_of(side, PRECISIONS) for side in SIDES}
        for side, chosen in precision.items():
            if chosen not in sides[side].models:
                encoding.fail(f"encoding.precision.{side} is {chosen}, but sides.{side}.models has no {chosen} model")
        return cls(per_call, precision, recorded=True)


@dataclass(frozen=True)
class ArtifactManifest:
    """A checked ``fastdpr-artifact`` manifest: every key the runtime reads, typed."""

    spec: EncoderSpec
    sides: Mapping[str, SideFiles]
    probes: ProbeFiles
    #: precision -> the export's min cosine threshold; plus the int8 retrieval gate.
    min_cosine: Mapping[str, float]
    int8_recall_at_10: float
    quantization: dict[str, Any] | None
    encoding: EncodingPlan
    files: FileTable
    #: The OpenVINO passage graph (``fastdpr export --openvino``), None without one.
    openvino: OpenVinoEntry | None = None

    @classmethod
    def parse(cls, fields: Fields, root: Path) -> ArtifactManifest:
        """Parse ``fields`` (a manifest read by :func:`read_manifest`); referenced files must be listed."""
        files = FileTable.parse(fields, root)
        try:
            spec = EncoderSpec.from_dict(fields.obj("spec").data)
        except ArtifactError as exc:
            fields.fail(f"spec: {exc}")
        sides_fields = fields.obj("sides")
        sides: dict[str, SideFiles] = {}
        for side in SIDES:
            entry = sides_fields.obj(side)
            models_fields = entry.obj("models")
            models = {precision: files.require(models_fields.string(precision), f"sides.{side}.models.{precision}")
                      for precision in PRECISIONS if models_fields.has(precision)}
            if "fp32" not in models:
                fields.fail(f"sides.{side}.models.fp32 is missing")
            source = entry.optional_obj("source")
            sides[side] = SideFiles(dir=entry.string("dir"),
                                    tokenizer=files.require(entry.string("tokenizer"), f"sides.{side}.tokenizer"),
                                    models=models, source=None if source is None else source.optional_string("source"))
        probes_fields = fields.obj("probes")
        probe_dir = probes_fields.string("dir")
        for name in PROBE_FILES:
            files.require(f"{probe_dir}/{name}", "probes.dir holds")
        references = probes_fields.obj("reference")
        split = probes_fields.optional_obj("calibration")
        probes = ProbeFiles(
            dir=probe_dir,
            reference={side: files.require(references.string(side), f"probes.reference.{side}") for side in SIDES},
            batch_size=probes_fields.integer("batch_size", minimum=1), source=probes_fields.optional_string("source"),
            calibration=None if split is None else (split.integer("questions"), split.integer("passages")))
        thresholds = fields.obj("validation").obj("thresholds")
        min_cosine = {precision: thresholds.obj(precision).number("min_cosine")
                      for precision in PRECISIONS if precision in sides["question"].models}
        quantization = fields.raw("quantization")
        if quantization is not None and not isinstance(quantization, dict):
            fields.fail("quantization must be an object or null")
        backends = fields.optional_obj("backends")
        openvino_fields = None if backends is None else backends.optional_obj("openvino")
        openvino = None if openvino_fields is None else OpenVinoEntry.parse(openvino_fields, files.require)
        return cls(spec=spec, sides=sides, probes=probes, min_cosine=min_cosine, openvino=openvino,
                   int8_recall_at_10=(thresholds.number("int8_retrieval_recall_at_10")
                                      if thresholds.has("int8_retrieval_recall_at_10") else 0.75),
                   quantization=quantization, encoding=EncodingPlan.parse(fields, sides), files=files)


@dataclass(frozen=True)
class Artifact:
    """An exported encoder pair on disk (see docs/formats.md, "Artifact layout").

    ``manifest`` is the JSON as read (for reports); ``typed`` is what the runtime uses.
    """

    root: Path
    manifest: dict[str, Any]
    spec: EncoderSpec
    typed: ArtifactManifest

    @classmethod
    def load(cls, root: Path | str, integrity: Integrity = "sha256", *, check_hashes: bool | None = None) -> Artifact:
        """Open ``root``, check its format, its manifest, and every file it lists.

        Artifacts are checked by full sha256 by default: they are read whole anyway by whatever uses
        them next (an index build, ``info --verify``), and are a fraction of an index's size.
        ``check_hashes`` (older API): True is ``integrity="sha256"``, False is ``"sizes"``.
        """
        root = Path(root)
        if check_hashes is not None:
            integrity = "sha256" if check_hashes else "sizes"
        fields = read_manifest(root, ARTIFACT_FORMAT, (ARTIFACT_FORMAT_VERSION,), ArtifactError)
        typed = ArtifactManifest.parse(fields, root)
        typed.files.check(integrity)
        return cls(root=root, manifest=fields.data, spec=typed.spec, typed=typed)

    @property
    def sources(self) -> dict[str, str | None]:
        """Where each side's weights came from."""
        return {side: files.source for side, files in self.typed.sides.items()}

    @property
    def shared_encoder(self) -> bool:
        """True when one model serves both sides (``encoder/``)."""
        return self.typed.sides["question"].dir == self.typed.sides["context"].dir

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this artifact carries, best first (``int8`` when quantized)."""
        models = self.typed.sides["question"].models
        return tuple(p for p in PRECISIONS if p in models)

    @property
    def default_precision(self) -> str:
        """``int8`` when the artifact has it, else ``fp32``."""
        return self.precisions[0]

    @property
    def identity(self) -> str:
        """A stable identity: the sha256 of the manifest (which holds every file's sha256)."""
        return sha256_file(self.root / MANIFEST_NAME)

    def model_path(self, side: Side, precision: str) -> Path:
        """The ONNX file of ``side`` at ``precision``; a clear error when the artifact lacks it."""
        models = self.typed.sides[side].models
        if precision not in models:
            raise ArtifactError(
                f"{self.root} has no {precision} model (has: {', '.join(self.precisions)}); "
                "re-export with --quantize to get int8"
            )
        return self.typed.files.path(models[precision])

    def tokenizer_path(self, side: Side) -> Path:
        """The side's ``tokenizer.json``."""
        return self.typed.files.path(self.typed.sides[side].tokenizer)

    def tokenizer(self, side: Side) -> SpecTokenizer:
        """The side's tokenizer, configured by the spec."""
        return SpecTokenizer(self.tokenizer_path(side), self.spec, side)

    def side_precision(self, side: Side) -> str:
        """The precision ``side`` runs by default (the manifest's encoding plan)."""
        return self.typed.encoding.precision[side]

    def encoder(self, side: Side, precision: str | None = None, threads: int | None = None) -> OnnxEncoder:
        """An ONNX Runtime encoder for ``side`` (default precision: :meth:`side_precision`), one input
        per call."""
        path = self.model_path(side, precision or self.side_precision(side))
        return OnnxEncoder(path, self.tokenizer(side), threads=threads)

    def passage_backend(self, precision: str | None = None, requested: str = "auto") -> PassageBackend:
        """The runtime that encodes passages at ``precision`` here (:mod:`fastdpr.model.passage_backend`)."""
        return choose_passage_backend(self.typed.openvino, precision or self.side_precision("context"), requested)

    def passage_encoder(self, backend: PassageBackend, precision: str | None = None,
                        threads: int | None = None) -> SideEncoder:
        """The context encoder on ``backend`` (from :meth:`passage_backend`)."""
        if backend.name == "openvino":
            entry = self.typed.openvino
            assert entry is not None  # chosen only when the artifact has one
            return OpenVinoEncoder(self.typed.files.path(entry.model), self.tokenizer("context"), threads=threads,
                                   bucket=entry.bucket_tokens)
        return self.encoder("context", precision, threads)

    def probes(self) -> Probes:
        """The probe texts the export validated on."""
        entry = self.typed.probes
        # Both probe files are in the file table (checked by parse); the directory is confined by it.
        probes = Probes.load(self.typed.files.path(f"{entry.dir}/{PROBE_FILES[0]}").parent)
        if entry.source:
            probes = replace(probes, source=entry.source)
        if entry.calibration:
            probes = replace(probes, calibration_questions=entry.calibration[0],
                             calibration_passages=entry.calibration[1])
        return probes

    def probe_reference(self, side: Side) -> np.ndarray:
        """PyTorch's embeddings of the probes for ``side`` (computed at export time)."""
        return np.load(self.typed.files.path(self.typed.probes.reference[side]), allow_pickle=False)
