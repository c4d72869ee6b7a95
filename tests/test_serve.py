"""``fastdpr serve``: a real server on a free loopback port (no mocked HTTP layer), on tiny indexes.

Result equality and int8: dynamic int8 quantizes activations with scales over the whole batch, so an
int8 question's embedding depends on the other questions of its ONNX Runtime call. A request answered
alone (batch of one) or a list request (the same batch ``Retriever.search_batch`` forms) equals the
in-process call exactly; questions batched with other requests are compared on an fp32 index, which is
batch-invariant up to float rounding (hence a score tolerance).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
    "what are keyword-only arguments",
    "how do I format a string with named fields",
]
#: Per-question thread budget of every server and reference here: ORT's float sums depend on the threads.
THREADS = 1


@pytest.fixture(scope="module")
def fp32_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> Path:
    """The pydoc corpus indexed with the tiny artifact's fp32 encoders (batch-invariant embeddings)."""
    from fastdpr.index.build import IndexOptions, build_index

    out = tmp_path_factory.mktemp("idx") / "tiny-pydoc-fp32"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(precision="fp32", progress=False))
    return out


@pytest.fixture(scope="module")
def fp32_server(fp32_index: Path) -> Any:
    """Batching made easy to observe: the first question of a batch waits up to 50 ms for others."""
    require_serve()
    with ServerProcess(fp32_index, "--threads", THREADS, "--max-wait-ms", 50, "--max-body", 4096) as server:
        yield server


@pytest.fixture(scope="module")
def int8_server(tiny_index: Path) -> Any:
    require_serve()
    with ServerProcess(tiny_index, "--threads", THREADS) as server:
        yield server


def hits_of(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(hit["id"], hit["score"]) for hit in body["hits"]]


def reference(index: Path, questions: list[str], k: int) -> list[list[tuple[str, float]]]:
    from fastdpr.search.retriever import Retriever

    with Retriever.load(index, threads=THREADS) as retriever:
        return [[(hit.id, hit.score) for hit in retriever.search(q, k)] for q in questions]


def test_single_requests_equal_retriever_search(int8_server: ServerProcess, tiny_index: Path) -> None:
    import httpx

    expected = reference(tiny_index, QUESTIONS[:4], 7)
    with httpx.Client(base_url=int8_server.url) as client:
        for question, want in zip(QUESTIONS[:4], expected, strict=True):
            posted = client.post("/search", json={"question": question, "k": 7})
            got = client.get("/search", params={"q": question, "k": 7})
            assert posted.status_code == 200 and got.status_code == 200
            # Alone in its batch, an int8 question is encoded exactly as Retriever.search encodes it.
            assert hits_of(posted.json()) == want
            assert hits_of(got.json()) == want
            assert [h["rank"] for h in posted.json()["hits"]] == [1, 2, 3, 4, 5, 6, 7]
            assert posted.json()["truncated"] is False
            assert posted.headers["x-batch-size"] == "1"
            assert re.fullmatch(r"queue;dur=[0-9.]+, infer;dur=[0-9.]+", posted.headers["server-timing"])


