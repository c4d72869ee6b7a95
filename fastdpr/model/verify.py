"""Comparing embeddings with a reference, and proving an artifact reproduces its PyTorch model on the
machine that runs it.

int8 numbers depend on the CPU's int8 kernels (``fastdpr/common/cpu.py``), and the export machine can only
test its own. So the int8 graph is checked again where it is deployed: against the PyTorch fp32
embeddings of the probes stored in the artifact, on the probes held out from int8 calibration, with
the export's thresholds (min cosine per side, and recall@10 of int8 retrieval against fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ArtifactError
from fastdpr.model.spec import SIDES, Side

if TYPE_CHECKING:  # loading an index needs only verify_int8_questions: keep artifact/probe imports off that path
    from fastdpr.model.artifact import Artifact
    from fastdpr.model.encoder import OnnxEncoder
    from fastdpr.model.passage_backend import PassageBackend

RETRIEVAL_K = 10


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


@dataclass(frozen=True)
class RetrievalAgreement:
    """Share of fp32's top-k passages that int8 retrieval also returns, over the probe questions."""

    recall_at_k: float
    k: int
    questions: int
    passages: int


def retrieval_agreement(q_ref: np.ndarray, p_ref: np.ndarray, q_test: np.ndarray, p_test: np.ndarray,
                        k: int = RETRIEVAL_K) -> RetrievalAgreement:
    """Recall@k of the test system's exact top-k against the reference system's exact top-k."""
    k = min(k, p_ref.shape[0])
    ref_top = np.argsort(-(q_ref @ p_ref.T), axis=1)[:, :k]
    test_top = np.argsort(-(q_test @ p_test.T), axis=1)[:, :k]
    found = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ref_top, test_top, strict=True))
    return RetrievalAgreement(found / (k * len(ref_top)), k, len(ref_top), p_ref.shape[0])


@dataclass(frozen=True)
class Int8Verification:
    """The int8 graph checked on *this* machine against PyTorch fp32, on held-out probes."""

    where: str  # "index build", "load", "info --verify"
    cpu: dict[str, Any]
    sides: dict[str, dict[str, float]]  # side -> Comparison + threshold
    recall_at_10: float | None  # None when only the question side was checked (cheap load check)
    thresholds: dict[str, float]
    passed: bool
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what manifests record)."""
        return asdict(self)

    def summary(self) -> str:
        """One line a person reads."""
        parts = [f"{side} min cosine {v['min_cosine']:.4f}" for side, v in self.sides.items()]
        if self.recall_at_10 is not None:
            parts.append(f"recall@10 vs fp32 {self.recall_at_10:.3f}")
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        return f"int8 on {self.cpu['int8_class']} ({self.where}): {', '.join(parts)}: {verdict}"


def _held_out_check(side: str, embeddings: np.ndarray, reference: np.ndarray, rows: slice, min_cosine: float,
                    failures: list[str]) -> dict[str, float]:
    comparison = compare(embeddings[rows], reference[rows])
    if comparison.min_cosine < min_cosine:
        failures.append(f"{side} min cosine {comparison.min_cosine:.4f} < {min_cosine}")
    return {**comparison.to_dict(), "min_cosine_threshold": min_cosine}


def int8_thresholds(artifact: Artifact) -> dict[str, float]:
    """The export's int8 thresholds, as recorded in an artifact manifest."""
    if "int8" not in artifact.typed.min_cosine:
        raise ArtifactError(f"{artifact.root} has no int8 model (and no int8 thresholds)")
    return {"min_cosine": artifact.typed.min_cosine["int8"], "recall_at_10": artifact.typed.int8_recall_at_10}


def verify_int8_here(artifact: Artifact, where: str, threads: int | None = None,
                     passage_backend: PassageBackend | None = None) -> Int8Verification:
    """Encode the probes with the artifact's int8 graphs on this machine and judge them on the held-out
    probes against PyTorch fp32 (both sides' min cosine, and retrieval agreement). With ``passage_backend``
    OpenVINO, the passages are encoded by the artifact's OpenVINO graph (what the index will hold)."""
    if passage_backend is not None and passage_backend.name != "onnxruntime":
        where = f"{where} (passages on {passage_backend.name})"
    probes = artifact.probes()
    batch_size = artifact.typed.probes.batch_size
    thresholds = int8_thresholds(artifact)
    embeddings: dict[str, np.ndarray] = {}
    references: dict[str, np.ndarray] = {}
    failures: list[str] = []
    sides: dict[str, dict[str, float]] = {}
    for side in SIDES:
        inputs = probes.questions if side == "question" else probes.passage_pairs()
        encoder = (artifact.passage_encoder(passage_backend, "int8", threads)
                   if side == "context" and passage_backend is not None else artifact.encoder(side, "int8", threads))
        embeddings[side] = encoder.encode(inputs, batch_size=batch_size)
        references[side] = artifact.probe_reference(side)
        sides[side] = _held_out_check(side, embeddings[side], references[side], probes.held_out_rows(side),
                                      thresholds["min_cosine"], failures)
    q_rows, p_rows = probes.held_out_rows("question"), probes.held_out_rows("context")
    agreement = retrieval_agreement(references["question"][q_rows], references["context"][p_rows],
                                    embeddings["question"][q_rows], embeddings["context"][p_rows])
    if agreement.recall_at_k < thresholds["recall_at_10"]:
        failures.append(f"recall@10 against fp32 {agreement.recall_at_k:.3f} < {thresholds['recall_at_10']}")
    return Int8Verification(where, this_cpu().to_dict(), sides, round(agreement.recall_at_k, 4), thresholds,
                            not failures, failures)


def verify_int8_questions(encoder: OnnxEncoder, questions: Sequence[str], reference: np.ndarray, batch_size: int,
                          held_out: slice, thresholds: dict[str, float], where: str) -> Int8Verification:
    """The cheap check an index runs at load: its int8 question encoder on the probe questions (tens
    of milliseconds), ``held_out`` rows against PyTorch fp32."""
    failures: list[str] = []
    embeddings = encoder.encode(list(questions), batch_size=batch_size)
    sides = {"question": _held_out_check("question", embeddings, reference, held_out, thresholds["min_cosine"],
                                         failures)}
    return Int8Verification(where, this_cpu().to_dict(), sides, None, thresholds, not failures, failures)


def verify_artifact(artifact: Artifact, threads: int | None = None) -> list[VerifyResult]:
    """Encode the probes with the runtime at every precision and compare with PyTorch.

    The runtime embeds one input per call, as at export, so the numbers reproduce the export's on the
    same CPU class whatever the batch size.
    """
    probes = artifact.probes()
    batch_size = artifact.typed.probes.batch_size
    results: list[VerifyResult] = []
    for precision in artifact.precisions:
        threshold = artifact.typed.min_cosine[precision]
        for side in SIDES:
            encoder = artifact.encoder(side, precision, threads)
            inputs = probes.questions if side == "question" else probes.passage_pairs()
            embeddings = encoder.encode(inputs, batch_size=batch_size)
            # int8 is judged on the probes its calibration never read (as at export); fp32 on all.
            rows = probes.held_out_rows(side) if precision == "int8" else slice(None)
            comparison = compare(embeddings[rows], artifact.probe_reference(side)[rows])
            results.append(VerifyResult(side, precision, comparison, threshold,
                                        comparison.min_cosine >= threshold))
    return results
