"""The stages of an export, each a function that returns a small typed report.

For each model directory: the runtime tokenizer, the PyTorch reference (with tokenizer parity), ONNX
export, fusion and quantization; after each graph stage, :func:`validate_stage` compares its embeddings
with the reference; after quantization, :func:`avx2_stage` emulates the int8 graph on CPUs without VNNI.
Over the whole artifact, :func:`retrieval_gate` compares int8 retrieval with fp32's, and a
:class:`Verdict` collects every check. The manifest is written from these reports
(:func:`~fastdpr_export.pipeline.export_artifact`), so what it records is what the stages returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ValidationError
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import SpecTokenizer
from fastdpr.model.verify import Comparison, RetrievalAgreement, compare, retrieval_agreement

from .calibration import calibration_batches
from .first_token import EVERY_TOKEN, FIRST_TOKEN, FinalLayer, row_product_nodes
from .job import PROBE_BATCH_SIZE, ExportJob, ModelSource
from .quantize import QuantRecipe
from .validate import STAGE_THRESHOLDS

if TYPE_CHECKING:
    from .openvino_backend import OpenVinoReport

# ------------------------------------------------------------------------------------------ reports


@dataclass(frozen=True)
class ReferenceReport:
    """PyTorch's fp32 embeddings of the probes (what every graph stage is compared with), and how many
    probes the runtime tokenizer encodes exactly as the Hugging Face tokenizer does."""

    embeddings: dict[Side, np.ndarray] = field(repr=False)
    tokenizer_parity: dict[Side, dict[str, int]]


@dataclass(frozen=True)
class OnnxExportReport:
    """The raw (unfused) fp32 graph, the seconds ``torch.onnx.export`` took, and whether its last layer runs
    for the first token only (``final_layer``: ``"first-token"`` or ``"every-token"``)."""

    path: Path
    seconds: float
    layers: int
    final_layer: FinalLayer

    @property
    def attention_layers(self) -> int:
        """The layers whose self-attention runs over every token (what fusion turns into ``Attention``)."""
        return self.layers - 1 if self.final_layer == FIRST_TOKEN else self.layers

    @property
    def row_products(self) -> list[str]:
        """The nodes that multiply one row per input (a first-token final layer's), kept fp32."""
        return row_product_nodes(self.layers) if self.final_layer == FIRST_TOKEN else []

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``graph`` entry for this model."""
        return {"layers": self.layers, "final_layer": self.final_layer}


@dataclass(frozen=True)
class FusionReport:
    """The fused fp32 graph (the artifact's ``model.onnx``), its fused-operator counts, the seconds."""

    path: Path
    operators: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class QuantizationReport:
    """The int8 graph, the recipe as applied to this model, what :func:`~.quantize.quantize` reported
    (operator counts, calibration decisions) and the seconds (calibration feeds included)."""

    path: Path
    recipe: QuantRecipe
    details: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The manifest's per-model quantization entry, before the AVX2 emulation is added."""
        return {**self.details, "row_scales": self.recipe.row_scales}


@dataclass(frozen=True)
class StageCheck:
    """One graph stage's embeddings of one side's probes, compared with PyTorch's."""

    stage: str
    side: Side
    comparison: Comparison
    threshold: float
    embeddings: np.ndarray = field(repr=False)  # every probe: the retrieval gate picks the held-out rows

    @property
    def passed(self) -> bool:
        """Whether the min cosine reached the stage's threshold."""
        return self.comparison.min_cosine >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``validation.stages[stage][side]`` entry."""
        return {**self.comparison.to_dict(), "min_cosine_threshold": self.threshold, "passed": self.passed}

    def failure(self) -> str:
        """One line for the error a failed check raises."""
        return f"{self.stage} {self.side}: min cosine {self.comparison.min_cosine:.6f} < {self.threshold}"


@dataclass(frozen=True)
class ModelReport:
    """Every stage's report for one model directory, in the order they ran."""

    model: ModelSource
    reference: ReferenceReport
    onnx: OnnxExportReport
    fusion: FusionReport
    checks: tuple[StageCheck, ...]
    quantization: QuantizationReport | None = None
    avx2_u8s8: dict[str, Any] | None = None
    openvino: OpenVinoReport | None = None  # the OpenVINO passage graph, when the export builds one

    def seconds(self) -> dict[str, float]:
        """The manifest's ``sides[side].seconds``: how long each graph stage took to write its graph."""
        seconds = {"onnx_export": self.onnx.seconds, "fusion": self.fusion.seconds}
        if self.quantization is not None:
            seconds["quantize"] = self.quantization.seconds
        return seconds

    def quantization_dict(self) -> dict[str, Any] | None:
        """The manifest's ``quantization.per_model[name]`` entry (None without int8)."""
        if self.quantization is None:
            return None
        return {**self.quantization.to_dict(), "avx2_u8s8": self.avx2_u8s8}


@dataclass(frozen=True)
class RetrievalReport:
    """The int8 gate's retrieval check: int8 top-10 against fp32's on the held-out probes."""

    agreement: RetrievalAgreement
    min_recall: float
    cpu_class: str  # int8 numbers depend on the CPU's int8 kernels

    @property
    def passed(self) -> bool:
        """Whether int8 found enough of fp32's neighbours."""
        return self.agreement.recall_at_k >= self.min_recall

    def failure(self) -> str:
        """One line for the error a failed gate raises."""
        return (f"int8 retrieval recall@{self.agreement.k} against fp32 is {self.agreement.recall_at_k:.4f} < "
                f"{self.min_recall} (on {self.cpu_class})")


@dataclass(frozen=True)
class Verdict:
    """Every check of the export: fp32 and fused stages must pass; int8 (min cosine, retrieval) is the
    int8 gate, which benchmarks may record without enforcing."""

    checks: tuple[StageCheck, ...]
    retrieval: RetrievalReport | None
    enforce_int8_gate: bool

    @property
    def failures(self) -> list[str]:
        """Failed fp32 and fused checks: these always refuse the export."""
        return [check.failure() for check in self.checks if check.stage != "int8" and not check.passed]

    @property
    def int8_failures(self) -> list[str]:
        """Failed int8 checks, then a failed retrieval gate."""
        failed = [check.failure() for check in self.checks if check.stage == "int8" and not check.passed]
        if self.retrieval is not None and not self.retrieval.passed:
            failed.append(self.retrieval.failure())
        return failed

    @property
    def refused(self) -> list[str]:
        """The failures that refuse the export."""
        return self.failures + (self.int8_failures if self.enforce_int8_gate else [])

    def stages_dict(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``validation.stages``: ``{stage: {side: comparison}}``."""
        stages: dict[str, dict[str, Any]] = {}
        for check in self.checks:
            stages.setdefault(check.stage, {})[check.side] = check.to_dict()
        return stages


# ------------------------------------------------------------------------------------------- stages


def tokenizer_stage(job: ExportJob, model: ModelSource) -> dict[Side, SpecTokenizer]:
    """Create the model's directory, save its runtime tokenizer there; the tokenizer per side it serves."""
    out_dir = job.model_dir(model)
    out_dir.mkdir()
    backend = model.hf_tokenizer.backend_tokenizer
    # The runtime applies truncation and padding from the spec; the file must not impose its own.
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(out_dir / "tokenizer.json"))
    return {side: SpecTokenizer(out_dir / "tokenizer.json", job.spec, side) for side in model.sides}


def reference_stage(job: ExportJob, model: ModelSource, tokenizers: dict[Side, SpecTokenizer]) -> ReferenceReport:
    """PyTorch's embeddings of the probes from a fresh model copy, after checking that the runtime
    tokenizer gives the Hugging Face tokenizer's ids (else :class:`ValidationError`: nothing later
    would be comparable)."""
    from .validate import pytorch_reference, tokenizer_parity

    job.log(f"{model.name}: PyTorch reference on the probes (fresh model copy)")
    embeddings: dict[Side, np.ndarray] = {}
    parities: dict[Side, dict[str, int]] = {}
    for side in model.sides:
        parity = tokenizer_parity(model.hf_tokenizer, tokenizers[side], job.inputs[side])
        parities[side] = parity
        if parity["equal"] != parity["total"]:
            differ = parity["total"] - parity["equal"]
            raise ValidationError(f"the runtime tokenizer differs from {model.resolved.source}'s Hugging Face "
                                  f"tokenizer on {differ} of {parity['total']} {side} probes")
        embeddings[side] = pytorch_reference(model.resolved, job.spec, tokenizers[side], job.inputs[side],
                                             PROBE_BATCH_SIZE)
    return ReferenceReport(embeddings=embeddings, tokenizer_parity=parities)


def onnx_export_stage(job: ExportJob, model: ModelSource) -> OnnxExportReport:
    """Export the pooled PyTorch encoder to a raw fp32 ONNX graph in the work directory."""
    from .onnx_export import export_onnx
    from .torch_model import build_pooled_encoder

    started = time.perf_counter()
    raw = job.workdir / f"{model.name}.raw.onnx"
    module = build_pooled_encoder(model.resolved, job.spec)
    export_onnx(module, raw, job.opset)
    seconds = round(time.perf_counter() - started, 2)
    final_layer = FIRST_TOKEN if module.final_layer is not None else EVERY_TOKEN
    job.log(f"{model.name}: exported to ONNX (opset {job.opset}, last layer: {final_layer}) in {seconds} s")
    return OnnxExportReport(path=raw, seconds=seconds, layers=int(model.resolved.config["num_hidden_layers"]),
                            final_layer=final_layer)


def fusion_stage(job: ExportJob, model: ModelSource, raw: OnnxExportReport) -> FusionReport:
    """Fuse the raw graph with ONNX Runtime's BERT optimizer into the artifact's ``model.onnx``."""
    from .fusion import fuse

    started = time.perf_counter()
    config = model.resolved.config
    fused = job.model_dir(model) / "model.onnx"
    operators = fuse(raw.path, fused, int(config["num_attention_heads"]), int(config["hidden_size"]),
                     raw.attention_layers)
    seconds = round(time.perf_counter() - started, 2)
    job.log(f"{model.name}: fused {operators} in {seconds} s")
    return FusionReport(path=fused, operators=operators, seconds=seconds)


def quantization_stage(job: ExportJob, model: ModelSource, recipe: QuantRecipe, fused: Path,
                       tokenizers: dict[Side, SpecTokenizer], row_products: list[str]) -> QuantizationReport:
    """Quantize the fused graph into ``model.int8.onnx`` with ``recipe``, calibrating (when the recipe
    reads data) on the probes' calibration rows only: the int8 checks use the others. ``row_products``
    (:attr:`OnnxExportReport.row_products`) stay fp32 where the model's recipe says so."""
    from .quantize import quantize

    started = time.perf_counter()
    calibration = None
    if recipe.needs_calibration:
        rows = {side: job.inputs[side][job.probes.calibration_rows(side)] for side in model.sides}
        calibration = calibration_batches(tokenizers, rows)
    # Per-row scales serve passages; a question-only model has its own settings (QuantRecipe.for_model).
    model_recipe = recipe.for_model(encodes_passages="context" in model.sides)
    target = job.model_dir(model) / "model.int8.onnx"
    details = quantize(fused, target, model_recipe, calibration,
                       row_products=row_products if model_recipe.row_products_fp32 else ())
    report = QuantizationReport(path=target, recipe=model_recipe, details=details,
                                seconds=round(time.perf_counter() - started, 2))
    job.log(f"{model.name}: quantized with {recipe.name} {report.to_dict()} in {report.seconds} s")
    return report


def validate_stage(job: ExportJob, model: ModelSource, stage: str, graph: Path,
                   tokenizers: dict[Side, SpecTokenizer], reference: ReferenceReport) -> tuple[StageCheck, ...]:
    """Embed the probes with ``graph`` in ONNX Runtime and compare them with PyTorch, one check per side,
    each logged as an optimum-style ``[✓]``/``[x]`` line. A failed check does not stop the export here:
    every stage runs, so the error can list all that failed (:class:`Verdict`)."""
    checks = []
    for side in model.sides:
        embeddings = OnnxEncoder(graph, tokenizers[side]).encode(job.inputs[side], batch_size=PROBE_BATCH_SIZE)
        # int8 is judged on the probes its calibration never read; fp32 stages on every probe.
        rows = job.probes.held_out_rows(side) if stage == "int8" else slice(None)
        threshold = STAGE_THRESHOLDS[stage]["min_cosine"]
        comparison = compare(embeddings[rows], reference.embeddings[side][rows])
        check = StageCheck(stage=stage, side=side, comparison=comparison, threshold=threshold, embeddings=embeddings)
        held_out = " (held-out probes)" if stage == "int8" else ""
        job.log(f"  [{'✓' if check.passed else 'x'}] {stage:5s} {side:8s} min cosine {comparison.min_cosine:.6f} "
                f"(>= {threshold}), mean {comparison.mean_cosine:.6f}, max |diff| {comparison.max_abs:.2e}{held_out}")
        checks.append(check)
    return tuple(checks)


def avx2_stage(job: ExportJob, model: ModelSource, quantized: Path,
               tokenizers: dict[Side, SpecTokenizer]) -> dict[str, Any]:
    """What the int8 graph does on CPUs whose U8S8 kernels saturate int16 pair sums (emulated here on
    any CPU, on the held-out probes): recorded in the manifest, so an index on such a CPU can warn."""
    from .kernel_emulation import avx2_report

    started = time.perf_counter()
    held_out = {side: job.inputs[side][job.probes.held_out_rows(side)] for side in model.sides}
    report = avx2_report(quantized, calibration_batches(tokenizers, held_out))
    job.log(f"{model.name}: on AVX2/AVX-512 without VNNI (emulated): {report['weight_pairs_that_can_saturate']} "
            f"weight pairs can saturate int16; {report['held_out']['saturated_pairs']} pairs did on the held-out "
            f"probes ({time.perf_counter() - started:.1f} s)")
    return report


def retrieval_gate(job: ExportJob, reports: list[ModelReport], min_recall: float) -> RetrievalReport:
    """int8 retrieval against fp32 (fused) retrieval over the held-out probes of both sides."""
    held_out: dict[str, dict[Side, np.ndarray]] = {"fused": {}, "int8": {}}
    for check in (check for report in reports for check in report.checks):
        if check.stage in held_out:
            held_out[check.stage][check.side] = check.embeddings[job.probes.held_out_rows(check.side)]
    agreement = retrieval_agreement(held_out["fused"]["question"], held_out["fused"]["context"],
                                    held_out["int8"]["question"], held_out["int8"]["context"])
    report = RetrievalReport(agreement=agreement, min_recall=min_recall, cpu_class=this_cpu().int8_class)
    job.log(f"  [{'✓' if report.passed else 'x'}] int8 retrieval agrees with fp32: recall@{agreement.k} "
            f"{agreement.recall_at_k:.4f} (>= {min_recall}) over {agreement.questions} "
            f"held-out questions x {agreement.passages} held-out passages, on {report.cpu_class}")
    return report
