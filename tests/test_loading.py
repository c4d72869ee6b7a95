"""Loading is safe and fast: manifests parsed completely, confined to their directory, checked by a cheap
fingerprint at load (sha256 under ``info --verify``); publishing is atomic, durable, locked, and readable
by other users as the umask allows."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import rewrite_hashes, run_cli

from fastdpr.common import integrity as manifest_module
from fastdpr.common.errors import ArtifactError, IndexLoadError
from fastdpr.common.publish import build_lock, recover
from fastdpr.corpus.builtin import pydoc_topic_passages
from fastdpr.corpus.reader import write_corpus
from fastdpr.index.build import IndexOptions, build_index
from fastdpr.index.build_sharded import build_sharded_index
from fastdpr.model.artifact import Artifact
from fastdpr.search.retriever import Retriever

QUESTION = "how do I catch an exception?"


def read(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return data


def write(root: Path, data: dict[str, Any]) -> None:
    (root / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def entry_of(path: Path) -> dict[str, Any]:
    """A correct file-table entry for ``path`` (so only the path itself is wrong)."""
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


@pytest.fixture()
def index(tmp_path: Path, tiny_index: Path) -> Path:
    copy = tmp_path / "box" / "idx"
    shutil.copytree(tiny_index, copy)
    return copy


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.jsonl"
    write_corpus(path, pydoc_topic_passages()[:24], "jsonl")
    return path


# ---------------------------------------------------------------------------------------------------
# Manifests cannot point outside their directory or around their checksums


def test_an_absolute_path_is_refused(index: Path) -> None:
    outside = index.parent / "hnsw-elsewhere.bin"
    shutil.copyfile(index / "hnsw.bin", outside)
    manifest = read(index)
    manifest["files"][str(outside)] = entry_of(outside)
    manifest["hnsw"]["file"] = str(outside)
    write(index, manifest)
    with pytest.raises(IndexLoadError, match="is an absolute path"):
        Retriever.load(index)
    result = run_cli(["search", index, QUESTION], code=1)
    assert "is an absolute path" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_parent_path_is_refused(index: Path) -> None:
    shutil.copyfile(index / "passages.sqlite", index.parent / "passages.sqlite")
    manifest = read(index)
    manifest["files"]["../passages.sqlite"] = entry_of(index.parent / "passages.sqlite")
    manifest["store"] = "../passages.sqlite"
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=r"'\.\./passages\.sqlite' leaves the directory"):
        Retriever.load(index)


def test_a_symlink_out_of_the_directory_is_refused(index: Path) -> None:
    """The name is plain and listed with the right size and hashes, but the file lives elsewhere."""
    outside = index.parent / "vectors-elsewhere.npy"
    shutil.move(index / "vectors.npy", outside)
    (index / "vectors.npy").symlink_to(outside)
    with pytest.raises(IndexLoadError, match=r"vectors\.npy: resolves to .*outside the directory"):
        Retriever.load(index)


def test_a_symlink_inside_the_directory_is_allowed(index: Path) -> None:
    (index / "data").mkdir()
    shutil.move(index / "vectors.npy", index / "data" / "vectors.npy")
    (index / "vectors.npy").symlink_to(Path("data") / "vectors.npy")
    manifest = read(index)
    manifest["files"]["data/vectors.npy"] = manifest["files"]["vectors.npy"]
    write(index, manifest)
    with Retriever.load(index, exact=True) as retriever:
        assert len(retriever.search(QUESTION, k=3)) == 3


def test_a_file_missing_from_the_table_is_refused(index: Path) -> None:
    """A manifest whose store is a file no checksum vouches for."""
    shutil.copyfile(index / "passages.sqlite", index / "other.sqlite")
    manifest = read(index)
    manifest["store"] = "other.sqlite"
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=r"store 'other\.sqlite' is not in the file table"):
        Retriever.load(index)
    manifest["question_encoder"]["model"] = "encoder/other.onnx"
    manifest["store"] = "passages.sqlite"
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=r"question_encoder\.model 'encoder/other\.onnx' is not in the file"):
        Retriever.load(index)


def test_an_artifact_cannot_point_outside_either(tmp_path: Path, tiny_artifact: Path) -> None:
    artifact = tmp_path / "box" / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    shutil.copyfile(artifact / "question" / "model.onnx", tmp_path / "box" / "model.onnx")
    manifest = read(artifact)
    manifest["files"]["../model.onnx"] = entry_of(tmp_path / "box" / "model.onnx")
    manifest["sides"]["question"]["models"]["fp32"] = "../model.onnx"
    write(artifact, manifest)
    with pytest.raises(ArtifactError, match="leaves the directory"):
        Artifact.load(artifact)
    manifest["files"].pop("../model.onnx")
    manifest["sides"]["question"]["models"]["fp32"] = "question/elsewhere.onnx"
    write(artifact, manifest)
    with pytest.raises(ArtifactError, match=r"sides\.question\.models\.fp32 'question/elsewhere\.onnx' is not in"):
        Artifact.load(artifact)


@pytest.fixture(scope="module")
def sharded_small(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, small_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "idx"
    build_sharded_index(tiny_artifact, small_corpus, out, "jsonl", IndexOptions(progress=False, threads=1),
                        shard_size=10)
    return out


def test_a_shard_outside_the_sharded_index_is_refused(tmp_path: Path, sharded_small: Path) -> None:
    index = tmp_path / "box" / "idx"
    shutil.copytree(sharded_small, index)
    shutil.move(index / "shards" / "00001", tmp_path / "box" / "stolen")
    manifest = read(index)
    manifest["shards"][1]["dir"] = "../stolen"
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=r"shards\[1\]\.dir '\.\./stolen' leaves the directory"):
        Retriever.load(index)
    manifest["shards"][1]["dir"] = "shards/00001"
    write(index, manifest)
    (index / "shards" / "00001").symlink_to(tmp_path / "box" / "stolen")
    with pytest.raises(IndexLoadError, match=r"shard shards/00001 resolves to .*outside the index"):
        Retriever.load(index)


def test_a_shard_loaded_alone_does_not_follow_its_encoder_path(sharded_small: Path) -> None:
    """A shard's manifest names the shared encoder as ../../encoder: that path is never opened."""
    with pytest.raises(IndexLoadError, match="one shard of a sharded index"):
        Retriever.load(sharded_small / "shards" / "00000")


