"""The optional OpenVINO passage backend of an export (``fastdpr export --openvino``, issue #21).

What it adds to an artifact (by default when the ``openvino`` extra is installed): the passage encoder as
an OpenVINO IR, quantized to static int8 by NNCF (``ModelType.TRANSFORMER``, what optimum-intel runs for
sentence-transformers) from the same unfused fp32 graph the ONNX stages start from, calibrated on the
probes' calibration passages fed exactly as the runtime feeds them (bucket-padded,
:mod:`fastdpr.model.openvino_encoder`), with what the ONNX int8 graph runs in fp32 (attention's products
of activations, and the two nodes its recipe measured as most sensitive) left out of int8 here too. It is
held to the ONNX int8 graph's gates and recorded whether or not it passes:

- min cosine against PyTorch on the held-out probe passages (the int8 threshold);
- the int8 retrieval gate: questions at the artifact's question precision (ONNX Runtime) against
  OpenVINO's passages, recall@10 of fp32's top-10 (written into the manifest by :func:`openvino_manifest`);
- same input, same vector: every held-out passage bitwise the same alone, in calls of 8, in reverse
  order and at 1 and N threads;
- speed, side by side: passages/s of OpenVINO against the ONNX int8 graph on this CPU, interleaved.

The manifest's ``backends.openvino.preferred_on`` lists the CPU class where it passed every check and
was at least :data:`MIN_SPEEDUP` faster; ``fastdpr index`` uses it there (``--passage-backend auto``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ExportError
from fastdpr.common.integrity import library_versions
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE
from fastdpr.model.encoder import OnnxEncoder, PassageEncoder
from fastdpr.model.openvino_encoder import BUCKET_TOKENS, INSTALL_HINT, OpenVinoEncoder, bucketed_calls
from fastdpr.model.session import default_threads
from fastdpr.model.spec import Side
from fastdpr.model.tokenization import SpecTokenizer
from fastdpr.model.verify import Comparison, RetrievalAgreement, compare

from .job import ExportJob, ModelSource
from .validate import STAGE_THRESHOLDS

#: OpenVINO must be at least this much faster than the ONNX int8 graph to be preferred: a smaller lead is
#: within what one interleaved measurement on a shared machine can tell apart.
MIN_SPEEDUP = 1.05
#: Interleaved rounds of the speed comparison (median).
SPEED_ROUNDS = 3
MODEL_NAME = "model.int8.openvino.xml"
#: How many of the nodes the ONNX recipe's sensitivity pass kept fp32 (its most sensitive first) stay out of
#: NNCF's int8 too. Not all of them: OpenVINO quantizes differently (static per-tensor activation scales). On
#: MiniLM-as-DPR (x86-avx512-vnni) the recipe's top two, the FFN output projections of layers 3 and 0, bring
#: 85% of the probe-error reduction that keeping all four brings (each of the other two: 6%); keeping only them
#: ran 7% faster, with answer recall on all SQuAD dev as close to PyTorch at every k (docs/benchmarks.md,
#: "OpenVINO passages"; benchmarks/results/parity-openvino-x86-avx512-vnni/variants.json).
RECIPE_NODES_KEPT = 2


@dataclass(frozen=True)
class OpenVinoReport:
    """The OpenVINO passage graph of one model directory and what its checks found."""

    path: Path
    comparison: Comparison
    threshold: float
    embeddings: np.ndarray = field(repr=False)  # every probe passage (the gate picks the held-out rows)
    invariance: dict[str, Any]
    speed: dict[str, Any]
    inference_precision: str
    seconds: float
    kept_fp32: list[str]  # the raw graph's MatMuls NNCF left out of int8

    @property
    def passed_cosine(self) -> bool:
        """Whether the min cosine reached the int8 threshold."""
        return self.comparison.min_cosine >= self.threshold


def require_nncf() -> tuple[Any, Any]:
    """``(openvino, nncf)``, or an :class:`ExportError` that says what to install."""
    try:
        import nncf
        import openvino
    except ImportError as exc:
        raise ExportError(f"--openvino needs the openvino runtime and NNCF: {INSTALL_HINT}") from exc
    return openvino, nncf


def nodes_kept_fp32(raw: Path, fused: Path, kept: list[str]) -> list[str]:
    """The raw graph's MatMuls that stay out of int8: what the ONNX int8 graph runs in fp32 too.

    - Products of two activations (attention's scores and its weighted sum of values): ONNX Runtime's
      ``QAttention`` quantizes the projections and computes these in fp32.
    - ``kept``: nodes the ONNX int8 recipe kept fp32 (its sensitivity pass measured them as the ones int8
      hurts most; the caller passes its :data:`RECIPE_NODES_KEPT` most sensitive): a MatMul keeps its name
      through fusion; a fused ``Attention`` maps to every MatMul of its layer's self-attention, found by the
      prefix of its output's name.

    On MiniLM (SQuAD dev, all questions, int8 questions): of the nine variants tried, this choice kept
    OpenVINO's passages as close to PyTorch as keeping all the recipe's nodes, and faster (docs/benchmarks.md,
    "OpenVINO passages").
    """
    import onnx

    graph = onnx.load(str(raw), load_external_data=False).graph
    constants = {init.name for init in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                            for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    raw_names = [n.name for n in matmuls]
    names = [n.name for n in matmuls if not any(i in constants for i in n.input)]
    fused_nodes = {n.name: n for n in onnx.load(str(fused), load_external_data=False).graph.node}
    for name in kept:
        if name in raw_names:
            names.append(name)
        elif name in fused_nodes and fused_nodes[name].op_type == "Attention":
            prefix = fused_nodes[name].output[0].rsplit("/", 1)[0] + "/"
            names.extend(m for m in raw_names if m.startswith(prefix))
    return sorted(set(names))


def openvino_export_available() -> bool:
    """True when the openvino runtime and NNCF import (what ``--openvino`` needs)."""
    try:
        require_nncf()
    except ExportError:
        return False
    return True


def openvino_stage(job: ExportJob, model: ModelSource, raw: Path, fused: Path, onnx_int8: Path, kept_fp32: list[str],
                   row_products: list[str], tokenizers: dict[Side, SpecTokenizer],
                   reference: np.ndarray) -> OpenVinoReport:
    """Quantize ``raw`` (the unfused fp32 graph) with NNCF into ``model.int8.openvino.xml``, keeping
    attention's activation products, the :data:`RECIPE_NODES_KEPT` most sensitive of the nodes the ONNX
    int8 recipe kept fp32 (``kept_fp32``, most sensitive first) and the one-row products of a first-token
    final layer (``row_products``) out of int8 (:func:`nodes_kept_fp32`), then validate, check invariance and
    time it against ``onnx_int8`` (see the module docstring)."""
    ov, nncf = require_nncf()
    started = time.perf_counter()
    ignored = nodes_kept_fp32(raw, fused, [*kept_fp32[:RECIPE_NODES_KEPT], *row_products])
    tokenizer = tokenizers["context"]
    passages = job.inputs["context"]
    calibration_rows = job.probes.calibration_rows("context")
    calibration = [feeds for _, feeds in bucketed_calls(tokenizer, tokenizer.encode(passages[calibration_rows]), 1)]
    # NNCF logs every ignored node and draws progress bars on stdout, where `fastdpr export` prints the
    # artifact's path: our own log line says what happened.
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(ov.Core().read_model(str(raw)), nncf.Dataset(calibration),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
                                  ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    target = job.model_dir(model) / MODEL_NAME
    # Weights as quantized (save_model would store the fp32 ones that remain as fp16 by default).
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    seconds = round(time.perf_counter() - started, 2)
    threads = default_threads()
    encoder = OpenVinoEncoder(target, tokenizer, threads=threads)
    embeddings = encoder.encode_passages(passages, DEFAULT_PASSAGE_BATCH_SIZE)
    held_out = job.probes.held_out_rows("context")
    comparison = compare(embeddings[held_out], reference[held_out])
    threshold = STAGE_THRESHOLDS["int8"]["min_cosine"]
    invariance = _invariance(target, tokenizer, passages[held_out], embeddings[held_out], threads)
    speed = _speed(encoder, OnnxEncoder(onnx_int8, tokenizer, threads=threads), passages[held_out], threads)
    report = OpenVinoReport(path=target, comparison=comparison, threshold=threshold, embeddings=embeddings,
                            invariance=invariance, speed=speed, inference_precision=encoder.inference_precision(),
                            seconds=seconds, kept_fp32=ignored)
    job.log(f"  [{'✓' if report.passed_cosine else 'x'}] openvino context min cosine {comparison.min_cosine:.6f} "
            f"(>= {threshold}), mean {comparison.mean_cosine:.6f} (held-out probes; NNCF int8 in {seconds} s, "
            f"rest in {report.inference_precision})")
    job.log(f"  [{'✓' if invariance['passed'] else 'x'}] openvino context: {invariance['identical']} of "
            f"{invariance['passages']} passages bitwise the same alone, in calls of {DEFAULT_PASSAGE_BATCH_SIZE}, "
            f"reversed and at 1/{threads} threads")
    job.log(f"  openvino context: {speed['openvino_passages_per_s']} passages/s vs ONNX int8 "
            f"{speed['onnx_int8_passages_per_s']} ({speed['speedup']}x, {threads} threads, interleaved)")
    return report


def _invariance(path: Path, tokenizer: SpecTokenizer, passages: Any, batched: np.ndarray,
                threads: int) -> dict[str, Any]:
    """How many passages get bitwise the same vector whatever they are encoded with."""
    single = OpenVinoEncoder(path, tokenizer, threads=1)
    alone = single.encode_passages(passages, 1)
    reversed_order = single.encode_passages(list(passages)[::-1], DEFAULT_PASSAGE_BATCH_SIZE)[::-1]
    same = (alone == batched).all(axis=1) & (alone == reversed_order).all(axis=1)
    return {"passages": len(passages), "identical": int(same.sum()), "passed": bool(same.all()),
            "compared": f"alone at 1 thread; calls of {DEFAULT_PASSAGE_BATCH_SIZE} at {threads} threads; "
                        f"reverse order at 1 thread"}


def _speed(openvino: OpenVinoEncoder, onnx: OnnxEncoder, passages: Any, threads: int) -> dict[str, Any]:
    """Passages/s of both encoders on the same passages, :data:`SPEED_ROUNDS` interleaved rounds (median),
    each warmed up first (OpenVINO compiles per input shape)."""
    pairs = list(passages)
    encoders: dict[str, PassageEncoder] = {"openvino": openvino, "onnx_int8": onnx}
    for encoder in encoders.values():
        encoder.encode_passages(pairs, DEFAULT_PASSAGE_BATCH_SIZE)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    load_before = os.getloadavg()[0]
    for _ in range(SPEED_ROUNDS):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode_passages(pairs, DEFAULT_PASSAGE_BATCH_SIZE)
            times[name].append(time.perf_counter() - start)
    rates = {name: len(pairs) / float(np.median(seconds)) for name, seconds in times.items()}
    return {"openvino_passages_per_s": round(rates["openvino"], 1),
            "onnx_int8_passages_per_s": round(rates["onnx_int8"], 1),
            "speedup": round(rates["openvino"] / rates["onnx_int8"], 3),
            "threads": threads, "passages": len(pairs), "rounds": SPEED_ROUNDS,
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpu_class": this_cpu().int8_class}


def openvino_manifest(report: OpenVinoReport, model_name: str, agreement: RetrievalAgreement,
                      min_recall: float) -> dict[str, Any]:
    """The manifest's ``backends.openvino`` entry."""
    retrieval_passed = agreement.recall_at_k >= min_recall
    passed = report.passed_cosine and retrieval_passed and bool(report.invariance["passed"])
    preferred = passed and report.speed["speedup"] >= MIN_SPEEDUP
    return {
        "passages": {"model": f"{model_name}/{MODEL_NAME}", "weights": f"{model_name}/{Path(MODEL_NAME).stem}.bin"},
        "bucket_tokens": BUCKET_TOKENS,
        "quantization": "nncf.quantize, ModelType.TRANSFORMER (static int8), calibrated on the probes' "
                        "calibration passages, bucket-padded as the runtime feeds them; attention's activation "
                        f"products and the recipe's {RECIPE_NODES_KEPT} most sensitive kept nodes ignored",
        "inference_precision": report.inference_precision,
        # The raw graph's MatMuls left out of int8 (bf16/fp32 per OpenVINO): attention's activation products
        # and the recipe's most sensitive kept nodes.
        "kept_fp32": report.kept_fp32,
        "recipe_nodes_kept": RECIPE_NODES_KEPT,
        "seconds": report.seconds,
        "validation": {
            "cpu_class": this_cpu().int8_class,
            "min_cosine": {**report.comparison.to_dict(), "min_cosine_threshold": report.threshold,
                           "passed": report.passed_cosine},
            "retrieval": {**agreement.__dict__, "min_recall": min_recall, "passed": retrieval_passed},
            "invariance": report.invariance,
            "passed": passed,
        },
        "speed": report.speed,
        "min_speedup": MIN_SPEEDUP,
        # Where `fastdpr index --passage-backend auto` uses it: the classes it passed and was faster on.
        "preferred_on": [this_cpu().int8_class] if preferred else [],
        "versions": library_versions(("openvino", "nncf")),
    }
