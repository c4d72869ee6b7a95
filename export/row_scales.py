"""Per-row activation scales for dynamic int8: each token row of a MatMul's input gets its own scale.

ONNX Runtime's dynamic quantization (``DynamicQuantizeLinear``) takes ONE scale per tensor: over a whole
call's ``[batch, tokens, hidden]`` activations. One input per call (issue #19) already makes that scale a
function of the input alone; per-row scales go further, each token row quantized against its own
largest value, so a row of small activations keeps its resolution next to an outlier token (the
quantization error that cost passages ~0.25 points of answer recall, README "Same input, same vector").

The rewrite replaces each ``DynamicQuantizeLinear`` that feeds only ``MatMulInteger`` nodes with
standard ops computing, per row ``r`` of ``x``: ``scale_r = max|x_r| / 127`` and ``q = round(x / scale_r)
+ 128`` as uint8 with a fixed zero point 128 (ORT's CPU ``MatMulInteger`` takes a scalar zero point
only: symmetric rows keep it scalar). The graph's existing dequantization, ``Cast(int32) * (x_scale *
w_scale)``, broadcasts the ``[..., rows, 1]`` scale unchanged. ``QAttention`` takes a scalar input scale
by its definition, so attention inputs keep one scale per call. Activations stay within [1, 255] and
the recipes' 7-bit weights within [-64, 63], so AVX2's pairwise int16 sums cannot saturate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def per_row_activation_scales(source: Path, target: Path) -> int:
    """Rewrite ``source`` (an ORT dynamic-int8 graph) into ``target``; return how many quantized
    activations now take per-row scales."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    shared = [numpy_helper.from_array(np.array(128, dtype=np.uint8), "row_scales_zero_point"),
              numpy_helper.from_array(np.array(128.0, dtype=np.float32), "row_scales_offset"),
              numpy_helper.from_array(np.array(1.0 / 127.0, dtype=np.float32), "row_scales_inv_127"),
              numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "row_scales_floor")]
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or not all(
                op == "MatMulInteger" for op in consumers.get(node.output[0], [None])):
            nodes.append(node)
            continue
        x, (quantized, scale, zero_point) = node.input[0], node.output
        p = f"{node.name}_rows"
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], name=f"{p}_max", axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}_max", "row_scales_floor"], [f"{p}_safe"], name=f"{p}_safe"),
            helper.make_node("Mul", [f"{p}_safe", "row_scales_inv_127"], [scale], name=f"{p}_scale"),
            helper.make_node("Div", [x, scale], [f"{p}_div"], name=f"{p}_div"),
            helper.make_node("Round", [f"{p}_div"], [f"{p}_round"], name=f"{p}_round"),
            helper.make_node("Add", [f"{p}_round", "row_scales_offset"], [f"{p}_shift"], name=f"{p}_shift"),
            helper.make_node("Cast", [f"{p}_shift"], [quantized], name=f"{p}_cast", to=TensorProto.UINT8),
            helper.make_node("Identity", ["row_scales_zero_point"], [zero_point], name=f"{p}_zero_point"),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(shared)
    onnx.save(model, str(target))
    return rewritten
