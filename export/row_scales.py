"""Per-row activation scales for dynamic int8: each token row of a MatMul's input gets its own scale.

ONNX Runtime's dynamic quantization (``DynamicQuantizeLinear``) takes ONE scale per tensor: over a whole
call's ``[batch, tokens, hidden]`` activations. One input per call (issue #19) already makes that scale a
function of the input alone; per-row scales go further, each token row quantized against its own
largest value, so a row of small activations keeps its resolution next to an outlier token (the
quantization error that cost passages ~0.25 points of answer recall, README "Same input, same vector").

The rewrite replaces each ``DynamicQuantizeLinear`` that feeds only ``MatMulInteger`` nodes with
standard ops computing, per row ``r`` of ``x``: ``scale_r = max|x_r| / 127`` and ``q = round(x / scale_r)
+ 128`` as uint8 with a fixed zero point 128 (ORT's CPU ``MatMulInteger`` takes a scalar zero point
only: symmetric rows keep it scalar). ``max|x_r|`` is ``max(ReduceMax(x_r), -ReduceMin(x_r))`` (two
reads, no ``Abs`` copy), and the quantization is one ``QuantizeLinear`` per-axis over the 2-D
``[rows, K]`` view (MLAS divides by the row's scale and rounds half to even, so ``q`` is bitwise what
``Cast(Round(x / scale) + 128)`` gives, in one pass instead of four: 11% of MiniLM's int8 passage
time). The graph's existing dequantization, ``Cast(int32) * (x_scale * w_scale)``, broadcasts the
``[..., rows, 1]`` scale unchanged (but see :mod:`.layer_norm` for the one graph shape in which ORT's
load-time fusion of it does not). ``QAttention`` takes a scalar input scale
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
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {init.name: init for init in graph.initializer}
    shared = [numpy_helper.from_array(np.array(128, dtype=np.uint8), "row_scales_zero_point"),
              numpy_helper.from_array(np.array(1.0 / 127.0, dtype=np.float32), "row_scales_inv_127"),
              numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "row_scales_floor"),
              numpy_helper.from_array(np.array([-1], dtype=np.int64), "row_scales_flat")]
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        users = consumers.get(node.output[0], [])
        if node.op_type != "DynamicQuantizeLinear" or not users or not all(
                user.op_type == "MatMulInteger" for user in users):
            nodes.append(node)
            continue
        x, (quantized, scale, zero_point) = node.input[0], node.output
        p = f"{node.name}_rows"
        # K, the MatMul's inner dimension, from the (initializer) weight: a constant 2-D view [-1, K].
        width = {int(inits[user.input[1]].dims[0]) for user in users if user.input[1] in inits}
        if len(width) != 1:
            nodes.append(node)
            continue
        shared.append(numpy_helper.from_array(np.array([-1, width.pop()], dtype=np.int64), f"{p}_view"))
        nodes += [
            helper.make_node("ReduceMax", [x], [f"{p}_hi"], name=f"{p}_hi", axes=[-1], keepdims=1),
            helper.make_node("ReduceMin", [x], [f"{p}_lo"], name=f"{p}_lo", axes=[-1], keepdims=1),
            helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neg_lo"], name=f"{p}_neg_lo"),
            helper.make_node("Max", [f"{p}_hi", f"{p}_neg_lo", "row_scales_floor"], [f"{p}_safe"],
                             name=f"{p}_safe"),
            helper.make_node("Mul", [f"{p}_safe", "row_scales_inv_127"], [scale], name=f"{p}_scale"),
            # QuantizeLinear's per-axis scale and zero point are 1-D: one per row of the 2-D view.
            helper.make_node("Reshape", [x, f"{p}_view"], [f"{p}_x2d"], name=f"{p}_x2d"),
            helper.make_node("Reshape", [scale, "row_scales_flat"], [f"{p}_scale1d"], name=f"{p}_scale1d"),
            helper.make_node("Shape", [f"{p}_scale1d"], [f"{p}_rows"], name=f"{p}_rows"),
            helper.make_node("Expand", ["row_scales_zero_point", f"{p}_rows"], [f"{p}_zp1d"], name=f"{p}_zp1d"),
            helper.make_node("QuantizeLinear", [f"{p}_x2d", f"{p}_scale1d", f"{p}_zp1d"], [f"{p}_q2d"],
                             name=f"{p}_quantize", axis=0),
            helper.make_node("Shape", [x], [f"{p}_shape"], name=f"{p}_shape"),
            helper.make_node("Reshape", [f"{p}_q2d", f"{p}_shape"], [quantized], name=f"{p}_q"),
            helper.make_node("Identity", ["row_scales_zero_point"], [zero_point], name=f"{p}_zero_point"),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(shared)
    onnx.save(model, str(target))
    return rewritten
