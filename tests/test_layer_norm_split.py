"""The residual LayerNorms are exported as standard ``LayerNormalization`` (export/layer_norm.py), residual
first and bias second, so that ONNX Runtime's load-time fusions compute what the graph says with per-row
int8 scales; checked on a one-MatMul graph and on the tiny pair's exported artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import require_export

K, N = 64, 48


def _run(path: Path, feeds: dict[str, np.ndarray], all_fusions: bool) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if all_fusions
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def test_split_skip_layer_norm_equals_the_fused_node(tmp_path: Path) -> None:
    require_export()
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fastdpr_export.layer_norm import unfuse_skip_layer_norm

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), name) for name in ("g", "b", "bias")]
    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"], name="sln",
                            domain="com.microsoft", epsilon=1e-12)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 5, N])
                                            for n in ("x", "s")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fused.onnx"))
    assert unfuse_skip_layer_norm(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add", "Add", "LayerNormalization"]
    onnx.save(model, str(tmp_path / "split.onnx"))
    feeds = {n: rng.standard_normal((1, 5, N)).astype(np.float32) * 3 for n in ("x", "s")}
    np.testing.assert_allclose(_run(tmp_path / "split.onnx", feeds, True), _run(tmp_path / "fused.onnx", feeds, True),
                               atol=1e-5)


def test_below_opset_17_the_fused_node_stays() -> None:
    require_export()
    from onnx import helper

    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b"], ["y"], domain="com.microsoft")
    model = helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", 14)])
    from fastdpr_export.layer_norm import unfuse_skip_layer_norm

    assert unfuse_skip_layer_norm(model) == 0 and model.graph.node[0].op_type == "SkipLayerNormalization"


def test_rows_graph_after_a_residual_then_bias_computes_the_same_under_every_fusion(tmp_path: Path) -> None:
    """MatMul -> Add(residual) -> Add(bias), the order the split writes: ORT's load-time MatMulIntegerToFloat
    fusion must not change the per-row int8 result (with the bias Add first it does: ORT folds the bias
    into a kernel that mishandles per-row scales, max |diff| ~2.5 here)."""
    require_export()
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fastdpr_export.quantize import RECIPES, _quantize_dynamic

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "r"], ["mr"], name="residual"),
             helper.make_node("Add", ["mr", "bias"], ["y"], name="bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K]),
                                           helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", "s", N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N])],
                              [numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "W"),
                               numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    _quantize_dynamic(tmp_path / "fp32.onnx", tmp_path / "rows.onnx",
                      RECIPES["dynamic-per-channel-smooth-auto-7bit-rows"])
    x = rng.standard_normal((1, 6, K)).astype(np.float32)
    x[0, 2] *= 50  # rows with very different scales
    feeds = {"x": x, "r": rng.standard_normal((1, 6, N)).astype(np.float32)}
    np.testing.assert_allclose(_run(tmp_path / "rows.onnx", feeds, True), _run(tmp_path / "rows.onnx", feeds, False),
                               atol=1e-3)


def test_the_exported_artifact_has_no_skip_layer_norm_and_fusions_keep_its_int8_math(tiny_artifact: Path) -> None:
    import json

    import onnx

    from fastdpr.model.artifact import Artifact

    artifact = Artifact.load(tiny_artifact)
    for side in ("question", "context"):
        for precision in ("fp32", "int8"):
            ops = {n.op_type for n in onnx.load(str(artifact.model_path(side, precision)),
                                                 load_external_data=False).graph.node}
            assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops, (side, precision)
    fusion = json.loads((tiny_artifact / "manifest.json").read_text())["fusion"]
    assert "SkipLayerNormalization" not in json.dumps(fusion) and "LayerNormalization" in json.dumps(fusion)
    ids = np.array([[101, 2054, 2003, 1996, 3007, 1997, 2605, 1029, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    path = artifact.model_path("context", "int8")
    np.testing.assert_allclose(_run(path, feeds, True), _run(path, feeds, False), atol=1e-4)


def test_layer_norm_benchmark_pairs_compute_the_same(tmp_path: Path) -> None:
    """``python -m benchmarks layer-norm`` times pairs that compute the same thing, on this CPU: the
    normalization pair within float rounding, the quantization pair bitwise."""
    require_export()
    from benchmarks.layer_norm import report, run

    result = run(calls=2, rounds=1, shapes=(("tiny", 7, 32),))
    rows = {row["what"]: row for row in result["shapes"]}
    assert rows["normalization"]["max_abs_diff"] < 1e-4
    assert rows["quantization, hidden wide"]["bitwise_equal"] is True
    assert rows["quantization, 4 x hidden wide"]["bitwise_equal"] is True
    assert "| tiny | 7 x 32 | normalization" in report(result)
