"""Sharded indexes (`fastdpr index --shard-size N`) and resumable builds (`--resume`).

Builds use the tiny random artifact (int8) and one thread. Since issue #19 an int8 passage is encoded
alone (one input per ONNX Runtime call), so its vector does not depend on the passages batched with it;
batch sizes above 1 check that this holds through every build path: sharded, resumed and unsharded
vectors must be equal bit for bit.
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
from conftest import SHARD_SIZE, SHARDED_OPTIONS_KW, count_pydoc_passages, run_cli
from doc_blocks import block, shell_commands
from head_start import default_sigint

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage, read_corpus, write_corpus
from fastdpr.index import build_sharded as sharded_build
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.build_sharded import build_sharded_index
from fastdpr.search.retriever import Retriever

OPTIONS = IndexOptions(**SHARDED_OPTIONS_KW)  # threads=1, batch size 32 (as the session's pydoc_sharded)
# SHARD_SIZE = 200 (conftest): 690 pydoc passages (Python 3.11.7; 687 on 3.11.2): shards of 200, 200, 200 and the rest
PYDOC_PASSAGES = count_pydoc_passages()
assert 600 < PYDOC_PASSAGES <= 800, PYDOC_PASSAGES  # four shards of 200 in every test below
QUESTIONS = (
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
    "string formatting with the format method",
    "how do I define a class with a metaclass?",
    "what is the difference between is and ==?",
)




def manifest_of(index: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    return data


def stored_rows(index: Path) -> list[tuple[int, str]]:
    """(global label, passage id) of every passage of a sharded index, shard by shard."""
    rows: list[tuple[int, str]] = []
    for shard in manifest_of(index)["shards"]:
        with sqlite3.connect(index / shard["dir"] / "passages.sqlite") as conn:
            local = list(conn.execute("SELECT label, id FROM passages ORDER BY label"))
        assert [label for label, _ in local] == list(range(shard["count"]))
        rows.extend((shard["label_offset"] + label, pid) for label, pid in local)
    return rows


def corpus_ids(corpus: Path) -> list[str]:
    return [p.id for p in read_corpus(corpus)]


def results(index: Path, questions: tuple[str, ...] = QUESTIONS, k: int = 10,
            **load: Any) -> list[list[tuple[str, float]]]:
    with Retriever.load(index, threads=1, **load) as retriever:
        return [[(h.id, h.score) for h in hits] for hits in retriever.search_batch(list(questions), k=k)]


def assert_same_results(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> None:
    """Same ids in the same order with scores within 1e-5, except that passages whose scores are within
    1e-5 of each other may trade places: the vectors are identical, but BLAS rounds a dot product
    differently depending on the shape of the matrix it sits in (a shard or the whole corpus)."""
    swaps = 0
    for row_a, row_b in zip(a, b, strict=True):
        assert len(row_a) == len(row_b)
        np.testing.assert_allclose([s for _, s in row_a], [s for _, s in row_b], atol=1e-5, rtol=0)
        scores_b = dict(row_b)
        for (id_a, score_a), (id_b, score_b) in zip(row_a, row_b, strict=True):
            if id_a != id_b:
                swaps += 1
                assert abs(score_a - score_b) <= 1e-5 and abs(scores_b.get(id_a, score_b) - score_b) <= 1e-5, (
                    f"{id_a} ({score_a}) in place of {id_b} ({score_b}): not a tie")
    assert swaps <= sum(len(row) for row in a) // 100, f"{swaps} tied neighbours swapped"


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("unsharded") / "idx"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS)
    return out


@pytest.fixture(scope="module")
def sharded(pydoc_sharded: Path) -> Path:
    """The session's sharded build of the pydoc corpus (conftest; tests/test_ray.py compares with it too)."""
    return pydoc_sharded


# ---------------------------------------------------------------------------------------------------
# Layout and search


