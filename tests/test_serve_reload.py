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


def test_concurrent_clients_see_no_failure_and_consistent_answers_across_reloads(
        tmp_path: Path, variants: dict[str, Path]) -> None:
    """Clients search and embed without pause while the index is republished and reloaded again and again:
    no request fails, and every answer is the answer of the version its X-Index-Version names (its hits'
    id prefix, its question embedding made by that version's question encoder)."""
    import httpx

    require_serve()
    versions = {version_of(index): name for name, index in variants.items()}
    references = {name: reference(index, QUESTIONS) for name, index in variants.items()}
    assert not np.allclose(references["a"][1], references["b"][1], atol=1e-3)  # the encoders differ
    live = live_copy(tmp_path, variants["a"])
    reloads = 6
    stop = threading.Event()
    answers: list[tuple[str, str, int, str]] = []  # (kind, version, question, ok or what was wrong)
    failures: list[str] = []

    def client(number: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = number
            while not stop.is_set():
                q = i % len(QUESTIONS)
                i += 1
                try:
                    if i % 3:
                        response = http.post("/search", json={"question": QUESTIONS[q], "k": 5})
                    else:
                        response = http.post("/embed", json={"questions": [QUESTIONS[q]]})
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                    continue
                version = response.headers["X-Index-Version"]
                name = versions.get(version, "?")
                if name == "?":
                    answers.append(("unknown", version, q, "unknown version"))
                elif "hits" in response.json():
                    ids = [hit["id"] for hit in response.json()["hits"]]
                    answers.append(("search", version, q, "ok" if ids == references[name][0][q] else f"ids {ids}"))
                else:
                    vector = np.asarray(response.json()["embeddings"][0], dtype=np.float32)
                    same = np.allclose(vector, references[name][1][q], atol=1e-5)
                    answers.append(("embed", version, q, "ok" if same else "another encoder's vector"))

    with ServerProcess(live, "--threads", THREADS, "--workers", 2, "--max-wait-ms", 2) as server:
        threads = [threading.Thread(target=client, args=(n, server.url)) for n in range(8)]
        for thread in threads:
            thread.start()
        try:
            for number in range(reloads):
                name = "b" if number % 2 == 0 else "a"
                publish_copy(variants[name], live)
                hangup(server)
                wait_for(server, lambda i, n=number: i["index_version"]["generation"] == n + 2, f"reload {number + 1}")
                time.sleep(0.2)  # let the clients ask the new version (a pause of the test, not a synchronisation)
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)
        info = httpx.get(server.url + "/info").json()
    assert failures == []
    assert info["reload"]["reloads"] == reloads and info["reload"]["failures"] == 0
    wrong = [answer for answer in answers if answer[3] != "ok"]
    assert wrong == [], wrong[:5]
    seen = {versions[answer[1]] for answer in answers}
    assert seen == {"a", "b"} and {answer[0] for answer in answers} == {"search", "embed"}
    assert len(answers) >= 50


def break_index(index: Path, how: str) -> None:
    """Damage an index directory the way a bad publish would."""
    if how == "corrupt":  # the HNSW graph's first bytes changed: the manifest's fingerprint no longer matches
        graph = index / "hnsw.bin"
        data = bytearray(graph.read_bytes())
        data[1024:1088] = bytes(64)
        graph.write_bytes(bytes(data))
    elif how == "no-manifest":
        (index / "manifest.json").unlink()
    else:
        raise ValueError(how)


