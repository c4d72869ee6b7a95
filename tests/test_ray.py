"""Ray (`fastdpr[ray]`): sharded builds encoded on a Ray cluster, and shards served by Ray actors.

One local Ray cluster (2 CPUs) for the module; the multi-node test starts its own 2-node cluster after
that one is shut down. Builds use the tiny int8 artifact and one ONNX Runtime thread, as the local
builds of tests/test_shards.py they are compared with.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARD_SIZE, SHARDED_OPTIONS_KW
from doc_blocks import block, shell_commands
from requires import require_module
from test_shards import PYDOC_PASSAGES, QUESTIONS, assert_same_results, manifest_of, results, run_cli, stored_rows

from fastdpr.common.errors import FastDPRError, MissingDependencyError
from fastdpr.index.build import IndexOptions
from fastdpr.index.build_sharded import build_sharded_index, staging_dir
from fastdpr.search.retriever import Retriever

ray = require_module("ray", "the ray extra: pip install -e '.[ray]'")  # fails under CI=true, skips elsewhere

OPTIONS = IndexOptions(**SHARDED_OPTIONS_KW)  # threads=1, batch size 32, as test_shards
# SHARD_SIZE = 200 (conftest): 690 pydoc passages: shards of 200, 200, 200 and 90


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_sharded(pydoc_sharded: Path) -> Path:
    """The local sharded build: the session's one (conftest), which tests/test_shards.py checks too."""
    return pydoc_sharded


@pytest.fixture(scope="module")
def ray_sharded(local_ray: Any, tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path,
                pydoc_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("ray") / "idx"
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--format", "jsonl", "--threads", 1,
             "--shard-size", SHARD_SIZE, "--ray"])
    return out


def shard_vectors(index: Path) -> np.ndarray:
    return np.concatenate([np.load(index / shard["dir"] / "vectors.npy")
                           for shard in manifest_of(index)["shards"]])


def test_a_ray_build_is_the_local_sharded_build(ray_sharded: Path, local_sharded: Path) -> None:
    ray_manifest, local_manifest = manifest_of(ray_sharded), manifest_of(local_sharded)
    assert stored_rows(ray_sharded) == stored_rows(local_sharded)
    assert ray_manifest["shards"] == [  # same layout; shard manifests differ only by timings
        {**shard, "manifest_sha256": ray_shard["manifest_sha256"]}
        for shard, ray_shard in zip(local_manifest["shards"], ray_manifest["shards"], strict=True)]
    assert ray_manifest["counts"] == local_manifest["counts"]
    assert ray_manifest["precision"] == local_manifest["precision"] == "int8"
    assert ray_manifest["int8_verification"]["passed"]
    note = ray_manifest["build"]["ray"]
    assert note["address"] == "local" and note["encoders"] == 2
    assert note["graph_task_threads"] == 2  # the whole (2-CPU) node: nothing else runs while a graph builds
    # Every chunk is encoded at its corpus position by one actor: int8 vectors are bit-identical.
    np.testing.assert_array_equal(shard_vectors(ray_sharded), shard_vectors(local_sharded))
    for shard in ray_manifest["shards"]:
        assert (ray_sharded / shard["dir"] / "hnsw.bin").stat().st_size > 0


def test_a_ray_build_reads_the_corpus_in_blocks_and_equals_the_local_build(
        local_ray: Any, tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path, local_sharded: Path) -> None:
    from fastdpr.cluster.build import ray_backend

    out = tmp_path / "blocks"
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE,
                                   backend=ray_backend("", block_bytes=16384))
    assert manifest["build"]["ray"]["corpus_blocks"] >= pydoc_corpus.stat().st_size // 16384 > 10
    assert stored_rows(out) == stored_rows(local_sharded)
    assert manifest["counts"] == manifest_of(local_sharded)["counts"]
    np.testing.assert_array_equal(shard_vectors(out), shard_vectors(local_sharded))


