"""ONNX Runtime's transformer fusions (Attention, EmbedLayerNormalization, BiasGelu), with the residual
LayerNorms left as the standard ``LayerNormalization`` (:mod:`.layer_norm` says why)."""

from __future__ import annotations

from pathlib import Path

from fastdpr.common.errors import ExportError

from .layer_norm import unfuse_skip_layer_norm

# What a fully fused L-layer BERT encoder has; a partial fusion quietly costs most of the speed.
REQUIRED_FUSIONS = ("Attention", "EmbedLayerNormalization")


def fuse(source: Path, target: Path, num_heads: int, hidden_size: int, num_layers: int) -> dict[str, int]:
    """Fuse ``source`` into ``target`` and return the fused-operator counts.

    ``num_layers``: the layers whose self-attention runs over every token (a first-token final layer,
    :class:`~.torch_model.FirstTokenLayer`, has none to fuse). Raises :class:`ExportError` unless each of
    them got an Attention node and the embeddings one EmbedLayerNormalization.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the Python fusions, so the saved graph stays portable across CPUs (ORT applies
    # its own hardware-specific optimizations when it loads the model).
    model = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           opt_level=0, use_gpu=False)
    counts = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    expected = {"Attention": num_layers, "EmbedLayerNormalization": 1}
    wrong = {k: counts.get(k, 0) for k, v in expected.items() if counts.get(k, 0) != v}
    if wrong:
        raise ExportError(
            f"ONNX Runtime's BERT optimizer fused {wrong} (expected {expected}); the graph would run "
            "unfused and int8 would get no QAttention. Is this a BERT-family encoder?"
        )
    unfused = unfuse_skip_layer_norm(model.model)
    if unfused:
        counts["LayerNormalization"] = counts.get("LayerNormalization", 0) + unfused
        counts.pop("SkipLayerNormalization", None)
    model.save_model_to_file(str(target))
    return counts
