"""Bad input to every CLI command: one line of error, exit 1 or 2, no traceback, nothing half-written.

One table per command. Each case names the bad input, the command line, the output path the command
must leave as it found it (absent, or unchanged), and a fragment of the message the user must read.
Every case must fail fast: the output location and the inputs are checked before any long work, so
no case here exports a model or encodes a corpus. A few cases also run in a real interpreter, to
prove no traceback reaches a terminal (CliRunner catches exceptions that a real process would print).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fastdpr.cli.main import main

# A JSON value nested deeper than Python's recursion limit: json.loads raises RecursionError on it.
DEEP = "[" * 100_000 + "]" * 100_000
QUESTIONS = 'who wrote hamlet?\t["Shakespeare"]\nwhat is a generator?\t["yield"]\n'


@dataclass
class Inputs:
    """Good and bad files for the tables, in one temporary directory."""

    root: Path
    artifact: Path
    index: Path
    corpus: Path

    def path(self, name: str) -> Path:
        return self.root / name


def make_inputs(root: Path, artifact: Path, index: Path, corpus: Path) -> Inputs:
    good = corpus.read_bytes()[:20_000].rsplit(b"\n", 1)[0] + b"\n"  # whole lines of the pydoc corpus
    (root / "a-dir").mkdir()
    (root / "a-file.txt").write_text("not a directory\n", encoding="utf-8")
    (root / "empty.jsonl").write_bytes(b"")
    (root / "blank.jsonl").write_text("\n  \n\n", encoding="utf-8")
    corrupt = bytearray(gzip.compress(good))
    corrupt[30:60] = bytes(b ^ 0xFF for b in corrupt[30:60])  # damage the deflate stream, keep the magic
    (root / "corrupt.jsonl.gz").write_bytes(bytes(corrupt))
    (root / "truncated.jsonl.gz").write_bytes(gzip.compress(good)[:-100])
    (root / "nested-first.jsonl").write_text('{"id": "1", "text": ' + DEEP + "}\n", encoding="utf-8")
    (root / "nested-all.jsonl").write_text(('{"id": "1", "text": ' + DEEP + "}\n") * 2, encoding="utf-8")
    (root / "not-utf8.jsonl").write_bytes(b"\xff\xfe\xfa not UTF-8\n" * 3)
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "wrong-columns.tsv").write_text("id\ttext\ttitle\n1\tonly two\n2\ta\tb\tc\n", encoding="utf-8")
    (root / "few.jsonl").write_text("".join(f'{{"id": "{n}", "text": "passage {n}"}}\n' for n in range(3)),
                                    encoding="utf-8")
    (root / "questions.csv").write_text(QUESTIONS, encoding="utf-8")
    (root / "questions-nested.jsonl").write_text('{"question": ' + DEEP + "}\n", encoding="utf-8")
    (root / "questions-bad-answers.csv").write_text("who?\t['unclosed\n", encoding="utf-8")
    (root / "questions-not-utf8.txt").write_bytes(b"who wrote \xff hamlet?\n")
    (root / "no-manifest").mkdir()
    for name, text in (("manifest-broken", "{"), ("manifest-nested", DEEP), ("manifest-list", "[1, 2]")):
        (root / name).mkdir()
        (root / name / "manifest.json").write_text(text, encoding="utf-8")
    (root / "manifest-not-utf8").mkdir()
    (root / "manifest-not-utf8" / "manifest.json").write_bytes(b'{"format": "\xff"}')
    (root / "existing").mkdir()
    (root / "existing" / "keep.txt").write_text("precious", encoding="utf-8")
    return Inputs(root, artifact, index, corpus)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, tiny_index: Path,
           pydoc_corpus: Path) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("bad-inputs"), tiny_artifact, tiny_index, pydoc_corpus)


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory nobody may create files in: a read-only directory, or /sys for root (who ignores
    permission bits; sysfs refuses new files to everyone)."""
    if os.geteuid() == 0:
        return Path("/sys")
    directory = tmp_path_factory.mktemp("read-only")
    directory.chmod(0o500)
    return directory