def test_a_broken_republish_keeps_the_old_index_answering(tmp_path: Path, variants: dict[str, Path]) -> None:
    """A corrupt republish, then a missing index: each reload fails with one log line, the old version
    keeps answering, /info and /ready say the last reload failed; the next good publish is loaded."""
    import httpx

    require_serve()
    live = live_copy(tmp_path, variants["a"])
    broken = tmp_path / "broken"
    shutil.copytree(variants["b"], broken)
    break_index(broken, "corrupt")
    old = version_of(variants["a"])
    with ServerProcess(live, "--threads", THREADS) as server:
        publish_copy(broken, live)
        hangup(server)
        info = wait_for(server, lambda i: i["reload"]["failures"] == 1, "the failed reload")
        assert info["index_version"]["version"] == old and info["reload"]["last_reload_failed"] is True
        assert "hnsw.bin" in info["reload"]["last_failure"]["error"]
        assert info["reload"]["last_failure"]["manifest_sha256"] == hashlib.sha256(
            (live / "manifest.json").read_bytes()).hexdigest()
        ready = httpx.get(server.url + "/ready").json()
        assert ready["ready"] is True and ready["last_reload_failed"] is True and ready["index_version"] == old
        assert search(server, QUESTIONS[0])[0] == old

        shutil.rmtree(live)
        hangup(server)
        wait_for(server, lambda i: i["reload"]["failures"] == 2, "the reload of a missing index")
        assert search(server, QUESTIONS[1])[0] == old

        publish_copy(variants["b"], live)
        hangup(server)
        info = wait_for(server, lambda i: i["index_version"]["generation"] == 2, "the good publish")
        assert info["reload"]["last_reload_failed"] is False and search(server, QUESTIONS[0])[0] == version_of(
            variants["b"])
    failed = [line for line in server.output.splitlines() if "reload of" in line and "failed" in line]
    assert len(failed) == 2, server.output
    assert "still answering with version " + old in failed[0] and "hnsw.bin" in failed[0]
    assert "manifest.json" in failed[1]
    assert "Traceback" not in server.output


def test_watch_index_picks_up_a_publish_and_tries_a_broken_one_once(tmp_path: Path,
                                                                     variants: dict[str, Path]) -> None:
    """FASTDPR_WATCH_INDEX (--watch-index): a publish is picked up without a signal; a broken publish is
    tried once (one log line however many polls see it), and the next good one is picked up."""
    require_serve()
    live = live_copy(tmp_path, variants["a"])
    broken = tmp_path / "broken"
    shutil.copytree(variants["a"], broken)
    break_index(broken, "corrupt")
    with ServerProcess(live, "--threads", THREADS, env={"FASTDPR_WATCH_INDEX": "0.1"}) as server:
        assert "checked every 0.1 s" in server.output
        publish_copy(variants["b"], live)
        info = wait_for(server, lambda i: i["index_version"]["generation"] == 2, "the watcher's reload")
        assert info["index_version"]["version"] == version_of(variants["b"]) and info["reload"]["watch_seconds"] == 0.1
        assert search(server, QUESTIONS[0])[0] == version_of(variants["b"])

        publish_copy(broken, live)
        wait_for(server, lambda i: i["reload"]["failures"] == 1, "the failed reload")
        polls_later = time.monotonic() + 1.5  # 15 more polls see the same broken manifest
        while time.monotonic() < polls_later:
            assert search(server, QUESTIONS[1])[0] == version_of(variants["b"])
        publish_copy(variants["a"], live)
        info = wait_for(server, lambda i: i["index_version"]["generation"] == 3, "the next good publish")
        assert info["reload"]["failures"] == 1 and info["index_version"]["version"] == version_of(variants["a"])
    assert sum("reload of" in line and "failed" in line for line in server.output.splitlines()) == 1


def test_a_reload_keeps_the_embedding_size(tmp_path: Path, variants: dict[str, Path]) -> None:
    """A republished index of another embedding size is refused (clients' vector stores hold the old
    size); the old generation stays open and usable."""
    from types import SimpleNamespace

    from fastdpr.common.errors import IndexLoadError
    from fastdpr.serve.generation import Generation, IndexVersion
    from fastdpr.serve.loading import IndexSource

    source = IndexSource(variants["a"], THREADS, None, lambda line: None)
    first = source.open()
    try:
        wider = Generation(SimpleNamespace(dim=first.retriever.dim * 2, artifact_identity=None),  # type: ignore[arg-type]
                           None, IndexVersion("0" * 64, None, 1, "now"), {})
        with pytest.raises(IndexLoadError, match=rf"{first.retriever.dim}-dimensional embeddings and the server "
                                                 rf"answers with {first.retriever.dim * 2}"):
            source.open(wider)
        assert first.retriever.search(QUESTIONS[0], 3)
    finally:
        first.retire()


