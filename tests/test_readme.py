"""The README and docs/ run: every command block is executed here, or by the test named for it, or listed
with the reason it is not.

The rule for the code blocks of README.md and of every docs/*.md page (see docs/development.md):

* every fence has a language tag;
* ``bash``, ``sh``, ``console`` and ``python`` blocks are commands a user pastes: each must be a key of
  :data:`RUN` (executed by the test function named there), :data:`ELSEWHERE` (executed by another test,
  which must read it with ``doc_blocks.block`` under its key) or :data:`NOT_RUN` (with the reason);
* ``text`` blocks (layouts, output, usage synopses) are not commands and are ignored.

A block is keyed by its file, the heading it sits under and its position among that heading's command
blocks (``"README.md: The CLI #1"``, ``"docs/scale.md: Sharded indexes and resumable builds #1"``; see
``tests/doc_blocks.py``). A new command block, a renamed heading or a block that moved (to another
heading or page) fails :func:`test_every_command_block_is_accounted_for` until the tables below say what
to do with it: that is what keeps the README and docs/ from drifting. Relative links between the pages
and into the repository must resolve (:func:`test_relative_links_resolve`).

Commands run offline in a temporary directory with an isolated HOME, against tiny models. What cannot
run as written is mapped here, explicitly:

* Hugging Face hub ids become local tiny DPR checkpoints (the ``tiny_dpr_pair`` fixture), nlpconnect's
  the TF-written BertModel fixture of their kind (``tests/fixtures/tf-bert-pooler``);
* placeholders (``SRC``) and a user's own model (``./my-sentence-transformer``) become a tiny
  sentence-transformers directory built here;
* a user's files (``psgs_w100.tsv``, ``nq-test.qa.csv``, ``corpus.jsonl``, SQuAD) become small generated
  files of the same format, under the same names;
* exports of tiny random models get the tests' int8 gate (``--int8-min-recall``, see
  ``conftest.TINY_INT8_MIN_RECALL``): their int8 retrieval agreement is noise-like and CPU-dependent.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner, Result
from conftest import REPO_ROOT, TINY_INT8_MIN_RECALL, DemoRun, require_export
from doc_blocks import (
    COMMAND_LANGUAGES,
    INERT_LANGUAGES,
    all_blocks,
    block,
    headings,
    pages,
    parse_blocks,
    relative,
    shell_commands,
)

#: Executed here: block key -> the test function that runs it.
RUN: dict[str, str] = {
    "README.md: Two commands #1": "test_two_commands_install_and_demo",
    "README.md: The CLI #1": "test_the_cli_block",
    "README.md: The CLI #2": "test_the_python_block",
    "docs/benchmarks.md: INT8 recipes: the frontier #1": "test_the_frontier_block",
    "docs/serve.md: Serving over HTTP #1": "test_two_commands_install_and_demo",
    "docs/seed-models.md: The seed models #1": "test_the_seed_models_block",
    "docs/seed-models.md: The seed models #2": "test_the_seed_fixture_block",
    "docs/development.md: Architecture #1": "test_the_architecture_block",
}

#: Executed by another test, which reads the block with ``doc_blocks.block(key)``: key -> "file::test".
ELSEWHERE: dict[str, str] = {
    "docs/scale.md: Sharded indexes and resumable builds #1": "tests/test_shards.py::test_the_readme_commands_work",
    "docs/scale.md: Ray (optional: `pip install 'fastdpr[ray]'`) #1":
        "tests/test_ray.py::test_the_readme_commands_work",
    "docs/hybrid.md: Hybrid retrieval: BM25 and DPR in one index #1": "tests/test_hybrid.py::test_the_docs_block",
    "docs/serve.md: Lexical and hybrid search #1": "tests/test_serve_hybrid.py::test_the_docs_block_works",
    "docs/scale.md: Appending and deleting passages #1": "tests/test_append.py::test_the_docs_block_works",
    "docs/serve.md: OpenAI-compatible embeddings, API keys and CORS #1":
        "tests/test_serve_api.py::test_the_docs_block_works",
    "docs/serve.md: Reloading a republished index #1": "tests/test_serve_reload.py::test_the_docs_block_works",
    "docs/scale.md: Compressed vectors #1": "tests/test_vectors.py::test_the_docs_block_works",
}

#: Deliberately not executed: key -> why.
NOT_RUN: dict[str, str] = {
    "README.md: Two commands #2": "`bash .ci/run` is CI itself (ruff, mypy and this test suite from a fresh clone); "
                                  "running it from a test would recurse",
}


# ---------------------------------------------------------------------------------------------------
# The rule


def test_the_pages_are_the_readme_and_docs() -> None:
    names = [relative(page) for page in pages()]
    assert names[0] == "README.md" and "docs/serve.md" in names and "docs/scale.md" in names, names


def test_every_command_block_is_accounted_for() -> None:
    blocks = all_blocks()
    untagged = [f"{b.file}:{b.line}" for b in blocks if not b.language]
    assert not untagged, f"blocks without a language tag (use text for non-commands) at {untagged}"
    unknown = {b.language for b in blocks} - COMMAND_LANGUAGES - INERT_LANGUAGES
    assert not unknown, f"blocks with tags this test does not know: {sorted(unknown)}"
    keys = [b.key for b in blocks if b.language in COMMAND_LANGUAGES]
    assert len(keys) == len(set(keys))
    tables = [set(RUN), set(ELSEWHERE), set(NOT_RUN)]
    assert not (tables[0] & tables[1] or tables[0] & tables[2] or tables[1] & tables[2])
    listed = set().union(*tables)
    unaccounted = [key for key in keys if key not in listed]
    assert not unaccounted, (f"command blocks neither run nor listed in tests/test_readme.py: {unaccounted}"
                             " (add each to RUN, ELSEWHERE or NOT_RUN)")
    stale = sorted(listed - set(keys))
    assert not stale, f"tests/test_readme.py lists blocks README.md and docs/ no longer have: {stale}"


def test_each_run_entry_has_its_test() -> None:
    for key, name in RUN.items():
        assert callable(globals().get(name)), f"{key}: no test function {name} in tests/test_readme.py"
        source = Path(__file__).read_text(encoding="utf-8")
        assert f'block("{key}")' in source, f"{key}: no test here reads it with block({key!r})"


def test_the_tests_named_elsewhere_read_their_block_by_its_key() -> None:
    for key, where in ELSEWHERE.items():
        path, test = where.split("::")
        source = (REPO_ROOT / path).read_text(encoding="utf-8")
        assert f"def {test}(" in source, f"{key}: {where} does not exist"
        assert "from doc_blocks import" in source and f'block("{key}")' in source, (
            f"{key}: {path} does not read the block with block({key!r})")


def test_the_block_parser() -> None:
    text = "# A\n```bash\necho 1 \\\n  two # c\nx && y\n```\n```text\nlayout\n```\n## B\n```python\nprint()\n```\n"
    blocks = parse_blocks(text, "docs/x.md")
    assert [(b.key, b.language, b.line) for b in blocks] == [("docs/x.md: A #1", "bash", 2),
                                                             ("docs/x.md: A #0", "text", 7),
                                                             ("docs/x.md: B #1", "python", 11)]
    assert shell_commands(blocks[0].text) == [["echo", "1", "two"], ["x"], ["y"]]
    assert [(h.level, h.text) for h in headings(text)] == [(1, "A"), (2, "B")]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_github_anchors() -> None:
    assert github_anchor("Ray (optional: `pip install 'fastdpr[ray]'`)") == "ray-optional-pip-install-fastdprray"
    assert github_anchor("Recall parity (SQuAD v1.1 dev, all 2,067 paragraphs and all 10,570 questions)") == (
        "recall-parity-squad-v11-dev-all-2067-paragraphs-and-all-10570-questions")


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_relative_links_resolve() -> None:
    """Every relative link of README.md and docs/ names a file or directory of the repository, and every
    #anchor a heading of the page it points at."""
    broken = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
        for target in LINK.findall(prose):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
            if not resolved.exists() or REPO_ROOT not in (resolved, *resolved.parents):
                broken.append(f"{relative(page)}: {target} (no such file)")
            elif anchor:
                if resolved.suffix != ".md":
                    broken.append(f"{relative(page)}: {target} (an anchor into a file that is not Markdown)")
                elif anchor not in {github_anchor(h.text) for h in headings(resolved.read_text(encoding="utf-8"))}:
                    broken.append(f"{relative(page)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------------------------------------
# The workspace: a user's directory, with the files the README assumes the user has


QA_ROWS = [("how are default argument values evaluated?", ["once"]),
           ("what does the yield statement do?", ["generator"])]


def make_tiny_sentence_transformer(directory: Path, seed: int = 3) -> Path:
    """A tiny random BERT saved as a sentence-transformers directory (mean pooling, normalized)."""
    require_export()
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from fastdpr_export.sources import packaged_minilm_dir

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, initializer_range=0.2)
    BertModel(config).eval().save_pretrained(directory)
    BertTokenizerFast.from_pretrained(packaged_minilm_dir()).save_pretrained(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (directory / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}), encoding="utf-8")
    (directory / "2_Normalize").mkdir()
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, pydoc_corpus: Path) -> Path:
    """A user's working directory: their passages (DPR tsv), questions (DPR qa csv), a calibration
    corpus and their own sentence-transformers model, under the README's names."""
    from fastdpr.corpus.questions import Question, write_questions
    from fastdpr.corpus.reader import read_corpus, write_corpus

    root = tmp_path_factory.mktemp("readme-user")
    passages = list(read_corpus(pydoc_corpus))
    write_corpus(root / "psgs_w100.tsv", passages, "dpr-tsv")
    write_corpus(root / "corpus.jsonl", passages[:200], "jsonl")
    write_questions(root / "nq-test.qa.csv", [Question(q, tuple(a)) for q, a in QA_ROWS], "dpr-qas")
    make_tiny_sentence_transformer(root / "my-sentence-transformer")
    return root


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated HOME, no network, no FASTDPR_* settings of the developer's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("FASTDPR_HOME", "FASTDPR_DETAILS"):
        monkeypatch.delenv(name, raising=False)
    return home