@dataclass(frozen=True)
class Case:
    """One bad command line. ``args`` and ``out`` are built from the inputs (and the unwritable dir)."""

    name: str
    args: Callable[[Inputs, Path], list[object]]
    message: str  # a fragment of the one-line error the user must read
    out: Callable[[Inputs, Path], Path] | None = None  # must be left as it was (absent or unchanged)
    code: int = 1


def out_dir(i: Inputs, u: Path) -> Path:
    return i.path("new-out")


def results(i: Inputs, u: Path) -> Path:
    return i.path("results.json")


INDEX_CASES = [
    Case("artifact missing", lambda i, u: ["index", i.path("missing"), i.corpus, "--out", out_dir(i, u)],
         "does not exist", out_dir),
    Case("artifact is a file", lambda i, u: ["index", i.path("a-file.txt"), i.corpus, "--out", out_dir(i, u)],
         "not a directory", out_dir),
    Case("artifact without manifest", lambda i, u: ["index", i.path("no-manifest"), i.corpus, "--out", out_dir(i, u)],
         "has no manifest.json", out_dir),
    Case("artifact is an index", lambda i, u: ["index", i.index, i.corpus, "--out", out_dir(i, u)],
         "is not a fastdpr-artifact", out_dir),
    Case("artifact manifest broken", lambda i, u: ["index", i.path("manifest-broken"), i.corpus, "--out",
                                                   out_dir(i, u)], "is not valid JSON", out_dir),
    Case("artifact manifest nested", lambda i, u: ["index", i.path("manifest-nested"), i.corpus, "--out",
                                                   out_dir(i, u)], "is not valid JSON", out_dir),
    Case("artifact manifest not UTF-8", lambda i, u: ["index", i.path("manifest-not-utf8"), i.corpus, "--out",
                                                      out_dir(i, u)], "is not valid JSON", out_dir),
    Case("corpus missing", lambda i, u: ["index", i.artifact, i.path("missing.tsv"), "--out", out_dir(i, u)],
         "does not exist", out_dir),
    Case("corpus is a directory", lambda i, u: ["index", i.artifact, i.path("a-dir"), "--out", out_dir(i, u)],
         "is a directory", out_dir),
    Case("corpus empty", lambda i, u: ["index", i.artifact, i.path("empty.jsonl"), "--out", out_dir(i, u)],
         "is empty", out_dir),
    Case("corpus blank lines only", lambda i, u: ["index", i.artifact, i.path("blank.jsonl"), "--out",
                                                  out_dir(i, u)], "is empty", out_dir),
    Case("corpus corrupt gzip", lambda i, u: ["index", i.artifact, i.path("corrupt.jsonl.gz"), "--out",
                                              out_dir(i, u)], "cannot read", out_dir),
    Case("corpus corrupt gzip, format given", lambda i, u: ["index", i.artifact, i.path("corrupt.jsonl.gz"),
                                                            "--format", "jsonl", "--out", out_dir(i, u)],
         "cannot read", out_dir),
    Case("corpus truncated gzip", lambda i, u: ["index", i.artifact, i.path("truncated.jsonl.gz"), "--out",
                                                out_dir(i, u)], "cannot read", out_dir),
    Case("corpus nested JSON (detection)", lambda i, u: ["index", i.artifact, i.path("nested-first.jsonl"),
                                                         "--out", out_dir(i, u)], "nested too deeply", out_dir),
    Case("corpus nested JSON (rows)", lambda i, u: ["index", i.artifact, i.path("nested-all.jsonl"),
                                                    "--format", "jsonl", "--out", out_dir(i, u)],
         "2 skipped: malformed JSON", out_dir),
    Case("corpus nested JSON, strict", lambda i, u: ["index", i.artifact, i.path("nested-all.jsonl"),
                                                     "--format", "jsonl", "--strict", "--out", out_dir(i, u)],
         "line 1: malformed JSON (nested too deeply)", out_dir),
    Case("corpus not UTF-8", lambda i, u: ["index", i.artifact, i.path("not-utf8.jsonl"), "--out", out_dir(i, u)],
         "not valid UTF-8", out_dir),
    Case("corpus not UTF-8, format given", lambda i, u: ["index", i.artifact, i.path("not-utf8.jsonl"),
                                                         "--format", "jsonl", "--out", out_dir(i, u)],
         "3 skipped: invalid UTF-8", out_dir),
    Case("corpus binary", lambda i, u: ["index", i.artifact, i.path("binary.bin"), "--out", out_dir(i, u)],
         "contains no passages", out_dir),
    Case("corpus wrong column count", lambda i, u: ["index", i.artifact, i.path("wrong-columns.tsv"), "--out",
                                                    out_dir(i, u)], "2 skipped: wrong column count", out_dir),
    Case("sharded, corrupt gzip", lambda i, u: ["index", i.artifact, i.path("corrupt.jsonl.gz"), "--out",
                                                out_dir(i, u), "--shard-size", 100], "cannot read", out_dir),
    Case("sharded, nested JSON", lambda i, u: ["index", i.artifact, i.path("nested-all.jsonl"), "--format", "jsonl",
                                               "--out", out_dir(i, u), "--shard-size", 100],
         "malformed JSON", out_dir),
    Case("out exists", lambda i, u: ["index", i.artifact, i.corpus, "--out", i.path("existing")],
         "already exists; pass --force", lambda i, u: i.path("existing")),
    Case("out is a file", lambda i, u: ["index", i.artifact, i.corpus, "--out", i.path("a-file.txt")],
         "exists and is not a directory", lambda i, u: i.path("a-file.txt")),
    Case("out is a file, --force", lambda i, u: ["index", i.artifact, i.corpus, "--out", i.path("a-file.txt"),
                                                 "--force"],
         "exists and is not a directory", lambda i, u: i.path("a-file.txt")),
    Case("out below a file", lambda i, u: ["index", i.artifact, i.corpus, "--out", i.path("a-file.txt") / "idx"],
         "is not a directory", lambda i, u: i.path("a-file.txt")),
    Case("out unwritable", lambda i, u: ["index", i.artifact, i.corpus, "--out", u / "fastdpr-idx"],
         "is not writable", lambda i, u: u / "fastdpr-idx"),
    Case("out unwritable, sharded", lambda i, u: ["index", i.artifact, i.corpus, "--out", u / "fastdpr-idx",
                                                  "--shard-size", 100],
         "is not writable", lambda i, u: u / "fastdpr-idx"),
    Case("batch size 0", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--batch-size", 0],
         "--batch-size", out_dir, code=2),
    Case("hnsw m 1", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--hnsw-m", 1],
         "--hnsw-m", out_dir, code=2),
    Case("shard size 0", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--shard-size", 0],
         "--shard-size", out_dir, code=2),
    Case("unknown format", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--format", "csv"],
         "--format", out_dir, code=2),
    Case("unknown precision", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--precision",
                                            "int4"], "--precision", out_dir, code=2),
    Case("resume without shards", lambda i, u: ["index", i.artifact, i.corpus, "--out", out_dir(i, u), "--resume"],
         "--shard-size", out_dir, code=2),
    Case("no --out", lambda i, u: ["index", i.artifact, i.corpus], "Missing option '--out'", code=2),
    Case("no corpus", lambda i, u: ["index", i.artifact, "--out", out_dir(i, u)], "Missing argument", out_dir,
         code=2),
]

