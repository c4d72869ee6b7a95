"""SmoothQuant-style activation smoothing for dynamic int8 (Xiao et al., 2023), on a fused ORT graph.

Dynamic int8 gives each activation tensor one scale; transformer activations have a few channels
with outliers far larger than the rest, so that one scale is coarse for every other channel. For each
quantized MatMul / Attention input ``X`` with weight ``W``, a per-channel factor
``s_j = max|X_j|^alpha / max|W_j,:|^(1-alpha)`` moves the range from activations into weights:
``X W = (X / s)(diag(s) W)``. ``W`` absorbs ``s`` offline; ``X / s`` is an explicit Mul node (the
residual stream that also reads ``X`` keeps the unscaled tensor). Activation maxima come from
calibration inputs run through the fp32 graph, once: :func:`activation_maxima` measures them and
:func:`smooth_model` applies one ``alpha``, so searching several alphas costs one calibration pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fastdpr.common.errors import ExportError

TARGET_OPS = ("MatMul", "Attention")


def _consumers(model: Any) -> dict[str, list[Any]]:
    """Quantizable nodes (constant 2-D weight) grouped by the activation tensor they read."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if (node.op_type in TARGET_OPS and len(node.input) > 1 and node.input[1] in inits
                and numpy_helper.to_array(inits[node.input[1]]).ndim == 2):
            consumers[node.input[0]].append(node)
    return consumers


def activation_maxima(fused: Path, calibration: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel ``max |X|`` of every smoothable activation over the calibration batches (padding
    rows included: dynamic quantization sees padded rows too)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.load(str(fused))
    names = list(_consumers(probe))
    if not names:
        raise ExportError(f"{fused}: no MatMul/Attention with constant weights to smooth")
    existing = {out.name for out in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    act_max: dict[str, np.ndarray] = {}
    for feeds in calibration:
        for name, value in zip(names, session.run(names, feeds), strict=True):
            channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            act_max[name] = channel_max if name not in act_max else np.maximum(act_max[name], channel_max)
    if not act_max:
        raise ExportError("smoothing needs calibration inputs; none were given")
    return act_max


def smooth_model(fused: Path, target: Path, act_max: dict[str, np.ndarray], alpha: float) -> dict[str, Any]:
    """Write a copy of ``fused`` smoothed with ``alpha`` to ``target``; return what was smoothed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fused))
    inits = {init.name: init for init in model.graph.initializer}
    consumers = _consumers(model)
    new_nodes: list[Any] = []
    smoothed: dict[str, dict[str, float]] = {}
    for node in list(model.graph.node):
        x = node.input[0] if node.input else ""
        if node in consumers.get(x, []) and x not in smoothed and x in act_max:
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
            smoothed[x] = {"outlier_ratio_before": float(a.max() / np.median(a)),
                           "outlier_ratio_after": float((a / s).max() / np.median(a / s))}
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    onnx.save(model, str(target))
    return {"alpha": alpha, "tensors": len(smoothed),
            "median_outlier_ratio_before": float(np.median([v["outlier_ratio_before"] for v in smoothed.values()])),
            "median_outlier_ratio_after": float(np.median([v["outlier_ratio_after"] for v in smoothed.values()]))}
