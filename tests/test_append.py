"""Updating an index: `fastdpr index --append CORPUS` and `--delete ID` (issue #24, point 3).

The promise: after appends and deletes, an index holds what a fresh build of the resulting corpus holds
(the current passages less the deleted ones, then the appended ones): the same passages, bit-identical
vectors, and exact search returns the same ids and scores; HNSW recall@100 stays within 0.005 of a fresh
build's. Bad input fails in one line and leaves the index as it was; a kill -9 leaves the old version or
the new one, and the same command run again finishes the update.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli
from doc_blocks import block, shell_commands
from head_start import default_sigint

from fastdpr.common.errors import FastDPRError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.index.ann import ExactSearcher, build_hnsw, extend_hnsw, save_hnsw
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.build_sharded import build_sharded_index
from fastdpr.index.update import PART, update_index, updating_dir
from fastdpr.search.retriever import Retriever

OPTIONS = IndexOptions(threads=1, progress=False)
QUESTIONS = (
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
    "string formatting with the format method",
    "how do I define a class with a metaclass?",
    "what is the difference between is and ==?",
)
K = 50


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return list(pydoc_topic_passages())


def corpus(path: Path, rows: list[Passage]) -> Path:
    write_corpus(path, rows, "jsonl")
    return path


def exact_hits(index: Path) -> list[list[tuple[str, float]]]:
    with Retriever.load(index, exact=True, threads=1) as retriever:
        return [[(hit.id, hit.score) for hit in hits] for hits in retriever.search_batch(list(QUESTIONS), K)]


def directories(index: Path) -> list[Path]:
    manifest = json.loads((index / "manifest.json").read_text())
    return [index / shard["dir"] for shard in manifest["shards"]] if "shards" in manifest else [index]


def stored_ids(index: Path) -> list[str]:
    """Every passage id in label order, shard by shard."""
    ids: list[str] = []
    for directory in directories(index):
        with sqlite3.connect(directory / "passages.sqlite") as conn:
            ids += [pid for (pid,) in conn.execute("SELECT id FROM passages ORDER BY label")]
    return ids


def all_vectors(index: Path) -> np.ndarray:
    return np.concatenate([np.load(d / "vectors.npy") for d in directories(index)])


def assert_same_as_fresh(updated: Path, fresh: Path) -> None:
    assert stored_ids(updated) == stored_ids(fresh)
    assert np.array_equal(all_vectors(updated), all_vectors(fresh))
    assert exact_hits(updated) == exact_hits(fresh)


def fresh_build(tmp: Path, artifact: Path, rows: list[Passage], name: str) -> Path:
    out = tmp / name
    build_index(artifact, corpus(tmp / f"{name}.jsonl", rows), out, "jsonl", OPTIONS)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, passages: list[Passage]) -> Path:
    """An index of all but the last 90 pydoc passages (copied by each test that updates it)."""
    return fresh_build(tmp_path_factory.mktemp("base"), tiny_artifact, passages[:-90], "base")


def copy_of(index: Path, tmp: Path) -> Path:
    target = tmp / "idx"
    shutil.copytree(index, target)
    return target


def test_append_equals_a_fresh_build(tmp_path: Path, tiny_artifact: Path, base: Path,
                                     passages: list[Passage]) -> None:
    index = copy_of(base, tmp_path)
    new = corpus(tmp_path / "new.jsonl", passages[-90:])
    result = run_cli(["index", "--append", new, "--out", index])
    assert "version 2: 90 passages appended, 0 deleted" in result.stdout
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["counts"]["indexed"] == len(passages)
    assert manifest["version"]["number"] == 2 and manifest["version"]["parent"] == 1
    assert manifest["version"]["changes"]["appended"] == 90
    assert "labels" not in manifest["hnsw"]  # nothing deleted: graph labels are rows
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact, passages, "fresh"))
    with Retriever.load(index, threads=1) as retriever:  # the extended graph finds an appended passage
        assert retriever.search_vectors(all_vectors(index)[-1:], 1)[0][0].id == passages[-1].id


def test_delete_and_replace_equal_a_fresh_build(tmp_path: Path, tiny_artifact: Path, base: Path,
                                                passages: list[Passage]) -> None:
    index = copy_of(base, tmp_path)
    rows = passages[:-90]
    gone = [rows[0].id, rows[17].id, rows[300].id, rows[-1].id]
    ids_file = tmp_path / "gone.txt"
    ids_file.write_text("\n".join(gone[2:]) + "\n\n")
    run_cli(["index", "--delete", gone[0], "--delete", gone[1], "--delete-file", ids_file, "--out", index])
    kept = [p for p in rows if p.id not in gone]
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact, kept, "fresh-deleted"))
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["hnsw"]["elements"] == len(rows)  # marked deleted, still in the graph
    with Retriever.load(index, threads=1) as retriever:
        hits = retriever.search_batch(list(QUESTIONS), retriever.count)
        assert all(sorted(h.id for h in row) == sorted(p.id for p in kept) for row in hits)

    # A passage deleted and appended in one command is replaced (re-encoded from its new text).
    replaced = Passage(rows[5].id, "new title", "a completely new text about generators and yield")
    update_index(index, append=corpus(tmp_path / "r.jsonl", [replaced, *passages[-90:]]), delete=[rows[5].id],
                 options=OPTIONS)
    final = [p for p in kept if p.id != rows[5].id] + [replaced, *passages[-90:]]
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact, final, "fresh-replaced"))
    assert json.loads((index / "manifest.json").read_text())["version"]["number"] == 3


def test_deleting_most_of_a_graph_rebuilds_it(tmp_path: Path, tiny_artifact: Path, base: Path,
                                              passages: list[Passage]) -> None:
    index = copy_of(base, tmp_path)
    rows = passages[:-90]
    update_index(index, delete=[p.id for p in rows[::3]], options=OPTIONS)
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["version"]["changes"]["graphs_rebuilt"] == 1 and "labels" not in manifest["hnsw"]
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact,
                                            [p for i, p in enumerate(rows) if i % 3], "fresh-thirds"))


def test_sharded_append_and_delete(tmp_path: Path, tiny_artifact: Path, passages: list[Passage]) -> None:
    rows, new = passages[:550], passages[550:]  # shards of 200: 200, 200, 150
    index = tmp_path / "sharded"
    build_sharded_index(tiny_artifact, corpus(tmp_path / "rows.jsonl", rows), index, "jsonl", OPTIONS, shard_size=200)
    shards_before = json.loads((index / "manifest.json").read_text())["shards"]
    gone = [p.id for p in rows[10:20]]
    update_index(index, append=corpus(tmp_path / "new.jsonl", new), delete=gone, options=OPTIONS)
    manifest = json.loads((index / "manifest.json").read_text())
    shards = manifest["shards"]
    # The first shard lost 10, the last is filled up to 200 and the rest goes into a new shard.
    assert [s["count"] for s in shards] == [190, 200, 200, len(passages) - 600]
    assert manifest["version"]["changes"]["new_shards"] == 1
    assert shards[1]["manifest_sha256"] != shards_before[1]["manifest_sha256"]  # moved: new label offset
    assert os.stat(index / shards[1]["dir"] / "vectors.npy").st_nlink == 1  # linked, and the old version is gone
    result = [p for p in rows if p.id not in gone] + new
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact, result, "fresh"))

    # A shard that loses every passage goes; the shards after it move down.
    second = [p.id for p in result[190:390]]
    update_index(index, delete=second, options=OPTIONS)
    assert [s["count"] for s in json.loads((index / "manifest.json").read_text())["shards"]] == [190, 200, len(
        passages) - 600]
    rest = [p for p in result if p.id not in set(second)]
    assert_same_as_fresh(index, fresh_build(tmp_path, tiny_artifact, rest, "fresh-rest"))
    with Retriever.load(index, threads=1) as retriever:  # HNSW over shards with label maps finds every passage
        assert {h.id for h in retriever.search(QUESTIONS[0], k=len(rest))} == {p.id for p in rest}


@pytest.mark.parametrize("case", ["duplicate in corpus", "already indexed", "unknown id", "other artifact",
                                  "missing index", "everything deleted"])
def test_bad_input_fails_in_one_line_and_leaves_the_index(case: str, tmp_path: Path, tiny_artifact: Path,
                                                         base: Path, passages: list[Passage]) -> None:
    index = copy_of(base, tmp_path)
    before = {p.name: p.read_bytes() for p in [index / "manifest.json", index / "vectors.npy"]}
    new = passages[-90:]
    args: list[Any]
    if case == "duplicate in corpus":
        args, message = ["--append", corpus(tmp_path / "d.jsonl", [*new, new[3]])], "appear more than once"
    elif case == "already indexed":
        args, message = ["--append", corpus(tmp_path / "d.jsonl", [*new, passages[0]])], "are already in"
    elif case == "unknown id":
        args, message = ["--delete", passages[0].id, "--delete", "no-such-id"], "does not hold: 'no-such-id'"
    elif case == "other artifact":
        other = tmp_path / "other-artifact"
        shutil.copytree(tiny_artifact, other)
        data = json.loads((other / "manifest.json").read_text())
        data["created_utc"] = "2000-01-01T00:00:00+00:00"  # another identity, an artifact that loads
        (other / "manifest.json").write_text(json.dumps(data))
        args = [other, "--append", corpus(tmp_path / "n.jsonl", new)]
        message = "is not the artifact"
    elif case == "missing index":
        index = tmp_path / "nothing-here"
        args, message = ["--append", corpus(tmp_path / "n.jsonl", new)], "is not an index"
    else:
        args = ["--delete-file", tmp_path / "all.txt"]
        (tmp_path / "all.txt").write_text("\n".join(p.id for p in passages[:-90]))
        message = "without passages"
    result = run_cli(["index", *args, "--out", index], code=1)
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and message in result.output
    if case == "missing index":
        assert not index.exists()
    else:
        assert {name: (index / name).read_bytes() for name in before} == before
    assert not updating_dir(index).exists()


def test_an_index_with_a_lexical_side_is_refused_in_one_line(tmp_path: Path, tiny_artifact: Path,
                                                              passages: list[Passage]) -> None:
    # BM25 statistics span every passage: until updates rebuild the lexical side, they refuse it (issue #23).
    index = tmp_path / "hybrid"
    build_index(tiny_artifact, corpus(tmp_path / "old.jsonl", passages[:100]), index, "jsonl",
                IndexOptions(threads=1, progress=False, lexical="bm25"))
    before = (index / "manifest.json").read_bytes()
    for args in (["--append", corpus(tmp_path / "new.jsonl", passages[100:110])], ["--delete", passages[0].id]):
        result = run_cli(["index", *args, "--out", index], code=1)
        assert result.output.count("\n") == 1 and "has a lexical side" in result.output, result.output
    assert (index / "manifest.json").read_bytes() == before and not updating_dir(index).exists()


def test_sigkill_mid_append_keeps_the_old_index_and_a_rerun_finishes(tmp_path: Path, tiny_artifact: Path,
                                                                     base: Path, passages: list[Passage]) -> None:
    index = copy_of(base, tmp_path)
    before = (index / "manifest.json").read_bytes()
    big = [Passage(f"{r}/{p.id}", p.title, p.text) for r in range(4) for p in passages]  # 2,760: two parts
    assert len(big) > PART
    new = corpus(tmp_path / "big.jsonl", big)
    command = [sys.executable, "-c", "from fastdpr.cli.main import main; main()", "index", "--append", str(new),
               "--out", str(index), "--batch-size", "1", "--threads", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    first_part = updating_dir(index) / "encoded" / "00000.npy"
    deadline = time.monotonic() + 300
    while not first_part.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the append ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (index / "manifest.json").read_bytes() == before
    with Retriever.load(index, threads=1) as retriever:
        assert retriever.count == len(passages) - 90

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reusing {PART} passages encoded by an interrupted run" in rerun.stderr
    assert stored_ids(index) == [p.id for p in passages[:-90]] + [p.id for p in big]
    assert not updating_dir(index).exists()


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_hnsw_recall_after_append_and_delete_matches_a_fresh_build(tmp_path: Path) -> None:
    """Random vectors (the graph does not care where they come from): 20,000 in 32-d with low intrinsic
    dimension, 1% appended to a graph of the rest, then 2% deleted; recall@100 against exact search,
    each compared with a graph built fresh over the same vectors (one thread: deterministic)."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 32))
    vectors = (rng.normal(size=(20_000, 8)) @ basis + 0.1 * rng.normal(size=(20_000, 32))).astype(np.float32)
    queries = (rng.normal(size=(200, 8)) @ basis).astype(np.float32)
    kw: dict[str, Any] = {"m": 16, "ef_construction": 100, "threads": 1}
    head = 19_800

    def recall(graph: Any, rows: np.ndarray, label_map: np.ndarray | None = None) -> float:
        graph.set_ef(200)
        labels, _ = graph.knn_query(queries, k=100)
        found = labels if label_map is None else label_map[labels]
        truth, _ = ExactSearcher(rows).search(queries, 100)
        return recall_at(found, truth)

    saved = tmp_path / "head.bin"
    save_hnsw(build_hnsw(vectors[:head], **kw), saved)
    appended = extend_hnsw(saved, 32, head, delete=np.zeros(0, dtype=np.int64), vectors=vectors[head:],
                           first_label=head, threads=1)
    assert abs(recall(appended, vectors) - recall(build_hnsw(vectors, **kw), vectors)) <= 0.005

    gone = np.sort(rng.choice(len(vectors), 400, replace=False))
    keep = np.setdiff1d(np.arange(len(vectors)), gone)
    save_hnsw(appended, saved)
    deleted = extend_hnsw(saved, 32, len(vectors), delete=gone, vectors=vectors[:0], first_label=len(vectors),
                          threads=1)
    label_map = np.full(len(vectors), -1, dtype=np.int64)
    label_map[keep] = np.arange(len(keep))
    rest = np.ascontiguousarray(vectors[keep])
    assert abs(recall(deleted, rest, label_map) - recall(build_hnsw(rest, **kw), rest)) <= 0.005


