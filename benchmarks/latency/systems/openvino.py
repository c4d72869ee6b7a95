"""OpenVINO int8: the CPU backend sentence-transformers documents as its fastest (``OpenVINO-qint8``).

What its user gets: the ``openvino`` runtime reading an ONNX export of the encoder (here fastdpr's own
pooled TorchScript export of the full model, so pooling and DPR's projection are inside the graph as in
fastdpr, but every layer runs over every token, as in the export its users make), quantized
to int8 by NNCF's post-training quantization (``nncf.quantize``, ``ModelType.TRANSFORMER``: static
int8 activations and weights, what optimum-intel's ``OVQuantizer`` runs for sentence-transformers'
``export_static_quantized_openvino_model``), calibrated on the same calibration batches fastdpr's int8
recipe used. Compiled for CPU with the latency hint, one stream, the benchmark's thread count and
OpenVINO's default inference precision (bf16 on CPUs with AMX / AVX-512 BF16: reported per run).
Tokenization is Hugging Face's fast tokenizer; passage batches are length-sorted as
sentence-transformers' ``encode`` sorts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.latency.systems.base import (
    ListSearch,
    SetupContext,
    SystemSpec,
    encode_length_sorted,
    hf_feeds,
    served_sides,
)
from fastdpr.model.spec import SIDES, EncoderSpec, Side


def quantized_openvino_model(context: SetupContext, side: Side) -> Any:
    """Export ``side``'s source to ONNX (pooled, fp32), read it with OpenVINO and quantize it with NNCF."""
    import nncf
    import openvino as ov

    from fastdpr_export.calibration import artifact_calibration_batches
    from fastdpr_export.onnx_export import export_onnx
    from fastdpr_export.torch_model import build_pooled_encoder

    directory = context.workdir / f"openvino-{side}"
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / "model.onnx"
    # The full model (every token through every layer), as its users export it with optimum-intel or
    # sentence-transformers: running the last layer for CLS only is fastdpr's own export.
    export_onnx(build_pooled_encoder(context.resolved[side], context.spec, first_token=False), onnx_path)
    calibration = artifact_calibration_batches(context.artifact, served_sides(context.artifact, side))
    start = time.perf_counter()
    quantized = nncf.quantize(ov.Core().read_model(str(onnx_path)), nncf.Dataset(calibration),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    context.log(f"    openvino peer {side}: NNCF int8 on {len(calibration)} calibration batches in "
                f"{time.perf_counter() - start:.1f} s")
    return quantized


class OpenVinoEncoder:
    """One side: HF tokenizer + a compiled OpenVINO model whose output is the embedding."""

    def __init__(self, model: Any, tokenizer: Any, spec: EncoderSpec, side: Side, threads: int) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        self.request = self.compiled.create_infer_request()
        self.tokenizer = tokenizer
        self.spec = spec
        self.side = side

    def feeds(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        """Tokenize a batch (padded to its longest)."""
        return hf_feeds(self.tokenizer, self.spec, self.side, inputs)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model on a tokenized batch -> embeddings ``[batch, dim]``."""
        result = self.request.infer(feeds)
        return np.array(result[self.compiled.output(0)], dtype=np.float32)

    def encode(self, inputs: Sequence[Any], batch_size: int) -> np.ndarray:
        """Embed all inputs in length-sorted batches, results in input order."""
        return encode_length_sorted(self.tokenizer, self.spec, self.side, inputs, batch_size, self.run)

    def inference_precision(self) -> str:
        """The precision OpenVINO chose for the parts of the graph that are not int8."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))


def openvino_encoders(context: SetupContext) -> dict[Side, OpenVinoEncoder]:
    """Both sides, quantized and compiled (also used by the parity benchmark for its recall)."""
    from transformers import AutoTokenizer

    return {side: OpenVinoEncoder(quantized_openvino_model(context, side),
                                  AutoTokenizer.from_pretrained(str(context.resolved[side].directory), use_fast=True),
                                  context.spec, side, context.threads)
            for side in SIDES}


class OpenVinoSystem(ListSearch):
    """OpenVINO int8 encoders, exact numpy search, list lookup."""

    def __init__(self, context: SetupContext) -> None:
        super().__init__()
        self.name = "openvino-int8"
        self.batch_size = context.batch_size
        self.encoders = openvino_encoders(context)
        context.log(f"    openvino peer: inference precision {self.encoders['question'].inference_precision()}")

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.encoders["context"].encode(passages, self.batch_size)

    def embed_question(self, question: str) -> tuple[Any, Callable[[Any], np.ndarray]]:
        encoder = self.encoders["question"]
        return encoder.feeds([question]), encoder.run

    def settings(self) -> dict[str, Any]:
        """What the report records about how OpenVINO ran."""
        return {"inference_precision": self.encoders["question"].inference_precision(),
                "quantization": "nncf.quantize, ModelType.TRANSFORMER, fastdpr's calibration batches"}


class OpenVinoBucketedSystem(OpenVinoSystem):
    """The OpenVINO peer fed as fastdpr's OpenVINO backend feeds passages: fastdpr's tokenizer, each passage
    padded to its 16-token bucket, calls of one width (``bucketed_calls``). Not how the peer's users run it:
    it measures how much of fastdpr's OpenVINO lead is that batching rather than the graph or the glue."""

    def __init__(self, context: SetupContext) -> None:
        super().__init__(context)
        self.name = "openvino-int8-bucketed"
        self.tokenizer = context.artifact.tokenizer("context")

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        from fastdpr.model.openvino_encoder import bucketed_calls

        out = np.zeros((len(passages), self.tokenizer.spec.dim), dtype=np.float32)
        for rows, feeds in bucketed_calls(self.tokenizer, self.tokenizer.encode(passages), self.batch_size):
            out[rows] = self.encoders["context"].run(feeds)
        return out

    def settings(self) -> dict[str, Any]:
        """As the peer's, plus the batching."""
        return {**super().settings(), "batching": "fastdpr's 16-token buckets (bucketed_calls)"}


ADAPTERS = (
    SystemSpec("openvino-int8-bucketed", "peer",
               "the OpenVINO peer's graph fed with fastdpr's 16-token bucketed batches (what fastdpr's OpenVINO "
               "backend does): how much of a lead is batching", OpenVinoBucketedSystem, order=12, default=False),
    SystemSpec("openvino-int8", "peer",
               "OpenVINO runtime on fastdpr's pooled ONNX export, NNCF int8 (static, transformer preset), HF "
               "tokenizer, length-sorted batches; exact numpy top-100, list lookup", OpenVinoSystem, order=11),
)
