"""Opening an index as a :class:`~fastdpr.serve.generation.Generation`: at start, and at every reload.

An index directory is republished by swapping the whole directory (:mod:`fastdpr.common.publish`), so a
load that reads the manifest of one version and the files of the next is possible while a publish runs.
:meth:`IndexSource.open` therefore hashes the manifest before and after the load and loads again when
it changed. A reload keeps the server's embedding size (a client's vector store holds vectors of that
size), opens the passage encoder of the new index's artifact when the artifact changed, and answers a
probe question and a full batch before the new generation is handed over, so the first requests on it
pay no first-run costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastdpr.common.errors import FastDPRError, IndexLoadError
from fastdpr.model.openvino_encoder import SideEncoder
from fastdpr.report.info import describe_index
from fastdpr.search.retriever import Retriever
from fastdpr.serve.batcher import run_batch
from fastdpr.serve.generation import Generation, IndexVersion, manifest_sha256, utc_now

#: The question the server answers before it calls an index ready.
READY_PROBE = "is the index loaded?"
#: Loads of one reload when a publish keeps replacing the index while it is read.
LOAD_ATTEMPTS = 3


def open_passage_encoder(retriever: Retriever, artifact_dir: Path | None, threads: int,
                         warn: Callable[[str], None]) -> SideEncoder | None:
    """The context encoder of the artifact the index was built from (for POST /embed of passages):
    ``artifact_dir``, or the path the index manifest recorded when it still holds that artifact."""
    from fastdpr.model.artifact import Artifact

    path = artifact_dir or retriever.artifact_path
    if path is None:
        return None
    try:
        artifact = Artifact.load(path)
    except FastDPRError as exc:
        if artifact_dir is not None:
            raise
        warn(f"passage embeddings are off: the index's artifact cannot be opened ({exc}); give --artifact")
        return None
    if retriever.artifact_identity and artifact.identity != retriever.artifact_identity:
        message = f"{path} is not the artifact the index was built from (its manifest differs)"
        if artifact_dir is not None:
            raise FastDPRError(message)
        warn(f"passage embeddings are off: {message}; give --artifact")
        return None
    # The runtime that encoded the index's passages (OpenVINO or ONNX Runtime): /embed answers what the index
    # holds, bitwise, or not at all.
    recorded = (retriever.typed_manifest.raw.get("build") or {}).get("passage_backend") or {}
    try:
        backend = artifact.passage_backend(retriever.typed_manifest.precision, recorded.get("name", "onnxruntime"))
    except FastDPRError as exc:
        warn(f"passage embeddings are off: the index's passages were encoded on {recorded.get('name')}, which "
             f"cannot run here ({exc})")
        return None
    return artifact.passage_encoder(backend, retriever.typed_manifest.precision, threads=threads)


def _changed(index: Path, before: str) -> bool:
    """True when ``index``'s manifest is no longer the one hashed as ``before`` (or is gone)."""
    try:
        return manifest_sha256(index) != before
    except IndexLoadError:
        return True


@dataclass(frozen=True)
class IndexSource:
    """Where a server's generations come from: the index directory, the thread budget of each load, the
    ``--artifact`` given at start, and where warnings go (the server's log)."""

    index: Path
    threads: int
    artifact: Path | None
    warn: Callable[[str], None]

    def load_retriever(self) -> tuple[Retriever, str]:
        """The index loaded whole from one version of its directory, and that version's manifest sha256."""
        for _ in range(LOAD_ATTEMPTS):
            before = manifest_sha256(self.index)
            try:
                retriever = Retriever.load(self.index, threads=self.threads)
            except Exception:
                if _changed(self.index, before):  # read across a publish: load the new version
                    continue
                raise
            if not _changed(self.index, before):
                return retriever, before
            retriever.close()
        raise IndexLoadError(f"{self.index} was republished {LOAD_ATTEMPTS} times while it was being loaded; "
                             "try again once the publishing stopped")

    def open(self, previous: Generation | None = None, *, warm_batch: int = 0) -> Generation:
        """Load the index as a new generation (the first one when ``previous`` is None), checked against
        ``previous`` and warmed by a probe question and, when ``warm_batch`` > 1, a batch of that many."""
        retriever, sha = self.load_retriever()
        try:
            if previous is not None and retriever.dim != previous.retriever.dim:
                raise IndexLoadError(f"the republished index has {retriever.dim}-dimensional embeddings and the "
                                     f"server answers with {previous.retriever.dim}: restart the server to change "
                                     "the embedding size")
            passage_encoder = self.passage_encoder(retriever, previous)
            if previous is not None:
                self.warm(retriever, passage_encoder, previous, warm_batch)
            version = IndexVersion(sha, retriever.manifest.get("created_utc"),
                                   1 if previous is None else previous.version.generation + 1, utc_now())
            return Generation(retriever, passage_encoder, version, describe_index(retriever.typed_manifest))
        except BaseException:
            retriever.close()
            raise

    def passage_encoder(self, retriever: Retriever, previous: Generation | None) -> SideEncoder | None:
        """The passage encoder for ``retriever``: the previous generation's when both indexes come from
        the same artifact, else the new index's own (``--artifact`` is for the index the server started with)."""
        if previous is None:
            return open_passage_encoder(retriever, self.artifact, self.threads, self.warn)
        same = retriever.artifact_identity == previous.retriever.artifact_identity
        if same and previous.passage_encoder is not None:
            return previous.passage_encoder
        try:
            encoder = open_passage_encoder(retriever, self.artifact if same else None, self.threads, self.warn)
        except FastDPRError as exc:
            self.warn(f"passage embeddings are off for the reloaded index: {exc}")
            return None
        if encoder is None and previous.passage_encoder is not None:
            self.warn("passage embeddings are off for the reloaded index: it records no artifact this server "
                      "can open")
        return encoder

    @staticmethod
    def warm(retriever: Retriever, passage_encoder: SideEncoder | None, previous: Generation,
             warm_batch: int) -> None:
        """Run what requests will run, once, before any request does (first ONNX Runtime calls allocate)."""
        run_batch(retriever, [READY_PROBE], [1], 1)
        if warm_batch > 1:
            run_batch(retriever, [READY_PROBE] * warm_batch, [10] * warm_batch, warm_batch)
        if passage_encoder is not None and passage_encoder is not previous.passage_encoder:
            passage_encoder.encode_tokenized(passage_encoder.tokenize([("", READY_PROBE)]), 1)
