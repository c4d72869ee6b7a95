"""Issue #5: every INT8 recipe's export path works on a tiny model, the calibration option feeds the
data-driven recipes, and the int8 quality gate refuses a damaged int8 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_INT8_MIN_RECALL, export, read_manifest, require_export, scramble_int8_weights

from fastdpr.artifact import Artifact
from fastdpr.cli import main
from fastdpr.corpus import Passage, write_corpus
from fastdpr.errors import ValidationError

require_export()

from fastdpr_export.quantize import RECIPES  # noqa: E402


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_exports_and_passes_validation(recipe: str, tiny_dpr_pair: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    q, c = tiny_dpr_pair
    out = export(tmp_path / recipe, question_encoder=str(q), context_encoder=str(c), quantize=recipe)
    manifest = read_manifest(out)
    quantization = manifest["quantization"]
    assert isinstance(quantization, dict)
    assert quantization["recipe"] == recipe
    assert quantization["settings"] == RECIPES[recipe].settings()
    for side in ("question", "context"):
        details = quantization["per_model"][side]
        assert details["operators"].get("QAttention", 0) + len(
            [n for n in details.get("kept_fp32", {}) if n.startswith("Attention")]) == 2
        kept = details.get("kept_fp32", {})
        assert len(kept) == RECIPES[recipe].keep_fp32
        if kept:  # the sensitivity pass ranks nodes: the kept ones are the most sensitive, best first
            errors = list(kept.values())
            assert errors == sorted(errors, reverse=True) and errors[0] > 0
        alphas = RECIPES[recipe].smooth_alphas
        if alphas:
            smoothing = details["smoothing"]
            assert smoothing["tensors"] == 4 * 2  # 4 quantizable inputs per layer x 2 layers
            if len(alphas) > 1:  # searched: every alpha was tried, and the closest to fp32 was kept
                search = smoothing["search_mean_cosine_error"]
                assert set(search) == {str(a) for a in alphas}
                assert str(smoothing["alpha"]) == min(search, key=search.__getitem__)
            else:
                assert smoothing["alpha"] == alphas[0]
        # Embedding tables are int8 only when the recipe says so (a lookup gains no speed from int8).
        embedding_op = "QEmbedLayerNormalization" if RECIPES[recipe].quantize_embeddings else "EmbedLayerNormalization"
        assert details["operators"][embedding_op] == 1
    validation = manifest["validation"]
    assert validation["int8_gate"]["passed"] is True
    for side in ("question", "context"):
        assert validation["stages"]["int8"][side]["passed"] is True




def test_gate_refuses_a_damaged_int8_model(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import fastdpr_export.quantize as quantize_module

    real = quantize_module.quantize

    def damaged(fused: Path, target: Path, *args: object, **kwargs: object) -> object:
        details = real(fused, target, *args, **kwargs)  # type: ignore[arg-type]
        scramble_int8_weights(target)
        return details

    monkeypatch.setattr(quantize_module, "quantize", damaged)
    q, c = tiny_dpr_pair
    out = tmp_path / "damaged"
    with pytest.raises(ValidationError) as info:
        export(out, question_encoder=str(q), context_encoder=str(c))
    message = str(info.value)
    assert "int8" in message and "--quantize" in message and "none" in message
    assert not out.exists()
    # Asking for fp32 only is the way out the message names.
    kept = export(out, question_encoder=str(q), context_encoder=str(c), quantize="none")
    assert Artifact.load(kept).precisions == ("fp32",)


def test_calibration_corpus_replaces_probe_passages(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path) -> None:
    corpus = tmp_path / "calib.jsonl"
    passages = [Passage(id=str(i), title=f"Topic {i % 7}", text=f"passage number {i} about subject {i % 13} " * 3)
                for i in range(300)]
    write_corpus(corpus, passages, "jsonl")
    q, c = tiny_dpr_pair
    out = tmp_path / "calibrated"
    result = CliRunner().invoke(main, ["export", "--question-encoder", str(q), "--context-encoder", str(c),
                                       "--out", str(out), "--quantize", "dynamic-per-channel-keep2",
                                       "--calibration", str(corpus), "--int8-min-recall", str(TINY_INT8_MIN_RECALL)])
    assert result.exit_code == 0, result.output
    artifact = Artifact.load(out)
    probes = artifact.probes()
    assert len(probes.passages) == 300  # the whole corpus: smaller than 256 calibration + 128 held out
    assert (probes.calibration_passages, len(probes.passages[probes.held_out_rows("context")])) == (200, 100)
    assert {p.id for p in probes.passages} <= {p.id for p in passages}

    tiny = tmp_path / "tiny.jsonl"
    write_corpus(tiny, passages[:5], "jsonl")
    result = CliRunner().invoke(main, ["export", "--question-encoder", str(q), "--context-encoder", str(c),
                                       "--out", str(tmp_path / "x"), "--calibration", str(tiny),
                                       "--int8-min-recall", str(TINY_INT8_MIN_RECALL)])
    assert result.exit_code == 1 and "too few" in result.output
    assert isinstance(result.exception, SystemExit)


def test_replaying_an_exports_decisions_reproduces_its_int8_model(tiny_artifact: Path, tmp_path: Path) -> None:
    """``quantize(..., decisions=...)`` (how the benchmarks quantize optimum's unpooled peer) applies the
    artifact's searched smoothing alpha instead of searching again, and gives the same int8 model."""
    from fastdpr_export.pipeline import artifact_calibration_batches
    from fastdpr_export.quantize import get_recipe, quantize

    artifact = Artifact.load(tiny_artifact)
    quantization = artifact.manifest["quantization"]
    probes = artifact.probes()
    replayed = tmp_path / "replayed.onnx"
    decisions = quantization["per_model"]["context"]
    details = quantize(artifact.model_path("context", "fp32"), replayed, get_recipe(quantization["recipe"]),
                       artifact_calibration_batches(artifact, ["context"]), decisions=decisions)
    assert details["smoothing"]["alpha"] == decisions["smoothing"]["alpha"]
    assert "search_mean_cosine_error" not in details["smoothing"]  # replayed, not searched

    from fastdpr.encoder import OnnxEncoder

    pairs = probes.passage_pairs()[:32]
    original = artifact.encoder("context", "int8").encode_passages(pairs)
    again = OnnxEncoder(replayed, artifact.tokenizer("context")).encode_passages(pairs)
    np.testing.assert_allclose(again, original, rtol=0, atol=1e-6)


def test_manifest_names_the_calibration_data(tiny_artifact: Path, tiny_dpr_pair: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    """int8 calibration depends on the probe passages, so the manifest says where they came from."""
    assert read_manifest(tiny_artifact)["probes"]["source"].startswith("builtin: pydoc_data.topics")  # type: ignore[index]
    corpus = tmp_path / "calib.jsonl"
    write_corpus(corpus, [Passage(id=str(i), title=f"T{i}", text=f"text {i} " * 5) for i in range(40)], "jsonl")
    q, c = tiny_dpr_pair
    from fastdpr.probes import probes_from_corpus

    out = export(tmp_path / "calibrated", question_encoder=str(q), context_encoder=str(c),
                 probes=probes_from_corpus(corpus))
    source = read_manifest(out)["probes"]["source"]  # type: ignore[index]
    assert str(corpus) in source and "40 passages" in source
    assert Artifact.load(out).probes().source == source