class CountingRetriever:
    """Stands in for a Retriever where only closing matters."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_old_generation_closes_after_its_last_use_only() -> None:
    """A swap retires the old generation: uses that started before it keep it open, the last one to end
    closes it (once), and new uses get the new generation."""
    from fastdpr.serve.generation import Generation, Generations, IndexVersion

    def generation(number: int) -> Generation:
        return Generation(CountingRetriever(), None, IndexVersion(f"{number:064x}", None, number, "now"),  # type: ignore[arg-type]
                          {})

    old, new = generation(1), generation(2)
    holder = Generations(old)
    with holder.use() as first, holder.use() as second:
        assert first is old and second is old
        holder.swap(new)
        with holder.use() as third:
            assert third is new
        assert old.retriever.closed == 0 and not old.closed  # type: ignore[attr-defined]
    assert old.retriever.closed == 1 and old.closed and old.users == 0  # type: ignore[attr-defined]
    assert new.retriever.closed == 0 and not new.closed  # type: ignore[attr-defined]
    holder.close()
    assert new.retriever.closed == 1  # type: ignore[attr-defined]


def test_serve_help_documents_reloading() -> None:
    result = run_cli(["serve", "--help"])
    text = " ".join(result.output.split())
    assert "SIGHUP reloads INDEX" in text and "--watch-index SECONDS" in text and "FASTDPR_WATCH_INDEX" in text
    assert json.dumps("X-Index-Version")[1:-1] in text


def test_the_docs_block_works(tmp_path: Path, tiny_index: Path, tiny_artifact: Path) -> None:
    """docs/serve.md's reload block, as a bash script, with the tiny index and artifact where the demo's
    would be (a copy of the index: the block copies it, and cp -r keeps a symlink a symlink), on a free
    port instead of its fixed 8733: the version changes, and the republished passages answer."""
    import os
    import socket
    import subprocess
    import sys

    from doc_blocks import block

    require_serve()
    script = block("docs/serve.md: Reloading a republished index #1").text
    assert "8733" in script
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = tmp_path / "fastdpr-home" / "demo"
    demo.mkdir(parents=True)
    shutil.copytree(tiny_index, demo / "index-pydoc-topics")
    (demo / "artifact-minilm").symlink_to(tiny_artifact, target_is_directory=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTDPR_")}
    env.update({"FASTDPR_HOME": str(demo.parent), "HOME": str(tmp_path),
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("8733", str(port))], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    assert json.loads(lines[0])["ready"] is True
    before, after = (line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("x-index-version"))
    assert before == version_of(tiny_index) and after == version_of(tmp_path / "live-index") != before
    answer = json.loads(next(line for line in lines if line.startswith("{") and '"hits"' in line))
    assert [hit["id"] for hit in answer["hits"]] in (["new-1"], ["new-2"])
    assert "reloaded" in done.stderr


def test_the_benchmark_reload_phase_counts_failures_and_checks_versions(variants: dict[str, Path]) -> None:
    """``python -m benchmarks serve --phases reload`` on a tiny index, shortened: its variants are told
    apart in every answer, and it reports no failed request and no inconsistent answer."""
    from benchmarks.serve import SYSTEMS, benchmark_questions
    from benchmarks.serve_reload import reload_phase, render_reload

    require_serve()
    report = reload_phase(variants["a"], SYSTEMS["http-batched-2x1-wait0"], THREADS, benchmark_questions(),
                          clients=4, cycles=2, steady_seconds=1, gap_seconds=0.3, k=3)
    assert report["failed_requests"] == 0 and report["inconsistent_answers"] == 0
    assert set(report["reload_phase"]["answers_per_version"]) == {"a:", "b:"}
    assert report["steady"]["requests"] > 0 and len(report["reloads"]) == 2
    assert report["during_reload"]["requests"] + report["between_reloads"]["requests"] == \
        report["reload_phase"]["requests"]
    assert report["exit_code_after_sigterm"] == 0
    assert "**Failed requests: 0**" in "\n".join(render_reload(report, "fastdpr serve INDEX"))


def test_a_swapped_out_index_is_freed(variants: dict[str, Path]) -> None:
    """After a swap and its last use, nothing keeps the old index alive: repeated reloads do not pile up
    indexes in memory."""
    import gc
    import weakref

    from fastdpr.serve.generation import Generations
    from fastdpr.serve.loading import IndexSource

    source = IndexSource(variants["a"], THREADS, None, lambda line: None)
    holder = Generations(source.open())
    olds = []
    for _ in range(3):
        with holder.use() as using:
            olds.append(weakref.ref(using.retriever))
            holder.swap(source.open(using, warm_batch=4))
            assert using.retriever.search(QUESTIONS[0], 2)  # still answers until its last use ends
        del using
    gc.collect()
    assert [ref() for ref in olds] == [None, None, None]
    holder.close()