# ---------------------------------------------------------------------------------------------------
# Manifests are parsed completely: a missing or mistyped key is a one-line error naming file and key


@pytest.mark.parametrize(("path", "message"), [
    (("hnsw", "ef_search"), "hnsw.ef_search is missing"),
    (("counts", "indexed"), "counts.indexed is missing"),
    (("question_encoder", "model"), "question_encoder.model is missing"),
    (("question_encoder", "probe_check", "batch_size"), "question_encoder.probe_check.batch_size is missing"),
    (("vectors",), "vectors is missing"),
    (("store",), "store is missing"),
    (("spec",), "spec is missing"),
    (("precision",), "precision is missing"),
    (("files",), "files is missing"),
])
def test_a_missing_key_names_the_file_and_the_key(index: Path, path: tuple[str, ...], message: str) -> None:
    manifest = read(index)
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=message):
        Retriever.load(index)
    result = run_cli(["search", index, QUESTION], code=1)
    assert f"{index / 'manifest.json'}: {message}" in result.output


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ef_search", "200", "hnsw.ef_search must be an integer >= 1, got '200'"),
    ("ef_search", True, "hnsw.ef_search must be an integer >= 1, got True"),
    ("ef_search", 0, "hnsw.ef_search must be an integer >= 1, got 0"),
    ("file", 7, "hnsw.file must be a non-empty string, got 7"),
])
def test_a_mistyped_key_is_refused(index: Path, key: str, value: Any, message: str) -> None:
    manifest = read(index)
    manifest["hnsw"][key] = value
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=message):
        Retriever.load(index)


def test_a_vectors_shape_that_disagrees_with_the_counts_is_refused(index: Path) -> None:
    manifest = read(index)
    n, dim = manifest["vectors"]["shape"]
    manifest["vectors"]["shape"] = [n + 1, dim]
    write(index, manifest)
    with pytest.raises(IndexLoadError, match=rf"vectors\.shape is \[{n + 1}, {dim}\], expected \[{n}, {dim}\]"):
        Retriever.load(index)