def test_a_ray_build_of_a_tsv_in_blocks_skips_the_rows_a_local_build_skips(
        local_ray: Any, tmp_path: Path, tiny_artifact: Path) -> None:
    from fastdpr.cluster.build import ray_backend

    corpus = tmp_path / "corpus.tsv"
    rows = [f"{i}\tpassage number {i} about topic {i % 7}\tTitle {i % 5}" for i in range(1, 61)]
    rows[20] = "5\ta duplicate of passage five\tDup"  # line 22
    rows[40] = "41\tonly two columns"  # line 42
    corpus.write_text("id\ttext\ttitle\n" + "\n".join(rows) + "\n", encoding="utf-8")
    local = build_sharded_index(tiny_artifact, corpus, tmp_path / "local", "auto", OPTIONS, shard_size=25)
    on_ray = build_sharded_index(tiny_artifact, corpus, tmp_path / "ray", "auto", OPTIONS, shard_size=25,
                                 backend=ray_backend("", block_bytes=200))
    assert on_ray["build"]["ray"]["corpus_blocks"] > 5
    assert on_ray["counts"]["indexed"] == local["counts"]["indexed"] == 58
    assert on_ray["counts"]["skipped_examples"] == local["counts"]["skipped_examples"] == {
        "duplicate id": [22], "wrong column count": [42]}
    assert stored_rows(tmp_path / "ray") == stored_rows(tmp_path / "local")
    np.testing.assert_array_equal(shard_vectors(tmp_path / "ray"), shard_vectors(tmp_path / "local"))


def test_search_through_ray_actors_equals_local_search(ray_sharded: Path, local_sharded: Path) -> None:
    local = results(local_sharded)
    assert_same_results(results(ray_sharded), local)
    with Retriever.load(local_sharded, threads=1, ray_address="", ray_actors=2) as retriever:
        assert len(retriever.searcher.actors) == 2  # type: ignore[attr-defined]
        ray_hits = [[(h.id, h.score) for h in hits] for hits in retriever.search_batch(list(QUESTIONS), k=10)]
    assert ray_hits == local  # the same files, merged in the same order: equal, not merely close
    exact = results(local_sharded, exact=True, k=PYDOC_PASSAGES)
    with Retriever.load(local_sharded, threads=1, ray_address="", exact=True) as retriever:
        batch = retriever.search_batch(list(QUESTIONS), k=PYDOC_PASSAGES)
        assert [[(h.id, h.score) for h in hits] for hits in batch] == exact


def test_a_ray_build_gets_the_lexical_side_of_a_local_build(local_ray: Any, tmp_path: Path, tiny_artifact: Path,
                                                             pydoc_corpus: Path) -> None:
    # Issue #23: the lexical side is written by the index writer on the driver, for every build path.
    options = ["--format", "jsonl", "--threads", 1, "--shard-size", SHARD_SIZE, "--lexical", "bm25"]
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "local", *options])
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "ray", *options, "--ray"])
    for shard in manifest_of(tmp_path / "ray")["shards"]:
        ray_shard = manifest_of(tmp_path / "ray" / shard["dir"])
        local_shard = manifest_of(tmp_path / "local" / shard["dir"])
        assert ray_shard["lexical"]["passages"] == shard["count"]
        assert {name: ray_shard["files"][name]["sha256"] for name in ray_shard["lexical"]["files"]} == {
            name: local_shard["files"][name]["sha256"] for name in local_shard["lexical"]["files"]}
    with Retriever.load(tmp_path / "ray", threads=1, ray_address="", ray_actors=2) as over_ray, \
            Retriever.load(tmp_path / "local", threads=1) as local:
        for mode in ("lexical", "hybrid"):
            assert [[(h.id, h.score) for h in hits] for hits in over_ray.search_batch(list(QUESTIONS), 10, mode=mode)] \
                == [[(h.id, h.score) for h in hits] for hits in local.search_batch(list(QUESTIONS), 10, mode=mode)]


