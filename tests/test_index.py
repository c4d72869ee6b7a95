"""`fastdpr index`: the index directory it writes, every corpus format, and every way input can be bad.

Everything runs through the CLI (click's CliRunner on ``fastdpr.cli.main.main``) with the tiny random DPR
artifact, so these tests are fast. A user mistake must end in a one-line error and exit code != 0 (or
in skip counts the manifest records), never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli

from fastdpr.common.errors import IndexLoadError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.index.defaults import DEFAULT_EF
from fastdpr.index.manifest import INDEX_FORMAT, INDEX_FORMAT_VERSION
from fastdpr.model.artifact import Artifact
from fastdpr.search.retriever import Retriever

QUESTIONS = (
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
    "string formatting with the format method",
)




def manifest_of(index: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    return data


def stored_rows(index: Path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(index / "passages.sqlite") as conn:
        return list(conn.execute("SELECT label, id, title, text FROM passages ORDER BY label"))


def leftovers(parent: Path, name: str) -> list[Path]:
    """Staging directories an aborted build of ``parent/name`` left behind."""
    return sorted(parent.glob(f".{name}.building-*"))


def hits_of(retriever: Retriever, k: int = 10) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in retriever.search(q, k)] for q in QUESTIONS]


# ---------------------------------------------------------------------------------------------------
# The index directory describes itself


def test_manifest_records_format_artifact_spec_counts_hnsw_and_hashes(tiny_index: Path, tiny_artifact: Path,
                                                                       pydoc_corpus: Path) -> None:
    manifest = manifest_of(tiny_index)
    artifact = Artifact.load(tiny_artifact)
    n = len(pydoc_topic_passages())
    assert manifest["format"] == INDEX_FORMAT == "fastdpr-index"
    assert manifest["format_version"] == INDEX_FORMAT_VERSION == 1
    assert manifest["artifact"]["identity"] == artifact.identity
    assert manifest["spec"] == artifact.spec.to_dict()
    assert manifest["precision"] == "int8"
    assert manifest["corpus"]["format"] == "jsonl"
    assert manifest["counts"] == {"indexed": n, "skipped_total": 0, "skipped": {}, "skipped_examples": {},
                                  "no_title": 0}
    assert manifest["vectors"]["shape"] == [n, artifact.spec.dim]
    assert manifest["hnsw"]["m"] == 32
    assert manifest["hnsw"]["ef_construction"] == 200
    assert manifest["hnsw"]["ef_search"] == DEFAULT_EF
    assert manifest["build"]["passages_per_s"] > 0
    # Every file of the directory is listed with its true size and sha256, and nothing else is listed.
    on_disk = {p.relative_to(tiny_index).as_posix() for p in tiny_index.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    assert {"encoder/model.onnx", "encoder/tokenizer.json", "vectors.npy", "hnsw.bin", "passages.sqlite"} <= on_disk
    for rel, entry in manifest["files"].items():
        data = (tiny_index / rel).read_bytes()
        # The fingerprint: sha256 of the size (8 bytes, little-endian), the first 64 KiB and the last 64 KiB.
        span = 64 * 1024
        sampled = data[:span] + (data[max(span, len(data) - span):] if len(data) > span else b"")
        fingerprint = hashlib.sha256(len(data).to_bytes(8, "little") + sampled).hexdigest()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                         "fingerprint": fingerprint}, rel
    # The question encoder copied into the index is the artifact's, at the index's precision.
    copied = manifest["files"]["encoder/model.onnx"]["sha256"]
    assert copied == hashlib.sha256(artifact.model_path("question", "int8").read_bytes()).hexdigest()
    # The vectors and the store hold the corpus, in order.
    vectors = np.load(tiny_index / "vectors.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (n, artifact.spec.dim)
    assert [row[1] for row in stored_rows(tiny_index)] == [p.id for p in pydoc_topic_passages()]


def test_hnsw_settings_are_recorded_and_ef_search_is_what_search_uses(tmp_path: Path, tiny_artifact: Path,
                                                                       pydoc_corpus: Path) -> None:
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", index, "--hnsw-m", 8,
                      "--ef-construction", 40, "--ef", 37, "--precision", "fp32", "--batch-size", 16,
                      "--threads", 1])
    assert f"indexed {len(pydoc_topic_passages())} passages" in result.stdout
    manifest = manifest_of(index)
    assert manifest["hnsw"] == {"file": "hnsw.bin", "space": "ip", "score": "dot product (1 - hnswlib distance)",
                                "m": 8, "ef_construction": 40, "ef_search": 37}
    assert manifest["precision"] == "fp32"
    assert manifest["build"]["batch_size"] == 16 and manifest["build"]["threads"] == 1

    recorded = Retriever.load(index)
    assert recorded.ef == 37
    narrow = Retriever.load(index, ef=1)
    assert narrow.ef == 1
    # On the tiny random model HNSW at ef=1 misses neighbours that ef=37 finds, so which ef ran is
    # visible in the results; the CLI must use the recorded ef by default and --ef when given.
    questions = [p.title for p in pydoc_topic_passages()[:30]]
    default_hits = {q: [h.id for h in recorded.search(q, 1)] for q in questions}
    narrow_hits = {q: [h.id for h in narrow.search(q, 1)] for q in questions}
    differing = [q for q in questions if default_hits[q] != narrow_hits[q]]
    assert differing, "ef=1 and ef=37 agree everywhere; the test cannot tell which ef the CLI used"
    for q in differing[:3]:
        cli_default = run_cli(["search", index, q, "-k", 1, "--json"]).stdout.splitlines()
        cli_narrow = run_cli(["search", index, q, "-k", 1, "--json", "--ef", 1]).stdout.splitlines()
        assert [json.loads(line)["id"] for line in cli_default] == default_hits[q]
        assert [json.loads(line)["id"] for line in cli_narrow] == narrow_hits[q]


def test_index_is_self_contained_once_the_artifact_is_gone(tmp_path: Path, tiny_artifact: Path,
                                                           pydoc_corpus: Path) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    index = tmp_path / "idx"
    run_cli(["index", artifact, pydoc_corpus, "--out", index])
    with Retriever.load(index) as retriever:
        before = hits_of(retriever)
    cli_before = run_cli(["search", index, QUESTIONS[0], "--json"]).stdout

    shutil.rmtree(artifact)
    moved = tmp_path / "elsewhere" / "moved-idx"
    moved.parent.mkdir()
    index.rename(moved)
    with Retriever.load(moved) as retriever:
        assert hits_of(retriever) == before
    assert run_cli(["search", moved, QUESTIONS[0], "--json"]).stdout == cli_before
    run_cli(["info", moved])


def test_existing_out_needs_force_and_force_replaces_it(tmp_path: Path, tiny_artifact: Path) -> None:
    first = tmp_path / "a.jsonl"
    second = tmp_path / "b.jsonl"
    write_corpus(first, [Passage("a1", "A", "first corpus passage")], "jsonl")
    write_corpus(second, [Passage("b1", "B", "second corpus"), Passage("b2", "B", "another one")], "jsonl")
    index = tmp_path / "idx"
    run_cli(["index", tiny_artifact, first, "--out", index])
    result = run_cli(["index", tiny_artifact, second, "--out", index], code=1)
    assert "already exists" in result.output and "--force" in result.output
    assert [row[1] for row in stored_rows(index)] == ["a1"]  # untouched
    run_cli(["index", tiny_artifact, second, "--out", index, "--force"])
    assert [row[1] for row in stored_rows(index)] == ["b1", "b2"]
    assert manifest_of(index)["counts"]["indexed"] == 2
    assert not leftovers(tmp_path, "idx")


def test_index_json_prints_the_manifest(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", index, "--json"])
    assert json.loads(result.stdout) == manifest_of(index)


# ---------------------------------------------------------------------------------------------------
# Every corpus format round-trips


def roundtrip_passages() -> list[Passage]:
    """Real passages (whitespace flattened, so dpr-tsv can hold them) plus awkward hand-made ones."""
    passages = [Passage(p.id, p.title, " ".join(p.text.split())) for p in pydoc_topic_passages()[:120]]
    return [
        *passages,
        Passage("quote-1", 'A "quoted" title', 'He said "hello", then ""twice"" and left.'),
        Passage("tab-1", "Tabs", "a field\twith a tab inside"),
        Passage("uni-1", "Ünïcode", "Zoë Saldaña — naïve café, 東京, emoji 🙂"),
        Passage("no-title-1", "", "a passage that has no title at all"),
        Passage("42", "Numeric id", "an id that looks like a number"),
        Passage("pad-1", "Padded", "  leading and trailing spaces  "),
    ]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_corpus_format_gives_the_same_index(tmp_path: Path, tiny_artifact: Path, precision: str) -> None:
    passages = roundtrip_passages()
    indexes: dict[str, Path] = {}
    for fmt in ("dpr-tsv", "jsonl", "beir"):
        corpus = tmp_path / f"corpus-{fmt}.txt"  # the name says nothing: detection is by content
        assert write_corpus(corpus, passages, fmt) == len(passages)  # type: ignore[arg-type]
        for given in (fmt, "auto"):
            index = tmp_path / f"idx-{fmt}-{given}"
            run_cli(["index", tiny_artifact, corpus, "--out", index, "--format", given, "--precision", precision,
                     "--threads", 1])
            manifest = manifest_of(index)
            assert manifest["corpus"]["format"] == fmt
            assert manifest["precision"] == precision
            assert manifest["counts"]["indexed"] == len(passages)
            assert manifest["counts"]["skipped_total"] == 0
            assert manifest["counts"]["no_title"] == 1
            indexes[f"{fmt}/{given}"] = index

    expected_rows = [(label, p.id, p.title, p.text) for label, p in enumerate(passages)]
    reference = indexes["jsonl/jsonl"]
    ref_vectors = np.load(reference / "vectors.npy")
    with Retriever.load(reference) as r, Retriever.load(reference, exact=True) as e:
        ref_hnsw = hits_of(r, 20)
        ref_exact = hits_of(e, 20)
    assert len(ref_hnsw[0]) == 20
    for name, index in indexes.items():
        assert stored_rows(index) == expected_rows, name
        # Same passages in the same order: identical vectors (int8 too: the batches are identical).
        assert np.array_equal(np.load(index / "vectors.npy"), ref_vectors), name
        assert manifest_of(index)["files"]["hnsw.bin"] == manifest_of(reference)["files"]["hnsw.bin"], name
        with Retriever.load(index) as r, Retriever.load(index, exact=True) as e:
            assert hits_of(r, 20) == ref_hnsw, name
            assert hits_of(e, 20) == ref_exact, name


# ---------------------------------------------------------------------------------------------------
# Bad corpus rows: skipped and counted, or (--strict) a failure naming the line

BAD_TSV = (
    b"id\ttext\ttitle\n"
    b"1\thello world\tT\n"  # line 2: fine
    b'2\t"broken quote\tX\n'  # line 3: malformed row
    b"3\t\tempty text\n"  # line 4: empty text
    b"4\tonly two columns\n"  # line 5: wrong column count
    b"1\ta duplicate id\tD\n"  # line 6: duplicate id
    b"5\tno title here\t\n"  # line 7: indexed, counted as title-less
    b"6\t\xff\xfe not utf-8\tU\n"  # line 8: invalid UTF-8
    b"7\tfour\tcolumns\there\n"  # line 9: wrong column count
    b"8\tthe last good row\tLast\n"  # line 10: fine
)

BAD_JSONL = (
    b'{"id": "a", "title": "A", "text": "good one"}\n'  # line 1
    b'{"id": "b", "title": "B", "text": \n'  # line 2: malformed JSON
    b'{"title": "C", "text": "no id"}\n'  # line 3: missing id
    b'{"id": "d", "title": 5, "text": "title is a number"}\n'  # line 4: invalid field type
    b'{"id": "e", "title": "E", "text": "   "}\n'  # line 5: empty text
    b'{"id": "a", "title": "A2", "text": "duplicate"}\n'  # line 6: duplicate id
    b'{"id": "f", "text": "no title key"}\n'  # line 7: indexed, title-less
    b'{"id": "g", "title": "G", "text": "bad \xc3\x28 bytes"}\n'  # line 8: invalid UTF-8
    b"\n"  # blank lines are not rows
    b'["not", "an", "object"]\n'  # line 10: malformed JSON
    b'{"id": 7, "title": "H", "text": "integer ids are fine"}\n'  # line 11
)


def test_bad_dpr_tsv_rows_are_skipped_and_counted(tmp_path: Path, tiny_artifact: Path) -> None:
    corpus = tmp_path / "bad.tsv"
    corpus.write_bytes(BAD_TSV)
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, corpus, "--out", index])
    assert "indexed 3 passages" in result.stdout
    assert "skipped 6 rows" in result.stderr
    assert "1 passages have no title" in result.stderr
    counts = manifest_of(index)["counts"]
    assert counts == {
        "indexed": 3,
        "skipped_total": 6,
        "skipped": {"malformed row": 1, "empty text": 1, "wrong column count": 2, "duplicate id": 1,
                    "invalid UTF-8": 1},
        "skipped_examples": {"malformed row": [3], "empty text": [4], "wrong column count": [5, 9],
                             "duplicate id": [6], "invalid UTF-8": [8]},
        "no_title": 1,
    }
    assert stored_rows(index) == [(0, "1", "T", "hello world"), (1, "5", "", "no title here"),
                                  (2, "8", "Last", "the last good row")]
    with Retriever.load(index) as retriever:
        assert {h.id for h in retriever.search("hello", k=10)} == {"1", "5", "8"}


def test_bad_jsonl_rows_are_skipped_and_counted(tmp_path: Path, tiny_artifact: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(BAD_JSONL)
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, corpus, "--out", index])
    assert "indexed 3 passages" in result.stdout and "skipped 7 rows" in result.stderr
    counts = manifest_of(index)["counts"]
    assert counts["skipped"] == {"malformed JSON": 2, "missing id": 1, "invalid field type": 1, "empty text": 1,
                                 "duplicate id": 1, "invalid UTF-8": 1}
    assert counts["skipped_examples"] == {"malformed JSON": [2, 10], "missing id": [3], "invalid field type": [4],
                                          "empty text": [5], "duplicate id": [6], "invalid UTF-8": [8]}
    assert counts["indexed"] == 3 and counts["skipped_total"] == 7 and counts["no_title"] == 1
    assert [row[1:3] for row in stored_rows(index)] == [("a", "A"), ("f", ""), ("7", "H")]


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (BAD_TSV, 3, "malformed row"),
        (b"id\ttext\ttitle\n1\tok\tT\n2\t\tT\n", 3, "empty text"),
        (b"id\ttext\ttitle\n1\tok\tT\n2\tok\n", 3, "wrong column count"),
        (b"id\ttext\ttitle\n1\tok\tT\n1\tagain\tT\n", 3, "duplicate id"),
        (b"id\ttext\ttitle\n1\tok\tT\n2\t\xff\tT\n", 3, "invalid UTF-8"),
        (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "" }\n', 2, "empty text"),
        (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": }\n', 2, "malformed JSON"),
    ],
    ids=["tsv-malformed", "tsv-empty-text", "tsv-columns", "tsv-duplicate", "tsv-utf8", "jsonl-empty-text",
         "jsonl-malformed"],
)
def test_strict_turns_the_first_skip_into_a_failure_naming_the_line(
    tmp_path: Path, tiny_artifact: Path, content: bytes, line: int, reason: str
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    run_cli(["index", tiny_artifact, corpus, "--out", tmp_path / "lenient"])  # without --strict: fine
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, corpus, "--out", index, "--strict"], code=1)
    assert f"line {line}: {reason}" in result.output
    assert "strict" in result.output
    assert not index.exists() and not leftovers(tmp_path, "idx")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n  \n\n", "is empty"),
        (b"id\ttext\ttitle\n", "contains no passages"),
        (b"id\ttext\ttitle\n1\t\tT\n2\tonly two\n", "contains no passages"),
        (b'{"id": "a", "text": ""}\n', "contains no passages"),
        (b"just some words without tabs\n", "cannot detect the format"),
        (b"\xff\xfe\x00garbage\n", "not valid UTF-8"),
    ],
    ids=["zero-bytes", "blank-lines", "header-only", "all-rows-bad", "jsonl-all-bad", "undetectable", "not-utf8"],
)
def test_corpora_with_nothing_to_index_fail_cleanly(tmp_path: Path, tiny_artifact: Path, content: bytes,
                                                    message: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    index = tmp_path / "idx"
    result = run_cli(["index", tiny_artifact, corpus, "--out", index], code=1)
    assert message in result.output
    assert result.output.startswith("Error:")
    assert not index.exists() and not leftovers(tmp_path, "idx")


def test_skip_counts_name_every_reason_on_stderr(tmp_path: Path, tiny_artifact: Path) -> None:
    corpus = tmp_path / "bad.tsv"
    corpus.write_bytes(BAD_TSV)
    result = run_cli(["index", tiny_artifact, corpus, "--out", tmp_path / "idx"])
    for reason in ("malformed row", "empty text", "wrong column count", "duplicate id", "invalid UTF-8"):
        assert reason in result.stderr


def test_invalid_utf8_first_line_is_skipped_when_the_format_is_given(tmp_path: Path, tiny_artifact: Path) -> None:
    corpus = tmp_path / "corpus.tsv"
    corpus.write_bytes(b"0\t\xff bad\tT\n1\tgood text\tT\n")
    run_cli(["index", tiny_artifact, corpus, "--out", tmp_path / "auto"], code=1)
    index = tmp_path / "idx"
    run_cli(["index", tiny_artifact, corpus, "--out", index, "--format", "dpr-tsv"])
    counts = manifest_of(index)["counts"]
    assert counts["indexed"] == 1 and counts["skipped"] == {"invalid UTF-8": 1}
    assert counts["skipped_examples"] == {"invalid UTF-8": [1]}


def test_a_missing_corpus_file_fails(tmp_path: Path, tiny_artifact: Path) -> None:
    result = run_cli(["index", tiny_artifact, tmp_path / "nope.tsv", "--out", tmp_path / "idx"], code=1)
    assert "nope.tsv does not exist" in result.output
    result = run_cli(["index", tiny_artifact, tmp_path, "--out", tmp_path / "idx"], code=1)
    assert "is a directory" in result.output
    assert not (tmp_path / "idx").exists()


def test_a_missing_or_foreign_artifact_fails(tmp_path: Path, pydoc_corpus: Path) -> None:
    index = tmp_path / "idx"
    result = run_cli(["index", tmp_path / "no-artifact", pydoc_corpus, "--out", index], code=1)
    assert "no-artifact" in result.output
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    result = run_cli(["index", empty, pydoc_corpus, "--out", index], code=1)
    assert "manifest.json" in result.output
    (empty / "manifest.json").write_text('{"format": "something-else", "format_version": 1}')
    result = run_cli(["index", empty, pydoc_corpus, "--out", index], code=1)
    assert "not a fastdpr-artifact" in result.output
    (empty / "manifest.json").write_text("{ not json")
    result = run_cli(["index", empty, pydoc_corpus, "--out", index], code=1)
    assert "not valid JSON" in result.output
    assert not index.exists()


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "delete"])
def test_a_corrupted_artifact_fails_its_integrity_check(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                                        damage: str) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    model = artifact / "context" / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    if damage == "flip-byte":
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(bytes(data[: len(data) // 2]))
    else:
        model.unlink()
    index = tmp_path / "idx"
    result = run_cli(["index", artifact, pydoc_corpus, "--out", index], code=1)
    assert "integrity check" in result.output and "context/model.int8.onnx" in result.output
    assert not index.exists() and not leftovers(tmp_path, "idx")


def test_a_precision_the_artifact_lacks_fails(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    for side in manifest["sides"].values():
        side["models"].pop("int8")
    for rel in ("question/model.int8.onnx", "context/model.int8.onnx"):
        manifest["files"].pop(rel)
        (artifact / rel).unlink()
    # A plan that names a model the artifact lacks is refused at load, in one line.
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli(["index", artifact, pydoc_corpus, "--out", tmp_path / "idx"], code=1)
    assert re.search(r"encoding\.precision\.(question|context) is int8, but sides\.\1\.models has no int8 model",
                     result.output)
    manifest["encoding"]["precision"] = {"question": "fp32", "context": "fp32"}  # what an fp32-only export writes
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli(["index", artifact, pydoc_corpus, "--out", tmp_path / "idx", "--precision", "int8"], code=1)
    assert "no int8 model" in result.output
    run_cli(["index", artifact, pydoc_corpus, "--out", tmp_path / "idx"])  # the plan: fp32
    assert manifest_of(tmp_path / "idx")["precision"] == "fp32"
    assert manifest_of(tmp_path / "idx")["question_encoder"]["precision"] == "fp32"
    del manifest["encoding"]  # an artifact exported before the plan was recorded: int8 where it has it
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    run_cli(["index", artifact, pydoc_corpus, "--out", tmp_path / "idx2"])
    assert manifest_of(tmp_path / "idx2")["precision"] == "fp32"


def test_an_unfinished_index_directory_does_not_load(tmp_path: Path, tiny_index: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_index, partial)
    (partial / "manifest.json").unlink()
    with pytest.raises(IndexLoadError, match=r"no manifest\.json"):
        Retriever.load(partial)