def test_nothing_to_do_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FastDPRError, match="nothing to update"):
        update_index(tmp_path / "idx")
    result = run_cli(["index", "--out", tmp_path / "idx"], code=2)
    assert "give ARTIFACT and CORPUS" in result.output


def test_the_docs_block_works(tmp_path: Path, tiny_artifact: Path, passages: list[Passage]) -> None:
    rows, new = passages[:600], passages[600:]
    revised = [Passage(rows[0].id, "revised", "a revised text on exceptions and cleanup"),
               Passage("brand-new", "new", "a brand new passage on metaclasses")]
    (tmp_path / "retired.txt").write_text(f"{rows[0].id}\n{rows[1].id}\n")
    names = {"dpr-nq": str(tiny_artifact), "psgs_w100.tsv": str(corpus(tmp_path / "rows.jsonl", rows)),
             "wiki-index": str(tmp_path / "wiki"), "new-passages.tsv": str(corpus(tmp_path / "new.jsonl", new)),
             "17": rows[17].id, "4242": rows[242].id, "retired-ids.txt": str(tmp_path / "retired.txt"),
             "revised.tsv": str(corpus(tmp_path / "revised.jsonl", revised))}
    commands = [[names.get(arg, arg) for arg in command]
                for command in shell_commands(block("docs/scale.md: Appending and deleting passages #1").text)]
    assert [command[:2] for command in commands] == [["fastdpr", "index"]] * 4 + [["fastdpr", "info"]]
    for command in commands[:4]:
        run_cli([*command[1:], "--threads", 1])
    info = run_cli(commands[4][1:]).output
    assert "version: 4 (from version 3" in info and "2 appended, 2 deleted" in info
    gone = {rows[0].id, rows[1].id, rows[17].id, rows[242].id}
    result = [p for p in rows if p.id not in gone] + new + revised
    assert_same_as_fresh(tmp_path / "wiki", fresh_build(tmp_path, tiny_artifact, result, "fresh"))


def test_the_help_documents_updates() -> None:
    text = run_cli(["index", "--help"]).output
    assert all(flag in text for flag in ("--append CORPUS", "--delete ID", "--delete-file FILE", "run again"))
