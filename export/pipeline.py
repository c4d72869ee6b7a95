"""The export pipeline: sources -> ONNX -> fused -> int8, validated at each stage, written atomically.

:func:`export_artifact` is the sequence: resolve the request into an :class:`~.job.ExportJob`, run the
stages of :mod:`.stages` for each model directory (each returns a report), judge every check, and
write the manifest from the reports. The artifact is built in a staging directory next to ``--out``
and moved into place only when every stage passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ExportError, ValidationError
from fastdpr.common.integrity import MANIFEST_NAME, file_table, library_versions, write_json
from fastdpr.common.publish import atomic_directory
from fastdpr.model.artifact import ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION
from fastdpr.model.batching import INPUTS_PER_CALL
from fastdpr.model.probes import Probes, builtin_probes
from fastdpr.model.spec import SIDES, EncoderSpec, Side

from .job import PROBE_BATCH_SIZE, ExportJob, Log, ModelSource
from .lazy import require_export_extra
from .onnx_export import DEFAULT_OPSET
from .quantize import DEFAULT_QUESTION_PRECISION, DEFAULT_RECIPE, QuantRecipe, get_recipe
from .sources import ResolvedSource, resolve_source, spec_defaults
from .stages import (
    ModelReport,
    Verdict,
    avx2_stage,
    fusion_stage,
    onnx_export_stage,
    quantization_stage,
    reference_stage,
    retrieval_gate,
    tokenizer_stage,
    validate_stage,
)
from .validate import RETRIEVAL_AGREEMENT_THRESHOLD, STAGE_THRESHOLDS


@dataclass(frozen=True)
class ExportOptions:
    """What ``fastdpr export`` was asked. ``None`` means "the source kind's default"."""

    out: Path
    question_encoder: str | None = None
    context_encoder: str | None = None
    encoder: str | None = None
    force: bool = False
    pooling: str | None = None
    normalize: bool | None = None
    token_types: str | None = None
    question_max_length: int | None = None
    passage_max_length: int | None = None
    quantize: str = DEFAULT_RECIPE
    opset: int = DEFAULT_OPSET
    probes: Probes | None = field(default=None, repr=False)
    # The int8 gate (min cosine and retrieval agreement with fp32). Benchmarks measuring a recipe
    # frontier turn it off to measure recipes the gate would refuse; the manifest then records the
    # gate as failed, not passed.
    enforce_int8_gate: bool = True
    # The gate's threshold (recall@10 of int8 retrieval against fp32 on held-out probes). Tests of tiny
    # random models set their own: their neighbour sets are noise-like, so the default means little there.
    int8_min_recall: float = RETRIEVAL_AGREEMENT_THRESHOLD
    # The precision questions run at by default in indexes built from the artifact (None: the measured
    # default, :data:`~fastdpr_export.quantize.DEFAULT_QUESTION_PRECISION`; fp32 without int8 models).
    question_precision: str | None = None
    # Also build, validate and time the OpenVINO passage graph (export/openvino_backend.py). None: when the
    # openvino extra (openvino + NNCF) is installed and the export quantizes.
    openvino: bool | None = None

    def encoding_plan(self) -> dict[str, Any]:
        """The manifest's ``encoding`` entry: one input per ONNX Runtime call, and each side's default
        precision (passages: int8 when quantized; questions: ``question_precision``)."""
        if self.quantize == "none":
            if self.question_precision == "int8":
                raise ExportError("--question-precision int8 needs an int8 recipe (not --quantize none)")
            return {"inputs_per_call": INPUTS_PER_CALL, "precision": {"question": "fp32", "context": "fp32"}}
        question = self.question_precision or DEFAULT_QUESTION_PRECISION
        return {"inputs_per_call": INPUTS_PER_CALL, "precision": {"question": question, "context": "int8"}}

    def model_sources(self) -> dict[str, tuple[str, tuple[Side, ...]]]:
        """``{model dir: (source, sides it serves)}``; a clear error for an incomplete request."""
        if self.encoder and (self.question_encoder or self.context_encoder):
            raise ExportError("pass either --encoder, or --question-encoder and --context-encoder, not both")
        if self.encoder:
            return {"encoder": (self.encoder, SIDES)}
        if not (self.question_encoder and self.context_encoder):
            raise ExportError("pass --question-encoder and --context-encoder (or --encoder for one shared model)")
        return {"question": (self.question_encoder, ("question",)), "context": (self.context_encoder, ("context",))}


def export_artifact(options: ExportOptions, log: Log = print) -> Path:
    """Export, validate and write an artifact to ``options.out``; return its path.

    The stages, for each model directory: runtime tokenizer, PyTorch reference, ONNX export, fusion,
    quantization, each graph validated against PyTorch (:mod:`.stages`); then the int8 retrieval gate
    over both sides, the verdict, and the manifest written from the stages' reports.

    Raises :class:`ExportError` (or its subclass :class:`ValidationError`) with a readable message;
    nothing is left at ``options.out`` on failure.
    """
    require_export_extra()
    _quiet_libraries()
    started = time.perf_counter()
    model_sources = options.model_sources()
    recipe = None if options.quantize == "none" else get_recipe(options.quantize)
    if options.openvino and recipe is None:
        raise ExportError("--openvino builds an int8 passage backend: it needs an int8 recipe, not --quantize none")
    with_openvino = _with_openvino(options, recipe, log)
    encoding = options.encoding_plan()
    with atomic_directory(Path(options.out), options.force, ExportError) as staging, \
            tempfile.TemporaryDirectory(prefix="fastdpr-export-") as tmp:
        job = _open_job(options, model_sources, recipe, staging, Path(tmp), log, with_openvino)
        reports = [_export_model(job, model) for model in job.models]
        retrieval = None if recipe is None else retrieval_gate(job, reports, options.int8_min_recall)
        verdict = Verdict(checks=tuple(check for report in reports for check in report.checks),
                          retrieval=retrieval, enforce_int8_gate=options.enforce_int8_gate)
        _refuse_failed(verdict, recipe)
        _save_references(staging, reports)
        manifest = _manifest(options, job, encoding, reports, verdict)
        if with_openvino:
            manifest["backends"] = {"openvino": _openvino_entry(job, encoding, reports, options.int8_min_recall)}
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        manifest["files"] = file_table(staging)
        write_json(staging / MANIFEST_NAME, manifest)
        log(f"wrote {options.out} in {manifest['export_seconds']} s")
    return Path(options.out)


def _export_model(job: ExportJob, model: ModelSource) -> ModelReport:
    """Every stage of one model directory (serving ``model.sides``), each graph validated as it is written."""
    tokenizers = tokenizer_stage(job, model)
    reference = reference_stage(job, model, tokenizers)
    onnx = onnx_export_stage(job, model)
    checks = validate_stage(job, model, "fp32", onnx.path, tokenizers, reference)
    fusion = fusion_stage(job, model, onnx)
    checks += validate_stage(job, model, "fused", fusion.path, tokenizers, reference)
    if job.recipe is None:
        # The raw graph is as large as the model and nothing reads it after fusion (but the OpenVINO
        # stage): free the disk before the next model directory is exported.
        onnx.path.unlink()
        return ModelReport(model=model, reference=reference, onnx=onnx, fusion=fusion, checks=checks)
    quantization = quantization_stage(job, model, job.recipe, fusion.path, tokenizers, onnx.row_products)
    checks += validate_stage(job, model, "int8", quantization.path, tokenizers, reference)
    avx2 = avx2_stage(job, model, quantization.path, tokenizers)
    openvino = None
    if job.openvino and "context" in model.sides:
        from .openvino_backend import openvino_stage

        openvino = openvino_stage(job, model, onnx.path, fusion.path, quantization.path,
                                  list(quantization.details.get("kept_fp32", {})), onnx.row_products, tokenizers,
                                  reference.embeddings["context"])
    onnx.path.unlink()
    return ModelReport(model=model, reference=reference, onnx=onnx, fusion=fusion, checks=checks,
                       quantization=quantization, avx2_u8s8=avx2, openvino=openvino)


def _openvino_entry(job: ExportJob, encoding: dict[str, Any], reports: list[ModelReport],
                    min_recall: float) -> dict[str, Any]:
    """The manifest's ``backends.openvino``: the OpenVINO passage graph's checks, the retrieval gate run with
    questions as indexes will encode them (the encoding plan's precision, ONNX Runtime)."""
    from fastdpr.model.verify import retrieval_agreement

    from .openvino_backend import openvino_manifest

    question_stage = "int8" if encoding["precision"]["question"] == "int8" else "fused"
    embeddings = {(check.stage, check.side): check.embeddings for report in reports for check in report.checks}
    name, openvino = next((r.model.name, r.openvino) for r in reports if r.openvino is not None)
    held_q, held_p = job.probes.held_out_rows("question"), job.probes.held_out_rows("context")
    agreement = retrieval_agreement(embeddings[("fused", "question")][held_q],
                                    embeddings[("fused", "context")][held_p],
                                    embeddings[(question_stage, "question")][held_q],
                                    openvino.embeddings[held_p])
    entry = openvino_manifest(openvino, name, agreement, min_recall)
    job.log(f"  [{'✓' if entry['validation']['retrieval']['passed'] else 'x'}] openvino retrieval agrees with fp32: "
            f"recall@{agreement.k} {agreement.recall_at_k:.4f} (>= {min_recall}); preferred on: "
            f"{', '.join(entry['preferred_on']) or 'no CPU class (kept for --passage-backend openvino)'}")
    return entry


def _with_openvino(options: ExportOptions, recipe: QuantRecipe | None, log: Log) -> bool:
    """Whether this export builds the OpenVINO passage graph (``options.openvino``; None: when it can)."""
    if options.openvino is not None:
        return options.openvino
    if recipe is None:
        return False
    from .openvino_backend import openvino_export_available

    if not openvino_export_available():
        log("openvino: not installed, no OpenVINO passage graph (pip install 'fastdpr[openvino]' to add one)")
        return False
    log("openvino: building the OpenVINO passage graph too (the openvino extra is installed; --no-openvino skips it)")
    return True


def _open_job(options: ExportOptions, model_sources: dict[str, tuple[str, tuple[Side, ...]]],
              recipe: QuantRecipe | None, staging: Path, workdir: Path, log: Log, openvino: bool) -> ExportJob:
    """Resolve the sources, load their tokenizers, decide the spec and stage the probes: the job the
    stages share."""
    models = []
    for name, (source, sides) in model_sources.items():
        resolved = resolve_source(source, sides[0] if len(sides) == 1 else None, workdir)
        log(f"source {name}: {source} ({_describe_source(resolved)})")
        models.append(ModelSource(name=name, sides=sides, resolved=resolved, hf_tokenizer=_load_tokenizer(resolved)))
    spec, decisions = _build_spec(options, {model.name: model.resolved for model in models}, models[0].hf_tokenizer)
    log(f"spec: {spec.to_dict()}")
    for key, why in decisions.items():
        log(f"  {key}: {why}")
    probes = options.probes or builtin_probes()
    probes.save(staging / "probes")
    return ExportJob(models=tuple(models), spec=spec, spec_decisions=decisions, recipe=recipe, opset=options.opset,
                     probes=probes, staging=staging, workdir=workdir, log=log, openvino=openvino)


def _describe_source(resolved: ResolvedSource) -> str:
    """What the log says a source turned out to be: kind, class and why, weights file, pooler weights."""
    described = resolved.describe()
    also = described["weights"]["also_present"]
    return (f"{described['kind']}, {described['class']} from {described['class_from']}; "
            f"weights {described['weights']['file']}" + (f", not {', '.join(also)}" if also else "")
            + f"; pooler weights: {'yes' if described['pooler_weights'] else 'no'}")


def _refuse_failed(verdict: Verdict, recipe: QuantRecipe | None) -> None:
    """Raise :class:`ValidationError` naming the first failed check (the details list all of them)."""
    refused = verdict.refused
    if not refused:
        return
    hint = "" if recipe is None else (
        f" Try another recipe (--quantize {', '.join(sorted(_other_recipes(recipe.name)))}) "
        "or --quantize none to keep fp32 only.")
    more = f" (and {len(refused) - 1} more failed checks)" if len(refused) > 1 else ""
    raise ValidationError(f"export failed validation against PyTorch: {refused[0]}{more}.{hint}",
                          details="failed checks:\n  " + "\n  ".join(refused))


def _save_references(staging: Path, reports: list[ModelReport]) -> None:
    """Keep PyTorch's probe embeddings in the artifact: ``fastdpr verify`` and the int8 check of the machine
    that indexes re-check the graphs against them, without PyTorch."""
    for report in reports:
        for side, reference in report.reference.embeddings.items():
            np.save(staging / "probes" / f"{side}.npy", reference, allow_pickle=False)


def _manifest(options: ExportOptions, job: ExportJob, encoding: dict[str, Any], reports: list[ModelReport],
              verdict: Verdict) -> dict[str, Any]:
    """The artifact's manifest, written from the job and the stages' reports (``export_seconds`` and
    ``files`` are added last: they measure the finished export)."""
    probes, recipe, retrieval = job.probes, job.recipe, verdict.retrieval
    sides: dict[str, dict[str, Any]] = {}
    for report in reports:
        name = report.model.name
        models = {"fp32": f"{name}/model.onnx"}
        if report.quantization is not None:
            models["int8"] = f"{name}/model.int8.onnx"
        seconds = report.seconds()
        for side in report.model.sides:
            sides[side] = {"dir": name, "tokenizer": f"{name}/tokenizer.json", "models": models,
                           "source": report.model.resolved.describe(), "seconds": seconds}
    int8_failures = verdict.int8_failures
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": job.spec.to_dict(),
        "spec_decisions": job.spec_decisions,
        "sides": sides,
        "quantization": None if recipe is None else {
            "recipe": recipe.name, "settings": recipe.settings(),
            "per_model": {report.model.name: report.quantization_dict() for report in reports}},
        "encoding": encoding,
        "graph": {report.model.name: report.onnx.to_dict() for report in reports},
        "fusion": {report.model.name: report.fusion.operators for report in reports},
        "opset": job.opset,
        "probes": {"dir": "probes", "source": probes.source,
                   "questions": len(probes.questions), "passages": len(probes.passages),
                   "batch_size": PROBE_BATCH_SIZE,
                   # int8 calibration reads the first rows; the int8 checks and the gate the rest.
                   "calibration": probes.split_counts(),
                   "reference": {side: f"probes/{side}.npy" for side in SIDES}},
        "validation": {
            "reference": "Hugging Face model in PyTorch fp32, fresh copy, same token ids",
            "thresholds": {**STAGE_THRESHOLDS, "int8_retrieval_recall_at_10": options.int8_min_recall},
            # int8 numbers depend on the CPU's int8 kernels (fastdpr/common/cpu.py): say which ran them.
            "cpu": this_cpu().to_dict(),
            "stages": verdict.stages_dict(),
            "tokenizer_parity": {side: parity for report in reports
                                 for side, parity in report.reference.tokenizer_parity.items()},
            "int8_retrieval_agreement": None if retrieval is None else retrieval.agreement.__dict__,
            "int8_gate": {"passed": not int8_failures, "enforced": verdict.enforce_int8_gate,
                          "failures": int8_failures},
            "passed": not int8_failures,
        },
        "versions": library_versions(("fastdpr", "torch", "transformers", "onnx", "onnxruntime", "tokenizers",
                                      "numpy")),
    }


