"""The ``fastdpr`` command line: export, index, search, info, serve (and demo).

A thin layer: every command calls the Python API and turns :class:`FastDPRError` into a
``click.ClickException`` (a one-line message and exit 1, never a traceback for a user mistake).
``fastdpr export`` is the export package's command (:mod:`fastdpr_export.commands`), loaded by name
when it is asked for: the runtime never imports the export package (or torch).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fastdpr import __version__
from fastdpr.common.user_errors import echo_json, user_errors
from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from fastdpr.index.vector_settings import DEFAULT_NPROBE, DEFAULT_RERANK, VECTOR_KINDS
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE

if TYPE_CHECKING:
    from fastdpr.index.build import IndexOptions

# Commands that other packages of this distribution provide: name -> "module:attribute".
PLUGIN_COMMANDS = {"export": "fastdpr_export.commands:export_command"}


class PluginGroup(click.Group):
    """A click group that also offers :data:`PLUGIN_COMMANDS`, imported only when listed or run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *PLUGIN_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in PLUGIN_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = PLUGIN_COMMANDS[cmd_name].split(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:  # fastdpr installed without its export package (should not happen)
            raise click.ClickException(f"`fastdpr {cmd_name}` is unavailable: {exc}") from exc
        assert isinstance(command, click.Command)
        return command


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="fastdpr")
def main() -> None:
    """fastdpr: CPU-only DPR retrieval with ONNX Runtime.

    \b
    Typical flow:
      fastdpr export --question-encoder Q_SRC --context-encoder C_SRC --out ARTIFACT
      fastdpr index ARTIFACT passages.tsv --out INDEX
      fastdpr search INDEX "who wrote hamlet?"
    Or try everything offline on a built-in model and corpus: fastdpr demo

    A mistake (a missing file, a corrupt corpus, an unwritable --out) ends in one line starting with
    "Error:" and exit code 1 (2 for a bad command line). Where there is more to say (every file that
    failed an integrity check, every failed export check), set FASTDPR_DETAILS=1 to print it too.
    """


@main.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True,
              help="Re-encode the probes on this machine and compare with PyTorch's embeddings (artifact: every "
                   "precision and side, and int8 retrieval agreement; int8 index: its question encoder).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--threads", type=click.IntRange(1, 256), help="ONNX Runtime threads (default: all cores).")
@user_errors
def info_command(path: Path, verify: bool, as_json: bool, threads: int | None) -> None:
    """Describe an artifact or an index directory (and check its files' sha256)."""
    from fastdpr.report.info import describe

    report = describe(path, verify=verify, threads=threads)
    if as_json:
        echo_json(report)
    else:
        from fastdpr.report.info import render

        click.echo(render(report))
    if verify and not report.get("verified", {}).get("passed", True):
        sys.exit(1)


def collect_index_options(command: Callable[..., None]) -> Callable[..., None]:
    """Hand ``command`` the click options that are fields of :class:`~fastdpr.index.build.IndexOptions`
    as one ``options`` argument (the other parameters pass through). The dataclass is imported when the
    command runs, so ``--help`` loads nothing of the index package."""

    @functools.wraps(command)
    def with_options(**kwargs: Any) -> None:
        from fastdpr.index.build import IndexOptions

        names = {field.name for field in dataclasses.fields(IndexOptions)}
        options = IndexOptions(**{name: kwargs.pop(name) for name in names & kwargs.keys()})
        command(options=options, **kwargs)

    return with_options


@main.command("index")
@click.argument("artifact", type=click.Path(path_type=Path), required=False)
@click.argument("corpus", type=click.Path(path_type=Path), required=False)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Index directory to create (with --append/--delete: the index to update).")
@click.option("--format", "fmt", type=click.Choice(["auto", "dpr-tsv", "jsonl", "beir"]), default="auto",
              show_default=True, help="Corpus format (auto: detected from the content).")
@click.option("--precision", type=click.Choice(["int8", "fp32"]),
              help="Precision of both encoders (passages, and questions unless --question-precision says "
                   "otherwise). Default: the artifact's plan (`fastdpr info ARTIFACT`).")