def test_list_request_equals_search_batch(int8_server: ServerProcess, tiny_index: Path) -> None:
    import httpx

    from fastdpr.search.retriever import Retriever

    with Retriever.load(tiny_index, threads=THREADS) as retriever:
        expected = [[(h.id, h.score) for h in hits] for hits in retriever.search_batch(QUESTIONS, 5)]
    response = httpx.post(int8_server.url + "/search", json={"questions": QUESTIONS, "k": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["question"] for r in results] == QUESTIONS
    assert [hits_of(r) for r in results] == expected


def test_concurrent_requests_are_batched_and_each_caller_gets_its_answers(fp32_server: ServerProcess,
                                                                          fp32_index: Path) -> None:
    import httpx

    before = httpx.get(fp32_server.url + "/metrics").text
    questions = QUESTIONS * 3  # 24 requests at once
    expected = reference(fp32_index, QUESTIONS, 10)

    def ask(question: str) -> dict[str, Any]:
        response = httpx.post(fp32_server.url + "/search", json={"question": question, "k": 10}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(ask, questions))
    for question, answer in zip(questions, answers, strict=True):
        assert answer["question"] == question
        want = expected[QUESTIONS.index(question)]
        assert [hit_id for hit_id, _ in hits_of(answer)] == [hit_id for hit_id, _ in want]
        assert [score for _, score in hits_of(answer)] == pytest.approx([score for _, score in want], abs=1e-4)
    after = httpx.get(fp32_server.url + "/metrics").text
    batches = metric(after, "fastdpr_batch_questions_count") - metric(before, "fastdpr_batch_questions_count")
    alone = (metric(after, "fastdpr_batch_questions_bucket", le="1.0")
             - metric(before, "fastdpr_batch_questions_bucket", le="1.0"))
    batched = (metric(after, "fastdpr_batch_questions_sum") - metric(before, "fastdpr_batch_questions_sum"))
    assert batched == 24
    assert batches < 24, "24 concurrent questions were encoded one call each"
    assert batches - alone >= 1, "no batch held more than one question"


def test_embed_questions_and_passages(fp32_server: ServerProcess, fp32_index: Path, tiny_artifact: Path) -> None:
    import httpx
    import numpy as np

    from fastdpr.model.artifact import Artifact
    from fastdpr.search.retriever import Retriever

    with Retriever.load(fp32_index, threads=THREADS) as retriever:
        want_q = retriever.encode_questions(QUESTIONS[:2])
    passages = [{"title": "Exceptions", "text": "The try statement specifies handlers."}, {"text": "No title here."}]
    want_p = Artifact.load(tiny_artifact).encoder("context", "fp32", threads=THREADS).encode_passages(
        [("Exceptions", "The try statement specifies handlers."), ("", "No title here.")])
    got_q = httpx.post(fp32_server.url + "/embed", json={"questions": QUESTIONS[:2]}).json()
    got_p = httpx.post(fp32_server.url + "/embed", json={"passages": passages}).json()
    assert got_q["side"] == "question" and got_q["dim"] == 32 and got_q["precision"] == "fp32"
    assert np.allclose(np.array(got_q["embeddings"]), want_q, atol=1e-5)
    assert got_p["side"] == "context" and got_p["truncated"] == [False, False]
    assert np.allclose(np.array(got_p["embeddings"]), want_p, atol=1e-5)


def test_a_long_question_is_truncated_and_says_so(fp32_server: ServerProcess) -> None:
    import httpx

    response = httpx.post(fp32_server.url + "/search", json={"question": "why " * 300, "k": 3})
    assert response.status_code == 200
    assert response.json()["truncated"] is True
    assert response.json()["tokens"] == 64  # the spec's question_max_length, [CLS] and [SEP] included
    assert metric(httpx.get(fp32_server.url + "/metrics").text, "fastdpr_truncated_questions_total") >= 1


def test_health_ready_info_metrics_schema_page(fp32_server: ServerProcess) -> None:
    import httpx

    with httpx.Client(base_url=fp32_server.url) as client:
        assert client.get("/health").json() == {"status": "alive"}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["passages"] == 690
        info = client.get("/info").json()
        assert info["kind"] == "index" and info["precision"] == "fp32" and info["counts"]["indexed"] == 690
        assert info["serve"]["max_batch"] == 32 and info["serve"]["threads"] == THREADS
        assert info["batching"] == {"max_batch": 32, "max_wait_ms": 50.0, "max_queue": 256}
        schema = client.get("/openapi.json").json()
        assert {"/search", "/embed", "/health", "/ready", "/info", "/metrics"} <= set(schema["paths"])
        assert set(schema["paths"]["/search"]) == {"get", "post"}
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="question"' in page.text
        metrics = client.get("/metrics").text
        assert metric(metrics, "fastdpr_requests_total", endpoint="/health", status="200") >= 1
        assert "fastdpr_request_seconds_bucket" in metrics and "fastdpr_queue_questions" in metrics


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    # (id, method + path, httpx arguments, status)
    ("empty-question", "POST /search", {"json": {"question": "", "k": 5}}, 422),
    ("blank-question", "POST /search", {"json": {"question": "  \n\t ", "k": 5}}, 422),
    ("k-zero", "POST /search", {"json": {"question": "q", "k": 0}}, 422),
    ("k-negative", "POST /search", {"json": {"question": "q", "k": -3}}, 422),
    ("k-above-max", "POST /search", {"json": {"question": "q", "k": 101}}, 422),
    ("k-string", "POST /search", {"json": {"question": "q", "k": "10"}}, 422),
    ("k-float", "POST /search", {"json": {"question": "q", "k": 1.5}}, 422),
    ("question-number", "POST /search", {"json": {"question": 5}}, 422),
    ("both-forms", "POST /search", {"json": {"question": "a", "questions": ["b"]}}, 422),
    ("neither-form", "POST /search", {"json": {"k": 3}}, 422),
    ("empty-list", "POST /search", {"json": {"questions": []}}, 422),
    ("empty-in-list", "POST /search", {"json": {"questions": ["ok", ""]}}, 422),
    ("unknown-field", "POST /search", {"json": {"question": "q", "top_k": 3}}, 422),
    ("json-array", "POST /search", {"json": [1, 2]}, 422),
    ("not-json", "POST /search", {"content": b"question=hello", "headers": {"content-type": "application/json"}}, 400),
    ("truncated-json", "POST /search", {"content": b'{"question": "a', "headers": {"content-type": "application/json"}},
     400),
    ("non-utf8-body", "POST /search",
     {"content": b'{"question": "caf\xe9 \xff"}', "headers": {"content-type": "application/json"}}, 400),
    ("lone-surrogate", "POST /search",
     {"content": b'{"question": "\\ud800 what"}', "headers": {"content-type": "application/json"}}, 400),
    ("body-too-large", "POST /search", {"json": {"question": "x" * 5000}}, 413),
    ("chunked-too-large", "POST /search",
     {"content": iter([b'{"question": "', b"y" * 3000, b"y" * 3000, b'"}']),
      "headers": {"content-type": "application/json"}}, 413),
    ("get-no-q", "GET /search", {}, 422),
    ("get-empty-q", "GET /search", {"params": {"q": "", "k": 3}}, 422),
    ("get-k-word", "GET /search", {"params": {"q": "x", "k": "ten"}}, 422),
    ("get-k-zero", "GET /search", {"params": {"q": "x", "k": 0}}, 422),
    ("get-non-utf8", "GET /search?q=caf%E9&k=3", {}, 400),
    ("embed-neither", "POST /embed", {"json": {}}, 422),
    ("embed-empty-passage", "POST /embed", {"json": {"passages": [{"title": "t", "text": " "}]}}, 422),
    ("embed-too-many", "POST /embed", {"json": {"passages": [{"text": "p"}] * 65}}, 422),
    ("unknown-path", "GET /nope", {}, 404),
    ("wrong-method", "DELETE /search", {}, 405),
]


