"""Names of the first-token final layer's nodes (torch-free: the quantization and OpenVINO stages read them).

With CLS or pooler pooling the export runs the last layer for the first token only
(:class:`~.torch_model.FirstTokenLayer`) and renames its nodes to the names a full export gives that layer.
Four of its products then multiply one row per input: they are kept fp32, where they cost nothing
measurable and int8 would only add error (the sensitivity pass ranked the query product of MiniLM's last
layer first among every node, 5x the next one, once it ran on one row).
"""

from __future__ import annotations

from typing import Literal

#: What the manifest's ``graph.<model>.final_layer`` says: the last layer for the first token only, or in full.
FinalLayer = Literal["first-token", "every-token"]
FIRST_TOKEN: FinalLayer = "first-token"
EVERY_TOKEN: FinalLayer = "every-token"

#: The ONNX node-name prefix of :class:`~.torch_model.PooledEncoder`'s ``final_layer`` as the TorchScript
#: exporter names it (before :func:`final_layer_prefix` renames it).
FINAL_LAYER_SCOPE = "/final_layer/"

#: The final layer's products of one row per input (the first token): query, attention output, FFN in/out.
#: Its key and value products still read every token.
ROW_PRODUCTS = ("attention/self/query/MatMul", "attention/output/dense/MatMul", "intermediate/dense/MatMul",
                "output/dense/MatMul")


def final_layer_prefix(index: int) -> str:
    """The node-name prefix a full export gives layer ``index`` (``/backbone/encoder/layer.{index}/``): the
    export renames the first-token layer's nodes to it, so node names (the int8 recipe's nodes kept fp32)
    mean the same layer in the artifact and in a full export of the same model."""
    return f"/backbone/encoder/layer.{index}/"


def row_product_nodes(layers: int) -> list[str]:
    """The names of the first-token final layer's one-row products in a model of ``layers`` layers."""
    return [final_layer_prefix(layers - 1) + suffix for suffix in ROW_PRODUCTS]