@click.option("--question-precision", type=click.Choice(["int8", "fp32"]),
              help="Precision of the question encoder the index carries. Default: --precision if given, "
                   "else the artifact's plan.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=DEFAULT_PASSAGE_BATCH_SIZE, show_default=True,
              help="Passages tokenized and length-sorted together. Every ONNX Runtime call embeds one "
                   "passage (OpenVINO: up to this many of one padded width), so a passage's vector never "
                   "depends on this (or on its neighbours).")
@click.option("--passage-backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto",
              show_default=True,
              help="Runtime that encodes the passages. auto: the artifact's OpenVINO graph (export --openvino) "
                   "where it passed the export's checks and was faster on this CPU class and openvino is "
                   "installed, else ONNX Runtime; the index records which and why. Questions run on ONNX "
                   "Runtime.")
@click.option("--threads", type=click.IntRange(1, 256),
              help="Cores to use (default: all): passages are encoded N at a time, one ONNX Runtime thread "
                   "each; hnswlib builds with N threads.")
@click.option("--hnsw-m", type=click.IntRange(2, 256), default=DEFAULT_M, show_default=True,
              help="HNSW graph degree (hnswlib's M).")
@click.option("--ef-construction", type=click.IntRange(1, 10000), default=DEFAULT_EF_CONSTRUCTION, show_default=True,
              help="HNSW build breadth: larger builds slower and recalls more.")
@click.option("--ef", "ef_search", type=click.IntRange(1, 100000), default=DEFAULT_EF, show_default=True,
              help="Search ef recorded in the index and applied at every load (`fastdpr search --ef` overrides "
                   "it; see docs/scale.md for recall by ef); raised to k when k is larger.")
@click.option("--strict", is_flag=True, help="Fail on the first bad corpus row instead of skipping and counting it.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists (and discard an interrupted sharded build).")
@click.option("--allow-unverified-int8", is_flag=True,
              help="Index with int8 even when the int8 graph misses its export thresholds on this CPU "
                   "(checked before encoding; recorded in the manifest either way).")
@click.option("--json", "as_json", is_flag=True, help="Print the index manifest as JSON.")
@click.option("--shard-size", type=click.IntRange(1, None), metavar="N",
              help="Write a sharded index, N passages per shard, in memory bounded by one shard "
                   "[default: one unsharded index].")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted sharded build of --out (same artifact, corpus and settings).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="With --shard-size: encode on a Ray cluster (ADDRESS, e.g. auto or ray://HOST:10001; alone: "
                   "a local cluster), --threads CPUs per encoder (default 1). Needs fastdpr[ray].")
@click.option("--lexical", type=click.Choice(["bm25"]), default=None,
              help="Also build a lexical side (BM25, in each shard of a sharded index) for `fastdpr search --mode "
                   "lexical|hybrid` [default: dense only].")
@click.option("--vectors", type=click.Choice(VECTOR_KINDS), default="fp32", show_default=True,
              help="How passage vectors are searched: fp32 = an hnswlib graph held in memory; fp16, int8 or pq = a "
                   "memory-mapped faiss IVF index over compressed codes, its candidates re-ranked by exact dot "
                   "products from the float32 vectors (needs fastdpr[compressed]; docs/scale.md#compressed-vectors).")
@click.option("--nlist", type=click.IntRange(1, None), default=None,
              help="Compressed vectors: IVF lists [default: a power of two near 4 sqrt(passages)].")
@click.option("--nprobe", type=click.IntRange(1, None), default=DEFAULT_NPROBE, show_default=True,
              help="Compressed vectors: IVF lists searched per question.")
@click.option("--pq-m", type=click.IntRange(1, None), default=None,
              help="--vectors pq: bytes per vector (sub-quantizers; must divide the dimension) [default: dim / 8].")
@click.option("--rerank", type=click.IntRange(1, None), default=DEFAULT_RERANK, show_default=True,
              help="Compressed vectors: candidates per question re-scored exactly from the float32 vectors.")
@click.option("--append", "append", type=click.Path(path_type=Path), metavar="CORPUS",
              help="Add CORPUS's passages to the existing index --out (a new version; see below).")
