"""The defaults ``fastdpr --help`` shows are the ones the code applies, and showing them stays cheap.

HNSW and batching defaults are imported by the CLI from their light modules (``fastdpr.index.defaults``,
``fastdpr.model.batching``); the export and serve options still spell theirs in cli.py (their modules load
torch / FastAPI), so these tests hold them to the exporter's and the server's own defaults.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import fields
from typing import Any

import click
from click.testing import CliRunner

from fastdpr.cli.main import main
from fastdpr.index.defaults import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from fastdpr.model.batching import DEFAULT_PASSAGE_BATCH_SIZE, DEFAULT_QUESTION_BATCH_SIZE

# fastdpr_export.commands (the export command, a few click options) is imported to list `export`; its
# pipeline, and everything heavy, is not.
HEAVY = ("numpy", "hnswlib", "onnxruntime", "tokenizers", "torch", "transformers", "fastapi", "fastdpr_export.pipeline",
         "fastdpr_export.quantize")


def option(command: str, name: str) -> click.Option:
    group: Any = main
    with click.Context(main) as ctx:
        sub = group.get_command(ctx, command)  # `export` is a plugin command, loaded by name
    (found,) = [p for p in sub.params if p.name == name]
    assert isinstance(found, click.Option)
    return found


def help_of(command: str) -> str:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_help_imports_nothing_heavy() -> None:
    code = ("import json, sys\nfrom fastdpr.cli.main import main\n"
            "for args in (['--help'], ['index', '--help'], ['search', '--help'], ['export', '--help'], "
            "['serve', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            f"heavy = {HEAVY!r}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m in heavy or m.partition('.')[0] in heavy)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_index_defaults_are_the_hnsw_and_batching_constants() -> None:
    from fastdpr.index.ann import HnswSearcher, build_hnsw
    from fastdpr.index.build import IndexOptions

    assert option("index", "hnsw_m").default == DEFAULT_M == IndexOptions().hnsw_m
    assert option("index", "ef_construction").default == DEFAULT_EF_CONSTRUCTION == IndexOptions().ef_construction
    assert option("index", "ef_search").default == DEFAULT_EF == IndexOptions().ef_search
    assert option("index", "batch_size").default == DEFAULT_PASSAGE_BATCH_SIZE == IndexOptions().batch_size
    build = inspect.signature(build_hnsw).parameters
    assert (build["m"].default, build["ef_construction"].default) == (DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
    assert inspect.signature(HnswSearcher).parameters["ef"].default == DEFAULT_EF
    shown = help_of("index")
    assert f"[default: {DEFAULT_EF}; 1<=x<=100000]" in shown  # --ef, shown by click from the constant
    assert f"[default: {DEFAULT_M}; 2<=x<=256]" in shown and f"[default: {DEFAULT_EF_CONSTRUCTION}; " in shown
    assert "README" not in shown


def test_search_batch_size_is_the_retrievers() -> None:
    from fastdpr.search.retriever import Retriever

    assert option("search", "batch_size").default == DEFAULT_QUESTION_BATCH_SIZE
    assert inspect.signature(Retriever.search_batch).parameters["batch_size"].default == DEFAULT_QUESTION_BATCH_SIZE


def test_export_defaults_are_the_exporters() -> None:
    from conftest import require_export

    require_export()
    from fastdpr_export.pipeline import ExportOptions
    from fastdpr_export.sources import DPR_PASSAGE_MAX_LENGTH, DPR_QUESTION_MAX_LENGTH

    exporter = {f.name: f.default for f in fields(ExportOptions)}
    assert option("export", "opset").default == exporter["opset"]
    assert option("export", "int8_min_recall").default == exporter["int8_min_recall"]
    shown = help_of("export")
    assert f"--question-max-length INTEGER RANGE Default: {DPR_QUESTION_MAX_LENGTH} " in shown
    assert f"--passage-max-length INTEGER RANGE Default: {DPR_PASSAGE_MAX_LENGTH} " in shown


def test_serve_defaults_are_the_servers() -> None:
    from serve_helpers import require_serve

    require_serve()
    from fastdpr.serve.state import ServeOptions

    server = {f.name: f.default for f in fields(ServeOptions)}
    for name in ("max_batch", "max_wait_ms", "max_queue", "max_k", "max_body_bytes"):
        assert option("serve", name).default == server[name], name
