"""``fastdpr serve`` with ``mode`` (issue #23): lexical and hybrid search over HTTP, on a real server on a free
loopback port, compared with ``Retriever.search`` in process.

The index is fp32 (batch-invariant question embeddings), so a question's hybrid answer, whose dense
candidates come from the batch's one encoder call, equals the in-process answer whatever it was batched with.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import ServerProcess, require_serve
from test_hybrid import PASSAGES

from fastdpr.corpus.reader import write_corpus

THREADS = 1
#: (mode, fusion, weight) as a request gives them (None: left out, the default).
RANKINGS: list[tuple[str | None, str | None, float | None]] = [
    (None, None, None), ("dense", None, None), ("lexical", None, None), ("hybrid", None, None),
    ("hybrid", "rrf", None), ("hybrid", "weighted", 0.25), ("hybrid", "weighted", 1.0),
]
QUESTIONS = ["who wrote Hamlet?", "cats as pets", "столица России", "Brücke Straße",
             "what does a generator yield?", "the of and"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-hybrid-corpus") / "passages.jsonl"
    write_corpus(path, PASSAGES, "jsonl")
    return path


@pytest.fixture(scope="module")
def lexical_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, corpus: Path) -> Path:
    from fastdpr.index.build import IndexOptions, build_index

    out = tmp_path_factory.mktemp("serve-hybrid") / "index"
    build_index(tiny_artifact, corpus, out, "jsonl", IndexOptions(precision="fp32", lexical="bm25", progress=False))
    return out


@pytest.fixture(scope="module")
def server(lexical_index: Path) -> Any:
    require_serve()
    with ServerProcess(lexical_index, "--threads", THREADS, "--max-wait-ms", 20) as running:
        yield running


def _body(question: str, k: int, mode: str | None, fusion: str | None, weight: float | None) -> dict[str, Any]:
    given = {"mode": mode, "fusion": fusion, "weight": weight}
    return {"question": question, "k": k, **{key: value for key, value in given.items() if value is not None}}


def _reference(index: Path, k: int) -> dict[tuple[str, Any], list[tuple[str, float]]]:
    from fastdpr.search.retriever import Retriever

    with Retriever.load(index, threads=THREADS) as retriever:
        return {(question, ranking): [(hit.id, hit.score) for hit in retriever.search(
                    question, k, mode=ranking[0] or "dense", fusion=ranking[1] or "weighted", weight=ranking[2])]
                for question in QUESTIONS for ranking in RANKINGS}


def _hits(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(hit["id"], hit["score"]) for hit in body["hits"]]


def _same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [pid for pid, _ in got] == [pid for pid, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-5, abs=1e-6)


def test_every_mode_answers_what_the_retriever_ranks(server: ServerProcess, lexical_index: Path) -> None:
    import httpx

    expected = _reference(lexical_index, 5)
    for (question, ranking), hits in expected.items():
        posted = httpx.post(server.url + "/search", json=_body(question, 5, *ranking), timeout=60)
        assert posted.status_code == 200, posted.text
        _same(_hits(posted.json()), hits)
        params = {key: value for key, value in _body(question, 5, *ranking).items() if key != "question"}
        got = httpx.get(server.url + "/search", params={"q": question, **params}, timeout=60)
        assert got.status_code == 200, got.text
        _same(_hits(got.json()), hits)
    # Lexical: only passages that share a word; stop words only: none, and hybrid falls back to dense.
    assert expected[("столица России", ("lexical", None, None))][0][0] == "p2"
    assert expected[("the of and", ("lexical", None, None))] == []
    assert [pid for pid, _ in expected[("the of and", ("hybrid", None, None))]] == [
        pid for pid, _ in expected[("the of and", (None, None, None))]]


def test_concurrent_requests_of_every_mode_are_batched_and_each_gets_its_ranking(
        server: ServerProcess, lexical_index: Path) -> None:
    import httpx

    expected = _reference(lexical_index, 3)
    cases = list(expected)

    def ask(case: tuple[str, Any]) -> tuple[dict[str, Any], str]:
        response = httpx.post(server.url + "/search", json=_body(case[0], 3, *case[1]), timeout=60)
        assert response.status_code == 200, response.text
        return response.json(), response.headers["X-Batch-Size"]

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(ask, cases))
    for case, (body, _) in zip(cases, answers, strict=True):
        _same(_hits(body), expected[case])
    assert max(int(batch) for _, batch in answers) > 1  # questions of different modes shared batches
    listed = httpx.post(server.url + "/search", json={"questions": QUESTIONS, "k": 3, "mode": "lexical"}, timeout=60)
    for question, body in zip(QUESTIONS, listed.json()["results"], strict=True):
        _same(_hits(body), expected[(question, ("lexical", None, None))])


BAD = [
    ("POST", {"json": {"question": "cats", "mode": "sparse"}}, "mode must be one of dense, lexical, hybrid"),
    ("POST", {"json": {"question": "cats", "mode": "hybrid", "fusion": "max"}}, "fusion must be one of"),
    ("POST", {"json": {"question": "cats", "mode": "hybrid", "weight": 1.5}}, "weight must be within 0..1"),
    ("POST", {"json": {"question": "cats", "mode": "hybrid", "weight": "heavy"}}, "weight"),
    ("POST", {"json": {"question": " ", "mode": "lexical"}}, "question"),
    ("GET", {"params": {"q": "cats", "mode": "sparse"}}, "mode must be one of"),
    ("GET", {"params": {"q": "cats", "mode": "hybrid", "weight": -0.1}}, "weight must be within 0..1"),
    ("GET", {"params": {"q": "cats", "mode": "hybrid", "weight": "nan"}}, "weight must be within 0..1"),
]


@pytest.mark.parametrize(("method", "kwargs", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_modes_are_a_one_line_422(server: ServerProcess, method: str, kwargs: dict[str, Any],
                                      message: str) -> None:
    import httpx

    response = httpx.request(method, server.url + "/search", timeout=60, **kwargs)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert "Traceback" not in server.output


def test_info_describes_the_lexical_side(server: ServerProcess) -> None:
    import httpx

    lexical = httpx.get(server.url + "/info", timeout=60).json()["lexical"]
    assert lexical["method"] == "bm25" and lexical["k1"] == 0.9 and lexical["b"] == 0.4
    assert lexical["tokenizer"]["stemmer"] == "PyStemmer english" and lexical["stemmer"] == "english"
    assert lexical["passages"] == len(PASSAGES) and lexical["parts"] == 1
    assert 0 < lexical["bytes"] < lexical["index_bytes"]


def test_an_index_without_a_lexical_side_answers_400_in_one_line(tiny_index: Path) -> None:
    import httpx

    require_serve()
    with ServerProcess(tiny_index, "--threads", THREADS) as dense_only:
        for mode in ("lexical", "hybrid"):
            response = httpx.post(dense_only.url + "/search", json={"question": "what is a lambda?", "mode": mode},
                                  timeout=60)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert "no lexical side" in error and "--lexical bm25" in error and "\n" not in error
            got = httpx.get(dense_only.url + "/search", params={"q": "lambda", "mode": mode}, timeout=60)
            assert got.status_code == 400 and got.json()["error"] == error
        assert httpx.get(dense_only.url + "/search", params={"q": "lambda", "mode": "dense"}).status_code == 200
        assert httpx.get(dense_only.url + "/info", timeout=60).json()["lexical"] is None
        assert "Traceback" not in dense_only.output


def test_the_docs_block_works(tmp_path: Path, tiny_artifact: Path, corpus: Path) -> None:
    """docs/serve.md's block, as a bash script, with the tiny artifact and corpus, on a free port."""
    import os
    import socket
    import subprocess
    import sys

    from doc_blocks import block

    require_serve()
    script = block("docs/serve.md: Lexical and hybrid search #1").text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "8733" in script and script.count("INDEX") == 2
    script = (script.replace("8733", str(port)).replace("ARTIFACT", str(tiny_artifact))
              .replace("passages.jsonl", str(corpus)).replace("INDEX", str(tmp_path / "index")))
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTDPR_")}
    env.update({"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    ready, hybrid, lexical, rrf, bad = lines[-5:]
    assert json.loads(ready)["ready"] is True
    assert json.loads(hybrid)["hits"][0]["id"] == "p0" and len(json.loads(hybrid)["hits"]) == 2
    assert [hit["id"] for hit in json.loads(lexical)["hits"]] == ["p0"]  # one passage has those words
    assert rrf.startswith('{"question":"Hamlet","k":10,')
    assert bad.endswith(" 422") and "mode must be one of" in bad
