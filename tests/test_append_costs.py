"""What an append pays and what it may skip (issue #24: appending 1% costs at most 2% of a full build).

An append relies on the int8 check the index records when that check proves it (same artifact, CPU and
onnxruntime, passed) and runs it otherwise; when nothing is deleted it copies the passage store and
the vectors whole and adds the new rows after them. Either way the result is what a fresh build of the
resulting corpus holds.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastdpr.common.errors import CorpusError, IndexLoadError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.index import update as update_module
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.int8_record import reusable_check, runtime_version
from fastdpr.index.store import PassageStore, PassageStoreWriter
from fastdpr.index.update import update_index
from fastdpr.search.retriever import Retriever

OPTIONS = IndexOptions(threads=1, progress=False)
TAIL = 40


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return list(pydoc_topic_passages())


def corpus(path: Path, rows: list[Passage]) -> Path:
    write_corpus(path, rows, "jsonl")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, passages: list[Passage]) -> dict[str, Path]:
    """A fresh build of all but the last TAIL passages (``head``), and one of all of them (``fresh``)."""
    tmp = tmp_path_factory.mktemp("costs")
    out = {}
    for name, rows in (("head", passages[:-TAIL]), ("fresh", passages)):
        out[name] = tmp / name
        build_index(tiny_artifact, corpus(tmp / f"{name}.jsonl", rows), out[name], "jsonl", OPTIONS)
    return out


def copy_of(index: Path, tmp: Path) -> Path:
    shutil.copytree(index, tmp / "idx")
    return tmp / "idx"


def manifest_of(index: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((index / "manifest.json").read_text())
    return data


def edit_manifest(index: Path, edit: Any) -> None:
    data = manifest_of(index)
    edit(data)
    (index / "manifest.json").write_text(json.dumps(data))


def assert_same_as(updated: Path, fresh: Path) -> None:
    for name in ("vectors.npy",):
        assert np.array_equal(np.load(updated / name), np.load(fresh / name))
    ids = []
    for index in (updated, fresh):
        with sqlite3.connect(index / "passages.sqlite") as conn:
            ids.append([row for row in conn.execute("SELECT label, id, title, text FROM passages ORDER BY label")])
    assert ids[0] == ids[1]
    vectors = np.load(fresh / "vectors.npy")[:10]
    hits = []
    for index in (updated, fresh):
        with Retriever.load(index, exact=True, threads=1) as retriever:
            hits.append([[(h.id, h.score) for h in row] for row in retriever.search_vectors(vectors, 20)])
    assert hits[0] == hits[1]


def ran_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each int8 check an update runs (and still runs it)."""
    calls: list[str] = []
    real = update_module.int8_check_for_build

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("ran")
        return real(*args, **kwargs)

    monkeypatch.setattr(update_module, "int8_check_for_build", counting)
    return calls


