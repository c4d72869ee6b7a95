"""Issue #10: int8 is validated where it runs. The export records the CPU class it validated on and judges
int8 on probes held out from calibration; `fastdpr index` re-checks the int8 graphs on this machine before
encoding and refuses when they miss the export's thresholds; an int8 index re-checks its question encoder
at every load (and warns); `fastdpr info` says which int8 graph runs here and whether it was verified."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import read_manifest, rewrite_hashes, scramble_int8_weights

from fastdpr.cli.main import main
from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import FastDPRError, Int8Warning
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.search.retriever import Retriever


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=True)






def test_export_names_its_cpu_class_and_holds_out_probes_from_calibration(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    validation: Any = manifest["validation"]
    assert validation["cpu"]["int8_class"] == this_cpu().int8_class
    probes: Any = manifest["probes"]
    calibration = probes["calibration"]
    assert 0 < calibration["questions"] < probes["questions"] and 0 < calibration["passages"] < probes["passages"]
    agreement = validation["int8_retrieval_agreement"]
    # The gate reads only the probes after the calibration rows: none that calibration read.
    assert agreement["questions"] == probes["questions"] - calibration["questions"] >= 32
    assert agreement["passages"] == probes["passages"] - calibration["passages"] >= 128
    smoothing = manifest["quantization"]["per_model"]["context"]["smoothing"]  # type: ignore[index]
    # Calibration batches: the calibration passages only, one per call as the runtime encodes them.
    assert smoothing["calibration_batches"] == calibration["passages"]


def test_index_records_the_int8_check_and_keeps_probes_for_load_checks(tiny_index: Path) -> None:
    manifest: Any = read_manifest(tiny_index)
    assert manifest["cpu"]["int8_class"] == this_cpu().int8_class
    check = manifest["int8_verification"]
    assert check["passed"] is True and check["where"] == "index build"
    assert set(check["sides"]) == {"question", "context"}
    assert check["recall_at_10"] >= check["thresholds"]["recall_at_10"]
    probe = manifest["question_encoder"]["probe_check"]
    assert (tiny_index / probe["questions"]).is_file() and (tiny_index / probe["reference"]).is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Int8Warning)
        with Retriever.load(tiny_index) as retriever:
            assert retriever.int8_check is not None and retriever.int8_check.passed
            assert retriever.int8_check.where == "load"


def test_info_says_which_int8_graph_runs_here(tiny_artifact: Path, tiny_index: Path) -> None:
    here = this_cpu().int8_class
    report = json.loads(invoke("info", str(tiny_artifact), "--json").stdout)
    assert report["cpu"]["int8_class"] == here
    int8 = report["int8"]
    assert int8["validated_on"] == here and int8["same_class_as_export"] is True
    assert set(int8["models"].values()) == {"question/model.int8.onnx", "context/model.int8.onnx"}
    text = invoke("info", str(tiny_artifact)).output
    assert f"this machine: {here}" in text and "int8 graph run here" in text
    assert f"int8 validated at export on: {here}" in text

    verified = invoke("info", str(tiny_artifact), "--verify")
    assert verified.exit_code == 0, verified.output
    assert f"int8 on this machine ({here}, held-out probes)" in verified.output
    assert "verified here now: yes" in verified.output

    index_text = invoke("info", str(tiny_index), "--verify")
    assert index_text.exit_code == 0, index_text.output
    assert f"int8 checked at build: passed on {here}" in index_text.output
    assert "[✓] int8 on this machine" in index_text.output


def test_index_refuses_an_int8_graph_that_fails_here(tiny_artifact: Path, pydoc_corpus: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    scramble_int8_weights(broken / "context" / "model.int8.onnx")
    rewrite_hashes(broken)
    out = tmp_path / "idx"
    result = invoke("index", str(broken), str(pydoc_corpus), "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"does not reproduce PyTorch on this CPU ({this_cpu().int8_class})" in result.output
    assert "context min cosine" in result.output and "--precision fp32" in result.output
    assert not out.exists()
    # fp32 is unaffected; --allow-unverified-int8 builds and records the failure.
    assert invoke("index", str(broken), str(pydoc_corpus), "--out", str(out), "--precision", "fp32").exit_code == 0
    manifest = build_index(broken, pydoc_corpus, tmp_path / "idx8", "jsonl",
                           IndexOptions(progress=False, allow_unverified_int8=True))
    assert manifest["int8_verification"]["passed"] is False
    assert any("context min cosine" in f for f in manifest["int8_verification"]["failures"])
    with pytest.raises(FastDPRError, match="does not reproduce PyTorch"):
        build_index(broken, pydoc_corpus, tmp_path / "idx9", "jsonl", IndexOptions(progress=False))


def test_an_index_whose_int8_question_encoder_fails_here_warns_at_load(tiny_index: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    scramble_int8_weights(index / "encoder" / "model.onnx")
    rewrite_hashes(index)
    with pytest.warns(Int8Warning, match="question min cosine"), Retriever.load(index) as retriever:
        assert retriever.int8_check is not None and not retriever.int8_check.passed
        assert len(retriever.search("how do I write a decorator?", k=3)) == 3  # still answers
    with warnings.catch_warnings():
        warnings.simplefilter("error", Int8Warning)
        Retriever.load(index, check_int8=False).close()  # the check can be skipped

    searched = invoke("search", str(index), "how do I write a decorator?", "-k", "2", "--json")
    assert searched.exit_code == 0, searched.output
    assert "warning: int8 on" in searched.stderr and "FAILED" in searched.stderr
    verified = invoke("info", str(index), "--verify")
    assert verified.exit_code == 1 and "[x] int8 on this machine" in verified.output


def test_a_sharded_index_is_checked_like_one_index(tiny_artifact: Path, pydoc_corpus: Path, tmp_path: Path) -> None:
    from fastdpr.index.build_sharded import build_sharded_index

    out = tmp_path / "sharded"
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl",
                                   IndexOptions(question_precision="int8", progress=False), shard_size=200)
    assert len(manifest["shards"]) > 1
    assert manifest["int8_verification"]["passed"] is True
    assert manifest["cpu"]["int8_class"] == this_cpu().int8_class
    with warnings.catch_warnings():
        warnings.simplefilter("error", Int8Warning)
        with Retriever.load(out) as retriever:
            assert retriever.int8_check is not None and retriever.int8_check.passed
    verified = invoke("info", str(out), "--verify")
    assert verified.exit_code == 0, verified.output
    assert "[✓] int8 on this machine" in verified.output and "shards:" in verified.output