def test_a_batch_over_ray_is_one_round_trip_with_the_hits_of_each_question_alone(
        local_ray: Any, local_sharded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Retriever.load(local_sharded, threads=1, ray_address="", ray_actors=2) as retriever:
        vectors = retriever.encode_questions(list(QUESTIONS))
        one_by_one = [retriever.search_vectors(vectors[i:i + 1], 10)[0] for i in range(len(QUESTIONS))]
        round_trips: list[int] = []
        lookups: list[int] = []
        ray_get, store_get = ray.get, retriever.store.get
        monkeypatch.setattr(ray, "get", lambda refs, *a, **kw: round_trips.append(len(refs)) or ray_get(refs, *a, **kw))
        monkeypatch.setattr(retriever.store, "get", lambda labels: lookups.append(len(labels)) or store_get(labels))
        batch = retriever.search_vectors(vectors, 10)
        monkeypatch.undo()
        assert batch == one_by_one
        assert round_trips == [2]  # one ray.get, over both actors' answers, for the whole batch
        assert lookups == [10 * len(QUESTIONS)]  # passages read by the driver, once per batch
        with pytest.raises(FastDPRError) as caught:  # refused in the driver: no remote traceback
            retriever.search(QUESTIONS[0], k=0)
        assert str(caught.value) == "k must be at least 1, got 0"


def test_the_search_cli_serves_shards_from_ray(ray_sharded: Path, local_sharded: Path) -> None:
    local = run_cli(["search", local_sharded, QUESTIONS[0], "--json", "--threads", 1]).stdout
    assert run_cli(["search", local_sharded, QUESTIONS[0], "--json", "--threads", 1, "--ray", "auto"]).stdout == local


def test_an_interrupted_ray_build_resumes_at_its_finished_shards(local_ray: Any, tmp_path: Path, tiny_artifact: Path,
                                                                 pydoc_corpus: Path, local_sharded: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr.cluster.build import ray_backend
    from fastdpr.index import build_sharded as sharded_build

    out = tmp_path / "idx"
    real = sharded_build._build_shard
    built: list[int] = []

    def dies_at_third(*args: Any, **kwargs: Any) -> Any:
        if args[1] == 2:
            raise KeyboardInterrupt  # the job dies after two shards
        built.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(sharded_build, "_build_shard", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE,
                            backend=ray_backend(""))
    assert built == [0, 1] and staging_dir(out).is_dir() and not out.exists()
    monkeypatch.setattr(sharded_build, "_build_shard", real)
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE,
                                   resume=True, backend=ray_backend(""))
    assert manifest["build"]["resumed_from"] == 400
    assert stored_rows(out) == stored_rows(local_sharded)
    np.testing.assert_array_equal(shard_vectors(out), shard_vectors(local_sharded))


class _DiesOnce:
    """An encoder actor whose process dies (as if OOM-killed) on its first chunk while ``marker`` exists."""

    marker = ""

    def __init__(self, **kwargs: Any) -> None:
        from fastdpr.cluster.build import _ChunkEncoder

        self._encoder = _ChunkEncoder(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if os.path.exists(self.marker):
            os.unlink(self.marker)
            os._exit(1)
        return self._encoder(batch)


def test_a_ray_worker_that_dies_is_restarted_and_its_chunk_retried(local_ray: Any, tmp_path: Path,
                                                                   tiny_artifact: Path, pydoc_corpus: Path,
                                                                   local_sharded: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.cloudpickle

    from fastdpr.cluster import build as ray_build

    marker = tmp_path / "die-once"
    marker.touch()
    # Ray ships the class by value (workers cannot import the tests), with the marker's path baked in.
    dies = type("DiesOnce", (_DiesOnce,), {"marker": str(marker)})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ray_build, "_ChunkEncoder", dies)
    try:
        out = tmp_path / "idx"
        build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE,
                            backend=ray_build.ray_backend(""))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not marker.exists()  # a worker did die
    assert stored_rows(out) == stored_rows(local_sharded)
    np.testing.assert_array_equal(shard_vectors(out), shard_vectors(local_sharded))


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     tiny_artifact: Path, pydoc_corpus: Path,
                                                     local_sharded: Path) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    out = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--shard-size", SHARD_SIZE, "--ray"], code=1)
    assert "pip install 'fastdpr[ray]'" in result.stderr
    assert not out.exists() and not staging_dir(out).exists()
    result = run_cli(["search", local_sharded, "a question", "--ray", "auto"], code=1)
    assert "pip install 'fastdpr[ray]'" in result.stderr
    with pytest.raises(MissingDependencyError, match=r"fastdpr\[ray\]"):
        Retriever.load(local_sharded, ray_address="")


