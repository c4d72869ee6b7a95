"""Issue #21, point 3: the work of an encoder call counted from its graph, the int8 peak of a CPU class, and the
``python -m benchmarks efficiency`` run on the tiny model (no timing asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_export

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

from benchmarks.efficiency.peak import PEAKS, Clock, PeakError, machine_peak, physical_cores, read_clock
from benchmarks.efficiency.work import WorkCounter, WorkCountError
from fastdpr.common.cpu import INT8_CLASSES
from fastdpr.model.artifact import Artifact

# ---------------------------------------------------------------------------------------------------------
# The work of an encoder call, checked by hand on the tiny DPR pair (tests/conftest.py: make_tiny_dpr)


def _tiny_config(artifact: Artifact) -> tuple[int, int, int]:
    """(layers, hidden, ffn) of the tiny pair, read from its source checkpoint's config.json."""
    config = json.loads((Path(artifact.sources["context"] or "") / "config.json").read_text(encoding="utf-8"))
    return config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]


def _by_hand(layers: int, hidden: int, ffn: int, batch: int, sequence: int) -> tuple[int, int]:
    """(weight MACs, attention MACs) of a BERT encoder call with CLS pooling. Every layer but the last, per
    token: Q, K, V and the output projection (4 x hidden^2) and the two FFN products (2 x hidden x ffn); per
    sequence: scores (sequence^2 x hidden over all heads) and the context (the same). The last layer runs for
    the first token only (export/torch_model.py, FirstTokenLayer): K and V for every token (2 x hidden^2),
    Q, the output projection and the FFN for one row per input; scores and context one row each."""
    tokens = batch * sequence
    full = (layers - 1) * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
    last = tokens * 2 * hidden * hidden + batch * (2 * hidden * hidden + 2 * hidden * ffn)
    attention = (layers - 1) * batch * sequence * sequence * 2 * hidden + batch * sequence * 2 * hidden
    return full + last, attention


@pytest.mark.parametrize("batch,sequence", [(1, 1), (1, 9), (3, 5)])
def test_work_of_the_tiny_pair_is_the_hand_count(tiny_artifact: Path, batch: int, sequence: int) -> None:
    artifact = Artifact.load(tiny_artifact)
    layers, hidden, ffn = _tiny_config(artifact)
    assert (layers, hidden, ffn) == (2, 32, 64)  # the fixture's shape: the numbers below are hand-checkable
    weights, attention = _by_hand(layers, hidden, ffn, batch, sequence)
    # e.g. batch 3 x 5 tokens: 15 x 8,192 + 15 x 2,048 + 3 x 6,144 = 172,032 weight MACs;
    # 3 x 25 x 64 + 3 x 5 x 64 = 5,760 attention MACs
    fp32 = WorkCounter(artifact.model_path("context", "fp32")).count(batch, sequence)
    assert (fp32.macs("int8_gemm"), fp32.macs("fp32_gemm"), fp32.macs("fp32_attention")) == (0, weights, attention)
    int8 = WorkCounter(artifact.model_path("context", "int8")).count(batch, sequence)
    # The default recipe keeps the passage encoder's 4 most sensitive nodes fp32, and the last layer's 4 one-row
    # products stay fp32 too: their MACs count as fp32 GEMM.
    kept = [n for n in int8.nodes if "fp32_gemm" in n.macs]
    assert len(kept) == 4 + 4 and all(n.op_type in ("MatMul", "Attention") for n in kept)
    assert int8.macs("int8_gemm") + int8.macs("fp32_gemm") == weights and int8.macs("fp32_gemm") > 0
    assert int8.macs("fp32_attention") == attention
    assert int8.ops() == 2 * (weights + attention)
    assert {"LayerNormalization", "BiasGelu"} <= set(int8.not_counted)


def test_question_nodes_kept_fp32_count_as_fp32_gemm(tiny_artifact: Path) -> None:
    """The default recipe keeps the question encoder's 2 most sensitive nodes fp32: their MACs move from
    int8 to fp32 GEMM, the total stays the hand count."""
    artifact = Artifact.load(tiny_artifact)
    layers, hidden, ffn = _tiny_config(artifact)
    weights, attention = _by_hand(layers, hidden, ffn, 1, 12)
    work = WorkCounter(artifact.model_path("question", "int8")).count(1, 12)
    kept = [n for n in work.nodes if "fp32_gemm" in n.macs]
    assert len(kept) == 2 and all(n.op_type in ("MatMul", "Attention") for n in kept)  # fp32 MatMul or Attention
    assert work.macs("int8_gemm") + work.macs("fp32_gemm") == weights
    assert work.macs("fp32_attention") == attention


