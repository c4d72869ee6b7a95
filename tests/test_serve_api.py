"""``fastdpr serve`` where users run it: the OpenAI-compatible ``/v1/embeddings`` (driven by the official
``openai`` client), the API key, CORS and settings from the environment, on a real server on loopback.

One server serves the module: its API key, model name and ``--max-k`` come from ``FASTDPR_*`` variables
(so the environment is honoured), its CORS origins from the command line. The last test reads everything
the server logged, after all the others sent right and wrong keys, and looks for the key.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from serve_helpers import ServerProcess, require_module, require_serve

KEY = "sk-fastdpr-test-3f9a1c0e5b7d"
ORIGIN = "https://app.example"
MODEL = "pydoc"
QUESTIONS = ["what does the yield statement do?", "how are default argument values evaluated?", "why " * 200]
PASSAGES = ["The try statement specifies exception handlers and cleanup code.", "A lambda is a small function."]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_index: Path) -> Any:
    require_serve()
    env = {"FASTDPR_API_KEY": KEY, "FASTDPR_MODEL_NAME": MODEL, "FASTDPR_MAX_K": "7"}
    with ServerProcess(tiny_index, "--threads", 1, "--log-level", "info", "--cors-allow-origin", ORIGIN,
                       "--cors-allow-origin", "https://other.example", env=env, api_key=KEY) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    openai = require_module("openai", "dev")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def embed(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    response = httpx.post(server.url + "/embed", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def openai_error(response: Any, status: int) -> dict[str, Any]:
    """The OpenAI error body of ``response``, checked to have OpenAI's shape and ``status``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_the_batcher_tokenizes_each_question_once(tiny_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr.model.tokenization import SpecTokenizer
    from fastdpr.search.retriever import Retriever
    from fastdpr.serve.batcher import run_batch

    calls: list[int] = []
    original = SpecTokenizer.encode_questions

    def counting(self: SpecTokenizer, questions: Any) -> Any:
        calls.append(len(questions))
        return original(self, questions)

    with Retriever.load(tiny_index, threads=1) as retriever:
        want = retriever.encode_questions(QUESTIONS)
        monkeypatch.setattr(SpecTokenizer, "encode_questions", counting)
        results = run_batch(retriever, QUESTIONS, [3, None, 5], max_batch=32)
    assert calls == [len(QUESTIONS)]  # one tokenization of the batch gives the vectors and the token counts
    assert all((r.embedding == w).all() for r, w in zip(results, want, strict=True))
    assert [r.tokens for r in results][2] == 64 and [r.truncated for r in results] == [False, False, True]


def test_query_embeddings_through_the_openai_client_equal_embed(server: ServerProcess, client: Any,
                                                               tiny_index: Path) -> None:
    import numpy as np

    from fastdpr.search.retriever import Retriever

    native = embed(server, {"questions": QUESTIONS})
    with Retriever.load(tiny_index, threads=1) as retriever:
        in_process = retriever.encode_questions(QUESTIONS)
        real_tokens = [len(e.ids) for e in retriever.tokenize_questions(QUESTIONS)]
    # The client's default asks for base64 and decodes it; "float" is JSON numbers: the same vectors.
    for response in (client.embeddings.create(model=f"{MODEL}-query", input=QUESTIONS),
                     client.embeddings.create(model=f"{MODEL}-query", input=QUESTIONS, encoding_format="float")):
        assert response.object == "list" and response.model == f"{MODEL}-query"
        assert [item.index for item in response.data] == [0, 1, 2]
        assert [item.embedding for item in response.data] == native["embeddings"]
        assert np.array_equal(np.array([item.embedding for item in response.data], dtype=np.float32), in_process)
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(native["tokens"])
    assert sum(real_tokens) == sum(native["tokens"]) and real_tokens[2] == 64  # truncated to the model's maximum
    one = client.embeddings.create(model=f"{MODEL}-query", input=QUESTIONS[0])
    assert len(one.data) == 1 and one.data[0].embedding == native["embeddings"][0]
    assert one.usage.prompt_tokens == real_tokens[0]
    raw = client.embeddings.create(model=f"{MODEL}-query", input=QUESTIONS[:2], encoding_format="base64")
    for item, want in zip(raw.data, native["embeddings"][:2], strict=True):
        assert isinstance(item.embedding, str)
        assert np.frombuffer(base64.b64decode(item.embedding), dtype="<f4").tolist() == want