def fastdpr(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    """Run ``fastdpr ARGS`` in ``cwd`` as the console script does; it must succeed without a traceback."""
    from fastdpr.cli.main import main

    monkeypatch.chdir(cwd)
    return check_succeeded(args, CliRunner().invoke(main, args))


def check_succeeded(args: list[str], result: Result) -> Result:
    """``fastdpr ARGS`` exited 0 without an uncaught exception or a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"fastdpr {shlex.join(args)}: uncaught {result.exception!r}\n{result.output}")
    assert result.exit_code == 0, f"fastdpr {shlex.join(args)}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def substitute(command: list[str], names: dict[str, str]) -> list[str]:
    return [names.get(word, word) for word in command]


# ---------------------------------------------------------------------------------------------------
# The blocks


def test_the_cli_block(workspace: Path, tiny_dpr_pair: tuple[Path, Path], user_env: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    q, c = tiny_dpr_pair
    names = {
        "facebook/dpr-question_encoder-single-nq-base": str(q),  # hub ids -> local tiny DPR checkpoints
        "facebook/dpr-ctx_encoder-single-nq-base": str(c),
        "SRC": "./my-sentence-transformer",  # the placeholder -> a local checkpoint directory
    }
    commands = [substitute(command, names) for command in shell_commands(block("README.md: The CLI #1").text)]
    assert all(command[0] == "fastdpr" for command in commands)
    assert [command[1] for command in commands] == ["export"] * 4 + ["index"] + ["search"] * 3 + ["info"]
    results = []
    for command in commands:
        args = command[1:]
        if args[0] == "export" and "--list-recipes" not in args:
            args = [*args, "--int8-min-recall", str(TINY_INT8_MIN_RECALL)]
        results.append(fastdpr(args, workspace, monkeypatch))
    _, _, recipes, _, indexed, table, as_json, queries, info = results

    assert json.loads((workspace / "dpr-nq" / "manifest.json").read_text(encoding="utf-8"))["sides"].keys() == {
        "question", "context"}
    st_manifest = json.loads((workspace / "st" / "manifest.json").read_text(encoding="utf-8"))
    assert {side["dir"] for side in st_manifest["sides"].values()} == {"encoder"}  # one model, both sides
    assert st_manifest["spec"]["pooling"] == "mean" and st_manifest["spec"]["normalize"] is True
    from fastdpr_export.quantize import DEFAULT_RECIPE

    assert f"\n{DEFAULT_RECIPE} (default):" in f"\n{recipes.output}"
    calibrated_manifest = json.loads((workspace / "art" / "manifest.json").read_text(encoding="utf-8"))
    assert calibrated_manifest["probes"]["source"].startswith("--calibration corpus.jsonl: 200 passages")
    assert "indexed 690 passages into nq-index" in indexed.output
    ranks = re.findall(r"^\s+(\d+)\.\s", table.output, flags=re.MULTILINE)
    assert ranks == [str(n) for n in range(1, 11)]
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(set(row) == {"rank", "id", "title", "text", "score"} for row in rows)
    assert "wrote 2 results to results.json" in queries.output
    results_json = json.loads((workspace / "results.json").read_text(encoding="utf-8"))
    assert [r["question"] for r in results_json] == [q for q, _ in QA_ROWS]
    assert all(len(r["ctxs"]) == 100 for r in results_json)
    assert "PASSED" in info.output


def test_the_python_block(workspace: Path, user_env: Path, request: pytest.FixtureRequest) -> None:
    code = block("README.md: The CLI #2").text
    if not (workspace / "nq-index").is_dir():  # run alone (-k): build what the CLI block builds
        from fastdpr.index.build import IndexOptions, build_index

        build_index(request.getfixturevalue("tiny_artifact"), workspace / "psgs_w100.tsv", workspace / "nq-index",
                    "auto", IndexOptions(progress=False))
    check = "\nprint(type(r).__name__, len(hits), type(hits[0]).__name__, [len(b) for b in batch])\n"
    proc = subprocess.run([sys.executable, "-c", code + check], cwd=workspace, capture_output=True, text=True,
                          env=python_env(user_env), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[-1] == "Retriever 10 Hit [100, 100]"


def python_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTDPR_")}
    return {**env, "HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}


@pytest.mark.slow
def test_two_commands_install_and_demo(demo_run: DemoRun) -> None:
    commands = shell_commands(block("README.md: Two commands #1").text)
    # The install steps are this test environment itself (CI makes it with the same commands, .ci/run);
    # they are pinned here so that a change to them is a change to review.
    assert commands[:3] == [["python3", "-m", "venv", ".venv"], [".", ".venv/bin/activate"],
                            ["pip", "install", "torch==2.13.0", "-e", ".[export]"]]
    assert commands[3:] == [["fastdpr", "demo"]]
    # The demo ran once for the session (conftest's demo_run: this command, a fresh isolated HOME, offline),
    # so it exported the real model itself; tests/test_export.py checks the artifact it exported.
    assert list(demo_run.args) == commands[3][1:]
    output = demo_run.output  # it exited 0 (the fixture fails otherwise)
    assert "Traceback" not in output
    assert "1/3 exporting builtin:all-MiniLM-L6-v2" in output  # a first run: nothing reused
    demo = demo_run.workdir
    assert (demo / "artifact-minilm" / "manifest.json").is_file() and (demo / "index-pydoc-topics").is_dir()
    answers = output.split("Q: ")[1:]
    assert [a.splitlines()[0] for a in answers] == [
        "how do I catch an exception and still run cleanup code?", "what does the yield statement do?",
        "how are default argument values evaluated?"]
    titles = [re.findall(r"^\s+\d+\.\s+\S+\s+\[\S+\] (\S+)$", answer, flags=re.MULTILINE) for answer in answers]
    assert [len(t) for t in titles] == [3, 3, 3]
    # The real model answers from the right pydoc topics (seen on x86-amx, 2026-11-30: execmodel, exceptions,
    # compound / yield, yield, return / function, compound, function; the 7-bit int8 graph computes the same
    # integers on every x86 class).
    assert "exceptions" in titles[0] and titles[1][0] == "yield" and titles[2][0] == "function"
    run_the_serve_block(demo_run.home, demo_run.cwd)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_the_serve_block(home: Path, cwd: Path) -> None:
    """The "Serving over HTTP" block, as a bash script, on the index the demo just built (so its
    ``|| fastdpr demo`` does not run again). Its fixed port 8731 is the one substitution: a test must
    not collide with whatever else listens on this machine."""
    script = block("docs/serve.md: Serving over HTTP #1").text
    assert "8731" in script
    script = script.replace("8731", str(free_port()))
    bin_dir = str(Path(sys.executable).parent)  # the console script `fastdpr` lives beside this python
    env = {**python_env(home), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    ready, one, many = (json.loads(line) for line in lines[:3])
    assert ready["ready"] is True, ready
    assert one["k"] == 2 and len(one["hits"]) == 2 and one["hits"][0]["title"] == "yield"
    assert [len(r["hits"]) for r in many["results"]] == [3, 3]
    assert lines[-1].startswith("fastdpr_batch_questions_count")


TINY_SQUAD = {"version": "1.1", "data": [
    {"title": "Hamlet", "paragraphs": [
        {"context": "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.",
         "qas": [{"id": "q1", "question": "Who wrote Hamlet?",
                  "answers": [{"text": "William Shakespeare", "answer_start": 31}]}]},
        {"context": "It is Shakespeare's longest play, with 29,551 words.",
         "qas": [{"id": "q2", "question": "How many words does Hamlet have?",
                  "answers": [{"text": "29,551", "answer_start": 38}]}]}]},
    {"title": "Python", "paragraphs": [
        {"context": "A generator function uses the yield statement to produce a sequence of values lazily.",
         "qas": [{"id": "q3", "question": "What does yield do?",
                  "answers": [{"text": "produce a sequence of values", "answer_start": 50}]}]}]}]}


def test_the_frontier_block(tmp_path: Path, user_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus command runs (on a small SQuAD file at the README's relative path); the export and the
    benchmark are a ~16-minute measurement, so their command lines are parsed by their own commands
    (every option and value checked, ``--squad`` must exist) but not run."""
    from benchmarks.__main__ import main as benchmarks_main
    from fastdpr.cli.main import main as fastdpr_main

    squad = tmp_path / "shared" / "data" / "squad" / "dev-v1.1.json"  # ../shared/data from the checkout
    squad.parent.mkdir(parents=True)
    squad.write_text(json.dumps(TINY_SQUAD), encoding="utf-8")
    checkout = tmp_path / "fastdpr"
    checkout.mkdir()
    frontier = block("docs/benchmarks.md: INT8 recipes: the frontier #1")
    corpus_command, export_command, parity_command = shell_commands(frontier.text)

    assert corpus_command[:2] == ["python", "-c"]
    proc = subprocess.run([sys.executable, *corpus_command[1:]], cwd=checkout, capture_output=True, text=True,
                          env=python_env(user_env), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (checkout / "squad-passages.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["title"] for row in rows] == ["Hamlet", "Hamlet", "Python"]
    assert rows[2]["text"].startswith("A generator function")

    monkeypatch.chdir(checkout)
    assert export_command[:2] == ["fastdpr", "export"]
    with fastdpr_main.make_context("fastdpr", export_command[1:]) as ctx:
        sub = ctx.command.get_command(ctx, export_command[1])  # type: ignore[attr-defined]
        with sub.make_context(export_command[1], export_command[2:], parent=ctx) as sub_ctx:
            assert sub_ctx.params["calibration"] == Path("squad-passages.jsonl")
            assert sub_ctx.params["question_encoder"] == "builtin:all-MiniLM-L6-v2-dpr"
    assert parity_command[:3] == ["python", "-m", "benchmarks"]
    with benchmarks_main.make_context("benchmarks", parity_command[3:]) as ctx:
        sub = ctx.command.get_command(ctx, parity_command[3])  # type: ignore[attr-defined]
        with sub.make_context(parity_command[3], parity_command[4:], parent=ctx) as sub_ctx:
            params: dict[str, Any] = sub_ctx.params
    from fastdpr_export.quantize import RECIPES

    assert params["squad"] == Path("../shared/data/squad/dev-v1.1.json")
    assert len(params["recipes"]) == 8 and set(params["recipes"]) <= set(RECIPES)


def test_the_seed_models_block(workspace: Path, tiny_dpr_pair: tuple[Path, Path], user_env: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The seeds' hub ids become local checkpoints of the same kind: nlpconnect's (BertModel + pooler
    weights) -> the TF-written fixture of their shape at hidden 32 (``tests/fixtures/tf-bert-pooler``,
    read from its tf_model.h5), RDR's (DPR classes) -> tiny DPR checkpoints; the defaults the README's
    table names are what the manifests say."""
    q, c = tiny_dpr_pair
    nlpconnect = str(REPO_ROOT / "tests" / "fixtures" / "tf-bert-pooler")
    names = {f"nlpconnect/dpr-{side}_bert_uncased_L-{layers}_H-128_A-2": nlpconnect
             for side in ("question_encoder", "ctx_encoder") for layers in (2, 12)}
    names |= {"soheeyang/rdr-question_encoder-single-trivia-base": str(q),
              "soheeyang/rdr-ctx_encoder-single-trivia-base": str(c)}
    seeds = block("docs/seed-models.md: The seed models #1")
    commands = [substitute(command, names) for command in shell_commands(seeds.text)]
    assert [command[:2] for command in commands] == [["fastdpr", "export"]] * 3
    assert not [word for command in commands for word in command if re.match(r"(nlpconnect|soheeyang)/", word)]
    for command in commands:
        fastdpr([*command[1:], "--int8-min-recall", str(TINY_INT8_MIN_RECALL)], workspace, monkeypatch)
    for out in ("nlpconnect-l2", "nlpconnect-l12"):
        manifest = json.loads((workspace / out / "manifest.json").read_text(encoding="utf-8"))
        assert (manifest["spec"]["pooling"], manifest["spec"]["token_types"]) == ("pooler", "pair")
        assert (manifest["spec"]["question_max_length"], manifest["spec"]["passage_max_length"]) == (64, 256)
        assert "pooler.dense weights" in manifest["spec_decisions"]["pooling"]
    rdr = json.loads((workspace / "rdr-trivia" / "manifest.json").read_text(encoding="utf-8"))
    assert (rdr["spec"]["pooling"], rdr["spec"]["token_types"]) == ("cls", "zeros")
    assert [rdr["sides"][side]["source"]["class"] for side in ("question", "context")] == [
        "DPRQuestionEncoder", "DPRContextEncoder"]


def test_the_seed_fixture_block(tmp_path: Path, user_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout: the fixture path is relative to the repository root."""
    (command,) = shell_commands(block("docs/seed-models.md: The seed models #2").text)
    assert command[:2] == ["fastdpr", "export"] and "tests/fixtures/tf-bert-pooler" in command
    checkout = tmp_path / "fastdpr"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "tests" / "fixtures").symlink_to(REPO_ROOT / "tests" / "fixtures")
    fastdpr(command[1:], checkout, monkeypatch)
    manifest = json.loads((checkout / "seed-shaped" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sides"]["question"]["source"]["weights"]["file"] == "tf_model.h5"
    assert manifest["spec"]["pooling"] == "pooler" and manifest["quantization"] is None


def test_the_architecture_block() -> None:
    """`lint-imports` from the checkout: every contract of the layer table holds."""
    (command,) = shell_commands(block("docs/development.md: Architecture #1").text)
    assert command == ["lint-imports"]
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout, result.stdout
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    checked = [name.strip() for layer in contract["layers"] for name in layer.split("|")]
    documented = [row.split("|")[1].strip(" `") for row in block_table_rows()]
    assert documented == checked  # the table in the docs is the contract CI checks


def block_table_rows() -> list[str]:
    """The rows of docs/development.md's layer table (the table the contracts must match)."""
    text = (REPO_ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith("| `fastdpr.")]
