"""The OpenVINO passage backend (issue #21): export --openvino, the choice ``fastdpr index`` makes, and
the promise that an embedding depends on its own text only, bitwise, on this runtime too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_INT8_MIN_RECALL, require_export, run_cli
from requires import require_module

from fastdpr.common.cpu import this_cpu
from fastdpr.common.errors import ArtifactError, MissingDependencyError
from fastdpr.model.artifact import Artifact
from fastdpr.model.openvino_encoder import BUCKET_TOKENS, OpenVinoEncoder, bucket_width
from fastdpr.model.passage_backend import OpenVinoEntry, choose_passage_backend

require_module("openvino", "the openvino extra: pip install -e '.[openvino]'")
require_module("nncf", "the openvino extra: pip install -e '.[openvino]'")


@pytest.fixture(scope="module")
def openvino_export(tmp_path_factory: pytest.TempPathFactory, tiny_dpr_pair: tuple[Path, Path]) -> tuple[Path, Any]:
    """The tiny pair exported by `fastdpr export --openvino` with the default recipe, and the CLI's result."""
    require_export()
    q, c = tiny_dpr_pair
    out = tmp_path_factory.mktemp("ov") / "tiny-ov"
    result = run_cli(["export", "--question-encoder", q, "--context-encoder", c, "--out", out, "--openvino",
                      "--int8-min-recall", TINY_INT8_MIN_RECALL])
    return out, result


@pytest.fixture(scope="module")
def openvino_artifact(openvino_export: tuple[Path, Any]) -> Path:
    return openvino_export[0]


def test_export_prints_the_path_and_its_own_log_only(openvino_export: tuple[Path, Any]) -> None:
    out, result = openvino_export
    assert result.stdout.strip() == str(out)  # NNCF's progress bars and INFO lines are not printed
    assert "INFO:nncf" not in result.output and "━" not in result.output
    assert "openvino context:" in result.stderr and "bitwise the same alone" in result.stderr


def _entry(passed: bool = True, preferred_on: tuple[str, ...] = ()) -> OpenVinoEntry:
    return OpenVinoEntry(model="context/model.int8.openvino.xml", bucket_tokens=16, passed=passed,
                         preferred_on=preferred_on, speedup=1.5, measured_on="x86-test")


def test_bucket_width_depends_on_the_length_only() -> None:
    assert [bucket_width(n, 256) for n in (1, 16, 17, 100, 250, 256)] == [16, 16, 32, 112, 256, 256]
    assert bucket_width(60, 64) == 64 and bucket_width(63, 70) == 64 and bucket_width(66, 70) == 70


def test_export_records_the_checks_and_the_measured_speed(openvino_artifact: Path) -> None:
    from fastdpr_export.openvino_backend import RECIPE_NODES_KEPT

    manifest = json.loads((openvino_artifact / "manifest.json").read_text())
    entry = manifest["backends"]["openvino"]
    for rel in entry["passages"].values():
        assert rel in manifest["files"] and (openvino_artifact / rel).stat().st_size > 0
    validation = entry["validation"]
    assert validation["min_cosine"]["min_cosine"] >= validation["min_cosine"]["min_cosine_threshold"] == 0.97
    assert validation["retrieval"]["recall_at_k"] >= validation["retrieval"]["min_recall"]
    assert validation["invariance"]["identical"] == validation["invariance"]["passages"] > 0
    assert validation["passed"] is True and validation["cpu_class"] == this_cpu().int8_class
    speed = entry["speed"]
    assert speed["openvino_passages_per_s"] > 0 and speed["onnx_int8_passages_per_s"] > 0
    # Preferred exactly where it passed and was measured at least min_speedup faster.
    assert entry["preferred_on"] == ([this_cpu().int8_class] if speed["speedup"] >= entry["min_speedup"] else [])
    assert entry["bucket_tokens"] == BUCKET_TOKENS
    # Out of int8: attention's two activation products in every layer (QAttention computes them in fp32), and
    # the recipe's most sensitive kept MatMuls (its ranking order), not the rest of them.
    kept = set(entry["kept_fp32"])
    products = {name for name in kept if name.endswith(("/attention/self/MatMul", "/attention/self/MatMul_1"))}
    assert len(products) == 2 * 2  # two per layer of the tiny 2-layer encoder
    recipe_kept = list(manifest["quantization"]["per_model"]["context"]["kept_fp32"])
    assert entry["recipe_nodes_kept"] == RECIPE_NODES_KEPT
    top, rest = recipe_kept[:RECIPE_NODES_KEPT], recipe_kept[RECIPE_NODES_KEPT:]
    assert all(name in kept for name in top if name.endswith("MatMul"))
    assert not any(name in kept for name in rest if name.endswith("MatMul"))
    typed = Artifact.load(openvino_artifact).typed.openvino
    assert typed is not None and typed.passed and typed.preferred_on == tuple(entry["preferred_on"])
    info = run_cli(["info", openvino_artifact]).output
    assert "openvino passages: passed the export's checks" in info and "fastdpr index here encodes passages on" in info
    verified = run_cli(["info", openvino_artifact, "--verify"]).output
    assert "[✓] int8 with OpenVINO passages on this machine" in verified and "PASSED" in verified


