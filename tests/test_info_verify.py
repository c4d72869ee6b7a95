"""``fastdpr info ARTIFACT --verify``: integrity (sha256) first, then proof that the runtime reproduces the
PyTorch embeddings recorded at export time, and a non-zero exit when either fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import rewrite_hashes

from fastdpr.cli.main import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target




def failed_checks(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["side"], r["precision"]) for r in report["verified"]["results"] if not r["passed"]}


def test_verify_passes_on_a_fresh_artifact(tiny_artifact: Path) -> None:
    result = invoke("info", str(tiny_artifact), "--verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "artifact" and report["integrity"] == "ok"
    assert report["verified"]["passed"] is True
    results = report["verified"]["results"]
    assert {(r["side"], r["precision"]) for r in results} == {
        (side, precision) for side in ("question", "context") for precision in ("fp32", "int8")}
    int8_threshold = report["validation"]["thresholds"]["int8"]["min_cosine"]
    for r in results:
        assert r["passed"] is True
        if r["precision"] == "fp32":
            assert r["min_cosine"] >= 0.9999 and r["max_abs"] < 1e-4
        else:
            assert r["min_cosine"] >= int8_threshold >= 0.95


def test_verify_text_report(tiny_artifact: Path) -> None:
    result = invoke("info", str(tiny_artifact), "--verify")
    assert result.exit_code == 0, result.output
    assert "runtime reproduces PyTorch on the probes: PASSED" in result.output
    assert "sha256 ok" in result.output
    assert result.output.count("[✓]") == 5  # 2 sides x 2 precisions, and int8 on this machine (held out)


def test_info_without_verify_reports_without_encoding(tiny_artifact: Path) -> None:
    result = invoke("info", str(tiny_artifact), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "verified" not in report
    assert report["sides"]["question"]["class"] == "DPRQuestionEncoder"
    assert report["sides"]["context"]["class"] == "DPRContextEncoder"
    assert report["files"]["question/model.onnx"] == (tiny_artifact / "question" / "model.onnx").stat().st_size
    # Which graph each side runs: CLS pooling, so the last layer is computed for the first token only.
    assert report["sides"]["context"]["graph"] == {"layers": 2, "final_layer": "first-token"}
    text = invoke("info", str(tiny_artifact))
    assert "models fp32, int8; 2 layers, the last for the first token only" in text.output


@pytest.mark.parametrize("relative", ["probes/question.npy", "context/model.int8.onnx", "question/tokenizer.json"])
def test_tampered_file_is_a_clear_integrity_error(tiny_artifact: Path, tmp_path: Path, relative: str) -> None:
    root = copy_artifact(tiny_artifact, tmp_path / "tampered")
    path = root / relative
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # one bit, same size
    path.write_bytes(bytes(data))
    result = invoke("info", str(root), "--verify", "--json")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "failed its integrity check" in result.output
    assert f"{relative}: sha256 differs" in result.output


def test_verify_detects_a_swapped_model_that_passes_integrity(tiny_artifact: Path, tmp_path: Path) -> None:
    """The question's fp32 model replaced by the context model, hashes rewritten: the files are
    consistent, but the runtime no longer reproduces the question encoder."""
    root = copy_artifact(tiny_artifact, tmp_path / "swapped")
    shutil.copyfile(root / "context" / "model.onnx", root / "question" / "model.onnx")
    rewrite_hashes(root)
    assert invoke("info", str(root)).exit_code == 0  # integrity passes

    result = invoke("info", str(root), "--verify", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["verified"]["passed"] is False
    assert failed_checks(report) == {("question", "fp32")}
    wrong = next(r for r in report["verified"]["results"] if not r["passed"])
    assert wrong["min_cosine"] < wrong["min_cosine_threshold"]

    text = invoke("info", str(root), "--verify")
    assert text.exit_code == 1
    assert "runtime reproduces PyTorch on the probes: FAILED" in text.output
    assert "Traceback" not in text.output


def test_verify_detects_a_wrong_probe_reference(tiny_artifact: Path, tmp_path: Path) -> None:
    """A reference that is not what PyTorch computed (rows shifted and negated), hashes rewritten: both
    precisions of that side fail."""
    root = copy_artifact(tiny_artifact, tmp_path / "bad-reference")
    reference = np.load(root / "probes" / "context.npy")
    np.save(root / "probes" / "context.npy", np.roll(reference, 1, axis=0) * -1.0, allow_pickle=False)
    rewrite_hashes(root)
    result = invoke("info", str(root), "--verify", "--json")
    assert result.exit_code == 1, result.output
    assert failed_checks(json.loads(result.stdout)) == {("context", "fp32"), ("context", "int8")}


def test_info_on_something_that_is_not_an_artifact(tmp_path: Path) -> None:
    result = invoke("info", str(tmp_path), "--verify")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "has no manifest.json" in result.output
    missing = invoke("info", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