SEARCH_CASES = [
    Case("index missing", lambda i, u: ["search", i.path("missing"), "q"], "does not exist"),
    Case("index is a file", lambda i, u: ["search", i.path("a-file.txt"), "q"], "not a directory"),
    Case("index without manifest", lambda i, u: ["search", i.path("no-manifest"), "q"], "has no manifest.json"),
    Case("index is an artifact", lambda i, u: ["search", i.artifact, "q"], "is not a fastdpr-index"),
    Case("index manifest broken", lambda i, u: ["search", i.path("manifest-broken"), "q"], "is not valid JSON"),
    Case("index manifest nested", lambda i, u: ["search", i.path("manifest-nested"), "q"], "is not valid JSON"),
    Case("index manifest a list", lambda i, u: ["search", i.path("manifest-list"), "q"], "is not a fastdpr-index"),
    Case("no question", lambda i, u: ["search", i.index], "give a QUESTION or --queries", code=2),
    Case("question and --queries", lambda i, u: ["search", i.index, "q", "--queries", i.path("questions.csv"),
                                                 "--out", results(i, u)],
         "give a QUESTION or --queries", results, code=2),
    Case("empty question", lambda i, u: ["search", i.index, "   "], "the question is empty", code=2),
    Case("k 0", lambda i, u: ["search", i.index, "q", "-k", 0], "-k", code=2),
    Case("k negative", lambda i, u: ["search", i.index, "q", "-k", -3], "-k", code=2),
    Case("k not a number", lambda i, u: ["search", i.index, "q", "-k", "ten"], "-k", code=2),
    Case("ef 0", lambda i, u: ["search", i.index, "q", "--ef", 0], "--ef", code=2),
    Case("threads 0", lambda i, u: ["search", i.index, "q", "--threads", 0], "--threads", code=2),
    Case("--queries without --out", lambda i, u: ["search", i.index, "--queries", i.path("questions.csv")],
         "--queries needs --out", code=2),
    Case("--out without --queries", lambda i, u: ["search", i.index, "q", "--out", results(i, u)],
         "--out writes the results of --queries", results, code=2),
    Case("queries missing", lambda i, u: ["search", i.index, "--queries", i.path("missing.csv"), "--out",
                                          results(i, u)], "does not exist", results),
    Case("queries a directory", lambda i, u: ["search", i.index, "--queries", i.path("a-dir"), "--out",
                                              results(i, u)], "is a directory", results),
    Case("queries empty", lambda i, u: ["search", i.index, "--queries", i.path("empty.jsonl"), "--out",
                                        results(i, u)], "is empty", results),
    Case("queries nested JSON", lambda i, u: ["search", i.index, "--queries", i.path("questions-nested.jsonl"),
                                              "--out", results(i, u)], "nested too deeply", results),
    Case("queries nested JSON, format given", lambda i, u: ["search", i.index, "--queries",
                                                            i.path("questions-nested.jsonl"), "--queries-format",
                                                            "jsonl", "--out", results(i, u)],
         "line 1: JSON nested too deeply", results),
    Case("queries bad answer list", lambda i, u: ["search", i.index, "--queries", i.path("questions-bad-answers.csv"),
                                                  "--queries-format", "dpr-qas", "--out", results(i, u)],
         "line 1: answer list is not a Python list literal", results),
    Case("queries not UTF-8", lambda i, u: ["search", i.index, "--queries", i.path("questions-not-utf8.txt"),
                                            "--out", results(i, u)], "line 1: invalid UTF-8", results),
    Case("queries corrupt gzip", lambda i, u: ["search", i.index, "--queries", i.path("corrupt.jsonl.gz"),
                                               "--out", results(i, u)], "invalid UTF-8", results),
    # issue #14: FileNotFoundError after all the searching was done
    Case("out in a missing directory", lambda i, u: ["search", i.index, "--queries", i.path("questions.csv"),
                                                     "--out", i.path("missing") / "dir" / "r.json"],
         "directory", lambda i, u: i.path("missing")),
    Case("out is a directory", lambda i, u: ["search", i.index, "--queries", i.path("questions.csv"), "--out",
                                             i.path("existing")], "is a directory", lambda i, u: i.path("existing")),
    Case("out below a file", lambda i, u: ["search", i.index, "--queries", i.path("questions.csv"), "--out",
                                           i.path("a-file.txt") / "r.json"], "is not a directory",
         lambda i, u: i.path("a-file.txt")),
    Case("out unwritable", lambda i, u: ["search", i.index, "--queries", i.path("questions.csv"), "--out",
                                         u / "fastdpr-results.json"], "is not writable",
         lambda i, u: u / "fastdpr-results.json"),
]

