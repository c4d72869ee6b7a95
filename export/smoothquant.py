"""SmoothQuant-style activation smoothing for dynamic int8 (Xiao et al., 2023), on a fused ORT graph.

Dynamic int8 gives each activation tensor one scale; transformer activations have a few channels
with outliers far larger than the rest, so that one scale is coarse for every other channel. For each
quantized MatMul / Attention input ``X`` with weight ``W``, a per-channel factor
``s_j = max|X_j|^alpha / max|W_j,:|^(1-alpha)`` moves the range from activations into weights:
``X W = (X / s)(diag(s) W)``. ``W`` absorbs ``s`` offline; ``X / s`` is an explicit Mul node (the
residual stream that also reads ``X`` keeps the unscaled tensor). Activation maxima come from
calibration inputs run through the fp32 graph.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.errors import ExportError

TARGET_OPS = ("MatMul", "Attention")


def _initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def smooth_model(fused: Path, target: Path, calibration: Iterable[dict[str, np.ndarray]],
                 alpha: float = 0.5) -> dict[str, Any]:
    """Write a smoothed copy of ``fused`` to ``target``; return what was smoothed."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(fused))
    inits = _initializers(model)
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type in TARGET_OPS and len(node.input) > 1 and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]])
            if weight.ndim == 2:
                consumers[node.input[0]].append(node)
    if not consumers:
        raise ExportError(f"{fused}: no MatMul/Attention with constant weights to smooth")

    # Activation maxima per channel, over the calibration batches (padding included: dynamic
    # quantization sees padded rows too).
    probe = onnx.load(str(fused))
    existing = {out.name for out in probe.graph.output}
    for name in consumers:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(consumers)
    act_max: dict[str, np.ndarray] = {}
    batches = 0
    for feeds in calibration:
        batches += 1
        for name, value in zip(names, session.run(names, feeds), strict=True):
            channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            act_max[name] = channel_max if name not in act_max else np.maximum(act_max[name], channel_max)
    if not batches:
        raise ExportError("smoothing needs calibration inputs; none were given")

    nodes = list(model.graph.node)
    new_nodes: list[Any] = []
    smoothed: dict[str, dict[str, float]] = {}
    for node in nodes:
        x = node.input[0] if node.input else ""
        if node in consumers.get(x, []) and x not in smoothed:
            weights = [numpy_helper.to_array(inits[c.input[1]]) for c in consumers[x]]
            w_max = np.max(np.stack([np.abs(w).max(axis=1) for w in weights]), axis=0)
            a = np.maximum(act_max[x], 1e-5)
            s = (a ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha)).astype(np.float32)
            s = np.clip(s, 1e-2, 1e2)
            scale_name, scaled_name = f"{x}_smooth_inv_scale", f"{x}_smoothed"
            model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), scale_name))
            new_nodes.append(onnx.helper.make_node("Mul", [x, scale_name], [scaled_name], name=f"{x}_smooth"))
            for consumer in consumers[x]:
                consumer.input[0] = scaled_name
                init = inits[consumer.input[1]]
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * s[:, None], init.name))
            smoothed[x] = {"activation_max_before": float(a.max()), "activation_max_after": float((a / s).max()),
                           "outlier_ratio_before": float(a.max() / np.median(a)),
                           "outlier_ratio_after": float((a / s).max() / np.median(a / s))}
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    onnx.save(model, str(target))
    return {"alpha": alpha, "tensors": len(smoothed), "calibration_batches": batches,
            "median_outlier_ratio_before": float(np.median([v["outlier_ratio_before"] for v in smoothed.values()])),
            "median_outlier_ratio_after": float(np.median([v["outlier_ratio_after"] for v in smoothed.values()]))}
