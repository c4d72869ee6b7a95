"""Issue #23: the lexical side of an index (BM25, bm25s), lexical and hybrid search, and their defined
behaviour: non-English text, empty and stop-word-only questions, indexes built without a lexical side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_manifest, run_cli
from doc_blocks import block, shell_commands

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.lexical.bm25 import BM25Index, BM25Settings, best_scores, build_bm25
from fastdpr.lexical.fusion import fuse

PASSAGES = [
    Passage("p0", "Hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    Passage("p1", "Cats", "Cats are small carnivorous mammals kept as pets."),
    Passage("p2", "Москва", "Москва — столица России и крупнейший город страны."),
    Passage("p3", "Straße", "Die Straße führt über die Brücke zum Bahnhof."),
    Passage("p4", "Αθήνα", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας."),
    Passage("p5", "東京", "東京は日本の首都です"),
    Passage("p6", "Python", "The yield statement turns a function into a generator."),
    Passage("p7", "Exceptions", "A finally clause runs cleanup code whether or not an exception was raised."),
]


def _texts() -> list[str]:
    return [f"{p.title}\n{p.text}" for p in PASSAGES]


@pytest.fixture(scope="module")
def bm25(tmp_path_factory: pytest.TempPathFactory) -> BM25Index:
    target = tmp_path_factory.mktemp("bm25") / "lexical"
    built = build_bm25(_texts(), target)
    assert built.passages == len(PASSAGES) and "lexical/vocab.index.json" in built.files
    return BM25Index(target, BM25Settings(), len(PASSAGES))


def _labels(index: BM25Index, question: str, k: int = 3) -> list[int]:
    return index.search([question], k)[0][0].tolist()


# ---------------------------------------------------------------------------------------------------
# BM25 on its own (no model)


def test_english_words_are_stemmed_and_scores_descend(bm25: BM25Index) -> None:
    labels, scores = bm25.search(["which cat is a carnivorous pet?"], 5)[0]
    assert labels[0] == 1 and len(labels) == 1  # "cat" matches "Cats" (stemmed); no other passage shares a word
    labels, scores = bm25.search(["who wrote the tragedy Hamlet, and what does a generator yield?"], 5)[0]
    assert set(labels.tolist()) == {0, 6} and np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize(("question", "label"), [
    ("столица России", 2),             # Cyrillic
    ("Brücke Straße", 3),              # German with ß and umlauts, not folded
    ("πρωτεύουσα Ελλάδας", 4),         # Greek
    ("東京は日本の首都です", 5),        # no spaces: the whole run is one token, so only the same run matches
])
def test_non_english_text_is_matched_word_for_word(bm25: BM25Index, question: str, label: int) -> None:
    assert _labels(bm25, question)[:1] == [label]


def test_scripts_without_spaces_match_only_whole_runs(bm25: BM25Index) -> None:
    assert _labels(bm25, "日本の首都") == []  # a part of the run is another token: documented, not found


@pytest.mark.parametrize("question", ["the of and", "what is it?", "zzzz qqqq"])
def test_a_question_without_indexed_words_has_no_lexical_hits(bm25: BM25Index, question: str) -> None:
    labels, scores = bm25.search([question], 5)[0]
    assert labels.size == 0 and scores.size == 0


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_an_empty_question_is_refused_in_one_line(bm25: BM25Index, question: str) -> None:
    with pytest.raises(FastDPRError, match=r"^the question is empty$"):
        bm25.search([question], 5)


def test_k_is_clamped_to_the_corpus(bm25: BM25Index) -> None:
    labels, _ = bm25.search(["cats hamlet yield finally Москва"], 100)[0]
    assert len(labels) == 5 and len(set(labels.tolist())) == 5


def test_the_selection_is_bm25s_retrieve_with_ties_broken_by_label(bm25: BM25Index) -> None:
    import bm25s

    model = bm25s.BM25.load(str(bm25.directory), mmap=True)
    for question in ("who wrote the tragedy Hamlet, and what does a generator yield?", "Москва столица",
                     "cats hamlet yield finally Москва Brücke"):
        docs, scores = model.retrieve([bm25.tokens([question])[0]], k=len(PASSAGES), show_progress=False)
        keep = scores[0] > 0
        expected = sorted(zip(-scores[0][keep], docs[0][keep], strict=True))
        labels, values = bm25.search([question], len(PASSAGES))[0]
        assert list(zip(-values, labels, strict=True)) == [(s, int(d)) for s, d in expected]
    scores = np.asarray([0.0, 2.0, 1.0, 2.0, 0.0, 1.0, 1.0], np.float32)
    for k, labels in [(1, [1]), (2, [1, 3]), (3, [1, 3, 2]), (4, [1, 3, 2, 5]), (9, [1, 3, 2, 5, 6])]:
        assert best_scores(scores, k)[0].tolist() == labels  # ties at the cut: the smaller labels
    assert best_scores(np.zeros(5, np.float32), 3)[0].size == 0


# ---------------------------------------------------------------------------------------------------
# Fusion


def _hits(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(labels, np.int64), np.asarray(scores, np.float32)


def test_weighted_fusion_normalises_and_fills_missing_with_the_lowest() -> None:
    dense = _hits([1, 2, 3], [0.9, 0.5, 0.1])
    lexical = _hits([3, 4], [12.0, 2.0])
    labels, scores = fuse(dense, lexical, 10, weight=0.5)
    # 1: 0.5*1 + 0 ; 3: 0.5*0 + 0.5*1 ; 2: 0.5*0.5 ; 4: 0 -> ties broken by label (1 before 3)
    assert labels.tolist() == [1, 3, 2, 4]
    assert np.allclose(scores, [0.5, 0.5, 0.25, 0.0])
    assert fuse(dense, lexical, 10, weight=0.0)[0].tolist()[:3] == [1, 2, 3]
    assert fuse(dense, lexical, 10, weight=1.0)[0].tolist()[:1] == [3]  # the rest tie at 0: by label
    assert fuse(dense, lexical, 2, weight=0.5)[0].tolist() == [1, 3]
    assert fuse(dense, lexical, 2)[0].tolist() == [3, 1]  # the default weight (0.6) favours the lexical side


def test_rrf_and_the_dense_fallback() -> None:
    dense = _hits([5, 6, 7], [3.0, 2.0, 1.0])
    empty = _hits([], [])
    for fusion in ("weighted", "rrf"):
        labels, _ = fuse(dense, empty, 10, fusion=fusion)
        assert labels.tolist() == [5, 6, 7]  # no lexical hits: the dense ranking
    labels, scores = fuse(dense, _hits([7, 5], [4.0, 1.0]), 10, fusion="rrf")
    assert labels.tolist() == [5, 7, 6] and scores[0] == pytest.approx(1 / 61 + 1 / 62)
    with pytest.raises(ValueError, match="weight"):
        fuse(dense, empty, 10, weight=1.5)


# ---------------------------------------------------------------------------------------------------
# In an index (the tiny exported model)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hybrid-corpus") / "passages.jsonl"
    write_corpus(path, PASSAGES, "jsonl")
    return path


@pytest.fixture(scope="module")
def lexical_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("hybrid-idx") / "index"
    run_cli(["index", tiny_artifact, corpus, "--out", out, "--lexical", "bm25", "--threads", 1])
    return out


def test_the_lexical_side_is_in_the_manifest_and_its_file_table(lexical_index: Path) -> None:
    manifest = read_manifest(lexical_index)
    entry = manifest["lexical"]
    assert isinstance(entry, dict) and entry["method"] == "bm25" and entry["dir"] == "lexical"
    assert entry["tokenizer"]["stemmer"] == "PyStemmer english" and entry["tokenizer"]["stopwords"] == "en"
    assert entry["bm25"] == {"method": "lucene", "k1": 0.9, "b": 0.4}
    files = manifest["files"]
    assert isinstance(files, dict)
    assert entry["files"] and all(name in files and len(files[name]["sha256"]) == 64 for name in entry["files"])
    assert {"lexical/params.index.json", "lexical/vocab.index.json"} <= set(entry["files"])


def test_modes_search_the_same_passages(lexical_index: Path) -> None:
    from fastdpr.search.retriever import Retriever

    with Retriever.load(lexical_index, threads=1) as retriever:
        lexical = retriever.search("столица России", k=3, mode="lexical")
        assert [hit.id for hit in lexical] == ["p2"] and lexical[0].score > 0
        hybrid = retriever.search("Hamlet Shakespeare", k=8, mode="hybrid")
        assert hybrid[0].id == "p0" and len(hybrid) == len(PASSAGES)  # every dense candidate stays in
        only_dense = retriever.search("Hamlet Shakespeare", k=8, mode="hybrid", weight=0.0)
        assert [hit.id for hit in only_dense] == [hit.id for hit in retriever.search("Hamlet Shakespeare", k=8)]
        dense = retriever.search("the of and", k=8)
        fallback = retriever.search("the of and", k=8, mode="hybrid")
        assert retriever.search("the of and", k=8, mode="lexical") == []
        assert [hit.id for hit in fallback] == [hit.id for hit in dense]  # stop words only: the dense ranking
        rrf = retriever.search_batch(["cats", "yield generator"], k=2, mode="hybrid", fusion="rrf")
        assert [hits[0].id for hits in rrf] == ["p1", "p6"]  # first in BM25, within 8 in dense: first fused
        with pytest.raises(FastDPRError, match=r"^the question is empty$"):
            retriever.search(" ", mode="hybrid")
        with pytest.raises(FastDPRError, match="mode must be one of dense, lexical, hybrid"):
            retriever.search("cats", mode="sparse")


def test_an_index_without_a_lexical_side_says_so_in_one_line(tiny_index: Path) -> None:
    from fastdpr.search.retriever import Retriever

    with Retriever.load(tiny_index, threads=1) as retriever:
        assert retriever.search("what does yield do?", k=3)  # dense works as before
        with pytest.raises(IndexLoadError) as caught:
            retriever.search("what does yield do?", k=3, mode="hybrid")
    message = str(caught.value)
    assert "\n" not in message and "has no lexical side" in message and "--lexical bm25" in message
    result = run_cli(["search", tiny_index, "what does yield do?", "--mode", "lexical"], code=1)
    assert result.stderr.count("\n") == 1 and "--lexical bm25" in result.stderr


def test_a_damaged_lexical_file_fails_the_integrity_check(lexical_index: Path, tmp_path: Path) -> None:
    import shutil

    from fastdpr.search.retriever import Retriever

    copy = tmp_path / "copy"
    shutil.copytree(lexical_index, copy)
    vocab = copy / "lexical" / "vocab.index.json"
    vocab.write_text(vocab.read_text(encoding="utf-8").replace("hamlet", "hamlex"), encoding="utf-8")
    with pytest.raises(IndexLoadError, match=r"failed its integrity check: lexical/vocab\.index\.json"):
        Retriever.load(copy, threads=1, integrity="sha256")


def test_the_cli_modes(lexical_index: Path) -> None:
    rows = [json.loads(line) for line in run_cli(["search", lexical_index, "Brücke Straße", "--mode", "lexical",
                                                  "--json", "--threads", 1]).output.splitlines()]
    assert [row["id"] for row in rows] == ["p3"]
    rows = [json.loads(line) for line in run_cli(["search", lexical_index, "Brücke Straße", "--mode", "hybrid",
                                                  "--weight", "0.9", "--json", "--threads", 1]).output.splitlines()]
    assert rows[0]["id"] == "p3" and len(rows) == len(PASSAGES)
    assert "the question is empty" in run_cli(["search", lexical_index, " ", "--mode", "hybrid"], code=2).stderr


def test_a_sharded_build_has_a_lexical_side_per_shard(tmp_path: Path, tiny_artifact: Path, corpus: Path,
                                                      lexical_index: Path) -> None:
    from fastdpr.search.retriever import Retriever

    out = tmp_path / "sharded"
    run_cli(["index", tiny_artifact, corpus, "--out", out, "--lexical", "bm25", "--shard-size", 3, "--threads", 1])
    top = read_manifest(out)
    assert isinstance(top["lexical"], dict) and top["lexical"]["per_shard"] is True
    for shard in top["shards"]:  # type: ignore[union-attr]
        assert read_manifest(out / shard["dir"])["lexical"]["method"] == "bm25"  # type: ignore[index]
    with Retriever.load(out, threads=1) as sharded, Retriever.load(lexical_index, threads=1) as single:
        for question in ("πρωτεύουσα Ελλάδας", "finally cleanup exception", "cats"):
            # Labels are global, and each distinctive word lives in one shard: the same top passage.
            assert sharded.search(question, k=1, mode="lexical")[0].id == single.search(question, k=1,
                                                                                         mode="lexical")[0].id
        assert [h.id for h in sharded.search("Hamlet", k=8, mode="hybrid")][:1] == ["p0"]


def test_the_docs_block(tmp_path: Path, tiny_artifact: Path, corpus: Path) -> None:
    names = {"ARTIFACT": str(tiny_artifact), "passages.jsonl": str(corpus), "INDEX": str(tmp_path / "index")}
    commands = [[names.get(arg, arg) for arg in command] for command in shell_commands(
        block("docs/hybrid.md: Hybrid retrieval: BM25 and DPR in one index #1").text)]
    assert [command[:2] for command in commands] == [["fastdpr", "index"], ["fastdpr", "search"],
                                                      ["fastdpr", "search"]]
    run_cli([*commands[0][1:], "--threads", 1])
    assert run_cli([*commands[1][1:], "--threads", 1]).output.strip()
    rows = [json.loads(line) for line in run_cli([*commands[2][1:], "--threads", 1]).output.splitlines()]
    assert rows and rows[0]["id"] == "p0"


def test_a_sharded_index_whose_shards_disagree_is_refused(tmp_path: Path, tiny_artifact: Path, corpus: Path) -> None:
    import hashlib

    from fastdpr.search.retriever import Retriever

    out = tmp_path / "sharded"
    run_cli(["index", tiny_artifact, corpus, "--out", out, "--lexical", "bm25", "--shard-size", 5, "--threads", 1])
    top = read_manifest(out)
    assert top["lexical"]["per_shard"] is True  # type: ignore[index]
    # The second shard's manifest says k1 1.2 (and the top level is re-pointed at it): tokenized or scored
    # otherwise than the first, it must not be searched with it.
    shard = out / top["shards"][1]["dir"]  # type: ignore[index]
    data = json.loads((shard / "manifest.json").read_text(encoding="utf-8"))
    data["lexical"]["bm25"]["k1"] = 1.2
    (shard / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    digest = hashlib.sha256((shard / "manifest.json").read_bytes()).hexdigest()
    top["shards"][1]["manifest_sha256"] = digest  # type: ignore[index]
    (out / "manifest.json").write_text(json.dumps(top), encoding="utf-8")
    with pytest.raises(IndexLoadError, match=r"the lexical side of shard shards/00001 differs from the index's"):
        Retriever.load(out, threads=1)


def test_info_describes_the_lexical_side(lexical_index: Path, tiny_index: Path, tmp_path: Path, tiny_artifact: Path,
                                         corpus: Path) -> None:
    text = run_cli(["info", lexical_index]).output
    line = next(line for line in text.splitlines() if line.strip().startswith("lexical:"))
    assert "bm25 (lucene, k1 0.9, b 0.4)" in line and "stemmer PyStemmer english" in line
    assert "stop words en" in line and f"{len(PASSAGES)} passages" in line and "% of the index)" in line
    report = json.loads(run_cli(["info", lexical_index, "--json"]).output)["lexical"]
    manifest = read_manifest(lexical_index)
    files = manifest["files"]
    assert isinstance(files, dict)
    assert report["bytes"] == sum(files[name]["bytes"] for name in manifest["lexical"]["files"])  # type: ignore[index]
    assert report["index_bytes"] == sum(entry["bytes"] for entry in files.values())
    assert report["vocabulary"] == [manifest["lexical"]["vocabulary"]]  # type: ignore[index]
    sharded = tmp_path / "sharded"
    run_cli(["index", tiny_artifact, corpus, "--out", sharded, "--lexical", "bm25", "--shard-size", 5, "--threads", 1])
    report = json.loads(run_cli(["info", sharded, "--json"]).output)["lexical"]
    assert report["parts"] == 2 and report["passages"] == len(PASSAGES) and len(report["vocabulary"]) == 2
    assert "2 shards, vocabulary" in run_cli(["info", sharded]).output
    assert "lexical: none" in run_cli(["info", tiny_index]).output
    assert json.loads(run_cli(["info", tiny_index, "--json"]).output)["lexical"] is None
