"""optimum's ``ORTModelForFeatureExtraction`` (int8), the ONNX Runtime peer a user of Hugging Face tries first.

Its graph is an unpooled export (``last_hidden_state``, what the class reads) fused and quantized with
fastdpr's own export code, recipe and calibration decisions, so the two differ in how they run the
model, not in the model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
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
from fastdpr.model.artifact import Artifact
from fastdpr.model.spec import SIDES, Side


class UnpooledBackbone:
    """Builds the ``last_hidden_state`` graph optimum's feature-extraction class expects."""

    @staticmethod
    def export(resolved: Any, out_dir: Path, artifact: Artifact, side: Side,
               log_line: Callable[[str], None]) -> dict[str, Any]:
        """Export, fuse and quantize the source's backbone into ``out_dir`` (with config and tokenizer files),
        quantized exactly as ``artifact``'s model for ``side``: same recipe, same calibration inputs, and
        the same data-driven decisions (smoothing alpha, nodes kept fp32) replayed.

        Returns what the numpy pooling needs beyond the spec: DPR's projection weights, if any.
        """
        import torch

        from fastdpr_export.calibration import artifact_calibration_batches
        from fastdpr_export.fusion import fuse
        from fastdpr_export.onnx_export import DEFAULT_OPSET
        from fastdpr_export.quantize import get_recipe, quantize
        from fastdpr_export.torch_model import load_hf_model

        model: Any = load_hf_model(resolved, eager_attention=True)  # eager: the pattern ORT's optimizer fuses
        projection = None
        if resolved.kind == "dpr":
            inner = model.question_encoder if resolved.architecture == "DPRQuestionEncoder" else model.ctx_encoder
            backbone = inner.bert_model
            if getattr(inner, "projection_dim", 0) > 0:
                projection = {"weight": inner.encode_proj.weight.detach().numpy().T.copy(),
                              "bias": inner.encode_proj.bias.detach().numpy().copy()}
        else:
            backbone = model

        class Unpooled(torch.nn.Module):
            def __init__(self, backbone: Any) -> None:
                super().__init__()
                # Named as in fastdpr's pooled export, so ONNX node names (e.g. nodes kept fp32) match.
                self.backbone = backbone

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids, return_dict=True).last_hidden_state

        out_dir.mkdir(parents=True, exist_ok=True)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
        input_ids = torch.tensor([[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.long)
        raw = out_dir / "raw.onnx"
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Unpooled(backbone).eval(), (input_ids, (input_ids != 0).long(),
                                                          torch.zeros_like(input_ids)),
                              str(raw), input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False)
        config = resolved.config
        fused = fuse(raw, out_dir / "model.onnx", int(config["num_attention_heads"]), int(config["hidden_size"]),
                     int(config["num_hidden_layers"]))
        quantization = artifact.manifest["quantization"]
        model_dir = artifact.manifest["sides"][side]["dir"]
        sides = served_sides(artifact, side)
        calibration = artifact_calibration_batches(artifact, sides)
        # The recipe as the export applied it to this model (a question-only model has its own settings).
        recipe = get_recipe(quantization["recipe"]).for_model(encodes_passages="context" in sides)
        quantized = quantize(out_dir / "model.onnx", out_dir / "model_quantized.onnx", recipe, calibration,
                             decisions=quantization["per_model"][model_dir])
        raw.unlink()
        (out_dir / "model.onnx").unlink()  # only the int8 graph is benchmarked
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (resolved.directory / name).is_file():
                shutil.copy2(resolved.directory / name, out_dir / name)
        log_line(f"    optimum peer {out_dir.name}: fused {fused}, quantized {quantized}")
        return {"projection": projection}


#: Exports made in this process, by (directory, side): what :meth:`UnpooledBackbone.export` returned.
_EXPORTED: dict[tuple[Path, Side], dict[str, Any]] = {}


def _export(context: SetupContext, directory: Path, side: Side) -> dict[str, Any]:
    """Export the peer's graph for ``side`` and record what it was made from, for :func:`_exported_before`."""
    extra = UnpooledBackbone.export(context.resolved[side], directory, context.artifact, side, context.log)
    projection = extra["projection"]
    if projection is not None:
        np.savez(directory / "projection.npz", **projection)
    (directory / "peer.json").write_text(json.dumps({"artifact": context.artifact.identity,
                                                     "projection": projection is not None}), encoding="utf-8")
    return extra


def _exported_before(directory: Path, artifact: Artifact) -> dict[str, Any] | None:
    """What :func:`_export` returned, when an earlier run in the same ``--work`` directory exported the peer's
    graph from this artifact (a BERT-base export takes minutes); None otherwise."""
    try:
        record = json.loads((directory / "peer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("artifact") != artifact.identity or not (directory / "model_quantized.onnx").is_file():
        return None
    if not record.get("projection"):
        return {"projection": None}
    with np.load(directory / "projection.npz") as saved:
        return {"projection": {"weight": saved["weight"], "bias": saved["bias"]}}


class OptimumSystem(ListSearch):
    """optimum's ``ORTModelForFeatureExtraction``: HF tokenizer, length-sorted batches padded to their
    longest (the batching every system gets), pooling (and DPR's projection, if any) in numpy."""

    def __init__(self, context: SetupContext, ann: bool = False) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        super().__init__(ann=ann, threads=context.threads, graph_cache=context.workdir / "optimum-hnsw.bin")
        self.name = "optimum-ort-int8-hnsw" if ann else "optimum-ort-int8"
        self.spec = context.spec
        self.batch_size = context.batch_size
        self.models: dict[Side, Any] = {}
        self.tokenizers: dict[Side, Any] = {}
        self.projections: dict[Side, Any] = {}
        for side in SIDES:
            directory = context.workdir / f"optimum-{side}"
            key = (directory, side)
            if key not in _EXPORTED:  # both optimum systems of a run load the same export
                _EXPORTED[key] = _exported_before(directory, context.artifact) or _export(context, directory, side)
            extra = _EXPORTED[key]
            options = ort.SessionOptions()
            options.intra_op_num_threads = context.threads
            options.inter_op_num_threads = 1
            self.models[side] = ORTModelForFeatureExtraction.from_pretrained(
                directory, file_name="model_quantized.onnx", session_options=options,
                provider="CPUExecutionProvider")
            self.tokenizers[side] = AutoTokenizer.from_pretrained(directory, use_fast=True)
            self.projections[side] = extra["projection"]

    def _run(self, side: Side, feeds: dict[str, np.ndarray]) -> np.ndarray:
        hidden = np.asarray(self.models[side](**feeds).last_hidden_state, dtype=np.float32)
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        projection = self.projections[side]
        if projection is not None:
            pooled = pooled @ projection["weight"] + projection["bias"]
        if self.spec.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled, dtype=np.float32)

    def encode_passages(self, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        return encode_length_sorted(self.tokenizers["context"], self.spec, "context", passages, self.batch_size,
                                    lambda feeds: self._run("context", feeds))

    def embed_question(self, question: str) -> tuple[Any, Callable[[Any], np.ndarray]]:
        feeds = hf_feeds(self.tokenizers["question"], self.spec, "question", [question])
        return feeds, lambda f: self._run("question", f)


ADAPTERS = (
    SystemSpec("optimum-ort-int8", "peer",
               "optimum ORTModelForFeatureExtraction, unpooled graph fused + int8 (same recipe), length-sorted "
               "batches padded to their longest, numpy pooling; exact numpy top-100, list lookup", OptimumSystem,
               order=10),
    SystemSpec("optimum-ort-int8-hnsw", "peer",
               "optimum-ort-int8 with its own hnswlib graph (fastdpr's default M, ef_construction, ef) instead of "
               "exact search; list lookup", lambda context: OptimumSystem(context, ann=True), order=10,
               default=False),
)