@click.option("--delete", "delete_ids", multiple=True, metavar="ID",
              help="Delete the passage ID from the existing index --out (repeatable; a new version).")
@click.option("--delete-file", type=click.Path(path_type=Path), metavar="FILE",
              help="Delete the passages whose ids FILE lists, one per line (blank lines ignored).")
@user_errors
@collect_index_options
def index_command(artifact: Path | None, corpus: Path | None, out: Path, fmt: str, options: IndexOptions,
                  as_json: bool, shard_size: int | None, resume: bool, ray_address: str | None,
                  append: Path | None, delete_ids: tuple[str, ...], delete_file: Path | None) -> None:
    """Encode CORPUS with ARTIFACT's context encoder into a searchable index.

    \b
    CORPUS formats: DPR psgs_w100.tsv (id<TAB>text<TAB>title, header row), JSON lines
    {"id","title","text"}, BEIR corpus.jsonl {"_id","title","text"}. Bad rows are skipped and
    counted (see the summary and `fastdpr info INDEX`), or fail the build with --strict.
    The index is written atomically: an interrupted build leaves no --out behind.
    An int8 build first checks the artifact's int8 graphs on this CPU against PyTorch's probe
    embeddings (int8 kernels differ between CPU classes) and refuses when they miss the export's
    thresholds.
    With --shard-size, an interrupted build is kept next to --out and --resume continues it.
    With --ray, the same sharded index is encoded on a Ray cluster (pip install 'fastdpr[ray]').

    \b
    Updating an index (unsharded or sharded) instead of building one:
      fastdpr index [ARTIFACT] --append NEW.tsv --out INDEX
      fastdpr index --delete ID [--delete ID ...] [--delete-file IDS.txt] --out INDEX
    (both at once: a deleted id may come back, re-encoded, from the appended corpus). Only the appended
    passages are encoded, by the artifact INDEX records (ARTIFACT, when given, must be that one), at
    INDEX's precision; HNSW graphs are extended, keeping the index's graph settings. The result equals
    a fresh build of INDEX's passages less the deleted ones, then the appended ones. INDEX is replaced
    by its next version atomically (a kill leaves the old or the new one); killed while encoding, the
    same command run again reuses what was encoded. `fastdpr info INDEX` shows the version.
    """
    from fastdpr.common.outputs import check_output_dir
    from fastdpr.index.build import BackendFactory, build_index, local_backend

    if append is not None or delete_ids or delete_file is not None:
        _update_index(artifact, corpus, out, fmt, options, as_json, shard_size, resume, ray_address, append,
                      delete_ids, delete_file)
        return
    if artifact is None or corpus is None:
        missing = "ARTIFACT" if artifact is None else "CORPUS"
        raise click.UsageError(f"Missing argument '{missing}': give ARTIFACT and CORPUS to build an index (or "
                               "--append/--delete to update one)")
    if resume and shard_size is None:
        raise click.UsageError("--resume continues a sharded build: give the same --shard-size as before")
    if ray_address is not None and shard_size is None:
        raise click.UsageError("--ray builds a sharded index: give --shard-size N")
    if ray_address is not None:
        if options.passage_backend == "openvino":
            raise click.UsageError("--ray encodes on ONNX Runtime workers: --passage-backend openvino does not apply")
        options = dataclasses.replace(options, passage_backend="onnxruntime")
    check_output_dir(out, "index", options.force or resume)  # before the corpus is encoded, not after
    if shard_size is not None:
        from fastdpr.index.build_sharded import build_sharded_index

        backend: BackendFactory = local_backend
        if ray_address is not None:
            from fastdpr.cluster.build import ray_backend

            backend = ray_backend(ray_address)
        try:
            manifest = build_sharded_index(artifact, corpus, out, fmt, options, shard_size=shard_size, resume=resume,
                                           backend=backend)
        except KeyboardInterrupt:
            click.echo(f"interrupted: the finished shards are kept; add --resume to continue the build of {out}",
                       err=True)
            raise
    else:
        manifest = build_index(artifact, corpus, out, fmt, options)
    if as_json:
        echo_json(manifest)
        return
    counts, build = manifest["counts"], manifest["build"]
    on_openvino = (build.get("passage_backend") or {}).get("name") == "openvino"
    click.echo(f"indexed {counts['indexed']} passages into {out} (passages {manifest['precision']}"
               f"{' on OpenVINO' if on_openvino else ''}, questions "
               f"{manifest['question_encoder']['precision']}, "
               f"{build['passages_per_s']} passages/s)"
               + (f" in {len(manifest['shards'])} shards" if "shards" in manifest else ""))
    if manifest.get("int8_verification"):
        from fastdpr.model.verify import Int8Verification

        click.echo(Int8Verification(**manifest["int8_verification"]).summary(), err=True)
    if counts["skipped_total"]:
        detail = ", ".join(f"{n} {reason} (lines {counts['skipped_examples'][reason]})"
                           for reason, n in counts["skipped"].items())
        click.echo(f"skipped {counts['skipped_total']} rows: {detail}", err=True)
    if counts["no_title"]:
        click.echo(f"{counts['no_title']} passages have no title (encoded from their text alone)", err=True)


