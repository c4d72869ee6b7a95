"""PyTorch -> ONNX with the TorchScript exporter (``dynamo=False``).

torch 2.13 defaults to the dynamo exporter, whose graphs ONNX Runtime's BERT optimizer does not fuse
(no Attention / EmbedLayerNormalization, hence no QAttention after quantization): see NOTES, Traps.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from fastdpr.model.encoder import INPUT_NAMES, OUTPUT_NAME

from .first_token import FINAL_LAYER_SCOPE, final_layer_prefix
from .torch_model import PooledEncoder

DEFAULT_OPSET = 17


def export_onnx(module: PooledEncoder, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Export with dynamic batch and sequence axes; the output is the pooled embedding."""
    # A short dummy batch with real padding, so the mask path is traced with variable lengths.
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.long)
    # Ids inside any vocabulary (small test vocabularies too): BERT-base's ids for "[CLS] what is a test [SEP]".
    vocab_size = int(getattr(getattr(module.backbone, "config", None), "vocab_size", 30522))
    input_ids = torch.tensor([[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]],
                             dtype=torch.long) % vocab_size * attention_mask
    token_type_ids = torch.zeros_like(input_ids)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about python control flow
        dim = int(module(input_ids, attention_mask, token_type_ids).shape[-1])
        torch.onnx.export(
            module,
            (input_ids, attention_mask, token_type_ids),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    final_index = module.final_layer.index if module.final_layer is not None else None
    _tidy(path, dim, final_index)


def _tidy(path: Path, dim: int, final_index: int | None) -> None:
    """Declare the output as ``[batch, dim]`` (after L2 normalization the TorchScript exporter names the
    embedding axis symbolically, ``Divembedding_dim_1``, hiding the size), and give the first-token final
    layer's nodes the names the full model gives that layer (``/backbone/encoder/layer.N/...``)."""
    import onnx

    model = onnx.load(str(path))
    axis = model.graph.output[0].type.tensor_type.shape.dim[1]
    if axis.dim_value != dim:
        axis.Clear()
        axis.dim_value = dim
    if final_index is not None:
        prefix = final_layer_prefix(final_index)
        for node in model.graph.node:
            if node.name.startswith(FINAL_LAYER_SCOPE):
                node.name = prefix + node.name[len(FINAL_LAYER_SCOPE):]
    onnx.save(model, str(path))