def test_the_readme_commands_work(local_ray: Any, tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                  local_sharded: Path) -> None:
    names = {"dpr-nq": str(tiny_artifact), "psgs_w100.tsv": str(pydoc_corpus), "wiki-index": str(tmp_path / "wiki"),
             "1000000": str(SHARD_SIZE)}
    text = block("docs/scale.md: Ray (optional: `pip install 'fastdpr[ray]'`) #1").text
    commands = [[names.get(arg, arg) for arg in command] for command in shell_commands(text)]
    assert [command[:2] for command in commands] == [["fastdpr", "index"], ["fastdpr", "search"]]
    assert "in 4 shards" in run_cli(commands[0][1:]).output  # --ray auto: the module's cluster
    assert stored_rows(tmp_path / "wiki") == stored_rows(local_sharded)
    rows = [json.loads(line) for line in run_cli(commands[1][1:]).stdout.splitlines()]
    assert len(rows) == 5


def test_shards_served_across_two_nodes_give_the_local_results(local_ray: Any, local_sharded: Path) -> None:
    from ray.cluster_utils import Cluster

    local = results(local_sharded)
    ray.shutdown()  # the module's single-node cluster; this test runs last (see the fixture order)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        with Retriever.load(local_sharded, threads=1, ray_address=cluster.address) as retriever:
            shards = retriever.searcher  # type: ignore[attr-defined]
            assert len(shards.actors) == 2 and len(set(shards.node_ids)) == 2  # one actor on each node
            assert [len(run) for run in shards.runs] == [2, 2]
            hits = [[(h.id, h.score) for h in hits] for hits in retriever.search_batch(list(QUESTIONS), k=10)]
        assert hits == local
    finally:
        ray.shutdown()
        cluster.shutdown()



def test_a_ray_build_with_compressed_vectors(local_ray: Any, tmp_path: Path, tiny_artifact: Path,
                                             pydoc_corpus: Path, local_sharded: Path) -> None:
    """Issue #22: --vectors on a Ray build goes through the same index writer (the codebook is trained on the
    driver, on the first shard, and reused by the others); search returns exact search's hits."""
    require_module("faiss", "pip install 'fastdpr[compressed]'")
    out = tmp_path / "idx"
    run_cli(["index", tiny_artifact, pydoc_corpus, "--out", out, "--format", "jsonl", "--threads", 1,
             "--shard-size", SHARD_SIZE, "--ray", "--vectors", "int8"])  # shards of 200: too few for pq
    manifest = manifest_of(out)
    assert manifest["vectors"]["search"]["kind"] == "int8" and "ray" in manifest["build"]
    searched = [manifest_of(out / shard["dir"])["vectors"]["search"] for shard in manifest["shards"]]
    assert [s["trained_on"] for s in searched[1:]] == ["the codebook of 00000"] * (len(searched) - 1)
    assert np.array_equal(shard_vectors(out), shard_vectors(local_sharded))
    with Retriever.load(out, check_int8=False) as compressed, Retriever.load(local_sharded, exact=True,
                                                                              check_int8=False) as exact:
        assert [[(h.id, h.score) for h in row] for row in compressed.search_batch(list(QUESTIONS), 10)] == \
               [[(h.id, h.score) for h in row] for row in exact.search_batch(list(QUESTIONS), 10)]