INFO_CASES = [
    Case("missing", lambda i, u: ["info", i.path("missing")], "does not exist"),
    Case("a file", lambda i, u: ["info", i.path("a-file.txt")], "a-file.txt"),
    Case("no manifest", lambda i, u: ["info", i.path("no-manifest")], "has no manifest.json"),
    Case("manifest broken", lambda i, u: ["info", i.path("manifest-broken")], "is not valid JSON"),
    Case("manifest nested", lambda i, u: ["info", i.path("manifest-nested")], "is not valid JSON"),
    Case("manifest not UTF-8", lambda i, u: ["info", i.path("manifest-not-utf8")], "is not valid JSON"),
    Case("manifest a list", lambda i, u: ["info", i.path("manifest-list")], "manifest-list"),
    Case("threads 0", lambda i, u: ["info", i.artifact, "--threads", 0], "--threads", code=2),
    Case("no path", lambda i, u: ["info"], "Missing argument", code=2),
]

EXPORT_CASES = [
    Case("no source", lambda i, u: ["export", "--out", out_dir(i, u)], "--question-encoder", out_dir),
    Case("both kinds of source", lambda i, u: ["export", "--encoder", i.path("a-dir"), "--question-encoder",
                                               i.path("a-dir"), "--context-encoder", i.path("a-dir"), "--out",
                                               out_dir(i, u)], "not both", out_dir),
    Case("only a question encoder", lambda i, u: ["export", "--question-encoder", i.path("a-dir"), "--out",
                                                  out_dir(i, u)], "--context-encoder", out_dir),
    Case("source missing", lambda i, u: ["export", "--encoder", i.path("missing-model"), "--out", out_dir(i, u)],
         "is not a model directory", out_dir),
    Case("source is a file", lambda i, u: ["export", "--encoder", i.path("a-file.txt"), "--out", out_dir(i, u)],
         "is not a model directory", out_dir),
    Case("source is an empty directory", lambda i, u: ["export", "--encoder", i.path("a-dir"), "--out",
                                                       out_dir(i, u)], "a-dir", out_dir),
    Case("unknown builtin", lambda i, u: ["export", "--encoder", "builtin:nope", "--out", out_dir(i, u)],
         "builtin:nope", out_dir),
    Case("unknown recipe", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--quantize", "int3",
                                         "--out", out_dir(i, u)], "unknown quantization recipe 'int3'", out_dir),
    Case("calibration missing", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--calibration",
                                              i.path("missing.jsonl"), "--out", out_dir(i, u)],
         "does not exist", out_dir),
    Case("calibration a directory", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2",
                                                  "--calibration", i.path("a-dir"), "--out", out_dir(i, u)],
         "is a directory", out_dir),
    Case("calibration empty", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--calibration",
                                            i.path("empty.jsonl"), "--out", out_dir(i, u)], "is empty", out_dir),
    Case("calibration corrupt gzip", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2",
                                                   "--calibration", i.path("corrupt.jsonl.gz"), "--out",
                                                   out_dir(i, u)], "cannot read", out_dir),
    Case("calibration nested JSON", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2",
                                                  "--calibration", i.path("nested-first.jsonl"), "--out",
                                                  out_dir(i, u)], "nested too deeply", out_dir),
    Case("calibration too small", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2",
                                                "--calibration", i.path("few.jsonl"), "--out",
                                                out_dir(i, u)], "3 passages is too few to calibrate on", out_dir),
    Case("out exists", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--out",
                                     i.path("existing")], "already exists; pass --force",
         lambda i, u: i.path("existing")),
    Case("out is a file", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--out",
                                        i.path("a-file.txt"), "--force"], "exists and is not a directory",
         lambda i, u: i.path("a-file.txt")),
    Case("out below a file", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--out",
                                           i.path("a-file.txt") / "art"], "is not a directory",
         lambda i, u: i.path("a-file.txt")),
    Case("out unwritable", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2", "--out",
                                         u / "fastdpr-art"], "is not writable", lambda i, u: u / "fastdpr-art"),
    Case("no --out", lambda i, u: ["export", "--encoder", "builtin:all-MiniLM-L6-v2"], "Missing option '--out'",
         code=2),
    Case("opset 3", lambda i, u: ["export", "--encoder", "x", "--opset", 3, "--out", out_dir(i, u)], "--opset",
         out_dir, code=2),
    Case("gate above 1", lambda i, u: ["export", "--encoder", "x", "--int8-min-recall", 2, "--out", out_dir(i, u)],
         "--int8-min-recall", out_dir, code=2),
    Case("unknown pooling", lambda i, u: ["export", "--encoder", "x", "--pooling", "max", "--out", out_dir(i, u)],
         "--pooling", out_dir, code=2),
    Case("max length 2", lambda i, u: ["export", "--encoder", "x", "--passage-max-length", 2, "--out",
                                       out_dir(i, u)], "--passage-max-length", out_dir, code=2),
]