def _handmade(tmp_path: Path, conv: bool = False) -> Path:
    """ids [b, s] -> x = Cast(ids)[..., None] @ W1 [1, 8] -> x @ W2 [8, 4] (fp32 GEMM) and x @ x^T (attention)."""
    require_export()
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["f", "axis"], ["u"]),
             helper.make_node("MatMul", ["u", "w1"], ["x"]),
             helper.make_node("MatMul", ["x", "w2"], ["y"]),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["scores"]),
             helper.make_node("ReduceSum", ["scores"], ["out"], keepdims=0)]
    if conv:
        nodes.append(helper.make_node("Conv", ["xt", "kernel"], ["conv"]))
    inits = [numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
             numpy_helper.from_array(np.ones((1, 8), np.float32), "w1"),
             numpy_helper.from_array(np.ones((8, 4), np.float32), "w2"),
             numpy_helper.from_array(np.ones((4, 8, 1), np.float32), "kernel")]
    graph = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                                                               ["b", "s"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    path = tmp_path / ("conv.onnx" if conv else "handmade.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_matmul_of_two_activations_is_attention_work(tmp_path: Path) -> None:
    work = WorkCounter(_handmade(tmp_path)).count(2, 3)
    # u [2,3,1] @ [1,8]: 2*3*8*1 = 48; x [2,3,8] @ [8,4]: 2*3*4*8 = 192 (fp32 GEMM); x @ x^T: 2*3*3*8 = 144
    assert (work.macs("fp32_gemm"), work.macs("fp32_attention"), work.macs("int8_gemm")) == (48 + 192, 144, 0)
    assert work.to_dict()["ops"] == {"int8_gemm": 0, "fp32_gemm": 480, "fp32_attention": 288}
    assert work.to_dict()["not_counted_op_types"] == ["Cast", "ReduceSum", "Transpose", "Unsqueeze"]


def test_a_graph_with_an_op_without_a_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkCountError, match="no counting rule for Conv"):
        WorkCounter(_handmade(tmp_path, conv=True))


# ---------------------------------------------------------------------------------------------------------
# The peak of a CPU class


def test_every_int8_class_has_a_peak_row() -> None:
    assert set(PEAKS) == set(INT8_CLASSES)
    assert PEAKS["x86-avx512-vnni"].macs_per_cycle_per_core == 128  # 2 x vpdpbusd zmm (16 lanes x 4)
    assert PEAKS["x86-amx"].macs_per_cycle_per_core == 1024  # 2048 int8 ops per cycle per core
    assert PEAKS["x86-avx2"].macs_per_cycle_per_core == pytest.approx(64 / 3)
    assert PEAKS["arm64"].macs_per_cycle_per_core is None


def test_peak_is_class_times_cores_times_clock() -> None:
    peak = machine_peak("x86-avx512-vnni", Clock(2.5, "test", ""), cores=2)
    assert peak.gops(1) == pytest.approx(2 * 128 * 2.5)  # 640 GOP/s
    assert peak.gops(2) == pytest.approx(1280)
    assert peak.gops(4) == pytest.approx(1280)  # more threads than cores: no more units
    unknown = machine_peak("arm64", Clock(2.5, "test", ""), cores=2)
    assert not unknown.known
    with pytest.raises(PeakError, match="no int8 peak is known for class arm64"):
        unknown.gops(1)
    with pytest.raises(PeakError, match="unknown int8 class"):
        machine_peak("x86-avx9000")


def test_clock_and_cores_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\ncpu MHz\t\t: 2000.000\n\n"
                       "processor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\ncpu MHz\t\t: 3000.000\n\n"
                       "processor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\ncpu MHz\t\t: 2500.000\n", encoding="utf-8")
    clock = read_clock(cpuinfo, tmp_path / "absent")
    assert clock.ghz == pytest.approx(2.5) and "turbo is not known" in clock.note
    assert physical_cores(cpuinfo) == 2  # two SMT siblings share core 0
    cpufreq = tmp_path / "cpuinfo_max_freq"
    cpufreq.write_text("3700000\n", encoding="utf-8")  # kHz
    assert read_clock(cpuinfo, cpufreq).ghz == pytest.approx(3.7)
    (tmp_path / "empty").write_text("processor\t: 0\n", encoding="utf-8")
    with pytest.raises(PeakError, match="no 'cpu MHz' line"):
        read_clock(tmp_path / "empty", tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------------
# The benchmark, end to end on the tiny model


def _tiny_squad(path: Path) -> Path:
    paragraphs = [{"context": f"Paragraph {i} says that the river number {i} runs {'far ' * (i * 7)}to the sea.",
                   "qas": [{"id": f"q{i}", "question": f"Where does river {i} run?",
                            "answers": [{"text": "to the sea", "answer_start": 0}]}]} for i in range(12)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "Rivers", "paragraphs": paragraphs}]}),
                    encoding="utf-8")
    return path


