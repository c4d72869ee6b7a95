"""``fastdpr serve`` reloads a republished index (SIGHUP, --watch-index) without failing a request (issue #24).

A real server on a free loopback port serves a "live" index directory that the tests republish the way
``fastdpr index --force`` does (:func:`fastdpr.common.publish.atomic_directory`). Two variants tell the
versions apart in every answer: variant A has every pydoc passage under ids ``a:...`` and fp32 questions,
variant B every second passage under ids ``b:...`` and the int8 question encoder (so a reload also changes
the question encoder, and a question's embedding says which encoder made it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli
from serve_helpers import ServerProcess, metric, require_serve

QUESTIONS = [
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
    "what is a lambda?",
    "how does the with statement work",
    "operator precedence",
]
THREADS = 1
#: Seconds a reload of these tiny indexes may take on a busy shared machine before a test gives up.
RELOAD_DEADLINE = 120.0


def write_variant(source: Path, out: Path, prefix: str, every: int) -> Path:
    """The pydoc corpus with ids ``PREFIX:ID``, every ``every``-th passage."""
    from fastdpr.corpus.reader import Passage, read_corpus, write_corpus

    passages = [Passage(f"{prefix}:{p.id}", p.title, p.text)
                for i, p in enumerate(read_corpus(source, "jsonl")) if i % every == 0]
    write_corpus(out, passages, "jsonl")
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> dict[str, Path]:
    """Index variants "a" (all passages, fp32 questions) and "b" (half of them, int8 questions)."""
    from fastdpr.index.build import IndexOptions, build_index

    root = tmp_path_factory.mktemp("reload-variants")
    built = {}
    for name, every, question_precision in (("a", 1, "fp32"), ("b", 2, "int8")):
        corpus = write_variant(pydoc_corpus, root / f"{name}.jsonl", name, every)
        built[name] = root / name
        build_index(tiny_artifact, corpus, built[name], "jsonl",
                    IndexOptions(precision="fp32", question_precision=question_precision, threads=THREADS,
                                 progress=False))
    return built


def version_of(index: Path) -> str:
    """The version a server reports for ``index``: its manifest's sha256, 16 hex digits."""
    return hashlib.sha256((index / "manifest.json").read_bytes()).hexdigest()[:16]


def publish_copy(source: Path, live: Path) -> None:
    """Republish ``live`` as a copy of ``source``, atomically (as every fastdpr build publishes)."""
    from fastdpr.common.errors import FastDPRError
    from fastdpr.common.publish import atomic_directory

    with atomic_directory(live, True, FastDPRError) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def hangup(server: ServerProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)


def wait_for(server: ServerProcess, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Poll /info until ``done(info)``."""
    import httpx

    deadline = time.monotonic() + RELOAD_DEADLINE
    while time.monotonic() < deadline:
        info: dict[str, Any] = httpx.get(server.url + "/info", timeout=30).json()
        if done(info):
            return info
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{server.output}")


def search(server: ServerProcess, question: str, k: int = 5) -> tuple[str, list[str]]:
    """(X-Index-Version, hit ids) of one search."""
    import httpx

    response = httpx.post(server.url + "/search", json={"question": question, "k": k}, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["X-Index-Version"], [hit["id"] for hit in response.json()["hits"]]


def reference(index: Path, questions: list[str], k: int = 5) -> tuple[list[list[str]], np.ndarray]:
    """Hit ids and question embeddings of ``questions``, each asked alone, in this process."""
    from fastdpr.search.retriever import Retriever

    with Retriever.load(index, threads=THREADS) as retriever:
        ids = [[hit.id for hit in retriever.search(q, k)] for q in questions]
        vectors = np.stack([retriever.encode_questions([q])[0] for q in questions])
    return ids, vectors


def live_copy(tmp_path: Path, source: Path) -> Path:
    live = tmp_path / "live-index"
    publish_copy(source, live)
    return live


def test_sighup_after_a_republish_swaps_the_index(tmp_path: Path, variants: dict[str, Path],
                                                  tiny_artifact: Path) -> None:
    """``fastdpr index --force`` republishes the live index; SIGHUP swaps it in: answers, the question
    encoder, /info's version and the X-Index-Version header all change; a SIGHUP without a republish
    changes nothing."""
    import httpx

    require_serve()
    live = live_copy(tmp_path, variants["a"])
    expected_a, _ = reference(variants["a"], QUESTIONS[:2])
    expected_b, _ = reference(variants["b"], QUESTIONS[:2])
    assert expected_a != expected_b
    with ServerProcess(live, "--threads", THREADS) as server:
        info = httpx.get(server.url + "/info").json()
        assert info["index_version"]["version"] == version_of(variants["a"])
        assert info["index_version"]["generation"] == 1 and info["reload"]["reloads"] == 0
        assert [search(server, q) for q in QUESTIONS[:2]] == [(version_of(variants["a"]), ids) for ids in expected_a]

        corpus_b = variants["b"].parent / "b.jsonl"
        run_cli(["index", tiny_artifact, corpus_b, "--out", live, "--force", "--precision", "fp32",
                 "--question-precision", "int8", "--threads", THREADS])
        assert version_of(live) != version_of(variants["a"])
        hangup(server)
        info = wait_for(server, lambda i: i["index_version"]["generation"] == 2, "the reload")
        assert info["index_version"]["version"] == version_of(live)
        assert info["counts"]["indexed"] == len(corpus_b.read_text(encoding="utf-8").splitlines())
        assert info["reload"]["reloads"] == 1 and info["reload"]["last_reload_failed"] is False
        assert [search(server, q) for q in QUESTIONS[:2]] == [(version_of(live), ids) for ids in expected_b]
        embed = httpx.post(server.url + "/embed", json={"questions": ["what is a lambda?"]})
        assert embed.headers["X-Index-Version"] == version_of(live) and embed.json()["precision"] == "int8"

        hangup(server)  # nothing was republished
        wait_for(server, lambda i: i["reload"]["last_outcome"] == "unchanged", "the second SIGHUP")
        assert httpx.get(server.url + "/info").json()["index_version"]["generation"] == 2
        metrics = httpx.get(server.url + "/metrics").text
        assert metric(metrics, "fastdpr_index_reloads_total", outcome="reloaded") == 1
        assert metric(metrics, "fastdpr_index_reloads_total", outcome="unchanged") == 1
        assert metric(metrics, "fastdpr_index_generation") == 2
    assert "reloaded" in server.output and "is unchanged" in server.output and "Traceback" not in server.output
