"""Comparing embeddings with a reference, and proving an artifact reproduces its PyTorch model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastdpr.artifact import Artifact
from fastdpr.spec import SIDES, Side


@dataclass(frozen=True)
class Comparison:
    """How close embeddings are to a reference, row by row."""

    max_abs: float
    min_cosine: float
    mean_cosine: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return asdict(self)


def compare(embeddings: np.ndarray, reference: np.ndarray) -> Comparison:
    """Max absolute difference and min/mean row cosine of ``embeddings`` against ``reference``."""
    if embeddings.shape != reference.shape:
        raise ValueError(f"shape {embeddings.shape} differs from the reference's {reference.shape}")
    a = embeddings.astype(np.float64)
    b = reference.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)
    return Comparison(
        max_abs=float(np.max(np.abs(a - b))) if a.size else 0.0,
        min_cosine=float(cosine.min()) if cosine.size else 1.0,
        mean_cosine=float(cosine.mean()) if cosine.size else 1.0,
    )


@dataclass(frozen=True)
class VerifyResult:
    """One side at one precision, checked against the artifact's PyTorch probe embeddings."""

    side: Side
    precision: str
    comparison: Comparison
    min_cosine_threshold: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"side": self.side, "precision": self.precision, **self.comparison.to_dict(),
                "min_cosine_threshold": self.min_cosine_threshold, "passed": self.passed}


def verify_artifact(artifact: Artifact, threads: int | None = None) -> list[VerifyResult]:
    """Encode the probes with the runtime at every precision and compare with PyTorch.

    Uses the batch size the export validated with: dynamic int8 depends on batch composition, so the
    same batching is what makes the numbers reproducible.
    """
    probes = artifact.probes()
    batch_size = int(artifact.manifest["probes"]["batch_size"])
    thresholds = artifact.manifest["validation"]["thresholds"]
    results: list[VerifyResult] = []
    for precision in artifact.precisions:
        threshold = float(thresholds[precision]["min_cosine"])
        for side in SIDES:
            encoder = artifact.encoder(side, precision, threads)
            inputs = probes.questions if side == "question" else probes.passage_pairs()
            embeddings = encoder.encode(inputs, batch_size=batch_size)
            comparison = compare(embeddings, artifact.probe_reference(side))
            results.append(VerifyResult(side, precision, comparison, threshold,
                                        comparison.min_cosine >= threshold))
    return results
