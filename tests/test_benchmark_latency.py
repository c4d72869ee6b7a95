"""Smoke test of ``python -m benchmarks latency``: a tiny random-weight shape end to end (no timing assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT, require_export
from requires import require_module

sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ runs from a checkout; it is not installed

pytestmark = pytest.mark.slow


def test_latency_command_on_a_tiny_shape(tmp_path: Path) -> None:
    require_export()
    require_module("optimum.onnxruntime", "the optimum peer needs optimum-onnx: pip install -e '.[export]'")
    require_module("matplotlib", "the bench extra: pip install -e '.[bench]'")
    from benchmarks.latency import PARTS, SYSTEMS, latency_command

    out = tmp_path / "results"
    result = CliRunner().invoke(latency_command, [
        "--shape", "l2-h128", "--passages", "32", "--queries", "10", "--rounds", "1", "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    report = json.loads((out / "latency.json").read_text(encoding="utf-8"))
    for key in ("machine", "versions", "threads", "model", "workload", "systems", "ratios", "profile"):
        assert key in report, key
    assert report["threads"] == 2
    assert report["model"]["random_weights"] is True
    assert report["model"]["shape"]["name"] == "l2-h128"
    assert report["workload"]["passages"]["count"] == 32
    assert report["workload"]["questions"]["count"] == 10
    assert set(report["systems"]) == set(SYSTEMS)
    for name, system in report["systems"].items():
        assert "error" not in system, f"{name}: {system.get('error')}"
        assert system["passages_per_s"] > 0
        assert all(system["query_ms"][p] > 0 for p in ("p50", "p95", "p99"))
        assert set(system["breakdown_ms"]) == set(PARTS)
        assert all(value > 0 for value in system["breakdown_ms"].values()), name
    for comparison in ("fastdpr-int8 vs pytorch-fp32-padded", "fastdpr-int8 vs pytorch-fp32-sorted",
                       "fastdpr-int8 vs fastdpr-fp32", "optimum-ort-int8 vs pytorch-fp32-padded"):
        assert report["ratios"][comparison]["passages_per_s"] > 0
        assert report["ratios"][comparison]["query_p50"] > 0
    # Every system ran the same model: int8 may differ a little from PyTorch fp32, nothing more.
    assert all(a["min_cosine"] > 0.95 for a in report["agreement"].values())
    assert report["profile"]["op_types"] and report["profile"]["kernel_ms"] > 0

    markdown = (out / "latency.md").read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS: speed only" in markdown
    assert all(name in markdown for name in SYSTEMS)
    assert (out / "latency.png").stat().st_size > 0