def test_an_embedding_is_bitwise_the_same_alone_in_any_batch_order_and_thread_count(openvino_artifact: Path,
                                                                                    pydoc_corpus: Path) -> None:
    artifact = Artifact.load(openvino_artifact)
    rows = [json.loads(line) for line in pydoc_corpus.read_text().splitlines()[:48]]
    pairs = [(row["title"], row["text"]) for row in rows]
    path = artifact.typed.files.path(artifact.typed.openvino.model)  # type: ignore[union-attr]
    one = OpenVinoEncoder(path, artifact.tokenizer("context"), threads=1)
    two = OpenVinoEncoder(path, artifact.tokenizer("context"), threads=2)
    alone = np.stack([one.encode_passages([pair])[0] for pair in pairs])
    assert np.array_equal(alone, one.encode_passages(pairs, 8))
    assert np.array_equal(alone, two.encode_passages(pairs[::-1], 5)[::-1])
    assert np.array_equal(alone, two.encode_passages(pairs, 32))
    # ... and it is an embedding of the text: close to the ONNX int8 graph's
    onnx = artifact.encoder("context", "int8", threads=1).encode_passages(pairs)
    cosine = np.sum(alone * onnx, 1) / (np.linalg.norm(alone, axis=1) * np.linalg.norm(onnx, axis=1))
    assert cosine.min() > 0.97


def test_auto_takes_openvino_only_where_the_export_measured_it_faster() -> None:
    here = this_cpu().int8_class
    assert choose_passage_backend(_entry(preferred_on=(here,)), "int8", "auto").name == "openvino"
    elsewhere = choose_passage_backend(_entry(preferred_on=("x86-other",)), "int8", "auto")
    assert elsewhere.name == "onnxruntime" and "not measured faster" in elsewhere.reason
    assert choose_passage_backend(_entry(passed=False, preferred_on=(here,)), "int8", "auto").name == "onnxruntime"
    assert choose_passage_backend(_entry(preferred_on=(here,)), "fp32", "auto").name == "onnxruntime"
    assert choose_passage_backend(None, "int8", "auto").reason.startswith("the artifact has no OpenVINO graph")
    assert choose_passage_backend(_entry(preferred_on=(here,)), "int8", "onnxruntime").name == "onnxruntime"


def test_openvino_asked_for_and_unusable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ArtifactError, match="no OpenVINO graph"):
        choose_passage_backend(None, "int8", "openvino")
    with pytest.raises(ArtifactError, match="failed the export's checks"):
        choose_passage_backend(_entry(passed=False), "int8", "openvino")
    import builtins

    real_import = builtins.__import__

    def no_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(MissingDependencyError, match=r"fastdpr\[openvino\]"):
        choose_passage_backend(_entry(), "int8", "openvino")
    fallback = choose_passage_backend(_entry(preferred_on=(this_cpu().int8_class,)), "int8", "auto")
    assert fallback.name == "onnxruntime" and "not installed" in fallback.reason


