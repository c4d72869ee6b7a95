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
from typing import Any

import numpy as np


def shared_initializers() -> list[Any]:
    """The constants :func:`row_quantization_nodes` reads (once per graph)."""
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.array(128, dtype=np.uint8), "row_scales_zero_point"),
            numpy_helper.from_array(np.array(1.0 / 127.0, dtype=np.float32), "row_scales_inv_127"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "row_scales_floor"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "row_scales_flat")]


def row_quantization_nodes(x: str, quantized: str, scale: str, prefix: str) -> list[Any]:
    """The ops that quantize ``x`` (``[..., rows, K]``) per row into ``quantized`` (uint8, zero point 128)
    and ``scale`` (``[..., rows, 1]``), reading :func:`shared_initializers`."""
    from onnx import helper

    p = prefix
    return [
        helper.make_node("ReduceMax", [x], [f"{p}_hi"], name=f"{p}_hi", axes=[-1], keepdims=1),
        helper.make_node("ReduceMin", [x], [f"{p}_lo"], name=f"{p}_lo", axes=[-1], keepdims=1),
        helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neg_lo"], name=f"{p}_neg_lo"),
        helper.make_node("Max", [f"{p}_hi", f"{p}_neg_lo", "row_scales_floor"], [f"{p}_safe"], name=f"{p}_safe"),
        helper.make_node("Mul", [f"{p}_safe", "row_scales_inv_127"], [scale], name=f"{p}_scale"),
        # QuantizeLinear's per-axis scale and zero point are 1-D: one per row of the 2-D view [rows, K].
        helper.make_node("Flatten", [x], [f"{p}_x2d"], name=f"{p}_x2d", axis=-1),
        helper.make_node("Reshape", [scale, "row_scales_flat"], [f"{p}_scale1d"], name=f"{p}_scale1d"),
        helper.make_node("Shape", [f"{p}_scale1d"], [f"{p}_rows"], name=f"{p}_rows"),
        helper.make_node("Expand", ["row_scales_zero_point", f"{p}_rows"], [f"{p}_zp1d"], name=f"{p}_zp1d"),
        helper.make_node("QuantizeLinear", [f"{p}_x2d", f"{p}_scale1d", f"{p}_zp1d"], [f"{p}_q2d"],
                         name=f"{p}_quantize", axis=0),
        helper.make_node("Shape", [x], [f"{p}_shape"], name=f"{p}_shape"),
        helper.make_node("Reshape", [f"{p}_q2d", f"{p}_shape"], [quantized], name=f"{p}_q"),
    ]


def per_row_activation_scales(source: Path, target: Path) -> int:
    """Rewrite ``source`` (an ORT dynamic-int8 graph) into ``target``; return how many quantized
    activations now take per-row scales."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    graph = model.graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or not all(
                op == "MatMulInteger" for op in consumers.get(node.output[0], [None])):
            nodes.append(node)
            continue
        x, (quantized, scale, zero_point) = node.input[0], node.output
        nodes += row_quantization_nodes(x, quantized, scale, f"{node.name}_rows")
        nodes.append(helper.make_node("Identity", ["row_scales_zero_point"], [zero_point],
                                      name=f"{node.name}_rows_zero_point"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(shared_initializers())
    onnx.save(model, str(target))
    return rewritten