def _update_index(artifact: Path | None, corpus: Path | None, out: Path, fmt: str, options: IndexOptions,
                  as_json: bool, shard_size: int | None, resume: bool, ray_address: str | None, append: Path | None,
                  delete_ids: tuple[str, ...], delete_file: Path | None) -> None:
    """``fastdpr index --append/--delete``: publish the next version of the index ``out``."""
    from fastdpr.common.errors import CorpusError
    from fastdpr.index.update import update_index

    if corpus is not None:
        raise click.UsageError("with --append the corpus is --append's value: give at most ARTIFACT")
    if artifact is not None and append is None:
        raise click.UsageError("ARTIFACT is only used to encode an --append corpus")
    refused = [flag for flag, given in (("--shard-size", shard_size is not None), ("--resume", resume),
                                        ("--ray", ray_address is not None), ("--force", options.force),
                                        ("--precision", options.precision is not None),
                                        ("--question-precision", options.question_precision is not None),
                                        ("--passage-backend", options.passage_backend != "auto"),
                                        ("--vectors", options.vector_settings != type(options)().vector_settings))
               if given]
    if refused:
        raise click.UsageError(f"{refused[0]} does not apply to --append/--delete (an update keeps the index's "
                               "settings; rerun the same command to continue an interrupted one)")
    ids = list(delete_ids)
    if delete_file is not None:
        try:
            ids += [line.strip() for line in delete_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot read --delete-file {delete_file}: {exc}") from exc
        if not ids:
            raise CorpusError(f"--delete-file {delete_file} lists no ids")
    manifest = update_index(out, append=append, fmt=fmt, delete=ids, artifact=artifact, options=options,
                            log=lambda line: click.echo(line, err=True))
    if as_json:
        echo_json(manifest)
        return
    version, changes = manifest["version"], manifest["version"]["changes"]
    click.echo(f"{out} is now version {version['number']}: {changes['appended']} passages appended, "
               f"{changes['deleted']} deleted, {manifest['counts']['indexed']} in all "
               f"({changes['seconds']['total']} s)")
    skipped = changes.get("corpus", {}).get("skipped_total", 0)
    if skipped:
        click.echo(f"skipped {skipped} rows of {append}: {changes['corpus']['skipped']}", err=True)


def _print_hits(hits: list[Any], width: int = 100) -> None:
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.text.split())
        snippet = text if len(text) <= width else text[: width - 1] + "…"
        click.echo(f"{rank:>3}. {hit.score:8.3f}  [{hit.id}] {hit.title}")
        click.echo(f"      {snippet}")


@main.command("search")
@click.argument("index", type=click.Path(path_type=Path))
@click.argument("question", required=False)
@click.option("-k", "k", type=click.IntRange(1, 100000), default=None,
              help="Passages per question (default: 10; 100 with --queries).")
@click.option("--ef", type=click.IntRange(1, 100000), help="HNSW search breadth (default: the index's; raised to k).")
@click.option("--exact", is_flag=True, help="Brute-force dot product instead of HNSW (for parity checks).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit: rank, id, title, text, score.")
@click.option("--queries", type=click.Path(path_type=Path),
              help="A question file (DPR qas .tsv/.csv, JSON lines, BEIR queries.jsonl, or plain text).")