def test_a_shard_size_that_does_not_divide_the_corpus_keeps_every_passage_once(sharded: Path,
                                                                              pydoc_corpus: Path) -> None:
    manifest = manifest_of(sharded)
    assert manifest["format"] == "fastdpr-sharded-index"
    assert [s["count"] for s in manifest["shards"]] == [200, 200, 200, 90]
    assert [s["label_offset"] for s in manifest["shards"]] == [0, 200, 400, 600]
    assert [s["dir"] for s in manifest["shards"]] == [f"shards/{i:05d}" for i in range(4)]
    assert manifest["counts"]["indexed"] == PYDOC_PASSAGES
    rows = stored_rows(sharded)
    assert rows == list(enumerate(corpus_ids(pydoc_corpus)))  # every passage once, in corpus order


def test_shards_hold_the_very_vectors_of_an_unsharded_build(sharded: Path, unsharded: Path) -> None:
    # 690 passages are one encode chunk for the unsharded build; the shards of 200 must not split it.
    shards = [np.load(sharded / s["dir"] / "vectors.npy", mmap_mode="r") for s in manifest_of(sharded)["shards"]]
    assert np.array_equal(np.concatenate(shards), np.load(unsharded / "vectors.npy", mmap_mode="r"))


def test_each_shard_is_an_index_and_the_encoder_is_stored_once(sharded: Path, tiny_index: Path) -> None:
    assert (sharded / "encoder" / "model.onnx").is_file()
    assert sorted(p.name for p in (sharded / "shards").iterdir()) == ["00000", "00001", "00002", "00003"]
    for shard in manifest_of(sharded)["shards"]:
        files = sorted(p.name for p in (sharded / shard["dir"]).iterdir())
        assert files == ["hnsw.bin", "manifest.json", "passages.sqlite", "vectors.npy"]
        assert manifest_of(sharded / shard["dir"])["format"] == "fastdpr-index"
    # No encoder per shard: the whole index is the unsharded one's size, not four encoders more.
    size = sum(p.stat().st_size for p in sharded.rglob("*") if p.is_file())
    assert size < 1.2 * sum(p.stat().st_size for p in tiny_index.rglob("*") if p.is_file())


@pytest.mark.parametrize("k", [1, 10, 250, 1000])
def test_exact_search_over_shards_equals_exact_search_over_one_index(sharded: Path, unsharded: Path,
                                                                      k: int) -> None:
    # k=250 exceeds the last shard (90 passages); k=1000 exceeds the corpus: every passage, in order.
    a, b = results(sharded, k=k, exact=True), results(unsharded, k=k, exact=True)
    assert_same_results(a, b)
    assert all(len(row) == min(k, PYDOC_PASSAGES) for row in a)


def test_exact_scores_do_not_depend_on_how_the_corpus_is_split(sharded: Path, unsharded: Path) -> None:
    # Exact search rescores its winners as correctly rounded dot products, so the same passage scores
    # the same bits in a shard and in the whole corpus (a float32 BLAS product would not: it rounds
    # differently for small matrices such as the 90-passage last shard).
    for k in (10, 250, PYDOC_PASSAGES):
        assert results(sharded, k=k, exact=True) == results(unsharded, k=k, exact=True)


def recall_at_10(index: Path, questions: tuple[str, ...], ef: int | None) -> float:
    exact = results(index, questions, k=10, exact=True)
    approx = results(index, questions, k=10, ef=ef)
    for row in approx:  # merged by raw dot product, best first
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    found = sum(len({pid for pid, _ in a} & {pid for pid, _ in e}) for a, e in zip(approx, exact, strict=True))
    return found / (10 * len(questions))


def test_hnsw_over_shards_finds_what_exact_search_finds(sharded: Path, unsharded: Path, pydoc_corpus: Path) -> None:
    # 99 questions: the first words of passages spread over the corpus (and so over every shard). The
    # tiny random model's vectors are structureless, the hard case for HNSW (see fastdpr.index.defaults.DEFAULT_EF).
    passages = list(read_corpus(pydoc_corpus))
    questions = tuple(" ".join(p.text.split()[:12]) for p in passages[::7])
    assert recall_at_10(sharded, questions, ef=None) >= 0.95  # the index's ef (400): measured 1.000
    assert recall_at_10(sharded, questions, ef=100) >= 0.95  # measured 0.992 (unsharded: 0.808)
    # Each shard is searched at ef >= k and contributes its own top k, so at ef = k the merged result
    # finds more than one graph over the whole corpus does (measured 0.746 against 0.515).
    assert recall_at_10(sharded, questions, ef=10) > recall_at_10(unsharded, questions, ef=10)