@pytest.mark.parametrize(("method_path", "kwargs", "status"), [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_is_a_4xx_json_error(fp32_server: ServerProcess, method_path: str, kwargs: dict[str, Any],
                                       status: int) -> None:
    import httpx

    method, path = method_path.split(" ")
    response = httpx.request(method, fp32_server.url + path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in fp32_server.output


def test_no_bad_input_made_a_500(fp32_server: ServerProcess) -> None:
    """Runs after the bad-input matrix (same module server): still alive, and no request answered 500."""
    import httpx

    assert httpx.get(fp32_server.url + "/health").status_code == 200
    metrics = httpx.get(fp32_server.url + "/metrics").text
    assert 'status="500"' not in metrics
    assert metric(metrics, "fastdpr_requests_total", endpoint="/search", status="422") >= 10


def queued(server: ServerProcess) -> float:
    import httpx

    return metric(httpx.get(server.url + "/metrics").text, "fastdpr_queue_questions")


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


#: A batch waits this long for more questions in the overload and SIGTERM tests: long enough that the queue
#: state the test needs holds however slow a shared machine is (SIGTERM ends the wait at once).
LONG_WAIT_MS = 30_000


def test_full_queue_answers_503_with_retry_after(fp32_index: Path) -> None:
    import httpx

    require_serve()
    with ServerProcess(fp32_index, "--threads", THREADS, "--max-queue", 4, "--max-batch", 64,
                       "--max-wait-ms", LONG_WAIT_MS) as server, ThreadPoolExecutor(1) as pool:
        # Readiness does not wait for a batch's company (it once took the whole --max-wait-ms).
        assert httpx.get(server.url + "/ready").json()["probe_ms"] < LONG_WAIT_MS
        # One list request fills the queue (4 questions) atomically; its batch waits for more.
        filling = pool.submit(httpx.post, server.url + "/search", json={"questions": QUESTIONS[:4], "k": 3},
                              timeout=120)
        wait_until(lambda: queued(server) == 4)
        refused = [httpx.post(server.url + "/search", json={"question": q, "k": 3}) for q in QUESTIONS[4:]]
        too_many = httpx.post(server.url + "/search", json={"questions": QUESTIONS[:5], "k": 3})
        assert [r.status_code for r in refused] == [503] * 4
        assert all(r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"] for r in refused)
        assert too_many.status_code == 422  # more questions than the queue holds: retrying cannot help
        assert metric(httpx.get(server.url + "/metrics").text, "fastdpr_rejected_total") == 4
        assert not filling.done()
        server.terminate()  # ends the batch's wait: the queued questions are answered
        assert filling.result().status_code == 200
        assert [r["question"] for r in filling.result().json()["results"]] == QUESTIONS[:4]
        assert server.wait() == 0


def test_sigterm_drains_every_accepted_request(fp32_index: Path) -> None:
    import httpx

    require_serve()
    expected = reference(fp32_index, QUESTIONS[:6], 4)
    with ServerProcess(fp32_index, "--threads", THREADS, "--max-batch", 64, "--max-wait-ms", LONG_WAIT_MS) as server, \
            ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(httpx.post, server.url + "/search", json={"question": q, "k": 4}, timeout=120)
                   for q in QUESTIONS[:6]]
        wait_until(lambda: queued(server) == 6)  # all six accepted and waiting for their batch
        server.terminate()
        responses = [future.result() for future in pending]
        assert server.wait() == 0
    assert [r.status_code for r in responses] == [200] * 6
    for response, question, want in zip(responses, QUESTIONS[:6], expected, strict=True):
        assert response.json()["question"] == question
        assert [hit_id for hit_id, _ in hits_of(response.json())] == [hit_id for hit_id, _ in want]
    assert "Traceback" not in server.output
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health")


def test_cli_errors_are_one_line(tmp_path: Path, fp32_index: Path) -> None:
    require_serve()
    missing = run_cli(["serve", tmp_path / "nope"], code=1)
    assert "Error:" in missing.output and "nope" in missing.output
    busy = run_cli(["serve", fp32_index, "--threads", 4096 // 16, "--workers", 256], code=1)
    assert "cores" in busy.output


def test_thread_budget_never_oversubscribes() -> None:
    from fastdpr.common.errors import FastDPRError
    from fastdpr.serve.server import thread_budget

    assert thread_budget(None, None, cores=8) == (8, 1)  # default: a single-threaded worker per core
    assert thread_budget(2, None, cores=8) == (4, 2)
    assert thread_budget(None, 1, cores=8) == (1, 8)
    assert thread_budget(None, 3, cores=8) == (3, 2)
    assert thread_budget(4, 2, cores=8) == (2, 4)
    with pytest.raises(FastDPRError, match="lower --threads to 2"):
        thread_budget(3, 3, cores=8)
    with pytest.raises(FastDPRError, match="more than the 8 cores"):
        thread_budget(None, 9, cores=8)


def test_openapi_schema_documents_the_request_bodies(fp32_server: ServerProcess) -> None:
    import httpx

    schema = httpx.get(fp32_server.url + "/openapi.json").json()
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]
    assert set(search) == {"question", "questions", "k", "mode", "fusion", "weight"}
    assert search["mode"]["enum"] == ["dense", "lexical", "hybrid"] and search["mode"]["default"] == "dense"
    assert search["fusion"]["enum"] == ["weighted", "rrf"] and search["fusion"]["default"] == "weighted"
    assert "422" in schema["paths"]["/search"]["post"]["responses"]
    json.dumps(schema)  # serializable as published
