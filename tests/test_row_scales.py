"""Per-row activation scales (export/row_scales.py): checked on a one-MatMul graph against a numpy
reference computed here, and for the property that matters (issue #19): a row's output depends on that
row alone, bitwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_export

K, N = 64, 48


def one_matmul(path: Path, seed: int = 0) -> np.ndarray:
    """Save ``y = x @ W`` (x: ``[batch, rows, K]``) and return W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).standard_normal((K, N)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N])],
                              [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weight


def quantized_rows(tmp_path: Path) -> Path:
    require_export()
    from fastdpr_export.quantize import RECIPES, _quantize_dynamic

    one_matmul(tmp_path / "fp32.onnx")
    target = tmp_path / "rows.onnx"
    _quantize_dynamic(tmp_path / "fp32.onnx", target, RECIPES["dynamic-per-channel-smooth-auto-7bit-rows"])
    return target


def run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": x})[0])


def test_each_row_is_quantized_with_its_own_scale(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    path = quantized_rows(tmp_path)
    model = onnx.load(str(path))
    ops = [node.op_type for node in model.graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("MatMulInteger") == 1
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight = next(v for v in inits.values() if v.dtype == np.int8 and v.shape == (K, N))
    weight_scale = next(v for name, v in inits.items() if name.endswith("_scale") and v.shape == (N,))
    assert np.abs(weight).max() <= 64  # 7-bit weights: AVX2's int16 pair sums cannot saturate

    x = np.random.default_rng(1).standard_normal((2, 5, K)).astype(np.float32)
    x[0, 2] *= 50  # one loud row
    # The reference, by hand: scale_r = max|x_r| / 127, q = round(x / scale_r) (+128 as uint8, zero point
    # 128), integer product with the int8 weights, dequantized by scale_r x the weight's column scale.
    scale = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)
    q = np.round(x / scale)
    expected = (q.astype(np.float64) @ weight.astype(np.float64)) * scale * weight_scale
    np.testing.assert_allclose(run(path, x), expected, rtol=1e-5, atol=1e-5)


def test_a_row_does_not_depend_on_the_other_rows(tmp_path: Path) -> None:
    path = quantized_rows(tmp_path)
    x = np.random.default_rng(2).standard_normal((1, 6, K)).astype(np.float32)
    loud = x.copy()
    loud[0, 3] = 1000.0
    alone = np.concatenate([run(path, x[:, r:r + 1]) for r in range(6)], axis=1)
    together, beside_loud = run(path, x), run(path, loud)
    assert np.array_equal(together, alone)
    assert np.array_equal(np.delete(beside_loud, 3, axis=1), np.delete(alone, 3, axis=1))


def test_row_scales_need_7bit_weights() -> None:
    require_export()
    from fastdpr.common.errors import ExportError
    from fastdpr_export.quantize import QuantRecipe

    with pytest.raises(ExportError, match="row_scales needs reduce_range"):
        QuantRecipe("bad", "8-bit weights with row scales", row_scales=True)


def test_quantized_rows_are_bitwise_the_reference_including_ties(tmp_path: Path) -> None:
    """The uint8 activation itself: ``round_half_even(x / scale_r) + 128`` with ``scale_r = max|x_r| *
    (1/127)`` in float32, exactly (ties included), whatever ops the rewrite computes it with."""
    import onnx

    path = quantized_rows(tmp_path)
    model = onnx.load(str(path))
    quantized = next(node.input[0] for node in model.graph.node if node.op_type == "MatMulInteger")
    model.graph.output.append(onnx.helper.make_tensor_value_info(quantized, onnx.TensorProto.UINT8, None))
    probe = tmp_path / "probe.onnx"
    onnx.save(model, str(probe))

    x = np.random.default_rng(3).standard_normal((1, 4, K)).astype(np.float32)
    x[0, 1, :8] = [127.0, 2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 126.5]  # scale 1.0: exact ties
    x[0, 2] = -x[0, 2] * 7  # a row whose largest magnitude is negative
    x[0, 3] = 0.0  # an all-zero row: the floor keeps the scale finite
    import onnxruntime as ort

    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    got = session.run([quantized], {"x": x})[0]
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-12)) * np.float32(1.0 / 127.0)
    expected = (np.round(x / scale) + 128).astype(np.uint8)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
