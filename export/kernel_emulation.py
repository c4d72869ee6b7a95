"""A numpy reference of ONNX Runtime's U8S8 int8 GEMM on CPUs without VNNI (AVX2, AVX-512BW).

Those kernels (MLAS, ``vpmaddubsw``) multiply u8 activations by s8 weights and add each pair of
neighbouring products along K, ``(k, k+1)`` for even ``k``, into a **saturating int16**; the pair sums
are then added up in int32 without loss. With VNNI or AMX the products go straight into int32.
So on AVX2 a U8S8 product is exact except where ``a[k] b[k] + a[k+1] b[k+1]`` leaves
``[-32768, 32767]``, and that can only happen when both weights have the same sign and
``|b[k]| + |b[k+1]| >= 129`` (``255 x 129 > 32767``): a property of the weights alone. ORT's
``reduce_range`` quantizes weights to ``[-64, 64]``, which rules it out (``255 x 128 = 32640``).

This lets one machine of any class predict what another class computes: :func:`u8s8_matmul`
reproduces the AVX2 kernel's integers (checked against ONNX Runtime's AVX2 code path in the tests,
run under valgrind, which presents an AVX2 CPU), :func:`weight_pair_report` tells from the weights
whether an int8 graph can saturate at all, and :func:`activation_saturation` counts the saturating
pairs on real inputs (the calibration batches) and how much they move the GEMM outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767
#: Smallest ``|b[k]| + |b[k+1]|`` (same sign) for which some u8 pair overflows int16: 255 x 129 > 32767.
SATURATING_PAIR_WEIGHT = 129
#: The int8 ops whose weights go through MLAS's U8S8 GEMM, and the input index of their weight.
QUANTIZED_GEMM_OPS = {"MatMulInteger": 1, "QAttention": 1, "DynamicQuantizeMatMul": 1}


def _pairs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Even and odd K rows of ``b`` (``[K, N]``), K padded to even with a zero row (as MLAS pads)."""
    if b.shape[0] % 2:
        b = np.concatenate([b, np.zeros((1, b.shape[1]), dtype=b.dtype)])
    return b[0::2], b[1::2]


def saturating_pair_mask(b: np.ndarray) -> np.ndarray:
    """``[K/2, N]`` boolean: which weight pairs can overflow int16 for some u8 activations."""
    even, odd = (x.astype(np.int32) for x in _pairs(b))
    same_sign = (even * odd) > 0
    return same_sign & (np.abs(even) + np.abs(odd) >= SATURATING_PAIR_WEIGHT)


def u8s8_matmul(a: np.ndarray, b: np.ndarray, a_zero_point: int = 0, saturate: bool = True) -> np.ndarray:
    """``(a - a_zero_point) @ b`` in int32 as the AVX2 U8S8 kernel computes it (``saturate=False``:
    exact, as VNNI/AMX compute it). ``a``: u8 ``[M, K]``; ``b``: s8 ``[K, N]`` (symmetric, zero point 0).

    MLAS multiplies the raw u8 values (saturation depends on them, not on ``a - zero point``) and
    subtracts ``a_zero_point x column sums of b`` afterwards, exactly.
    """
    if a.dtype != np.uint8 or b.dtype != np.int8:
        raise TypeError(f"need u8 activations and s8 weights, got {a.dtype} and {b.dtype}")
    a64 = a.astype(np.float64)  # float64 GEMM is exact here: |sums| < 255 x 128 x K << 2**53
    out = a64 @ b.astype(np.float64)
    if saturate:
        out += _saturation_correction(a, b)[0]
    out -= float(a_zero_point) * b.astype(np.float64).sum(axis=0)
    return out.astype(np.int64).astype(np.int32)