DEMO_CASES = [
    Case("workdir is a file", lambda i, u: ["demo", "--workdir", i.path("a-file.txt")],
         "exists and is not a directory", lambda i, u: i.path("a-file.txt")),
    Case("workdir below a file", lambda i, u: ["demo", "--workdir", i.path("a-file.txt") / "demo"],
         "is not a directory", lambda i, u: i.path("a-file.txt")),
    Case("workdir unwritable", lambda i, u: ["demo", "--workdir", u / "fastdpr-demo"], "is not writable",
         lambda i, u: u / "fastdpr-demo"),
    Case("k 0", lambda i, u: ["demo", "-k", 0, "--workdir", out_dir(i, u)], "-k", out_dir, code=2),
    Case("k 101", lambda i, u: ["demo", "-k", 101, "--workdir", out_dir(i, u)], "-k", out_dir, code=2),
]

GROUP_CASES = [
    Case("unknown command", lambda i, u: ["serach", "idx", "q"], "No such command", code=2),
    Case("unknown option", lambda i, u: ["search", i.index, "q", "--top", 3], "No such option", code=2),
]

ALL_CASES = [(table, case) for table, cases in (("index", INDEX_CASES), ("search", SEARCH_CASES),
                                                 ("info", INFO_CASES), ("export", EXPORT_CASES),
                                                 ("demo", DEMO_CASES), ("group", GROUP_CASES))
             for case in cases]


