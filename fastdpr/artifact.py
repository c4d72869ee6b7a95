"""Loading an export artifact: manifest, spec, models, tokenizers, probes (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.encoder import OnnxEncoder
from fastdpr.errors import ArtifactError
from fastdpr.manifest import MANIFEST_NAME, read_manifest, sha256_file, verify_files
from fastdpr.probes import Probes
from fastdpr.spec import SIDES, EncoderSpec, Side
from fastdpr.tokenization import SpecTokenizer

ARTIFACT_FORMAT = "fastdpr-artifact"
ARTIFACT_FORMAT_VERSION = 1
PRECISIONS = ("int8", "fp32")


@dataclass(frozen=True)
class Artifact:
    """An exported encoder pair on disk (see README, "Artifact layout")."""

    root: Path
    manifest: dict[str, Any]
    spec: EncoderSpec

    @classmethod
    def load(cls, root: Path | str, check_hashes: bool = True) -> Artifact:
        """Open ``root``, check its format and (by default) the sha256 of every file it lists."""
        root = Path(root)
        manifest = read_manifest(root, ARTIFACT_FORMAT, (ARTIFACT_FORMAT_VERSION,), ArtifactError)
        try:
            spec = EncoderSpec.from_dict(manifest["spec"])
            sides = manifest["sides"]
            files = manifest["files"]
        except KeyError as exc:
            raise ArtifactError(f"{root}/{MANIFEST_NAME} lacks {exc}: not written by fastdpr export?") from exc
        for side in SIDES:
            if side not in sides:
                raise ArtifactError(f"{root}/{MANIFEST_NAME} does not say which model serves the {side} side")
        verify_files(root, files, ArtifactError, check_hashes=check_hashes)
        return cls(root=root, manifest=manifest, spec=spec)

    @property
    def shared_encoder(self) -> bool:
        """True when one model serves both sides (``encoder/``)."""
        return bool(self.manifest["sides"]["question"]["dir"] == self.manifest["sides"]["context"]["dir"])

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this artifact carries, best first (``int8`` when quantized)."""
        models = self.manifest["sides"]["question"]["models"]
        return tuple(p for p in PRECISIONS if p in models)

    @property
    def default_precision(self) -> str:
        """``int8`` when the artifact has it, else ``fp32``."""
        return self.precisions[0]

    @property
    def identity(self) -> str:
        """A stable identity: the sha256 of the manifest (which holds every file's sha256)."""
        return sha256_file(self.root / MANIFEST_NAME)

    def _side(self, side: Side) -> dict[str, Any]:
        entry: dict[str, Any] = self.manifest["sides"][side]
        return entry

    def model_path(self, side: Side, precision: str) -> Path:
        """The ONNX file of ``side`` at ``precision``; a clear error when the artifact lacks it."""
        models = self._side(side)["models"]
        if precision not in models:
            raise ArtifactError(
                f"{self.root} has no {precision} model (has: {', '.join(self.precisions)}); "
                "re-export with --quantize to get int8"
            )
        return self.root / models[precision]

    def tokenizer_path(self, side: Side) -> Path:
        """The side's ``tokenizer.json``."""
        return self.root / self._side(side)["tokenizer"]

    def tokenizer(self, side: Side) -> SpecTokenizer:
        """The side's tokenizer, configured by the spec."""
        return SpecTokenizer(self.tokenizer_path(side), self.spec, side)

    def encoder(self, side: Side, precision: str | None = None, threads: int | None = None) -> OnnxEncoder:
        """An ONNX Runtime encoder for ``side`` (default precision: :attr:`default_precision`)."""
        path = self.model_path(side, precision or self.default_precision)
        return OnnxEncoder(path, self.tokenizer(side), threads=threads)

    def probes(self) -> Probes:
        """The probe texts the export validated on."""
        probes = Probes.load(self.root / self.manifest["probes"]["dir"])
        source = self.manifest["probes"].get("source")  # absent in artifacts written before it was recorded
        if source:
            probes = replace(probes, source=source)
        split = self.manifest["probes"].get("calibration")  # absent before probes were held out
        if split:
            probes = replace(probes, calibration_questions=int(split["questions"]),
                             calibration_passages=int(split["passages"]))
        return probes

    def probe_reference(self, side: Side) -> np.ndarray:
        """PyTorch's embeddings of the probes for ``side`` (computed at export time)."""
        path = self.root / self.manifest["probes"]["reference"][side]
        return np.load(path, allow_pickle=False)