def _vectors(index: Path) -> np.ndarray:
    return np.load(index / "vectors.npy")


def test_index_and_append_encode_with_the_recorded_backend(openvino_artifact: Path, pydoc_corpus: Path,
                                                           tmp_path: Path) -> None:
    lines = pydoc_corpus.read_text().splitlines()
    first, more = tmp_path / "first.jsonl", tmp_path / "more.jsonl"
    first.write_text("\n".join(lines[:40]) + "\n")
    more.write_text("\n".join(lines[40:52]) + "\n")
    index = tmp_path / "index"
    result = run_cli(["index", openvino_artifact, first, "--out", index, "--passage-backend", "openvino",
                      "--threads", "1"])
    assert "on OpenVINO" in result.output
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["build"]["passage_backend"]["name"] == "openvino"
    assert "passages on openvino" in manifest["int8_verification"]["where"]
    artifact = Artifact.load(openvino_artifact)
    encoder = artifact.passage_encoder(artifact.passage_backend(requested="openvino"), threads=1)
    rows = [json.loads(line) for line in lines[:52]]
    expected = encoder.encode_passages([(row["title"], row["text"]) for row in rows])
    assert np.array_equal(_vectors(index), expected[:40])
    # The append encodes with the index's backend whatever auto would pick (no --passage-backend given).
    run_cli(["index", openvino_artifact, "--out", index, "--append", more, "--threads", "1"])
    assert np.array_equal(_vectors(index), expected)
    info = run_cli(["info", index]).output
    assert "passages on OpenVINO (16-token buckets)" in info
    # fastdpr serve's POST /embed of passages answers with the runtime that encoded the index: the same bits.
    from fastdpr.search.retriever import Retriever
    from fastdpr.serve.loading import open_passage_encoder

    warnings: list[str] = []
    with Retriever.load(index, threads=1) as retriever:
        served = open_passage_encoder(retriever, None, 1, warnings.append)
    assert isinstance(served, OpenVinoEncoder) and not warnings
    assert np.array_equal(served.encode_passages([(row["title"], row["text"]) for row in rows[:5]]), expected[:5])
    hits = [json.loads(line) for line in
            run_cli(["search", index, "the for statement", "-k", "3", "--json"]).stdout.splitlines()]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]


def test_clear_errors_for_an_openvino_request_that_cannot_run(tiny_artifact: Path, pydoc_corpus: Path,
                                                              tmp_path: Path) -> None:
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "x", "--passage-backend",
                      "openvino"], code=1)
    assert "has no OpenVINO graph" in result.output and not (tmp_path / "x").exists()
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "y", "--shard-size", "10",
                      "--ray", "auto", "--passage-backend", "openvino"], code=2)
    assert "ONNX Runtime workers" in result.output


def test_export_openvino_needs_an_int8_recipe(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path) -> None:
    q, c = tiny_dpr_pair
    result = run_cli(["export", "--question-encoder", q, "--context-encoder", c, "--out", tmp_path / "a",
                      "--quantize", "none", "--openvino"], code=1)
    assert "needs an int8 recipe" in result.output


def test_a_ray_build_refuses_passages_on_openvino(openvino_artifact: Path) -> None:
    require_module("ray", "the ray extra: pip install -e '.[ray]'")
    from fastdpr.cluster.build import ray_backend
    from fastdpr.common.errors import FastDPRError
    from fastdpr.index.build import IndexOptions
    from fastdpr.model.passage_backend import PassageBackend

    make = ray_backend(None)
    with pytest.raises(FastDPRError, match="Ray workers encode on ONNX Runtime"):
        make(Artifact.load(openvino_artifact), "int8", IndexOptions(), PassageBackend("openvino", "asked for"))