def test_efficiency_benchmark_on_the_tiny_model(tiny_artifact: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from benchmarks.__main__ import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["efficiency", "--artifact", str(tiny_artifact), "--squad",
                                       str(_tiny_squad(tmp_path / "squad.json")), "--passages", "6", "--rounds", "1",
                                       "--threads", "1,2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "efficiency.json").read_text(encoding="utf-8"))
    assert report["cpu_class"] in INT8_CLASSES and report["load_average"]["start"]
    layers, hidden, ffn = _tiny_config(Artifact.load(tiny_artifact))
    lengths = report["workload"]["passage_tokens"]
    longest = report["work"]["context"]["int8"]["at_longest"]
    weights, attention = _by_hand(layers, hidden, ffn, 1, lengths["max"])
    assert longest["ops"]["int8_gemm"] + longest["ops"]["fp32_gemm"] == 2 * weights  # 4 nodes kept fp32
    assert longest["ops"]["fp32_attention"] == 2 * attention
    rows = {row["threads"]: row for row in report["efficiency"]}
    assert set(rows) == {1, 2}
    for row in rows.values():
        per_passage = report["work"]["context"]["int8"]["mean_ops_per_input"]["int8_gemm"]
        assert row["gops"]["int8_gemm"] == pytest.approx(per_passage * row["passages_per_s"] / 1e9, abs=0.006)
        if report["peak"] is not None:
            assert row["int8_share_of_peak"] == pytest.approx(
                per_passage * row["passages_per_s"] / 1e9 / row["peak_int8_gops"], rel=1e-2, abs=1e-4)
    assert [p["threads"] for p in report["profiles"]] == [1]  # N threads: N concurrent 1-thread calls
    assert all(p["batch_size"] == 1 and p["op_types"] for p in report["profiles"])
    for profile in report["profiles"]:  # timed inside the same deployed call: the parts add up
        outside = profile["outside_ort"]
        assert 0 <= outside["tokenize_share"] <= outside["share"] <= 1 and outside["glue_share"] >= 0
    for profile in report["profiles"]:  # the GEMM kernels' own rate: the file's op types, as ORT runs them
        # int8 kernels, and the fp32 ones of the nodes the default recipe keeps fp32
        rated = {r["op_type"] for r in profile["kernel_rates"]}
        # (on the 2-layer tiny pair, 4 of its 8 nodes: which ones is the sensitivity pass's call)
        assert rated & {"MatMulInteger", "QAttention"}
        assert rated <= {"MatMulInteger", "QAttention", "MatMul", "Attention"}
        assert all(r["gops"] > 0 and r["ms"] > 0 for r in profile["kernel_rates"])
    page = (out / "efficiency.md").read_text(encoding="utf-8")
    assert "lower bound" in page and report["cpu_class"] in page and report["command"] in page


def test_efficiency_benchmark_refuses_bad_threads(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from benchmarks.__main__ import main

    squad = _tiny_squad(tmp_path / "squad.json")
    result = CliRunner().invoke(main, ["efficiency", "--artifact", str(tmp_path), "--squad", str(squad),
                                       "--threads", "1,x", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "comma-separated list of thread counts" in result.output


def test_committed_efficiency_md_is_made_from_its_json() -> None:
    """The readable page of every committed efficiency run is what the report code makes of its JSON."""
    from benchmarks.efficiency.report import markdown

    runs = sorted((REPO_ROOT / "benchmarks" / "results").glob("efficiency-*/efficiency.json"))
    assert runs
    for path in runs:
        report = json.loads(path.read_text(encoding="utf-8"))
        assert path.parent.name == f"efficiency-{report['cpu_class']}"
        assert (path.parent / "efficiency.md").read_text(encoding="utf-8") == markdown(report), path
