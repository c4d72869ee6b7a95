"""The runtime works without torch, transformers, optimum or onnx; exporting without them is a clear error.

Each check runs in a fresh interpreter whose import system refuses those packages, as if they were not
installed: ``import torch`` raises ModuleNotFoundError and ``importlib.util.find_spec("torch")`` is None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastdpr.corpus.reader import Passage, write_corpus

BLOCKED = ("torch", "transformers", "optimum", "onnx")

# Runs first in the child interpreter. Two layers, so that neither importing nor probing finds them:
# - sys.modules[name] = None: `import name` (and of any submodule) raises ModuleNotFoundError, and
#   importlib.util.find_spec(name) returns None, exactly as for a package that is not installed;
# - a meta_path finder refusing the names and their submodules, in case anything removes those entries.
BLOCKER = f"""
import importlib.abc, sys
_BLOCKED = frozenset({BLOCKED!r})
_early = sorted(n for n in sys.modules if n.split(".")[0] in _BLOCKED)
if _early:
    raise SystemExit(f"blocker installed too late: {{_early}} already imported")

class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by test_no_torch)", name=name)
        return None

sys.meta_path.insert(0, _Refuse())
for _name in _BLOCKED:
    sys.modules[_name] = None
del _name
"""
CLI = "from fastdpr.cli.main import main; main()"


def run_blocked(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600, check=False)


def test_blocker_makes_the_packages_look_uninstalled() -> None:
    code = f"""
import importlib, importlib.util
for name in {BLOCKED!r} + ("torch.nn", "transformers.models.dpr", "onnx.helper"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{{name}} imported despite the blocker")
for name in {BLOCKED!r}:
    assert importlib.util.find_spec(name) is None, name
import numpy, onnxruntime, tokenizers, hnswlib  # the runtime's own dependencies still import
print("ok")
"""
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_runtime_module_imports_without_torch() -> None:
    code = f"""
import importlib, json, pkgutil, sys
import fastdpr
names = sorted(m.name for m in pkgutil.walk_packages(fastdpr.__path__, "fastdpr."))
for name in names:
    importlib.import_module(name)
import fastdpr_export  # the export package itself stays importable (its heavy modules are lazy)
loaded = sorted(n for n, m in sys.modules.items() if m is not None and n.split(".")[0] in {BLOCKED!r})
print(json.dumps({{"modules": names, "loaded": loaded}}))
"""
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"fastdpr.cli.main", "fastdpr.search.retriever", "fastdpr.index.build", "fastdpr.model.artifact",
            "fastdpr.model.verify", "fastdpr.model.encoder", "fastdpr.model.tokenization",
            "fastdpr.report.info"} <= set(report["modules"])
    assert report["loaded"] == []


def test_info_verify_runs_without_torch(tiny_artifact: Path) -> None:
    result = run_blocked(CLI, "info", str(tiny_artifact), "--verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"]["passed"] is True
    assert min(r["min_cosine"] for r in report["verified"]["results"] if r["precision"] == "fp32") >= 0.9999


def test_index_and_search_run_without_torch(tiny_artifact: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    passages = [
        Passage(id=f"p{i}", title=title, text=text)
        for i, (title, text) in enumerate([
            ("The with statement", "The with statement wraps a block with a context manager's methods."),
            ("Generators", "A generator function returns an iterator; yield suspends it."),
            ("Default values", "Default parameter values are evaluated once, when the def runs."),
            ("Exceptions", "The try statement specifies exception handlers and cleanup code."),
            ("", "A passage without a title."),
            ("Lambda", "Lambda expressions create anonymous functions."),
        ])
    ]
    write_corpus(corpus, passages, "jsonl")
    index = tmp_path / "index"
    built = run_blocked(CLI, "index", str(tiny_artifact), str(corpus), "--out", str(index), "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["counts"]["indexed"] == len(passages)
    assert (index / "manifest.json").is_file()

    found = run_blocked(CLI, "search", str(index), "what does yield do?", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert {h["id"] for h in hits} <= {p.id for p in passages}
    assert len({h["id"] for h in hits}) == 3
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_export_without_torch_names_the_install_command(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "art"
    q, c = tiny_dpr_pair
    result = run_blocked(CLI, "export", "--question-encoder", str(q), "--context-encoder", str(c),
                         "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install" in result.stderr and "fastdpr[export]" in result.stderr
    assert "torch" in result.stderr and "transformers" in result.stderr
    assert not out.exists()


def test_export_api_without_torch_raises_missing_dependency() -> None:
    code = """
from fastdpr.common.errors import MissingDependencyError
from fastdpr_export import require_export_extra
try:
    require_export_extra()
except MissingDependencyError as exc:
    print(exc)
else:
    raise SystemExit("no error")
"""
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert "exporting needs torch, transformers, onnx" in result.stdout
    assert "pip install" in result.stdout

