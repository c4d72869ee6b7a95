"""An interrupted `fastdpr index` (kill -9, Ctrl-C) leaves no index that loads, and a rerun succeeds.

The build runs in a subprocess over a corpus big enough to take seconds with the tiny model at batch
size 1. The test waits until the first chunk of vectors reaches the staging directory
(``.NAME.building-*/vectors.f32.partial``), so the kill lands mid-build, not before or after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from head_start import default_sigint

from fastdpr.common.errors import IndexLoadError
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import Passage, write_corpus
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.model.batching import ENCODE_CHUNK
from fastdpr.search.retriever import Retriever

REPEATS = 6  # 6 x 690 = 4,140 passages: three encode chunks, a few seconds at --batch-size 1


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    passages = pydoc_topic_passages()
    count = write_corpus(path, (Passage(f"{r}/{p.id}", p.title, p.text) for r in range(REPEATS) for p in passages),
                         "jsonl")
    assert count > ENCODE_CHUNK + 1
    return path


def index_command(artifact: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from fastdpr.cli.main import main; main()", "index", str(artifact), str(corpus),
            "--out", str(out), "--batch-size", "1", "--threads", "1", *extra]


def start_and_wait_for_first_chunk(command: list[str], out: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start the build and return once its staging directory holds the first chunk of vectors."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for staging in out.parent.glob(f".{out.name}.building-*"):
            partial = staging / "vectors.f32.partial"
            if partial.is_file() and partial.stat().st_size > 0:
                assert proc.poll() is None, "the build finished before it could be interrupted"
                return proc, staging
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the build exited ({proc.returncode}) before its first chunk was written:\n{err}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("no staging directory with vectors appeared within 300 s")


def assert_no_index(out: Path) -> None:
    if out.exists():
        with pytest.raises(IndexLoadError):
            Retriever.load(out)


def assert_complete_index(out: Path, count: int) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["indexed"] == count
    with Retriever.load(out) as retriever:
        assert retriever.count == count
        assert len(retriever.search("what does the yield statement do?", k=5)) == 5


def test_sigkill_mid_build_leaves_no_index_and_a_rerun_succeeds(tmp_path: Path, tiny_artifact: Path,
                                                                big_corpus: Path) -> None:
    out = tmp_path / "idx"
    command = index_command(tiny_artifact, big_corpus, out)
    proc, staging = start_and_wait_for_first_chunk(command, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert_no_index(out)
    assert staging.is_dir()  # kill -9 cannot clean up: the half-built staging directory is left, hidden
    assert not (staging / "manifest.json").exists()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert_complete_index(out, REPEATS * len(pydoc_topic_passages()))


def test_sigint_mid_build_cleans_up_and_a_rerun_succeeds(tmp_path: Path, tiny_artifact: Path,
                                                         big_corpus: Path) -> None:
    out = tmp_path / "idx"
    command = index_command(tiny_artifact, big_corpus, out)
    proc, staging = start_and_wait_for_first_chunk(command, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode not in (0, None)
    assert "Traceback" not in err, err
    assert "Aborted" in err
    assert not out.exists()
    assert_no_index(out)
    assert not staging.exists()  # Ctrl-C runs the cleanup
    assert not list(tmp_path.glob(".idx.*"))

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert_complete_index(out, REPEATS * len(pydoc_topic_passages()))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_interrupted_force_rebuild_keeps_the_previous_index(tmp_path: Path, tiny_artifact: Path,
                                                            pydoc_corpus: Path, big_corpus: Path,
                                                            sig: signal.Signals) -> None:
    out = tmp_path / "idx"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(progress=False))
    before = (out / "manifest.json").read_bytes()

    proc, _ = start_and_wait_for_first_chunk(index_command(tiny_artifact, big_corpus, out, "--force"), out)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert (out / "manifest.json").read_bytes() == before
    assert_complete_index(out, len(pydoc_topic_passages()))


def test_staging_directory_sits_next_to_the_target(tmp_path: Path, tiny_artifact: Path, big_corpus: Path) -> None:
    # Same filesystem as the target is what makes the final rename atomic.
    out = tmp_path / "nested" / "idx"
    proc, staging = start_and_wait_for_first_chunk(index_command(tiny_artifact, big_corpus, out), out)
    try:
        assert staging.parent == out.parent
        assert os.stat(staging).st_dev == os.stat(out.parent).st_dev
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