def test_a_batch_over_shards_is_one_store_lookup_and_bad_k_one_line(sharded: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with Retriever.load(sharded, threads=1) as retriever:
        vectors = retriever.encode_questions(list(QUESTIONS))
        one_by_one = [retriever.search_vectors(vectors[i:i + 1], 10)[0] for i in range(len(QUESTIONS))]
        lookups: list[int] = []
        get = retriever.store.get
        monkeypatch.setattr(retriever.store, "get", lambda labels: lookups.append(len(labels)) or get(labels))
        assert retriever.search_vectors(vectors, 10) == one_by_one
        assert lookups == [10 * len(QUESTIONS)]
        with pytest.raises(FastDPRError) as caught:
            retriever.search(QUESTIONS[0], k=0)
        assert str(caught.value) == "k must be at least 1, got 0"


def test_info_and_search_json_on_a_sharded_index(sharded: Path, unsharded: Path) -> None:
    text = run_cli(["info", sharded]).output
    assert "sharded index" in text and f"{PYDOC_PASSAGES} indexed" in text and "shards: 4 of up to 200 passages" in text
    report = json.loads(run_cli(["info", sharded, "--json"]).output)
    assert report["kind"] == "sharded index" and report["integrity"] == "ok"
    assert len(report["shards"]) == 4 and report["counts"]["indexed"] == PYDOC_PASSAGES
    rows = [json.loads(line) for line in run_cli(["search", sharded, QUESTIONS[0], "--json", "--exact",
                                                  "--threads", 1]).output.splitlines()]
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert_same_results([[(r["id"], r["score"]) for r in rows]], results(unsharded, QUESTIONS[:1], k=10, exact=True))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # Caught at load by the fingerprint (SQLite's header counts writes; the byte is in the last 64 KiB).
        ("alter a passage", "passages.sqlite: fingerprint differs from the manifest"),
        ("flip a vector byte", "vectors.npy: fingerprint differs from the manifest"),
        ("edit the shard manifest", "the manifest of shard shards/00001 differs"),
        ("delete a shard", "shard shards/00001 is missing"),
    ],
)
def test_a_tampered_shard_fails_to_load(tmp_path: Path, sharded: Path, damage: str, message: str) -> None:
    index = tmp_path / "idx"
    shutil.copytree(sharded, index)
    shard = index / "shards" / "00001"
    if damage == "alter a passage":
        with sqlite3.connect(shard / "passages.sqlite") as conn:
            conn.execute("UPDATE passages SET text = 'tampered' WHERE label = 3")
    elif damage == "flip a vector byte":
        data = bytearray((shard / "vectors.npy").read_bytes())
        data[-7] ^= 0x40
        (shard / "vectors.npy").write_bytes(bytes(data))
    elif damage == "edit the shard manifest":
        manifest = manifest_of(shard)
        manifest["counts"]["indexed"] = 199
        (shard / "manifest.json").write_text(json.dumps(manifest))
    else:
        shutil.rmtree(shard)
    with pytest.raises(IndexLoadError, match=message):
        Retriever.load(index)
    assert message in run_cli(["search", index, QUESTIONS[0]], code=1).output
    assert message in run_cli(["info", index], code=1).output


# ---------------------------------------------------------------------------------------------------
# kill -9 and --resume

REPEATS = 6  # 6 x 690 = 4,140 passages (on 3.11.7): a few seconds at --batch-size 4
BIG_SHARD = 1000  # five shards, the last of 140; the kill lands in shard 2, in the middle of encode chunk 0
BIG_OPTIONS = IndexOptions(batch_size=4, threads=1, progress=False)


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    passages = pydoc_topic_passages()
    write_corpus(path, (Passage(f"{r}/{p.id}", p.title, p.text) for r in range(REPEATS) for p in passages), "jsonl")
    return path