@click.option("--queries-format", type=click.Choice(["auto", "dpr-qas", "jsonl", "beir", "text"]), default="auto",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="With --queries: DPR retrieval-results JSON to write.")
@click.option("--match", type=click.Choice(["string", "regex"]), default="string", show_default=True,
              help="has_answer rule: DPR string match, or regex answers (CuratedTREC).")
@click.option("--threads", type=click.IntRange(1, 256), help="ONNX Runtime threads (default: all cores).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=DEFAULT_QUESTION_BATCH_SIZE, show_default=True,
              help="With --queries: questions tokenized together (every ONNX Runtime call embeds one question).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Serve a sharded index's shards from Ray actors on this cluster (auto, ray://HOST:10001, "
                   "HOST:6379; every node must see INDEX at the same path). Needs fastdpr[ray].")
@click.option("--mode", type=click.Choice(["dense", "lexical", "hybrid"]), default="dense", show_default=True,
              help="Rank by embeddings, by BM25, or by both fused (lexical and hybrid need an index built with "
                   "--lexical bm25; see docs/hybrid.md).")
@click.option("--fusion", type=click.Choice(["weighted", "rrf"]), default="weighted", show_default=True,
              help="With --mode hybrid: min-max normalised weighted score sum, or reciprocal rank fusion.")
@click.option("--weight", type=click.FloatRange(0.0, 1.0), default=None,
              help="With --mode hybrid --fusion weighted: the lexical side's weight (default: the one tuned on "
                   "held-out questions, docs/hybrid.md).")
@user_errors
def search_command(index: Path, question: str | None, k: int | None, ef: int | None, exact: bool, as_json: bool,
                   queries: Path | None, queries_format: str, out: Path | None, match: str,
                   threads: int | None, batch_size: int, ray_address: str | None, mode: str, fusion: str,
                   weight: float | None) -> None:
    """Answer QUESTION from INDEX, or every question of --queries into --out (DPR results JSON)."""
    from fastdpr.search.retriever import Retriever

    if (question is None) == (queries is None):
        raise click.UsageError("give a QUESTION or --queries FILE (one of them)")
    if queries is not None and out is None:
        raise click.UsageError("--queries needs --out RESULTS.json")
    if question is not None and not question.strip():
        raise click.UsageError("the question is empty")
    if out is not None:
        if queries is None:
            raise click.UsageError("--out writes the results of --queries FILE; give --queries")
        from fastdpr.common.outputs import check_output_file

        check_output_file(out, "results file")  # before the questions are searched, not after
    retriever = Retriever.load(index, threads=threads, ef=ef, exact=exact, ray_address=ray_address)
    if question is not None:
        hits = retriever.search(question, k=k or 10, mode=mode, fusion=fusion, weight=weight)
        if as_json:
            for rank, hit in enumerate(hits, 1):
                click.echo(json.dumps({"rank": rank, "id": hit.id, "title": hit.title, "text": hit.text,
                                       "score": hit.score}, ensure_ascii=False))
        else:
            _print_hits(hits)
        return
    _search_file(retriever, queries, queries_format, out, k or 100, match, batch_size,  # type: ignore[arg-type]
                 {"mode": mode, "fusion": fusion, "weight": weight})


def _search_file(retriever: Any, queries: Path, fmt: str, out: Path, k: int, match: str, batch_size: int,
                 how: dict[str, Any] | None = None) -> None:
    from tqdm import tqdm

    from fastdpr.common.integrity import write_json
    from fastdpr.corpus.questions import read_questions
    from fastdpr.eval.results import dpr_results, top_k_accuracy

    questions = read_questions(queries, fmt)  # type: ignore[arg-type]
    hits: list[Any] = []
    with tqdm(total=len(questions), unit=" questions", disable=None) as bar:
        for start in range(0, len(questions), 256):
            chunk = questions[start:start + 256]
            hits.extend(retriever.search_batch([q.question for q in chunk], k=k, batch_size=batch_size, **(how or {})))
            bar.update(len(chunk))
    results = dpr_results(questions, hits, match)  # type: ignore[arg-type]
    write_json(out, results)
    accuracy = top_k_accuracy(results, [k_ for k_ in (1, 5, 20, 50, 100) if k_ <= k])
    summary = ", ".join(f"top-{k_} {v * 100:.2f}%" for k_, v in accuracy.items())
    click.echo(f"wrote {len(results)} results to {out}" + (f"; answer recall: {summary}" if summary else ""))


