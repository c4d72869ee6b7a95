"""Split ORT's fused ``SkipLayerNormalization`` back into ``Add`` + ``Add`` + ``LayerNormalization``.

Why: on ONNX Runtime 1.32's CPU kernels a [1, 161, 384] ``SkipLayerNormalization`` (with or without its
bias input) takes ~0.26 ms against ~0.04 ms for the two ``Add`` + the standard ``LayerNormalization``
(same output within 2e-6): it was 20% of MiniLM's int8 passage time (docs/benchmarks.md, "Where the time
goes"). ORT does not re-fuse the three when it loads the model.

The order matters for int8: the residual is added first and the bias second. With the bias ``Add``
directly after a quantized MatMul, ORT's load-time ``MatMulIntegerToFloat`` fusion takes the bias in, and
that fused kernel gets per-row activation scales (:mod:`.row_scales`) wrong (MiniLM's passage embeddings
fell to cosine 0.96 of fp32; 0.996 in this order, measured). ORT's own optimizer's "no SkipLayerNorm"
option leaves exactly that bias-first order, so it is not used.
"""

from __future__ import annotations

from typing import Any


def unfuse_skip_layer_norm(model: Any) -> int:
    """Rewrite every ``SkipLayerNormalization`` of ``model`` (an ``onnx.ModelProto``, changed in place)
    whose only used output is the normalized sum; return how many were rewritten."""
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:  # LayerNormalization is a standard op from opset 17 on: keep the fused node
        return 0
    nodes = []
    rewritten = 0
    for node in model.graph.node:
        extra_outputs = [name for name in node.output[1:] if name]
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or extra_outputs:
            nodes.append(node)
            continue
        x, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        p = f"{node.name}_unfused"
        total = f"{p}_sum"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{p}_residual"))
        if bias:
            nodes.append(helper.make_node("Add", [total, bias], [f"{p}_biased"], name=f"{p}_bias"))
            total = f"{p}_biased"
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []),
                                      [node.output[0]], name=f"{p}_norm", axis=-1, epsilon=epsilon))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten
