"""Issue #19: the same input gives the same vector, bitwise, whatever else is encoded beside it.

Dynamic int8 takes one activation scale per ONNX Runtime call, so before the runtime made one call per
input, a question's embedding moved with its batch companions (9 of 64 SQuAD questions kept their
top-10 alone vs in a batch of 32). These tests compare vectors with ``np.array_equal``, not with a
tolerance: alone, in a length-sorted batch of 32, next to a "loud" input made of rare tokens, with 1 or
2 intra-op threads, in an index (unsharded, sharded, resumed: test_shards checks those equal the
unsharded build; Ray: test_ray checks it equals the local sharded build), and through ``fastdpr serve``
under concurrent clients.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_export

from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.build_sharded import build_sharded_index
from fastdpr.model.artifact import Artifact
from fastdpr.model.encoder import OnnxEncoder
from fastdpr.search.retriever import Retriever

QUESTIONS = [
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
    "what is a lambda?",
    "how does the with statement work",
    "operator precedence",
    "what are keyword-only arguments",
    "how do I format a string with named fields",
    "when was the treaty of westphalia signed",
    "who wrote the iliad",
    "what is the boiling point of water at sea level in kelvin",
    "which river flows through budapest",
]
#: The adversarial companion: rare word pieces and digits whose activations are far larger than a normal
#: question's, so a per-call activation scale shared with it would coarsen everyone else's.
LOUD = " ".join(["qxzv", "0x7fffffff", "ꙮꙮꙮ", "zzzzzz", "¶¶¶", "9999999999"] * 8)


def pydoc_pairs(count: int) -> list[tuple[str, str]]:
    return [(p.title, p.text) for p in pydoc_topic_passages()[:count]]


def alone(encoder: OnnxEncoder, inputs: list[Any]) -> np.ndarray:
    return np.stack([encoder.encode([item])[0] for item in inputs])


def assert_invariant(encoder: OnnxEncoder, inputs: list[Any], loud: Any) -> None:
    """Alone == in one length-sorted batch of 32 == next to ``loud``, bit for bit."""
    single = alone(encoder, inputs)
    batched = encoder.encode(inputs, batch_size=32)
    beside_loud = np.stack([encoder.encode([loud, item], batch_size=32)[1] for item in inputs])
    assert np.array_equal(batched, single), f"{np.abs(batched - single).max()} max difference in a batch"
    assert np.array_equal(beside_loud, single), f"{np.abs(beside_loud - single).max()} max difference beside loud"


def questions_32() -> list[str]:
    return [f"{q} {suffix}".strip() for suffix in ("", "please", "in python") for q in QUESTIONS][:32]


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_question_is_the_same_alone_in_a_batch_and_beside_a_loud_one(tiny_artifact: Path, precision: str) -> None:
    artifact = Artifact.load(tiny_artifact)
    assert_invariant(artifact.encoder("question", precision, threads=1), questions_32(), LOUD)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_passage_is_the_same_alone_in_a_batch_and_beside_a_loud_one(tiny_artifact: Path, precision: str) -> None:
    artifact = Artifact.load(tiny_artifact)
    assert_invariant(artifact.encoder("context", precision, threads=1), pydoc_pairs(32), ("Loud", LOUD * 3))


def test_batching_did_move_int8_embeddings(tiny_artifact: Path) -> None:
    """The control: with calls that hold whole batches (what the runtime did before issue #19), int8
    embeddings do depend on their companions, so the tests above would catch a return to it."""
    artifact = Artifact.load(tiny_artifact)
    encoder = OnnxEncoder(artifact.model_path("question", "int8"), artifact.tokenizer("question"), threads=1,
                          inputs_per_call=None)
    inputs = questions_32()
    beside_loud = np.stack([encoder.encode([LOUD, item], batch_size=32)[1] for item in inputs])
    assert not np.array_equal(beside_loud, alone(encoder, inputs))


def assert_thread_count_invariant(artifact: Artifact, side: str, precision: str | None, inputs: list[Any]) -> None:
    """1 thread == 2 threads, bit for bit: many inputs with 2 threads run as concurrent calls on a
    single-threaded session, a lone input on the 2-thread session."""
    one, two = (artifact.encoder(side, precision, threads=n) for n in (1, 2))  # type: ignore[arg-type]
    expected = one.encode(inputs)
    assert np.array_equal(two.encode(inputs), expected)  # concurrent calls
    assert np.array_equal(alone(two, inputs), expected)  # one call at a time, 2 intra-op threads


@pytest.mark.parametrize("precision", ["int8", "fp32"])
@pytest.mark.parametrize("side", ["question", "context"])
def test_the_vector_does_not_depend_on_the_thread_count(tiny_artifact: Path, side: str, precision: str) -> None:
    """An index is built with every core; ``fastdpr serve`` workers and ``/embed`` run one thread each."""
    artifact = Artifact.load(tiny_artifact)
    inputs: list[Any] = questions_32() if side == "question" else pydoc_pairs(32)
    assert_thread_count_invariant(artifact, side, precision, inputs)


def test_an_encoder_keeps_working_once_its_model_file_is_gone(tiny_artifact: Path, tmp_path: Path) -> None:
    """A Ray worker loads the encoder from a temporary copy and removes it (fastdpr/cluster/build.py): every
    session the encoder uses (the one for concurrent calls too) must be made by ``load_sessions``."""
    import shutil

    artifact = Artifact.load(tiny_artifact)
    copy = tmp_path / "model.int8.onnx"
    shutil.copy2(artifact.model_path("context", "int8"), copy)
    encoder = OnnxEncoder(copy, artifact.tokenizer("context"), threads=2)
    encoder.load_sessions()
    copy.unlink()
    passages = pydoc_pairs(32)
    got = encoder.encode_passages(passages, 8)  # two concurrent single-threaded calls at 2 threads
    expected = OnnxEncoder(artifact.model_path("context", "int8"), artifact.tokenizer("context"),
                           threads=1).encode_passages(passages, 8)
    assert np.array_equal(got, expected)


def index_vectors(index: Path) -> np.ndarray:
    """Every stored vector of an index, in label order (shards concatenated)."""
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    if "shards" in manifest:
        return np.concatenate([index_vectors(index / shard["dir"]) for shard in manifest["shards"]])
    return np.load(index / manifest["vectors"]["file"], allow_pickle=False)


def test_a_stored_vector_is_the_passage_encoded_alone(tmp_path: Path, tiny_artifact: Path, pydoc_corpus: Path) -> None:
    """Unsharded (2 threads, groups of 32) and sharded (1 thread) builds store, for every passage, the
    very vector ``encode_passages`` gives it alone."""
    from fastdpr.corpus.reader import read_corpus

    unsharded, sharded = tmp_path / "unsharded", tmp_path / "sharded"
    build_index(tiny_artifact, pydoc_corpus, unsharded, "jsonl", IndexOptions(threads=2, batch_size=32,
                                                                               progress=False))
    build_sharded_index(tiny_artifact, pydoc_corpus, sharded, "jsonl", IndexOptions(threads=1, progress=False),
                        shard_size=300)
    pairs = [(p.title, p.text) for p in read_corpus(pydoc_corpus)]
    encoder = Artifact.load(tiny_artifact).encoder("context", "int8", threads=1)
    expected = alone(encoder, pairs)
    assert np.array_equal(index_vectors(unsharded), expected)
    assert np.array_equal(index_vectors(sharded), expected)


@pytest.mark.slow
def test_real_minilm_int8_is_invariant(minilm_dpr_artifact: Path) -> None:
    """The real model (MiniLM as a DPR pair), default artifact: the sides as the runtime deploys them."""
    require_export()
    artifact = Artifact.load(minilm_dpr_artifact)
    for side in ("question", "context"):
        encoder = artifact.encoder(side, threads=1)
        if side == "question":
            assert_invariant(encoder, questions_32(), LOUD)
        else:
            assert_invariant(encoder, pydoc_pairs(32), ("Loud", LOUD * 3))
        assert_thread_count_invariant(artifact, side, None, questions_32() if side == "question" else pydoc_pairs(32))


def test_serve_answers_the_same_under_concurrent_clients(tiny_index: Path, pydoc_corpus: Path) -> None:
    """32 clients at once, a loud one among them: every answer equals ``Retriever.search`` asked alone
    (ids and scores exactly), and ``/embed`` gives a passage the vector its index stores."""
    from serve_helpers import ServerProcess, require_serve

    require_serve()
    import httpx

    from fastdpr.corpus.reader import read_corpus

    questions = [*questions_32()[:31], LOUD]
    with Retriever.load(tiny_index, threads=1) as retriever:
        expected = [[(h.id, h.score) for h in retriever.search(q, 5)] for q in questions]
    with ServerProcess(tiny_index, "--threads", 1, "--workers", 2, "--max-wait-ms", 20) as server:

        def ask(question: str) -> list[tuple[str, float]]:
            response = httpx.post(server.url + "/search", json={"question": question, "k": 5}, timeout=60)
            assert response.status_code == 200, response.text
            return [(hit["id"], hit["score"]) for hit in response.json()["hits"]]

        with ThreadPoolExecutor(len(questions)) as pool:
            for _ in range(2):
                assert list(pool.map(ask, questions)) == expected
        passages = list(read_corpus(pydoc_corpus))[:4]
        body = {"passages": [{"title": p.title, "text": p.text} for p in passages]}
        embedded = httpx.post(server.url + "/embed", json=body, timeout=60).json()["embeddings"]
    assert np.array_equal(np.array(embedded, dtype=np.float32), index_vectors(tiny_index)[:4])