def test_passage_embeddings_through_the_openai_client_equal_embed(server: ServerProcess, client: Any) -> None:
    native = embed(server, {"passages": [{"text": text} for text in PASSAGES]})
    response = client.embeddings.create(model=f"{MODEL}-passage", input=PASSAGES)
    assert [item.embedding for item in response.data] == native["embeddings"]
    assert response.usage.prompt_tokens == sum(native["tokens"])
    assert [model.id for model in client.models.list()] == [f"{MODEL}-query", f"{MODEL}-passage"]


def test_an_unknown_model_is_an_openai_404_naming_the_models(server: ServerProcess, client: Any) -> None:
    import httpx
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    error = openai_error(raised.value.response, 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert f"{MODEL}-query" in error["message"] and f"{MODEL}-passage" in error["message"]
    assert openai_error(httpx.get(server.url + "/v1/nope", headers=AUTH), 404)["code"] == "unknown_url"


OPENAI_BAD_REQUESTS: list[tuple[str, Any, str | None]] = [
    # (id, body or raw bytes, the param the error names)
    ("empty-string", {"model": f"{MODEL}-query", "input": ""}, "input"),
    ("blank-in-list", {"model": f"{MODEL}-query", "input": ["ok", "  "]}, "input"),
    ("empty-list", {"model": f"{MODEL}-query", "input": []}, "input"),
    ("token-ids", {"model": f"{MODEL}-query", "input": [101, 2054, 102]}, "input"),
    ("token-arrays", {"model": f"{MODEL}-passage", "input": [[101, 2054, 102]]}, "input"),
    ("input-number", {"model": f"{MODEL}-query", "input": 5}, "input"),
    ("no-input", {"model": f"{MODEL}-query"}, "input"),
    ("no-model", {"input": "hello"}, "model"),
    ("bad-format", {"model": f"{MODEL}-query", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("wrong-dimensions", {"model": f"{MODEL}-query", "input": "x", "dimensions": 8}, "dimensions"),
    ("too-many-passages", {"model": f"{MODEL}-passage", "input": ["p"] * 65}, "input"),
    ("not-json", b"model=x", None),
]


@pytest.mark.parametrize(("body", "param"), [case[1:] for case in OPENAI_BAD_REQUESTS],
                         ids=[case[0] for case in OPENAI_BAD_REQUESTS])
def test_bad_embedding_requests_are_openai_400s(server: ServerProcess, body: Any, param: str | None) -> None:
    import httpx

    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(server.url + "/v1/embeddings", headers={**AUTH, "Content-Type": "application/json"},
                          **kwargs)
    error = openai_error(response, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_the_right_dimensions_are_accepted(client: Any) -> None:
    assert len(client.embeddings.create(model=f"{MODEL}-query", input="x", dimensions=32).data[0].embedding) == 32


PROTECTED = [("GET", "/search?q=yield&k=3", None), ("POST", "/search", {"question": "yield", "k": 3}),
             ("POST", "/embed", {"questions": ["yield"]}), ("GET", "/ready", None), ("GET", "/info", None),
             ("GET", "/metrics", None), ("GET", "/", None), ("GET", "/openapi.json", None),
             ("POST", "/v1/embeddings", {"model": f"{MODEL}-query", "input": "yield"}), ("GET", "/v1/models", None),
             ("GET", "/nope", None)]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_every_route_but_health_needs_the_key(server: ServerProcess, method: str, path: str, body: Any) -> None:
    import httpx

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}):
        response = httpx.request(method, server.url + path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        if path.startswith("/v1/"):
            assert openai_error(response, 401)["code"] == "invalid_api_key"
        else:
            assert set(response.json()) == {"error"}
        assert KEY not in response.text
    allowed = httpx.request(method, server.url + path, json=body, headers=AUTH, timeout=60)
    assert allowed.status_code == (404 if path == "/nope" else 200), allowed.text


def test_health_is_open_and_the_client_reports_a_wrong_key(server: ServerProcess) -> None:
    import httpx
    import openai

    assert httpx.get(server.url + "/health").json() == {"status": "alive"}
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=f"{MODEL}-query", input="hello")


def test_cors_preflight_and_headers(server: ServerProcess) -> None:
    import httpx

    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(server.url + "/v1/embeddings", headers=preflight)  # a browser sends no key here
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.options(server.url + "/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
    assert refused.headers.get("access-control-allow-origin") != "https://evil.example"
    answered = httpx.get(server.url + "/search", params={"q": "yield", "k": 2}, headers={**AUTH, "Origin": ORIGIN})
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN
    assert "server-timing" in answered.headers["access-control-expose-headers"].lower()
    unauthorized = httpx.get(server.url + "/info", headers={"Origin": ORIGIN})  # the page can read the 401
    assert unauthorized.status_code == 401 and unauthorized.headers["access-control-allow-origin"] == ORIGIN


def test_the_environment_sets_the_options(server: ServerProcess) -> None:
    import httpx

    info = httpx.get(server.url + "/info", headers=AUTH).json()["serve"]
    assert info["max_k"] == 7 and info["model_name"] == MODEL  # FASTDPR_MAX_K, FASTDPR_MODEL_NAME
    assert info["api_key_required"] is True and info["cors_allow_origins"] == [ORIGIN, "https://other.example"]
    refused = httpx.post(server.url + "/search", json={"question": "yield", "k": 8}, headers=AUTH)
    assert refused.status_code == 422 and "between 1 and 7" in refused.json()["error"]


def test_help_names_every_options_variable() -> None:
    import click

    from fastdpr.cli.main import main

    shown = " ".join(run_cli(["serve", "--help"]).output.split())
    command = main.get_command(click.Context(main), "serve")
    assert command is not None
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert len(options) >= 14
    for option in options:
        variable = "FASTDPR_" + max(option.opts, key=len).lstrip("-").replace("-", "_").upper()
        assert f"env var: {variable}" in shown, variable
    assert "FASTDPR_API_KEY" in shown and "FASTDPR_CORS_ALLOW_ORIGIN" in shown and "FASTDPR_MAX_BODY" in shown


@pytest.mark.parametrize("key", ["", "two words", "key\n"])
def test_an_unusable_key_is_refused(tiny_index: Path, key: str) -> None:
    require_serve()
    result = run_cli(["serve", tiny_index, "--api-key", key], code=1)
    assert "--api-key" in result.output and "Traceback" not in result.output


def test_the_key_is_never_shown(server: ServerProcess) -> None:
    """Last in the module: every test above sent right and wrong keys to this server."""
    import httpx

    for path in ("/info", "/metrics", "/openapi.json"):
        assert KEY not in httpx.get(server.url + path, headers=AUTH).text
    assert "listening on" in server.output and "requires the API key" in server.output
    assert KEY not in server.output


def test_the_docs_block_works(tiny_index: Path, tmp_path: Path) -> None:
    """docs/serve.md's block, as a bash script, on the tiny index where the demo's index would be (so its
    ``|| fastdpr demo`` does not run), on a free port instead of its fixed 8732."""
    import os
    import socket
    import subprocess
    import sys

    from doc_blocks import block

    require_serve()
    require_module("openai", "dev")
    script = block("docs/serve.md: OpenAI-compatible embeddings, API keys and CORS #1").text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "8732" in script
    home = tmp_path / "fastdpr-home"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "index-pydoc-topics").symlink_to(tiny_index, target_is_directory=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTDPR_")}
    env.update({"FASTDPR_HOME": str(home), "HOME": str(tmp_path),
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("8732", str(port))], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines[0] == '{"status":"alive"}' and lines[1] == "without the key: 401"
    assert lines[2].startswith('{"object":"list","data":[{"object":"embedding","index":0,"embedding":[')
    assert lines[-1].split() == ["2", "32", lines[-1].split()[2], "1"] and int(lines[-1].split()[2]) > 4
    assert "pydoc-query, pydoc-passage" in done.stderr  # the server's log names the models