@main.command("serve")
@click.argument("index", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
@click.option("--threads", type=click.IntRange(1, 256),
              help="ONNX Runtime / hnswlib threads per worker (default: 1, or the cores divided among --workers).")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Batches encoded at once (default: the cores divided by --threads); threads x workers may not "
                   "exceed the cores.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Most questions (from any number of requests) per ONNX Runtime call; 1 turns batching off.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 60000), default=0.0, show_default=True,
              help="How long the first question of a batch waits for others. 0 (measured fastest): a lone "
                   "request goes at once, and requests that arrive while the workers encode still form the "
                   "next batch.")
@click.option("--max-queue", type=click.IntRange(1, 1_000_000), default=256, show_default=True,
              help="Questions waiting for a batch before requests are refused with 503 + Retry-After "
                   "(also the most questions per request).")
@click.option("--max-k", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="Largest k a request may ask.")
@click.option("--max-body", "max_body_bytes", type=click.IntRange(1024, 1 << 30), default=256 * 1024,
              show_default=True, help="Largest request body in bytes (413 above).")
@click.option("--artifact", type=click.Path(path_type=Path),
              help="The artifact the index was built from, for POST /embed of passages (default: the path the "
                   "index recorded, when it is still there).")
@click.option("--model-name",
              help="The OpenAI-compatible models are NAME-query and NAME-passage (default: the index directory's "
                   "name).")
@click.option("--api-key", metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on every route but /health (401 without it). Prefer "
                   "FASTDPR_API_KEY: a command line is visible to every user of the machine.")
@click.option("--cors-allow-origin", "cors_allow_origins", multiple=True, metavar="ORIGIN",
              help="Let browser pages of ORIGIN (e.g. https://app.example.com, or *) call the server; repeatable "
                   "(in FASTDPR_CORS_ALLOW_ORIGIN: separated by spaces).")
@click.option("--watch-index", type=click.FloatRange(0, 86400), default=0.0, show_default=True, metavar="SECONDS",
              help="Also reload INDEX when its manifest changes, checked every SECONDS (0: only on SIGHUP).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="warning",
              show_default=True, help="uvicorn's log level.")
@user_errors
def serve_command(index: Path, host: str, port: int, threads: int | None, workers: int | None, max_batch: int,
                  max_wait_ms: float, max_queue: int, max_k: int, max_body_bytes: int, artifact: Path | None,
                  model_name: str | None, api_key: str | None, cors_allow_origins: tuple[str, ...],
                  watch_index: float, log_level: str) -> None:
    """Serve INDEX over HTTP: POST/GET /search, POST /embed, an OpenAI-compatible POST /v1/embeddings,
    /health, /ready, /info, /metrics, a search page at /, and the OpenAPI schema at /openapi.json.
    Concurrent requests are batched into one ONNX Runtime call. SIGTERM (or Ctrl-C) stops accepting
    connections, answers the accepted requests and exits. SIGHUP reloads INDEX once it was republished
    (e.g. by `fastdpr index ... --force`): the new index is loaded and warmed beside the old one, which
    answers meanwhile and finishes its requests; no request fails, and /info and the X-Index-Version
    header say which version answered. Needs the serve extra: pip install 'fastdpr[serve]'

    Every option can also be set by an environment variable, FASTDPR_ and the option's name in capitals
    (FASTDPR_API_KEY, FASTDPR_PORT, FASTDPR_MAX_WAIT_MS, ...; INDEX: FASTDPR_INDEX); an option on the
    command line wins over the variable.
    """
    from fastdpr.serve.server import serve

    serve(index, host=host, port=port, threads=threads, workers=workers, artifact=artifact, log_level=log_level,
          options_kwargs={"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue,
                          "max_k": max_k, "max_body_bytes": max_body_bytes, "model_name": model_name},
          api_key=api_key, cors_allow_origins=cors_allow_origins, watch_index=watch_index,
          log=lambda line: click.echo(line, err=True))