def test_an_artifact_missing_a_key_names_it(tmp_path: Path, tiny_artifact: Path) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    manifest = read(artifact)
    del manifest["probes"]["batch_size"]
    write(artifact, manifest)
    with pytest.raises(ArtifactError, match=r"manifest\.json: probes\.batch_size is missing"):
        Artifact.load(artifact)


# ---------------------------------------------------------------------------------------------------
# The fast check at load: sizes and fingerprints, never every byte


def test_load_does_not_hash_whole_files(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> str:
        raise AssertionError(f"a load hashed all of {path}")

    monkeypatch.setattr(manifest_module, "sha256_file", refuse)
    with Retriever.load(index) as retriever:
        assert len(retriever.search(QUESTION, k=2)) == 2


def test_a_replaced_file_of_the_same_size_is_caught_by_the_fingerprint(index: Path) -> None:
    """hnsw.bin overwritten by other bytes of the same length: sizes agree, the fingerprint does not."""
    size = (index / "hnsw.bin").stat().st_size
    (index / "hnsw.bin").write_bytes(bytes(size))
    with pytest.raises(IndexLoadError, match=r"hnsw\.bin: fingerprint differs from the manifest"):
        Retriever.load(index)
    result = run_cli(["search", index, QUESTION], code=1)
    assert "hnsw.bin: fingerprint differs" in result.output


def test_a_truncated_file_is_caught_by_its_size(index: Path) -> None:
    with open(index / "passages.sqlite", "r+b") as handle:
        handle.truncate(4096)
    with pytest.raises(IndexLoadError, match=r"passages\.sqlite: 4096 bytes, manifest says"):
        Retriever.load(index)


def test_a_byte_flipped_mid_file_is_caught_by_info_verify(index: Path) -> None:
    """What the fingerprint does not read, the full sha256 of ``info --verify`` does."""
    path = index / "hnsw.bin"
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 64 * 1024  # so the middle byte is outside both sampled ends
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = run_cli(["info", index, "--verify"], code=1)
    assert "hnsw.bin: sha256 differs from the manifest" in result.output
    assert "files: fingerprint ok; full sha256: --verify" in run_cli(["info", index]).output


def test_a_manifest_without_fingerprints_is_checked_by_sha256(index: Path) -> None:
    """Indexes built before fingerprints: loads fall back to the full sha256 of each file (slower, as
    before, never weaker), so a mid-file change is still caught."""
    manifest = read(index)
    for entry in manifest["files"].values():
        del entry["fingerprint"]
    write(index, manifest)
    with Retriever.load(index) as retriever:
        assert retriever.count == len(pydoc_topic_passages())
    path = index / "hnsw.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match=r"hnsw\.bin: sha256 differs"):
        Retriever.load(index)


# ---------------------------------------------------------------------------------------------------
# Permissions follow the umask, not mkdtemp's 0700 / mkstemp's 0600


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of the root and everything below it."""
    paths = [root, *root.rglob("*")]
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in paths}


@pytest.mark.parametrize(("mask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_an_index_is_published_with_the_umask_modes(tmp_path: Path, tiny_artifact: Path, small_corpus: Path,
                                                    mask: int, dir_mode: int, file_mode: int) -> None:
    # The artifact's files are 0600 here: copies into the index must not keep that mode.
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    for path in artifact.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    with umask(mask):
        build_index(artifact, small_corpus, tmp_path / "idx", "jsonl", IndexOptions(progress=False, threads=1))
    assert modes(tmp_path / "idx") == {("dir", dir_mode), ("file", file_mode)}


def test_write_json_follows_the_umask(tmp_path: Path) -> None:
    with umask(0o022):
        manifest_module.write_json(tmp_path / "a.json", {"a": 1})
    with umask(0o077):
        manifest_module.write_json(tmp_path / "b.json", {"b": 1})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600


# ---------------------------------------------------------------------------------------------------
# One build at a time, and stale staging directories are cleaned


def test_a_concurrent_build_into_the_same_out_is_refused(tmp_path: Path, tiny_artifact: Path,
                                                         small_corpus: Path) -> None:
    out = tmp_path / "idx"
    run_cli(["index", tiny_artifact, small_corpus, "--out", out])
    before = read(out)
    with build_lock(out, IndexLoadError):  # what a running build holds
        for extra in ([], ["--shard-size", "10"]):
            result = run_cli(["index", tiny_artifact, small_corpus, "--out", out, "--force", *extra], code=1)
            assert f"another build of {out} is running (pid {os.getpid()})" in result.output
            assert len(result.output.strip().splitlines()) == 1
    assert read(out) == before
    run_cli(["index", tiny_artifact, small_corpus, "--out", out, "--force"])  # free again


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_staging_of_a_dead_build_is_removed(tmp_path: Path, tiny_artifact: Path, small_corpus: Path) -> None:
    out = tmp_path / "idx"
    stale = tmp_path / f".idx.building-{dead_pid()}-abcd1234"
    alive = tmp_path / f".idx.building-{os.getpid()}-live5678"
    resumable = tmp_path / ".idx.building-sharded"
    for path in (stale, alive, resumable):
        path.mkdir()
        (path / "vectors.f32.partial").write_bytes(b"x" * 100)
    run_cli(["index", tiny_artifact, small_corpus, "--out", out])
    assert not stale.exists()
    assert alive.exists()  # a live process's build is not ours to remove
    assert resumable.exists()  # an interrupted sharded build is kept for --resume
    with Retriever.load(out) as retriever:
        assert retriever.count == 24


# ---------------------------------------------------------------------------------------------------
# Kill -9 at every step of a publish: the target holds the old or the new index, and it loads

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import fastdpr.common.publish as publish

    kill_at, exchange = int(sys.argv[3]), sys.argv[4] == "exchange"
    steps = [0]

    def step(name, func):
        def wrapped(*args, **kwargs):
            if steps[0] == kill_at:
                print(name, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            steps[0] += 1
            return func(*args, **kwargs)
        return wrapped

    if not exchange:
        publish._exchange = lambda a, b: False
    publish._exchange = step("exchange", publish._exchange)
    publish.os.replace = step("replace", os.replace)
    publish.fsync_directory = step("fsync_directory", publish.fsync_directory)
    publish.shutil.rmtree = step("rmtree", publish.shutil.rmtree)
    publish.finalize_tree = step("finalize_tree", publish.finalize_tree)
    publish.publish(Path(sys.argv[1]), Path(sys.argv[2]))
    print("done", flush=True)
""")