def _saturation_correction(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """``clip(pair) - pair`` summed per output over the weight pairs that can saturate, and how many
    (row, pair) products did saturate."""
    mask = saturating_pair_mask(b)
    correction = np.zeros((a.shape[0], b.shape[1]), dtype=np.float64)
    pair_rows, columns = np.nonzero(mask)
    saturated = 0
    if pair_rows.size == 0:
        return correction, saturated
    even_b, odd_b = (x.astype(np.int32) for x in _pairs(b))
    a_even, a_odd = _pairs(a.T)  # [K/2, M] each
    a_even32, a_odd32 = a_even.astype(np.int32), a_odd.astype(np.int32)
    for start in range(0, pair_rows.size, 4096):  # bounded memory: [M, 4096] int32 at a time
        rows, cols = pair_rows[start:start + 4096], columns[start:start + 4096]
        pair = (a_even32[rows].T * even_b[rows, cols] + a_odd32[rows].T * odd_b[rows, cols])
        delta = np.clip(pair, INT16_MIN, INT16_MAX) - pair
        saturated += int(np.count_nonzero(delta))
        np.add.at(correction.T, cols, delta.T.astype(np.float64))
    return correction, saturated


def quantized_weights(model_path: Path) -> dict[str, tuple[str, str, np.ndarray]]:
    """``{node name: (op type, activation input name, s8 weight [K, N])}`` for every int8 GEMM node."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {init.name: init for init in model.graph.initializer}
    out: dict[str, tuple[str, str, np.ndarray]] = {}
    for node in model.graph.node:
        index = QUANTIZED_GEMM_OPS.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[index]])
        if weight.dtype == np.int8 and weight.ndim == 2:
            out[node.name] = (node.op_type, node.input[0], weight)
    return out


def weight_pair_report(model_path: Path) -> dict[str, Any]:
    """How many weight pairs of an int8 graph can saturate on AVX2 (0: the graph computes the same
    integers on every x86 class), and the largest weight magnitude (64 with 7-bit weights)."""
    nodes = quantized_weights(model_path)
    total = can = 0
    worst: dict[str, int] = {}
    max_abs = 0
    for name, (_, _, weight) in nodes.items():
        mask = saturating_pair_mask(weight)
        total += mask.size
        count = int(mask.sum())
        can += count
        if count:
            worst[name] = count
        max_abs = max(max_abs, int(np.abs(weight.astype(np.int32)).max()))
    return {"gemm_nodes": len(nodes), "weight_pairs": total, "weight_pairs_that_can_saturate": can,
            "fraction": round(can / max(total, 1), 6), "max_abs_weight": max_abs,
            "nodes_that_can_saturate": len(worst)}


def activation_saturation(model_path: Path, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Run the int8 graph on ``batches``, capture each GEMM's u8 input, and measure what the AVX2
    kernel would do with it: pairs that saturate, outputs that change, and the largest relative change
    of an output (``|avx2 - exact| / max |exact|`` of that node)."""
    import onnx
    import onnxruntime as ort

    nodes = quantized_weights(model_path)
    model = onnx.load(str(model_path))
    zero_points = {node.name: node.input[2] if node.op_type == "MatMulInteger" else node.input[6]
                   for node in model.graph.node if node.name in nodes}
    wanted = sorted({name for _, name, _ in nodes.values()} | {z for z in zero_points.values() if z})
    existing = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors we read
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    pairs = saturated = outputs = changed = 0
    worst_relative = 0.0
    for feeds in batches:
        values = dict(zip(wanted, session.run(wanted, feeds), strict=True))
        for name, (_, activation, weight) in nodes.items():
            a = values[activation]
            a2 = a.reshape(-1, a.shape[-1])
            zp = int(np.asarray(values[zero_points[name]]).ravel()[0]) if zero_points[name] else 0
            exact = u8s8_matmul(a2, weight, zp, saturate=False).astype(np.float64)
            correction, count = _saturation_correction(a2, weight)
            saturated += count
            pairs += a2.shape[0] * ((weight.shape[0] + 1) // 2) * weight.shape[1]
            diff = np.abs(correction)
            outputs += diff.size
            changed += int((diff > 0).sum())
            worst_relative = max(worst_relative, float(diff.max() / max(np.abs(exact).max(), 1.0)))
    return {"batches": len(batches), "pairs": pairs, "saturated_pairs": saturated,
            "saturated_fraction": saturated / max(pairs, 1), "outputs": outputs, "outputs_changed": changed,
            "outputs_changed_fraction": changed / max(outputs, 1), "max_relative_output_change": worst_relative}


def avx2_report(model_path: Path, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """What the manifest records about an int8 graph on CPUs whose U8S8 kernels saturate (emulated on
    any machine): the weights' verdict, and what happened on ``batches`` (the held-out probes)."""
    report = weight_pair_report(model_path)
    held_out = activation_saturation(model_path, batches) if report["weight_pairs_that_can_saturate"] else {
        "batches": len(batches), "saturated_pairs": 0, "outputs_changed_fraction": 0.0,
        "max_relative_output_change": 0.0, "note": "no weight pair can saturate: exact on every x86 class"}
    return {**report, "held_out": {k: (round(v, 8) if isinstance(v, float) else v) for k, v in held_out.items()},
            "emulates": "ONNX Runtime MLAS U8S8 on AVX2 / AVX-512BW without VNNI (vpmaddubsw, saturating int16 pairs)"}