def snapshot(path: Path) -> object:
    """What is at ``path`` (and, for a directory, its files and their bytes), to compare before/after."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def leftovers(path: Path) -> list[str]:
    """Hidden staging or temporary files a command left next to ``path`` (``.NAME.building-*``, ``.NAME.*``)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    try:
        return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{path.name}.")
                      or p.name.startswith(".fastdpr-write-check-"))
    except OSError:
        return []


def assert_one_line_failure(output: str, code: int, expected_code: int, message: str) -> None:
    """Exit ``expected_code``, no traceback, and exactly one ``Error:`` line, the last, containing ``message``."""
    assert "Traceback" not in output, output
    assert code == expected_code, f"exit {code}, expected {expected_code}:\n{output}"
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    assert message in errors[0], output


@pytest.mark.parametrize(("table", "case"), ALL_CASES, ids=[f"{t}: {c.name}" for t, c in ALL_CASES])
def test_bad_input_fails_in_one_line_and_leaves_nothing(table: str, case: Case, inputs: Inputs, unwritable: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FASTDPR_HOME", str(inputs.path("home")))
    monkeypatch.delenv("FASTDPR_DETAILS", raising=False)
    out = case.out(inputs, unwritable) if case.out else None
    before = snapshot(out) if out else None
    result: Result = CliRunner().invoke(main, [str(a) for a in case.args(inputs, unwritable)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{result.output}")
    assert_one_line_failure(result.stderr, result.exit_code, case.code, case.message)
    if out is not None:
        assert snapshot(out) == before, f"{out} was changed"
        assert leftovers(out) == []


def test_every_command_has_a_table() -> None:
    commands = set(main.commands)  # type: ignore[attr-defined]
    tested = {table for table, _ in ALL_CASES}
    assert commands - tested <= {"serve"}, f"commands without bad-input cases: {sorted(commands - tested)}"


# ---------------------------------------------------------------------------------------------------
# In a real process: what a terminal shows


REAL_PROCESS_CASES = ["search: out in a missing directory", "index: corpus corrupt gzip",
                      "index: corpus nested JSON (detection)", "info: manifest nested", "export: out below a file",
                      "search: k 0"]


@pytest.mark.parametrize("name", REAL_PROCESS_CASES)
def test_no_traceback_reaches_a_terminal(name: str, inputs: Inputs, unwritable: Path) -> None:
    case = next(c for t, c in ALL_CASES if f"{t}: {c.name}" == name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8",
           "FASTDPR_HOME": str(inputs.path("home"))}
    env.pop("FASTDPR_DETAILS", None)
    out = case.out(inputs, unwritable) if case.out else None
    before = snapshot(out) if out else None
    proc = subprocess.run([sys.executable, "-c", "from fastdpr.cli.main import main; main()",
                           *[str(a) for a in case.args(inputs, unwritable)]],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert_one_line_failure(proc.stderr, proc.returncode, case.code, case.message)
    if out is not None:
        assert snapshot(out) == before and leftovers(out) == []


def test_search_out_is_checked_before_the_questions_are_searched(inputs: Inputs,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr.search.retriever import Retriever

    searched: list[int] = []
    monkeypatch.setattr(Retriever, "search_batch", lambda self, *a, **k: searched.append(1) or [])
    result = CliRunner().invoke(main, ["search", str(inputs.index), "--queries", str(inputs.path("questions.csv")),
                                       "--out", str(inputs.path("missing") / "r.json")])
    assert_one_line_failure(result.stderr, result.exit_code, 1,
                            f"cannot write results file {inputs.path('missing') / 'r.json'}: directory "
                            f"{inputs.path('missing')} does not exist")
    assert searched == []


def test_index_out_is_checked_before_the_corpus_is_encoded(inputs: Inputs, unwritable: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr.model import artifact

    loaded: list[int] = []
    monkeypatch.setattr(artifact.Artifact, "load", classmethod(lambda cls, *a, **k: loaded.append(1)))
    result = CliRunner().invoke(main, ["index", str(inputs.artifact), str(inputs.corpus), "--out",
                                       str(unwritable / "fastdpr-idx")])
    assert_one_line_failure(result.stderr, result.exit_code, 1, "is not writable")
    assert loaded == []


def test_details_are_one_environment_variable_away(inputs: Inputs, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    index = tmp_path / "idx"
    shutil.copytree(inputs.index, index)
    (index / "hnsw.bin").write_bytes(b"damaged")
    (index / "vectors.npy").write_bytes(b"damaged too")
    result = CliRunner().invoke(main, ["search", str(index), "q"])
    assert_one_line_failure(result.stderr, result.exit_code, 1, "failed its integrity check: ")
    assert "and 1 more (details: rerun with FASTDPR_DETAILS=1)" in result.stderr
    monkeypatch.setenv("FASTDPR_DETAILS", "1")
    result = CliRunner().invoke(main, ["search", str(index), "q"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "hnsw.bin: 7 bytes, manifest says" in result.stderr
    assert "vectors.npy: 11 bytes, manifest says" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: ") and "FASTDPR_DETAILS" not in result.stderr


def test_an_os_error_during_the_work_is_one_line(inputs: Inputs, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr.common import integrity as manifest

    def disk_full(path: Path, data: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(manifest, "write_json", disk_full)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["search", str(inputs.index), "--queries", str(inputs.path("questions.csv")),
                                       "--out", str(out), "--threads", "1"])
    assert_one_line_failure(result.stderr, result.exit_code, 1, f"No space left on device: {out}")
    assert not out.exists()


def test_the_help_says_how_to_see_details() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "FASTDPR_DETAILS=1" in result.output