def test_an_append_relies_on_the_recorded_int8_check_and_equals_a_fresh_build(
        tmp_path: Path, built: dict[str, Path], passages: list[Passage], monkeypatch: pytest.MonkeyPatch) -> None:
    assert manifest_of(built["head"])["int8_verification"]["passed"]  # the build ran and recorded it
    calls = ran_check(monkeypatch)
    index = copy_of(built["head"], tmp_path)
    update_index(index, append=corpus(tmp_path / "a.jsonl", passages[-TAIL:-TAIL // 2]), options=OPTIONS)
    changes = manifest_of(index)["version"]["changes"]
    assert calls == []
    assert changes["int8_check"]["ran_here"] is False and changes["int8_check"]["relied_on"] == "build"
    assert changes["int8_check"]["onnxruntime"] == runtime_version()
    assert set(changes["write_seconds"]) == {"rows", "graph", "hash"}
    # A second append relies on the record the first one copied into its version.
    update_index(index, append=corpus(tmp_path / "b.jsonl", passages[-TAIL // 2:]), options=OPTIONS)
    assert calls == []
    assert manifest_of(index)["version"]["changes"]["int8_check"]["relied_on"] == "version 2"
    assert_same_as(index, built["fresh"])


@pytest.mark.parametrize("change", ["another onnxruntime", "another cpu", "a failed check", "no record"])
def test_a_record_that_does_not_prove_the_check_runs_it_again(
        change: str, tmp_path: Path, built: dict[str, Path], passages: list[Passage],
        monkeypatch: pytest.MonkeyPatch) -> None:
    index = copy_of(built["head"], tmp_path)

    def edit(data: dict[str, Any]) -> None:
        if change == "another onnxruntime":
            data["versions"]["onnxruntime"] = "0.0.1"
        elif change == "another cpu":
            data["int8_verification"]["cpu"]["int8_class"] = "x86-avx2"
        elif change == "a failed check":
            data["int8_verification"]["passed"] = False
        else:
            del data["int8_verification"]

    edit_manifest(index, edit)
    calls = ran_check(monkeypatch)
    update_index(index, append=corpus(tmp_path / "a.jsonl", passages[-TAIL:]), options=OPTIONS)
    check = manifest_of(index)["version"]["changes"]["int8_check"]
    assert calls == ["ran"]
    assert check["ran_here"] is True and check["verification"]["passed"] is True
    assert check["verification"]["where"] == "index build"
    assert_same_as(index, built["fresh"])


@pytest.mark.parametrize("raw", [{}, {"int8_verification": {"bogus": 1}}, {"int8_verification": "yes"},
                                 {"version": {"number": 2, "changes": {"int8_check": "x"}}},
                                 {"version": {"number": 2, "changes": {"int8_check": {"verification": []}}}}])
def test_a_malformed_record_is_not_relied_on(raw: dict[str, Any]) -> None:
    assert reusable_check(raw) is None


def test_vectors_whose_header_would_grow_are_rewritten(tmp_path: Path, built: dict[str, Path],
                                                       passages: list[Passage],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy leaves room in the header for the count to grow; if it ever did not, the rows move.
    real = update_module._npy_header
    head_count = manifest_of(built["head"])["counts"]["indexed"]
    monkeypatch.setattr(update_module, "_npy_header",
                        lambda count, dim: real(count, dim) + (b"" if count == head_count else b" " * 64))
    index = copy_of(built["head"], tmp_path)
    update_index(index, append=corpus(tmp_path / "a.jsonl", passages[-TAIL:]), options=OPTIONS)
    assert not list(index.glob("*.partial"))
    assert_same_as(index, built["fresh"])


def test_a_store_is_extended_from_a_copy(tmp_path: Path) -> None:
    with PassageStoreWriter(tmp_path / "a.sqlite") as store:
        store.add_many([(0, "p0", "t", "zero"), (1, "p1", "t", "one")])
    with PassageStoreWriter(tmp_path / "b.sqlite", copy_of=tmp_path / "a.sqlite") as store:
        assert store.written == 2
        store.add_many([(2, "p2", "t", "two")])
    with PassageStore(tmp_path / "b.sqlite") as store:
        assert store.labels_of(["p0", "p1", "p2"]) == {"p0": 0, "p1": 1, "p2": 2}
    with PassageStore(tmp_path / "a.sqlite") as store:  # the source is untouched
        assert store.labels_of(["p2"]) == {}
    with PassageStoreWriter(tmp_path / "c.sqlite", copy_of=tmp_path / "a.sqlite") as store, pytest.raises(CorpusError):
        store.add_many([(2, "p1", "t", "again")])  # a duplicate id is refused as in a fresh store
        store.flush()


def test_a_store_of_another_schema_is_not_extended(tmp_path: Path) -> None:
    with PassageStoreWriter(tmp_path / "a.sqlite") as store:
        store.add_many([(0, "p0", "t", "zero")])
    with sqlite3.connect(tmp_path / "a.sqlite") as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(IndexLoadError, match="schema version 99"):
        PassageStoreWriter(tmp_path / "b.sqlite", copy_of=tmp_path / "a.sqlite")


def test_a_build_records_its_store_and_hash_seconds(built: dict[str, Path]) -> None:
    build = manifest_of(built["head"])["build"]
    assert 0 <= build["store_seconds"] <= build["encode_seconds"]
    assert build["hash_seconds"] >= 0
