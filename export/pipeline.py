"""The export pipeline: sources -> ONNX -> fused -> int8, validated at each stage, written atomically.

``ARTIFACT_DIR`` is built in a staging directory next to it and moved into place only when every
stage passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ExportError, ValidationError
from fastdpr.common.integrity import MANIFEST_NAME, file_table, library_versions, write_json
from fastdpr.common.publish import atomic_directory
from fastdpr.model.artifact import ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, Artifact
from fastdpr.model.batching import INPUTS_PER_CALL
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.model.probes import Probes, builtin_probes
from fastdpr.model.spec import SIDES, EncoderSpec, Side
from fastdpr.model.tokenization import SpecTokenizer
from fastdpr.model.verify import compare, retrieval_agreement

from .kernel_emulation import avx2_report
from .lazy import require_export_extra
from .onnx_export import DEFAULT_OPSET
from .quantize import DEFAULT_QUESTION_PRECISION, DEFAULT_RECIPE, get_recipe
from .sources import ResolvedSource, resolve_source, spec_defaults
from .validate import RETRIEVAL_AGREEMENT_THRESHOLD, STAGE_THRESHOLDS

Log = Callable[[str], None]
PROBE_BATCH_SIZE = 16


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


def _save_tokenizer(hf_tokenizer: Any, path: Path) -> None:
    backend = hf_tokenizer.backend_tokenizer
    # The runtime applies truncation and padding from the spec; the file must not impose its own.
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


class _Stages:
    """Collects per-stage comparisons and prints an optimum-style [✓]/[x] log."""

    def __init__(self, log: Log, probes: Probes) -> None:
        self.log = log
        self.probes = probes
        self.report: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []
        self.int8_failures: list[str] = []

    def check(self, stage: str, side: Side, embeddings: np.ndarray, reference: np.ndarray) -> None:
        # int8 is judged on the probes its calibration never read; fp32 stages on every probe.
        rows = self.probes.held_out_rows(side) if stage == "int8" else slice(None)
        comparison = compare(embeddings[rows], reference[rows])
        threshold = STAGE_THRESHOLDS[stage]["min_cosine"]
        passed = comparison.min_cosine >= threshold
        self.report.setdefault(stage, {})[side] = {**comparison.to_dict(), "min_cosine_threshold": threshold,
                                                   "passed": passed}
        mark = "✓" if passed else "x"
        held_out = " (held-out probes)" if stage == "int8" else ""
        self.log(f"  [{mark}] {stage:5s} {side:8s} min cosine {comparison.min_cosine:.6f} "
                 f"(>= {threshold}), mean {comparison.mean_cosine:.6f}, max |diff| {comparison.max_abs:.2e}{held_out}")
        if not passed:
            failures = self.int8_failures if stage == "int8" else self.failures
            failures.append(f"{stage} {side}: min cosine {comparison.min_cosine:.6f} < {threshold}")


def export_artifact(options: ExportOptions, log: Log = print) -> Path:
    """Export, validate and write an artifact to ``options.out``; return its path.

    Raises :class:`ExportError` (or its subclass :class:`ValidationError`) with a readable message;
    nothing is left at ``options.out`` on failure.
    """
    require_export_extra()
    _quiet_libraries()
    started = time.perf_counter()
    model_sources = options.model_sources()
    recipe = None if options.quantize == "none" else get_recipe(options.quantize)
    encoding = options.encoding_plan()
    probes = options.probes or builtin_probes()
    with atomic_directory(Path(options.out), options.force, ExportError) as staging, \
            tempfile.TemporaryDirectory(prefix="fastdpr-export-") as tmp:
        workdir = Path(tmp)
        resolved = {}
        for name, (source, sides) in model_sources.items():
            resolved[name] = resolve_source(source, sides[0] if len(sides) == 1 else None, workdir)
            described = resolved[name].describe()
            log(f"source {name}: {source} ({described['kind']}, {described['class']} from {described['class_from']}; "
                f"weights {described['weights']['file']}"
                + (f", not {', '.join(described['weights']['also_present'])}"
                   if described["weights"]["also_present"] else "")
                + f"; pooler weights: {'yes' if described['pooler_weights'] else 'no'})")
        hf_tokenizers = {name: _load_tokenizer(r) for name, r in resolved.items()}
        spec, decisions = _build_spec(options, resolved, next(iter(hf_tokenizers.values())))
        log(f"spec: {spec.to_dict()}")
        for key, why in decisions.items():
            log(f"  {key}: {why}")
        probes.save(staging / "probes")
        inputs: dict[Side, Any] = {"question": list(probes.questions), "context": probes.passage_pairs()}

        stages = _Stages(log, probes)
        references: dict[Side, np.ndarray] = {}
        embeddings: dict[str, dict[Side, np.ndarray]] = {"fused": {}, "int8": {}}
        sides_manifest: dict[str, dict[str, Any]] = {}
        fusion_counts: dict[str, dict[str, int]] = {}
        quant_counts: dict[str, dict[str, Any]] = {}
        tokenizer_report: dict[str, dict[str, int]] = {}
        for name, (_, sides) in model_sources.items():
            stage_times = _export_one(name, sides, resolved[name], hf_tokenizers[name], spec, options, recipe,
                                      staging, workdir, inputs, stages, references, embeddings,
                                      fusion_counts, quant_counts, tokenizer_report, log)
            for side in sides:
                models = {"fp32": f"{name}/model.onnx"}
                if recipe is not None:
                    models["int8"] = f"{name}/model.int8.onnx"
                sides_manifest[side] = {"dir": name, "tokenizer": f"{name}/tokenizer.json", "models": models,
                                        "source": resolved[name].describe(), "seconds": stage_times}

        agreement = None
        if recipe is not None:
            held_out = {stage: {side: vectors[probes.held_out_rows(side)] for side, vectors in by_side.items()}
                        for stage, by_side in embeddings.items()}
            agreement = retrieval_agreement(held_out["fused"]["question"], held_out["fused"]["context"],
                                            held_out["int8"]["question"], held_out["int8"]["context"])
            ok = agreement.recall_at_k >= options.int8_min_recall
            log(f"  [{'✓' if ok else 'x'}] int8 retrieval agrees with fp32: recall@{agreement.k} "
                f"{agreement.recall_at_k:.4f} (>= {options.int8_min_recall}) over {agreement.questions} "
                f"held-out questions x {agreement.passages} held-out passages, on {this_cpu().int8_class}")
            if not ok:
                stages.int8_failures.append(
                    f"int8 retrieval recall@{agreement.k} against fp32 is {agreement.recall_at_k:.4f} < "
                    f"{options.int8_min_recall} (on {this_cpu().int8_class})")
        refused = stages.failures + (stages.int8_failures if options.enforce_int8_gate else [])
        if refused:
            hint = "" if recipe is None else (
                f" Try another recipe (--quantize {', '.join(sorted(_other_recipes(recipe.name)))}) "
                "or --quantize none to keep fp32 only.")
            more = f" (and {len(refused) - 1} more failed checks)" if len(refused) > 1 else ""
            raise ValidationError(f"export failed validation against PyTorch: {refused[0]}{more}.{hint}",
                                  details="failed checks:\n  " + "\n  ".join(refused))

        for side in SIDES:
            np.save(staging / "probes" / f"{side}.npy", references[side], allow_pickle=False)
        manifest = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.to_dict(),
            "spec_decisions": decisions,
            "sides": sides_manifest,
            "quantization": None if recipe is None else {"recipe": recipe.name, "settings": recipe.settings(),
                                                          "per_model": quant_counts},
            "encoding": encoding,
            "fusion": fusion_counts,
            "opset": options.opset,
            "probes": {"dir": "probes", "source": probes.source,
                       "questions": len(probes.questions), "passages": len(probes.passages),
                       "batch_size": PROBE_BATCH_SIZE,
                       # int8 calibration reads the first rows; the int8 checks and the gate the rest.
                       "calibration": probes.split_counts(),
                       "reference": {side: f"probes/{side}.npy" for side in SIDES}},
            "validation": {
                "reference": "Hugging Face model in PyTorch fp32, fresh copy, same token ids",
                "thresholds": {**STAGE_THRESHOLDS,
                               "int8_retrieval_recall_at_10": options.int8_min_recall},
                # int8 numbers depend on the CPU's int8 kernels (fastdpr/common/cpu.py): say which ran them.
                "cpu": this_cpu().to_dict(),
                "stages": stages.report,
                "tokenizer_parity": tokenizer_report,
                "int8_retrieval_agreement": None if agreement is None else agreement.__dict__,
                "int8_gate": {"passed": not stages.int8_failures, "enforced": options.enforce_int8_gate,
                              "failures": stages.int8_failures},
                "passed": not stages.int8_failures,
            },
            "versions": library_versions(("fastdpr", "torch", "transformers", "onnx", "onnxruntime", "tokenizers",
                                          "numpy")),
            "export_seconds": round(time.perf_counter() - started, 1),
        }
        manifest["files"] = file_table(staging)
        write_json(staging / MANIFEST_NAME, manifest)
        log(f"wrote {options.out} in {manifest['export_seconds']} s")
    return Path(options.out)


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


def calibration_batches(tokenizers: dict[Side, SpecTokenizer], inputs: dict[Side, Any]) -> list[dict[str, np.ndarray]]:
    """The model feeds a data-driven INT8 recipe calibrates on: every probe (or ``--calibration``
    sample) of each side the model serves, fed as the runtime feeds them: one input per ONNX Runtime
    call (:data:`~fastdpr.model.batching.INPUTS_PER_CALL`), so dynamic int8 takes each activation scale from
    one input's own tokens, never from padding or batch companions. Calibrating on padded batches would
    tune the recipe for inputs the runtime never runs."""
    return [feeds for side, tokenizer in tokenizers.items()
            for _, feeds in tokenizer.sorted_batches(inputs[side], INPUTS_PER_CALL)]


def artifact_calibration_batches(artifact: Artifact, sides: Sequence[Side]) -> list[dict[str, np.ndarray]]:
    """The calibration batches ``artifact``'s export quantized ``sides`` with (its probes' calibration
    rows, batched as at export): replaying its int8 decisions needs exactly these."""
    probes = artifact.probes()
    inputs: dict[Side, Any] = {"question": list(probes.questions)[probes.calibration_rows("question")],
                               "context": probes.passage_pairs()[probes.calibration_rows("context")]}
    return calibration_batches({side: artifact.tokenizer(side) for side in sides}, inputs)


def _export_one(name: str, sides: tuple[Side, ...], resolved: ResolvedSource, hf_tokenizer: Any,
                spec: EncoderSpec, options: ExportOptions, recipe: Any, staging: Path, workdir: Path,
                inputs: dict[Side, Any], stages: _Stages, references: dict[Side, np.ndarray],
                embeddings: dict[str, dict[Side, np.ndarray]], fusion_counts: dict[str, dict[str, int]],
                quant_counts: dict[str, dict[str, Any]], tokenizer_report: dict[str, dict[str, int]],
                log: Log) -> dict[str, float]:
    """Export one model directory (serving ``sides``) through every stage, validating each."""
    from .fusion import fuse
    from .onnx_export import export_onnx
    from .quantize import quantize
    from .torch_model import build_pooled_encoder
    from .validate import pytorch_reference, tokenizer_parity

    seconds: dict[str, float] = {}
    out_dir = staging / name
    out_dir.mkdir()
    _save_tokenizer(hf_tokenizer, out_dir / "tokenizer.json")
    tokenizers = {side: SpecTokenizer(out_dir / "tokenizer.json", spec, side) for side in sides}
    log(f"{name}: PyTorch reference on the probes (fresh model copy)")
    for side in sides:
        parity = tokenizer_parity(hf_tokenizer, tokenizers[side], inputs[side])
        tokenizer_report[side] = parity
        if parity["equal"] != parity["total"]:
            raise ValidationError(f"the runtime tokenizer differs from {resolved.source}'s Hugging Face tokenizer "
                                  f"on {parity['total'] - parity['equal']} of {parity['total']} {side} probes")
        references[side] = pytorch_reference(resolved, spec, tokenizers[side], inputs[side], PROBE_BATCH_SIZE)

    def run_stage(stage: str, path: Path) -> None:
        for side in sides:
            encoder = OnnxEncoder(path, tokenizers[side])
            result = encoder.encode(inputs[side], batch_size=PROBE_BATCH_SIZE)
            if stage in embeddings:
                embeddings[stage][side] = result
            stages.check(stage, side, result, references[side])

    t0 = time.perf_counter()
    raw = workdir / f"{name}.raw.onnx"
    export_onnx(build_pooled_encoder(resolved, spec), raw, options.opset)
    seconds["onnx_export"] = round(time.perf_counter() - t0, 2)
    log(f"{name}: exported to ONNX (opset {options.opset}) in {seconds['onnx_export']} s")
    run_stage("fp32", raw)

    t0 = time.perf_counter()
    config = resolved.config
    fusion_counts[name] = fuse(raw, out_dir / "model.onnx", int(config["num_attention_heads"]),
                               int(config["hidden_size"]), int(config["num_hidden_layers"]))
    seconds["fusion"] = round(time.perf_counter() - t0, 2)
    log(f"{name}: fused {fusion_counts[name]} in {seconds['fusion']} s")
    run_stage("fused", out_dir / "model.onnx")

    if recipe is not None:
        t0 = time.perf_counter()
        calibration_inputs = {side: inputs[side][stages.probes.calibration_rows(side)] for side in sides}
        calibration = calibration_batches(tokenizers, calibration_inputs) if recipe.needs_calibration else None
        # Per-row scales serve passages; a question-only model keeps per-call scales (see QuantRecipe).
        model_recipe = recipe if "context" in sides else replace(recipe, row_scales=False)
        quant_counts[name] = quantize(out_dir / "model.onnx", out_dir / "model.int8.onnx", model_recipe, calibration)
        quant_counts[name]["row_scales"] = model_recipe.row_scales
        seconds["quantize"] = round(time.perf_counter() - t0, 2)
        log(f"{name}: quantized with {recipe.name} {quant_counts[name]} in {seconds['quantize']} s")
        run_stage("int8", out_dir / "model.int8.onnx")
        t0 = time.perf_counter()
        held_out_inputs = {side: inputs[side][stages.probes.held_out_rows(side)] for side in sides}
        quant_counts[name]["avx2_u8s8"] = avx2_report(out_dir / "model.int8.onnx",
                                                      calibration_batches(tokenizers, held_out_inputs))
        report = quant_counts[name]["avx2_u8s8"]
        log(f"{name}: on AVX2/AVX-512 without VNNI (emulated): {report['weight_pairs_that_can_saturate']} weight "
            f"pairs can saturate int16; {report['held_out']['saturated_pairs']} pairs did on the held-out probes "
            f"({time.perf_counter() - t0:.1f} s)")
    shutil.rmtree(workdir / name, ignore_errors=True)
    return seconds
