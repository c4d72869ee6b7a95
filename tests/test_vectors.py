"""Compressed passage vectors (`fastdpr index --vectors fp16|int8|pq`, issue #22): what the index holds,
what search returns (exact dot products of re-ranked candidates), sharded and resumed builds, and the
one-line refusals.

The tiny random artifact (32-d) over the pydoc corpus (~690 passages): fast, and enough passages to
train a PQ codebook (256 centroids per sub-quantizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli
from doc_blocks import block, shell_commands
from requires import require_module

import fastdpr.index.build_sharded as sharded_build
from fastdpr.common.errors import IndexLoadError
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.build_sharded import build_sharded_index
from fastdpr.search.retriever import Retriever

require_module("faiss", "pip install 'fastdpr[compressed]'")

QUESTIONS = ["how do I catch an exception?", "what does yield do?", "default argument values",
             "string formatting", "the with statement", "class definitions and inheritance"]
OPTIONS: dict[str, Any] = {"threads": 1, "progress": False}


def manifest_of(index: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    return data


def top(retriever: Retriever, k: int = 10) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in hits] for hits in retriever.search_batch(QUESTIONS, k)]


@pytest.fixture(scope="module")
def exact_hits(tiny_index: Path) -> list[list[tuple[str, float]]]:
    with Retriever.load(tiny_index, exact=True, check_int8=False) as retriever:
        return top(retriever)


@pytest.mark.parametrize("kind", ["int8", "pq", "fp16"])
def test_compressed_index_is_recorded_and_searches_with_exact_scores(
        tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path, exact_hits: list[list[tuple[str, float]]],
        kind: str) -> None:
    out = tmp_path / "idx"
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--vectors", kind, "--question-precision", "int8",
             "--threads", "1"])
    manifest = manifest_of(out)
    search = manifest["vectors"]["search"]
    assert search["kind"] == kind and search["file"] == "vectors.faiss" and "vectors.faiss" in manifest["files"]
    assert search["factory"].startswith(f"IVF{search['nlist']},")
    assert "file" not in manifest["hnsw"] and not (out / "hnsw.bin").exists()
    assert (out / "vectors.npy").is_file()  # the float32 copy search re-ranks from
    info = run_cli(["info", out]).output
    assert f"vectors: {kind}, faiss {search['factory']} memory-mapped" in info
    with Retriever.load(out, check_int8=False) as retriever:
        hits = top(retriever)
    # Every probed list (nprobe 64 >= nlist here), every candidate re-ranked: exact search's hits and scores.
    assert hits == exact_hits


def test_an_index_without_vector_settings_is_fp32(tiny_index: Path) -> None:
    manifest = manifest_of(tiny_index)
    assert "search" not in manifest["vectors"]  # what every index written before issue #22 holds
    info = json.loads(run_cli(["info", tiny_index, "--json"]).output)
    assert info["vector_search"]["kind"] == "fp32" and info["vector_search"]["search_bytes"] > 0


def test_few_probed_lists_still_return_exact_scores(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                                     tiny_index: Path) -> None:
    out = tmp_path / "idx"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl",
                IndexOptions(**OPTIONS, vectors="pq", nlist=16, nprobe=2, rerank=50))
    vectors = np.load(out / "vectors.npy")
    with Retriever.load(out, check_int8=False) as retriever:
        queries = retriever.encode_questions(QUESTIONS)
        labels, scores = retriever.searcher.search(queries, 10)
    expected = np.einsum("qkd,qd->qk", vectors[labels].astype(np.float64), queries.astype(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)  # the dot products, not the codes' estimates
    assert (np.diff(scores, axis=1) <= 0).all()


def test_sharded_build_shares_the_first_shards_codebook(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                                        exact_hits: list[list[tuple[str, float]]]) -> None:
    out = tmp_path / "sharded"
    # Shards of 300: the last one (~90 passages) is too small to train PQ on its own.
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl",
                                   IndexOptions(**OPTIONS, vectors="pq", question_precision="int8"), shard_size=300)
    assert manifest["vectors"]["search"]["kind"] == "pq"
    shards = [manifest_of(out / shard["dir"])["vectors"]["search"] for shard in manifest["shards"]]
    assert len(shards) == 3 and shards[-1]["trained_on"] == "the codebook of 00000"
    assert {s["factory"] for s in shards} == {shards[0]["factory"]}
    with Retriever.load(out, check_int8=False) as retriever:
        assert top(retriever) == exact_hits
    assert "vectors: pq" in run_cli(["info", out]).output


def interrupted_build(tmp_path: Path, tiny_artifact: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch,
                      **options: Any) -> Path:
    """A sharded build (shards of 300) stopped as its second shard starts; returns its --out."""
    original = sharded_build._build_shard

    def interrupt_second(*args: Any, **kwargs: Any) -> Any:
        if args[1] == 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    out = tmp_path / "idx"
    monkeypatch.setattr(sharded_build, "_build_shard", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        build_sharded_index(tiny_artifact, corpus, out, "jsonl", IndexOptions(**OPTIONS, **options), shard_size=300)
    monkeypatch.undo()
    return out


def test_resume_refuses_another_vectors_setting_and_continues_the_same(
        tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = interrupted_build(tmp_path, tiny_artifact, pydoc_corpus, monkeypatch, vectors="int8")
    for asked, was in (("pq", "vectors was int8"), ("fp32", "vectors was int8")):
        result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--shard-size", 300, "--resume",
                          "--vectors", asked], code=1)
        assert was in result.output and len(result.output.strip().splitlines()) == 1
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(**OPTIONS, vectors="int8"),
                                   shard_size=300, resume=True)
    assert manifest["build"]["resumed_from"] == 300 and manifest["vectors"]["search"]["kind"] == "int8"
    later = manifest_of(out / manifest["shards"][1]["dir"])["vectors"]["search"]
    assert later["trained_on"] == "the codebook of 00000"  # the finished first shard's, read back on resume


def test_resume_of_an_fp32_build_refuses_compressed_vectors(
        tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = interrupted_build(tmp_path, tiny_artifact, pydoc_corpus, monkeypatch)
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--shard-size", 300, "--resume",
                      "--vectors", "int8"], code=1)
    assert "the settings differ (vectors was fp32)" in result.output


def test_pq_m_that_does_not_divide_the_dimension_is_refused_before_encoding(
        tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "idx", "--vectors", "pq",
                      "--pq-m", 5], code=1)
    assert "--pq-m 5 does not divide the embedding dimension 32" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("shard_size", [None, 1000])
def test_too_few_passages_for_a_codebook_leave_nothing_behind(tmp_path: Path, tiny_artifact: Path,
                                                             shard_size: int | None) -> None:
    corpus = tmp_path / "small.jsonl"
    write_corpus(corpus, [Passage(f"p{i}", "t", f"passage number {i}") for i in range(100)], "jsonl")
    out = tmp_path / "out" / "idx"
    args = ["index", tiny_artifact, corpus, "--out", out, "--vectors", "pq", "--threads", "1"]
    result = run_cli([*args, *(["--shard-size", shard_size] if shard_size else [])], code=1)
    assert "too few passages (100) to train a pq codebook: need at least 256" in result.output
    assert not out.parent.exists() or sorted(p.name for p in out.parent.iterdir()) == []


def test_updates_of_a_compressed_index_are_refused(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    out = tmp_path / "idx"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(**OPTIONS, vectors="int8"))
    result = run_cli(["index", "--delete", "x", "--out", out], code=1)
    assert "holds int8 vectors (--vectors int8), which --append and --delete do not update yet" in result.output
    result = run_cli(["index", "--delete", "x", "--out", out, "--vectors", "pq"], code=2)
    assert "--vectors does not apply to --append/--delete" in result.output


def test_a_shard_with_other_vectors_is_refused(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    from conftest import rewrite_hashes

    from fastdpr.common.integrity import sha256_file

    out = tmp_path / "sharded"
    build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(**OPTIONS, vectors="int8"),
                        shard_size=300)
    top_manifest = manifest_of(out)
    del top_manifest["vectors"]  # the top level now says fp32, the shards int8
    (out / "manifest.json").write_text(json.dumps(top_manifest), encoding="utf-8")
    rewrite_hashes(out)
    assert sha256_file(out / top_manifest["shards"][0]["dir"] / "manifest.json")
    with pytest.raises(IndexLoadError, match="holds int8 vectors, the index says fp32"):
        Retriever.load(out, check_int8=False)


def test_the_docs_block_works(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    names = {"dpr-nq": str(tiny_artifact), "psgs_w100.tsv": str(pydoc_corpus), "1000000": "300",
             "wiki-index-int8": str(tmp_path / "int8"), "wiki-index-pq": str(tmp_path / "pq")}
    commands = [[names.get(arg, arg) for arg in command]
                for command in shell_commands(block("docs/scale.md: Compressed vectors #1").text)]
    assert [command[:2] for command in commands] == [["fastdpr", "index"]] * 2 + [["fastdpr", "info"],
                                                                                  ["fastdpr", "search"]]
    for command in commands[:2]:
        assert "indexed" in run_cli([*command[1:], "--threads", 1]).output
    assert "vectors: pq, faiss IVF" in run_cli(commands[2][1:]).output
    hits = [json.loads(line) for line in run_cli(commands[3][1:]).output.splitlines()]
    assert len(hits) == 5 and all(isinstance(hit["score"], float) for hit in hits)


def test_lists_too_small_for_k_are_widened(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                           tiny_index: Path) -> None:
    out = tmp_path / "idx"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(**OPTIONS, vectors="int8", nlist=16, nprobe=1))
    with Retriever.load(out, check_int8=False) as retriever, Retriever.load(tiny_index, exact=True,
                                                                             check_int8=False) as exact:
        queries = retriever.encode_questions(QUESTIONS)
        labels, _ = retriever.searcher.search(queries, 200)  # one list holds ~45 of the ~690 passages
        assert labels.shape == (len(QUESTIONS), 200) and (labels >= 0).all()
        assert len({tuple(row) for row in labels}) == len(QUESTIONS)  # distinct hits per question
        assert retriever.searcher.search(queries, exact.count)[0].shape == (len(QUESTIONS), exact.count)
