"""Issues #4, #5 and #10 in CI: real recall parity. MiniLM as a DPR pair, all 2,067 SQuAD dev paragraphs, all
10,570 questions: PyTorch fp32 (exact) against fastdpr as deployed (the default INT8 recipe, HNSW at the
default ef).

Every question, not a sample: a 300-question sample has a standard error of ~1.4 points at Top-1 (about
sqrt(flip rate / n)), so it could not tell the default recipe (-0.16) from plain per-channel int8 (-1.74); all
questions cost ~2 more minutes and make the run deterministic on this machine (the full run gave identical
flips twice). So the thresholds are issue #5's goal itself (int8 + HNSW may lose at most 1.0 point at
Top-1/Top-5 and 0.5 beyond). The int8 GEMMs compute the same integers on every x86 int8 class (7-bit weights,
issue #10), but recall still moves (most likely the fp32 ops between them, which round differently per class;
not traced op by op) by a few tenths between classes: `-7bit-rows` with int8 questions lost 0.60 at Top-5 on
x86-avx2 and 1.12 on x86-avx512-vnni (this test failed there), which is why today's default keeps the question
encoder's 2 most sensitive MatMuls fp32, and since the faster graphs the passage encoder's 4
(`-7bit-rows-qkeep2-pkeep4`; docs/benchmarks.md, "The question side" and "Faster graphs"). Speed
is reported, not asserted (below). fp32 must match PyTorch's answer recall exactly; HNSW may cost fp32 a few
questions (measured: 3 of 10,570 at Top-100). fp32 is not bit-identical to PyTorch, so its ranked passage
lists are counted against PyTorch's (issue #14): near-tied passages can swap places deep in the list, but
rarely near the top.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_export

from fastdpr.common.cpu import this_cpu
from fastdpr.model.artifact import Artifact

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

pytestmark = pytest.mark.slow

QUESTIONS = 10_570
KS = (1, 5, 20, 50, 100)
#: Issue #5's goal, as docs/benchmarks.md states it ("INT8 recipes: the frontier"): the default artifact as
#: deployed (int8 passages + HNSW, the artifact's question side, one input per ONNX Runtime call) within 1.0
#: point of PyTorch fp32's answer recall at Top-1/Top-5 and 0.5 at Top-20/50/100. Issue #19's 0.25 at every
#: k is not met yet (measured, x86-avx2: up to -0.61 at Top-5), so it is reported, not asserted. Written
#: here, not imported from the benchmark, so that loosening the benchmark's goal cannot loosen this test.
GOAL_MAX_LOSS_POINTS = {1: 1.0, 5: 1.0, 20: 0.5, 50: 0.5, 100: 0.5}
#: The speed side of issue #19's goal (int8 passages >= 1.45x fused fp32 on AVX2) is reported by this run
#: (``speedup_vs_fp32``, interleaved; one round here), not asserted: a speed goal is checked by a
#: benchmark that prints its ratio, never by a test, and it is not met on every class (CI on x86-avx2,
#: 2026-12-04, load ~2: 1.07x one passage per call, 1.21x batched; benchmarks/results/parity-x86-avx2).
# HNSW against exact search, fp32: the largest loss (fraction of questions) tolerated at any k.
FP32_HNSW_MAX_LOSS = 10 / QUESTIONS
#: Questions whose ONNX fp32 top-k id list equals PyTorch fp32's, in order, at least (share of all).
#: Measured on x86-amx, 2026-11-30 (benchmarks/results/parity-ranked-ids-x86-amx): exact search
#: 100.00 / 99.98 / 99.80 / 95.87 % at k = 1 / 5 / 20 / 100, HNSW 100.00 / 99.97 / 99.78 / 95.24 %.
#: The bounds leave room for other CPU classes' float rounding, not for a different model.
FP32_MIN_IDENTICAL_RANKED = {1: 0.999, 5: 0.995, 20: 0.99, 100: 0.90}


def test_recall_parity_with_pytorch_on_all_squad_questions(minilm_dpr_artifact: Path, squad_path: Path, tmp_path: Path,
                                                            parity_reuses_squad_index: list[Path]) -> None:
    require_export()
    from benchmarks.parity import run_parity

    # Without the pre-issue-#19 row (int8 calls holding whole batches: every passage and question encoded
    # once more): it says what invariance changed, not whether the deployed system keeps parity. The
    # batched calls' invariance and speed are still measured (report["invariance"], the interleaved run).
    # Speed is reported here, not asserted (below): one round over 64 passages says the ratio's order and
    # saves a minute of CI; the published figure comes from the benchmark's 3 rounds over 256.
    report = run_parity(squad_path, tmp_path, {"default": minilm_dpr_artifact}, None, seed=0, threads=2,
                        batched_calls=False, speed_rounds=1, speed_passages=64)
    # Its int8 index is the session's minilm_squad_index (built by build_index with these very options).
    assert len(parity_reuses_squad_index) == 1, parity_reuses_squad_index
    assert report["dataset"]["passages"] == 2067 and report["dataset"]["questions"] == QUESTIONS
    saved = json.loads((tmp_path / "parity.json").read_text(encoding="utf-8"))
    assert saved["answer_recall"] == report["answer_recall"]
    assert (tmp_path / "parity.md").read_text(encoding="utf-8").count("| pytorch-fp32-exact |") == 2
    assert (tmp_path / "parity.png").stat().st_size > 10_000

    recall = report["answer_recall"]
    deployed_questions = report["question_precision"]["onnx-int8-hnsw"]
    other = "fp32" if deployed_questions == "int8" else "int8"
    systems = {"pytorch-fp32-exact", "onnx-fp32-exact", "onnx-fp32-hnsw", "onnx-int8-exact", "onnx-int8-hnsw",
               f"onnx-int8-exact@questions-{other}", f"onnx-int8-hnsw@questions-{other}"}
    # With the OpenVINO passage graph (exported by default where the openvino extra is installed, as in CI),
    # the same rows with OpenVINO's passages; `fastdpr index` here uses whichever passage_backend_here says.
    openvino = Artifact.load(minilm_dpr_artifact, "sizes").typed.openvino
    int8_rows = ["onnx-int8"]
    if openvino is not None and openvino.passed:
        int8_rows.append("onnx-int8+openvino-passages")
        systems |= {f"onnx-int8+openvino-passages-{search}" for search in ("exact", "hnsw")}
    assert set(recall) == systems
    here = report["passage_backend_here"]["default"]["name"]
    assert here == ("openvino" if openvino is not None and this_cpu().int8_class in openvino.preferred_on
                    else "onnxruntime")
    for system in systems:
        values = [recall[system][str(k)] for k in KS]
        assert values == sorted(values) and 0 < values[0] < 1  # recall is a fraction, non-decreasing in k
    # A real retriever on SQuAD: MiniLM-as-DPR finds the answer in the top 20 for most questions.
    assert recall["pytorch-fp32-exact"]["20"] > 0.75

    delta = report["delta_vs_pytorch"]
    for k in KS:
        assert delta["onnx-fp32-exact"][str(k)] == 0.0
        assert report["flips"]["onnx-fp32-exact"][str(k)] == {"hit_to_miss": 0, "miss_to_hit": 0}
        assert abs(delta["onnx-fp32-hnsw"][str(k)]) <= FP32_HNSW_MAX_LOSS + 1e-9, (k, delta["onnx-fp32-hnsw"])
        for row in int8_rows:  # each passage runtime, and so the one deployed here, keeps the recall goal
            assert delta[f"{row}-hnsw"][str(k)] * 100 >= -GOAL_MAX_LOSS_POINTS[k], (k, row, delta[f"{row}-hnsw"])
    # How many questions get PyTorch's very passages, in PyTorch's order (not only the same recall).
    agreement = report["ranked_id_agreement"]
    assert agreement["reference"] == "pytorch-fp32-exact" and agreement["questions"] == QUESTIONS
    assert set(agreement["systems"]) == systems - {"pytorch-fp32-exact"}
    for system in ("onnx-fp32-exact", "onnx-fp32-hnsw"):
        for k, share in FP32_MIN_IDENTICAL_RANKED.items():
            counts = agreement["systems"][system][str(k)]
            assert counts["identical_ranked"] >= share * QUESTIONS, (system, k, counts)
            assert counts["same_set"] >= counts["identical_ranked"]
    assert "Top-k passage ids identical to pytorch-fp32-exact" in (tmp_path / "parity.md").read_text(encoding="utf-8")
    # The frontier row of the measured recipe: the same deltas in points, and its interleaved speed-up.
    row = report["frontier"]["default"]
    assert row["system"] == "onnx-int8-hnsw" and row["recall_goal_met"] is True
    print(f"int8 passage encoding {row['speedup_vs_fp32']}x fused fp32 in this run (issue #19's goal: 1.45x)")
    assert row["delta_points"] == {k: round(v * 100, 2) for k, v in delta["onnx-int8-hnsw"].items()}
    assert row["speedup_vs_fp32"] == report["passage_encoding_interleaved"]["speedup_vs_onnx_fp32"]["onnx-int8"]
    assert [point["system"] for point in row["alternatives"]] == [f"onnx-int8-hnsw@questions-{other}"]
    # Issue #19: the deployed question encoder gives every question the same embedding alone and in a batch;
    # calls holding whole batches (before the issue) did not for int8.
    assert row["invariant"] is True
    checked = report["invariance"][f"{deployed_questions}, one input per call"]
    assert checked["identical"] == checked["questions"] == 256
    assert report["invariance"]["int8, batched calls"]["identical"] < 256
    assert set(report["question_p50_ms"]) == {"fp32", "int8"}  # one artifact: its int8 and fp32 question models
    assert report["machine"]["int8_class"]["int8_class"]  # every result names its CPU class
    assert "INT8 frontier" in (tmp_path / "parity.md").read_text(encoding="utf-8")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
