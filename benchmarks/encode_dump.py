"""Encode SQuAD dev exactly as fastdpr deploys it and save the vectors, for another CPU class.

Run it under an emulated CPU (valgrind presents an AVX2 CPU without AVX-512/VNNI/AMX, so ONNX Runtime
dispatches its AVX2 int8 kernels), then measure the vectors on any machine with
``python -m benchmarks parity ... --vectors DIR``::

    FASTDPR_CPU_CLASS=x86-avx2 valgrind -q --tool=none python -m benchmarks.encode_dump --artifact ART \\
        --squad dev-v1.1.json --out DIR

Passages are encoded as ``fastdpr index`` encodes them (chunks of ``ENCODE_CHUNK``, length-sorted
batches of the default passage batch size) and questions as ``Retriever.search_batch`` does, because
dynamic int8 depends on batch composition. It imports neither ``fastdpr.index.build`` nor the retriever:
they load hnswlib, whose build here uses AVX-512 instructions that valgrind cannot run.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.common import log, machine, versions
from fastdpr.common.integrity import write_json
from fastdpr.corpus.squad import load_squad
from fastdpr.model.artifact import Artifact
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE, ENCODE_CHUNK


def encode_dump(artifact_dir: Path, squad: Path, out: Path, precision: str, threads: int,
                question_batch_size: int = DEFAULT_QUESTION_BATCH_SIZE) -> dict[str, object]:
    """Write ``passages.npy``, ``questions.npy`` and ``meta.json`` (ids, class, settings) into ``out``."""
    artifact = Artifact.load(artifact_dir)
    passages, questions = load_squad(squad)
    out.mkdir(parents=True, exist_ok=True)
    context = artifact.encoder("context", precision, threads)
    started = time.perf_counter()
    chunks = []
    for start in range(0, len(passages), ENCODE_CHUNK):
        chunk = passages[start:start + ENCODE_CHUNK]
        chunks.append(context.encode_passages([(p.title, p.text) for p in chunk], DEFAULT_PASSAGE_BATCH_SIZE))
        log(f"[encode-dump] {start + len(chunk)}/{len(passages)} passages, {time.perf_counter() - started:.0f} s")
    np.save(out / "passages.npy", np.concatenate(chunks), allow_pickle=False)
    question_vectors = artifact.encoder("question", precision, threads).encode_questions(
        [q.question for q in questions], question_batch_size)
    np.save(out / "questions.npy", question_vectors, allow_pickle=False)
    meta: dict[str, object] = {
        "artifact": str(artifact_dir), "artifact_identity": artifact.identity,
        "recipe": (artifact.manifest["quantization"] or {}).get("recipe"), "precision": precision,
        "squad": str(squad), "passages": len(passages), "questions": len(questions),
        "passage_ids": [p.id for p in passages],
        "batching": {"passage_chunk": ENCODE_CHUNK, "passage_batch": DEFAULT_PASSAGE_BATCH_SIZE,
                     "question_batch": question_batch_size},
        "machine": machine(), "versions": versions(), "threads": threads,
        "date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "meta.json", meta)
    return meta


@click.command("encode-dump")
@click.option("--artifact", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--squad", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(["int8", "fp32"]), default="int8", show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--question-batch-size", type=click.IntRange(1, 4096), default=DEFAULT_QUESTION_BATCH_SIZE,
              show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def encode_dump_command(artifact: Path, squad: Path, precision: str, threads: int, question_batch_size: int,
                        out: Path) -> None:
    """Encode SQuAD dev passages and questions as deployed; save the vectors (for another CPU class)."""
    meta = encode_dump(artifact, squad, out, precision, threads, question_batch_size)
    click.echo(f"wrote {out}: {meta['passages']} passages, {meta['questions']} questions on "
               f"{meta['machine']['int8_class']['int8_class']} in {meta['seconds']} s")  # type: ignore[index]


if __name__ == "__main__":  # `python -m benchmarks.encode_dump`: imports neither hnswlib nor torch (valgrind-safe)
    encode_dump_command()