def _build_spec(options: ExportOptions, resolved: dict[str, ResolvedSource],
                hf_tokenizer: Any) -> tuple[EncoderSpec, dict[str, str]]:
    """The spec, and for each field a source default decided, why (the manifest's ``spec_decisions``)."""
    from .torch_model import check_pooling, embedding_dim

    first = next(iter(resolved.values()))
    dims = {name: embedding_dim(r) for name, r in resolved.items()}
    if len(set(dims.values())) != 1:
        raise ExportError(f"the two encoders embed into different sizes {dims}; dot products are undefined")
    defaults = spec_defaults(first)
    spec = EncoderSpec(
        dim=next(iter(dims.values())),
        pooling=options.pooling or defaults.pooling,  # type: ignore[arg-type]
        normalize=defaults.normalize if options.normalize is None else options.normalize,
        token_types=options.token_types or defaults.token_types,  # type: ignore[arg-type]
        question_max_length=options.question_max_length or defaults.question_max_length,
        passage_max_length=options.passage_max_length or defaults.passage_max_length,
        lowercase=bool(getattr(hf_tokenizer, "do_lower_case", False) or _normalizer_lowercases(hf_tokenizer)),
        pad_token_id=int(hf_tokenizer.pad_token_id or 0),
    )
    for source in resolved.values():
        check_pooling(source, spec.pooling)
    given = {"pooling": options.pooling, "normalize": options.normalize, "token_types": options.token_types,
             "max_lengths": options.question_max_length or options.passage_max_length}
    decisions = {key: "given on the command line" if given.get(key) is not None else why
                 for key, why in defaults.reasons.items()}
    return spec, decisions


def _normalizer_lowercases(hf_tokenizer: Any) -> bool:
    import json

    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    return bool(normalizer.get("lowercase", False))


def _load_tokenizer(resolved: ResolvedSource) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.directory, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load the tokenizer of {resolved.source}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{resolved.source} has no fast tokenizer; fastdpr needs a tokenizer.json")
    return tokenizer


def _quiet_libraries() -> None:
    """Silence library chatter that is noise for our users (our own log says what happened)."""
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    # ORT's quantizer logs "consider pre-processing" on the root logger for every model.
    logging.getLogger().setLevel(logging.ERROR)


def _other_recipes(current: str) -> list[str]:
    from .quantize import RECIPES

    return [name for name in RECIPES if name != current]
