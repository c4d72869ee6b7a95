"""``python -m benchmarks artifact-ab``: two exports of one model measured side by side, files that say so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from benchmarks.artifact_ab import run_artifact_ab


def test_two_exports_of_one_model_side_by_side(tiny_artifact: Path, tiny_recipe_artifact: Callable[[str], Path],
                                              squad_path: Path, tmp_path: Path) -> None:
    head = tiny_recipe_artifact("dynamic-per-channel")  # the same tiny pair, another int8 recipe
    out = tmp_path / "ab"
    report = run_artifact_ab(tiny_artifact, head, squad_path, [1], passages=16, questions=20, rounds=1, seed=0,
                             out=out)
    saved = json.loads((out / "artifact-ab.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(report))
    run = saved["runs"]["1"]
    assert set(run["passages_per_s"]) == {"base onnxruntime", "head onnxruntime"}
    assert all(rate > 0 for rate in run["passages_per_s"].values())
    assert set(run["question_ms"]) == {"base", "head"}
    assert all(entry["wall"]["p50"] > 0 for entry in run["question_ms"].values())
    # Each artifact's own int8 error against PyTorch, read from its manifest.
    assert saved["artifacts"]["base"]["int8_vs_pytorch"]["context"]["min_cosine"] > 0.9
    assert saved["artifacts"]["head"]["identity"] != saved["artifacts"]["base"]["identity"]
    table = (out / "artifact-ab.md").read_text(encoding="utf-8")
    assert "| 1 | head onnxruntime |" in table and "x |" in table


def test_two_different_models_are_refused(tiny_artifact: Path, minilm_dpr_artifact: Path, squad_path: Path,
                                          tmp_path: Path) -> None:
    with pytest.raises(click.ClickException, match="different models"):
        run_artifact_ab(tiny_artifact, minilm_dpr_artifact, squad_path, [1], passages=16, questions=20, rounds=1,
                        seed=0, out=tmp_path / "ab")
    assert not (tmp_path / "ab").exists()