def settable_by_environment(command: click.Command, prefix: str = "FASTDPR_") -> None:
    """Let every option (and argument) of ``command`` be set by ``PREFIX<NAME>`` (the long option's name in
    capitals, dashes as underscores: ``--max-wait-ms`` is ``FASTDPR_MAX_WAIT_MS``), shown in ``--help``."""
    for param in command.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len).lstrip("-")
            param.envvar = prefix + longest.replace("-", "_").upper()
            param.show_envvar = True
        elif param.name:
            param.envvar = prefix + param.name.upper()


settable_by_environment(serve_command)


DEMO_QUESTIONS = (
    "how do I catch an exception and still run cleanup code?",
    "what does the yield statement do?",
    "how are default argument values evaluated?",
)


def _demo_home() -> Path:
    import os

    return Path(os.environ.get("FASTDPR_HOME", Path.home() / ".cache" / "fastdpr")) / "demo"


@main.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Where the demo's artifact and index go (default: $FASTDPR_HOME/demo or ~/.cache/fastdpr/demo).")
@click.option("--question", "questions", multiple=True, help="Ask your own question (repeatable).")
@click.option("-k", "k", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--rebuild", is_flag=True, help="Export and index again even if the demo files exist.")
@user_errors
def demo_command(workdir: Path | None, questions: tuple[str, ...], k: int, rebuild: bool) -> None:
    """The whole job offline, on built-ins: export the packaged all-MiniLM-L6-v2, index the Python
    docs' topics (pydoc_data.topics, shipped with every Python) and answer questions."""
    from fastdpr.common.outputs import check_output_dir
    from fastdpr.corpus.builtin import pydoc_topic_passages
    from fastdpr.corpus.reader import write_corpus
    from fastdpr.index.build import IndexOptions, build_index
    from fastdpr.model.artifact import Artifact
    from fastdpr.search.retriever import Retriever

    home = check_output_dir(workdir or _demo_home(), "demo directory", force=True)
    artifact_dir, index_dir = home / "artifact-minilm", home / "index-pydoc-topics"
    corpus = home / "pydoc-topics.jsonl"
    home.mkdir(parents=True, exist_ok=True)
    if rebuild or not (artifact_dir / "manifest.json").is_file():
        click.echo("1/3 exporting builtin:all-MiniLM-L6-v2 (ONNX, fused, int8; validated against PyTorch)", err=True)
        # export is a plugin command loaded by name from the root group (fastdpr_export), not this command.
        root = click.get_current_context().find_root()
        export = root.command.get_command(root, "export")  # type: ignore[attr-defined]
        assert export is not None, "the export command is registered in PLUGIN_COMMANDS"
        root.invoke(export, encoder="builtin:all-MiniLM-L6-v2", out=artifact_dir, force=True, quiet=True)
    else:
        Artifact.load(artifact_dir)
        click.echo(f"1/3 using the exported artifact in {artifact_dir}", err=True)
    if rebuild or not (index_dir / "manifest.json").is_file():
        passages = pydoc_topic_passages()
        write_corpus(corpus, passages, "jsonl")
        click.echo(f"2/3 indexing {len(passages)} passages of the Python docs' topics", err=True)
        build_index(artifact_dir, corpus, index_dir, "jsonl", IndexOptions(force=True))
    else:
        click.echo(f"2/3 using the index in {index_dir}", err=True)
    click.echo("3/3 searching\n", err=True)
    with Retriever.load(index_dir) as retriever:
        for question in questions or DEMO_QUESTIONS:
            click.echo(f"Q: {question}")
            _print_hits(retriever.search(question, k=k))
            click.echo("")
    click.echo(f"Try: fastdpr search {index_dir} \"your question\"\n     fastdpr info {artifact_dir} --verify",
               err=True)