@pytest.mark.parametrize("mode", ["exchange", "two-renames"])
def test_kill_at_every_publish_step_leaves_the_old_or_the_new_index(tmp_path: Path, tiny_index: Path,
                                                                    mode: str) -> None:
    seen: set[int] = set()
    for kill_at in range(20):
        box = tmp_path / str(kill_at)
        box.mkdir()
        target, staging = box / "idx", box / f".idx.building-{dead_pid()}-x"
        shutil.copytree(tiny_index, target)
        shutil.copytree(tiny_index, staging)
        new = read(staging)
        new["hnsw"]["ef_search"] = 77  # the new index is told apart by its manifest
        write(staging, new)
        rewrite_hashes(staging)
        child = subprocess.run([sys.executable, "-c", CHILD, staging, target, str(kill_at), mode],
                               capture_output=True, text=True, timeout=120)
        finished = child.returncode == 0
        assert finished or child.returncode == -signal.SIGKILL, child.stderr
        with build_lock(target, IndexLoadError):  # what the next build does first
            recover(target)
        with Retriever.load(target, check_int8=False) as retriever:
            seen.add(retriever.ef)
            if finished:
                assert retriever.ef == 77
        assert sorted(p.name for p in box.iterdir()) == ["idx"], child.stdout
        if finished:
            break
    else:
        pytest.fail("the publish never finished")
    assert seen == {read(tiny_index)["hnsw"]["ef_search"], 77}
    assert kill_at >= 4  # the child was killed at several distinct steps before it finished



def test_recover_restores_what_an_older_fastdpr_left_between_its_two_renames(tmp_path: Path) -> None:
    """Before this version the old index went to ``.idx.old-RANDOM/previous`` and staging directories
    carried no pid: a kill between the renames left no ``idx``; the next build puts it back."""
    previous = tmp_path / ".idx.old-k3j9x2ab" / "previous"
    previous.mkdir(parents=True)
    (previous / "manifest.json").write_text('{"old": true}')
    (tmp_path / ".idx.building-q1w2e3r4").mkdir()
    with build_lock(tmp_path / "idx", IndexLoadError):
        recover(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
