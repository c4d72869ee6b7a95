"""Issue #10: a numpy reference of ONNX Runtime's U8S8 int8 GEMM, checked against ONNX Runtime itself:
the exact (VNNI/AMX) arithmetic natively on any machine, and the AVX2 arithmetic (pairwise saturating
int16) under valgrind, whose emulated CPU has AVX2 and no AVX-512/VNNI, so ONNX Runtime dispatches
its AVX2 kernels there whatever this machine's class."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import read_manifest, require_export
from requires import require_program

require_export()

from fastdpr_export.kernel_emulation import saturating_pair_mask, u8s8_matmul  # noqa: E402

SCRIPT = r'''
import json, sys
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
out = []
for case in cases:
    a = np.array(case["a"], dtype=np.uint8); b = np.array(case["b"], dtype=np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, b.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, b.shape[1]])],
        [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(case["zp"], np.uint8), "azp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]); model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out.append(session.run(None, {"A": a})[0].tolist())
print(json.dumps(out))
'''


def _cases() -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    cases: list[dict[str, object]] = []
    for m, k, n in ((1, 64, 16), (37, 67, 29), (64, 384, 48)):  # a GEMV, odd K, a MiniLM-wide K
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        a[:, : k // 4] = 255  # saturated activations, as dynamic quantization produces at the range's end
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        b[1, :], b[2, :] = 127, 127  # a large pair that straddles two MLAS pairs: must NOT saturate
        cases.append({"a": a.tolist(), "b": b.tolist(), "zp": int(rng.integers(0, 256))})
    b7 = rng.integers(-64, 65, (96, 8)).astype(np.int8)  # 7-bit weights (reduce_range): never saturate
    cases.append({"a": np.full((5, 96), 255, np.uint8).tolist(), "b": b7.tolist(), "zp": 128})
    return cases


def _run_ort(cases: list[dict[str, object]], prefix: list[str], workdir: Path) -> list[np.ndarray]:
    """ONNX Runtime's MatMulInteger on each case, in a fresh process (under ``prefix``, e.g. valgrind)."""
    data = workdir / "cases.json"
    data.write_text(json.dumps(cases), encoding="utf-8")
    result = subprocess.run([*prefix, sys.executable, "-c", SCRIPT, str(data)], capture_output=True,
                            text=True, check=True, timeout=900)
    return [np.array(y, dtype=np.int32) for y in json.loads(result.stdout.strip().splitlines()[-1])]


def _emulate(cases: list[dict[str, object]], saturate: bool) -> list[np.ndarray]:
    return [u8s8_matmul(np.array(c["a"], np.uint8), np.array(c["b"], np.int8), int(c["zp"]),  # type: ignore[call-overload]
                        saturate=saturate) for c in cases]


def test_saturating_pairs_are_a_property_of_the_weights() -> None:
    b = np.array([[127, 64, 127, -127, 100, 0],
                  [2, 64, -127, -2, 29, 127]], dtype=np.int8)
    # 127+2 >= 129 same sign; 64+64 = 128 cannot; opposite signs cannot; -127-2 can; 100+29 = 129 can.
    assert saturating_pair_mask(b).tolist() == [[True, False, False, True, True, False]]
    assert not saturating_pair_mask(np.full((8, 4), 64, np.int8)).any()  # 7-bit weights: never


def test_exact_arithmetic_matches_onnx_runtime_here(tmp_path: Path) -> None:
    """Without saturation the reference is exactly ORT on a VNNI/AMX machine; on an AVX2 machine ORT itself
    saturates, so there the saturating reference must match instead (this test then checks that)."""
    from fastdpr.common.cpu import this_cpu

    cases = _cases()
    saturates = bool(this_cpu().kernels.pairwise_int16_saturation)
    for got, expected in zip(_run_ort(cases, [], tmp_path), _emulate(cases, saturate=saturates), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_avx2_arithmetic_matches_onnx_runtime_avx2_kernels_under_valgrind(tmp_path: Path) -> None:
    # valgrind runs ONNX Runtime's AVX2 kernels on any x86 CPU (fails under CI=true when missing).
    valgrind = require_program("valgrind", "apt-get install valgrind")
    cases = _cases()
    got = _run_ort(cases, [valgrind, "-q", "--tool=none"], tmp_path)  # no memcheck: only the CPU emulation
    saturated = _emulate(cases, saturate=True)
    exact = _emulate(cases, saturate=False)
    for i, (g, s, e) in enumerate(zip(got, saturated, exact, strict=True)):
        np.testing.assert_array_equal(g, s, err_msg=f"case {i}")
        if i < 3:
            assert (g != e).any(), "8-bit weights with saturated activations must overflow int16 on AVX2"
    np.testing.assert_array_equal(got[3], exact[3])  # 7-bit weights: AVX2 is exact


def test_export_records_the_avx2_verdict(tiny_artifact: Path) -> None:
    """The default recipe's 7-bit weights cannot saturate: the manifest says so, from the weights."""
    quantization = read_manifest(tiny_artifact)["quantization"]
    assert isinstance(quantization, dict)
    for details in quantization["per_model"].values():
        report = details["avx2_u8s8"]
        assert report["weight_pairs_that_can_saturate"] == 0 and report["max_abs_weight"] <= 64
        # Layer 0: QAttention + 3 MatMulInteger (output, FFN in/out); the first-token last layer: 6 (query, key,
        # value, output, FFN in/out), of which the passage model keeps the 4 one-row products fp32; less the
        # nodes the recipe kept fp32.
        row_products = len(details.get("row_products_fp32", []))
        assert row_products in (0, 4)
        assert report["gemm_nodes"] == 4 + 6 - row_products - len(details.get("kept_fp32", {}))
        assert report["held_out"]["saturated_pairs"] == 0


def test_emulation_counts_saturation_of_an_8bit_graph(tiny_recipe_artifact: Callable[[str], Path]) -> None:
    # The tiny pair exported with 8-bit per-channel weights (conftest, once per session; tests/test_quantize_recipes.py
    # checks it too). They may miss the int8 checks where they saturate (AVX2): there the gate records its
    # result instead of refusing; what is measured here is the emulation's report.
    out = tiny_recipe_artifact("dynamic-per-channel")
    quantization = read_manifest(out)["quantization"]
    assert isinstance(quantization, dict)
    for details in quantization["per_model"].values():
        report = details["avx2_u8s8"]
        assert report["max_abs_weight"] == 127  # symmetric per-channel 8-bit: every column reaches 127
        assert report["weight_pairs_that_can_saturate"] > 0
        held_out = report["held_out"]
        assert held_out["pairs"] > 0 and 0 <= held_out["saturated_pairs"] <= held_out["pairs"]