def index_command(artifact: Path, corpus: Path, out: Path, *extra: Any) -> list[str]:
    return [sys.executable, "-c", "from fastdpr.cli.main import main; main()", "index", str(artifact), str(corpus),
            "--out", str(out), "--batch-size", "4", "--threads", "1", "--shard-size", str(BIG_SHARD),
            *map(str, extra)]


@pytest.fixture(scope="module")
def clean_big(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, big_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("clean") / "idx"
    build_sharded_index(tiny_artifact, big_corpus, out, "auto", BIG_OPTIONS, shard_size=BIG_SHARD)
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, big_corpus: Path) -> Path:
    """A directory holding ``.idx.building-sharded``: a build killed (-9) with two shards finished and
    the third in progress. Tests copy it before resuming."""
    out = tmp_path_factory.mktemp("interrupted") / "idx"
    proc = subprocess.Popen(index_command(tiny_artifact, big_corpus, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    shards = out.parent / ".idx.building-sharded" / "shards"
    deadline = time.monotonic() + 300
    while not (shards / "00001").is_dir() or not list(shards.glob(".00002.building/passages.sqlite")):
        if proc.poll() is not None:
            pytest.fail(f"the build exited ({proc.returncode}) before it could be interrupted:\n"
                        f"{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the build did not reach its third shard within 300 s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    return out.parent


def copy_interrupted(interrupted: Path, tmp_path: Path) -> Path:
    """A private copy of the interrupted build; returns the ``--out`` to resume."""
    shutil.copytree(interrupted, tmp_path / "work", symlinks=True)
    return tmp_path / "work" / "idx"


def test_kill_9_then_resume_gives_the_clean_build(tmp_path: Path, tiny_artifact: Path, big_corpus: Path,
                                                  interrupted: Path, clean_big: Path) -> None:
    out = copy_interrupted(interrupted, tmp_path)
    staging = out.parent / ".idx.building-sharded"
    finished = sorted(p.name for p in (staging / "shards").iterdir() if not p.name.startswith("."))
    assert finished[:2] == ["00000", "00001"]
    kept = {name: os.stat(staging / "shards" / name / "vectors.npy").st_ino for name in finished}

    resumed = subprocess.run(index_command(tiny_artifact, big_corpus, out, "--resume", "--json"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert not staging.exists()
    manifest = manifest_of(out)
    assert manifest["build"]["resumed_from"] == BIG_SHARD * len(finished)
    assert [s["count"] for s in manifest["shards"]] == [1000, 1000, 1000, 1000, 140]
    # Finished shards were kept, not encoded again; every passage is in the result exactly once.
    assert {name: os.stat(out / "shards" / name / "vectors.npy").st_ino for name in finished} == kept
    assert stored_rows(out) == list(enumerate(corpus_ids(big_corpus)))
    assert manifest["counts"] == manifest_of(clean_big)["counts"]
    for name in (s["dir"] for s in manifest["shards"]):
        assert (out / name / "vectors.npy").read_bytes() == (clean_big / name / "vectors.npy").read_bytes()
    assert results(out, exact=True) == results(clean_big, exact=True)
    assert results(out) == results(clean_big)


def test_ctrl_c_keeps_the_finished_shards_and_says_how_to_resume(tmp_path: Path, tiny_artifact: Path,
                                                                  big_corpus: Path) -> None:
    out = tmp_path / "idx"
    command = index_command(tiny_artifact, big_corpus, out)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    shards = tmp_path / ".idx.building-sharded" / "shards"
    deadline = time.monotonic() + 300
    while not (shards / "00000").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before its first shard"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in err and "Aborted" in err
    assert f"add --resume to continue the build of {out}" in err
    assert not out.exists() and (shards / "00000" / "manifest.json").is_file()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert manifest_of(out)["build"]["resumed_from"] >= BIG_SHARD
    assert stored_rows(out) == list(enumerate(corpus_ids(big_corpus)))


def test_resume_counts_skipped_rows_over_the_whole_corpus(tmp_path: Path, tiny_artifact: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Bad rows before and after the interruption point: the resumed build still counts both.
    corpus = tmp_path / "c.jsonl"
    good = [json.dumps({"id": f"p{i}", "title": "t", "text": f"passage number {i}"}) for i in range(30)]
    corpus.write_text("\n".join([*good[:5], "{bad json", *good[5:25], '{"id": "p1", "text": "dup"}', *good[25:]])
                      + "\n")
    clean = build_sharded_index(tiny_artifact, corpus, tmp_path / "clean", "auto", OPTIONS, shard_size=8)

    # A Ctrl-C as the third shard starts: the two finished shards stay for --resume.
    original = sharded_build._build_shard
    calls = []

    def interrupt_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    out = tmp_path / "idx"
    monkeypatch.setattr(sharded_build, "_build_shard", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        build_sharded_index(tiny_artifact, corpus, out, "auto", OPTIONS, shard_size=8)
    monkeypatch.undo()
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / ".idx.building-sharded" / "shards").iterdir()) == ["00000", "00001"]

    manifest = build_sharded_index(tiny_artifact, corpus, out, "auto", OPTIONS, shard_size=8, resume=True)
    assert manifest["build"]["resumed_from"] == 16
    assert manifest["counts"] == clean["counts"]
    assert manifest["counts"]["skipped"] == {"malformed JSON": 1, "duplicate id": 1}
    assert manifest["counts"]["indexed"] == 30
    assert stored_rows(out) == [(i, f"p{i}") for i in range(30)]
    for shard in manifest["shards"]:  # shard 2 resumed mid-chunk: its vectors are a clean build's
        assert np.array_equal(np.load(out / shard["dir"] / "vectors.npy"),
                              np.load(tmp_path / "clean" / shard["dir"] / "vectors.npy"))


def test_resume_redoes_a_finished_shard_that_fails_its_hash_check(tmp_path: Path, tiny_artifact: Path,
                                                                  big_corpus: Path, interrupted: Path,
                                                                  clean_big: Path) -> None:
    out = copy_interrupted(interrupted, tmp_path)
    vectors = out.parent / ".idx.building-sharded" / "shards" / "00001" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-7] ^= 0x40
    vectors.write_bytes(bytes(data))
    run_cli([*index_command(tiny_artifact, big_corpus, out, "--resume")[3:]])
    assert manifest_of(out)["build"]["resumed_from"] == BIG_SHARD  # shard 00000 only
    assert stored_rows(out) == list(enumerate(corpus_ids(big_corpus)))
    assert (out / "shards" / "00001" / "vectors.npy").read_bytes() == (
        clean_big / "shards" / "00001" / "vectors.npy").read_bytes()


def test_a_build_interrupted_after_its_last_shard_resumes_without_encoding(
        tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: Any) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "idx"
    monkeypatch.setattr(sharded_build, "_publish", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE)
    monkeypatch.undo()
    assert not out.exists()
    manifest = build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", OPTIONS, shard_size=SHARD_SIZE,
                                   resume=True)
    assert manifest["build"]["resumed_from"] == PYDOC_PASSAGES
    assert stored_rows(out) == list(enumerate(corpus_ids(pydoc_corpus)))
    assert sorted(p.name for p in out.iterdir()) == ["encoder", "manifest.json", "shards"]
    assert not list(tmp_path.glob(".idx.*"))


@pytest.mark.parametrize("change", ["corpus", "artifact", "shard size", "batch size", "lexical"])
def test_resume_with_other_inputs_refuses_and_keeps_the_partial_build(
        tmp_path: Path, tiny_artifact: Path, big_corpus: Path, pydoc_corpus: Path, interrupted: Path,
        change: str) -> None:
    out = copy_interrupted(interrupted, tmp_path)
    staging = out.parent / ".idx.building-sharded"
    before = sorted(str(p.relative_to(staging)) for p in staging.rglob("*"))
    artifact, corpus, extra = tiny_artifact, big_corpus, []
    if change == "corpus":
        corpus = pydoc_corpus
    elif change == "artifact":
        artifact = tmp_path / "other-artifact"
        shutil.copytree(tiny_artifact, artifact)
        manifest = manifest_of(artifact)
        manifest["created_utc"] = "another export"  # another artifact identity (its manifest's sha256)
        (artifact / "manifest.json").write_text(json.dumps(manifest))
    elif change == "batch size":
        extra = ["--batch-size", "2"]
    elif change == "lexical":  # issue #23: shards with and without a lexical side must not mix
        extra = ["--lexical", "bm25"]
    args = index_command(artifact, corpus, out, "--resume", *extra)[3:]
    if change == "shard size":
        args[args.index("--shard-size") + 1] = "999"
    result = run_cli(args, code=1)
    expected = {"corpus": "the corpus differs", "artifact": "the artifact differs",
                "shard size": "the settings differ (shard_size was 1000)",
                "batch size": "the settings differ (batch_size was 4)",
                "lexical": "the settings differ (lexical was None)"}[change]
    assert f"cannot resume the build of {out}: {expected}" in result.output
    assert "--force" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) == before


def test_an_interrupted_build_needs_resume_or_force(tmp_path: Path, tiny_artifact: Path, big_corpus: Path,
                                                    pydoc_corpus: Path, interrupted: Path) -> None:
    out = copy_interrupted(interrupted, tmp_path)
    result = run_cli(index_command(tiny_artifact, big_corpus, out)[3:], code=1)
    assert "an interrupted build of" in result.output
    assert "--resume" in result.output and "--force" in result.output
    # --force starts over (here with another corpus) and leaves nothing of the old build.
    run_cli([*index_command(tiny_artifact, pydoc_corpus, out)[3:-2], "--shard-size", 300, "--force"])
    assert [s["count"] for s in manifest_of(out)["shards"]] == [300, 300, 90]
    assert not list(out.parent.glob(".idx.*"))


def test_resume_needs_a_shard_size(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "idx", "--resume"], code=2)
    assert "--shard-size" in result.output


# ---------------------------------------------------------------------------------------------------
# Progress and the docs' commands


def test_the_progress_bar_counts_passages_over_the_whole_corpus(tmp_path: Path, tiny_artifact: Path,
                                                                 pydoc_corpus: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    options = IndexOptions(threads=1, progress=True)
    build_sharded_index(tiny_artifact, pydoc_corpus, tmp_path / "idx", "jsonl", options, shard_size=SHARD_SIZE)
    err = capsys.readouterr().err
    # A total, hence an ETA while running:
    assert f"{PYDOC_PASSAGES}/{PYDOC_PASSAGES}" in err and "passages/s" in err and "100%" in err
    # Quiet when stderr is not a terminal (the default).
    result = run_cli(["index", tiny_artifact, pydoc_corpus, "--out", tmp_path / "quiet", "--shard-size", SHARD_SIZE,
                      "--threads", 1])
    assert "passages/s]" not in result.stderr


def readme_commands() -> list[list[str]]:
    return shell_commands(block("docs/scale.md: Sharded indexes and resumable builds #1").text)


def test_the_readme_commands_work(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    names = {"dpr-nq": str(tiny_artifact), "psgs_w100.tsv": str(pydoc_corpus), "wiki-index": str(tmp_path / "wiki"),
             "1000000": str(SHARD_SIZE)}
    commands = [[names.get(arg, arg) for arg in command] for command in readme_commands()]
    assert [command[:2] for command in commands] == [["fastdpr", "index"], ["fastdpr", "index"],
                                                      ["fastdpr", "info"], ["fastdpr", "search"]]
    # The first build is interrupted (Ctrl-C) as its third shard starts.
    original = sharded_build._build_shard
    calls = []

    def interrupt_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sharded_build, "_build_shard", interrupt_third)
    interrupted = run_cli([*commands[0][1:], "--threads", 1], code=1)
    assert "add --resume to continue" in interrupted.stderr
    monkeypatch.undo()
    resumed = run_cli([*commands[1][1:], "--threads", 1])
    assert f"indexed {PYDOC_PASSAGES} passages" in resumed.output and "in 4 shards" in resumed.output
    assert manifest_of(tmp_path / "wiki")["build"]["resumed_from"] == 2 * SHARD_SIZE
    assert "shards: 4" in run_cli(commands[2][1:]).output
    rows = [json.loads(line) for line in run_cli([*commands[3][1:], "--threads", 1]).output.splitlines()]
    assert len(rows) == 5
